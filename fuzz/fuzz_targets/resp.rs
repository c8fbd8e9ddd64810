//! The kv example's RESP request parser: never panics, stays inside its input, and parses a
//! command the same whether it arrives whole or cut anywhere (as the server's stash sees it).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../examples/kv/resp.rs"]
mod resp;

use resp::{Frame, Limits};

fuzz_target!(|data: &[u8]| {
    // Small limits, so inputs of a few hundred bytes reach every limit and the edges around it.
    let lim = Limits { max_bulk: 256, max_args: 16, max_inline: 64 };
    let mut args = Vec::new();
    let whole = resp::parse(data, &lim, &mut args);
    match &whole {
        Frame::Command { consumed } => {
            assert!(*consumed > 0 && *consumed <= data.len());
            assert!(args.len() <= lim.max_args);
            for r in &args {
                assert!(r.start <= r.end && r.end <= *consumed && r.len() <= lim.max_bulk);
                // Echoing an argument back frames it losslessly.
                let framed = resp::bulk(&data[r.clone()]);
                assert_eq!(resp::bulk_payload(&framed), &data[r.clone()]);
            }
            assert!(resp::array_header(args.len()).ends_with(b"\r\n"));
            assert!(resp::integer(args.len() as i64 - 1).ends_with(b"\r\n"));
        }
        Frame::Partial { need: Some(n) } => assert!(*n > data.len()),
        Frame::Partial { need: None } => {}
        Frame::Error(e) => assert!(resp::error(e).starts_with(b"-Protocol error")),
    }
    let got: Vec<Vec<u8>> = args.iter().map(|r| data[r.clone()].to_vec()).collect();
    // Any prefix of a complete command is incomplete, never a different command or an error
    // (the server parses its stash again as bytes arrive).
    if let Frame::Command { consumed } = whole {
        for cut in 0..consumed {
            match resp::parse(&data[..cut], &lim, &mut args) {
                Frame::Partial { need } => assert!(need.is_none_or(|n| n > cut && n <= consumed)),
                Frame::Command { consumed: c } => {
                    // Only an inline command can end early: a bare LF inside what follows.
                    assert!(data[0] != b'*', "multibulk prefix of {cut} parsed as a command of {c}");
                }
                Frame::Error(e) => panic!("prefix of {cut} bytes of a valid command: {e}"),
            }
        }
        let again = resp::parse(&data[..consumed], &lim, &mut args);
        assert_eq!(again, Frame::Command { consumed });
        let again: Vec<Vec<u8>> = args.iter().map(|r| data[r.clone()].to_vec()).collect();
        assert_eq!(again, got);
    }
    for s in [&resp::OK, &resp::PONG, &resp::NIL, &resp::EMPTY_ARRAY] {
        assert!(s.ends_with(b"\r\n"));
    }
});
