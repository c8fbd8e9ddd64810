//! UDP sockets: echo without loss under a bounded load on two workers, truncation reported
//! and never delivered, IPv6 and dual stack, bad destinations refused with clear errors, GSO
//! segments, an address in use.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually;
use ringstage::prelude::*;

/// What the server's handler saw besides datagrams it echoed.
#[derive(Default)]
struct Seen {
    sources: Vec<SocketAddr>,
    truncated: Vec<(SocketAddr, usize)>,
    failed: Vec<(SocketAddr, std::io::Error)>,
    workers: HashSet<usize>,
}

/// Echoes datagrams; `to <addr>` sends `x` to `<addr>` instead, `seg <size> <len>` answers with
/// `len` bytes in `size`-byte datagrams (one GSO send).
struct UdpEcho {
    net: Outbox<NetCmd>,
    seen: Arc<Mutex<Seen>>,
}

impl Handler for UdpEcho {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        let mut seen = self.seen.lock().unwrap();
        match ev {
            NetEvent::Datagram { socket, from, data } => {
                seen.sources.push(from);
                seen.workers.insert(socket.worker());
                let text = String::from_utf8_lossy(&data).into_owned();
                let words: Vec<&str> = text.split(' ').collect();
                match words[..] {
                    ["to", addr] => {
                        let to = addr.parse().unwrap();
                        self.net.send(NetCmd::SendTo { socket, to, data: IoBuf::from_static(b"x") });
                        self.net.send(NetCmd::SendTo { socket, to: from, data: IoBuf::from_static(b"sent") });
                    }
                    ["seg", size, len] => {
                        let len: usize = len.parse().unwrap();
                        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                        let size = size.parse().unwrap();
                        self.net.send(NetCmd::SendSegments { socket, to: from, data: IoBuf::from(body), size });
                    }
                    _ => {
                        self.net.send(NetCmd::SendTo { socket, to: from, data });
                    }
                }
            }
            NetEvent::Truncated { from, len, .. } => seen.truncated.push((from, len)),
            NetEvent::SendToFailed { to, error, .. } => seen.failed.push((to, error)),
            _ => {}
        }
    }
}

/// A `UdpEcho` on `addr` on each of `workers`.
fn server(b: Builder, addr: &str, workers: &[usize]) -> (Runtime, SocketAddr, Arc<Mutex<Seen>>) {
    let mut b = b.cpus([]);
    let echo = b.stage::<NetEvent>("echo", StageConfig::on(workers.iter().copied()));
    let (net, udp) = b.udp(UdpConfig::new(addr.parse().unwrap(), workers.iter().copied()), echo);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    b.handler(echo, move |s| UdpEcho { net: Outbox::with_waker(s.sink(net), s.waker(echo)), seen: s2.clone() });
    let rt = b.start().expect("runtime starts");
    let addr = rt.udp_addr(udp);
    (rt, addr, seen)
}

fn client(bind: &str) -> UdpSocket {
    let c = UdpSocket::bind(bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

fn recv(c: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let (n, _) = c.recv_from(&mut buf).expect("a reply within 5 s");
    buf.truncate(n);
    buf
}

#[test]
fn an_echo_on_two_workers_loses_nothing_under_a_bounded_load() {
    let (rt, addr, seen) = server(Runtime::builder(2), "127.0.0.1:0", &[0, 1]);
    const CLIENTS: usize = 16;
    const EACH: u32 = 300;
    const WINDOW: u32 = 8;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let s = client("127.0.0.1:0");
                s.connect(addr).unwrap();
                let msg = |i: u32| format!("client {c} datagram {i} {}", "z".repeat(i as usize % 700)).into_bytes();
                let mut got = HashSet::new();
                let mut sent = 0;
                while sent < WINDOW {
                    s.send(&msg(sent)).unwrap();
                    sent += 1;
                }
                while got.len() < EACH as usize {
                    let reply = recv(&s);
                    let text = String::from_utf8(reply.clone()).unwrap();
                    let i: u32 = text.split(' ').nth(3).unwrap().parse().unwrap();
                    assert_eq!(reply, msg(i), "client {c}: datagram {i} came back whole");
                    assert!(got.insert(i), "client {c}: datagram {i} came back once");
                    if sent < EACH {
                        s.send(&msg(sent)).unwrap();
                        sent += 1;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total = CLIENTS as u64 * u64::from(EACH);
    let m = rt.metrics();
    assert_eq!(m.workers.iter().map(|w| w.udp_received).sum::<u64>(), total);
    eventually("every answer's send completed", Duration::from_secs(5), || {
        rt.metrics().workers.iter().map(|w| w.udp_sent).sum::<u64>() == total
    });
    let seen = seen.lock().unwrap();
    assert!(seen.failed.is_empty() && seen.truncated.is_empty());
    // 16 source ports hash onto two SO_REUSEPORT sockets: all on one has odds of 2^-15.
    assert_eq!(seen.workers.len(), 2, "both workers' sockets received");
    drop(seen);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_datagram_larger_than_a_buffer_is_reported_truncated_and_not_delivered() {
    let b = Runtime::builder(1).buffers(64, 1024);
    let (rt, addr, seen) = server(b, "127.0.0.1:0", &[0]);
    let c = client("127.0.0.1:0");
    c.send_to(&[7u8; 2000], addr).unwrap();
    c.send_to(b"small", addr).unwrap();
    assert_eq!(recv(&c), b"small", "the large datagram was not echoed, cut or whole");
    // The largest that fits: a buffer less the receive header (16 bytes) and address room (28).
    c.send_to(&[9u8; 1024 - 44], addr).unwrap();
    assert_eq!(recv(&c), vec![9u8; 1024 - 44]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.truncated, vec![(c.local_addr().unwrap(), 2000)], "reported with its source and full length");
    drop(seen);
    assert_eq!(rt.metrics().workers[0].udp_truncated, 1);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn ipv6_and_dual_stack_sockets_answer_with_their_peers_addresses() {
    let (rt, addr, seen) = server(Runtime::builder(1), "[::1]:0", &[0]);
    let c = client("[::1]:0");
    c.send_to(b"six", addr).unwrap();
    assert_eq!(recv(&c), b"six");
    assert_eq!(seen.lock().unwrap().sources, vec![c.local_addr().unwrap()]);
    rt.shutdown();
    rt.join().unwrap();

    // `[::]` takes IPv4 too (unless the host turned dual stack off); an IPv4 peer shows as one.
    if std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "1") {
        return;
    }
    let (rt, addr, seen) = server(Runtime::builder(1), "[::]:0", &[0]);
    let c4 = client("127.0.0.1:0");
    c4.send_to(b"four", ("127.0.0.1", addr.port())).unwrap();
    assert_eq!(recv(&c4), b"four");
    let c6 = client("[::1]:0");
    c6.send_to(b"six", ("::1", addr.port())).unwrap();
    assert_eq!(recv(&c6), b"six");
    assert_eq!(seen.lock().unwrap().sources, vec![c4.local_addr().unwrap(), c6.local_addr().unwrap()]);
    // And an IPv4 destination named by the handler is reached from the IPv6 socket.
    let target = client("127.0.0.1:0");
    c4.send_to(format!("to {}", target.local_addr().unwrap()).as_bytes(), ("127.0.0.1", addr.port())).unwrap();
    assert_eq!(recv(&target), b"x");
    assert_eq!(recv(&c4), b"sent");
    assert!(seen.lock().unwrap().failed.is_empty());
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_dual_stack_tcp_listener_takes_ipv4_and_ipv6_clients() {
    if std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "1") {
        return;
    }
    let mut b = Runtime::builder(1).cpus([]);
    let echo = b.stage::<NetEvent>("echo", StageConfig::on([0]));
    let (net, l) = b.listen(ListenConfig::new("[::]:0".parse().unwrap(), [0]), echo);
    b.handler(echo, move |s| {
        let mut net = Outbox::with_waker(s.sink(net), s.waker(echo));
        handler_fn(move |ev: NetEvent, _cx: &mut Context<'_>| {
            if let NetEvent::Data { conn, data } = ev {
                net.send(NetCmd::Send { conn, data });
            }
        })
    });
    let rt = b.start().unwrap();
    let port = rt.local_addr(l).port();
    for host in ["127.0.0.1", "::1"] {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect((host, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello", "over {host}");
    }
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn destinations_a_socket_cannot_reach_fail_with_errors_that_name_them() {
    let (rt, addr, seen) = server(Runtime::builder(1), "127.0.0.1:0", &[0]);
    let c = client("127.0.0.1:0");
    for to in ["[::1]:9", "127.0.0.1:0"] {
        c.send_to(format!("to {to}").as_bytes(), addr).unwrap();
        assert_eq!(recv(&c), b"sent", "the socket goes on serving");
    }
    eventually("both failures reported", Duration::from_secs(5), || seen.lock().unwrap().failed.len() == 2);
    let seen = seen.lock().unwrap();
    let failed: Vec<_> = seen.failed.iter().map(|(to, e)| (to.to_string(), e.kind(), e.to_string())).collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, "[::1]:9");
    assert_eq!(failed[0].1, std::io::ErrorKind::InvalidInput);
    assert!(failed[0].2.contains("[::1]:9") && failed[0].2.contains("IPv4 socket"), "{}", failed[0].2);
    assert_eq!(failed[1].0, "127.0.0.1:0");
    assert!(failed[1].2.contains("port 0"), "{}", failed[1].2);
    drop(seen);
    assert_eq!(rt.metrics().workers[0].udp_send_failed, 2);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn segments_leave_as_datagrams_of_their_size() {
    let (rt, addr, seen) = server(Runtime::builder(1), "127.0.0.1:0", &[0]);
    let c = client("127.0.0.1:0");
    let before = rt.metrics().workers[0].udp_sent;
    c.send_to(b"seg 100 1050", addr).unwrap();
    let body: Vec<u8> = (0..1050).map(|i| (i % 251) as u8).collect();
    for i in 0..11 {
        let d = recv(&c);
        let end = (i * 100 + 100).min(1050);
        assert_eq!(d, body[i * 100..end], "segment {i}");
    }
    // One send carried them all (the kernel has GSO).
    eventually("the send completed", Duration::from_secs(5), || rt.metrics().workers[0].udp_sent > before);
    assert_eq!(rt.metrics().workers[0].udp_sent - before, 1);
    // More than 64 segments is refused, by name.
    c.send_to(b"seg 10 1000", addr).unwrap();
    eventually("the refusal reported", Duration::from_secs(5), || !seen.lock().unwrap().failed.is_empty());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.failed.len(), 1);
    assert!(seen.failed[0].1.to_string().contains("100 datagrams"), "{}", seen.failed[0].1);
    drop(seen);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_udp_address_in_use_is_an_error_naming_it() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut b = Runtime::builder(1).cpus([]);
    let echo = b.stage::<NetEvent>("echo", StageConfig::on([0]));
    let _ = b.udp(UdpConfig::new(addr, [0]), echo);
    b.handler(echo, |_| handler_fn(|_ev: NetEvent, _cx: &mut Context<'_>| {}));
    let err = b.start().expect_err("the address is taken");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[test]
fn with_the_pool_empty_datagrams_wait_in_the_kernel_and_are_all_answered() {
    // 8 buffers that never grow, a burst of 200: the receive runs dry and waits for buffers the
    // echo's sends give back, while the rest wait in the socket's kernel buffer.
    let b = Runtime::builder(1).buffers(8, 2048).max_buffers(8);
    let (rt, addr, _seen) = server(b, "127.0.0.1:0", &[0]);
    let c = client("127.0.0.1:0");
    for i in 0..200u32 {
        c.send_to(format!("burst {i}").as_bytes(), addr).unwrap();
    }
    let mut got = HashSet::new();
    for _ in 0..200 {
        got.insert(String::from_utf8(recv(&c)).unwrap());
    }
    assert_eq!(got.len(), 200, "each datagram answered once");
    let w = &rt.metrics().workers[0];
    assert_eq!(w.udp_received, 200);
    assert!(w.enobufs > 0, "the pool did run dry");
    rt.shutdown();
    rt.join().unwrap();
}
