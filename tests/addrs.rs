//! Addresses in the opening events: the peer and local address of accepted connections (IPv4,
//! IPv6, a wildcard listener with and without direct descriptors) and of outbound ones; none
//! for Unix domain sockets.

use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use ringstage::net::ConnectConfig;
use ringstage::prelude::*;
use ringstage::runtime::RingConfig;

enum Seen {
    Opened(ConnAddrs),
    Connected(ConnAddrs),
    Data,
}

/// A runtime with a listener on `cfg` and a connector whose events, with the listener's,
/// are reported on the returned channel. Returns the runtime, the listener's address, the
/// channel, and an injector that asks the connector to connect to an address.
fn server(cfg: ListenConfig, fixed_files: bool) -> (Runtime, SocketAddr, mpsc::Receiver<Seen>, Injector<SocketAddr>) {
    let ring = RingConfig { fixed_files, ..RingConfig::default() };
    let mut b = Runtime::builder(1).cpus([]).ring(ring);
    let app = b.stage::<NetEvent>("app", StageConfig::on([0]));
    let ctl = b.stage::<SocketAddr>("ctl", StageConfig::on([0]));
    let (net, l) = b.listen(cfg, app);
    let (_, connector) = b.connector(ConnectConfig::new(), app);
    let (tx, rx) = mpsc::channel();
    b.handler(app, move |_| {
        let tx = tx.clone();
        handler_fn(move |ev: NetEvent, _cx: &mut Context<'_>| {
            let seen = match ev {
                NetEvent::Opened { addrs, .. } => Seen::Opened(addrs),
                NetEvent::Connected { addrs, .. } => Seen::Connected(addrs),
                NetEvent::Data { .. } => Seen::Data,
                _ => return,
            };
            let _ = tx.send(seen);
        })
    });
    b.handler(ctl, move |s| {
        let net = s.sink(net);
        handler_fn(move |addr: SocketAddr, cx: &mut Context<'_>| {
            let cmd = NetCmd::Connect { connector, addr, worker: cx.worker(), tag: 1 };
            net.try_enqueue(cmd).expect("the net stage takes the command");
        })
    });
    let rt = b.start().expect("runtime starts");
    let addr = rt.local_addr(l);
    let inject = rt.injector(ctl);
    (rt, addr, rx, inject)
}

fn next(rx: &mpsc::Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(5)).expect("an event within 5 s")
}

fn opened(rx: &mpsc::Receiver<Seen>) -> ConnAddrs {
    match next(rx) {
        Seen::Opened(a) => a,
        _ => panic!("Opened comes first"),
    }
}

#[test]
fn accepted_and_outbound_connections_know_both_their_addresses() {
    for host in ["127.0.0.1", "[::1]"] {
        let (rt, addr, rx, connect) = server(ListenConfig::new(format!("{host}:0").parse().unwrap(), [0]), true);
        // Data sent at once still comes after Opened.
        let mut c = TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut c, b"hi").unwrap();
        let a = opened(&rx);
        assert_eq!(a.peer(), Some(c.local_addr().unwrap()), "over {host}");
        assert_eq!(a.local(), Some(addr), "a listener bound to one address: its address");
        assert!(matches!(next(&rx), Seen::Data));

        // An outbound connection to the listener: both ends, seen from both sides.
        connect.try_enqueue(addr).ok().unwrap();
        let (mut out, mut inbound) = (None, None);
        for _ in 0..2 {
            match next(&rx) {
                Seen::Connected(a) => out = Some(a),
                Seen::Opened(a) => inbound = Some(a),
                Seen::Data => panic!("nothing was sent"),
            }
        }
        let (out, inbound) = (out.unwrap(), inbound.unwrap());
        assert_eq!(out.peer(), Some(addr));
        assert_eq!(out.local(), inbound.peer(), "the connector's local address is the peer the listener saw");
        assert_eq!(inbound.local(), Some(addr));
        rt.shutdown();
        rt.join().unwrap();
    }
}

#[test]
fn a_wildcard_listener_knows_the_local_address_from_a_plain_descriptor_or_when_asked() {
    for (fixed, asked) in [(true, false), (false, false), (true, true)] {
        let cfg = ListenConfig::new("0.0.0.0:0".parse().unwrap(), [0]).local_addrs(asked);
        let (rt, addr, rx, _) = server(cfg, fixed);
        let mut c = TcpStream::connect(("127.0.0.1", addr.port())).unwrap();
        std::io::Write::write_all(&mut c, b"hi").unwrap();
        let a = opened(&rx);
        assert_eq!(a.peer(), Some(c.local_addr().unwrap()));
        let expect = if fixed && !asked { None } else { Some(c.peer_addr().unwrap()) };
        assert_eq!(a.local(), expect, "fixed files: {fixed}, local_addrs: {asked}");
        assert!(matches!(next(&rx), Seen::Data), "the data follows the opening");
        rt.shutdown();
        rt.join().unwrap();
    }
}

#[test]
fn a_unix_domain_connection_has_no_ip_addresses() {
    let path = std::env::temp_dir().join(format!("rs-addrs-{}.sock", std::process::id()));
    let (rt, _, rx, _) = server(ListenConfig::unix(&path, None, [0]).unwrap(), true);
    let _c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let a = opened(&rx);
    assert_eq!((a.peer(), a.local()), (None, None));
    rt.shutdown();
    rt.join().unwrap();
    let _ = std::fs::remove_file(&path);
}
