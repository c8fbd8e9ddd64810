//! The proxy example end to end on loopback: the real binaries of the proxy and, behind it,
//! the echo example.

mod example;
mod linger;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A proxy (with `args`) in front of this test's own listener, so the test sees the upstream
/// side of each pair.
fn proxy_to_own_upstream(args: &[&str]) -> (TcpListener, example::Server) {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = up.local_addr().unwrap().to_string();
    let proxy = example::start("proxy", &[&["--upstream", upstream.as_str()], args].concat());
    (up, proxy)
}

/// The proxy's next connection to the test's upstream, reads bounded by 20 s.
fn accept_upstream(up: &TcpListener) -> TcpStream {
    let (s, _) = up.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A client of `proxy` and the upstream side of its pair, after `hello` went through.
fn open_pair(up: &TcpListener, proxy: SocketAddr, hello: &[u8]) -> (TcpStream, TcpStream) {
    let mut client = connect(proxy);
    client.write_all(hello).unwrap();
    let mut upstream = accept_upstream(up);
    let mut got = vec![0; hello.len()];
    upstream.read_exact(&mut got).unwrap();
    assert_eq!(got, hello, "the first bytes reach the upstream");
    (client, upstream)
}

/// The proxy (two workers) in front of the echo example; keep both alive.
fn proxy_to_echo() -> (example::Server, example::Server) {
    let echo = example::start("echo", &[]);
    let upstream = echo.addr.to_string();
    let proxy = example::start("proxy", &["--upstream", &upstream, "--workers", "2"]);
    (echo, proxy)
}

/// Deterministic bytes, distinct per client and round.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (seed.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8).collect()
}

#[test]
fn clients_reach_the_upstream_through_the_proxy_and_back() {
    let (_echo, proxy) = proxy_to_echo();
    let addr = proxy.addr;
    let clients: Vec<_> = (0..16u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for round in 0..10u64 {
                    // From one byte to 200 KiB: many receives on each side of the proxy.
                    let msg = bytes(i * 100 + round, [1, 100, 4000, 200_000][(round % 4) as usize]);
                    let mut w = s.try_clone().unwrap();
                    let out = msg.clone();
                    let writer = std::thread::spawn(move || w.write_all(&out).unwrap());
                    let mut got = vec![0; msg.len()];
                    s.read_exact(&mut got).unwrap();
                    writer.join().unwrap();
                    assert!(got == msg, "client {i} round {round}: the bytes came back unchanged");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn a_client_closing_closes_its_upstream_connection() {
    let (up, proxy) = proxy_to_own_upstream(&[]);
    // Bytes sent before the upstream was connected are kept.
    let (mut client, mut server_side) = open_pair(&up, proxy.addr, b"hello");
    let mut got = [0; 5];
    server_side.write_all(b"world").unwrap();
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"world");
    drop(client);
    let mut rest = Vec::new();
    assert_eq!(server_side.read_to_end(&mut rest).unwrap(), 0, "the upstream side saw the close");
}

#[test]
fn a_unix_domain_upstream_is_reached_both_ways_and_a_missing_one_closes_the_client() {
    use std::os::unix::net::UnixListener;
    let path = std::env::temp_dir().join(format!("rs-proxy-up-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let up = UnixListener::bind(&path).unwrap();
    let proxy = example::start("proxy", &["--upstream", &format!("unix:{}", path.display())]);
    let mut client = connect(proxy.addr);
    client.write_all(b"hello").unwrap();
    let (mut upstream, _) = up.accept().unwrap();
    upstream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = [0; 5];
    upstream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    upstream.write_all(b"world").unwrap();
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"world");
    drop((client, upstream, up));
    std::fs::remove_file(&path).unwrap();
    drop(proxy);

    // Nobody listens at the path any more: the client is closed at once.
    let proxy = example::start("proxy", &["--upstream", &format!("unix:{}", path.display())]);
    let mut client = connect(proxy.addr);
    let t = Instant::now();
    let mut buf = [0; 16];
    assert_eq!(client.read(&mut buf).unwrap_or(0), 0, "no bytes, just the close");
    assert!(t.elapsed() < Duration::from_secs(5), "closed after {:?}", t.elapsed());
}

#[test]
fn an_unreachable_upstream_closes_the_client_at_once() {
    // A port that was just free: nothing listens there, so the connect is refused.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let proxy = example::start("proxy", &["--upstream", &upstream]);
    let mut client = connect(proxy.addr);
    let t = Instant::now();
    let mut buf = [0; 16];
    let n = client.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "no bytes, just the close");
    assert!(t.elapsed() < Duration::from_secs(5), "closed after {:?}", t.elapsed());
}

#[test]
fn a_half_close_passes_through_the_proxy_both_ways() {
    let (up, proxy) = proxy_to_own_upstream(&[]);
    let mut client = connect(proxy.addr);
    client.write_all(b"the whole request").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut server_side = accept_upstream(&up);
    let mut request = Vec::new();
    server_side.read_to_end(&mut request).unwrap();
    assert_eq!(request, b"the whole request", "the request, then the client's FIN passed on");
    server_side.write_all(b"the answer").unwrap();
    server_side.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"the answer", "the half-closed client still got the answer, then the end");
}

#[test]
fn a_client_that_does_not_read_stalls_only_its_own_pair() {
    // The upstream of pair A sends 32 MiB, twice the proxy's receive buffers (1024 x 16 KiB),
    // to a client that reads nothing. Without flow control the proxy reads it all: the bytes
    // pile up in its buffers until none is left for any connection of the worker. With it,
    // the proxy stops reading A's upstream once 64 KiB wait for A, so pair B, on the same
    // worker, keeps its round trips going; and A, once it reads, gets every byte.
    let (up, proxy) = proxy_to_own_upstream(&[]);
    let (mut a, a_up) = open_pair(&up, proxy.addr, b"a");
    let flood = bytes(1, 32 << 20);
    let mut w = a_up.try_clone().unwrap();
    let sent = flood.clone();
    let flooder = std::thread::spawn(move || w.write_all(&sent).unwrap());
    std::thread::sleep(Duration::from_millis(300)); // the flood reaches the proxy's limit
    let (mut b, mut b_up) = open_pair(&up, proxy.addr, b"b");
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b_up.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    for round in 0..50u64 {
        let msg = bytes(100 + round, 1000);
        b.write_all(&msg).unwrap();
        let mut there = vec![0; msg.len()];
        b_up.read_exact(&mut there).unwrap_or_else(|e| panic!("round {round}: upstream B: {e}"));
        b_up.write_all(&there).unwrap();
        let mut back = vec![0; msg.len()];
        b.read_exact(&mut back).unwrap_or_else(|e| panic!("round {round}: client B: {e}"));
        assert!(back == msg, "round {round}");
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "pair B's 50 round trips took {:?}", t0.elapsed());
    let mut got = vec![0; flood.len()];
    a.read_exact(&mut got).unwrap();
    flooder.join().unwrap();
    assert!(got == flood, "A got every byte, in order");
}

/// Descriptors the process holds (its outbound sockets are plain descriptors; accepted ones
/// live in the ring's table).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn clients_that_vanish_in_every_way_leave_nothing_behind() {
    let (_echo, proxy) = proxy_to_echo();
    let addr = proxy.addr;
    connect(addr).write_all(b"warm").unwrap(); // the runtime's own descriptors are all open now
    std::thread::sleep(Duration::from_millis(200));
    let baseline = open_fds(proxy.pid());
    let clients: Vec<_> = (0..32u64)
        .map(|i| {
            std::thread::spawn(move || {
                for round in 0..12u64 {
                    let msg = bytes(i * 100 + round, 1 + ((i * 7919 + round * 104_729) % 50_000) as usize);
                    let mut s = connect(addr);
                    match (i + round) % 4 {
                        0 => {
                            // A whole round trip on an open connection.
                            s.write_all(&msg).unwrap();
                            let mut got = vec![0; msg.len()];
                            s.read_exact(&mut got).unwrap();
                            assert!(got == msg);
                        }
                        1 => {
                            // Half-close after sending: everything comes back, then the end.
                            s.write_all(&msg).unwrap();
                            s.shutdown(std::net::Shutdown::Write).unwrap();
                            let mut got = Vec::new();
                            s.read_to_end(&mut got).unwrap();
                            assert!(got == msg, "{} of {} bytes after a half-close", got.len(), msg.len());
                        }
                        2 => {
                            // Send and go away without reading.
                            let _ = s.write_all(&msg);
                        }
                        _ => {
                            // Send and reset (SO_LINGER 0): the proxy sees ECONNRESET.
                            let _ = s.write_all(&msg);
                            linger::reset_on_close(&s);
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // Every pair ends: the proxy's outbound sockets are closed again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_fds(proxy.pid()) > baseline {
        assert!(Instant::now() < deadline, "{} descriptors open, {baseline} before", open_fds(proxy.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the proxy still serves.
    let mut s = connect(addr);
    s.write_all(b"still here").unwrap();
    let mut got = [0; 10];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still here");
}

#[test]
fn an_idle_pair_is_closed_on_both_sides() {
    let (up, proxy) = proxy_to_own_upstream(&["--idle-timeout-s", "1"]);
    let t = Instant::now();
    let mut client = connect(proxy.addr);
    let mut server_side = accept_upstream(&up);
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).unwrap(), 0, "the idle client is closed");
    assert_eq!(server_side.read_to_end(&mut rest).unwrap(), 0, "and so is its upstream connection");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "after {took:?}");
}
