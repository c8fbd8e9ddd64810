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

struct Entry<E> {
    at: Instant,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    /// Reversed, so `BinaryHeap` (a max-heap) pops the earliest deadline first, and among
    /// equal deadlines the first scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The timer table of one stage replica; shared by the replica and the [`Timer`] handles made
/// on its worker.
pub(crate) struct TimerTable<E> {
    heap: RefCell<BinaryHeap<Entry<E>>>,
    cap: usize,
    seq: Cell<u64>,
}

impl<E> TimerTable<E> {
    /// An empty table for at most `cap` pending events; allocates nothing until a [`Timer`]
    /// is made for it.
    pub(crate) fn new(cap: usize) -> TimerTable<E> {
        TimerTable { heap: RefCell::new(BinaryHeap::new()), cap, seq: Cell::new(0) }
    }

    /// Allocates the whole table once, so scheduling never allocates.
    pub(crate) fn reserve(&self) {
        let mut h = self.heap.borrow_mut();
        let need = self.cap - h.len();
        h.reserve_exact(need);
    }

    fn push(&self, at: Instant, ev: E) -> Result<(), E> {
        let mut h = self.heap.borrow_mut();
        if h.len() >= self.cap {
            return Err(ev);
        }
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        h.push(Entry { at, seq, ev });
        Ok(())
    }

    /// Takes the earliest event due at `now`, with how late it is. The borrow ends before the
    /// caller runs a handler (which may schedule more).
    #[inline]
    pub(crate) fn pop_due(&self, now: Instant) -> Option<(E, Duration)> {
        let mut h = self.heap.borrow_mut();
        if h.peek()?.at > now {
            return None;
        }
        h.pop().map(|e| (e.ev, now - e.at))
    }

    /// The earliest deadline, if any event is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.borrow().peek().map(|e| e.at)
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.borrow().len()
    }
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
/// [`Context::is_shutting_down`](crate::stage::Context::is_shutting_down). There is no cancel:
/// carry a generation or deadline in the event and ignore stale ones when they arrive.
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
    pub fn after(&self, delay: Duration, event: E) -> Result<(), E> {
        match self.now.get().checked_add(delay) {
            Some(at) => self.table.push(at, event),
            None => Err(event),
        }
    }

    /// Delivers `event` once `deadline` has passed (at once, in the next loop iteration, if it
    /// already has). Hands the event back when the timer table is full.
    pub fn at(&self, deadline: Instant, event: E) -> Result<(), E> {
        self.table.push(deadline, event)
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
        let cap = table.heap.borrow().capacity();
        assert!(cap >= 3);
        for i in 0..3 {
            t.after(Duration::from_secs(1), i).unwrap();
        }
        assert_eq!(t.after(Duration::from_secs(1), 99), Err(99));
        assert_eq!(t.pending(), 3);
        assert_eq!(table.heap.borrow().capacity(), cap, "no growth past the reserved table");
        // Delivering one frees a slot.
        clock.set(t0 + Duration::from_secs(2));
        assert!(table.pop_due(clock.get()).is_some());
        assert_eq!(t.at(t0, 7), Ok(()));
        assert_eq!(table.pop_due(clock.get()), Some((7, Duration::from_secs(2))), "a past deadline is due at once");
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
