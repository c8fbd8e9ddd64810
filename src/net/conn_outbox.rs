//! [`ConnOutbox`]: an [`Outbox`] kept bounded by the connections that feed it.

use super::{Conn, ConnEvent, NetCmd};
use crate::stage::{Outbox, Sink, Waker};

/// An [`Outbox`] for events that come from connections, bounded by flow control: while more
/// than `limit` events wait, the connections whose events arrive are paused
/// ([`NetCmd::PauseReads`]: their data waits in TCP, whose window closes), and once the wait
/// is down to half they are resumed. A stage that forwards its connections' requests to a
/// slower one gets back-pressure end to end without writing any pause/resume bookkeeping.
///
/// The pause is the connection's one handler pause flag, the one `PauseReads` /
/// `ResumeReads` set: do not pause the same connections by hand as well.
///
/// Cost: as [`Outbox::send`] while nothing waits (one check and the sink's `try_enqueue`); a
/// pause or resume is one command to the network stage.
///
/// # Examples
///
/// ```no_run
/// use ringstage::net::ConnOutbox;
/// use ringstage::prelude::*;
///
/// struct Front { work: ConnOutbox<NetEvent> }
/// impl Handler for Front {
///     type Event = NetEvent;
///     fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
///         self.work.send(ev); // past 256 waiting, its connection stops being read
///     }
///     fn woken(&mut self, _cx: &mut Context<'_>) {
///         self.work.flush();
///     }
/// }
/// let mut b = Runtime::builder(2);
/// let front = b.stage::<NetEvent>("front", StageConfig::on([0]));
/// let work = b.stage::<NetEvent>("work", StageConfig::on([1]).capacity(64));
/// let (net, _) = b.listen(ListenConfig::new("127.0.0.1:7003".parse().unwrap(), [0]), front);
/// b.handler(front, move |s| Front {
///     work: ConnOutbox::new(s.sink(work), s.sink(net), s.waker(front), 256),
/// });
/// # b.handler(work, |_| handler_fn(|_: NetEvent, _: &mut Context<'_>| {}));
/// ```
pub struct ConnOutbox<E> {
    out: Outbox<E>,
    /// Pause and resume commands, in order, behind any the network stage refused.
    net: Outbox<NetCmd>,
    limit: usize,
    /// Connections this outbox paused.
    paused: Vec<Conn>,
}

impl<E: ConnEvent + Send + 'static> ConnOutbox<E> {
    /// An outbox in front of `sink` that wakes `waker` (its owner's) while events wait, and
    /// pauses through `net` the connections feeding it while more than `limit` wait.
    pub fn new(sink: Sink<E>, net: Sink<NetCmd>, waker: Waker, limit: usize) -> ConnOutbox<E> {
        ConnOutbox {
            out: Outbox::with_waker(sink, waker.clone()),
            net: Outbox::with_waker(net, waker),
            limit: limit.max(1),
            paused: Vec::new(),
        }
    }

    /// Hands `event` to the sink, or keeps it, in order (see [`Outbox::send`]); past the limit,
    /// pauses the connection it came from. Returns `true` when it had to wait.
    ///
    /// Hot path: no allocation while nothing waits.
    pub fn send(&mut self, event: E) -> bool {
        let conn = event.conn();
        let waited = self.out.send(event);
        if waited && self.out.len() > self.limit {
            if let Some(c) = conn.filter(|c| !self.paused.contains(c)) {
                self.paused.push(c);
                self.net.send(NetCmd::PauseReads { conn: c });
            }
        }
        waited
    }

    /// Offers the waiting events again (see [`Outbox::flush`]); once at most half the limit
    /// waits, resumes the connections it paused. Returns `true` when nothing is left waiting.
    pub fn flush(&mut self) -> bool {
        let done = self.out.flush();
        if self.out.len() <= self.limit / 2 {
            for conn in self.paused.drain(..) {
                self.net.send(NetCmd::ResumeReads { conn });
            }
        }
        self.net.flush() && done
    }

    /// How many events wait.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// The connections paused now.
    pub fn paused(&self) -> &[Conn] {
        &self.paused
    }
}

impl<E> std::fmt::Debug for ConnOutbox<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnOutbox").field("limit", &self.limit).field("paused", &self.paused.len()).finish()
    }
}
