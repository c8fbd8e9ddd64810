//! Timers: events a stage schedules for later reach its handler after their delay, in deadline
//! order, wake a sleeping worker on time, refuse when the table is full, and do not hold
//! shutdown back.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringstage::prelude::*;

#[derive(Debug)]
enum Ev {
    /// Schedule `(id, delay)` for each pair, reporting `(id, Err)` for those refused.
    Schedule(Vec<(u32, Duration)>),
    /// A timer firing.
    Fired(u32),
}

/// One stage on worker 0 whose handler schedules what it is told and reports each firing with
/// the time it arrived. A 10 s tick: a worker that only woke on ticks would miss every bound.
/// Each firing's id and arrival time, or `Err` for a refused schedule.
type Reports = mpsc::Receiver<(u32, Result<Instant, ()>)>;

fn timer_stage(cap: usize) -> (Runtime, Injector<Ev>, Reports) {
    timer_stage_spinning(cap, Duration::ZERO)
}

/// [`timer_stage`] with a worker that polls `spin` for work before sleeping.
fn timer_stage_spinning(cap: usize, spin: Duration) -> (Runtime, Injector<Ev>, Reports) {
    let (tx, rx) = mpsc::channel();
    let mut b = Runtime::builder(1).cpus([]).tick(Duration::from_secs(10)).spin_before_sleep(spin);
    let st = b.stage::<Ev>("timed", StageConfig::on([0]).timers(cap));
    b.handler(st, move |s| {
        let timer = s.timer(st);
        let tx = tx.clone();
        handler_fn(move |ev: Ev, _cx: &mut Context<'_>| match ev {
            Ev::Schedule(list) => {
                for (id, d) in list {
                    if timer.after(d, Ev::Fired(id)).is_err() {
                        tx.send((id, Err(()))).unwrap();
                    }
                }
            }
            Ev::Fired(id) => tx.send((id, Ok(Instant::now()))).unwrap(),
        })
    });
    let rt = b.start().unwrap();
    let inj = rt.injector(st);
    (rt, inj, rx)
}

#[test]
fn timers_fire_after_their_delay_in_deadline_order_and_wake_the_worker() {
    let (rt, inj, rx) = timer_stage(64);
    let ms = Duration::from_millis;
    // Let the worker go to sleep (on its 10 s tick) before scheduling.
    std::thread::sleep(ms(50));
    let t0 = Instant::now();
    inj.try_enqueue(Ev::Schedule(vec![(1, ms(120)), (2, ms(40)), (3, ms(80)), (4, ms(40))])).unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let (id, at) = rx.recv_timeout(Duration::from_secs(5)).expect("every timer fires well before the tick");
        got.push((id, at.expect("nothing refused").duration_since(t0)));
    }
    let ids: Vec<u32> = got.iter().map(|g| g.0).collect();
    assert_eq!(ids, vec![2, 4, 3, 1], "deadline order, then scheduling order: {got:?}");
    for (id, after) in &got {
        let want = ms([0, 120, 40, 80, 40][*id as usize]);
        assert!(*after >= want, "timer {id} fired after {after:?}, before its {want:?}");
        // Loose upper bound (a loaded CI machine): the point is that the worker did not wait
        // for its 10 s tick.
        assert!(*after < want + ms(2000), "timer {id} fired after {after:?} (delay {want:?})");
    }
    // Processed is counted when the batch ends, just after the last report was sent.
    let deadline = Instant::now() + Duration::from_secs(5);
    let counts = loop {
        let m = rt.metrics();
        let s = m.stage("timed").unwrap();
        if s.processed == 5 || Instant::now() > deadline {
            break (s.enqueued, s.processed);
        }
        std::thread::sleep(ms(1));
    };
    assert_eq!(counts, (5, 5), "the schedule event and four firings");
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_full_timer_table_hands_the_event_back() {
    let (rt, inj, rx) = timer_stage(2);
    let ms = Duration::from_millis;
    inj.try_enqueue(Ev::Schedule(vec![(1, ms(30)), (2, ms(30)), (3, ms(30))])).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (3, Err(())), "the third does not fit");
    let mut fired: Vec<u32> = (0..2).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap().0).collect();
    fired.sort();
    assert_eq!(fired, vec![1, 2]);
    // Delivered timers free their slots.
    inj.try_enqueue(Ev::Schedule(vec![(4, ms(1)), (5, ms(1))])).unwrap();
    let mut fired: Vec<u32> = (0..2).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap().0).collect();
    fired.sort();
    assert_eq!(fired, vec![4, 5]);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn pending_timers_do_not_hold_shutdown_back() {
    let (rt, inj, rx) = timer_stage(8);
    inj.try_enqueue(Ev::Schedule(vec![(1, Duration::from_secs(3600))])).unwrap();
    inj.try_enqueue(Ev::Schedule(vec![(2, Duration::from_millis(1))])).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().0, 2);
    let t = Instant::now();
    rt.shutdown();
    rt.join().unwrap();
    // The default drain timeout is 5 s: a pending timer counted as in-flight work would wait
    // for all of it.
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t.elapsed());
    assert!(rx.try_recv().is_err(), "the hour-long timer never fired");
}

#[test]
fn another_stage_on_the_same_worker_can_schedule_into_a_stage() {
    let (tx, rx) = mpsc::channel();
    let mut b = Runtime::builder(1).cpus([]);
    let target = b.stage::<u32>("target", StageConfig::on([0]));
    let source = b.stage::<u32>("source", StageConfig::on([0]));
    b.handler(target, move |_| {
        let tx = tx.clone();
        handler_fn(move |v: u32, _cx: &mut Context<'_>| tx.send(v).unwrap())
    });
    b.handler(source, move |s| {
        let later = s.timer(target);
        handler_fn(move |v: u32, _cx: &mut Context<'_>| {
            later.after(Duration::from_millis(20), v * 10).unwrap();
        })
    });
    let rt = b.start().unwrap();
    let t0 = Instant::now();
    rt.injector(source).try_enqueue(7).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 70);
    assert!(t0.elapsed() >= Duration::from_millis(20));
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_timer_for_a_stage_on_another_worker_fails_start_with_the_reason() {
    let mut b = Runtime::builder(2).cpus([]);
    let far = b.stage::<u32>("far", StageConfig::on([1]));
    let near = b.stage::<u32>("near", StageConfig::on([0]));
    b.handler(far, |_| handler_fn(|_: u32, _: &mut Context<'_>| {}));
    b.handler(near, move |s| {
        let t = s.timer(far);
        handler_fn(move |v: u32, _: &mut Context<'_>| {
            let _ = t.after(Duration::ZERO, v);
        })
    });
    // The set-up runs on the worker threads; its panic is start's error, not a hang.
    let Err(e) = b.start() else { panic!("start succeeded") };
    let msg = e.to_string();
    assert!(msg.contains("worker 0 setup") && msg.contains("stage 'far' has no replica on worker 0"), "{msg}");
}

#[test]
fn a_spinning_worker_stops_spinning_when_a_timer_is_due() {
    // A 3 s spin: the 30 ms timer must end it, not wait for it.
    let (rt, inj, rx) = timer_stage_spinning(8, Duration::from_secs(3));
    let t0 = Instant::now();
    inj.try_enqueue(Ev::Schedule(vec![(1, Duration::from_millis(30))])).unwrap();
    let (id, at) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let after = at.expect("scheduled").duration_since(t0);
    assert_eq!(id, 1);
    assert!(after >= Duration::from_millis(30), "fired early: {after:?}");
    assert!(after < Duration::from_millis(1500), "the spin held the timer back: {after:?}");
    rt.shutdown();
    rt.join().unwrap();
}
