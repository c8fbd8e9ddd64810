//! Shared helpers for loopback integration tests.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringstage::prelude::*;

pub struct Echo {
    pub net: Sink<NetCmd>,
}

impl Handler for Echo {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        let cmd = match ev {
            NetEvent::Data { conn, data } => NetCmd::Send { conn, data },
            // The client finished sending: close once its echo is out.
            NetEvent::Eof { conn } => NetCmd::Close { conn },
            _ => return,
        };
        if let Err(cmd) = self.net.try_enqueue(cmd) {
            panic!("net stage refused {cmd:?}");
        }
    }
}

/// A server on loopback: the net stage on worker 0 delivering to stage `name` (placed by
/// `stage`), whose handler `make` builds from the net stage's sink.
pub fn serve<H: Handler<Event = NetEvent>>(
    b: Builder,
    name: &str,
    stage: StageConfig,
    cfg: impl FnOnce(ListenConfig) -> ListenConfig,
    make: impl Fn(Sink<NetCmd>) -> H + Send + Sync + 'static,
) -> (Runtime, SocketAddr) {
    let mut b = b.cpus([]);
    let st = b.stage::<NetEvent>(name, stage);
    let (net, l) = b.listen(cfg(ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0])), st);
    b.handler(st, move |s| make(s.sink(net)));
    let rt = b.start().expect("runtime starts");
    let addr = rt.local_addr(l);
    (rt, addr)
}

/// An echo server: the net stage on worker 0 and the echo stage on `echo_worker`.
pub fn echo_server(
    b: Builder,
    echo_worker: usize,
    cfg: impl FnOnce(ListenConfig) -> ListenConfig,
) -> (Runtime, SocketAddr) {
    serve(b, "echo", StageConfig::on([echo_worker]), cfg, |net| Echo { net })
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Deterministic pseudo-random bytes (xorshift), so every byte checked is distinct-ish.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `msg` (in `chunk`-sized writes from a writer thread) and reads back exactly as many
/// bytes, asserting they match.
pub fn roundtrip(addr: SocketAddr, msg: Vec<u8>, chunk: usize) {
    let mut s = connect(addr);
    let mut w = s.try_clone().unwrap();
    let n = msg.len();
    let expect = msg.clone();
    let writer = std::thread::spawn(move || {
        for c in msg.chunks(chunk) {
            w.write_all(c).unwrap();
        }
    });
    let mut got = vec![0u8; n];
    s.read_exact(&mut got).expect("echo returns every byte");
    writer.join().unwrap();
    assert!(got == expect, "echoed bytes differ");
}

/// Waits up to `within` for `cond`, failing with `what`: for what a server counts or reports
/// a moment after the peer saw its effect (a send is counted when its completion is reaped).
pub fn eventually(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
