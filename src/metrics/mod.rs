//! Per-stage and per-worker counters and a snapshot API.
//!
//! Every counter has a single writer (the worker that owns it), so updates are a relaxed load
//! and store, not a locked read-modify-write; readers on any thread sum the per-worker values.

mod alloc;
mod app;
mod histogram;

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

pub use alloc::{thread_allocations, CountingAlloc};
pub(crate) use app::valid_name;
pub use app::{AppCounter, CounterId};
pub use histogram::HistSnapshot;
pub(crate) use histogram::Histogram;

/// A single-writer monotone counter (or gauge) readable from any thread.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

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
pub(crate) struct StageCounters {
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
    /// Size of this replica's last non-empty batch (gauge).
    pub batch_size: Counter,
    /// Handler time per event, µs (a batch's time spread over its events).
    pub service_us: Histogram,
    /// Time from enqueue to dequeue, µs.
    pub wait_us: Histogram,
    /// Admission controller: current rate, events/s (gauge; 0 without one).
    pub admission_rate: Counter,
    /// Admission controller: the last window's p90 response time, µs (gauge).
    pub admission_p90_us: Counter,
    /// Handler panics caught ([`PanicPolicy::Isolate`](crate::stage::PanicPolicy::Isolate)).
    pub panics: Counter,
}

/// One worker's counters.
#[derive(Debug)]
pub(crate) struct WorkerCounters {
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
    /// Heap allocations made on the worker's thread, refreshed every loop iteration (zero
    /// unless [`CountingAlloc`] is the global allocator).
    pub allocations: Counter,
    /// Nanoseconds spent polling for work before sleeping
    /// ([`Builder::spin_before_sleep`](crate::runtime::Builder::spin_before_sleep)).
    pub spin_ns: Counter,
    /// Those polls (spins).
    pub spins: Counter,
    /// Spins that found work, each a sleep and a wake-up saved.
    pub spin_hits: Counter,
    /// Multishot receives ended by ENOBUFS (pool empty).
    pub enobufs: Counter,
    /// Reaps that found completions held back by the kernel because the completion queue was
    /// full (`IORING_SQ_CQ_OVERFLOW`). With `IORING_FEAT_NODROP` they are kept and flushed at
    /// the next enter, not lost; a count that grows says the ring's CQ is too small for the
    /// load ([`RingConfig::cq_entries`](crate::runtime::RingConfig)).
    pub cq_overflow: Counter,
    /// Gauge: completions the kernel dropped (its CQ overflow field; only when it could not
    /// even allocate room to hold one back).
    pub cq_dropped: Counter,
    /// Accept back-offs (EMFILE/ENFILE/ENOMEM).
    pub accept_backoffs: Counter,
    /// Connections accepted.
    pub accepted: Counter,
    /// Outbound connections established ([`NetCmd::Connect`](crate::net::NetCmd::Connect)).
    pub connected: Counter,
    /// Outbound connections that failed or timed out.
    pub connect_failed: Counter,
    /// Times a connection's unsent output went over its limit
    /// ([`NetEvent::Backlogged`](crate::net::NetEvent::Backlogged)).
    pub backlogged: Counter,
    /// Connections closed.
    pub closed: Counter,
    /// File bytes sent to sockets with splice (zero copy).
    pub spliced: Counter,
    /// Socket sends submitted (each gathers all the output a connection had queued).
    pub sends: Counter,
    /// Of those, sends submitted as SEND_ZC (zero copy).
    pub zc_sends: Counter,
    /// Network events parked because their stage refused them (retried in order).
    pub parked: Counter,
    /// UDP datagrams delivered.
    pub udp_received: Counter,
    /// UDP datagrams larger than a receive buffer, not delivered
    /// ([`NetEvent::Truncated`](crate::net::NetEvent::Truncated)).
    pub udp_truncated: Counter,
    /// UDP sends the kernel completed (a GSO send counts once).
    pub udp_sent: Counter,
    /// UDP sends refused or failed ([`NetEvent::SendToFailed`](crate::net::NetEvent::SendToFailed)).
    pub udp_send_failed: Counter,
    /// TLS handshakes completed.
    pub tls_handshakes: Counter,
    /// TLS handshakes that failed (bad input, an untrusted certificate, no common suite, the peer gone).
    pub tls_handshake_failed: Counter,
    /// TLS handshakes aborted at the listener's handshake timeout.
    pub tls_handshake_timeouts: Counter,
    /// Connections closed at accept: over the listener's TLS handshake rate.
    pub tls_handshakes_refused: Counter,
    /// TLS connections closed for a bad record after the handshake.
    pub tls_errors: Counter,
    /// TLS connections whose peer ended the stream without close_notify.
    pub tls_truncated: Counter,
    /// Gauge, refreshed every tick: receive buffers out of the pool (held by `IoBuf`s).
    pub buffers_out: Counter,
    /// Gauge, refreshed every tick: how long the receive buffer held longest by views has
    /// been out, ms (a handler storing received views shows here; copy out to store).
    pub buffer_oldest_ms: Counter,
    /// Refreshed every tick: receive buffers given back to the pool since the start (each was
    /// filled by one receive).
    pub buffers_returned: Counter,
    /// Gauge, refreshed every tick: the buffers the provided ring is kept at (its window).
    pub buffer_window: Counter,
    /// I/O operations armed (monotone; for quiescence).
    pub io_started: Counter,
    /// I/O operations finished (monotone; for quiescence).
    pub io_finished: Counter,
    /// The application's counters ([`AppCounter`]), indexed by [`CounterId`].
    pub app: Box<[std::sync::Arc<Counter>]>,
}

impl WorkerCounters {
    pub(crate) fn new(stages: usize, app: usize) -> WorkerCounters {
        WorkerCounters {
            stages: (0..stages).map(|_| CachePadded::new(StageCounters::default())).collect(),
            loops: Counter::default(),
            enters: Counter::default(),
            cqes: Counter::default(),
            idle_ns: Counter::default(),
            allocations: Counter::default(),
            spin_ns: Counter::default(),
            spins: Counter::default(),
            spin_hits: Counter::default(),
            enobufs: Counter::default(),
            cq_overflow: Counter::default(),
            cq_dropped: Counter::default(),
            accept_backoffs: Counter::default(),
            accepted: Counter::default(),
            connected: Counter::default(),
            connect_failed: Counter::default(),
            backlogged: Counter::default(),
            closed: Counter::default(),
            spliced: Counter::default(),
            sends: Counter::default(),
            zc_sends: Counter::default(),
            parked: Counter::default(),
            udp_received: Counter::default(),
            udp_truncated: Counter::default(),
            udp_sent: Counter::default(),
            udp_send_failed: Counter::default(),
            tls_handshakes: Counter::default(),
            tls_handshake_failed: Counter::default(),
            tls_handshake_timeouts: Counter::default(),
            tls_handshakes_refused: Counter::default(),
            tls_errors: Counter::default(),
            tls_truncated: Counter::default(),
            buffers_out: Counter::default(),
            buffer_oldest_ms: Counter::default(),
            buffers_returned: Counter::default(),
            buffer_window: Counter::default(),
            io_started: Counter::default(),
            io_finished: Counter::default(),
            app: (0..app).map(|_| Default::default()).collect(),
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
    /// Largest last batch size among the replicas.
    pub batch_size: u64,
    /// Replicas taking new events (elastic stages; 0 for fixed ones: all of them).
    pub active_replicas: u64,
    /// Sum of the replicas' admission rates, events/s (0 without admission control).
    pub admission_rate: u64,
    /// Largest last-window p90 response time seen by the replicas' controllers, µs.
    pub admission_p90_us: u64,
    /// Handler panics caught.
    pub panics: u64,
    /// Handler time per event, µs.
    pub service_us: HistSnapshot,
    /// Queue wait per event, µs.
    pub wait_us: HistSnapshot,
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
    /// Heap allocations made on the worker's thread (with [`CountingAlloc`] only).
    pub allocations: u64,
    /// Nanoseconds spent polling for work before sleeping.
    pub spin_ns: u64,
    /// Polls before sleeping.
    pub spins: u64,
    /// Polls that found work.
    pub spin_hits: u64,
    /// ENOBUFS endings of multishot receives.
    pub enobufs: u64,
    /// Reaps that found completions held back by a full completion queue.
    pub cq_overflow: u64,
    /// Completions the kernel dropped.
    pub cq_dropped: u64,
    /// Accept back-offs.
    pub accept_backoffs: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Outbound connections established.
    pub connected: u64,
    /// Outbound connections that failed or timed out.
    pub connect_failed: u64,
    /// Times a connection's unsent output went over its limit.
    pub backlogged: u64,
    /// Connections closed.
    pub closed: u64,
    /// File bytes spliced to sockets.
    pub spliced: u64,
    /// Socket sends submitted.
    pub sends: u64,
    /// Of those, zero-copy sends (SEND_ZC).
    pub zc_sends: u64,
    /// Network events parked behind a refusing stage.
    pub parked: u64,
    /// UDP datagrams delivered.
    pub udp_received: u64,
    /// UDP datagrams too large for a receive buffer (not delivered).
    pub udp_truncated: u64,
    /// UDP sends completed.
    pub udp_sent: u64,
    /// UDP sends refused or failed.
    pub udp_send_failed: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed (bad input, an untrusted certificate, no common suite, the peer gone).
    pub tls_handshake_failed: u64,
    /// TLS handshakes aborted at the listener's handshake timeout.
    pub tls_handshake_timeouts: u64,
    /// Connections closed at accept: over the listener's TLS handshake rate.
    pub tls_handshakes_refused: u64,
    /// TLS connections closed for a bad record after the handshake.
    pub tls_errors: u64,
    /// TLS connections whose peer ended the stream without close_notify.
    pub tls_truncated: u64,
    /// Receive buffers out of the pool at the last tick.
    pub buffers_out: u64,
    /// How long the buffer held longest has been out, ms (at the last tick).
    pub buffer_oldest_ms: u64,
    /// Receive buffers given back to the pool, at the last tick.
    pub buffers_returned: u64,
    /// The provided ring's window at the last tick.
    pub buffer_window: u64,
}

/// An exposition entry: metric name, help text, and how to read it from a snapshot.
type Metric<T> = (&'static str, &'static str, fn(&T) -> u64);

/// A point-in-time copy of every counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per stage, in declaration order.
    pub stages: Vec<StageSnapshot>,
    /// Per worker.
    pub workers: Vec<WorkerSnapshot>,
    /// The application's counters, summed over workers, in declaration order.
    pub app: Vec<AppSnapshot>,
}

/// An application counter ([`AppCounter`]) summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppSnapshot {
    /// Its name as declared, labels included (`http_responses_total{class="2xx"}`).
    pub name: String,
    /// Its help text.
    pub help: String,
    /// The sum.
    pub value: u64,
}

impl Snapshot {
    pub(crate) fn collect<'a>(
        names: impl Iterator<Item = &'a str>,
        app: &[(String, String)],
        workers: &[std::sync::Arc<WorkerCounters>],
    ) -> Snapshot {
        let stages = names
            .enumerate()
            .map(|(i, name)| {
                let mut s = StageSnapshot { name: name.to_string(), ..Default::default() };
                for w in workers {
                    let c = &w.stages[i];
                    s.enqueued += c.enqueued.get();
                    s.refused += c.refused.get();
                    s.processed += c.processed.get();
                    s.queued += c.queued.get();
                    s.batches += c.batches.get();
                    s.batch_size = s.batch_size.max(c.batch_size.get());
                    s.admission_rate += c.admission_rate.get();
                    s.admission_p90_us = s.admission_p90_us.max(c.admission_p90_us.get());
                    s.panics += c.panics.get();
                    s.service_us.merge(&c.service_us.snapshot());
                    s.wait_us.merge(&c.wait_us.snapshot());
                }
                s
            })
            .collect();
        let app = app
            .iter()
            .enumerate()
            .map(|(i, (name, help))| AppSnapshot {
                name: name.clone(),
                help: help.clone(),
                value: workers.iter().map(|w| w.app[i].get()).sum(),
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
                allocations: w.allocations.get(),
                spin_ns: w.spin_ns.get(),
                spins: w.spins.get(),
                spin_hits: w.spin_hits.get(),
                enobufs: w.enobufs.get(),
                cq_overflow: w.cq_overflow.get(),
                cq_dropped: w.cq_dropped.get(),
                accept_backoffs: w.accept_backoffs.get(),
                accepted: w.accepted.get(),
                connected: w.connected.get(),
                connect_failed: w.connect_failed.get(),
                backlogged: w.backlogged.get(),
                closed: w.closed.get(),
                spliced: w.spliced.get(),
                sends: w.sends.get(),
                zc_sends: w.zc_sends.get(),
                parked: w.parked.get(),
                udp_received: w.udp_received.get(),
                udp_truncated: w.udp_truncated.get(),
                udp_sent: w.udp_sent.get(),
                udp_send_failed: w.udp_send_failed.get(),
                tls_handshakes: w.tls_handshakes.get(),
                tls_handshake_failed: w.tls_handshake_failed.get(),
                tls_handshake_timeouts: w.tls_handshake_timeouts.get(),
                tls_handshakes_refused: w.tls_handshakes_refused.get(),
                tls_errors: w.tls_errors.get(),
                tls_truncated: w.tls_truncated.get(),
                buffers_out: w.buffers_out.get(),
                buffer_oldest_ms: w.buffer_oldest_ms.get(),
                buffers_returned: w.buffers_returned.get(),
                buffer_window: w.buffer_window.get(),
            })
            .collect();
        Snapshot { stages, workers, app }
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageSnapshot> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The application counter declared as `name` (labels included), summed over workers.
    pub fn app(&self, name: &str) -> Option<u64> {
        self.app.iter().find(|a| a.name == name).map(|a| a.value)
    }

    /// The Prometheus text exposition (version 0.0.4) of every counter.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let mut o = String::with_capacity(4096);
        let stage_metrics: [Metric<StageSnapshot>; 9] = [
            ("ringstage_stage_panics_total", "Handler panics caught (the event dropped).", |s| s.panics),
            ("ringstage_stage_enqueued_total", "Events accepted into the stage's queues.", |s| s.enqueued),
            ("ringstage_stage_refused_total", "Events refused by a full queue or admission control.", |s| s.refused),
            ("ringstage_stage_processed_total", "Events handled.", |s| s.processed),
            ("ringstage_stage_batches_total", "Non-empty batches run.", |s| s.batches),
            ("ringstage_stage_queue_length", "Events waiting.", |s| s.queued),
            ("ringstage_stage_batch_size", "Last batch size.", |s| s.batch_size),
            ("ringstage_stage_admission_rate", "Admission controller rate, events/s.", |s| s.admission_rate),
            ("ringstage_stage_admission_p90_us", "Admission controller's last p90 response time, us.", |s| {
                s.admission_p90_us
            }),
        ];
        for (name, help, f) in stage_metrics {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in &self.stages {
                let _ = writeln!(o, "{name}{{stage=\"{}\"}} {}", s.name, f(s));
            }
        }
        for (name, help, pick) in [
            ("ringstage_stage_service_seconds", "Handler time per event.", 0),
            ("ringstage_stage_queue_wait_seconds", "Time from enqueue to dequeue.", 1),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} summary");
            for s in &self.stages {
                let h = if pick == 0 { &s.service_us } else { &s.wait_us };
                for q in [0.5, 0.9, 0.99] {
                    let _ = writeln!(
                        o,
                        "{name}{{stage=\"{}\",quantile=\"{q}\"}} {:.6}",
                        s.name,
                        h.quantile(q) as f64 / 1e6
                    );
                }
                let _ = writeln!(o, "{name}_count{{stage=\"{}\"}} {}", s.name, h.count());
            }
        }
        let worker_counters: [Metric<WorkerSnapshot>; 31] = [
            ("ringstage_worker_loops_total", "Event-loop iterations.", |w| w.loops),
            ("ringstage_worker_enters_total", "io_uring_enter calls.", |w| w.enters),
            ("ringstage_worker_completions_total", "Completions reaped.", |w| w.cqes),
            ("ringstage_worker_idle_seconds_total", "Time blocked waiting for completions.", |w| w.idle_ns),
            (
                "ringstage_worker_allocations_total",
                "Heap allocations on the worker's thread (counted with metrics::CountingAlloc as the global allocator).",
                |w| w.allocations,
            ),
            ("ringstage_worker_spin_seconds_total", "Time spent polling for work before sleeping.", |w| w.spin_ns),
            ("ringstage_worker_spins_total", "Polls for work before sleeping.", |w| w.spins),
            ("ringstage_worker_spin_hits_total", "Polls that found work (a sleep and a wake-up saved).", |w| {
                w.spin_hits
            }),
            ("ringstage_worker_enobufs_total", "Receives that found the buffer pool empty.", |w| w.enobufs),
            (
                "ringstage_worker_cq_overflow_total",
                "Reaps that found completions held back by a full completion queue.",
                |w| w.cq_overflow,
            ),
            ("ringstage_worker_accept_backoffs_total", "Accept back-offs on EMFILE/ENFILE/ENOMEM.", |w| {
                w.accept_backoffs
            }),
            ("ringstage_worker_accepted_total", "Connections accepted.", |w| w.accepted),
            ("ringstage_worker_connected_total", "Outbound connections established.", |w| w.connected),
            ("ringstage_worker_connect_failed_total", "Outbound connections that failed or timed out.", |w| {
                w.connect_failed
            }),
            ("ringstage_worker_backlogged_total", "Times a connection's unsent output went over its limit.", |w| {
                w.backlogged
            }),
            ("ringstage_worker_closed_total", "Connections closed.", |w| w.closed),
            ("ringstage_worker_spliced_bytes_total", "File bytes spliced to sockets (zero copy).", |w| w.spliced),
            ("ringstage_worker_zero_copy_sends_total", "Sends submitted as SEND_ZC.", |w| w.zc_sends),
            (
                "ringstage_worker_sends_total",
                "Socket sends submitted (each gathers a connection's queued output).",
                |w| w.sends,
            ),
            ("ringstage_worker_parked_total", "Network events parked behind a stage that refused them.", |w| w.parked),
            ("ringstage_worker_udp_received_total", "UDP datagrams delivered.", |w| w.udp_received),
            (
                "ringstage_worker_udp_truncated_total",
                "UDP datagrams larger than a receive buffer, not delivered.",
                |w| w.udp_truncated,
            ),
            ("ringstage_worker_udp_sent_total", "UDP sends completed.", |w| w.udp_sent),
            ("ringstage_worker_udp_send_failed_total", "UDP sends refused or failed.", |w| w.udp_send_failed),
            ("ringstage_worker_tls_handshakes_total", "TLS handshakes completed.", |w| w.tls_handshakes),
            ("ringstage_worker_tls_handshake_failed_total", "TLS handshakes that failed (bad input, an untrusted certificate, no common suite, the peer gone).", |w| w.tls_handshake_failed),
            ("ringstage_worker_tls_handshake_timeouts_total", "TLS handshakes aborted at the listener's handshake timeout.", |w| w.tls_handshake_timeouts),
            ("ringstage_worker_tls_handshakes_refused_total", "Connections closed at accept: over the listener's TLS handshake rate.", |w| w.tls_handshakes_refused),
            ("ringstage_worker_tls_errors_total", "TLS connections closed for a bad record after the handshake.", |w| w.tls_errors),
            ("ringstage_worker_tls_truncated_total", "TLS connections whose peer ended the stream without close_notify.", |w| w.tls_truncated),
            ("ringstage_worker_buffers_returned_total", "Receive buffers given back to the pool (at the last tick).", |w| {
                w.buffers_returned
            }),
        ];
        let worker_gauges: [Metric<WorkerSnapshot>; 4] = [
            ("ringstage_worker_cq_dropped", "Completions the kernel dropped (it could not hold them back).", |w| {
                w.cq_dropped
            }),
            ("ringstage_worker_buffers_out", "Receive buffers held by IoBufs (at the last tick).", |w| w.buffers_out),
            (
                "ringstage_worker_buffer_oldest_ms",
                "How long the receive buffer held longest by IoBufs has been out, ms (at the last tick).",
                |w| w.buffer_oldest_ms,
            ),
            ("ringstage_worker_buffer_ring_window", "Buffers the provided ring is kept at.", |w| w.buffer_window),
        ];
        for (name, help, f) in worker_gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for w in &self.workers {
                let _ = writeln!(o, "{name}{{worker=\"{}\"}} {}", w.worker, f(w));
            }
        }
        for (name, help, f) in worker_counters {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for w in &self.workers {
                let v = f(w);
                if name.contains("seconds") {
                    let _ = writeln!(o, "{name}{{worker=\"{}\"}} {:.6}", w.worker, v as f64 / 1e9);
                } else {
                    let _ = writeln!(o, "{name}{{worker=\"{}\"}} {v}", w.worker);
                }
            }
        }
        // The application's counters: per metric (name without labels, in order of first
        // declaration) one HELP and TYPE, then all of its series together.
        fn base(a: &AppSnapshot) -> &str {
            a.name.split('{').next().unwrap_or_default()
        }
        for (i, a) in self.app.iter().enumerate() {
            let name = base(a);
            if self.app[..i].iter().any(|b| base(b) == name) {
                continue; // printed with the first of its series
            }
            let _ = writeln!(o, "# HELP {name} {}\n# TYPE {name} counter", a.help);
            for b in self.app[i..].iter().filter(|b| base(b) == name) {
                let _ = writeln!(o, "{} {}", b.name, b.value);
            }
        }
        o
    }

    /// Sum of a worker counter over all workers.
    pub fn total(&self, f: impl Fn(&WorkerSnapshot) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }
}
