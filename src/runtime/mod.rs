//! Pinned workers, the stage graph builder, and shutdown.
//!
//! ```no_run
//! use ringstage::prelude::*;
//!
//! let mut b = Runtime::builder(2);
//! let echo = b.stage::<NetEvent>("echo", StageConfig::on([1]));
//! let (net, _listener) = b.listen(ListenConfig::new("127.0.0.1:7000".parse().unwrap(), [0]), echo);
//! b.handler(echo, move |s| {
//!     let net = s.sink(net);
//!     handler_fn(move |ev: NetEvent, _cx: &mut Context<'_>| {
//!         if let NetEvent::Data { conn, data } = ev {
//!             let _ = net.try_enqueue(NetCmd::Send { conn, data }); // same buffer, no copy
//!         }
//!     })
//! });
//! let rt = b.start().unwrap();
//! rt.join().unwrap();
//! ```

pub(crate) mod io;
mod plumbing;
mod worker;

use std::any::Any;
use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringstage_sys::Doorbell;
pub use ringstage_sys::RingConfig;

use crate::metrics::{AppCounter, CounterId, Snapshot, WorkerCounters};
use crate::net::{ConnectConfig, ConnectorId, ListenConfig, ListenerId, NetCmd, NetEvent, NetStage};
use crate::stage::injector::{InjectCounters, InjectTarget};
use crate::stage::{Handler, Injector, LocalQueue, Sink, SinkInner, StageConfig, StageId, Stamped};
use plumbing::{Plumbing, TypedPlumbing, WorkerParts};
pub(crate) use worker::ReplicaDyn;

/// The network stage's queue per worker, and its batch (see `Builder::net_stage`).
const NET_CAPACITY: usize = 4096;

type Factory = Arc<dyn Fn(&mut Setup<'_>) -> Box<dyn ReplicaDyn> + Send + Sync>;

struct Decl {
    name: String,
    cfg: StageConfig,
    plumbing: Option<Box<dyn Plumbing>>,
    factory: Option<Factory>,
}

struct ListenDecl {
    cfg: Arc<ListenConfig>,
    deliver: usize,
}

struct ConnectorDecl {
    cfg: Arc<ListenConfig>,
    timeout: Duration,
    deliver: usize,
}

/// What every worker knows about a stage.
#[derive(Clone, Debug)]
pub(crate) struct StageMeta {
    pub(crate) name: String,
    pub(crate) cfg: StageConfig,
    /// Elastic stages: bit `r` set while replica `r` takes new events.
    pub(crate) active: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Stages with admission control: per replica, the gate its producers draw from (on any
    /// worker) and its controller steers.
    pub(crate) gates: Option<Arc<[Arc<crate::control::Gate>]>>,
}

/// Declares stages, their placement and listeners, then starts the workers.
pub struct Builder {
    workers: usize,
    cpus: Option<Vec<usize>>,
    ring: RingConfig,
    pool_buffers: u16,
    buf_size: usize,
    tick: Duration,
    spin: Duration,
    drain_timeout: Duration,
    file_timeout: Option<Duration>,
    signals: bool,
    decls: Vec<Decl>,
    listeners: Vec<ListenDecl>,
    connectors: Vec<ConnectorDecl>,
    net: Option<StageId<NetCmd>>,
    net_capacity: usize,
    /// The application's counters: name (labels included) and help text.
    app_counters: Vec<(String, String)>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").field("workers", &self.workers).field("stages", &self.decls.len()).finish()
    }
}

impl Builder {
    /// Pin worker `i` to CPU `cpus[i]` (by default worker `i` runs on CPU `i` modulo the CPUs
    /// this process may use). An empty list disables pinning.
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.cpus = Some(cpus.into_iter().collect());
        self
    }

    /// Capacity of the network stage's queue on each worker, in commands (default 4096; rounded
    /// up to a power of two). The network stage takes its whole queue each loop iteration, so
    /// this bounds what the other stages of a worker may send it per iteration; a command it
    /// refuses comes back to the sender (`Err(cmd)`), which keeps it (an
    /// [`Outbox`](crate::stage::Outbox)) or sheds it.
    pub fn net_capacity(mut self, n: usize) -> Self {
        let cap = n.max(1).next_power_of_two();
        self.net_capacity = cap;
        if let Some(id) = self.net {
            // Already declared (by a listen or connect): resize its queues.
            let d = &mut self.decls[id.idx];
            d.cfg = d.cfg.clone().capacity(cap).batch(cap);
            let route = Some(NetCmd::route as fn(&NetCmd) -> usize);
            d.plumbing = Some(Box::new(TypedPlumbing::<NetCmd>::new(self.workers, &d.cfg.workers, cap, route)));
        }
        self
    }

    /// Ring setup per worker (entries, DEFER_TASKRUN).
    pub fn ring(mut self, cfg: RingConfig) -> Self {
        self.ring = cfg;
        self
    }

    /// Receive buffers per worker (a power of two, default 2048) of `size` bytes (default
    /// 4096). Untouched buffers cost no resident memory.
    pub fn buffers(mut self, count: u16, size: usize) -> Self {
        self.pool_buffers = count;
        self.buf_size = size;
        self
    }

    /// Longest a sleeping worker waits before re-checking timers (default 50 ms).
    pub fn tick(mut self, d: Duration) -> Self {
        self.tick = d.max(Duration::from_millis(1));
        self
    }

    /// Before a worker that ran out of work sleeps in the kernel, it polls for new work for up
    /// to `d` (default zero: it sleeps at once). Latency against CPU: work arriving during the
    /// spin is taken without a sleep and a wake-up, which on a loaded server cost both sides a
    /// context switch (in a VM, an inter-processor interrupt too); the spin itself is CPU time
    /// spent waiting, counted in `ringstage_worker_spin_seconds_total` (the spins, and those
    /// that found work, in `ringstage_worker_spins_total` and `_spin_hits_total`). It pays
    /// where a server idles between its clients' requests; a server already near saturation
    /// only gets smaller batches from it.
    ///
    /// The spin backs off on its own: after 4 spins in a row that found nothing, the worker
    /// sleeps at once until a sleep is again ended by work within `d` (a tick or a timer does
    /// not count), so an idle server sleeps. It ends early for a timer due sooner. Seastar
    /// polls 200 µs by default; 10-50 µs catches the gaps of a busy closed-loop client on
    /// loopback.
    pub fn spin_before_sleep(mut self, d: Duration) -> Self {
        self.spin = d;
        self
    }

    /// How long shutdown waits for in-flight work before closing anyway (default 5 s).
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// Time limit of each file operation of [`crate::fs`] (open, stat, read), enforced in the
    /// kernel by a linked timeout (`IORING_OP_LINK_TIMEOUT`): an operation stuck on a hung
    /// network or FUSE file system, or on a FIFO, is cancelled and its callback gets an
    /// `io::ErrorKind::TimedOut` error. Default 30 s; `None` for no limit.
    pub fn file_timeout(mut self, d: Option<Duration>) -> Self {
        self.file_timeout = d;
        self
    }

    /// Block SIGINT/SIGTERM in the calling thread and every worker, so that
    /// [`Runtime::wait_for_signal`] can take them. Call `start` from the main thread before
    /// spawning other threads.
    pub fn signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Declares an application counter, exposed with the runtime's metrics
    /// ([`Snapshot::app`](crate::metrics::Snapshot::app) and the Prometheus text). `name` is a
    /// Prometheus metric name, optionally with labels: counters that differ only in their labels
    /// are one metric (`http_responses_total{class="2xx"}`, `http_responses_total{class="5xx"}`),
    /// exposed together with the first one's help text.
    /// Handlers get their worker's slot with [`Setup::counter`]. A malformed or repeated name
    /// fails [`Builder::start`].
    pub fn counter(&mut self, name: &str, help: &str) -> CounterId {
        self.app_counters.push((name.to_string(), help.replace(['\n', '\r'], " ")));
        CounterId(self.app_counters.len() - 1)
    }

    /// Declares a stage consuming `E` events, placed per `cfg`. Give it code with
    /// [`Builder::handler`] before `start`.
    pub fn stage<E: Send + 'static>(&mut self, name: &str, cfg: StageConfig) -> StageId<E> {
        self.declare(name, cfg, None)
    }

    /// Like [`Builder::stage`], with a router: `route(&event)` names the worker whose replica
    /// gets the event (events for a worker without a replica are refused).
    pub fn stage_routed<E: Send + 'static>(
        &mut self,
        name: &str,
        cfg: StageConfig,
        route: fn(&E) -> usize,
    ) -> StageId<E> {
        self.declare(name, cfg, Some(route))
    }

    fn declare<E: Send + 'static>(
        &mut self,
        name: &str,
        cfg: StageConfig,
        route: Option<fn(&E) -> usize>,
    ) -> StageId<E> {
        let plumbing = TypedPlumbing::<E>::new(self.workers, &cfg.workers, cfg.capacity, route);
        self.decls.push(Decl { name: name.to_string(), cfg, plumbing: Some(Box::new(plumbing)), factory: None });
        StageId::new(self.decls.len() - 1)
    }

    /// Sets the code of stage `id`: `make` runs once per replica, on that replica's worker,
    /// and may take sinks to other stages from the [`Setup`].
    pub fn handler<H, F>(&mut self, id: StageId<H::Event>, make: F)
    where
        H: Handler,
        F: Fn(&mut Setup<'_>) -> H + Send + Sync + 'static,
    {
        let idx = id.idx;
        let factory: Factory = Arc::new(move |s: &mut Setup<'_>| {
            let handler = make(s);
            let (remote, inject) = s.take_consumer::<H::Event>(idx);
            let local = s.local::<H::Event>(idx);
            let timers = s.timer_table::<H::Event>(idx);
            let woken = s.waker_flag(idx);
            let batch = s.meta[idx].cfg.batch;
            let admission = s.controller(idx);
            let batcher = s.meta[idx].cfg.batching.clone().map(crate::control::BatchController::new);
            Box::new(worker::Replica {
                stage: idx,
                handler,
                local,
                timers,
                woken,
                remote,
                inject,
                batch,
                next: 0,
                counters: s.counters.clone(),
                admission,
                last_service_us: 0,
                batcher,
            }) as Box<dyn ReplicaDyn>
        });
        self.decls[idx].factory = Some(factory);
    }

    /// Adds a listener whose connections' events go to stage `deliver`. Returns the network
    /// stage (to send [`NetCmd`]s to; one per runtime, with a replica on every worker) and the
    /// listener's id.
    pub fn listen(&mut self, cfg: ListenConfig, deliver: StageId<NetEvent>) -> (StageId<NetCmd>, ListenerId) {
        let net = self.net_stage();
        self.listeners.push(ListenDecl { cfg: Arc::new(cfg), deliver: deliver.idx });
        (net, ListenerId(self.listeners.len() - 1))
    }

    /// Adds a connector: [`NetCmd::Connect`] with its id opens an outbound TCP connection on
    /// any worker, whose events ([`NetEvent::Connected`], then `Data` and `Closed`, or
    /// [`NetEvent::ConnectFailed`]) go to stage `deliver`. Returns the network stage (as
    /// [`Builder::listen`] does) and the connector's id.
    pub fn connector(&mut self, cfg: ConnectConfig, deliver: StageId<NetEvent>) -> (StageId<NetCmd>, ConnectorId) {
        let net = self.net_stage();
        self.connectors.push(ConnectorDecl { cfg: Arc::new(cfg.conn), timeout: cfg.timeout, deliver: deliver.idx });
        (net, ConnectorId(self.connectors.len() - 1))
    }

    /// The network I/O stage, declared on first use: a replica on every worker. It takes its
    /// whole queue each visit: its commands are cheap (each queues output, the sends go out
    /// gathered at the end of the batch), and it is where every other stage's work ends, so a
    /// smaller batch would let a stage that sends more than one command per event (a head and
    /// a file; a reply per pipelined request) fill its queue and have it refuse.
    fn net_stage(&mut self) -> StageId<NetCmd> {
        if let Some(n) = self.net {
            return n;
        }
        let cap = self.net_capacity;
        let cfg = StageConfig::on(0..self.workers).capacity(cap).batch(cap);
        let n = self.stage_routed::<NetCmd>("net", cfg, NetCmd::route);
        self.handler(n, |_| NetStage);
        self.net = Some(n);
        n
    }

    fn validate(&self) -> std::io::Result<()> {
        let bad = |m: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
        if self.workers == 0 || self.workers > 64 {
            return bad(format!("workers must be 1..=64, got {}", self.workers));
        }
        for d in &self.decls {
            if d.factory.is_none() {
                return bad(format!("stage '{}' has no handler", d.name));
            }
            if d.cfg.workers.is_empty() || d.cfg.workers.iter().any(|&w| w >= self.workers) {
                return bad(format!("stage '{}' placed on workers {:?} of {}", d.name, d.cfg.workers, self.workers));
            }
            let mut w = d.cfg.workers.clone();
            w.sort_unstable();
            w.dedup();
            if w.len() != d.cfg.workers.len() {
                return bad(format!("stage '{}' has two replicas on one worker", d.name));
            }
        }
        for (i, (name, _)) in self.app_counters.iter().enumerate() {
            if !crate::metrics::valid_name(name) {
                return bad(format!("counter name {name:?} is not a Prometheus metric name (with optional labels)"));
            }
            if self.app_counters[..i].iter().any(|(n, _)| n == name) {
                return bad(format!("counter {name:?} declared twice"));
            }
        }
        for l in &self.listeners {
            if l.cfg.workers.is_empty() || l.cfg.workers.iter().any(|&w| w >= self.workers) {
                return bad(format!(
                    "listener {} placed on workers {:?} of {}",
                    l.cfg.addr, l.cfg.workers, self.workers
                ));
            }
        }
        Ok(())
    }

    /// Creates the sockets, spawns and pins the workers, sets up one ring per worker, and runs.
    /// Returns once every worker is ready, or the first setup error (e.g. io_uring refused).
    pub fn start(mut self) -> std::io::Result<Runtime> {
        self.validate()?;
        let bells: Vec<Arc<Doorbell>> =
            (0..self.workers).map(|_| Doorbell::new().map(Arc::new)).collect::<Result<_, _>>()?;

        // Listening sockets, bound here so that errors (EADDRINUSE) surface synchronously.
        let mut per_worker_endpoints: Vec<Vec<worker::EndpointPlan>> = (0..self.workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for (id, l) in self.listeners.iter().enumerate() {
            let in_use = |addr, e: std::io::Error| std::io::Error::new(e.kind(), format!("listen on {addr}: {e}"));
            // Bind exclusively first, so that an address held by another process (even one using
            // SO_REUSEPORT) is an error rather than a silent split of the incoming connections.
            let first =
                ringstage_sys::socket::listen(l.cfg.addr, l.cfg.backlog, false).map_err(|e| in_use(l.cfg.addr, e))?;
            let addr = ringstage_sys::socket::local_addr(first.as_raw_fd())?;
            let nodelay = |fd: &OwnedFd| -> std::io::Result<()> {
                // Accepted sockets inherit it from the listener: no setsockopt per connection.
                if l.cfg.nodelay {
                    ringstage_sys::socket::set_nodelay(fd.as_raw_fd())?;
                }
                Ok(())
            };
            nodelay(&first)?;
            if let [w] = l.cfg.workers[..] {
                per_worker_endpoints[w].push(worker::EndpointPlan {
                    id,
                    fd: Some(first),
                    cfg: l.cfg.clone(),
                    deliver: l.deliver,
                    connect_timeout: None,
                });
            } else {
                // Several workers: one SO_REUSEPORT socket each, on the port just proven free.
                drop(first);
                for &w in &l.cfg.workers {
                    let fd = ringstage_sys::socket::listen(addr, l.cfg.backlog, true).map_err(|e| in_use(addr, e))?;
                    nodelay(&fd)?;
                    per_worker_endpoints[w].push(worker::EndpointPlan {
                        id,
                        fd: Some(fd),
                        cfg: l.cfg.clone(),
                        deliver: l.deliver,
                        connect_timeout: None,
                    });
                }
            }
            addrs.push(addr);
        }
        // Connectors: on every worker, after its listeners, in id order.
        for (id, c) in self.connectors.iter().enumerate() {
            for plans in &mut per_worker_endpoints {
                plans.push(worker::EndpointPlan {
                    id,
                    fd: None,
                    cfg: c.cfg.clone(),
                    deliver: c.deliver,
                    connect_timeout: Some(c.timeout),
                });
            }
        }

        let meta: Arc<Vec<StageMeta>> = Arc::new(
            self.decls
                .iter()
                .map(|d| StageMeta {
                    name: d.name.clone(),
                    cfg: d.cfg.clone(),
                    active: d.cfg.elastic.as_ref().map(|c| {
                        let on = c.min.clamp(1, d.cfg.workers.len());
                        Arc::new(std::sync::atomic::AtomicU64::new((1u64 << on) - 1))
                    }),
                    gates: d.cfg.overload.as_ref().map(|o| {
                        let gate = || Arc::new(crate::control::OverloadController::gate_for(o));
                        d.cfg.workers.iter().map(|_| gate()).collect()
                    }),
                })
                .collect(),
        );
        let mut parts: Vec<Vec<Option<Box<dyn Any + Send>>>> =
            (0..self.workers).map(|_| (0..self.decls.len()).map(|_| None).collect()).collect();
        let mut inject_targets = Vec::new();
        for (s, d) in self.decls.iter_mut().enumerate() {
            let plumbing = d.plumbing.take().expect("plumbing split once");
            let (per_worker, targets) = plumbing.split(&bells);
            for (w, p) in per_worker.into_iter().enumerate() {
                parts[w][s] = Some(p);
            }
            inject_targets.push(targets);
        }
        let factories: Arc<Vec<Factory>> =
            Arc::new(self.decls.iter().map(|d| d.factory.clone().expect("validated")).collect());
        let counters: Vec<Arc<WorkerCounters>> = (0..self.workers)
            .map(|_| Arc::new(WorkerCounters::new(self.decls.len(), self.app_counters.len())))
            .collect();
        let shared = Arc::new(Shared {
            shutdown: Arc::new(AtomicBool::new(false)),
            abort: AtomicBool::new(false),
            failure: std::sync::Mutex::new(None),
            supervisor: Doorbell::new()?,
            bells: bells.clone(),
            counters: counters.clone(),
            inject: (0..self.decls.len()).map(|_| Arc::new(InjectCounters::default())).collect(),
            meta: meta.clone(),
            drain_timeout: self.drain_timeout,
            epoch: std::time::Instant::now(),
            app: std::mem::take(&mut self.app_counters),
        });

        let signals = if self.signals {
            let set = ringstage_sys::signal::block(&[libc::SIGINT, libc::SIGTERM])?;
            Some(ringstage_sys::signal::SignalFd::new(&set)?)
        } else {
            None
        };
        let ncpu = ringstage_sys::cpu::available();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for (w, (parts, endpoints)) in parts.into_iter().zip(per_worker_endpoints).enumerate() {
            let cpu = match &self.cpus {
                Some(c) if c.is_empty() => None,
                Some(c) => Some(c[w % c.len()]),
                None => Some(w % ncpu),
            };
            let plan = worker::Plan {
                id: w,
                cpu,
                ring: self.ring.clone(),
                pool: (self.pool_buffers, self.buf_size),
                tick: self.tick,
                spin: self.spin,
                file_timeout: self.file_timeout,
                meta: meta.clone(),
                factories: factories.clone(),
                parts,
                endpoints,
                shared: shared.clone(),
            };
            let tx = ready_tx.clone();
            let t = std::thread::Builder::new().name(format!("rs-worker-{w}")).spawn(move || worker::main(plan, tx))?;
            threads.push(t);
        }
        drop(ready_tx);
        let mut first_err = None;
        for _ in 0..self.workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(std::io::Error::other("a worker died during setup"));
                }
            }
        }
        let rt = Runtime { threads, shared, inject_targets, addrs, signals };
        if let Some(e) = first_err {
            rt.shutdown();
            let _ = rt.join();
            return Err(e);
        }
        Ok(rt)
    }
}

/// State shared by all workers and the runtime handle.
pub(crate) struct Shared {
    /// Set when shutdown is asked; workers see it at their next loop iteration, handlers at once
    /// ([`Context::is_shutting_down`](crate::stage::Context::is_shutting_down)).
    pub(crate) shutdown: Arc<AtomicBool>,
    /// Set when a worker failed: the others stop at once, without draining (their work may
    /// wait for the dead one forever).
    pub(crate) abort: AtomicBool,
    /// The first worker failure: the worker and what stopped it.
    failure: std::sync::Mutex<Option<(usize, String, std::io::ErrorKind)>>,
    /// Rung when a worker fails, for [`Runtime::wait_for_signal`].
    supervisor: Doorbell,
    pub(crate) bells: Vec<Arc<Doorbell>>,
    pub(crate) counters: Vec<Arc<WorkerCounters>>,
    inject: Vec<Arc<InjectCounters>>,
    /// The stages, as every worker sees them (names, configuration, active-replica masks).
    meta: Arc<Vec<StageMeta>>,
    pub(crate) drain_timeout: Duration,
    /// Origin of the µs stamps on queued events.
    pub(crate) epoch: std::time::Instant,
    /// The application's counters (`Builder::counter`).
    app: Vec<(String, String)>,
}

impl Shared {
    /// Whether no event is queued or being handled and no I/O that could produce one is in
    /// flight, anywhere. All counters are monotone and every "finished" count is incremented
    /// after the "started" count it matches (and after the events its work produced were
    /// counted as enqueued), so reading all finished counts before all started counts and
    /// finding them equal proves a moment of global quiescence; with accepts and reads
    /// stopped, nothing can start new work after it.
    pub(crate) fn quiescent(&self) -> bool {
        let (mut fin, mut done) = (0u64, 0u64);
        for c in &self.counters {
            fin += c.io_finished.get();
            done += c.stages.iter().map(|s| s.processed.get()).sum::<u64>();
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        let (mut started, mut queued) = (0u64, 0u64);
        for c in &self.counters {
            started += c.io_started.get();
            queued += c.stages.iter().map(|s| s.enqueued.get()).sum::<u64>();
        }
        queued += self.inject.iter().map(|i| i.enqueued.load(Ordering::SeqCst)).sum::<u64>();
        fin == started && done == queued
    }

    /// Worker `worker` stopped with `e` (an error, or a panic): records the first such failure,
    /// stops every other worker at once and wakes the supervising thread.
    pub(crate) fn worker_failed(&self, worker: usize, e: &std::io::Error) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert_with(|| (worker, e.to_string(), e.kind()));
        drop(f);
        self.abort.store(true, Ordering::SeqCst);
        self.begin_shutdown();
        self.supervisor.ring_always();
    }

    /// The first worker failure, as an error naming the worker.
    fn failure(&self) -> Option<std::io::Error> {
        let f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.as_ref().map(|(w, msg, kind)| std::io::Error::new(*kind, format!("worker {w} stopped: {msg}")))
    }

    fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for b in &self.bells {
            b.ring_always();
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::collect(self.meta.iter().map(|m| m.name.as_str()), &self.app, &self.counters);
        for ((st, i), m) in s.stages.iter_mut().zip(&self.inject).zip(self.meta.iter()) {
            st.enqueued += i.enqueued.load(Ordering::Relaxed);
            st.refused += i.refused.load(Ordering::Relaxed);
            if let Some(a) = &m.active {
                st.active_replicas = a.load(Ordering::Relaxed).count_ones() as u64;
            }
        }
        s
    }
}

/// Per-worker setup context: hands out sinks while replicas are constructed.
pub struct Setup<'a> {
    worker: usize,
    workers: usize,
    meta: &'a [StageMeta],
    parts: &'a mut [Option<Box<dyn Any + Send>>],
    sinks: Vec<Option<Rc<dyn Any>>>,
    locals: Vec<Option<Rc<dyn Any>>>,
    timers: Vec<Option<Rc<dyn Any>>>,
    wakers: Vec<Option<Rc<Cell<bool>>>>,
    counters: Arc<WorkerCounters>,
    wake: Rc<Cell<u64>>,
    clock: Rc<Cell<u32>>,
    now: Rc<Cell<std::time::Instant>>,
    controllers: Vec<Option<Rc<std::cell::RefCell<crate::control::OverloadController>>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Setup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup").field("worker", &self.worker).finish()
    }
}

impl Setup<'_> {
    /// The worker being set up.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Number of workers in the runtime.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// A handle to the runtime being built (metrics, shutdown), e.g. for a stats endpoint.
    pub fn handle(&self) -> Handle {
        Handle(self.shared.clone())
    }

    /// This worker's slot of application counter `id` ([`Builder::counter`]).
    ///
    /// # Panics
    /// If `id` belongs to another builder.
    pub fn counter(&self, id: CounterId) -> AppCounter {
        AppCounter::new(&self.counters, id)
    }

    fn parts<E: Send + 'static>(&mut self, idx: usize) -> &mut WorkerParts<E> {
        let name = &self.meta[idx].name;
        self.parts[idx]
            .as_mut()
            .and_then(|p| p.downcast_mut::<WorkerParts<E>>())
            .unwrap_or_else(|| panic!("stage '{name}': event type does not match its declaration"))
    }

    /// A sink into stage `id`, usable on this worker. Sinks to the same stage share queues.
    ///
    /// # Panics
    /// If `id` belongs to another builder (its event type does not match).
    pub fn sink<E: Send + 'static>(&mut self, id: StageId<E>) -> Sink<E> {
        let idx = id.idx;
        if let Some(rc) = &self.sinks[idx] {
            let inner = rc.clone().downcast::<SinkInner<E>>().expect("sink type matches stage");
            return Sink { inner };
        }
        let local_replica = self.meta[idx].cfg.workers.iter().position(|&w| w == self.worker);
        let local = local_replica.map(|r| (r, self.local::<E>(idx)));
        let (producers, router) = {
            let p = self.parts::<E>(idx);
            (p.producers.take().expect("producers taken once"), p.router)
        };
        let replica_workers: Box<[usize]> = self.meta[idx].cfg.workers.clone().into();
        let mut replica_on = vec![None; self.workers];
        for (r, &w) in replica_workers.iter().enumerate() {
            replica_on[w] = Some(r);
        }
        let inner = Rc::new(SinkInner {
            stage: idx,
            local,
            remote: producers.into_iter().map(|p| p.map(std::cell::RefCell::new)).collect(),
            replica_workers,
            replica_on: replica_on.into(),
            router,
            rr: Cell::new(self.worker % self.meta[idx].cfg.workers.len()),
            counters: self.counters.clone(),
            wake: self.wake.clone(),
            clock: self.clock.clone(),
            admission: self.controller(idx).map(|c| (c, self.now.clone())),
            gates: self.meta[idx].gates.clone(),
            active: self.meta[idx].active.clone(),
        });
        self.sinks[idx] = Some(inner.clone() as Rc<dyn Any>);
        Sink { inner }
    }

    /// The admission controller of stage `idx`'s replica on this worker, if it has one.
    fn controller(&mut self, idx: usize) -> Option<Rc<std::cell::RefCell<crate::control::OverloadController>>> {
        let cfg = self.meta[idx].cfg.overload.clone()?;
        let r = self.meta[idx].cfg.workers.iter().position(|&w| w == self.worker)?;
        let gate = self.meta[idx].gates.as_ref().expect("a gate per controlled replica")[r].clone();
        let epoch = self.shared.epoch;
        let c = self.controllers[idx].get_or_insert_with(|| {
            Rc::new(std::cell::RefCell::new(crate::control::OverloadController::with_gate(cfg, gate, Some(epoch))))
        });
        Some(c.clone())
    }

    /// A [`Timer`](crate::stage::Timer) into stage `id`'s replica on this worker: events it
    /// schedules are handed to that replica's handler once their delay has passed. Typically
    /// taken by the stage's own handler to send itself events later (timeouts, retries,
    /// back-off); any stage on the same worker may take one. Allocates the replica's timer
    /// table ([`StageConfig::timers`]) on first use.
    ///
    /// # Panics
    /// If stage `id` has no replica on this worker, or `id` belongs to another builder.
    pub fn timer<E: Send + 'static>(&mut self, id: StageId<E>) -> crate::stage::Timer<E> {
        let name = &self.meta[id.idx].name;
        assert!(
            self.meta[id.idx].cfg.workers.contains(&self.worker),
            "stage '{name}' has no replica on worker {}: timers deliver on their own worker",
            self.worker
        );
        crate::stage::Timer::new(self.timer_table::<E>(id.idx), self.now.clone())
    }

    /// A [`Waker`](crate::stage::Waker) for stage `id`'s replica on this worker: waking it runs
    /// that replica's [`Handler::woken`] hook in the worker's next loop iteration. Typically
    /// taken by the stage's own handler, to retry what a full queue refused (see
    /// [`Outbox::with_waker`](crate::stage::Outbox::with_waker)).
    ///
    /// # Panics
    /// If stage `id` has no replica on this worker, or `id` belongs to another builder.
    pub fn waker<E: Send + 'static>(&mut self, id: StageId<E>) -> crate::stage::Waker {
        let name = &self.meta[id.idx].name;
        assert!(
            self.meta[id.idx].cfg.workers.contains(&self.worker),
            "stage '{name}' has no replica on worker {}: a waker wakes a replica on its own worker",
            self.worker
        );
        crate::stage::Waker::new(self.waker_flag(id.idx))
    }

    pub(crate) fn waker_flag(&mut self, idx: usize) -> Rc<Cell<bool>> {
        self.wakers[idx].get_or_insert_with(|| Rc::new(Cell::new(false))).clone()
    }

    pub(crate) fn timer_table<E: Send + 'static>(&mut self, idx: usize) -> Rc<crate::stage::TimerTable<E>> {
        let cap = self.meta[idx].cfg.timers;
        let rc =
            self.timers[idx].get_or_insert_with(|| Rc::new(crate::stage::TimerTable::<E>::new(cap)) as Rc<dyn Any>);
        rc.clone().downcast::<crate::stage::TimerTable<E>>().expect("timer table type matches stage")
    }

    fn local<E: Send + 'static>(&mut self, idx: usize) -> Rc<LocalQueue<E>> {
        let cap = self.meta[idx].cfg.capacity;
        let rc = self.locals[idx].get_or_insert_with(|| Rc::new(LocalQueue::<E>::new(cap)) as Rc<dyn Any>);
        rc.clone().downcast::<LocalQueue<E>>().expect("local queue type matches stage")
    }

    #[allow(clippy::type_complexity)]
    fn take_consumer<E: Send + 'static>(
        &mut self,
        idx: usize,
    ) -> (Vec<crate::queue::spsc::Consumer<Stamped<E>>>, Arc<crate::queue::mpsc::Queue<Stamped<E>>>) {
        self.parts::<E>(idx).consumer.take().expect("one replica per worker")
    }
}

/// A running set of workers.
pub struct Runtime {
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    shared: Arc<Shared>,
    inject_targets: Vec<Box<dyn Any + Send + Sync>>,
    addrs: Vec<SocketAddr>,
    /// SIGINT and SIGTERM, blocked in every thread ([`Builder::signals`]).
    signals: Option<ringstage_sys::signal::SignalFd>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("workers", &self.threads.len()).field("addrs", &self.addrs).finish()
    }
}

/// A cloneable, `Send` handle to stop a runtime and read its metrics from any thread.
#[derive(Clone)]
pub struct Handle(Arc<Shared>);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handle")
    }
}

impl Handle {
    /// Starts graceful shutdown (see [`Runtime::shutdown`]).
    pub fn shutdown(&self) {
        self.0.begin_shutdown();
    }

    /// A snapshot of every counter.
    pub fn metrics(&self) -> Snapshot {
        self.0.snapshot()
    }
}

impl Runtime {
    /// A builder for `workers` pinned workers, one io_uring each.
    pub fn builder(workers: usize) -> Builder {
        Builder {
            workers,
            cpus: None,
            ring: RingConfig::default(),
            pool_buffers: 2048,
            buf_size: 4096,
            tick: Duration::from_millis(50),
            spin: Duration::ZERO,
            drain_timeout: Duration::from_secs(5),
            file_timeout: Some(Duration::from_secs(30)),
            signals: false,
            decls: Vec::new(),
            listeners: Vec::new(),
            connectors: Vec::new(),
            net: None,
            net_capacity: NET_CAPACITY,
            app_counters: Vec::new(),
        }
    }

    /// The address listener `id` is bound to (with the port chosen for port 0).
    pub fn local_addr(&self, id: ListenerId) -> SocketAddr {
        self.addrs[id.0]
    }

    /// An injector into stage `id` for threads outside the runtime.
    ///
    /// # Panics
    /// If `id` belongs to another runtime.
    pub fn injector<E: Send + 'static>(&self, id: StageId<E>) -> Injector<E> {
        let targets = self.inject_targets[id.idx]
            .downcast_ref::<Arc<[InjectTarget<E>]>>()
            .expect("injector type matches stage")
            .clone();
        Injector {
            targets,
            rr: Default::default(),
            counters: self.shared.inject[id.idx].clone(),
            epoch: self.shared.epoch,
            active: self.shared.meta[id.idx].active.clone(),
            gates: self.shared.meta[id.idx].gates.clone(),
        }
    }

    /// A snapshot of every counter.
    pub fn metrics(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle {
        Handle(self.shared.clone())
    }

    /// Starts graceful shutdown: workers stop accepting and reading, finish every queued event
    /// and pending send (up to the drain timeout), close their sockets and exit.
    pub fn shutdown(&self) {
        self.shared.begin_shutdown();
    }

    /// Waits for SIGINT or SIGTERM (requires [`Builder::signals`]) and returns its number; or,
    /// if a worker stops first (a refused `io_uring_enter`, a handler's panic), returns its
    /// error at once: the
    /// runtime is then stopping, and the process should exit non-zero rather than linger
    /// serving nothing.
    pub fn wait_for_signal(&self) -> std::io::Result<i32> {
        let signals = self.signals.as_ref().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "Builder::signals(true) was not set")
        })?;
        loop {
            if let Some(e) = self.shared.failure() {
                return Err(e);
            }
            if let Some(sig) = signals.take()? {
                return Ok(sig);
            }
            ringstage_sys::signal::wait_readable(&[signals.fd(), self.shared.supervisor.fd()])?;
        }
    }

    /// Serves until SIGINT or SIGTERM (requires [`Builder::signals`]), then shuts down
    /// gracefully. Returns the signal and the final counters; or the error of a worker that
    /// stopped (see [`Runtime::wait_for_signal`]), once the others have.
    pub fn run_until_signal(self) -> std::io::Result<(i32, Snapshot)> {
        let sig = match self.wait_for_signal() {
            Ok(sig) => sig,
            Err(e) => {
                let _ = self.join();
                return Err(e);
            }
        };
        self.shutdown();
        let handle = self.handle();
        self.join()?;
        Ok((sig, handle.metrics()))
    }

    /// Waits for every worker to exit; returns the first worker failure (a worker that fails
    /// stops the others).
    pub fn join(mut self) -> std::io::Result<()> {
        let mut res = Ok(());
        for t in self.threads.drain(..) {
            let r = t.join().unwrap_or_else(|_| Err(std::io::Error::other("a worker panicked")));
            if res.is_ok() {
                res = r;
            }
        }
        match self.shared.failure() {
            Some(e) => Err(e),
            None => res,
        }
    }
}

impl Drop for Runtime {
    /// Dropping a runtime that was not joined shuts it down and waits for the workers.
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shared.begin_shutdown();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}
