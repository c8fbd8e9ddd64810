//! Echo server end to end on loopback: many clients, large and split messages, peer reset,
//! buffer exhaustion, timeouts, one and two workers.

mod common;
mod example;
mod linger;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ringstage::control::CoreConfig;
use ringstage::prelude::*;

/// Writes `msg` on `s` and reads as many bytes back, asserting they are `msg` (`what` says why).
fn echo_once(s: &mut TcpStream, msg: &[u8], what: &str) {
    s.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg, "{what}");
}

fn many_clients(workers: usize, echo_worker: usize) {
    let (rt, addr) = echo_server(Runtime::builder(workers), echo_worker, |c| c);
    let clients: Vec<_> = (0..32)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for round in 0..20u64 {
                    let msg = pattern(i * 1000 + round, 1 + ((i * 37 + round * 101) % 3000) as usize);
                    echo_once(&mut s, &msg, "echoed unchanged");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let m = rt.metrics();
    assert_eq!(m.total(|w| w.accepted), 32);
    let echo = m.stage("echo").unwrap();
    assert!(echo.processed >= 32 * 20, "every message passed through the echo stage: {echo:?}");
    assert_eq!(echo.refused, 0);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn many_clients_one_worker() {
    many_clients(1, 0);
}

#[test]
fn many_clients_split_across_workers() {
    // The echo stage on worker 1: every buffer crosses cores twice, uncopied.
    many_clients(2, 1);
}

#[test]
fn large_messages_in_small_pieces() {
    let (rt, addr) = echo_server(Runtime::builder(2), 1, |c| c);
    roundtrip(addr, pattern(1, 4 << 20), 65536); // 4 MiB: ~1000 pool buffers
    roundtrip(addr, pattern(2, 100_000), 7); // many tiny writes
    roundtrip(addr, pattern(3, 1), 1);
    drop(rt); // drop shuts down and joins
}

/// 8 buffers of 512 bytes for 8 clients each streaming 256 KiB: receives run out of buffers
/// (ENOBUFS) over and over, and every byte still comes back. Returns the runtime's metrics.
fn exhaust_buffers(cfg: impl FnOnce(ListenConfig) -> ListenConfig) -> ringstage::metrics::Snapshot {
    let b = Runtime::builder(2).buffers(8, 512);
    let (rt, addr) = echo_server(b, 1, cfg);
    let clients: Vec<_> =
        (0..8).map(|i| std::thread::spawn(move || roundtrip(addr, pattern(i, 256 << 10), 8192))).collect();
    for c in clients {
        c.join().unwrap();
    }
    let m = rt.metrics();
    assert!(m.total(|w| w.enobufs) > 0, "the pool really ran dry: {:?}", m.workers);
    m
}

#[test]
fn buffer_exhaustion_rearms_and_loses_nothing() {
    let m = exhaust_buffers(|c| c);
    assert_eq!(m.total(|w| w.zc_sends), 0, "zero copy is off by default");
}

#[test]
fn zero_copy_sends_deliver_every_byte_and_give_buffers_back() {
    // Every send is a SEND_ZC. The echoed pool buffers are held until the kernel's
    // notification: were one never given back, the 8-buffer pool would stay dry and the
    // clients would stall.
    let m = exhaust_buffers(|c| c.zero_copy_sends(Some(0)));
    let (zc, sends) = (m.total(|w| w.zc_sends), m.total(|w| w.sends));
    assert!(zc > 0 && zc == sends, "{zc} of {sends} sends were zero copy");
}

fn peer_reset_mid_send(cfg: impl FnOnce(ListenConfig) -> ListenConfig) {
    let (rt, addr) = echo_server(Runtime::builder(1), 0, cfg);
    {
        // Push data but never read: the server's sends back up, then the peer resets.
        let mut s = connect(addr);
        let chunk = vec![7u8; 1 << 20];
        let deadline = Instant::now() + Duration::from_secs(5);
        s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        while Instant::now() < deadline {
            if s.write_all(&chunk).is_err() {
                break; // both directions are full
            }
        }
        linger::reset_on_close(&s);
    } // close with linger 0 sends RST
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.metrics().total(|w| w.closed) < 1 {
        assert!(Instant::now() < deadline, "reset connection was closed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The server still serves others.
    roundtrip(addr, pattern(9, 10_000), 1000);
}

#[test]
fn peer_reset_mid_send_closes_only_that_connection() {
    peer_reset_mid_send(|c| c);
}

#[test]
fn peer_reset_mid_zero_copy_send_closes_only_that_connection() {
    peer_reset_mid_send(|c| c.zero_copy_sends(Some(0)));
}

#[test]
fn idle_connections_time_out() {
    let (rt, addr) = echo_server(Runtime::builder(1), 0, |c| c.idle_timeout(Duration::from_millis(200)));
    let mut idle = connect(addr);
    let t0 = Instant::now();
    let mut b = [0u8; 1];
    assert_eq!(idle.read(&mut b).unwrap(), 0, "server closed the idle connection");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(150), "not before the timeout: {waited:?}");
    // An active connection is not cut while it keeps talking.
    let mut s = connect(addr);
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(&[i]).unwrap();
        s.read_exact(&mut b).unwrap();
        assert_eq!(b[0], i);
    }
    drop(rt);
}

#[test]
fn send_timeout_aborts_a_peer_that_stops_reading() {
    stalled_peer_is_cut_off(|c| c);
}

#[test]
fn send_timeout_aborts_a_peer_that_stops_reading_zero_copy() {
    // Zero-copy sends whose notifications cannot come while the peer reads nothing: the abort
    // still closes the socket, and the views wait for the notifications that follow.
    stalled_peer_is_cut_off(|c| c.zero_copy_sends(Some(0)));
}

fn stalled_peer_is_cut_off(cfg: impl FnOnce(ListenConfig) -> ListenConfig) {
    let (rt, addr) = echo_server(Runtime::builder(1), 0, |c| cfg(c.send_timeout(Duration::from_millis(300))));
    let mut s = connect(addr);
    s.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
    let chunk = vec![1u8; 256 << 10];
    let deadline = Instant::now() + Duration::from_secs(10);
    // Keep writing without reading until the server gives up on us.
    loop {
        assert!(Instant::now() < deadline, "server aborted the stalled connection");
        match s.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break, // reset by the server
        }
        if rt.metrics().total(|w| w.closed) == 1 {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while rt.metrics().total(|w| w.closed) < 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_listener_at_its_connection_limit_leaves_clients_in_the_backlog_unreset() {
    // The limit plus a thousand clients (the backlog holds 1024): none is reset; each is
    // served once the connections before it close, in order.
    let cap = 8;
    let (rt, addr) = echo_server(Runtime::builder(1), 0, |c| c.max_connections(cap));
    let mut clients: Vec<TcpStream> = (0..cap + 1000).map(|_| connect(addr)).collect();
    for (i, s) in clients.iter_mut().enumerate() {
        s.write_all(&(i as u32).to_le_bytes()).unwrap();
    }
    let open = |rt: &Runtime| rt.metrics().total(|w| w.accepted) - rt.metrics().total(|w| w.closed);
    for (i, mut s) in clients.into_iter().enumerate() {
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(u32::from_le_bytes(b), i as u32);
        assert!(open(&rt) <= cap as u64, "{} open", open(&rt));
        drop(s); // its close lets the next client in
    }
    let m = rt.metrics();
    assert_eq!(m.total(|w| w.accepted), cap as u64 + 1000);
    assert_eq!(m.total(|w| w.accept_backoffs), 0);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn shutdown_flushes_pending_echo() {
    let (rt, addr) = echo_server(Runtime::builder(2), 1, |c| c);
    let mut s = connect(addr);
    let msg = pattern(5, 1 << 20);
    s.write_all(&msg[..4096]).unwrap();
    let mut got = vec![0; 4096];
    s.read_exact(&mut got).unwrap();
    rt.shutdown();
    rt.join().unwrap();
    // After shutdown the server closed the connection: reads end.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(), "listener closed");
}

/// Echoes each received buffer back as one `Send` per byte: 64 commands for one message.
struct Bytewise {
    net: Sink<NetCmd>,
}

impl Handler for Bytewise {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        if let NetEvent::Data { conn, data } = ev {
            let cmds = (0..data.len()).map(|i| NetCmd::Send { conn, data: data.slice(i..i + 1) });
            if self.net.enqueue_many(cmds).is_err() {
                panic!("net stage refused a batch");
            }
        }
    }
}

#[test]
fn commands_of_one_batch_leave_in_one_gathered_send() {
    // Pipelined responses are many commands for one connection in one batch: they must go out
    // as one send, in order, not one send per command.
    let (rt, addr) = serve(Runtime::builder(1), "bytewise", StageConfig::on([0]), |c| c, |net| Bytewise { net });
    let mut s = connect(addr);
    let rounds = 100;
    for round in 0..rounds {
        echo_once(&mut s, &pattern(round, 64), "pieces arrive in command order");
    }
    let m = rt.metrics();
    let sends = m.total(|w| w.sends);
    let data_events = m.stage("bytewise").unwrap().processed - 1; // less the Opened event
    assert!(sends >= rounds, "one send per message at least: {sends}");
    assert!(sends <= data_events + rounds / 10, "{sends} sends for {data_events} receives of 64 commands each");
}

/// Echo that takes `delay` per message: a stage far slower than the network.
struct SlowEcho {
    net: Sink<NetCmd>,
    delay: Duration,
}

impl Handler for SlowEcho {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        if let NetEvent::Data { conn, data } = ev {
            std::thread::sleep(self.delay);
            if self.net.try_enqueue(NetCmd::Send { conn, data }).is_err() {
                panic!("net stage refused");
            }
        }
    }
}

#[test]
fn events_parked_behind_a_full_remote_stage_neither_spin_nor_get_lost() {
    // The echo stage on worker 1 holds 2 events and takes 5 ms each: the net worker's events
    // park behind it. The net worker must nap between retries (it has no doorbell for "the
    // other worker's queue drained"), not spin, and every byte must still come back in order.
    let (rt, addr) = serve(
        Runtime::builder(2),
        "slow",
        StageConfig::on([1]).capacity(2),
        |c| c,
        |net| SlowEcho { net, delay: Duration::from_millis(5) },
    );
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let msgs: Vec<Vec<u8>> = (0..20).map(|k| pattern(i * 100 + k, 64)).collect();
                let mut r = s.try_clone().unwrap();
                let expect: Vec<u8> = msgs.concat();
                let reader = std::thread::spawn(move || {
                    let mut got = vec![0; expect.len()];
                    r.read_exact(&mut got).unwrap();
                    assert!(got == expect, "echoed bytes differ");
                });
                for m in msgs {
                    s.write_all(&m).unwrap();
                    std::thread::sleep(Duration::from_millis(1)); // separate receives
                }
                reader.join().unwrap();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let loops0 = rt.metrics().workers[0].loops;
    std::thread::sleep(Duration::from_millis(200));
    let m = rt.metrics();
    let loops = m.workers[0].loops - loops0;
    assert!(m.workers[0].parked > 0, "events really parked: {:?}", m.workers[0]);
    for c in clients {
        c.join().unwrap();
    }
    // Spinning would be hundreds of thousands of iterations in 200 ms; napping 100 µs between
    // retries is at most ~2000 plus one per completion.
    assert!(loops < 20_000, "net worker looped {loops} times in 200 ms while parked");
}

/// The listening socket of `addr` among this process's descriptors.
fn listener_fd(addr: std::net::SocketAddr) -> i32 {
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let mut on = 0i32;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: getsockopt writes an int into a live i32 of the given length.
        let r = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, (&mut on as *mut i32).cast(), &mut len)
        };
        if r == 0 && on == 1 && ringstage_sys::socket::local_addr(fd).is_ok_and(|a| a == addr) {
            return fd;
        }
    }
    panic!("no listening socket for {addr}");
}

#[test]
fn a_listener_the_kernel_refuses_backs_off_instead_of_spinning() {
    let (rt, addr) = echo_server(Runtime::builder(1), 0, |c| c);
    roundtrip(addr, b"before".to_vec(), 6);
    // Shutting a listening socket down makes every accept on it fail (EINVAL) for good.
    // SAFETY: shutdown on a live descriptor; the runtime still owns and will close it.
    assert_eq!(unsafe { libc::shutdown(listener_fd(addr), libc::SHUT_RDWR) }, 0);
    std::thread::sleep(Duration::from_millis(100));
    let (loops0, t0) = (rt.metrics().total(|w| w.loops), Instant::now());
    std::thread::sleep(Duration::from_millis(1000));
    let m = rt.metrics();
    let loops_per_sec = (m.total(|w| w.loops) - loops0) as f64 / t0.elapsed().as_secs_f64();
    assert!(m.total(|w| w.accept_backoffs) > 0, "the failed accept backed off: {:?}", m.workers);
    assert!(loops_per_sec < 2000.0, "the worker backs off instead of re-arming in a loop: {loops_per_sec:.0} loops/s");
    rt.shutdown();
    rt.join().unwrap();
}

/// Per connection: the worker that saw each of its events, and the event's kind.
type Seen = Arc<Mutex<HashMap<Conn, Vec<(usize, char)>>>>;

/// Echoes, and records which worker saw each event of each connection, in order.
struct Tracked {
    net: Sink<NetCmd>,
    seen: Seen,
    delay: Duration,
}

impl Handler for Tracked {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, cx: &mut Context<'_>) {
        let (conn, kind) = match &ev {
            NetEvent::Opened { conn, .. } => (*conn, 'o'),
            NetEvent::Data { conn, .. } => (*conn, 'd'),
            NetEvent::Eof { conn } => (*conn, 'e'),
            NetEvent::Closed { conn } => (*conn, 'c'),
            other => panic!("this server opens no connections: {other:?}"),
        };
        self.seen.lock().unwrap().entry(conn).or_default().push((cx.worker(), kind));
        let cmd = match ev {
            NetEvent::Data { conn, data } => {
                std::thread::sleep(self.delay);
                NetCmd::Send { conn, data }
            }
            NetEvent::Eof { conn } => NetCmd::Close { conn },
            _ => return,
        };
        if let Err(cmd) = self.net.try_enqueue(cmd) {
            panic!("net stage refused {cmd:?}");
        }
    }
}

/// `clients` connections each make `rounds` round trips and close; returns, per connection,
/// the workers that saw its events, once every connection's `Closed` has arrived, and the
/// stage's active replicas then.
fn track_connections(
    b: Builder,
    listen_on: &[usize],
    stage: StageConfig,
    clients: u64,
    rounds: u64,
    delay: Duration,
) -> (Vec<Vec<(usize, char)>>, u64) {
    let seen: Seen = Arc::default();
    let mut b = b.cpus([]);
    let st = b.stage::<NetEvent>("tracked", stage);
    let (net, l) = b.listen(ListenConfig::new("127.0.0.1:0".parse().unwrap(), listen_on.iter().copied()), st);
    let s2 = seen.clone();
    b.handler(st, move |s| Tracked { net: s.sink(net), seen: s2.clone(), delay });
    let rt = b.start().expect("runtime starts");
    let addr = rt.local_addr(l);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for r in 0..rounds {
                    echo_once(&mut s, &pattern(i * 100 + r, 64), "echoed unchanged");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = seen.lock().unwrap().values().filter(|v| v.last().is_some_and(|e| e.1 == 'c')).count();
        if done as u64 == clients {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of {clients} connections were seen closing");
        std::thread::sleep(Duration::from_millis(10));
    }
    let active = rt.metrics().stage("tracked").unwrap().active_replicas;
    rt.shutdown();
    rt.join().unwrap();
    let seen = seen.lock().unwrap();
    (seen.values().cloned().collect(), active)
}

fn assert_one_replica_per_connection(conns: &[Vec<(usize, char)>], rounds: u64) {
    for events in conns {
        let kinds: String = events.iter().map(|e| e.1).collect();
        assert_eq!(kinds, format!("o{}ec", "d".repeat(rounds as usize)), "a connection's events in order");
        assert!(
            events.iter().all(|e| e.0 == events[0].0),
            "every event of a connection reaches the replica that saw it open: {events:?}"
        );
    }
}

#[test]
fn a_connection_stays_with_one_replica_when_the_handler_lives_on_other_workers() {
    // The listener on worker 0, its handler stage on workers 1 and 2: no replica is local to
    // the connections, so each connection is given one replica when it opens and keeps it.
    let (conns, _) = track_connections(Runtime::builder(3), &[0], StageConfig::on([1, 2]), 24, 8, Duration::ZERO);
    assert_one_replica_per_connection(&conns, 8);
    let on = |w| conns.iter().filter(|c| c[0].0 == w).count();
    assert!(on(1) > 0 && on(2) > 0, "connections are spread over both replicas: {} and {}", on(1), on(2));
}

#[test]
fn a_connection_stays_with_its_replica_when_an_elastic_stage_grows() {
    // Listeners on both workers, the handler stage elastic on both and starting with one
    // active replica: connections accepted on the worker whose replica is asleep go to the
    // other one, and stay there after the controller wakes the local replica up.
    let cores = CoreConfig { min: 1, threshold: 0, up_after: 2, down_after: 1000 };
    let b = Runtime::builder(2).tick(Duration::from_millis(10));
    let stage = StageConfig::on([0, 1]).elastic(cores).batch(1); // one event per loop: a backlog at every tick
    let (conns, active) = track_connections(b, &[0, 1], stage, 16, 30, Duration::from_millis(1));
    assert_eq!(active, 2, "the backlog made the controller wake the second replica");
    assert_one_replica_per_connection(&conns, 30);
}

#[test]
fn a_client_that_half_closes_gets_every_echo_back_then_the_close() {
    // The FIN reaches the handler after the data (`Eof`); the handler closes once the echo is
    // queued. Closing at the FIN itself raced the echo stage and lost data now and then.
    let (rt, addr) = echo_server(Runtime::builder(2), 1, |c| c);
    let clients: Vec<_> = (0..32u64)
        .map(|i| {
            std::thread::spawn(move || {
                for round in 0..5u64 {
                    let mut s = connect(addr);
                    let msg = pattern(i * 10 + round, 1 + ((i * 131 + round * 17) % 5000) as usize);
                    s.write_all(&msg).unwrap();
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).unwrap();
                    assert!(got == msg, "client {i} round {round}: {} of {} bytes came back", got.len(), msg.len());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let m = rt.metrics();
    assert_eq!(m.total(|w| w.accepted), 32 * 5);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_handler_sending_several_commands_per_event_is_not_refused_by_the_net_stage() {
    // Each receive goes back as 16 sends of views of it: 16 commands per event, up to 64
    // events a batch. The network stage takes its whole queue each visit, so it keeps up; one
    // that took 64 a visit fell behind by hundreds each loop and refused within a few.
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = refused.clone();
    let (rt, addr) = serve(
        Runtime::builder(1),
        "fanout",
        StageConfig::on([0]),
        |c| c,
        move |net| {
            let r = r.clone();
            handler_fn(move |ev: NetEvent, _cx: &mut Context<'_>| {
                let NetEvent::Data { conn, data } = ev else { return };
                let step = data.len().div_ceil(16);
                for at in (0..data.len()).step_by(step) {
                    let part = data.slice(at..(at + step).min(data.len()));
                    if net.try_enqueue(NetCmd::Send { conn, data: part }).is_err() {
                        r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        },
    );
    let clients: Vec<_> =
        (0..16u64).map(|i| std::thread::spawn(move || roundtrip(addr, pattern(i, 2 << 20), 1024))).collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(rt.metrics().stage("net").unwrap().refused, 0);
    rt.shutdown();
}

/// The echo example's handler: what the network stage refuses waits in an outbox, in order,
/// and goes again when the replica is woken.
struct PatientEcho {
    net: Outbox<NetCmd>,
}

impl Handler for PatientEcho {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        match ev {
            NetEvent::Data { conn, data } => self.net.send(NetCmd::Send { conn, data }),
            NetEvent::Eof { conn } => self.net.send(NetCmd::Close { conn }),
            _ => false,
        };
    }

    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.net.flush();
    }
}

/// Streams `len` pattern bytes in 4 KiB writes while reading the echo, then half-closes and
/// expects every byte back and then the server's close.
fn stream_and_close(addr: std::net::SocketAddr, seed: u64, len: usize) {
    let mut s = connect(addr);
    let mut w = s.try_clone().unwrap();
    let msg = pattern(seed, len);
    let sent = msg.clone();
    let writer = std::thread::spawn(move || {
        for c in sent.chunks(4096) {
            w.write_all(c).unwrap();
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("echo, then the server's close");
    writer.join().unwrap();
    assert!(got == msg, "client {seed}: {} of {} bytes back, in order", got.len(), msg.len());
}

#[test]
fn a_network_stage_that_refuses_delays_echoes_and_closes_but_loses_none() {
    // A network stage queue of 2 commands: 32 clients streaming at once overflow it every loop
    // iteration, the echo stage's outbox keeps what it refuses, and the waker sends it on.
    let mut b = Runtime::builder(1).cpus([]).net_capacity(2);
    let st = b.stage::<NetEvent>("echo", StageConfig::on([0]));
    let (net, l) = b.listen(ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]), st);
    b.handler(st, move |s| PatientEcho { net: Outbox::with_waker(s.sink(net), s.waker(st)) });
    let rt = b.start().expect("runtime starts");
    let addr = rt.local_addr(l);
    let clients: Vec<_> = (0..32).map(|i| std::thread::spawn(move || stream_and_close(addr, i, 256 << 10))).collect();
    for c in clients {
        c.join().unwrap();
    }
    // A client sees its EOF when the kernel closes the socket, maybe before the worker reaps
    // the close's completion and counts it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = rt.metrics();
        if m.total(|w| w.closed) >= 32 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let net = m.stage("net").unwrap();
    assert!(net.refused > 0, "the network stage really refused commands: {net:?}");
    assert_eq!(m.total(|w| w.closed), 32, "every connection closed by the server");
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn the_echo_example_keeps_what_its_network_stage_refuses() {
    let s = example::start("echo", &["--net-capacity", "2"]);
    let addr = s.addr;
    let clients: Vec<_> = (0..32).map(|i| std::thread::spawn(move || stream_and_close(addr, i, 256 << 10))).collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// `(spins, spin_hits, idle_ns)` of the runtime's workers so far.
fn spun_and_slept(rt: &Runtime) -> (u64, u64, u64) {
    let m = rt.metrics();
    (m.total(|w| w.spins), m.total(|w| w.spin_hits), m.total(|w| w.idle_ns))
}

/// `rounds` request-response round trips, one at a time, on `s`, `pause` apart: the server
/// runs out of work between them even on a loaded machine, where it might otherwise always
/// find the next request already there.
fn ping_pong(s: &mut TcpStream, rounds: u64, pause: Duration) {
    for i in 0..rounds {
        echo_once(s, &pattern(i, 32), "echoed unchanged");
        std::thread::sleep(pause);
    }
}

#[test]
fn a_spinning_worker_takes_requests_at_short_gaps_without_sleeping_and_sleeps_when_idle() {
    // Spin 10 ms, tick 2 ms: a tick ending a sleep must not count as work arriving. Counts,
    // not times, so that a loaded machine (which stretches every gap) cannot fail it.
    let spin = Duration::from_millis(10);
    let b = Runtime::builder(1).tick(Duration::from_millis(2)).spin_before_sleep(spin);
    let (rt, addr) = echo_server(b, 0, |c| c);
    let mut s = connect(addr);
    echo_once(&mut s, b"warm", "echoed");
    // Busy: between a reply and the next request the worker polls, and requests arriving
    // meanwhile are taken without a sleep.
    let (n0, h0, _) = spun_and_slept(&rt);
    ping_pong(&mut s, 100, Duration::from_millis(1));
    let (n1, h1, i1) = spun_and_slept(&rt);
    assert!(h1 - h0 > 0, "polling took requests without sleeping: {} spins, {} hits", n1 - n0, h1 - h0);
    // Idle: after 4 spins in a row that find nothing it sleeps, and the tick's wake-ups do not
    // start it spinning again (without the back-off, or with a tick counted as work: a spin
    // per tick, ~25 in 300 ms). A hit restarts the count: at most 5 spins per hit, plus 4.
    std::thread::sleep(Duration::from_millis(300));
    let (n2, h2, i2) = spun_and_slept(&rt);
    let most = 5 * (h2 - h1) + 4;
    assert!(n2 - n1 <= most, "an idle worker stops spinning: {} spins ({} hits) in 300 ms", n2 - n1, h2 - h1);
    assert!(h2 - h1 <= 2, "nothing to find while idle but the last reply's completion: {} hits", h2 - h1);
    assert!(i2 - i1 >= 150_000_000, "an idle worker sleeps: {} ms slept in 300 ms", (i2 - i1) / 1_000_000);
    // Busy again: the first request ends a short sleep, and the worker polls again.
    ping_pong(&mut s, 100, Duration::from_millis(1));
    let (n3, h3, _) = spun_and_slept(&rt);
    assert!(h3 - h2 > 0, "polling resumed with the traffic: {} spins, {} hits", n3 - n2, h3 - h2);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_worker_without_a_spin_does_not_poll() {
    let (rt, addr) = echo_server(Runtime::builder(1), 0, |c| c);
    let mut s = connect(addr);
    ping_pong(&mut s, 100, Duration::from_millis(1));
    let m = rt.metrics();
    assert_eq!((m.total(|w| w.spins), m.total(|w| w.spin_ns)), (0, 0), "no polling by default");
    rt.shutdown();
    rt.join().unwrap();
}

/// `n` clients each streaming `len` bytes in 1 KiB writes and reading their echo back.
fn stream_clients(addr: std::net::SocketAddr, n: u64, len: usize) {
    let clients: Vec<_> = (0..n).map(|i| std::thread::spawn(move || roundtrip(addr, pattern(i, len), 1024))).collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn a_tiny_pool_has_its_receives_wait_for_buffers_without_an_enobufs_storm() {
    // 4 buffers for 64 streaming connections: receives run dry all the time. Re-arming every
    // starved receive whenever one buffer came back made millions of ENOBUFS completions; one
    // per free buffer keeps them to a small multiple of the buffers that came back.
    let (rt, addr) = echo_server(Runtime::builder(1).buffers(4, 4096), 0, |c| c);
    stream_clients(addr, 64, 64 << 10);
    std::thread::sleep(Duration::from_millis(120)); // two ticks: the pool's counts are current
    let m = rt.metrics();
    let (enobufs, returned) = (m.total(|w| w.enobufs), m.total(|w| w.buffers_returned));
    assert!(enobufs > 0, "the pool never ran dry");
    assert!(returned >= 64 * 16, "at least a buffer per 4 KiB written: {returned}");
    assert!(enobufs <= 2 * returned, "{enobufs} ENOBUFS for {returned} buffers given back");
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_completion_queue_too_small_for_the_load_overflows_is_counted_and_loses_nothing() {
    let ring = ringstage::runtime::RingConfig { entries: 8, cq_entries: 8, ..Default::default() };
    let (rt, addr) = echo_server(Runtime::builder(1).ring(ring), 0, |c| c);
    stream_clients(addr, 64, 32 << 10);
    let m = rt.metrics();
    assert!(m.total(|w| w.cq_overflow) > 0, "an 8-entry CQ for 64 busy connections overflows");
    assert_eq!(m.total(|w| w.cq_dropped), 0, "held back, not lost");
    rt.shutdown();
    rt.join().unwrap();
}

/// Echoes each message back as one chain of single-byte views.
struct Shredder {
    net: Sink<NetCmd>,
}

impl Handler for Shredder {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        if let NetEvent::Data { conn, data } = ev {
            let mut chain = IoBufChain::new();
            (0..data.len()).for_each(|i| chain.push(data.slice(i..i + 1)));
            self.net.try_enqueue(NetCmd::SendChain { conn, data: chain }).expect("the net stage takes the echo");
        }
    }
}

/// Sends of a server answering each of `rounds` 640-byte messages with 640 one-byte views.
fn sends_for_shredded_echo(coalesce_below: usize, rounds: usize) -> u64 {
    let (rt, addr) = serve(
        Runtime::builder(1),
        "shred",
        StageConfig::on([0]),
        |c| c.coalesce_below(coalesce_below),
        |net| Shredder { net },
    );
    let mut s = connect(addr);
    for r in 0..rounds {
        let msg = pattern(r as u64, 640);
        s.write_all(&msg).unwrap();
        let mut got = vec![0; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg, "round {r}: the views' bytes, in order");
    }
    let sends = rt.metrics().total(|w| w.sends);
    rt.shutdown();
    rt.join().unwrap();
    sends
}

#[test]
fn small_views_are_coalesced_into_one_send() {
    // 640 views are ten sends of 64 iovecs each, unless copied into one piece first. (A
    // message that arrives in two receives would double the sends of both runs.)
    let (rounds, plain, coalesced) = (20, sends_for_shredded_echo(0, 20), sends_for_shredded_echo(512, 20));
    assert!(plain >= 10 * rounds as u64, "uncoalesced: {plain} sends for {rounds} rounds");
    assert!(coalesced <= 2 * rounds as u64, "coalesced: {coalesced} sends for {rounds} rounds");
}

/// Keeps every view it receives on connections that say `HOARD` first; echoes the others.
struct Hoarder {
    net: Sink<NetCmd>,
    hoarding: ConnMap<bool>,
    kept: Vec<IoBuf>,
    kept_count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Handler for Hoarder {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        if let NetEvent::Data { conn, data } = ev {
            let hoard = *self.hoarding.get(conn).unwrap_or(&false) || data.starts_with(b"HOARD");
            if hoard {
                self.hoarding.insert(conn, true);
                self.kept.push(data); // the mistake the pool must survive: a received view kept
                self.kept_count.store(self.kept.len(), std::sync::atomic::Ordering::Relaxed);
            } else {
                let _ = self.net.try_enqueue(NetCmd::Send { conn, data });
            }
        }
    }
}

#[test]
fn a_handler_keeping_ten_times_the_pool_of_views_does_not_stall_other_connections() {
    use std::sync::atomic::Ordering;
    const POOL: u16 = 64;
    let kept = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let k = kept.clone();
    let b = Runtime::builder(1).buffers(POOL, 4096).max_buffers(32 * POOL as usize);
    let (rt, addr) = serve(
        b,
        "hoard",
        StageConfig::on([0]),
        |c| c,
        move |net| Hoarder { net, hoarding: ConnMap::new(), kept: Vec::new(), kept_count: k.clone() },
    );
    // One connection sends 3 MiB that the handler keeps, view by view (~800 receive buffers,
    // more than ten times the pool's first 64).
    let mut hoard = connect(addr);
    hoard.write_all(b"HOARD").unwrap();
    for chunk in pattern(1, 3 << 20).chunks(4096) {
        hoard.write_all(chunk).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while kept.load(Ordering::Relaxed) < 10 * POOL as usize {
        assert!(Instant::now() < deadline, "kept {} views", kept.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(10));
    }
    // With all those views still kept, another connection is echoed as ever.
    let mut other = connect(addr);
    for i in 0..200u32 {
        let msg = pattern(u64::from(i), 512);
        other.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        other.read_exact(&mut back).expect("echoed while the other connection's views are kept");
        assert!(back == msg);
    }
    // The gauge is published at the worker's tick.
    let out = || rt.metrics().workers.iter().map(|w| w.buffers_out).sum::<u64>();
    while out() < 10 * u64::from(POOL) {
        assert!(Instant::now() < deadline, "the pool grew past its first {POOL} buffers: {} out", out());
        std::thread::sleep(Duration::from_millis(10));
    }
    // And the age of the views held longest shows it: kept, not passed on, they age with the
    // clock (the gauge is refreshed every 50 ms tick).
    let oldest = || rt.metrics().workers[0].buffer_oldest_ms;
    let before = oldest();
    std::thread::sleep(Duration::from_millis(400));
    let after = oldest();
    assert!(after >= before + 300, "the oldest held buffer aged from {before} to {after} ms");
    rt.shutdown();
    rt.join().unwrap();
}
