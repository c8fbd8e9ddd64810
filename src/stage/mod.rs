//! Stages: a handler, a bounded inbound queue, and the sinks that feed it.
//!
//! A stage is declared once ([`crate::runtime::Builder::stage`]) and placed on one or more
//! workers, its *replicas*. Each replica owns one instance of the handler. Events reach a
//! replica through its queues:
//!
//! - from a stage on the **same worker**: a worker-local ring, no atomics, no cross-core traffic;
//! - from a stage on **another worker**: an SPSC ring per (producer worker, replica);
//! - from **outside the runtime**: an MPSC ring fed by [`Injector`]s;
//! - **later**, from a [`Timer`] on the same worker: the replica's bounded timer table, whose
//!   events reach the handler once their deadline has passed.
//!
//! Every queue is bounded by the stage's capacity. [`Sink::try_enqueue`] hands the event back
//! (`Err(event)`) when the target queue is full: the queue is the stage's admission point and
//! the caller decides what refusal means (an HTTP 503, a RESP `-BUSY`, a retry).

pub(crate) mod injector;
mod outbox;
mod replica;
mod sink;
mod timer;
mod waker;

use std::marker::PhantomData;

pub use injector::Injector;
pub use outbox::Outbox;
pub(crate) use replica::{OnPanic, PanicKey, Replica, ReplicaDyn, StagePanic, NO_KEY};
pub use sink::Sink;
pub(crate) use sink::{LocalQueue, SinkInner};
pub(crate) use timer::TimerTable;
pub use timer::{Timer, TimerKey};
pub use waker::Waker;

use crate::reactor::Reactor;

/// The replicas of a stage taking new events: an elastic stage's mask, or all of them.
pub(crate) fn active_mask(active: &Option<std::sync::Arc<std::sync::atomic::AtomicU64>>) -> u64 {
    active.as_ref().map_or(u64::MAX, |m| m.load(std::sync::atomic::Ordering::Relaxed))
}

/// The first replica of `n` at or after `start` (wrapping) whose bit is set in `mask`; replica
/// 0 when none is (cannot happen: an elastic stage keeps at least one active).
pub(crate) fn next_active(start: usize, n: usize, mask: u64) -> usize {
    (0..n).map(|k| (start + k) % n).find(|&r| mask & (1 << r) != 0).unwrap_or(0)
}

/// An event with the time it was enqueued (µs since the runtime's epoch, wrapping), so the
/// consumer can measure queue wait without a clock read per event on either side.
pub(crate) struct Stamped<E> {
    pub(crate) at: u32,
    pub(crate) ev: E,
}

/// A typed handle to a declared stage. `Copy`; valid for the builder/runtime that made it.
pub struct StageId<E> {
    pub(crate) idx: usize,
    _event: PhantomData<fn(E) -> E>,
}

impl<E> StageId<E> {
    pub(crate) fn new(idx: usize) -> StageId<E> {
        StageId { idx, _event: PhantomData }
    }

    /// The stage's index (declaration order), as used in metrics snapshots.
    pub fn index(&self) -> usize {
        self.idx
    }
}

impl<E> Clone for StageId<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for StageId<E> {}
impl<E> std::fmt::Debug for StageId<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StageId({})", self.idx)
    }
}

/// Where a stage runs and how much it may queue.
#[derive(Clone, Debug)]
pub struct StageConfig {
    pub(crate) workers: Vec<usize>,
    pub(crate) capacity: usize,
    pub(crate) batch: usize,
    pub(crate) overload: Option<crate::control::OverloadConfig>,
    pub(crate) batching: Option<crate::control::BatchConfig>,
    pub(crate) elastic: Option<crate::control::CoreConfig>,
    pub(crate) timers: usize,
    pub(crate) blocking: bool,
}

impl StageConfig {
    /// A stage with one replica on each of `workers`.
    pub fn on(workers: impl IntoIterator<Item = usize>) -> StageConfig {
        StageConfig {
            workers: workers.into_iter().collect(),
            capacity: 1024,
            batch: 64,
            overload: None,
            batching: None,
            elastic: None,
            timers: 1024,
            blocking: false,
        }
    }

    /// The stage's handler may block: a blocking library call (a database driver, DNS), a
    /// CPU-heavy call, file writes. SEDA's thread-pool stage: each replica runs alone on its
    /// worker's thread, so a blocked handler delays nothing but its own queue.
    /// [`Builder::start`](crate::runtime::Builder::start) refuses a blocking stage that shares
    /// a worker with another stage of the application or with a listener. Events reach it and
    /// leave it through the same bounded queues (a full one refuses), and its controllers
    /// (admission control, [`StageConfig::overload`]) apply. Each replica takes one event per
    /// visit (`batch(1)`; a later [`StageConfig::batch`] changes it), so that its queue length
    /// shows the work waiting. Its workers do not spin before sleeping
    /// ([`Builder::spin_before_sleep`](crate::runtime::Builder::spin_before_sleep)) and are
    /// pinned to a CPU only if [`Builder::cpus`](crate::runtime::Builder::cpus) names one for
    /// them: otherwise the scheduler runs them where there is room.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use ringstage::prelude::*;
    ///
    /// let mut b = Runtime::builder(3); // workers 1 and 2: a pool of two blocking threads
    /// let lookups = b.stage::<String>("lookup", StageConfig::on([1, 2]).blocking().capacity(256));
    /// b.handler(lookups, |_| {
    ///     handler_fn(|host: String, _cx: &mut Context<'_>| {
    ///         let _ = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 80)); // blocks
    ///     })
    /// });
    /// ```
    pub fn blocking(mut self) -> StageConfig {
        self.blocking = true;
        self.batch = 1;
        self
    }

    /// Bound of each inbound queue of each replica, rounded up to a power of two (default 1024).
    pub fn capacity(mut self, n: usize) -> StageConfig {
        self.capacity = n.max(1).next_power_of_two();
        self
    }

    /// Adaptive admission control: each replica runs an
    /// [`OverloadController`](crate::control::OverloadController) fed with its events' response
    /// times (queue wait + service), and sinks on the same worker consult it before enqueueing
    /// (see [`Sink::try_enqueue_class`]). Producers on other workers are bounded by the queue
    /// capacity only.
    pub fn overload(mut self, cfg: crate::control::OverloadConfig) -> StageConfig {
        self.overload = Some(cfg);
        self
    }

    /// Adaptive batching: each replica's batch size follows its measured output rate (see
    /// [`BatchController`](crate::control::BatchController)); starts at `cfg.initial`.
    pub fn adaptive_batch(mut self, cfg: crate::control::BatchConfig) -> StageConfig {
        self.batch = cfg.initial.max(1);
        self.batching = Some(cfg);
        self
    }

    /// Elastic placement: of the replicas on the listed workers, only `cfg.min` take new events
    /// at first; a [`CoreController`](crate::control::CoreController) on the first replica's
    /// worker adds replicas (cores) while the backlog stays above `cfg.threshold` and removes
    /// them when the stage idles. A router, if any, still decides on its own.
    pub fn elastic(mut self, cfg: crate::control::CoreConfig) -> StageConfig {
        self.elastic = Some(cfg);
        self
    }

    /// Most events that may wait in each replica's timer table at once (default 1024; see
    /// [`Timer`]). The table is allocated only when a [`Timer`] is made for the replica.
    pub fn timers(mut self, n: usize) -> StageConfig {
        self.timers = n;
        self
    }

    /// Most events a replica handles per visit of its worker's loop (default 64).
    pub fn batch(mut self, n: usize) -> StageConfig {
        self.batch = n.clamp(1, 1 << 20);
        self
    }
}

/// What a handler can reach while it runs: which worker runs it, and that worker's loop
/// clock. I/O is asked of the network and file stages with commands ([`NetCmd`],
/// [`FsCmd`]), whose results come back as events.
///
/// [`NetCmd`]: crate::net::NetCmd
/// [`FsCmd`]: crate::fs::FsCmd
pub struct Context<'a> {
    pub(crate) reactor: &'a mut Reactor,
}

impl Context<'_> {
    /// Index of the worker running the handler.
    pub fn worker(&self) -> usize {
        self.reactor.worker
    }

    /// The time at the start of this loop iteration (one clock read per iteration).
    pub fn now(&self) -> std::time::Instant {
        self.reactor.now
    }

    /// Whether the runtime was asked to shut down (it then drains: no new connections or reads,
    /// queued work finishes). True from the moment shutdown is asked, even within the loop
    /// iteration in progress: a response made now can already say it is the last.
    pub fn is_shutting_down(&self) -> bool {
        self.reactor.stopping()
    }

    /// The worker's ring, for the built-in stages' drivers.
    pub(crate) fn reactor(&mut self) -> &mut Reactor {
        self.reactor
    }
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("worker", &self.reactor.worker).finish()
    }
}

/// What a panic in a handler does (see [`Builder::panic_policy`]).
///
/// [`Builder::panic_policy`]: crate::runtime::Builder::panic_policy
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PanicPolicy {
    /// The panic is caught: the event is dropped, the stage's `panics` counter counts it, and
    /// the connection the event came from (a network event's, or what
    /// a [`ConnEvent`](crate::net::ConnEvent)'s) is aborted; the rest of
    /// the batch, the other connections and the other stages go on. The handler keeps the
    /// state the panic left it in: where a half-done update must not be served, use `Fatal`.
    #[default]
    Isolate,
    /// The panic stops the runtime: its worker fails, the others stop at once, and
    /// [`Runtime::run_until_signal`](crate::runtime::Runtime::run_until_signal) returns
    /// [`Error::Panicked`](crate::Error::Panicked) with the message, for the process to exit
    /// non-zero.
    Fatal,
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>().copied().or(p.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)")
}

/// A stage's code. One instance runs per replica, on that replica's worker only, so a handler
/// needs no locks and need not be `Send`.
///
/// # Examples
///
/// A line counter: it keeps per-connection state in a [`ConnMap`](crate::net::ConnMap),
/// answers each `Data` with the running count, and keeps what the network stage refuses in an
/// [`Outbox`] that its [`woken`](Handler::woken) hook flushes.
///
/// ```no_run
/// use ringstage::prelude::*;
///
/// struct Lines { seen: ConnMap<u64>, net: Outbox<NetCmd> }
///
/// impl Handler for Lines {
///     type Event = NetEvent;
///     fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
///         match ev {
///             NetEvent::Opened { conn, .. } => { self.seen.insert(conn, 0); }
///             NetEvent::Data { conn, data } => {
///                 let Some(n) = self.seen.get_mut(conn) else { return };
///                 *n += data.iter().filter(|&&b| b == b'\n').count() as u64;
///                 let reply = IoBuf::from(format!("{n}\n").into_bytes());
///                 self.net.send(NetCmd::Send { conn, data: reply });
///             }
///             NetEvent::Eof { conn } => { self.net.send(NetCmd::Close { conn }); }
///             NetEvent::Closed { conn, .. } => { self.seen.remove(conn); }
///             _ => {}
///         }
///     }
///     fn woken(&mut self, _cx: &mut Context<'_>) {
///         self.net.flush();
///     }
/// }
///
/// let mut b = Runtime::builder(1);
/// let lines = b.stage::<NetEvent>("lines", StageConfig::on([0]));
/// let (net, _) = b.listen(ListenConfig::new("127.0.0.1:7001".parse().unwrap(), [0]), lines);
/// b.handler(lines, move |s| Lines {
///     seen: ConnMap::new(),
///     net: Outbox::with_waker(s.sink(net), s.waker(lines)),
/// });
/// b.start()?.run_until_signal()?;
/// # Ok::<(), ringstage::Error>(())
/// ```
pub trait Handler: 'static {
    /// The events this stage consumes.
    type Event: Send + 'static;

    /// Handles one event. Runs on the worker's thread; must not block.
    fn handle(&mut self, event: Self::Event, cx: &mut Context<'_>);

    /// Called after each non-empty batch of `n` events: the place for per-batch work such as
    /// flushing output gathered over the batch. Does nothing by default.
    fn batch_done(&mut self, _n: usize, _cx: &mut Context<'_>) {}

    /// Called about once per runtime tick (see [`crate::runtime::Builder::tick`]), for
    /// deadlines and housekeeping. Does nothing by default.
    fn tick(&mut self, _cx: &mut Context<'_>) {}

    /// Called at the start of the replica's next visit after its [`Waker`] was woken (see
    /// [`crate::runtime::Setup::waker`]): the place to retry work a full queue refused. Does
    /// nothing by default.
    fn woken(&mut self, _cx: &mut Context<'_>) {}
}

/// A [`Handler`] made from a closure; see [`handler_fn`].
pub struct FnHandler<E, F> {
    f: F,
    _event: PhantomData<fn(E)>,
}

/// Wraps `f` as a handler of `E` events.
pub fn handler_fn<E, F>(f: F) -> FnHandler<E, F>
where
    E: Send + 'static,
    F: FnMut(E, &mut Context<'_>) + 'static,
{
    FnHandler { f, _event: PhantomData }
}

impl<E: Send + 'static, F: FnMut(E, &mut Context<'_>) + 'static> Handler for FnHandler<E, F> {
    type Event = E;
    fn handle(&mut self, event: E, cx: &mut Context<'_>) {
        (self.f)(event, cx)
    }
}

impl<E, F> std::fmt::Debug for FnHandler<E, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnHandler")
    }
}
