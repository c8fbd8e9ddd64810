//! An ordered overflow for a [`Sink`]: events the target refused wait, in order, and the
//! ones after them queue behind, instead of being dropped or answered out of turn.

use std::collections::VecDeque;
use std::time::Duration;

use super::{Sink, Timer};

/// A [`Sink`] with an ordered overflow, for a stage whose output must not be lost or
/// reordered when the next stage's queue is momentarily full (a burst of pipelined replies).
///
/// [`Outbox::send`] hands the event to the sink, or, when the sink refuses it or earlier ones
/// are still waiting, keeps it at the back of the overflow. The waiting events are offered
/// again by [`Outbox::flush`]. Made [`Outbox::with_retry`], the outbox schedules that itself:
/// a zero-delay event on the owner's [`Timer`], delivered the next loop iteration (by then the
/// target's replica has run and has room), on which the owner calls [`Outbox::retry`].
///
/// The overflow is not bounded by the outbox: it holds what its owner produced while the
/// target was full. Bound that upstream (SEDA's way: the owner's own queue, and the
/// connection's flow control, [`ListenConfig::output_limit`](crate::net::ListenConfig::output_limit)).
///
/// Cost: while nothing waits, `send` is one `is_empty` check and the sink's `try_enqueue`; no
/// allocation, no lock. The overflow's storage is allocated the first time an event waits.
pub struct Outbox<E> {
    sink: Sink<E>,
    waiting: VecDeque<E>,
    /// Schedules the owner's retry event; returns whether the timer took it.
    schedule: Option<Box<dyn FnMut() -> bool>>,
    /// A retry event is scheduled and not yet handled.
    due: bool,
}

impl<E: Send + 'static> Outbox<E> {
    /// An outbox in front of `sink` whose owner flushes it itself.
    pub fn new(sink: Sink<E>) -> Outbox<E> {
        Outbox { sink, waiting: VecDeque::new(), schedule: None, due: false }
    }

    /// An outbox in front of `sink` that, whenever events wait, schedules `wake()` on `timer`
    /// (the owner's own stage) for the next loop iteration; the owner's handler answers that
    /// event with [`Outbox::retry`]. Should the timer table be full, the next `send`, `flush`
    /// or `retry` schedules it again; a `flush` from [`Handler::batch_done`](super::Handler::batch_done)
    /// covers that case.
    pub fn with_retry<W: Send + 'static>(sink: Sink<E>, timer: Timer<W>, wake: fn() -> W) -> Outbox<E> {
        let schedule = Box::new(move || timer.after(Duration::ZERO, wake()).is_ok());
        Outbox { sink, waiting: VecDeque::new(), schedule: Some(schedule), due: false }
    }

    /// Hands `event` to the sink, after any events still waiting (which are offered first).
    /// Returns `true` when it had to wait.
    ///
    /// Hot path: no allocation while nothing waits.
    pub fn send(&mut self, event: E) -> bool {
        let refused = if self.waiting.is_empty() || self.offer() {
            match self.sink.try_enqueue(event) {
                Ok(()) => return false,
                Err(event) => event,
            }
        } else {
            event
        };
        self.waiting.push_back(refused);
        self.schedule();
        true
    }

    /// Offers the waiting events again, oldest first, until the sink refuses one. Returns
    /// `true` when none is left waiting.
    pub fn flush(&mut self) -> bool {
        let done = self.offer();
        if !done {
            self.schedule();
        }
        done
    }

    /// The retry event scheduled by an outbox made [`Outbox::with_retry`] arrived: flushes
    /// (and schedules another if events still wait). Returns `true` when none is left waiting.
    pub fn retry(&mut self) -> bool {
        self.due = false;
        self.flush()
    }

    /// How many events wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn offer(&mut self) -> bool {
        while let Some(event) = self.waiting.pop_front() {
            if let Err(event) = self.sink.try_enqueue(event) {
                self.waiting.push_front(event);
                return false;
            }
        }
        true
    }

    fn schedule(&mut self) {
        if let (false, Some(schedule)) = (self.due, self.schedule.as_mut()) {
            self.due = schedule();
        }
    }
}

impl<E> std::fmt::Debug for Outbox<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("sink", &self.sink)
            .field("waiting", &self.waiting.len())
            .field("retry_due", &self.due)
            .finish()
    }
}
