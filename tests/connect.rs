//! Outbound connections (`NetCmd::Connect`) on loopback: established, refused, timed out,
//! over the connector's limit, closed from either side, and on the asking worker.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use ringstage::net::ConnectConfig;
use ringstage::prelude::*;

/// What the test asks of the `ctl` stage.
enum Job {
    Connect(SocketAddr, u64),
    Send(Conn, Vec<u8>),
    Close(Conn),
}

/// What the `client` stage saw, with the worker that saw it.
#[derive(Debug)]
enum Seen {
    Connected(Conn, u64, usize),
    Failed(u64, std::io::ErrorKind, String),
    Data(Conn, Vec<u8>),
    Eof(Conn),
    Closed(Conn),
}

struct Client {
    rt: Runtime,
    jobs: Injector<Job>,
    seen: mpsc::Receiver<Seen>,
}

impl Client {
    /// A runtime of `workers` workers with the `ctl` and `client` stages on worker `on`, and a
    /// connector with `cfg` delivering to `client`.
    fn start(workers: usize, on: usize, cfg: ConnectConfig) -> Client {
        Client::build(workers, on, cfg, false).0
    }

    /// As [`Client::start`], with an echo server on worker `on` too; returns its address.
    fn start_serving(workers: usize, on: usize, cfg: ConnectConfig) -> (Client, SocketAddr) {
        let (c, addr) = Client::build(workers, on, cfg, true);
        (c, addr.unwrap())
    }

    fn build(workers: usize, on: usize, cfg: ConnectConfig, serve: bool) -> (Client, Option<SocketAddr>) {
        let (tx, seen) = mpsc::channel();
        let mut b = Runtime::builder(workers).cpus([]);
        let listener = serve.then(|| {
            let server = b.stage::<NetEvent>("server", StageConfig::on([on]));
            let (net, l) = b.listen(ListenConfig::new("127.0.0.1:0".parse().unwrap(), [on]), server);
            b.handler(server, move |s| Echo { net: s.sink(net) });
            l
        });
        let ctl = b.stage::<Job>("ctl", StageConfig::on([on]));
        let client = b.stage::<NetEvent>("client", StageConfig::on([on]));
        let (net, connector) = b.connector(cfg, client);
        b.handler(ctl, move |s| {
            let net = s.sink(net);
            handler_fn(move |job: Job, cx: &mut Context<'_>| {
                let cmd = match job {
                    Job::Connect(addr, tag) => NetCmd::Connect { connector, addr, worker: cx.worker(), tag },
                    Job::Send(conn, bytes) => NetCmd::Send { conn, data: IoBuf::copy_from_slice(&bytes) },
                    Job::Close(conn) => NetCmd::Close { conn },
                };
                net.try_enqueue(cmd).expect("the net stage takes the command");
            })
        });
        b.handler(client, move |_| {
            let tx = tx.clone();
            handler_fn(move |ev: NetEvent, cx: &mut Context<'_>| {
                let seen = match ev {
                    NetEvent::Connected { conn, connector: c, tag, .. } => {
                        assert_eq!(c, connector);
                        Seen::Connected(conn, tag, cx.worker())
                    }
                    NetEvent::ConnectFailed { tag, error, .. } => Seen::Failed(tag, error.kind(), error.to_string()),
                    NetEvent::Data { conn, data } => Seen::Data(conn, data.to_vec()),
                    NetEvent::Eof { conn } => Seen::Eof(conn),
                    NetEvent::Closed { conn } => Seen::Closed(conn),
                    NetEvent::Opened { .. } => panic!("no listener here"),
                    // Nothing here sends anywhere near the output limit, nor uses UDP.
                    ev => panic!("unexpected {ev:?}"),
                };
                let _ = tx.send(seen);
            })
        });
        let rt = b.start().expect("runtime starts");
        let jobs = rt.injector(ctl);
        let addr = listener.map(|l| rt.local_addr(l));
        (Client { rt, jobs, seen }, addr)
    }

    fn ask(&self, job: Job) {
        assert!(self.jobs.try_enqueue(job).is_ok(), "the ctl stage takes the job");
    }

    fn next(&self) -> Seen {
        self.seen.recv_timeout(Duration::from_secs(20)).expect("an event within 20 s")
    }

    fn stop(self) -> ringstage::metrics::Snapshot {
        let m = self.rt.metrics();
        self.rt.shutdown();
        self.rt.join().unwrap();
        m
    }
}

/// A ringstage echo server on its own runtime, checked with a plain client first.
fn echo_peer() -> (Runtime, SocketAddr) {
    let (rt, addr) = echo_server(Runtime::builder(1), 0, |c| c);
    roundtrip(addr, pattern(0, 1000), 100);
    (rt, addr)
}

/// A listener with a backlog of 0 that never accepts, with its queue filled: the kernel drops
/// further SYNs, so a connect to `addr` hangs until it gives up. Lives as long as the value.
struct UnansweringPeer {
    addr: SocketAddr,
    _listener: std::os::fd::OwnedFd,
    _queued: Vec<std::net::TcpStream>,
}

fn unanswering_peer() -> UnansweringPeer {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let l = ringstage_sys::socket::listen(any, 0, false).unwrap();
    let addr = ringstage_sys::socket::local_addr(std::os::fd::AsRawFd::as_raw_fd(&l)).unwrap();
    let queued =
        (0..3).filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()).collect();
    UnansweringPeer { addr, _listener: l, _queued: queued }
}

/// The next `len` bytes `conn` receives (its echo); any other event first is a failure.
fn echoed(c: &Client, conn: Conn, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        match c.next() {
            Seen::Data(d, bytes) if d == conn => got.extend(bytes),
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    got
}

fn connected(c: &Client, tag: u64) -> Conn {
    match c.next() {
        Seen::Connected(conn, t, _) if t == tag => conn,
        other => panic!("expected Connected for tag {tag}, got {other:?}"),
    }
}

#[test]
fn an_outbound_connection_lives_on_the_asking_worker_and_carries_bytes_both_ways() {
    let (_peer, peer) = echo_peer();
    let c = Client::start(2, 1, ConnectConfig::new());
    c.ask(Job::Connect(peer, 7));
    let conn = match c.next() {
        Seen::Connected(conn, 7, worker) => {
            assert_eq!(worker, 1, "the connector's stage heard it on the asking worker");
            assert_eq!(conn.worker(), 1, "the socket belongs to the asking worker");
            conn
        }
        other => panic!("expected Connected, got {other:?}"),
    };
    // 256 KiB: many receives each way, in order.
    let msg = pattern(7, 256 << 10);
    c.ask(Job::Send(conn, msg.clone()));
    let got = echoed(&c, conn, msg.len());
    assert!(got == msg, "the echo came back whole and in order");
    c.ask(Job::Close(conn));
    assert!(matches!(c.next(), Seen::Closed(d) if d == conn));
    let m = c.stop();
    assert_eq!((m.total(|w| w.connected), m.total(|w| w.connect_failed)), (1, 0));
    assert_eq!(m.total(|w| w.closed), 1);
}

#[test]
fn a_peer_that_finishes_sending_is_reported_and_still_gets_the_answer() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = l.local_addr().unwrap();
    let c = Client::start(1, 0, ConnectConfig::new());
    c.ask(Job::Connect(peer, 1));
    let conn = connected(&c, 1);
    let (mut s, _) = l.accept().unwrap();
    s.write_all(b"question").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap(); // half-close: still reading
    let mut got = Vec::new();
    loop {
        match c.next() {
            Seen::Data(d, bytes) if d == conn => got.extend(bytes),
            Seen::Eof(d) if d == conn => break,
            other => panic!("expected data then Eof, got {other:?}"),
        }
    }
    assert_eq!(got, b"question");
    c.ask(Job::Send(conn, b"answer".to_vec()));
    c.ask(Job::Close(conn));
    let mut answer = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    std::io::Read::read_to_end(&mut s, &mut answer).unwrap();
    assert_eq!(answer, b"answer", "the answer, then the close");
    assert!(matches!(c.next(), Seen::Closed(d) if d == conn));
    c.stop();
}

#[test]
fn a_refused_connect_says_so() {
    // A port that was just free: nothing listens there.
    let peer = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let c = Client::start(1, 0, ConnectConfig::new());
    c.ask(Job::Connect(peer, 3));
    match c.next() {
        Seen::Failed(3, kind, _) => assert_eq!(kind, std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    let m = c.stop();
    assert_eq!((m.total(|w| w.connected), m.total(|w| w.connect_failed)), (0, 1));
}

#[test]
fn a_connect_that_gets_no_answer_times_out() {
    let peer = unanswering_peer();
    let c = Client::start(1, 0, ConnectConfig::new().timeout(Duration::from_millis(200)));
    let t = Instant::now();
    c.ask(Job::Connect(peer.addr, 9));
    match c.next() {
        Seen::Failed(9, kind, _) => assert_eq!(kind, std::io::ErrorKind::TimedOut),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(5), "timed out after {took:?}");
    c.stop();
    drop(peer);
}

#[test]
fn a_connector_at_its_limit_refuses_at_once_and_frees_the_place_on_close() {
    let (_peer, peer) = echo_peer();
    let c = Client::start(1, 0, ConnectConfig::new().max_connections(1));
    c.ask(Job::Connect(peer, 1));
    c.ask(Job::Connect(peer, 2));
    let (mut first, mut refused) = (None, false);
    for _ in 0..2 {
        match c.next() {
            Seen::Connected(conn, 1, _) => first = Some(conn),
            Seen::Failed(2, _, msg) => {
                assert!(msg.contains("limit"), "{msg}");
                refused = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let first = first.expect("the first connect succeeded");
    assert!(refused, "the second one was refused");
    c.ask(Job::Close(first));
    assert!(matches!(c.next(), Seen::Closed(d) if d == first));
    c.ask(Job::Connect(peer, 3));
    connected(&c, 3);
    let m = c.stop();
    assert_eq!((m.total(|w| w.connected), m.total(|w| w.connect_failed)), (2, 1));
}

#[test]
fn a_runtime_dials_its_own_listener() {
    // Both ends of the connection are ring sockets of one worker: the accepted one echoes.
    let (c, server) = Client::start_serving(1, 0, ConnectConfig::new());
    c.ask(Job::Connect(server, 4));
    let conn = connected(&c, 4);
    c.ask(Job::Send(conn, b"round trip".to_vec()));
    let got = echoed(&c, conn, 10);
    assert_eq!(got, b"round trip");
    c.ask(Job::Close(conn));
    assert!(matches!(c.next(), Seen::Closed(d) if d == conn));
    let m = c.stop();
    assert_eq!((m.total(|w| w.accepted), m.total(|w| w.connected)), (1, 1));
}

#[test]
fn a_connect_for_a_worker_that_does_not_exist_is_refused_by_the_sink() {
    let mut b = Runtime::builder(1).cpus([]);
    let client = b.stage::<NetEvent>("client", StageConfig::on([0]));
    let (net, connector) = b.connector(ConnectConfig::new(), client);
    let (tx, rx) = mpsc::channel();
    let ctl = b.stage::<SocketAddr>("ctl", StageConfig::on([0]));
    b.handler(client, |_| handler_fn(|_: NetEvent, _: &mut Context<'_>| {}));
    b.handler(ctl, move |s| {
        let net = s.sink(net);
        let tx = tx.clone();
        handler_fn(move |addr: SocketAddr, _: &mut Context<'_>| {
            let refused = net.try_enqueue(NetCmd::Connect { connector, addr, worker: 5, tag: 0 }).is_err();
            tx.send(refused).unwrap();
        })
    });
    let rt = b.start().unwrap();
    rt.injector(ctl).try_enqueue("127.0.0.1:9".parse().unwrap()).unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "a Connect for worker 5 of 1 is handed back");
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn shutdown_cuts_a_hanging_connect_short() {
    let peer = unanswering_peer();
    let c = Client::start(1, 0, ConnectConfig::new().timeout(Duration::from_secs(60)));
    c.ask(Job::Connect(peer.addr, 5));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    c.rt.shutdown();
    match c.next() {
        Seen::Failed(5, kind, _) => assert_eq!(kind, std::io::ErrorKind::Interrupted),
        other => panic!("expected the connect to fail, got {other:?}"),
    }
    c.rt.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "shutdown waited {:?} for a 60 s connect", t.elapsed());
    drop(peer);
}

#[test]
fn ipv6_listeners_and_connectors_carry_bytes_both_ways() {
    // An echo listening on ::1, checked with a plain client, then dialled by a connector.
    let (_peer, addr) = echo_server(Runtime::builder(1), 0, |_| ListenConfig::new("[::1]:0".parse().unwrap(), [0]));
    assert!(addr.is_ipv6(), "{addr}");
    roundtrip(addr, pattern(6, 10_000), 1000);
    let c = Client::start(1, 0, ConnectConfig::new());
    c.ask(Job::Connect(addr, 6));
    let conn = connected(&c, 6);
    let msg = pattern(66, 64 << 10);
    c.ask(Job::Send(conn, msg.clone()));
    let got = echoed(&c, conn, msg.len());
    assert!(got == msg, "the echo came back whole and in order over IPv6");
    c.stop();
}
