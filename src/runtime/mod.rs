//! Pinned workers, the stage graph builder, and shutdown.
//!
//! - [`Builder`] declares stages, handlers, listeners, connectors and file users, and the
//!   runtime's options (`builder.rs`);
//! - [`Builder::start`] binds the sockets and launches one pinned worker thread per worker,
//!   each setting up its ring and its replicas (`launch.rs`, `setup.rs`);
//! - each worker runs its loop (`worker.rs`): reap completions, run the replicas, submit,
//!   sleep;
//! - [`Runtime`] and [`Handle`] wait for signals or a failed worker, stop, and read the
//!   metrics (`handle.rs`).

mod builder;
mod handle;
mod launch;
mod plumbing;
mod setup;
pub mod systemd;
mod worker;

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringstage_sys::Doorbell;
pub use ringstage_sys::RingConfig;

pub use builder::Builder;
pub use handle::{Handle, Runtime};
pub use setup::Setup;

use crate::metrics::{Snapshot, WorkerCounters};
use crate::stage::injector::InjectCounters;
use crate::stage::{ReplicaDyn, StageConfig};
use crate::Error;

type Factory = Arc<dyn Fn(&mut Setup<'_>) -> Box<dyn ReplicaDyn> + Send + Sync>;

/// What every worker knows about a stage.
#[derive(Clone)]
pub(crate) struct StageMeta {
    pub(crate) name: String,
    pub(crate) cfg: StageConfig,
    /// Elastic stages: bit `r` set while replica `r` takes new events.
    pub(crate) active: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Stages with admission control: per replica, the gate its producers draw from (on any
    /// worker) and its controller steers.
    pub(crate) gates: Option<Arc<[Arc<crate::control::Gate>]>>,
    /// The connection of each event (see [`Builder::conn_events`]), if known.
    pub(crate) conn_of: Option<Arc<dyn Any + Send + Sync>>,
}

/// State shared by all workers and the runtime handle.
pub(crate) struct Shared {
    /// Set when shutdown is asked; workers see it at their next loop iteration, handlers at once
    /// ([`Context::is_shutting_down`](crate::stage::Context::is_shutting_down)).
    pub(crate) shutdown: Arc<AtomicBool>,
    /// Set when a worker failed: the others stop at once, without draining (their work may
    /// wait for the dead one forever).
    pub(crate) abort: AtomicBool,
    /// The first worker failure (an [`Error::WorkerFailed`]), until it is reported.
    failure: Mutex<Option<Error>>,
    /// Rung when a worker fails, for [`Runtime::wait_for_signal`].
    supervisor: Doorbell,
    pub(crate) bells: Vec<Arc<Doorbell>>,
    pub(crate) counters: Vec<Arc<WorkerCounters>>,
    pub(crate) inject: Vec<Arc<InjectCounters>>,
    /// The stages, as every worker sees them (names, configuration, active-replica masks).
    pub(crate) meta: Arc<Vec<StageMeta>>,
    pub(crate) drain_timeout: Duration,
    /// Origin of the µs stamps on queued events.
    pub(crate) epoch: std::time::Instant,
    /// The application's counters (`Builder::counter`).
    pub(crate) app: Vec<(String, String)>,
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
    pub(crate) fn worker_failed(&self, worker: usize, e: Error) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(Error::WorkerFailed { worker, cause: Box::new(e) });
        drop(f);
        self.abort.store(true, Ordering::SeqCst);
        self.begin_shutdown();
        self.supervisor.ring_always();
    }

    /// The first worker failure, once (later calls find none).
    pub(crate) fn take_failure(&self) -> Option<Error> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(crate) fn begin_shutdown(&self) {
        if !self.shutdown.swap(true, Ordering::SeqCst) {
            systemd::tell("STOPPING=1");
        }
        for b in &self.bells {
            b.ring_always();
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
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
