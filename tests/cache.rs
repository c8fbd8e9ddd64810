//! The guide-style cache example (`examples/cache.rs`), from outside over loopback.

mod example;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use example::cmd;

/// Reads until `want` bytes have come (or the peer closes).
fn read_n(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    got
}

#[test]
fn pipelined_commands_split_anywhere_are_answered_in_order() {
    let s = example::start("cache", &[]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let value = vec![b'v'; 3000]; // longer than one small view: stored and sent as a view
    let mut stream = Vec::new();
    for w in [
        &[&b"SET"[..], b"k", &value][..],
        &[b"GET", b"k"],
        &[b"GET", b"nope"],
        &[b"DEL", b"k"],
        &[b"DEL", b"k"],
        &[b"GET", b"k"],
        &[b"FLY", b"k"],
    ] {
        stream.extend_from_slice(&cmd(w));
    }
    // Written in pieces that cut lengths, values and CRLFs.
    for piece in stream.chunks(7) {
        c.write_all(piece).unwrap();
    }
    let mut want = b"+OK\r\n".to_vec();
    want.extend_from_slice(format!("$3000\r\n{}\r\n", "v".repeat(3000)).as_bytes());
    want.extend_from_slice(b"$-1\r\n:1\r\n:0\r\n$-1\r\n-ERR unknown command\r\n");
    assert_eq!(String::from_utf8(read_n(&mut c, want.len())).unwrap(), String::from_utf8(want).unwrap());
}

#[test]
fn a_protocol_error_answers_and_closes_only_that_connection() {
    let s = example::start("cache", &[]);
    let mut good = TcpStream::connect(s.addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut bad = TcpStream::connect(s.addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    bad.write_all(b"HELLO\r\n").unwrap();
    let reply = read_n(&mut bad, usize::MAX);
    assert_eq!(reply, b"-ERR Protocol error\r\n", "the error, then the close");
    good.write_all(&cmd(&[b"SET", b"a", b"1"])).unwrap();
    assert_eq!(read_n(&mut good, 5), b"+OK\r\n");
}
