//! Per-stage and per-worker counters and a snapshot API.
//!
//! Every counter has a single writer (the worker that owns it), so updates are a relaxed load
//! and store, not a locked read-modify-write; readers on any thread sum the per-worker values.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// A single-writer monotone counter (or gauge) readable from any thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this. Hot path: two plain memory operations.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Release);
    }

    /// Sets a gauge value. Only the owning worker may call this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Release);
    }

    /// Reads the value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// One stage's counters as kept by one worker.
#[derive(Debug, Default)]
pub struct StageCounters {
    /// Events this worker's sinks put into the stage's queues.
    pub enqueued: Counter,
    /// Events this worker's sinks offered and the stage refused.
    pub refused: Counter,
    /// Events the stage's replica on this worker handled.
    pub processed: Counter,
    /// Events waiting in this replica's queues at its last run (gauge).
    pub queued: Counter,
    /// Batches run by this replica (non-empty runs).
    pub batches: Counter,
}

/// One worker's counters.
#[derive(Debug)]
pub struct WorkerCounters {
    /// Per stage, indexed by stage id.
    pub stages: Box<[CachePadded<StageCounters>]>,
    /// Event-loop iterations.
    pub loops: Counter,
    /// `io_uring_enter` calls.
    pub enters: Counter,
    /// Completions reaped.
    pub cqes: Counter,
    /// Nanoseconds spent blocked waiting for completions.
    pub idle_ns: Counter,
    /// Multishot receives ended by ENOBUFS (pool empty).
    pub enobufs: Counter,
    /// Completions the kernel reported as overflowed.
    pub cq_overflow: Counter,
    /// Accept back-offs (EMFILE/ENFILE/ENOMEM).
    pub accept_backoffs: Counter,
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections closed.
    pub closed: Counter,
    /// I/O operations armed (monotone; for quiescence).
    pub io_started: Counter,
    /// I/O operations finished (monotone; for quiescence).
    pub io_finished: Counter,
}

impl WorkerCounters {
    pub(crate) fn new(stages: usize) -> WorkerCounters {
        WorkerCounters {
            stages: (0..stages).map(|_| CachePadded::new(StageCounters::default())).collect(),
            loops: Counter::default(),
            enters: Counter::default(),
            cqes: Counter::default(),
            idle_ns: Counter::default(),
            enobufs: Counter::default(),
            cq_overflow: Counter::default(),
            accept_backoffs: Counter::default(),
            accepted: Counter::default(),
            closed: Counter::default(),
            io_started: Counter::default(),
            io_finished: Counter::default(),
        }
    }
}

/// A stage's counters summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageSnapshot {
    /// Stage name.
    pub name: String,
    /// Events accepted into the stage's queues.
    pub enqueued: u64,
    /// Events refused (full queue or admission).
    pub refused: u64,
    /// Events handled.
    pub processed: u64,
    /// Events waiting (approximate).
    pub queued: u64,
    /// Non-empty batches run.
    pub batches: u64,
}

/// A worker's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Worker index.
    pub worker: usize,
    /// Event-loop iterations.
    pub loops: u64,
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Completions reaped.
    pub cqes: u64,
    /// Nanoseconds blocked waiting.
    pub idle_ns: u64,
    /// ENOBUFS endings of multishot receives.
    pub enobufs: u64,
    /// CQ overflow count reported by the kernel.
    pub cq_overflow: u64,
    /// Accept back-offs.
    pub accept_backoffs: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed.
    pub closed: u64,
}

/// A point-in-time copy of every counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per stage, in declaration order.
    pub stages: Vec<StageSnapshot>,
    /// Per worker.
    pub workers: Vec<WorkerSnapshot>,
}

impl Snapshot {
    pub(crate) fn collect(names: &[String], workers: &[std::sync::Arc<WorkerCounters>]) -> Snapshot {
        let stages = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut s = StageSnapshot { name: name.clone(), ..Default::default() };
                for w in workers {
                    let c = &w.stages[i];
                    s.enqueued += c.enqueued.get();
                    s.refused += c.refused.get();
                    s.processed += c.processed.get();
                    s.queued += c.queued.get();
                    s.batches += c.batches.get();
                }
                s
            })
            .collect();
        let workers = workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerSnapshot {
                worker: i,
                loops: w.loops.get(),
                enters: w.enters.get(),
                cqes: w.cqes.get(),
                idle_ns: w.idle_ns.get(),
                enobufs: w.enobufs.get(),
                cq_overflow: w.cq_overflow.get(),
                accept_backoffs: w.accept_backoffs.get(),
                accepted: w.accepted.get(),
                closed: w.closed.get(),
            })
            .collect();
        Snapshot { stages, workers }
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageSnapshot> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Sum of a worker counter over all workers.
    pub fn total(&self, f: impl Fn(&WorkerSnapshot) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }
}
