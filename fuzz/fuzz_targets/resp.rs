//! ringstage-resp's request parser: never panics, stays inside its input, and parses a
//! command the same whether it arrives whole or cut anywhere (as the server's stash sees it).
#![no_main]

use libfuzzer_sys::fuzz_target;

use ringstage_resp as resp;
use resp::{Frame, Limits};

fuzz_target!(|data: &[u8]| {
    // Small limits, so inputs of a few hundred bytes reach every limit and the edges around it.
    let lim = Limits { max_bulk: 256, max_args: 16, max_inline: 64 };
    let mut args = resp::Args::default();
    let whole = resp::parse(data, &lim, &mut args);
    match &whole {
        Frame::Command { consumed } => {
            assert!(*consumed > 0 && *consumed <= data.len());
            assert!(args.ranges.len() <= lim.max_args);
            // Multibulk arguments are ranges of the request; inline ones of their unquoted copy,
            // which is never longer than the line.
            let bytes = args.bytes(data);
            for r in &args.ranges {
                assert!(r.start <= r.end && r.end <= (*consumed).min(bytes.len()) && r.len() <= lim.max_bulk.max(lim.max_inline));
                // Echoing an argument back frames it losslessly.
                let framed = resp::bulk(&bytes[r.clone()]);
                assert_eq!(resp::bulk_payload(&framed), &bytes[r.clone()]);
            }
            assert!(resp::array_header(args.ranges.len()).ends_with(b"\r\n"));
            assert!(resp::integer(args.ranges.len() as i64 - 1).ends_with(b"\r\n"));
        }
        Frame::Partial { need: Some(n) } => assert!(*n > data.len()),
        Frame::Partial { need: None } => {}
        Frame::Error(e) => assert!(resp::error(e).starts_with(b"-Protocol error")),
    }
    let words = |args: &resp::Args, data: &[u8]| -> Vec<Vec<u8>> {
        let bytes = args.bytes(data);
        args.ranges.iter().map(|r| bytes[r.clone()].to_vec()).collect()
    };
    let got = words(&args, data);
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
        assert_eq!(words(&args, &data[..consumed]), got);
    }
    for s in [&resp::OK, &resp::PONG, &resp::NIL, &resp::EMPTY_ARRAY] {
        assert!(s.ends_with(b"\r\n"));
    }
});
