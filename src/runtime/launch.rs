//! Launching: binding the listeners, dealing each stage's queues out to the workers, and
//! starting the worker threads.

use std::any::Any;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use ringstage_sys::Doorbell;

use super::{worker, Builder, Factory, Runtime, Shared, StageMeta};
use crate::metrics::WorkerCounters;
use crate::stage::injector::InjectCounters;
use crate::Error;

impl Builder {
    /// Creates the sockets, spawns and pins the workers, sets up one ring per worker, and runs.
    /// Returns once every worker is ready, or the first setup error (e.g. io_uring refused).
    pub fn start(mut self) -> Result<Runtime, Error> {
        self.validate()?;
        let bells: Vec<Arc<Doorbell>> =
            (0..self.workers).map(|_| Doorbell::new().map(Arc::new)).collect::<Result<_, _>>()?;

        // Listening sockets, bound here so that errors (EADDRINUSE) surface synchronously.
        let mut per_worker_endpoints: Vec<Vec<worker::EndpointPlan>> = (0..self.workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for (id, l) in self.listeners.iter().enumerate() {
            // One listening socket for worker `w`. Accepted sockets inherit TCP_NODELAY from
            // the listener: no setsockopt per connection.
            let mut plan = |w: usize, fd: OwnedFd| -> std::io::Result<()> {
                if l.cfg.nodelay {
                    ringstage_sys::socket::set_nodelay(fd.as_raw_fd())?;
                }
                per_worker_endpoints[w].push(worker::EndpointPlan {
                    id,
                    fd: Some(fd),
                    cfg: l.cfg.clone(),
                    deliver: l.deliver,
                    connect_timeout: None,
                });
                Ok(())
            };
            if let Some(inherited) = &l.cfg.inherited {
                // Socket activation or a Unix socket: every worker accepts from the one socket.
                for &w in &l.cfg.workers {
                    plan(w, ringstage_sys::fd::duplicate(inherited)?)?;
                }
                addrs.push(l.cfg.addr);
                continue;
            }
            let backlog = l.cfg.backlog;
            let (addr, fds) = bind_per_worker(l.cfg.addr, l.cfg.workers.len(), |a, reuse| {
                ringstage_sys::socket::listen(a, backlog, reuse)
            })?;
            for (&w, fd) in l.cfg.workers.iter().zip(fds) {
                plan(w, fd)?;
            }
            addrs.push(addr);
        }
        // UDP sockets: bound here, as listeners are, one per worker (SO_REUSEPORT when several).
        let mut per_worker_udp: Vec<Vec<worker::UdpPlan>> = (0..self.workers).map(|_| Vec::new()).collect();
        let mut udp_addrs = Vec::new();
        for (id, u) in self.udp.iter().enumerate() {
            let (addr, fds) = bind_per_worker(u.cfg.addr, u.cfg.workers.len(), ringstage_sys::udp::bind)?;
            for (&w, fd) in u.cfg.workers.iter().zip(fds) {
                per_worker_udp[w].push(worker::UdpPlan { id, fd, local: addr, cfg: u.cfg.clone(), deliver: u.deliver });
            }
            udp_addrs.push(addr);
        }
        #[cfg(feature = "tls")]
        {
            let mut configs = self.listeners.iter().map(|l| &l.cfg).chain(self.connectors.iter().map(|c| &c.cfg));
            if configs.any(|c| c.tls.is_some()) {
                let kernel = if crate::net::tls::ktls_available() {
                    "offered by this kernel, not used yet"
                } else {
                    "unavailable (no tls ULP: CONFIG_TLS)"
                };
                log::info!("ringstage: TLS in user space (rustls); kernel TLS {kernel}");
            }
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
                    conn_of: d.conn_of.clone(),
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
            failure: Mutex::new(None),
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
        let plans = parts.into_iter().zip(per_worker_endpoints).zip(per_worker_udp);
        for (w, ((parts, endpoints), udp)) in plans.enumerate() {
            let blocking = self.blocking_worker(w);
            let cpu = match &self.cpus {
                Some(c) if c.is_empty() => None,
                Some(c) if blocking && w >= c.len() => None,
                Some(c) => Some(c[w % c.len()]),
                None if blocking => None, // the scheduler places a thread that may block
                None => Some(w % ncpu),
            };
            let plan = worker::Plan {
                id: w,
                cpu,
                ring: self.ring.clone(),
                pool: (self.pool_buffers, self.max_buffers.unwrap_or(8 * self.pool_buffers as usize), self.buf_size),
                tick: self.tick,
                spin: if blocking { std::time::Duration::ZERO } else { self.spin },
                file_timeout: self.file_timeout,
                net_stage: self.net,
                files: self.files.clone(),
                meta: meta.clone(),
                factories: factories.clone(),
                parts,
                endpoints,
                udp,
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
                    first_err.get_or_insert(Error::Io(std::io::Error::other("a worker died during setup")));
                }
            }
        }
        let rt = Runtime { threads, shared, inject_targets, addrs, udp_addrs, signals };
        if let Some(e) = first_err {
            rt.shutdown();
            let _ = rt.join();
            return Err(e);
        }
        super::systemd::tell("READY=1");
        Ok(rt)
    }
}

/// The sockets of a listener or UDP declaration on `n` workers, made by `bind(addr, reuseport)`,
/// and the address they are bound to (the port chosen for port 0). The first is bound
/// exclusively, so that an address held by another process (even one using SO_REUSEPORT) is
/// an error naming it rather than a silent split of the traffic; with several workers it is
/// then replaced by one SO_REUSEPORT socket each, on the port just proven free.
fn bind_per_worker(
    addr: SocketAddr,
    n: usize,
    bind: impl Fn(SocketAddr, bool) -> std::io::Result<OwnedFd>,
) -> Result<(SocketAddr, Vec<OwnedFd>), Error> {
    let in_use = |addr, cause: std::io::Error| Error::Bind { addr, cause };
    let first = bind(addr, false).map_err(|e| in_use(addr, e))?;
    let bound = ringstage_sys::socket::local_addr(first.as_raw_fd())?;
    if n == 1 {
        return Ok((bound, vec![first]));
    }
    drop(first);
    let fds = (0..n).map(|_| bind(bound, true).map_err(|e| in_use(bound, e))).collect::<Result<_, _>>()?;
    Ok((bound, fds))
}
