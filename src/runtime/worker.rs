//! One pinned worker: its ring, its replicas, and the event loop.
//!
//! Loop: reap completions in a batch and turn them into events; take back buffers released on
//! other cores (re-arming receives that ran out); run each replica over up to one batch of its
//! queued events; ring the doorbells of sleeping workers that got work; submit once; and when
//! nothing is left, announce sleep, re-check, and block in `io_uring_enter` until a completion,
//! a doorbell or the tick.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};
use ringstage_sys::{Doorbell, RingConfig};

use super::builder::FilesDecl;
use super::{Factory, Setup, Shared, StageMeta};
use crate::buf::BufPool;
use crate::fs::FsDriver;
use crate::net::{Endpoint, ListenConfig, Net, NetCmd, NetEvent, UdpSocket};
use crate::reactor::{OpKind, Reactor, Token};
use crate::stage::{panic_message, ReplicaDyn, StageId, StagePanic};
use crate::Error;

/// Everything a worker thread needs to set itself up.
pub(crate) struct Plan {
    pub(crate) id: usize,
    pub(crate) cpu: Option<usize>,
    pub(crate) ring: RingConfig,
    /// Buffers per region, most buffers, buffer size.
    pub(crate) pool: (u16, usize, usize),
    pub(crate) tick: Duration,
    pub(crate) spin: Duration,
    pub(crate) file_timeout: Option<Duration>,
    /// The network stage, if any (for aborts after a panic).
    pub(crate) net_stage: Option<StageId<NetCmd>>,
    /// The file stage's users.
    pub(crate) files: Vec<FilesDecl>,
    pub(crate) meta: Arc<Vec<StageMeta>>,
    pub(crate) factories: Arc<Vec<Factory>>,
    pub(crate) parts: Vec<Option<Box<dyn Any + Send>>>,
    pub(crate) endpoints: Vec<EndpointPlan>,
    pub(crate) udp: Vec<UdpPlan>,
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

/// A UDP socket of this worker: its declaration's id, the socket, the address it is bound to,
/// its options and the stage to deliver to.
pub(crate) struct UdpPlan {
    pub(crate) id: usize,
    pub(crate) fd: OwnedFd,
    pub(crate) local: std::net::SocketAddr,
    pub(crate) cfg: crate::net::UdpConfig,
    pub(crate) deliver: usize,
}

/// How long a worker naps between retries of network events parked behind a full stage.
const STALL_NAP: Duration = Duration::from_micros(100);

/// Spins in a row that find no work before a worker stops spinning (`Builder::spin_before_sleep`).
const SPIN_MISSES: u32 = 4;

/// `IORING_ENTER_GETEVENTS` (the io-uring crate keeps its constant private).
const ENTER_GETEVENTS: u32 = 1;

struct Worker {
    r: Reactor,
    /// This worker's network and file drivers (shared with the built-in stages' handlers).
    net: Rc<RefCell<Net>>,
    fs: Rc<RefCell<FsDriver>>,
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
pub(crate) fn main(plan: Plan, ready: std_mpsc::Sender<Result<(), Error>>) -> Result<(), Error> {
    let id = plan.id;
    // A handler factory that panics (a misconfigured graph) fails `start` with its message;
    // unwinding past here would leave `start` waiting for this worker.
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Worker::new(plan)))
        .unwrap_or_else(|p| Err(Error::Panicked { stage: None, message: panic_message(&*p).into() }));
    match made {
        Ok(mut w) => {
            let _ = ready.send(Ok(()));
            // `start` counts the workers that answered; a sender kept alive would hide a
            // worker that died without answering.
            drop(ready);
            let shared = w.shared.clone();
            // A handler's panic reaches here only under `PanicPolicy::Fatal`.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run())).unwrap_or_else(|p| {
                Err(match p.downcast::<StagePanic>() {
                    Ok(sp) => Error::Panicked { stage: Some(sp.stage), message: sp.message },
                    Err(p) => Error::Panicked { stage: None, message: panic_message(&*p).into() },
                })
            });
            w.teardown();
            match r {
                Err(e) => {
                    log::error!("ringstage: worker {id} stopped: {e}");
                    let copy = Error::Io(std::io::Error::new(e.kind(), e.to_string()));
                    shared.worker_failed(id, e);
                    Err(copy)
                }
                ok => ok,
            }
        }
        Err(e) => {
            let e = Error::WorkerSetup { worker: id, cause: Box::new(e) };
            let copy = Error::Io(std::io::Error::new(e.kind(), e.to_string()));
            let _ = ready.send(Err(e));
            Err(copy)
        }
    }
}

impl Worker {
    fn new(mut plan: Plan) -> Result<Worker, Error> {
        if let Some(cpu) = plan.cpu {
            ringstage_sys::cpu::pin_current(cpu)?;
        }
        // Ring and pool are made on this thread: SINGLE_ISSUER binds the ring to it, and the
        // pool recognises its home thread.
        let needed = ringstage_sys::ring::ring_bytes(&plan.ring);
        let (ring, features) =
            ringstage_sys::ring::setup(&plan.ring).map_err(|e| Error::ring(e.call, e.error, needed))?;
        let pool = BufPool::with_growth(plan.pool.0, plan.pool.1, plan.pool.2, 0)?;
        // SAFETY: `Reactor` drops the ring before the pool (field order), ending the
        // registration.
        unsafe { pool.register(&ring.submitter()) }
            .map_err(|e| Error::ring("io_uring_register (IORING_REGISTER_PBUF_RING)", e, needed))?;
        let bell = plan.shared.bells[plan.id].clone();
        pool.set_waker(bell.clone());
        pool.set_clock_ms(Instant::now().duration_since(plan.shared.epoch).as_millis() as u32);
        let counters = plan.shared.counters[plan.id].clone();
        let wake = Rc::new(Cell::new(0u64));
        let clock = Rc::new(Cell::new(0u32));
        let now_cell = Rc::new(Cell::new(Instant::now()));
        let nstages = plan.meta.len();
        // The drivers come first (the built-in stages' handlers hold them), their endpoints
        // and deliveries once the sinks can be made.
        let net = Rc::new(RefCell::new(Net::new(Vec::new(), Vec::new(), plan.ring.fixed_files)));
        let fs = Rc::new(RefCell::new(FsDriver::new(Vec::new(), plan.file_timeout)));
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
            net: net.clone(),
            fs: fs.clone(),
            net_stage: plan.net_stage,
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
        let udp = plan
            .udp
            .into_iter()
            .map(|u| {
                let sink = setup.sink(StageId::<NetEvent>::new(u.deliver));
                UdpSocket::new(u.id, plan.id, u.fd, u.local, &u.cfg, sink)
            })
            .collect::<io::Result<Vec<_>>>()?;
        *net.borrow_mut() = Net::new(endpoints, udp, plan.ring.fixed_files);
        let deliver = plan.files.iter().map(|make| make(&mut setup)).collect();
        *fs.borrow_mut() = FsDriver::new(deliver, plan.file_timeout);
        let r = Reactor {
            worker: plan.id,
            ring,
            features,
            pool,
            counters,
            draining: false,
            stop: plan.shared.shutdown.clone(),
            now: Instant::now(),
            now_us: 0,
        };
        let mut w = Worker {
            r,
            net,
            fs,
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
        w.net.borrow_mut().start(&mut w.r)?;
        Ok(w)
    }

    fn arm_doorbell(&mut self) -> io::Result<()> {
        let sqe = opcode::Read::new(types::Fd(self.bell.fd()), (&mut *self.bell_buf as *mut u64).cast(), 8)
            .build()
            .user_data(Token::new(OpKind::Doorbell, 0, 0).encode());
        // SAFETY: `bell_buf` is boxed in the worker and outlives the ring (dropped after it in
        // `teardown`); nothing else touches it while the read is armed.
        unsafe { self.r.push(&[sqe]) }
    }

    fn run(&mut self) -> Result<(), Error> {
        loop {
            self.r.now = Instant::now();
            self.r.now_us = self.r.now.duration_since(self.shared.epoch).as_micros() as u32;
            self.clock.set(self.r.now_us);
            self.now_cell.set(self.r.now);
            self.r.counters.loops.add(1);
            let reaped = self.reap()?;
            let returned = self.r.pool.drain_returns();
            let unstalled = {
                let mut net = self.net.borrow_mut();
                net.rearm_starved(&mut self.r);
                net.flush_stalled(&mut self.r) + self.fs.borrow_mut().flush_kept(&mut self.r)
            };
            let mut handled = 0;
            for rep in &mut self.replicas {
                handled += rep.run(&mut self.r);
            }
            if self.r.now.duration_since(self.last_tick) >= self.tick {
                self.last_tick = self.r.now;
                for rep in &mut self.replicas {
                    rep.tick(&mut self.r);
                }
                let pool = self.r.pool.stats();
                let ms = self.r.now.duration_since(self.shared.epoch).as_millis() as u32;
                self.r.pool.set_clock_ms(ms);
                self.r.counters.buffer_oldest_ms.set(u64::from(self.r.pool.oldest_held_ms()));
                self.r.counters.buffers_out.set(pool.outstanding as u64);
                self.r.counters.buffers_returned.set(pool.returned_home + pool.returned_remote);
                self.r.counters.buffer_window.set(pool.window as u64);
                for (stage, ctl, mask) in &mut self.elastic {
                    let queued: u64 = self.shared.counters.iter().map(|c| c.stages[*stage].queued.get()).sum();
                    let active = ctl.update(queued);
                    mask.store((1u64 << active) - 1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            self.flush_wakes();
            self.net.borrow_mut().tick(&mut self.r);
            // Published before the worker may sleep, so an idle worker's count is current.
            self.r.counters.allocations.set(crate::metrics::thread_allocations());
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
    fn reap(&mut self) -> Result<usize, Error> {
        let mut total = 0;
        let mut slots = [const { std::mem::MaybeUninit::<cqueue::Entry>::uninit() }; 64];
        if self.r.ring.submission().cq_overflow() {
            // Completions wait in the kernel's overflow list: the CQ was full. They are flushed
            // by the next enter (`ring_pending` asks for one).
            self.r.counters.cq_overflow.add(1);
        }
        loop {
            let batch = {
                let mut cq = self.r.ring.completion();
                self.r.counters.cq_dropped.set(cq.overflow() as u64);
                cq.fill(&mut slots)
            };
            let n = batch.len();
            for cqe in batch.iter() {
                let (res, flags) = (cqe.result(), cqe.flags());
                let Some(t) = Token::decode(cqe.user_data()) else { continue };
                match t.kind {
                    OpKind::Doorbell => self.arm_doorbell()?,
                    OpKind::File => self.fs.borrow_mut().complete(&mut self.r, t, res),
                    // Cancels and linked timeouts: the operation they target reports its own
                    // outcome.
                    OpKind::Ignore => {}
                    _ => self.net.borrow_mut().complete(&mut self.r, t, res, flags),
                }
            }
            total += n;
            if n < slots.len() {
                break;
            }
        }
        self.r.counters.cqes.add(total as u64);
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
        if !self.r.draining {
            if !self.shared.shutdown.load(Ordering::Acquire) {
                return false;
            }
            self.r.draining = true;
            self.net.borrow_mut().begin_drain(&mut self.r);
            self.deadline = Some(self.r.now + self.shared.drain_timeout);
            return false;
        }
        let done = self.shared.quiescent() || self.deadline.is_some_and(|d| self.r.now >= d);
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
        !self.r.ring.completion().is_empty()
            || (self.r.pool.has_returns() && self.net.borrow().has_starved())
            || (!self.r.draining && self.shared.shutdown.load(Ordering::Acquire))
            || self.replicas.iter_mut().any(|r| r.has_work())
    }

    /// SQEs queued for submission, and whether the kernel flags work for an enter: deferred
    /// completion work (IORING_SQ_TASKRUN) or completions held back by a CQ overflow.
    fn ring_pending(&mut self) -> (usize, bool) {
        let sq = self.r.ring.submission();
        (sq.len(), sq.taskrun() || sq.cq_overflow())
    }

    /// The earliest deadline in this worker's timer tables.
    fn next_timer(&self) -> Option<Instant> {
        self.replicas.iter().filter_map(|r| r.next_deadline()).min()
    }

    /// Submits queued SQEs and runs deferred completion work without waiting.
    fn enter_nowait(&mut self) -> Result<(), Error> {
        let (pending, needs) = self.ring_pending();
        // With IORING_SETUP_TASKRUN_FLAG the kernel flags pending deferred work in the SQ ring;
        // without it we cannot know, so always enter.
        if pending == 0 && !needs && self.r.features.coop_taskrun {
            return Ok(());
        }
        self.r.counters.enters.add(1);
        // SAFETY: plain io_uring_enter on our own ring with no argument struct.
        let r = unsafe { self.r.ring.submitter().enter::<libc::sigset_t>(pending as u32, 0, ENTER_GETEVENTS, None) };
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => Ok(()),
            Err(e) => Err(Error::ring("io_uring_enter", e, 0)),
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
        self.r.counters.spin_ns.add(t0.elapsed().as_nanos() as u64);
        self.r.counters.spins.add(1);
        self.r.counters.spin_hits.add(u64::from(found));
        self.spin_misses = if found { 0 } else { self.spin_misses + 1 };
        found
    }

    fn sleep(&mut self) -> Result<(), Error> {
        if self.spin_for_work() {
            return self.enter_nowait();
        }
        self.bell.prepare_sleep();
        if self.has_work() {
            self.bell.awake();
            return self.enter_nowait();
        }
        let t0 = Instant::now();
        let stalled = self.net.borrow().has_stalled();
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
        self.r.counters.enters.add(1);
        let args = types::SubmitArgs::new().timespec(ts);
        let r = self.r.ring.submitter().submit_with_args(1, &args);
        self.bell.awake();
        let slept = t0.elapsed();
        self.r.counters.idle_ns.add(slept.as_nanos() as u64);
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
            Err(e) => Err(Error::ring("io_uring_enter", e, 0)),
        }
    }

    fn teardown(&mut self) {
        // Handlers may hold buffers: drop them while the pool's home is still this thread.
        self.replicas.clear();
        self.net.borrow_mut().teardown(&mut self.r);
        self.fs.borrow_mut().teardown();
        let _ = self.r.pool.unregister(&self.r.ring.submitter());
    }
}
