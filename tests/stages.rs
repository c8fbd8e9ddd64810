//! The stage graph: placement, refusal, all-or-nothing batches, cross-core hand-off,
//! doorbell wakeups and graceful shutdown.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringstage::prelude::*;

/// Stage A (worker `a`) forwards each injected number to stage B (worker `b`), which reports it.
fn pipeline(a: usize, b: usize, tick: Duration) -> (Runtime, Injector<u64>, mpsc::Receiver<(u64, usize)>) {
    pipeline_with(a, b, Runtime::builder(2).tick(tick))
}

/// [`pipeline`] on workers configured by `bld`.
fn pipeline_with(a: usize, b: usize, bld: Builder) -> (Runtime, Injector<u64>, mpsc::Receiver<(u64, usize)>) {
    let (tx, rx) = mpsc::channel();
    let mut bld = bld.cpus([]);
    let sa = bld.stage::<u64>("a", StageConfig::on([a]));
    let sb = bld.stage::<u64>("b", StageConfig::on([b]));
    bld.handler(sa, move |s| {
        let next = s.sink(sb);
        handler_fn(move |v: u64, _cx: &mut Context<'_>| {
            let mut v = v;
            while let Err(back) = next.try_enqueue(v) {
                v = back; // the test's bounded load never keeps B full for long
                std::hint::spin_loop();
            }
        })
    });
    bld.handler(sb, move |_| {
        let tx = tx.clone();
        handler_fn(move |v: u64, cx: &mut Context<'_>| tx.send((v, cx.worker())).unwrap())
    });
    let rt = bld.start().unwrap();
    let inj = rt.injector(sa);
    (rt, inj, rx)
}

#[test]
fn events_cross_cores_only_where_placed() {
    for (a, b) in [(0, 0), (0, 1), (1, 0)] {
        let (rt, inj, rx) = pipeline(a, b, Duration::from_millis(50));
        for i in 0..10_000u64 {
            let mut v = i;
            while let Err(back) = inj.try_enqueue(v) {
                v = back;
                std::thread::yield_now();
            }
        }
        let mut next = 0;
        while next < 10_000 {
            let (v, w) = rx.recv_timeout(Duration::from_secs(10)).expect("events arrive");
            assert_eq!(v, next, "one producer, one consumer: FIFO");
            assert_eq!(w, b, "stage b runs only on its worker");
            next += 1;
        }
        let m = rt.metrics();
        assert_eq!(m.stage("a").unwrap().processed, 10_000);
        assert_eq!(m.stage("b").unwrap().processed, 10_000);
    }
}

#[test]
fn doorbell_wakes_sleeping_workers() {
    // A 10 s tick: only the doorbells can wake the workers in time.
    let (rt, inj, rx) = pipeline(0, 1, Duration::from_secs(10));
    for round in 0..20u64 {
        std::thread::sleep(Duration::from_millis(20)); // let both workers fall asleep
        let t0 = Instant::now();
        inj.try_enqueue(round).unwrap();
        let (v, _) = rx.recv_timeout(Duration::from_secs(5)).expect("woken by doorbells");
        assert_eq!(v, round);
        assert!(t0.elapsed() < Duration::from_secs(2), "woken promptly, not by the tick");
    }
    let idle: u64 = rt.metrics().workers.iter().map(|w| w.idle_ns).sum();
    assert!(idle > 0, "workers really slept");
}

#[test]
fn a_spinning_worker_sees_events_from_another_worker_without_a_doorbell() {
    // A worker that spins has not announced that it sleeps, so its peers ring no doorbell: it
    // must find their events itself, not after its 3 s spin (nor the 10 s tick).
    let bld = Runtime::builder(2).tick(Duration::from_secs(10)).spin_before_sleep(Duration::from_secs(3));
    let (rt, inj, rx) = pipeline_with(0, 1, bld);
    for round in 0..20u64 {
        std::thread::sleep(Duration::from_millis(5));
        let t0 = Instant::now();
        inj.try_enqueue(round).unwrap();
        let (v, w) = rx.recv_timeout(Duration::from_secs(5)).expect("delivered");
        assert_eq!((v, w), (round, 1));
        assert!(t0.elapsed() < Duration::from_secs(1), "round {round} took {:?}", t0.elapsed());
    }
    assert!(rt.metrics().total(|w| w.spins) > 0, "the workers spun");
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn full_queue_refuses_and_returns_the_event() {
    // Within one handler call the consumer on the same worker cannot run, so exactly
    // `capacity` events fit.
    let (tx, rx) = mpsc::channel();
    let mut b = Runtime::builder(1).cpus([]);
    let src = b.stage::<u32>("src", StageConfig::on([0]));
    let dst = b.stage::<u32>("dst", StageConfig::on([0]).capacity(8));
    b.handler(src, move |s| {
        let dst = s.sink(dst);
        let tx = tx.clone();
        handler_fn(move |n: u32, _cx: &mut Context<'_>| {
            let mut refused = Vec::new();
            for v in 0..n {
                if let Err(back) = dst.try_enqueue(v) {
                    refused.push(back);
                }
            }
            // All-or-nothing: the queue is now full, so a batch of 1 is refused whole...
            let batch = dst.enqueue_many([100u32].into_iter()).map_err(|it| it.collect::<Vec<_>>());
            tx.send((refused, batch)).unwrap();
        })
    });
    let (dtx, drx) = mpsc::channel();
    b.handler(dst, move |_| {
        let dtx = dtx.clone();
        handler_fn(move |v: u32, _cx: &mut Context<'_>| dtx.send(v).unwrap())
    });
    let rt = b.start().unwrap();
    rt.injector(src).try_enqueue(20).unwrap();
    let (refused, batch) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(refused, (8..20).collect::<Vec<_>>(), "the refused values come back, in order");
    assert_eq!(batch, Err(vec![100]));
    let got: Vec<u32> = (0..8).map(|_| drx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    let m = rt.metrics();
    assert_eq!(m.stage("dst").unwrap().refused, 12 + 1);
    assert_eq!(m.stage("dst").unwrap().enqueued, 8);
}

#[test]
fn enqueue_many_is_all_or_nothing() {
    let (tx, rx) = mpsc::channel();
    let mut b = Runtime::builder(2).cpus([]);
    let src = b.stage::<usize>("src", StageConfig::on([0]));
    let dst = b.stage::<usize>("dst", StageConfig::on([0]).capacity(16));
    b.handler(src, move |s| {
        let dst = s.sink(dst);
        let tx = tx.clone();
        handler_fn(move |first: usize, _cx: &mut Context<'_>| {
            let a = dst.enqueue_many(0..first).is_ok();
            let b = dst.enqueue_many(0..(16 - first + 1)).map_err(|it| it.len());
            let c = dst.enqueue_many(0..(16 - first)).is_ok();
            tx.send((a, b, c)).unwrap();
        })
    });
    let (ctx, crx) = mpsc::channel();
    b.handler(dst, move |_| {
        let ctx = ctx.clone();
        handler_fn(move |_: usize, _cx: &mut Context<'_>| ctx.send(()).unwrap())
    });
    let rt = b.start().unwrap();
    rt.injector(src).try_enqueue(10).unwrap();
    let (a, b, c) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(a, "10 fit");
    assert_eq!(b, Err(7), "7 do not fit in the 6 left: none taken, iterator returned untouched");
    assert!(c, "exactly 6 fit");
    for _ in 0..16 {
        crx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    assert!(crx.recv_timeout(Duration::from_millis(100)).is_err(), "nothing from the refused batch");
}

#[test]
fn replicas_share_load_and_injection_refuses_when_full() {
    let (tx, rx) = mpsc::channel();
    let mut b = Runtime::builder(2).cpus([]);
    let st = b.stage::<u32>("work", StageConfig::on([0, 1]).capacity(4));
    b.handler(st, move |_| {
        let tx = tx.clone();
        handler_fn(move |v: u32, cx: &mut Context<'_>| tx.send((v, cx.worker())).unwrap())
    });
    let rt = b.start().unwrap();
    let inj = rt.injector(st);
    let mut sent = 0;
    let mut refusals = 0;
    while sent < 2000 {
        match inj.try_enqueue(sent) {
            Ok(()) => sent += 1,
            Err(v) => {
                assert_eq!(v, sent, "refusal hands back the same value");
                refusals += 1;
                std::thread::yield_now();
            }
        }
    }
    let mut seen = vec![false; 2000];
    let mut per_worker = [0; 2];
    for _ in 0..2000 {
        let (v, w) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!seen[v as usize], "each event handled once");
        seen[v as usize] = true;
        per_worker[w] += 1;
    }
    assert!(per_worker[0] > 0 && per_worker[1] > 0, "both replicas worked: {per_worker:?}");
    assert_eq!(rt.metrics().stage("work").unwrap().refused, refusals);
}

#[test]
fn shutdown_finishes_in_flight_work() {
    let (tx, rx) = mpsc::channel();
    let mut b = Runtime::builder(2).cpus([]);
    let slow = b.stage::<u32>("slow", StageConfig::on([0]).capacity(512));
    let sink = b.stage::<u32>("sink", StageConfig::on([1]).capacity(512));
    b.handler(slow, move |s| {
        let next = s.sink(sink);
        handler_fn(move |v: u32, _cx: &mut Context<'_>| {
            std::thread::sleep(Duration::from_micros(500)); // 200 events: ~100 ms of work
            next.try_enqueue(v).unwrap();
        })
    });
    b.handler(sink, move |_| {
        let tx = tx.clone();
        handler_fn(move |v: u32, _cx: &mut Context<'_>| tx.send(v).unwrap())
    });
    let rt = b.start().unwrap();
    let inj = rt.injector(slow);
    for i in 0..200 {
        inj.try_enqueue(i).unwrap();
    }
    rt.shutdown(); // immediately: almost all of the work is still queued
    rt.join().unwrap();
    let got: Vec<u32> = rx.try_iter().collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>(), "every queued event was handled before exit");
}

#[test]
fn misconfiguration_is_a_clear_error() {
    let mut b = Runtime::builder(2);
    let _s = b.stage::<u8>("orphan", StageConfig::on([0]));
    let e = b.start().unwrap_err().to_string();
    assert!(e.contains("orphan") && e.contains("no handler"), "{e}");

    let mut b = Runtime::builder(2);
    let s = b.stage::<u8>("far", StageConfig::on([5]));
    b.handler(s, |_| handler_fn(|_: u8, _: &mut Context<'_>| {}));
    let e = b.start().unwrap_err().to_string();
    assert!(e.contains("far") && e.contains("[5]"), "{e}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut b = Runtime::builder(1);
    let s = b.stage::<NetEvent>("h", StageConfig::on([0]));
    b.listen(ListenConfig::new(taken.local_addr().unwrap(), [0]), s);
    b.handler(s, |_| handler_fn(|_: NetEvent, _: &mut Context<'_>| {}));
    let e = b.start().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
}

#[test]
fn application_counters_sum_over_workers_and_join_the_exposition() {
    // A stage on both workers counts odd and even numbers in labelled counters of one metric,
    // and all of them in another; each worker writes its own slot.
    let mut b = Runtime::builder(2).cpus([]);
    let odd = b.counter(r#"numbers_total{parity="odd"}"#, "Numbers seen, by parity.");
    let sum = b.counter("numbers_sum_total", "The numbers added up.");
    let even = b.counter(r#"numbers_total{parity="even"}"#, "Numbers seen, by parity.");
    let st = b.stage::<u64>("count", StageConfig::on([0, 1]));
    b.handler(st, move |s| {
        let (odd, even, sum) = (s.counter(odd), s.counter(even), s.counter(sum));
        handler_fn(move |v: u64, _: &mut Context<'_>| {
            if v % 2 == 1 { &odd } else { &even }.add(1);
            sum.add(v);
        })
    });
    let rt = b.start().unwrap();
    let inj = rt.injector(st);
    for i in 0..1000u64 {
        let mut v = i;
        while let Err(back) = inj.try_enqueue(v) {
            v = back;
            std::thread::yield_now();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.metrics().stage("count").unwrap().processed < 1000 {
        assert!(Instant::now() < deadline, "events handled");
        std::thread::sleep(Duration::from_millis(5));
    }
    let m = rt.metrics();
    assert_eq!(m.app(r#"numbers_total{parity="odd"}"#), Some(500));
    assert_eq!(m.app(r#"numbers_total{parity="even"}"#), Some(500));
    assert_eq!(m.app("numbers_sum_total"), Some(999 * 1000 / 2));
    assert_eq!(m.app("numbers_total"), None, "a name is looked up with its labels");
    let text = m.prometheus();
    assert_eq!(text.matches("# TYPE numbers_total counter").count(), 1, "one metric, two series");
    let series = "numbers_total{parity=\"odd\"} 500\nnumbers_total{parity=\"even\"} 500\n";
    assert!(text.contains(series), "a metric's series together, though declared apart: {text}");
    let sum_text =
        "# HELP numbers_sum_total The numbers added up.\n# TYPE numbers_sum_total counter\nnumbers_sum_total 499500\n";
    assert!(text.contains(sum_text), "{text}");
    rt.shutdown();
    rt.join().unwrap();

    for (name, says) in [("bad name", "not a Prometheus metric name"), ("dup_total", "declared twice")] {
        let mut b = Runtime::builder(1).cpus([]);
        b.counter(name, "x");
        b.counter("dup_total", "x");
        let st = b.stage::<u8>("s", StageConfig::on([0]));
        b.handler(st, |_| handler_fn(|_: u8, _: &mut Context<'_>| {}));
        let e = b.start().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn a_handler_set_up_that_panics_fails_start_instead_of_hanging_it() {
    // Worker 1's set-up panics while worker 0 starts fine: `start` used to wait for worker 1's
    // answer for ever. Run it on a thread so a regression fails here instead of hanging.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut b = Runtime::builder(2).cpus([]);
        let s = b.stage::<u8>("fragile", StageConfig::on([0, 1]));
        b.handler(s, |setup| {
            assert!(setup.worker() != 1, "no config for worker 1");
            handler_fn(|_: u8, _: &mut Context<'_>| {})
        });
        tx.send(b.start().map(drop).map_err(|e| e.to_string())).unwrap();
    });
    let r = rx.recv_timeout(Duration::from_secs(20)).expect("start returns");
    let e = r.expect_err("start fails");
    assert!(e.contains("worker 1 setup") && e.contains("no config for worker 1"), "{e}");
}

#[test]
fn a_second_server_on_a_taken_port_fails_instead_of_sharing_it() {
    fn server(addr: std::net::SocketAddr, workers: usize) -> std::io::Result<(Runtime, std::net::SocketAddr)> {
        let mut b = Runtime::builder(workers).cpus([]);
        let s = b.stage::<NetEvent>("h", StageConfig::on([0]));
        let (_, l) = b.listen(ListenConfig::new(addr, 0..workers), s);
        b.handler(s, |_| handler_fn(|_: NetEvent, _: &mut Context<'_>| {}));
        let rt = b.start()?;
        let a = rt.local_addr(l);
        Ok((rt, a))
    }
    // A two-worker listener (SO_REUSEPORT inside the runtime) on a free port...
    let (_first, addr) = server("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    // ...is not silently shared with another runtime, with one worker or with two.
    for workers in [1, 2] {
        let e = server(addr, workers).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    }
}

/// Fans each number out to 100 events through an outbox, flushed when woken.
struct Fan {
    out: Outbox<u64>,
}

impl Handler for Fan {
    type Event = u64;
    fn handle(&mut self, v: u64, _cx: &mut Context<'_>) {
        for i in 0..100 {
            self.out.send(v * 100 + i);
        }
    }
    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.out.flush();
    }
}

#[test]
fn an_outbox_keeps_what_the_next_stage_refuses_in_order() {
    // Each injected number fans out to 100 events for a stage whose queue holds 8: most are
    // refused at first. The outbox keeps them in order and wakes its owner, whose `woken`
    // offers them again the next loop iteration, so every event arrives, in order, none twice.
    let (tx, rx) = mpsc::channel();
    let mut bld = Runtime::builder(2).cpus([]);
    let sa = bld.stage::<u64>("fan", StageConfig::on([0]));
    let sb = bld.stage::<u64>("narrow", StageConfig::on([1]).capacity(8));
    bld.handler(sa, move |s| Fan { out: Outbox::with_waker(s.sink(sb), s.waker(sa)) });
    bld.handler(sb, move |_| {
        let tx = tx.clone();
        handler_fn(move |v: u64, _cx: &mut Context<'_>| tx.send(v).unwrap())
    });
    let rt = bld.start().unwrap();
    let inj = rt.injector(sa);
    for v in 0..100u64 {
        inj.try_enqueue(v).unwrap();
    }
    for want in 0..10_000u64 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).expect("every event arrives"), want);
    }
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "none twice");
    assert!(rt.metrics().stage("narrow").unwrap().refused > 0, "the narrow stage did refuse");
    rt.shutdown();
}

/// Counts its wake-ups, and wakes itself again `more` times.
struct Sleeper {
    waker: Waker,
    woken: mpsc::Sender<Instant>,
    more: u32,
}

impl Handler for Sleeper {
    type Event = ();
    fn handle(&mut self, _: (), _cx: &mut Context<'_>) {
        self.waker.wake();
        self.waker.wake(); // twice before the hook runs: it runs once
    }
    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.woken.send(Instant::now()).unwrap();
        if self.more > 0 {
            self.more -= 1;
            self.waker.wake();
        }
    }
}

#[test]
fn a_waker_runs_the_hook_once_per_wake_and_keeps_a_sleeping_worker_up() {
    // A 10 s tick: only the wake-up itself can get the worker round its loop again in time.
    let (tx, rx) = mpsc::channel();
    let mut bld = Runtime::builder(1).cpus([]).tick(Duration::from_secs(10));
    let st = bld.stage::<()>("sleeper", StageConfig::on([0]));
    bld.handler(st, move |s| Sleeper { waker: s.waker(st), woken: tx.clone(), more: 2 });
    let rt = bld.start().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // the worker goes to sleep
    let t0 = Instant::now();
    rt.injector(st).try_enqueue(()).unwrap();
    for i in 0..3 {
        let at = rx.recv_timeout(Duration::from_secs(2)).expect("the hook runs");
        assert!(at.duration_since(t0) < Duration::from_secs(1), "wake-up {i} came in the next loop iterations");
    }
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "once per wake-up: three in all");
    rt.shutdown();
}

#[test]
fn a_blocking_stage_sharing_a_worker_is_refused_at_start() {
    let mut b = Runtime::builder(2).cpus([]);
    let fast = b.stage::<u32>("fast", StageConfig::on([0, 1]));
    let slow = b.stage::<u32>("slow", StageConfig::on([1]).blocking());
    b.handler(fast, |_| handler_fn(|_: u32, _: &mut Context<'_>| {}));
    b.handler(slow, |_| handler_fn(|_: u32, _: &mut Context<'_>| {}));
    let Err(err) = b.start() else { panic!("a blocking stage beside another one started") };
    assert!(matches!(err, ringstage::Error::InvalidConfig(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("'slow' may block") && text.contains("'fast' is on worker 1"), "{text}");

    // Nor beside a UDP socket, whose datagrams its worker's ring receives.
    let mut b = Runtime::builder(2).cpus([]);
    let app = b.stage::<NetEvent>("app", StageConfig::on([0]));
    let slow = b.stage::<u32>("slow", StageConfig::on([1]).blocking());
    let _ = b.udp(UdpConfig::new("127.0.0.1:0".parse().unwrap(), [1]), app);
    b.handler(app, |_| handler_fn(|_: NetEvent, _: &mut Context<'_>| {}));
    b.handler(slow, |_| handler_fn(|_: u32, _: &mut Context<'_>| {}));
    let Err(err) = b.start() else { panic!("a blocking stage beside a UDP socket started") };
    assert!(err.to_string().contains("UDP socket 127.0.0.1:0 is on worker 1"), "{err}");
}

#[test]
fn a_blocked_handler_delays_nothing_but_its_own_queue() {
    // Worker 0: an echo. Worker 1: a stage whose handler blocks 50 ms per event.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut b = Runtime::builder(2).cpus([]);
    let echo = b.stage::<NetEvent>("echo", StageConfig::on([0]));
    let slow = b.stage::<u32>("slow", StageConfig::on([1]).blocking().capacity(16));
    let (net, l) = b.listen(ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]), echo);
    b.handler(echo, move |s| {
        let net = s.sink(net);
        handler_fn(move |ev: NetEvent, _: &mut Context<'_>| {
            if let NetEvent::Data { conn, data } = ev {
                net.try_enqueue(NetCmd::Send { conn, data }).expect("room in the net stage");
            }
        })
    });
    let d = done.clone();
    b.handler(slow, move |_| {
        let d = d.clone();
        handler_fn(move |_: u32, _: &mut Context<'_>| {
            std::thread::sleep(Duration::from_millis(50));
            d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
    });
    let rt = b.start().unwrap();
    let addr = rt.local_addr(l);
    let inject = rt.injector(slow);
    for i in 0..10 {
        inject.try_enqueue(i).expect("room in the blocking stage's queue");
    }
    // A hundred echo round trips while the blocking stage works through half a second.
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..100u8 {
        std::io::Write::write_all(&mut c, &[i; 32]).unwrap();
        let mut back = [0u8; 32];
        std::io::Read::read_exact(&mut c, &mut back).unwrap();
        assert_eq!(back, [i; 32]);
    }
    let during = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(during < 10, "the echoes waited for the blocking stage ({during} of 10 done)");
    // One event per visit: the queue gauge shows what still waits (a batch would have hidden
    // it until the whole batch was done).
    while done.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let m = rt.metrics();
    let s = m.stages.iter().find(|s| s.name == "slow").unwrap();
    assert!(s.queued >= 1 && s.batch_size == 1, "queued {} batch {}", s.queued, s.batch_size);
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(std::sync::atomic::Ordering::SeqCst) < 10 {
        assert!(Instant::now() < deadline, "the blocking stage finishes its queue");
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.shutdown();
    rt.join().unwrap();
}
