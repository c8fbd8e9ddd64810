use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use super::Stamped;
use crate::control::{Gate, OverloadController};
use crate::metrics::WorkerCounters;
use crate::queue::spsc;

/// A worker-local bounded queue: the edge between two stages placed on the same worker.
/// Plain memory, no atomics; never grows past its capacity (storage is reserved up front).
pub(crate) struct LocalQueue<E> {
    q: RefCell<VecDeque<Stamped<E>>>,
    cap: usize,
}

impl<E> LocalQueue<E> {
    pub(crate) fn new(cap: usize) -> LocalQueue<E> {
        LocalQueue { q: RefCell::new(VecDeque::with_capacity(cap)), cap }
    }

    /// Inlined into the producer, so the event is written into its slot without a stop on this
    /// frame (events are moved by value, and a moved event over 128 bytes is a `memcpy` call).
    #[inline(always)]
    pub(crate) fn push(&self, ev: Stamped<E>) -> Result<(), Stamped<E>> {
        let mut q = self.q.borrow_mut();
        if q.len() >= self.cap {
            return Err(ev);
        }
        q.push_back(ev);
        Ok(())
    }

    fn free(&self) -> usize {
        self.cap - self.q.borrow().len()
    }

    fn extend(&self, evs: impl Iterator<Item = Stamped<E>>) {
        self.q.borrow_mut().extend(evs);
    }

    /// Takes one event; the borrow ends before the caller runs a handler.
    ///
    /// A pop that empties the queue moves its ring position back to the first slot (`clear` on
    /// an empty `VecDeque` only resets the head). A queue drained every loop iteration then
    /// reuses its first few slots, which stay in L1, instead of walking its whole capacity
    /// (4096 commands of 128 bytes for the network stage) through the cache one slot a push.
    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<Stamped<E>> {
        let mut q = self.q.borrow_mut();
        let ev = q.pop_front();
        if q.is_empty() {
            q.clear();
        }
        ev
    }

    pub(crate) fn len(&self) -> usize {
        self.q.borrow().len()
    }
}

/// The producer end of a cross-core edge.
pub(crate) type Edge<E> = spsc::Producer<Stamped<E>>;

/// A local replica's admission controller and the worker's loop clock.
pub(crate) type Admission = (Rc<RefCell<OverloadController>>, Rc<Cell<Instant>>);

/// The producer side of one stage, as seen from one worker.
pub(crate) struct SinkInner<E> {
    pub(crate) stage: usize,
    /// Replica index on this worker, and its local queue.
    pub(crate) local: Option<(usize, Rc<LocalQueue<E>>)>,
    /// Per replica: the SPSC producer from this worker (`None` for the local replica).
    pub(crate) remote: Box<[Option<RefCell<Edge<E>>>]>,
    /// Per replica: its worker.
    pub(crate) replica_workers: Box<[usize]>,
    /// Per worker: the replica placed there, if any.
    pub(crate) replica_on: Box<[Option<usize>]>,
    pub(crate) router: Option<fn(&E) -> usize>,
    pub(crate) rr: Cell<usize>,
    pub(crate) counters: Arc<WorkerCounters>,
    /// Bit `w` set: worker `w` got work this loop iteration and may need its doorbell rung.
    pub(crate) wake: Rc<Cell<u64>>,
    /// This worker's loop clock, µs since the runtime's epoch (stamped on enqueued events).
    pub(crate) clock: Rc<Cell<u32>>,
    /// The local replica's admission controller, if the stage has one (for its samples).
    pub(crate) admission: Option<Admission>,
    /// Per replica: the admission gate, if the stage has admission control.
    pub(crate) gates: Option<Arc<[Arc<Gate>]>>,
    /// Elastic stages: bit `r` set while replica `r` takes new events.
    pub(crate) active: Option<Arc<AtomicU64>>,
}

/// A handle for putting events into a stage, bound to the worker it was made on (`!Send`).
///
/// Get one during setup with [`crate::runtime::Setup::sink`]. Cloning is cheap (one reference
/// count increment) and clones share the same queues.
///
/// # Examples
///
/// A stage that forwards to another and, when the next queue is full, answers the event
/// itself instead of waiting (SEDA's refusal: the caller learns at once).
///
/// ```
/// use ringstage::prelude::*;
///
/// let mut b = Runtime::builder(1);
/// let work = b.stage::<u32>("work", StageConfig::on([0]).capacity(4));
/// let front = b.stage::<u32>("front", StageConfig::on([0]));
/// b.handler(work, |_| handler_fn(|_n: u32, _cx: &mut Context<'_>| {}));
/// b.handler(front, move |s| {
///     let work = s.sink(work);
///     handler_fn(move |n: u32, _cx: &mut Context<'_>| {
///         if let Err(n) = work.try_enqueue(n) {
///             // `work` is full: the event is back in our hands, answer it as refused.
///             let _ = n;
///         }
///     })
/// });
/// let rt = b.start()?;
/// let inject = rt.injector(front);
/// for n in 0..16 {
///     let _ = inject.try_enqueue(n);
/// }
/// rt.shutdown();
/// rt.join()?;
/// # Ok::<(), ringstage::Error>(())
/// ```
pub struct Sink<E> {
    pub(crate) inner: Rc<SinkInner<E>>,
}

impl<E> Clone for Sink<E> {
    fn clone(&self) -> Self {
        Sink { inner: self.inner.clone() }
    }
}

impl<E> std::fmt::Debug for Sink<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("stage", &self.inner.stage).finish()
    }
}

impl<E: Send + 'static> Sink<E> {
    /// The replica an event goes to: the stage's router if it has one; else the replica on
    /// this worker (events cross cores only when the graph places the stage elsewhere); else
    /// round-robin over the stage's replicas.
    fn target(&self, ev: Option<&E>) -> Option<usize> {
        let s = &*self.inner;
        if let (Some(route), Some(ev)) = (s.router, ev) {
            return s.replica_on.get(route(ev)).copied().flatten();
        }
        let mask = super::active_mask(&s.active);
        if let Some((r, _)) = &s.local {
            if mask & (1 << r) != 0 {
                return Some(*r);
            }
        }
        let n = s.replica_workers.len();
        let r = super::next_active(s.rr.get(), n, mask);
        s.rr.set((r + 1) % n);
        Some(r)
    }

    fn account(&self, ok: bool, n: u64, replica: usize) {
        let s = &*self.inner;
        let c = &s.counters.stages[s.stage];
        if ok {
            c.enqueued.add(n);
            if s.local.as_ref().map(|l| l.0) != Some(replica) {
                s.wake.set(s.wake.get() | 1 << s.replica_workers[replica]);
            }
        } else {
            c.refused.add(n);
        }
    }

    /// Puts `event` into the stage, or hands it back when the target queue is full.
    ///
    /// Hot path: no allocation, no lock; a cross-core push is one SPSC slot write and a release
    /// store, and the consumer's doorbell is rung (only if it sleeps) at the end of this worker's
    /// loop iteration.
    #[inline]
    pub fn try_enqueue(&self, event: E) -> Result<(), E> {
        self.try_enqueue_class(event, u8::MAX)
    }

    /// Like [`Sink::try_enqueue`], for an event of priority `class` (0 is the lowest): when the
    /// target stage runs adaptive overload control, the target replica's gate may refuse the
    /// event, lower classes first, whichever worker this sink is on (the replica's controller
    /// sets the gate's rate). [`Sink::try_enqueue`] uses the highest class.
    #[inline(always)]
    pub fn try_enqueue_class(&self, event: E, class: u8) -> Result<(), E> {
        let Some(r) = self.target(Some(&event)) else {
            self.inner.counters.stages[self.inner.stage].refused.add(1);
            return Err(event);
        };
        self.push_to(r, event, class)
    }

    /// The replica for a new flow of related events (a connection's), given its first event:
    /// the router's choice if the stage has a router and it names a replica, else the one
    /// [`Sink::try_enqueue`] picks without a router. The flow's later events go to it with
    /// [`Sink::try_enqueue_to`], so they keep their order and their replica's state even when
    /// the stage's active replicas change.
    pub(crate) fn pick(&self, first: &E) -> usize {
        // Without a router `target` always names a replica.
        self.target(Some(first)).or_else(|| self.target(None)).unwrap_or(0)
    }

    /// Puts `event` into replica `replica` (from [`Sink::pick`]), active or not (an inactive
    /// replica still drains what it is given), or hands it back when that queue or its
    /// admission gate refuses. Hot path: no allocation, no lock.
    #[inline]
    pub(crate) fn try_enqueue_to(&self, replica: usize, event: E) -> Result<(), E> {
        self.push_to(replica, event, u8::MAX)
    }

    /// Inlined (with `try_enqueue_class` and `LocalQueue::push`) so that an event is moved
    /// from the caller into its queue slot once, not once per frame on the way.
    #[inline(always)]
    fn push_to(&self, r: usize, event: E, class: u8) -> Result<(), E> {
        if let Some(gates) = &self.inner.gates {
            if !gates[r].admit_n(class, 1, self.inner.clock.get()) {
                self.inner.counters.stages[self.inner.stage].refused.add(1);
                return Err(event);
            }
        }
        let ev = Stamped { at: self.inner.clock.get(), ev: event };
        let res = match &self.inner.remote[r] {
            Some(p) => p.borrow_mut().push(ev),
            None => self.inner.local.as_ref().expect("local replica").1.push(ev),
        };
        self.account(res.is_ok(), 1, r);
        res.map_err(|s| s.ev)
    }

    /// Puts every event of `events` into one replica, or none of them: if the target queue has
    /// fewer free slots than `events.len()`, or its admission gate (highest class) will not
    /// take them all, the untouched iterator is handed back. The router is not consulted
    /// (all events go to the same replica).
    pub fn enqueue_many<I: ExactSizeIterator<Item = E>>(&self, events: I) -> Result<(), I> {
        let n = events.len();
        let Some(r) = self.target(None) else { return Err(events) };
        let free = match &self.inner.remote[r] {
            Some(p) => p.borrow_mut().free(),
            None => self.inner.local.as_ref().expect("local replica").1.free(),
        };
        // Tokens are taken only when the queue has room for all of them.
        let admitted =
            free >= n && self.inner.gates.as_ref().is_none_or(|g| g[r].admit_n(u8::MAX, n, self.inner.clock.get()));
        if !admitted {
            self.account(false, n as u64, r);
            return Err(events);
        }
        // Only this side adds to the queue, so the free slots seen above are still free.
        let at = self.inner.clock.get();
        let stamped = events.map(|ev| Stamped { at, ev });
        match &self.inner.remote[r] {
            Some(p) => {
                if p.borrow_mut().push_all(stamped).is_err() {
                    unreachable!("free slots vanished");
                }
            }
            None => self.inner.local.as_ref().expect("local replica").1.extend(stamped),
        }
        self.account(true, n as u64, r);
        Ok(())
    }

    /// Reports one response time to the target stage's admission controller on this worker
    /// (see [`OverloadConfig::external_samples`](crate::control::OverloadConfig)); no-op when
    /// it has none. Lets the stage that answers a request feed the end-to-end time.
    pub fn observe_response(&self, response: std::time::Duration) {
        if let Some((ctl, now)) = &self.inner.admission {
            ctl.borrow_mut().observe(response, now.get());
        }
    }

    /// Number of replicas of the target stage.
    pub fn replicas(&self) -> usize {
        self.inner.replica_workers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(v: u64) -> Stamped<u64> {
        Stamped { at: 0, ev: v }
    }

    /// Where the queue's next event sits, in slots from the start of its buffer.
    fn head_slot(q: &LocalQueue<u64>, base: *const Stamped<u64>) -> usize {
        let b = q.q.borrow();
        (b.as_slices().0.as_ptr() as usize - base as usize) / std::mem::size_of::<Stamped<u64>>()
    }

    #[test]
    fn a_drained_local_queue_starts_again_at_its_first_slot_and_keeps_order_and_bound() {
        let q = LocalQueue::new(8);
        let base = q.q.borrow().as_slices().0.as_ptr();
        for round in 0..3u64 {
            for i in 0..5 {
                q.push(st(round * 10 + i)).map_err(|_| ()).expect("room");
            }
            assert_eq!(head_slot(&q, base), 0, "round {round} begins at the first slot");
            // Half drained: the position moves on with the events still queued.
            assert_eq!(q.pop().map(|s| s.ev), Some(round * 10));
            assert_eq!(head_slot(&q, base), 1);
            let rest: Vec<u64> = std::iter::from_fn(|| q.pop().map(|s| s.ev)).collect();
            assert_eq!(rest, (1..5).map(|i| round * 10 + i).collect::<Vec<_>>());
        }
        // The bound holds across resets, and a refused event comes back whole.
        for i in 0..8 {
            q.push(st(i)).map_err(|_| ()).expect("room");
        }
        assert_eq!(q.push(st(99)).map_err(|s| s.ev), Err(99));
        assert_eq!(q.len(), 8);
        assert_eq!(q.free(), 0);
    }
}
