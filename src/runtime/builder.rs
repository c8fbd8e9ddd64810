//! [`Builder`]: declaring the stage graph (stages, handlers, listeners, connectors, file
//! users, counters) and the runtime's options, and checking them.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use super::plumbing::{Plumbing, TypedPlumbing};
use super::{Factory, RingConfig, Setup};
use crate::fs::{FilesId, FsCmd, FsEvent};
use crate::metrics::CounterId;
use crate::net::{
    Conn, ConnEvent, ConnectConfig, ConnectorId, ListenConfig, ListenerId, NetCmd, NetEvent, NetStage, UdpConfig, UdpId,
};
use crate::stage::{Handler, PanicKey, PanicPolicy, Replica, ReplicaDyn, StageConfig, StageId};
use crate::Error;

/// The network stage's queue per worker, and its batch (see `Builder::net_stage`).
const NET_CAPACITY: usize = 4096;

pub(super) struct Decl {
    pub(super) name: String,
    pub(super) cfg: StageConfig,
    pub(super) plumbing: Option<Box<dyn Plumbing>>,
    pub(super) factory: Option<Factory>,
    /// The [`PanicKey`] of the stage's event type, if its events are [`ConnEvent`]s.
    pub(super) conn_of: Option<Arc<dyn Any + Send + Sync>>,
}

pub(super) struct ListenDecl {
    pub(super) cfg: Arc<ListenConfig>,
    pub(super) deliver: usize,
}

pub(super) struct UdpDecl {
    pub(super) cfg: UdpConfig,
    pub(super) deliver: usize,
}

pub(super) struct ConnectorDecl {
    pub(super) cfg: Arc<ListenConfig>,
    pub(super) timeout: Duration,
    pub(super) deliver: usize,
}

/// A file stage user: how to make, on a worker, the delivery of its events.
pub(super) type FilesDecl = Arc<dyn Fn(&mut Setup<'_>) -> Box<dyn crate::fs::Deliver> + Send + Sync>;

/// Declares stages, their placement and listeners, then starts the workers.
///
/// # Examples
///
/// Two stages on two workers: the network stage delivers each connection's bytes to `echo` on
/// worker 1, which sends them back (the same buffers, uncopied) through the network stage's
/// replica on worker 0, which owns the socket.
///
/// ```no_run
/// use ringstage::prelude::*;
///
/// let mut b = Runtime::builder(2).signals(true);
/// let echo = b.stage::<NetEvent>("echo", StageConfig::on([1]));
/// let (net, listener) = b.listen(ListenConfig::new("127.0.0.1:7000".parse().unwrap(), [0]), echo);
/// b.handler(echo, move |s| {
///     let net = s.sink(net);
///     handler_fn(move |ev: NetEvent, _cx: &mut Context<'_>| {
///         if let NetEvent::Data { conn, data } = ev {
///             let _ = net.try_enqueue(NetCmd::Send { conn, data }); // refused: shed it
///         }
///     })
/// });
/// let rt = b.start()?;
/// println!("listening on {}", rt.local_addr(listener));
/// rt.run_until_signal()?;
/// # Ok::<(), ringstage::Error>(())
/// ```
pub struct Builder {
    pub(super) workers: usize,
    pub(super) cpus: Option<Vec<usize>>,
    pub(super) ring: RingConfig,
    pub(super) pool_buffers: u16,
    pub(super) max_buffers: Option<usize>,
    pub(super) buf_size: usize,
    pub(super) tick: Duration,
    pub(super) spin: Duration,
    pub(super) drain_timeout: Duration,
    pub(super) file_timeout: Option<Duration>,
    pub(super) signals: bool,
    pub(super) panic_policy: PanicPolicy,
    pub(super) decls: Vec<Decl>,
    pub(super) listeners: Vec<ListenDecl>,
    pub(super) connectors: Vec<ConnectorDecl>,
    pub(super) udp: Vec<UdpDecl>,
    pub(super) files: Vec<FilesDecl>,
    pub(super) net: Option<StageId<NetCmd>>,
    fs: Option<StageId<FsCmd>>,
    net_capacity: usize,
    /// The application's counters: name (labels included) and help text.
    pub(super) app_counters: Vec<(String, String)>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").field("workers", &self.workers).field("stages", &self.decls.len()).finish()
    }
}

impl Builder {
    pub(super) fn new(workers: usize) -> Builder {
        Builder {
            workers,
            cpus: None,
            ring: RingConfig::default(),
            pool_buffers: 2048,
            max_buffers: None,
            buf_size: 4096,
            tick: Duration::from_millis(50),
            spin: Duration::ZERO,
            drain_timeout: Duration::from_secs(5),
            file_timeout: Some(Duration::from_secs(30)),
            signals: false,
            panic_policy: PanicPolicy::default(),
            decls: Vec::new(),
            listeners: Vec::new(),
            connectors: Vec::new(),
            udp: Vec::new(),
            files: Vec::new(),
            net: None,
            fs: None,
            net_capacity: NET_CAPACITY,
            app_counters: Vec::new(),
        }
    }

    /// What a panic in a handler does: [`PanicPolicy::Isolate`] (the default) drops the event,
    /// counts it and aborts its connection; [`PanicPolicy::Fatal`] stops the runtime.
    pub fn panic_policy(mut self, p: PanicPolicy) -> Self {
        self.panic_policy = p;
        self
    }

    /// Declares that stage `id`'s events name the connection each came from
    /// ([`ConnEvent::conn`]), so that a handler panic on one aborts that connection
    /// ([`PanicPolicy::Isolate`]). Stages that listeners and connectors deliver to have it
    /// already.
    pub fn conn_events<E: ConnEvent + Send + 'static>(&mut self, id: StageId<E>) {
        // A plain function pointer (to a function, not a closure's shim): it is called on every
        // event.
        fn key<E: ConnEvent>(ev: &E) -> u128 {
            ev.conn().map_or(crate::stage::NO_KEY, Conn::pack)
        }
        self.decls[id.idx].conn_of = Some(Arc::new(key::<E> as PanicKey<E>));
    }

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

    /// Most receive buffers a worker's pool grows to (default 8 times [`Builder::buffers`]'
    /// count, at most 32768). A pool grows by its first count of buffers, from fresh memory,
    /// when every buffer is held (handlers keep received views) and receives wait for one;
    /// past the maximum, the connections that need a buffer wait until a view is dropped.
    /// The maximum equal to the count turns growth off.
    pub fn max_buffers(mut self, n: usize) -> Self {
        self.max_buffers = Some(n);
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
    /// [`Runtime::wait_for_signal`](super::Runtime::wait_for_signal) can take them. Call `start` from the main thread before
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
        self.decls.push(Decl {
            name: name.to_string(),
            cfg,
            plumbing: Some(Box::new(plumbing)),
            factory: None,
            conn_of: None,
        });
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
        let name: Arc<str> = self.decls[idx].name.as_str().into();
        let panics = self.panic_policy;
        let factory: Factory = Arc::new(move |s: &mut Setup<'_>| {
            let handler = make(s);
            let (remote, inject) = s.take_consumer::<H::Event>(idx);
            let on_panic = s.on_panic::<H::Event>(idx);
            Box::new(Replica {
                stage: idx,
                name: (*name).into(),
                handler,
                local: s.local::<H::Event>(idx),
                timers: s.timer_table::<H::Event>(idx),
                woken: s.waker_flag(idx),
                remote,
                inject,
                batch: s.meta[idx].cfg.batch,
                next: 0,
                counters: s.counters.clone(),
                admission: s.controller(idx),
                last_service_us: 0,
                batcher: s.meta[idx].cfg.batching.clone().map(crate::control::BatchController::new),
                panics,
                on_panic,
            }) as Box<dyn ReplicaDyn>
        });
        self.decls[idx].factory = Some(factory);
    }

    /// Adds a listener whose connections' events go to stage `deliver`. Returns the network
    /// stage (to send [`NetCmd`]s to; one per runtime, with a replica on every worker) and the
    /// listener's id.
    pub fn listen(&mut self, cfg: ListenConfig, deliver: StageId<NetEvent>) -> (StageId<NetCmd>, ListenerId) {
        let net = self.net_stage();
        self.knows_conns(deliver);
        self.listeners.push(ListenDecl { cfg: Arc::new(cfg), deliver: deliver.idx });
        (net, ListenerId((self.listeners.len() - 1) as u32))
    }

    /// Adds a connector: [`NetCmd::Connect`] with its id opens an outbound TCP connection on
    /// any worker, whose events ([`NetEvent::Connected`], then `Data` and `Closed`, or
    /// [`NetEvent::ConnectFailed`]) go to stage `deliver`. Returns the network stage (as
    /// [`Builder::listen`] does) and the connector's id.
    pub fn connector(&mut self, cfg: ConnectConfig, deliver: StageId<NetEvent>) -> (StageId<NetCmd>, ConnectorId) {
        let net = self.net_stage();
        self.knows_conns(deliver);
        self.connectors.push(ConnectorDecl { cfg: Arc::new(cfg.conn), timeout: cfg.timeout, deliver: deliver.idx });
        (net, ConnectorId((self.connectors.len() - 1) as u32))
    }

    /// Adds a UDP socket on each of the config's workers, whose datagrams
    /// ([`NetEvent::Datagram`], [`NetEvent::Truncated`]) and send failures
    /// ([`NetEvent::SendToFailed`]) go to stage `deliver`. Returns the network stage (to send
    /// [`NetCmd::SendTo`] to) and the socket's id ([`Runtime::udp_addr`](super::Runtime::udp_addr)
    /// tells the port bound). See [`crate::net::UdpConfig`].
    ///
    /// # Examples
    ///
    /// A UDP echo: each datagram goes back to its source, the received view uncopied.
    ///
    /// ```no_run
    /// use ringstage::prelude::*;
    ///
    /// let mut b = Runtime::builder(1);
    /// let echo = b.stage::<NetEvent>("echo", StageConfig::on([0]));
    /// let (net, udp) = b.udp(UdpConfig::new("127.0.0.1:9000".parse().unwrap(), [0]), echo);
    /// b.handler(echo, move |s| {
    ///     let mut net = Outbox::with_waker(s.sink(net), s.waker(echo));
    ///     handler_fn(move |ev: NetEvent, _cx: &mut Context<'_>| {
    ///         if let NetEvent::Datagram { socket, from, data } = ev {
    ///             net.send(NetCmd::SendTo { socket, to: from, data });
    ///         }
    ///     })
    /// });
    /// let rt = b.start()?;
    /// println!("UDP on {}", rt.udp_addr(udp));
    /// # Ok::<(), ringstage::Error>(())
    /// ```
    pub fn udp(&mut self, cfg: UdpConfig, deliver: StageId<NetEvent>) -> (StageId<NetCmd>, UdpId) {
        let net = self.net_stage();
        self.knows_conns(deliver);
        self.udp.push(UdpDecl { cfg, deliver: deliver.idx });
        (net, UdpId(self.udp.len() - 1))
    }

    /// A stage fed by the network knows each event's connection (unless told otherwise).
    fn knows_conns(&mut self, deliver: StageId<NetEvent>) {
        if self.decls[deliver.idx].conn_of.is_none() {
            self.conn_events(deliver);
        }
    }

    /// Declares a user of the file stage: [`FsCmd`]s naming the returned [`FilesId`] have
    /// their [`FsEvent`]s delivered to stage `deliver`, converted into its event type, on the
    /// sender's worker (or the next replica of `deliver` if it has none there). Returns the
    /// file stage (to send commands to; one per runtime, with a replica on every worker) and
    /// the id. See [`crate::fs`].
    pub fn files<E: From<FsEvent> + Send + 'static>(&mut self, deliver: StageId<E>) -> (StageId<FsCmd>, FilesId) {
        let fs = self.fs_stage();
        let make: FilesDecl = Arc::new(move |s: &mut Setup<'_>| {
            Box::new(crate::fs::DeliverTo { sink: s.sink(deliver), kept: Default::default() })
                as Box<dyn crate::fs::Deliver>
        });
        self.files.push(make);
        (fs, FilesId(self.files.len() - 1))
    }

    /// The file stage, declared on first use: a replica on every worker.
    fn fs_stage(&mut self) -> StageId<FsCmd> {
        if let Some(f) = self.fs {
            return f;
        }
        let f = self.stage::<FsCmd>("fs", StageConfig::on(0..self.workers));
        self.handler(f, |s| crate::fs::FsStage { driver: s.fs_driver() });
        self.fs = Some(f);
        f
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
        self.net = Some(n);
        self.handler(n, |s| NetStage { net: s.net_driver() });
        n
    }

    pub(super) fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
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
        if self.udp.len() > usize::from(u16::MAX) {
            return bad(format!("at most {} UDP sockets, got {}", u16::MAX, self.udp.len()));
        }
        for u in &self.udp {
            if u.cfg.workers.is_empty() || u.cfg.workers.iter().any(|&w| w >= self.workers) {
                return bad(format!(
                    "UDP socket {} placed on workers {:?} of {}",
                    u.cfg.addr, u.cfg.workers, self.workers
                ));
            }
        }
        // A blocking stage runs alone on its workers (the runtime's own network and file
        // stages aside: they have nothing to do where no socket or file lives).
        let infrastructure = |i: usize| self.net.is_some_and(|n| n.idx == i) || self.fs.is_some_and(|f| f.idx == i);
        for (i, d) in self.decls.iter().enumerate().filter(|(_, d)| d.cfg.blocking) {
            for &w in &d.cfg.workers {
                let other = self
                    .decls
                    .iter()
                    .enumerate()
                    .find(|&(j, o)| j != i && !infrastructure(j) && o.cfg.workers.contains(&w));
                if let Some((_, o)) = other {
                    return bad(format!(
                        "stage '{}' may block, so it runs alone on its workers, but stage '{}' is on worker {w} too",
                        d.name, o.name
                    ));
                }
                if let Some(l) = self.listeners.iter().find(|l| l.cfg.workers.contains(&w)) {
                    return bad(format!(
                        "stage '{}' may block, so it runs alone on its workers, but listener {} is on worker {w} too",
                        d.name, l.cfg.addr
                    ));
                }
                if let Some(u) = self.udp.iter().find(|u| u.cfg.workers.contains(&w)) {
                    return bad(format!(
                        "stage '{}' may block, so it runs alone on its workers, but UDP socket {} is on worker {w} too",
                        d.name, u.cfg.addr
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether worker `w` hosts a blocking stage (and, by [`Builder::validate`], nothing else).
    pub(super) fn blocking_worker(&self, w: usize) -> bool {
        self.decls.iter().any(|d| d.cfg.blocking && d.cfg.workers.contains(&w))
    }
}
