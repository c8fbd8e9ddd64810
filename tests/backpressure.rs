//! Flow control on loopback: a peer that does not read is not read either (the output limit
//! and backpressure), the handler hears `Backlogged` / `Drained`, and `PauseReads` /
//! `ResumeReads` stop and restart a connection's reads.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ringstage::net::ConnOutbox;
use ringstage::prelude::*;

/// Each byte received goes back 16 times: a client that writes without reading makes the
/// answers pile up 16 times faster than its requests.
const GAIN: usize = 16;

/// Answers every byte with `GAIN` copies of it, and records what it received and heard.
struct Amplifier {
    net: Sink<NetCmd>,
    received: Arc<AtomicUsize>,
    heard: Arc<Mutex<Vec<char>>>,
}

impl Handler for Amplifier {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        let cmd = match ev {
            NetEvent::Data { conn, data } => {
                self.received.fetch_add(data.len(), Ordering::Relaxed);
                let answer: Vec<u8> = data.iter().flat_map(|&b| std::iter::repeat_n(b, GAIN)).collect();
                NetCmd::Send { conn, data: IoBuf::from(answer) }
            }
            NetEvent::Backlogged { .. } => return self.heard.lock().unwrap().push('b'),
            NetEvent::Drained { .. } => return self.heard.lock().unwrap().push('d'),
            NetEvent::Eof { conn } => NetCmd::Close { conn },
            _ => return,
        };
        if let Err(cmd) = self.net.try_enqueue(cmd) {
            panic!("net stage refused {cmd:?}");
        }
    }
}

struct Amp {
    rt: Runtime,
    addr: std::net::SocketAddr,
    received: Arc<AtomicUsize>,
    heard: Arc<Mutex<Vec<char>>>,
}

fn amplifier(limit: usize, backpressure: bool) -> Amp {
    let received = Arc::new(AtomicUsize::new(0));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let (r, h) = (received.clone(), heard.clone());
    let (rt, addr) = serve(
        Runtime::builder(1),
        "amp",
        StageConfig::on([0]),
        |c| c.output_limit(limit).backpressure(backpressure),
        move |net| Amplifier { net, received: r.clone(), heard: h.clone() },
    );
    Amp { rt, addr, received, heard }
}

/// Writes `msg` from a thread (it blocks once TCP's window closes) and returns the socket to
/// read from and the writer. The socket's receive buffer is held at 64 KiB, so what the
/// kernel takes of the answers (the server's send buffer, autotuned up to a few MiB, and this
/// one) is the same from run to run.
fn write_without_reading(
    addr: std::net::SocketAddr,
    msg: Vec<u8>,
) -> (std::net::TcpStream, std::thread::JoinHandle<()>) {
    let s = connect(addr);
    let size: libc::c_int = 64 << 10;
    // SAFETY: setsockopt reads an int from a live local; the descriptor is the open socket.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for c in msg.chunks(4096) {
            w.write_all(c).unwrap();
        }
    });
    (s, writer)
}

/// Reads the `GAIN`-fold answer to `msg` and checks every byte.
fn read_amplified(s: &mut std::net::TcpStream, msg: &[u8]) {
    let mut got = vec![0u8; 1 << 16];
    let mut at = 0usize;
    let want = msg.len() * GAIN;
    while at < want {
        let n = s.read(&mut got[..(want - at).min(1 << 16)]).expect("the answers keep coming");
        assert!(n > 0, "closed after {at} of {want} bytes");
        for (i, &b) in got[..n].iter().enumerate() {
            assert_eq!(b, msg[(at + i) / GAIN], "byte {} of the answer", at + i);
        }
        at += n;
    }
}

/// Waits until `f` holds, or panics with `what` after 10 s.
fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_peer_that_does_not_read_is_not_read_either_and_loses_nothing() {
    let amp = amplifier(64 << 10, true);
    let msg = pattern(7, 2 << 20); // 32 MiB of answers, well past what the kernels hold
    let (mut s, writer) = write_without_reading(amp.addr, msg.clone());
    // The server reads until 64 KiB of answers wait beyond what the kernel took, then stops:
    // what it has taken in (that, plus the receives already under way when it stopped) stays
    // far below what the client wrote (the rest waits in TCP), and stops growing.
    wait_for("the backlog", || amp.heard.lock().unwrap().last() == Some(&'b'));
    std::thread::sleep(Duration::from_millis(300));
    let before = amp.received.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    let after = amp.received.load(Ordering::Relaxed);
    assert_eq!(before, after, "reads stopped while the answers wait");
    assert!(after < msg.len() / 2, "took in {after} of {} bytes while nothing was read", msg.len());
    let told = amp.heard.lock().unwrap().iter().filter(|&&e| e == 'b').count() as u64;
    assert_eq!(amp.rt.metrics().total(|w| w.backlogged), told, "the counter counts each backlog");
    // Reading the answers drains the backlog, reads resume, and every byte comes back.
    read_amplified(&mut s, &msg);
    writer.join().unwrap();
    assert_eq!(amp.received.load(Ordering::Relaxed), msg.len());
    let heard = amp.heard.lock().unwrap().clone();
    assert!(heard.len() >= 2 && heard.len() % 2 == 0, "{heard:?}");
    assert!(heard.chunks(2).all(|p| p == ['b', 'd']), "backlogged and drained alternate: {heard:?}");
    amp.rt.shutdown();
}

#[test]
fn an_echo_with_a_small_output_limit_still_streams_large_messages() {
    // A client that writes and reads at once: reads pause and resume many times as the echo
    // outruns it (16 KiB limit, 16 MiB echoed), and every byte still comes back, in order.
    let (rt, addr) = echo_server(Runtime::builder(1), 0, |c| c.output_limit(16 << 10));
    roundtrip(addr, pattern(3, 16 << 20), 1 << 16);
    assert!(rt.metrics().total(|w| w.backlogged) > 0, "the limit was reached");
    rt.shutdown();
}

#[test]
fn without_backpressure_the_handler_hears_of_the_backlog_and_reads_go_on() {
    let amp = amplifier(64 << 10, false);
    let msg = pattern(8, 1 << 20); // 16 MiB of answers, most of them held by the server
    let (mut s, writer) = write_without_reading(amp.addr, msg.clone());
    // Every byte is read although the answers pile up: the handler is told, reads go on.
    wait_for("every request byte read", || amp.received.load(Ordering::Relaxed) == msg.len());
    let alternate = |h: &[char]| h.chunks(2).all(|p| p[0] == 'b' && p.get(1).is_none_or(|&d| d == 'd'));
    let heard = amp.heard.lock().unwrap().clone();
    assert!(heard.last() == Some(&'b') && alternate(&heard), "backlogged now: {heard:?}");
    read_amplified(&mut s, &msg);
    writer.join().unwrap();
    wait_for("the drain", || amp.heard.lock().unwrap().last() == Some(&'d'));
    assert!(alternate(&amp.heard.lock().unwrap()));
    amp.rt.shutdown();
}

/// A server whose one stage on worker 0 runs `f(event, net stage)`; also returns the net
/// stage, for the test to inject commands.
fn with_handler(
    f: impl Fn(NetEvent, &Sink<NetCmd>) + Clone + Send + Sync + 'static,
) -> (Runtime, std::net::SocketAddr, StageId<NetCmd>) {
    let mut b = Runtime::builder(1).cpus([]);
    let st = b.stage::<NetEvent>("handler", StageConfig::on([0]));
    let (net, l) = b.listen(ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]), st);
    b.handler(st, move |s| {
        let (net, f) = (s.sink(net), f.clone());
        handler_fn(move |ev: NetEvent, _cx: &mut Context<'_>| f(ev, &net))
    });
    let rt = b.start().unwrap();
    let addr = rt.local_addr(l);
    (rt, addr, net)
}

#[test]
fn pause_reads_holds_a_connection_until_resume_reads() {
    let received = Arc::new(AtomicUsize::new(0));
    let paused: Arc<Mutex<Option<Conn>>> = Arc::new(Mutex::new(None));
    let (r, p) = (received.clone(), paused.clone());
    let (rt, addr, net) = with_handler(move |ev, net| {
        if let NetEvent::Data { conn, data } = ev {
            // The first bytes pause the connection.
            if r.fetch_add(data.len(), Ordering::Relaxed) == 0 {
                net.try_enqueue(NetCmd::PauseReads { conn }).unwrap();
                *p.lock().unwrap() = Some(conn);
            }
        }
    });
    let mut s = connect(addr);
    s.write_all(b"first").unwrap();
    wait_for("the pause", || paused.lock().unwrap().is_some());
    std::thread::sleep(Duration::from_millis(100)); // the cancel reaches the kernel
    let rest = pattern(9, 32 << 10);
    s.write_all(&rest).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(received.load(Ordering::Relaxed), 5, "nothing is read while paused");
    let conn = paused.lock().unwrap().unwrap();
    rt.injector(net).try_enqueue(NetCmd::ResumeReads { conn }).unwrap();
    wait_for("the rest after the resume", || received.load(Ordering::Relaxed) == 5 + rest.len());
    // Still a working connection: its peer's close is seen.
    drop(s);
    rt.shutdown();
}

#[test]
fn a_connection_paused_when_its_peer_finishes_sends_its_eof_once_resumed() {
    // Pausing and resuming around the peer's FIN neither loses the Eof nor reports it twice.
    let eofs = Arc::new(AtomicUsize::new(0));
    let conn_seen: Arc<Mutex<Option<Conn>>> = Arc::new(Mutex::new(None));
    let (e, c) = (eofs.clone(), conn_seen.clone());
    let (rt, addr, net) = with_handler(move |ev, net| match ev {
        NetEvent::Opened { conn, .. } => {
            net.try_enqueue(NetCmd::PauseReads { conn }).unwrap();
            *c.lock().unwrap() = Some(conn);
        }
        NetEvent::Eof { conn } => {
            e.fetch_add(1, Ordering::Relaxed);
            // Pause and resume after the FIN: no second Eof may follow.
            net.try_enqueue(NetCmd::PauseReads { conn }).unwrap();
            net.try_enqueue(NetCmd::ResumeReads { conn }).unwrap();
        }
        _ => {}
    });
    let mut s = connect(addr);
    wait_for("the open", || conn_seen.lock().unwrap().is_some());
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"hello").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(eofs.load(Ordering::Relaxed), 0, "a paused connection reports nothing");
    let conn = conn_seen.lock().unwrap().unwrap();
    rt.injector(net).try_enqueue(NetCmd::ResumeReads { conn }).unwrap();
    wait_for("the Eof", || eofs.load(Ordering::Relaxed) == 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(eofs.load(Ordering::Relaxed), 1, "the Eof came once");
    // The connection is still open for sending: the server has not closed it.
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let err = s.read(&mut [0u8; 8]).expect_err("no close from the server");
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
    rt.shutdown();
}

#[test]
fn pauses_resumes_and_backlogs_racing_lose_nothing() {
    // An echo that pauses a connection's reads on every third receive, while another thread
    // resumes every connection every millisecond, and an 8 KiB output limit backlogs the
    // clients that read in small bites: cancels, re-arms, drains and resumes race on each
    // connection. Every client must still get its bytes back, in order, and its close.
    let conns: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(AtomicUsize::new(0));
    let (c, n) = (conns.clone(), seen.clone());
    let mut b = Runtime::builder(1).cpus([]);
    let st = b.stage::<NetEvent>("racing", StageConfig::on([0]));
    let (net, l) = b.listen(ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]).output_limit(8 << 10), st);
    b.handler(st, move |s| {
        let (net, c, n) = (s.sink(net), c.clone(), n.clone());
        handler_fn(move |ev: NetEvent, _cx: &mut Context<'_>| {
            let cmds = match ev {
                NetEvent::Opened { conn, .. } => return c.lock().unwrap().push(conn),
                NetEvent::Data { conn, data } => {
                    let third = n.fetch_add(1, Ordering::Relaxed) % 3 == 0;
                    [Some(NetCmd::Send { conn, data }), third.then_some(NetCmd::PauseReads { conn })]
                }
                NetEvent::Eof { conn } => [Some(NetCmd::Close { conn }), None],
                _ => return,
            };
            for cmd in cmds.into_iter().flatten() {
                net.try_enqueue(cmd).expect("the net stage takes the command");
            }
        })
    });
    let rt = b.start().unwrap();
    let addr = rt.local_addr(l);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let resumer = {
        let (inj, conns, stop) = (rt.injector(net), conns.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for &conn in conns.lock().unwrap().iter() {
                    let _ = inj.try_enqueue(NetCmd::ResumeReads { conn }); // a full queue: next round
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let clients: Vec<_> = (0..8u64)
        .map(|i| {
            std::thread::spawn(move || {
                let msg = pattern(100 + i, 1 << 20);
                let mut s = connect(addr);
                let mut w = s.try_clone().unwrap();
                let out = msg.clone();
                let writer = std::thread::spawn(move || {
                    for c in out.chunks(3000) {
                        w.write_all(c).unwrap();
                    }
                    w.shutdown(std::net::Shutdown::Write).unwrap();
                });
                // Small bites, so the echo backs up behind this reader now and then.
                let mut got = Vec::with_capacity(msg.len());
                let mut bite = vec![0u8; 1 + (i as usize * 997) % 8192];
                loop {
                    match s.read(&mut bite).expect("the echo keeps coming") {
                        0 => break,
                        k => got.extend_from_slice(&bite[..k]),
                    }
                }
                writer.join().unwrap();
                assert!(got == msg, "client {i}: {} of {} bytes, in order", got.len(), msg.len());
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    resumer.join().unwrap();
    assert!(rt.metrics().total(|w| w.backlogged) > 0, "the output limit was reached too");
    rt.shutdown();
}

/// Forwards each connection's data, through a `ConnOutbox`, to a slow stage on another worker.
struct Front {
    work: ConnOutbox<NetEvent>,
    most_waiting: Arc<AtomicUsize>,
    paused: Arc<AtomicUsize>,
}

impl Handler for Front {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        self.work.send(ev);
        self.most_waiting.fetch_max(self.work.len(), Ordering::Relaxed);
        self.paused.fetch_max(self.work.paused().len(), Ordering::Relaxed);
    }
    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.work.flush();
    }
}

#[test]
fn a_conn_outbox_pauses_the_connections_that_fill_it_and_loses_nothing() {
    const LIMIT: usize = 16;
    let (received, most_waiting, paused) =
        (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut b = Runtime::builder(2);
    let front = b.stage::<NetEvent>("front", StageConfig::on([0]));
    // A slow stage with a small queue: the front's outbox fills at once.
    let work = b.stage::<NetEvent>("work", StageConfig::on([1]).capacity(4).batch(1));
    let (net, listener) = b.listen(ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]), front);
    let (m, p) = (most_waiting.clone(), paused.clone());
    b.handler(front, move |s| Front {
        work: ConnOutbox::new(s.sink(work), s.sink(net), s.waker(front), LIMIT),
        most_waiting: m.clone(),
        paused: p.clone(),
    });
    let r = received.clone();
    b.handler(work, move |_| {
        let r = r.clone();
        handler_fn(move |ev: NetEvent, _cx: &mut Context<'_>| {
            if let NetEvent::Data { data, .. } = ev {
                std::thread::sleep(Duration::from_micros(200)); // slow work, on its own worker
                r.lock().unwrap().extend_from_slice(&data);
            }
        })
    });
    let rt = b.start().unwrap();
    let addr = rt.local_addr(listener);
    let msg = pattern(7, 4 << 20);
    let mut c = connect(addr);
    for chunk in msg.chunks(4096) {
        c.write_all(chunk).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().len() < msg.len() {
        assert!(Instant::now() < deadline, "{} of {} bytes", received.lock().unwrap().len(), msg.len());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(*received.lock().unwrap() == msg, "every byte, in order");
    assert_eq!(paused.load(Ordering::Relaxed), 1, "the feeding connection was paused");
    // Receives the kernel completed before the pause took effect (up to the buffer ring's
    // window) still arrive; nothing more. Unpaused, the outbox would hold every receive
    // buffer of the worker's pool (2048).
    let most = most_waiting.load(Ordering::Relaxed);
    assert!(most <= LIMIT + 256, "at most {most} events waited (limit {LIMIT})");
    rt.shutdown();
    rt.join().unwrap();
}
