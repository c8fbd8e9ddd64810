//! [`Runtime`] and [`Handle`]: a started runtime, its signals, shutdown and metrics.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Builder, Shared};
use crate::metrics::Snapshot;
use crate::net::{ListenerId, UdpId};
use crate::stage::injector::InjectTarget;
use crate::stage::{Injector, StageId};
use crate::Error;

/// A running set of workers.
pub struct Runtime {
    pub(super) threads: Vec<JoinHandle<Result<(), Error>>>,
    pub(super) shared: Arc<Shared>,
    pub(super) inject_targets: Vec<Box<dyn Any + Send + Sync>>,
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) udp_addrs: Vec<SocketAddr>,
    /// SIGINT and SIGTERM, blocked in every thread ([`Builder::signals`]).
    pub(super) signals: Option<ringstage_sys::signal::SignalFd>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("workers", &self.threads.len()).field("addrs", &self.addrs).finish()
    }
}

/// A cloneable, `Send` handle to stop a runtime and read its metrics from any thread.
#[derive(Clone)]
pub struct Handle(pub(super) Arc<Shared>);

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
        Builder::new(workers)
    }

    /// The address listener `id` is bound to (with the port chosen for port 0).
    pub fn local_addr(&self, id: ListenerId) -> SocketAddr {
        self.addrs[id.0 as usize]
    }

    /// The address UDP socket `id` is bound to (with the port chosen for port 0).
    pub fn udp_addr(&self, id: UdpId) -> SocketAddr {
        self.udp_addrs[id.0]
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
    /// if a worker stops first (a refused `io_uring_enter`, a handler's panic under
    /// [`PanicPolicy::Fatal`](crate::stage::PanicPolicy::Fatal)), returns its error
    /// ([`Error::WorkerFailed`]) at once: the runtime is then stopping, and the process should
    /// exit non-zero rather than linger serving nothing.
    pub fn wait_for_signal(&self) -> Result<i32, Error> {
        let signals =
            self.signals.as_ref().ok_or_else(|| Error::InvalidConfig("Builder::signals(true) was not set".into()))?;
        loop {
            if let Some(e) = self.shared.take_failure() {
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
    pub fn run_until_signal(self) -> Result<(i32, Snapshot), Error> {
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
    pub fn join(mut self) -> Result<(), Error> {
        let mut res = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(Error::Panicked { stage: None, message: "a worker thread panicked".into() }));
            if res.is_ok() {
                res = r;
            }
        }
        match self.shared.take_failure() {
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
