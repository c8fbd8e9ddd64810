//! One pinned worker: its ring, its replicas, and the event loop.
//!
//! Loop: reap completions in a batch and turn them into events; take back buffers released on
//! other cores (re-arming receives that ran out); run each replica over up to one batch of its
//! queued events; ring the doorbells of sleeping workers that got work; submit once; and when
//! nothing is left, announce sleep, re-check, and block in `io_uring_enter` until a completion,
//! a doorbell or the tick.

use std::any::Any;
use std::cell::Cell;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};
use ringstage_sys::{Doorbell, RingConfig};

use super::io::{token, Io};
use super::{Factory, Setup, Shared, StageMeta};
use crate::buf::BufPool;
use crate::metrics::WorkerCounters;
use crate::net::{Endpoint, ListenConfig, Net, NetEvent};
use crate::queue::{mpsc, spsc};
use crate::stage::{Context, Handler, LocalQueue, StageId, Stamped, TimerTable};

/// Everything a worker thread needs to set itself up.
pub(crate) struct Plan {
    pub(crate) id: usize,
    pub(crate) cpu: Option<usize>,
    pub(crate) ring: RingConfig,
    pub(crate) pool: (u16, usize),
    pub(crate) tick: Duration,
    pub(crate) spin: Duration,
    pub(crate) file_timeout: Option<Duration>,
    pub(crate) meta: Arc<Vec<StageMeta>>,
    pub(crate) factories: Arc<Vec<Factory>>,
    pub(crate) parts: Vec<Option<Box<dyn Any + Send>>>,
    pub(crate) endpoints: Vec<EndpointPlan>,
    pub(crate) shared: Arc<Shared>,
}

/// A listener's socket on this worker, or a connector: its id, the socket (listeners), the
/// connections' options, the stage to deliver to, and the connect time limit (connectors).
pub(crate) struct EndpointPlan {
    pub(crate) id: usize,
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) cfg: Arc<ListenConfig>,
    pub(crate) deliver: usize,
    pub(crate) connect_timeout: Option<Duration>,
}

/// A stage replica with its event type erased.
pub(crate) trait ReplicaDyn {
    /// Runs the `woken` hook if a wake-up is pending, then handles up to one batch of queued
    /// events; returns how many (a wake-up counts as one).
    fn run(&mut self, io: &mut Io) -> usize;
    /// Whether any event is queued, or a wake-up pending.
    fn has_work(&mut self) -> bool;
    /// Runs the handler's periodic hook.
    fn tick(&mut self, io: &mut Io);
    /// The earliest deadline in the replica's timer table.
    fn next_deadline(&self) -> Option<Instant>;
}

pub(crate) struct Replica<H: Handler> {
    pub(crate) stage: usize,
    pub(crate) handler: H,
    pub(crate) local: Rc<LocalQueue<H::Event>>,
    pub(crate) timers: Rc<TimerTable<H::Event>>,
    /// Set by the replica's `Waker`: run `Handler::woken` at the start of the next visit.
    pub(crate) woken: Rc<Cell<bool>>,
    pub(crate) remote: Vec<spsc::Consumer<Stamped<H::Event>>>,
    pub(crate) inject: Arc<mpsc::Queue<Stamped<H::Event>>>,
    pub(crate) batch: usize,
    /// Source to start from next run, rotated so no inbound edge starves the others.
    pub(crate) next: usize,
    pub(crate) counters: Arc<WorkerCounters>,
    /// Adaptive admission control, fed with each event's response time.
    pub(crate) admission: Option<Rc<std::cell::RefCell<crate::control::OverloadController>>>,
    /// Per-event service time of the last batch (the estimate for this batch's responses).
    pub(crate) last_service_us: u64,
    /// Adaptive batching.
    pub(crate) batcher: Option<crate::control::BatchController>,
}

/// Takes one event from inbound source `source` of a replica: 0 the local queue, 1 the
/// injection queue, then the cross-core rings. Borrows only the queues, so the caller can hold
/// its counters across the call.
fn pop<E>(
    local: &LocalQueue<E>,
    inject: &mpsc::Queue<Stamped<E>>,
    remote: &mut [spsc::Consumer<Stamped<E>>],
    source: usize,
) -> Option<Stamped<E>> {
    match source {
        0 => local.pop(),
        // SAFETY: the owning replica is the only consumer of its injection queue.
        1 => unsafe { inject.pop() },
        s => remote[s - 2].pop(),
    }
}

impl<H: Handler> ReplicaDyn for Replica<H> {
    fn run(&mut self, io: &mut Io) -> usize {
        // Most visits to most replicas find nothing (every stage is visited every loop
        // iteration): a few loads then, not the batch bookkeeping below. The queue gauge needs
        // no update: it was set when this replica last took events, and only it takes them.
        if self.timers.len() == 0 && !self.has_work() {
            return 0;
        }
        let sources = 2 + self.remote.len();
        let mut n = 0;
        let now_us = io.now_us;
        let c = &self.counters.stages[self.stage];
        let mut cx = Context { io };
        let mut t0 = None;
        let woke = self.woken.replace(false);
        if woke {
            self.handler.woken(&mut cx);
        }
        // Due timers first: they were admitted when scheduled, and are late already.
        while n < self.batch {
            let Some((ev, late)) = self.timers.pop_due(cx.io.now) else { break };
            t0.get_or_insert_with(Instant::now);
            c.enqueued.add(1);
            c.wait_us.record(late.as_micros() as u64, 1);
            self.handler.handle(ev, &mut cx);
            n += 1;
        }
        for k in 0..sources {
            let s = (self.next + k) % sources;
            while n < self.batch {
                let Some(st) = pop(&self.local, &self.inject, &mut self.remote, s) else { break };
                t0.get_or_insert_with(Instant::now);
                // Clocks of different workers may differ by an iteration: clamp at zero.
                let wait = (now_us.wrapping_sub(st.at) as i32).max(0) as u64;
                c.wait_us.record(wait, 1);
                if let Some(ctl) = &self.admission {
                    let mut ctl = ctl.borrow_mut();
                    if !ctl.config().external_samples {
                        let resp = std::time::Duration::from_micros(wait + self.last_service_us);
                        ctl.observe(resp, cx.io.now);
                    }
                }
                self.handler.handle(st.ev, &mut cx);
                n += 1;
            }
        }
        self.next = (self.next + 1) % sources;
        if n > 0 {
            self.handler.batch_done(n, &mut cx);
            if let Some(b) = &mut self.batcher {
                b.record(n, cx.io.now);
                self.batch = b.batch();
            }
        }
        if let Some(t0) = t0 {
            // One clock read per batch: the batch's time is spread over its events.
            let per = t0.elapsed().as_micros() as u64 / n as u64;
            c.service_us.record(per, n as u64);
            self.last_service_us = per;
            // Counted after the handlers ran (and counted what they enqueued): see
            // `Shared::quiescent`.
            c.processed.add(n as u64);
            c.batches.add(1);
            c.batch_size.set(n as u64);
        }
        let queued = self.local.len() + self.inject.len() + self.remote.iter().map(|r| r.len()).sum::<usize>();
        c.queued.set(queued as u64);
        n + usize::from(woke)
    }

    fn tick(&mut self, io: &mut Io) {
        if let Some(ctl) = &self.admission {
            let mut ctl = ctl.borrow_mut();
            ctl.tick(io.now);
            let c = &self.counters.stages[self.stage];
            c.admission_rate.set(ctl.rate() as u64);
            c.admission_p90_us.set(ctl.last_p90().as_micros() as u64);
        }
        self.handler.tick(&mut Context { io });
    }

    fn has_work(&mut self) -> bool {
        self.woken.get() || self.local.len() > 0 || !self.inject.is_empty() || self.remote.iter().any(|r| !r.is_empty())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }
}

/// How long a worker naps between retries of network events parked behind a full stage.
const STALL_NAP: Duration = Duration::from_micros(100);

/// Spins in a row that find no work before a worker stops spinning (`Builder::spin_before_sleep`).
const SPIN_MISSES: u32 = 4;

/// `IORING_ENTER_GETEVENTS` (the io-uring crate keeps its constant private).
const ENTER_GETEVENTS: u32 = 1;

struct Worker {
    io: Io,
    replicas: Vec<Box<dyn ReplicaDyn>>,
    bell: Arc<Doorbell>,
    bell_buf: Box<u64>,
    shared: Arc<Shared>,
    wake: Rc<Cell<u64>>,
    clock: Rc<Cell<u32>>,
    now_cell: Rc<Cell<Instant>>,
    tick_ts: Box<types::Timespec>,
    /// The nap while network events wait for a full stage on another worker, which has no way
    /// to wake us when it drains.
    stall_ts: Box<types::Timespec>,
    tick: Duration,
    last_tick: Instant,
    /// How long to poll for work before sleeping (`Builder::spin_before_sleep`; zero: none).
    spin: Duration,
    /// Spins in a row that found nothing; at `SPIN_MISSES` the worker stops spinning until a
    /// sleep ends within `spin`.
    spin_misses: u32,
    deadline: Option<Instant>,
    /// Core controllers of the elastic stages whose first replica lives here.
    elastic: Vec<(usize, crate::control::CoreController, Arc<std::sync::atomic::AtomicU64>)>,
}

/// Thread body: set up, report readiness, run.
pub(crate) fn main(plan: Plan, ready: std_mpsc::Sender<io::Result<()>>) -> io::Result<()> {
    let id = plan.id;
    // A handler factory that panics (a misconfigured graph) fails `start` with its message;
    // unwinding past here would leave `start` waiting for this worker.
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Worker::new(plan)))
        .unwrap_or_else(|p| Err(io::Error::other(format!("panicked: {}", panic_message(&*p)))));
    match made {
        Ok(mut w) => {
            let _ = ready.send(Ok(()));
            // `start` counts the workers that answered; a sender kept alive would hide a
            // worker that died without answering.
            drop(ready);
            let shared = w.shared.clone();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run()))
                .unwrap_or_else(|p| Err(io::Error::other(format!("a handler panicked: {}", panic_message(&*p)))));
            w.teardown();
            if let Err(e) = &r {
                eprintln!("ringstage: worker {id} stopped: {e}");
                shared.worker_failed(id, e);
            }
            r
        }
        Err(e) => {
            let msg = format!("worker {id} setup: {e}");
            let _ = ready.send(Err(io::Error::new(e.kind(), msg)));
            Err(e)
        }
    }
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>().copied().or(p.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)")
}

impl Worker {
    fn new(mut plan: Plan) -> io::Result<Worker> {
        if let Some(cpu) = plan.cpu {
            ringstage_sys::cpu::pin_current(cpu)?;
        }
        // Ring and pool are made on this thread: SINGLE_ISSUER binds the ring to it, and the
        // pool recognises its home thread.
        let (ring, features) = ringstage_sys::ring::setup(&plan.ring)?;
        let pool = BufPool::new(plan.pool.0, plan.pool.1, 0)?;
        // SAFETY: `Io` drops the ring before the pool (field order), ending the registration.
        unsafe { pool.register(&ring.submitter()) }?;
        let bell = plan.shared.bells[plan.id].clone();
        pool.set_waker(bell.clone());
        let counters = plan.shared.counters[plan.id].clone();
        let wake = Rc::new(Cell::new(0u64));
        let clock = Rc::new(Cell::new(0u32));
        let now_cell = Rc::new(Cell::new(Instant::now()));
        let nstages = plan.meta.len();
        let mut setup = Setup {
            worker: plan.id,
            workers: plan.shared.bells.len(),
            meta: &plan.meta,
            parts: &mut plan.parts,
            sinks: (0..nstages).map(|_| None).collect(),
            locals: (0..nstages).map(|_| None).collect(),
            timers: (0..nstages).map(|_| None).collect(),
            wakers: (0..nstages).map(|_| None).collect(),
            counters: counters.clone(),
            wake: wake.clone(),
            clock: clock.clone(),
            now: now_cell.clone(),
            controllers: (0..nstages).map(|_| None).collect(),
            shared: plan.shared.clone(),
        };
        let mut replicas = Vec::new();
        for (idx, m) in plan.meta.iter().enumerate() {
            if m.cfg.workers.contains(&plan.id) {
                replicas.push((plan.factories[idx])(&mut setup));
            }
        }
        let endpoints = plan
            .endpoints
            .into_iter()
            .map(|e| {
                let sink = setup.sink(StageId::<NetEvent>::new(e.deliver));
                Endpoint::new(e.id, e.fd, e.cfg, sink, e.connect_timeout)
            })
            .collect();
        let io = Io {
            worker: plan.id,
            ring,
            features,
            pool,
            net: Net::new(endpoints, plan.ring.fixed_files),
            ops: slab::Slab::new(),
            op_timeout: plan.file_timeout.map(|d| Box::new(types::Timespec::from(d))),
            counters,
            draining: false,
            stop: plan.shared.shutdown.clone(),
            now: Instant::now(),
            now_us: 0,
        };
        let mut w = Worker {
            io,
            replicas,
            bell,
            bell_buf: Box::new(0),
            shared: plan.shared,
            wake,
            clock,
            now_cell,
            tick_ts: Box::new(types::Timespec::from(plan.tick)),
            stall_ts: Box::new(types::Timespec::from(STALL_NAP.min(plan.tick))),
            tick: plan.tick,
            last_tick: Instant::now(),
            spin: plan.spin,
            spin_misses: 0,
            elastic: plan
                .meta
                .iter()
                .enumerate()
                .filter(|(_, m)| m.cfg.workers.first() == Some(&plan.id))
                .filter_map(|(i, m)| {
                    let cfg = m.cfg.elastic.clone()?;
                    let ctl = crate::control::CoreController::new(cfg, m.cfg.workers.len());
                    Some((i, ctl, m.active.clone()?))
                })
                .collect(),
            deadline: None,
        };
        w.arm_doorbell()?;
        w.io.net_start()?;
        Ok(w)
    }

    fn arm_doorbell(&mut self) -> io::Result<()> {
        let sqe = opcode::Read::new(types::Fd(self.bell.fd()), (&mut *self.bell_buf as *mut u64).cast(), 8)
            .build()
            .user_data(token::make(token::DOORBELL, 0, 0));
        // SAFETY: `bell_buf` is boxed in the worker and outlives the ring (dropped after it in
        // `teardown`); nothing else touches it while the read is armed.
        unsafe { self.io.push(&[sqe]) }
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            self.io.now = Instant::now();
            self.io.now_us = self.io.now.duration_since(self.shared.epoch).as_micros() as u32;
            self.clock.set(self.io.now_us);
            self.now_cell.set(self.io.now);
            self.io.counters.loops.add(1);
            let reaped = self.reap()?;
            let returned = self.io.pool.drain_returns();
            self.io.net_rearm_starved();
            let unstalled = self.io.net_flush_stalled();
            let mut handled = 0;
            for r in &mut self.replicas {
                handled += r.run(&mut self.io);
            }
            if self.io.now.duration_since(self.last_tick) >= self.tick {
                self.last_tick = self.io.now;
                for r in &mut self.replicas {
                    r.tick(&mut self.io);
                }
                let pool = self.io.pool.stats();
                self.io.counters.buffers_out.set(pool.outstanding as u64);
                self.io.counters.buffers_returned.set(pool.returned_home + pool.returned_remote);
                self.io.counters.buffer_window.set(pool.window as u64);
                for (stage, ctl, mask) in &mut self.elastic {
                    let queued: u64 = self.shared.counters.iter().map(|c| c.stages[*stage].queued.get()).sum();
                    let active = ctl.update(queued);
                    mask.store((1u64 << active) - 1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            self.flush_wakes();
            self.io.net_tick();
            // Published before the worker may sleep, so an idle worker's count is current.
            self.io.counters.allocations.set(crate::metrics::thread_allocations());
            if self.check_shutdown() {
                return Ok(());
            }
            if reaped + returned + unstalled + handled > 0 {
                self.enter_nowait()?;
            } else {
                self.sleep()?;
            }
        }
    }

    /// Reaps completions in batches of up to 64 without allocating. The batch is copied out of
    /// the ring (handling a completion needs the ring) into an uninitialised array: zeroing
    /// its 1 KiB every loop iteration showed up as a `memset` in profiles.
    fn reap(&mut self) -> io::Result<usize> {
        let mut total = 0;
        let mut slots = [const { std::mem::MaybeUninit::<cqueue::Entry>::uninit() }; 64];
        if self.io.ring.submission().cq_overflow() {
            // Completions wait in the kernel's overflow list: the CQ was full. They are flushed
            // by the next enter (`ring_pending` asks for one).
            self.io.counters.cq_overflow.add(1);
        }
        loop {
            let batch = {
                let mut cq = self.io.ring.completion();
                self.io.counters.cq_dropped.set(cq.overflow() as u64);
                cq.fill(&mut slots)
            };
            let n = batch.len();
            for cqe in batch.iter() {
                let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
                let (kind, idx, gen) = token::parse(ud);
                if kind == token::DOORBELL {
                    self.arm_doorbell()?;
                } else if kind == token::OP {
                    self.io.complete_op(idx, res);
                } else if kind == token::OP_TIMEOUT {
                    // The op's own completion carries the outcome (ECANCELED if this fired).
                } else {
                    self.io.net_complete(kind, idx, gen, res, flags);
                }
            }
            total += n;
            if n < slots.len() {
                break;
            }
        }
        self.io.counters.cqes.add(total as u64);
        Ok(total)
    }

    fn flush_wakes(&mut self) {
        let mut bits = self.wake.replace(0);
        while bits != 0 {
            let w = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.shared.bells[w].ring();
        }
    }

    /// Shutdown: on the flag, stop accepting and reading; exit at global quiescence or the
    /// drain deadline. Returns whether to leave the loop.
    fn check_shutdown(&mut self) -> bool {
        if self.shared.abort.load(Ordering::Acquire) {
            return true; // another worker failed: stop now
        }
        if !self.io.draining {
            if !self.shared.shutdown.load(Ordering::Acquire) {
                return false;
            }
            self.io.draining = true;
            self.io.net_begin_drain();
            self.deadline = Some(self.io.now + self.shared.drain_timeout);
            return false;
        }
        let done = self.shared.quiescent() || self.deadline.is_some_and(|d| self.io.now >= d);
        if done {
            for b in &self.shared.bells {
                b.ring_always(); // let sleeping peers re-check promptly
            }
        }
        done
    }

    /// Whether anything can make progress now. Parked network events do not count: they wait
    /// for another worker's stage, and `sleep` naps briefly instead of spinning on them.
    fn has_work(&mut self) -> bool {
        !self.io.ring.completion().is_empty()
            || (self.io.pool.has_returns() && self.io.net.has_starved())
            || (!self.io.draining && self.shared.shutdown.load(Ordering::Acquire))
            || self.replicas.iter_mut().any(|r| r.has_work())
    }

    /// SQEs queued for submission, and whether the kernel flags work for an enter: deferred
    /// completion work (IORING_SQ_TASKRUN) or completions held back by a CQ overflow.
    fn ring_pending(&mut self) -> (usize, bool) {
        let sq = self.io.ring.submission();
        (sq.len(), sq.taskrun() || sq.cq_overflow())
    }

    /// The earliest deadline in this worker's timer tables.
    fn next_timer(&self) -> Option<Instant> {
        self.replicas.iter().filter_map(|r| r.next_deadline()).min()
    }

    /// Submits queued SQEs and runs deferred completion work without waiting.
    fn enter_nowait(&mut self) -> io::Result<()> {
        let (pending, needs) = self.ring_pending();
        // With IORING_SETUP_TASKRUN_FLAG the kernel flags pending deferred work in the SQ ring;
        // without it we cannot know, so always enter.
        if pending == 0 && !needs && self.io.features.coop_taskrun {
            return Ok(());
        }
        self.io.counters.enters.add(1);
        // SAFETY: plain io_uring_enter on our own ring with no argument struct.
        let r = unsafe { self.io.ring.submitter().enter::<libc::sigset_t>(pending as u32, 0, ENTER_GETEVENTS, None) };
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => Ok(()),
            Err(e) => Err(ringstage_sys::ring::explain("io_uring_enter", e)),
        }
    }

    /// Polls for work for up to the configured spin before the worker sleeps: completions or
    /// deferred completion work (the SQ ring's TASKRUN flag), queued SQEs, events from other
    /// workers, a due timer. Returns whether work came. Hot path when enabled: no allocation,
    /// no syscall.
    fn spin_for_work(&mut self) -> bool {
        if self.spin.is_zero() || self.spin_misses >= SPIN_MISSES {
            return false;
        }
        let t0 = Instant::now();
        let timer = self.next_timer();
        let until = timer.map_or(t0 + self.spin, |d| d.min(t0 + self.spin));
        let found = loop {
            let (pending, needs) = self.ring_pending();
            if pending > 0 || needs || self.has_work() {
                break true;
            }
            let now = Instant::now();
            if now >= until {
                // A timer due now is work; the spin's own end is not.
                break timer.is_some_and(|d| now >= d);
            }
            std::hint::spin_loop();
        };
        self.io.counters.spin_ns.add(t0.elapsed().as_nanos() as u64);
        self.io.counters.spins.add(1);
        self.io.counters.spin_hits.add(u64::from(found));
        self.spin_misses = if found { 0 } else { self.spin_misses + 1 };
        found
    }

    fn sleep(&mut self) -> io::Result<()> {
        if self.spin_for_work() {
            return self.enter_nowait();
        }
        self.bell.prepare_sleep();
        if self.has_work() {
            self.bell.awake();
            return self.enter_nowait();
        }
        let t0 = Instant::now();
        let stalled = self.io.net.has_stalled();
        let nap = if stalled { STALL_NAP.min(self.tick) } else { self.tick };
        let mut ts: &types::Timespec = if stalled { &self.stall_ts } else { &self.tick_ts };
        // Wake for the earliest timer if it comes before the tick (or the stall nap).
        let timer_ts;
        if let Some(d) = self.next_timer() {
            let wait = d.saturating_duration_since(t0);
            if wait.is_zero() {
                self.bell.awake();
                return self.enter_nowait();
            }
            if wait < nap {
                timer_ts = types::Timespec::from(wait);
                ts = &timer_ts;
            }
        }
        self.io.counters.enters.add(1);
        let args = types::SubmitArgs::new().timespec(ts);
        let r = self.io.ring.submitter().submit_with_args(1, &args);
        self.bell.awake();
        let slept = t0.elapsed();
        self.io.counters.idle_ns.add(slept.as_nanos() as u64);
        if r.is_ok() && slept < self.spin {
            // Woken by work (not the tick or a timer: ETIME) within the spin: work comes at
            // short gaps again, so spin before the next sleep.
            self.spin_misses = 0;
        }
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {
                Ok(())
            }
            Err(e) => Err(ringstage_sys::ring::explain("io_uring_enter", e)),
        }
    }

    fn teardown(&mut self) {
        // Handlers may hold buffers: drop them while the pool's home is still this thread.
        self.replicas.clear();
        self.io.net_teardown();
        // File ops still in flight (only after a forced drain) may be written by the kernel
        // until the ring's asynchronous teardown ends: leak their buffers rather than free them.
        std::mem::forget(std::mem::take(&mut self.io.ops));
        let _ = self.io.pool.unregister(&self.io.ring.submitter());
    }
}
