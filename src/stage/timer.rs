//! Timers: events a stage hands itself (or another stage on the same worker) to be delivered
//! once a delay has passed, as Sandstorm's `ssTimer` did for SEDA.
//!
//! Each (stage, worker) pair has one bounded timer table, a binary min-heap ordered by
//! deadline (then by scheduling order). The replica delivers due events at the start of its
//! run, before its queues, as part of its batch; a sleeping worker wakes at the earliest
//! deadline. Deadlines are honoured to the worker's loop granularity: an event is delivered in
//! the first loop iteration that starts at or after its deadline.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A heap entry: a deadline and the slot holding its event. Stale once the slot's generation
/// has moved on (the event was delivered or cancelled).
#[derive(PartialEq, Eq)]
struct Entry {
    at: Instant,
    seq: u64,
    slot: u32,
    gen: u32,
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so `BinaryHeap` (a max-heap) pops the earliest deadline first, and among
    /// equal deadlines the first scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Slot<E> {
    gen: u32,
    ev: Option<E>,
}

struct Inner<E> {
    heap: BinaryHeap<Entry>,
    slots: Vec<Slot<E>>,
    free: Vec<u32>,
    seq: u64,
}

impl<E> Inner<E> {
    fn is_live(&self, e: &Entry) -> bool {
        let s = &self.slots[e.slot as usize];
        s.gen == e.gen && s.ev.is_some()
    }

    /// Takes the event of a live slot and frees the slot.
    fn take(&mut self, slot: u32) -> Option<E> {
        let s = &mut self.slots[slot as usize];
        let ev = s.ev.take()?;
        s.gen = s.gen.wrapping_add(1);
        self.free.push(slot);
        Some(ev)
    }

    /// Drops stale entries from the top of the heap.
    fn skip_stale(&mut self) {
        while let Some(e) = self.heap.peek() {
            if self.is_live(e) {
                break;
            }
            self.heap.pop();
        }
    }
}

/// The timer table of one stage replica; shared by the replica and the [`Timer`] handles made
/// on its worker. Events live in a slab of `cap` slots (so cancelling is O(1)); the heap of
/// deadlines may also hold stale entries of cancelled events, up to `2 * cap` before they are
/// swept out.
pub(crate) struct TimerTable<E> {
    inner: RefCell<Inner<E>>,
    cap: usize,
    live: Cell<usize>,
}

impl<E> TimerTable<E> {
    /// An empty table for at most `cap` pending events; allocates nothing until a [`Timer`]
    /// is made for it.
    pub(crate) fn new(cap: usize) -> TimerTable<E> {
        let cap = cap.clamp(1, u32::MAX as usize / 2);
        let inner = Inner { heap: BinaryHeap::new(), slots: Vec::new(), free: Vec::new(), seq: 0 };
        TimerTable { inner: RefCell::new(inner), cap, live: Cell::new(0) }
    }

    /// Allocates the whole table once, so scheduling never allocates.
    pub(crate) fn reserve(&self) {
        let mut t = self.inner.borrow_mut();
        if t.slots.len() == self.cap {
            return;
        }
        let heap_room = 2 * self.cap - t.heap.len();
        t.heap.reserve_exact(heap_room);
        t.slots.reserve_exact(self.cap);
        t.free.reserve_exact(self.cap);
        for slot in (0..self.cap as u32).rev() {
            t.slots.push(Slot { gen: 0, ev: None });
            t.free.push(slot);
        }
    }

    fn push(&self, at: Instant, ev: E) -> Result<TimerKey, E> {
        if self.live.get() >= self.cap {
            return Err(ev);
        }
        let mut t = self.inner.borrow_mut();
        if t.heap.len() >= 2 * self.cap {
            // Full of cancelled events' entries: sweep them out (at most once per `cap`
            // cancellations, so O(1) amortised).
            let Inner { heap, slots, .. } = &mut *t;
            heap.retain(|e| {
                let s = &slots[e.slot as usize];
                s.gen == e.gen && s.ev.is_some()
            });
        }
        let slot = t.free.pop().expect("a free slot while fewer than cap are live");
        let s = &mut t.slots[slot as usize];
        s.ev = Some(ev);
        let gen = s.gen;
        let seq = t.seq;
        t.seq += 1;
        t.heap.push(Entry { at, seq, slot, gen });
        self.live.set(self.live.get() + 1);
        Ok(TimerKey { slot, gen })
    }

    fn cancel(&self, key: TimerKey) -> Option<E> {
        let mut t = self.inner.borrow_mut();
        if t.slots.get(key.slot as usize)?.gen != key.gen {
            return None;
        }
        let ev = t.take(key.slot)?;
        self.live.set(self.live.get() - 1);
        Some(ev)
    }

    /// Takes the earliest event due at `now`, with how late it is. The borrow ends before the
    /// caller runs a handler (which may schedule more).
    #[inline]
    pub(crate) fn pop_due(&self, now: Instant) -> Option<(E, Duration)> {
        if self.live.get() == 0 {
            return None;
        }
        let mut t = self.inner.borrow_mut();
        t.skip_stale();
        if t.heap.peek()?.at > now {
            return None;
        }
        let e = t.heap.pop()?;
        let ev = t.take(e.slot).expect("live after skip_stale");
        self.live.set(self.live.get() - 1);
        Some((ev, now - e.at))
    }

    /// The earliest deadline, if any event is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.live.get() == 0 {
            return None;
        }
        let mut t = self.inner.borrow_mut();
        t.skip_stale();
        t.heap.peek().map(|e| e.at)
    }

    pub(crate) fn len(&self) -> usize {
        self.live.get()
    }
}

/// Names a scheduled event, to [`Timer::cancel`] it. Stale (cancel does nothing) once the event
/// was delivered or cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerKey {
    slot: u32,
    gen: u32,
}

/// Schedules events for one stage's replica on the current worker: [`Timer::after`] hands the
/// event to that replica's handler once the delay has passed. Made with
/// [`Setup::timer`](crate::runtime::Setup::timer); `Clone`, not `Send` (it belongs to its
/// worker).
///
/// The table is bounded ([`StageConfig::timers`](crate::stage::StageConfig::timers)): when it
/// is full, scheduling hands the event back, like a full queue. A delivered event counts as
/// enqueued and processed in the stage's metrics. Events still pending when the runtime stops
/// are dropped (they do not hold shutdown back); a handler that must act on them can check
/// [`Context::is_shutting_down`](crate::stage::Context::is_shutting_down). A timeout that
/// usually does not fire (a request deadline) is [`Timer::cancel`]led when its work completes,
/// which frees its slot at once.
///
/// # Examples
///
/// Retries with exponential back-off:
///
/// ```no_run
/// use std::time::Duration;
/// use ringstage::prelude::*;
///
/// enum Ev { Start, Retry(u32) }
/// struct Backoff { timer: Timer<Ev> }
/// impl Handler for Backoff {
///     type Event = Ev;
///     fn handle(&mut self, ev: Ev, _cx: &mut Context<'_>) {
///         let n = match ev { Ev::Start => 0, Ev::Retry(n) => n };
///         if n < 5 {
///             // 1, 2, 4, 8, 16 ms; `Err` would mean the timer table is full.
///             let _ = self.timer.after(Duration::from_millis(1 << n), Ev::Retry(n + 1));
///         }
///     }
/// }
/// let mut b = Runtime::builder(1);
/// let st = b.stage::<Ev>("backoff", StageConfig::on([0]).timers(64));
/// b.handler(st, move |s| Backoff { timer: s.timer(st) });
/// ```
pub struct Timer<E> {
    table: Rc<TimerTable<E>>,
    now: Rc<Cell<Instant>>,
}

impl<E> Clone for Timer<E> {
    fn clone(&self) -> Self {
        Timer { table: self.table.clone(), now: self.now.clone() }
    }
}

impl<E> Timer<E> {
    pub(crate) fn new(table: Rc<TimerTable<E>>, now: Rc<Cell<Instant>>) -> Timer<E> {
        table.reserve();
        Timer { table, now }
    }

    /// Delivers `event` to the stage's handler on this worker once `delay` has passed, counted
    /// from the start of the current loop iteration ([`Context::now`](crate::stage::Context::now)).
    /// Hands the event back when the timer table is full, or when the deadline is past what
    /// an `Instant` can hold (e.g. `Duration::MAX`).
    ///
    /// Hot path: no allocation (the table is allocated when the `Timer` is made), no lock;
    /// O(log n) in the number of pending events.
    pub fn after(&self, delay: Duration, event: E) -> Result<TimerKey, E> {
        match self.now.get().checked_add(delay) {
            Some(at) => self.table.push(at, event),
            None => Err(event),
        }
    }

    /// Delivers `event` once `deadline` has passed (at once, in the next loop iteration, if it
    /// already has). Hands the event back when the timer table is full.
    pub fn at(&self, deadline: Instant, event: E) -> Result<TimerKey, E> {
        self.table.push(deadline, event)
    }

    /// Takes back a scheduled event that has not been delivered yet, freeing its slot; `None`
    /// if it was delivered or cancelled already. O(1); the stale heap entry it leaves is
    /// dropped when it reaches the top, or swept out when the heap fills with them.
    pub fn cancel(&self, key: TimerKey) -> Option<E> {
        self.table.cancel(key)
    }

    /// Events scheduled and not yet delivered.
    pub fn pending(&self) -> usize {
        self.table.len()
    }

    /// The most events that may be pending at once.
    pub fn capacity(&self) -> usize {
        self.table.cap
    }
}

impl<E> std::fmt::Debug for Timer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer").field("pending", &self.pending()).field("capacity", &self.capacity()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(cap: usize, now: Instant) -> (Rc<TimerTable<u32>>, Timer<u32>, Rc<Cell<Instant>>) {
        let table = Rc::new(TimerTable::new(cap));
        let clock = Rc::new(Cell::new(now));
        (table.clone(), Timer::new(table, clock.clone()), clock)
    }

    #[test]
    fn delivers_in_deadline_order_then_scheduling_order() {
        let t0 = Instant::now();
        let (table, t, _) = timer(8, t0);
        let ms = Duration::from_millis;
        t.after(ms(30), 1).unwrap();
        t.after(ms(10), 2).unwrap();
        t.after(ms(20), 3).unwrap();
        t.after(ms(10), 4).unwrap();
        assert_eq!(table.next_deadline(), Some(t0 + ms(10)));
        assert!(table.pop_due(t0 + ms(9)).is_none(), "nothing is due before the first deadline");
        let at = t0 + ms(25);
        let due: Vec<_> = std::iter::from_fn(|| table.pop_due(at)).collect();
        assert_eq!(due, vec![(2, ms(15)), (4, ms(15)), (3, ms(5))]);
        assert_eq!(t.pending(), 1);
        assert_eq!(table.pop_due(t0 + ms(30)), Some((1, ms(0))));
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn a_full_table_hands_the_event_back_and_allocates_nothing_more() {
        let t0 = Instant::now();
        let (table, t, clock) = timer(3, t0);
        let caps = |t: &TimerTable<u32>| {
            let i = t.inner.borrow();
            (i.heap.capacity(), i.slots.capacity(), i.free.capacity())
        };
        let before = caps(&table);
        for i in 0..3 {
            t.after(Duration::from_secs(1), i).unwrap();
        }
        assert_eq!(t.after(Duration::from_secs(1), 99), Err(99));
        assert_eq!(t.pending(), 3);
        // Churn: cancelled events leave stale heap entries, swept when the heap fills.
        for i in 0..100 {
            let k = t.after(Duration::from_secs(1), 100 + i);
            assert_eq!(k, Err(100 + i), "still full");
        }
        clock.set(t0 + Duration::from_secs(2));
        assert!(table.pop_due(clock.get()).is_some(), "delivering one frees a slot");
        for i in 0..50 {
            let k = t.after(Duration::from_secs(5), 200 + i).unwrap();
            assert_eq!(t.cancel(k), Some(200 + i));
        }
        assert_eq!(caps(&table), before, "no growth past the reserved table");
        assert_eq!(t.at(t0, 7).map(|_| ()), Ok(()));
        assert_eq!(table.pop_due(clock.get()), Some((7, Duration::from_secs(2))), "a past deadline is due at once");
        assert_eq!(t.pending(), 2);
    }

    #[test]
    fn cancel_takes_the_event_back_once() {
        let t0 = Instant::now();
        let (table, t, _) = timer(4, t0);
        let ms = Duration::from_millis;
        let a = t.after(ms(10), 1).unwrap();
        let b = t.after(ms(20), 2).unwrap();
        assert_eq!(t.cancel(a), Some(1));
        assert_eq!(t.cancel(a), None, "already cancelled");
        assert_eq!(table.next_deadline(), Some(t0 + ms(20)), "a cancelled event does not wake anyone");
        let c = t.after(ms(5), 3).unwrap(); // may reuse a's slot: a's key must stay stale
        assert_eq!(t.cancel(a), None);
        assert_eq!(table.pop_due(t0 + ms(30)), Some((3, ms(25))));
        assert_eq!(t.cancel(c), None, "delivered already");
        assert_eq!(table.pop_due(t0 + ms(30)), Some((2, ms(10))));
        assert_eq!(t.cancel(b), None);
        assert_eq!((t.pending(), table.pop_due(t0 + ms(30))), (0, None));
    }

    #[test]
    fn delay_counts_from_the_loop_clock() {
        let t0 = Instant::now();
        let (table, t, clock) = timer(4, t0);
        clock.set(t0 + Duration::from_millis(100));
        t.after(Duration::from_millis(5), 1).unwrap();
        assert_eq!(table.next_deadline(), Some(t0 + Duration::from_millis(105)));
        assert_eq!(t.after(Duration::MAX, 2), Err(2), "an unrepresentable deadline is refused, not a panic");
        assert_eq!(t.pending(), 1);
    }
}
