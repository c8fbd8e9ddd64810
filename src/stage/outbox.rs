//! An ordered overflow for a [`Sink`]: events the target refused wait, in order, and the
//! ones after them queue behind, instead of being dropped or answered out of turn.

use std::collections::VecDeque;

use super::Sink;

/// A [`Sink`] with an ordered overflow, for a stage whose output must not be lost or
/// reordered when the next stage's queue is momentarily full (a burst of pipelined replies).
///
/// [`Outbox::send`] hands the event to the sink, or, when the sink refuses it or earlier ones
/// are still waiting, keeps it at the back of the overflow and returns `true`: the caller then
/// arranges a [`Outbox::flush`] soon, typically with a zero-delay [`Timer`](super::Timer) event
/// to its own stage (the target's queue has room again once the target's replica has run, in
/// the next loop iteration) or from [`Handler::batch_done`](super::Handler::batch_done).
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
}

impl<E: Send + 'static> Outbox<E> {
    /// An empty outbox in front of `sink`.
    pub fn new(sink: Sink<E>) -> Outbox<E> {
        Outbox { sink, waiting: VecDeque::new() }
    }

    /// Hands `event` to the sink, after any events still waiting (which are offered first).
    /// Returns `true` when it had to wait: schedule a [`Outbox::flush`].
    ///
    /// Hot path: no allocation while nothing waits.
    pub fn send(&mut self, event: E) -> bool {
        if !self.waiting.is_empty() && !self.flush() {
            self.waiting.push_back(event);
            return true;
        }
        match self.sink.try_enqueue(event) {
            Ok(()) => false,
            Err(event) => {
                self.waiting.push_back(event);
                true
            }
        }
    }

    /// Offers the waiting events again, oldest first, until the sink refuses one. Returns
    /// `true` when none is left waiting.
    pub fn flush(&mut self) -> bool {
        while let Some(event) = self.waiting.pop_front() {
            if let Err(event) = self.sink.try_enqueue(event) {
                self.waiting.push_front(event);
                return false;
            }
        }
        true
    }

    /// How many events wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

impl<E> std::fmt::Debug for Outbox<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("sink", &self.sink).field("waiting", &self.waiting.len()).finish()
    }
}
