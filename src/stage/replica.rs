//! A stage's replica on one worker: its handler, its inbound queues and timer table, and the
//! controllers that measure it. The worker runs each replica once per loop iteration.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::{Context, Handler, LocalQueue, PanicPolicy, Stamped, TimerTable};
use crate::control::{BatchController, OverloadController};
use crate::metrics::WorkerCounters;
use crate::queue::{mpsc, spsc};
use crate::reactor::Reactor;

/// The payload a replica unwinds with when a handler panics under [`PanicPolicy::Fatal`]: the
/// stage's name, and the panic's message.
pub(crate) struct StagePanic {
    pub(crate) stage: String,
    pub(crate) message: String,
}

/// A stage replica with its event type erased.
pub(crate) trait ReplicaDyn {
    /// Runs the `woken` hook if a wake-up is pending, then handles up to one batch of queued
    /// events; returns how many (a wake-up counts as one).
    fn run(&mut self, r: &mut Reactor) -> usize;
    /// Whether any event is queued, or a wake-up pending.
    fn has_work(&mut self) -> bool;
    /// Runs the handler's periodic hook.
    fn tick(&mut self, r: &mut Reactor);
    /// The earliest deadline in the replica's timer table.
    fn next_deadline(&self) -> Option<Instant>;
}

/// Reads an event's [`OnPanic`] key (a connection id, packed: this layer cannot name it). A
/// function pointer, as it is called on every event.
/// Returns [`NO_KEY`] for an event from no connection: a plain `u128` comes back in two
/// registers, where an `Option<u128>` would go through memory on every event.
pub(crate) type PanicKey<E> = fn(&E) -> u128;

/// The [`PanicKey`] of an event that names no connection.
pub(crate) const NO_KEY: u128 = u128::MAX;

/// What to do when a handler panics on an event (typically: abort the connection the event
/// came from): `key` reads what `act` needs from each event before it is handled (the event
/// itself is gone once the handler has it). Set up by the runtime, which knows the network
/// stage; a stage without one only drops the event.
pub(crate) struct OnPanic<E> {
    pub(crate) key: PanicKey<E>,
    pub(crate) act: Box<dyn Fn(u128)>,
}

pub(crate) struct Replica<H: Handler> {
    pub(crate) stage: usize,
    pub(crate) name: Rc<str>,
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
    pub(crate) admission: Option<Rc<RefCell<OverloadController>>>,
    /// Per-event service time of the last batch (the estimate for this batch's responses).
    pub(crate) last_service_us: u64,
    /// Adaptive batching.
    pub(crate) batcher: Option<BatchController>,
    pub(crate) panics: PanicPolicy,
    /// Called with an event whose handler panicked ([`PanicPolicy::Isolate`]).
    pub(crate) on_panic: Option<OnPanic<H::Event>>,
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

impl<H: Handler> Replica<H> {
    /// Handles due timers, then queued events, up to the batch; counts into `n`. A panic in
    /// the handler unwinds out of here, leaving `n` counting the event it panicked on, and
    /// `current` holding that event's [`OnPanic`] key.
    #[inline(always)] // one caller; keeps `n` and `current` in registers there
    fn batch(&mut self, cx: &mut Context<'_>, n: &mut usize, t0: &mut Option<Instant>, current: &mut u128) {
        let now_us = cx.reactor.now_us;
        let sources = 2 + self.remote.len();
        let c = &self.counters.stages[self.stage];
        // Due timers first: they were admitted when scheduled, and are late already.
        while *n < self.batch {
            let Some((ev, late)) = self.timers.pop_due(cx.reactor.now) else { break };
            t0.get_or_insert_with(Instant::now);
            c.enqueued.add(1);
            c.wait_us.record(late.as_micros() as u64, 1);
            *n += 1;
            if let Some(p) = &self.on_panic {
                *current = (p.key)(&ev);
            }
            self.handler.handle(ev, cx);
        }
        for k in 0..sources {
            let s = (self.next + k) % sources;
            while *n < self.batch {
                let Some(st) = pop(&self.local, &self.inject, &mut self.remote, s) else { break };
                t0.get_or_insert_with(Instant::now);
                // Clocks of different workers may differ by an iteration: clamp at zero.
                let wait = (now_us.wrapping_sub(st.at) as i32).max(0) as u64;
                c.wait_us.record(wait, 1);
                if let Some(ctl) = &self.admission {
                    let mut ctl = ctl.borrow_mut();
                    if !ctl.config().external_samples {
                        let resp = std::time::Duration::from_micros(wait + self.last_service_us);
                        ctl.observe(resp, cx.reactor.now);
                    }
                }
                *n += 1;
                if let Some(p) = &self.on_panic {
                    *current = (p.key)(&st.ev);
                }
                self.handler.handle(st.ev, cx);
            }
        }
    }
}

impl<H: Handler> ReplicaDyn for Replica<H> {
    fn run(&mut self, r: &mut Reactor) -> usize {
        // Most visits to most replicas find nothing (every stage is visited every loop
        // iteration): a few loads then, not the batch bookkeeping below. The queue gauge needs
        // no update: it was set when this replica last took events, and only it takes them.
        if self.timers.len() == 0 && !self.has_work() {
            return 0;
        }
        let sources = 2 + self.remote.len();
        let mut cx = Context { reactor: r };
        let (mut n, mut t0) = (0, None);
        let woke = self.woken.replace(false);
        if woke {
            self.handler.woken(&mut cx);
        }
        // One unwinding guard per batch, not per event: on a panic the batch goes on after the
        // event (see `PanicPolicy`).
        loop {
            let mut current = NO_KEY;
            let before = n;
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.batch(&mut cx, &mut n, &mut t0, &mut current);
            }));
            let Err(p) = done else { break };
            self.counters.stages[self.stage].panics.add(1);
            if self.panics == PanicPolicy::Fatal {
                let message = crate::stage::panic_message(&*p).to_string();
                std::panic::resume_unwind(Box::new(StagePanic { stage: self.name.to_string(), message }));
            }
            log::error!(
                "ringstage: stage '{}' on worker {}: a handler panicked ({}); the event is dropped",
                self.name,
                cx.reactor.worker,
                crate::stage::panic_message(&*p)
            );
            if let Some(p) = self.on_panic.as_ref().filter(|_| current != NO_KEY) {
                (p.act)(current);
            }
            if n == before {
                break; // nothing was handled: do not spin on a handler that panics at once
            }
        }
        self.next = (self.next + 1) % sources;
        let c = &self.counters.stages[self.stage];
        if n > 0 {
            self.handler.batch_done(n, &mut cx);
            if let Some(b) = &mut self.batcher {
                b.record(n, cx.reactor.now);
                self.batch = b.batch();
            }
        }
        if let Some(t0) = t0 {
            // One clock read per batch: the batch's time is spread over its events.
            let per = t0.elapsed().as_micros() as u64 / n.max(1) as u64;
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

    fn tick(&mut self, r: &mut Reactor) {
        if let Some(ctl) = &self.admission {
            let mut ctl = ctl.borrow_mut();
            ctl.tick(r.now);
            let c = &self.counters.stages[self.stage];
            c.admission_rate.set(ctl.rate() as u64);
            c.admission_p90_us.set(ctl.last_p90().as_micros() as u64);
        }
        self.handler.tick(&mut Context { reactor: r });
    }

    fn has_work(&mut self) -> bool {
        self.woken.get() || self.local.len() > 0 || !self.inject.is_empty() || self.remote.iter().any(|r| !r.is_empty())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }
}
