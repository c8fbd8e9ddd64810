//! An ordered overflow for a [`Sink`]: events the target refused wait, in order, and the
//! ones after them queue behind, instead of being dropped or answered out of turn.

use std::collections::VecDeque;

use super::{Sink, Waker};

/// A [`Sink`] with an ordered overflow, for a stage whose output must not be lost or
/// reordered when the next stage's queue is momentarily full (a burst of pipelined replies).
///
/// [`Outbox::send`] hands the event to the sink, or, when the sink refuses it or earlier ones
/// are still waiting, keeps it at the back of the overflow. The waiting events are offered
/// again by [`Outbox::flush`]. Made [`Outbox::with_waker`] (the owner's own [`Waker`]), the
/// outbox wakes its owner whenever events wait, and the owner's
/// [`Handler::woken`](super::Handler::woken) calls `flush` in the next loop iteration, by when
/// the target's replica has run and has room.
///
/// The overflow is not bounded by the outbox: it holds what its owner produced while the
/// target was full. Bound that upstream (SEDA's way: the owner's own queue, and the
/// connection's flow control, [`ListenConfig::output_limit`](crate::net::ListenConfig::output_limit)).
///
/// Cost: while nothing waits, `send` is one `is_empty` check and the sink's `try_enqueue`; no
/// allocation, no lock. The overflow's storage is allocated the first time an event waits.
///
/// # Examples
///
/// The pattern for a stage that must not lose or reorder its output: send through the outbox,
/// flush it when woken.
///
/// ```no_run
/// use ringstage::prelude::*;
///
/// struct Echo { net: Outbox<NetCmd> }
/// impl Handler for Echo {
///     type Event = NetEvent;
///     fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
///         if let NetEvent::Data { conn, data } = ev {
///             self.net.send(NetCmd::Send { conn, data }); // waits in order if refused
///         }
///     }
///     fn woken(&mut self, _cx: &mut Context<'_>) {
///         self.net.flush();
///     }
/// }
/// let mut b = Runtime::builder(1);
/// let echo = b.stage::<NetEvent>("echo", StageConfig::on([0]));
/// let (net, _) = b.listen(ListenConfig::new("127.0.0.1:7002".parse().unwrap(), [0]), echo);
/// b.handler(echo, move |s| Echo { net: Outbox::with_waker(s.sink(net), s.waker(echo)) });
/// ```
pub struct Outbox<E> {
    sink: Sink<E>,
    waiting: VecDeque<E>,
    waker: Option<Waker>,
}

impl<E: Send + 'static> Outbox<E> {
    /// An outbox in front of `sink` whose owner decides when to flush it.
    pub fn new(sink: Sink<E>) -> Outbox<E> {
        Outbox { sink, waiting: VecDeque::new(), waker: None }
    }

    /// An outbox in front of `sink` that wakes `waker` (its owner's) whenever events wait; the
    /// owner's [`Handler::woken`](super::Handler::woken) then calls [`Outbox::flush`].
    pub fn with_waker(sink: Sink<E>, waker: Waker) -> Outbox<E> {
        Outbox { sink, waiting: VecDeque::new(), waker: Some(waker) }
    }

    /// Hands `event` to the sink, after any events still waiting (which are offered first).
    /// Returns `true` when it had to wait.
    ///
    /// Hot path: no allocation while nothing waits.
    pub fn send(&mut self, event: E) -> bool {
        if self.waiting.is_empty() || self.offer() {
            match self.sink.try_enqueue(event) {
                Ok(()) => return false,
                Err(event) => self.waiting.push_back(event),
            }
        } else {
            self.waiting.push_back(event);
        }
        self.wake();
        true
    }

    /// Offers the waiting events again, oldest first, until the sink refuses one (then wakes
    /// the owner again, if it has a waker). Returns `true` when none is left waiting.
    pub fn flush(&mut self) -> bool {
        let done = self.offer();
        if !done {
            self.wake();
        }
        done
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

    fn wake(&self) {
        if let Some(w) = &self.waker {
            w.wake();
        }
    }
}

impl<E> std::fmt::Debug for Outbox<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("sink", &self.sink).field("waiting", &self.waiting.len()).finish()
    }
}
