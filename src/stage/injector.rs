use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ringstage_sys::Doorbell;

use super::Stamped;

use crate::queue::mpsc;

pub(crate) struct InjectTarget<E> {
    pub(crate) queue: Arc<mpsc::Queue<Stamped<E>>>,
    pub(crate) bell: Arc<Doorbell>,
}

/// Counters of events injected from outside the runtime, per stage.
#[derive(Debug, Default)]
pub(crate) struct InjectCounters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) refused: AtomicU64,
}

/// Puts events into a stage from any thread outside the runtime (`Send + Clone`).
///
/// Each replica has one MPSC inbound ring for injected events; injection picks replicas
/// round-robin, rings the doorbell of a sleeping worker, and hands the event back when the ring
/// is full.
///
/// Cost: one relaxed `fetch_add` (the round-robin), one MPSC push (a CAS), and a doorbell
/// write only when the worker sleeps.
///
/// # Examples
///
/// A thread outside the runtime feeding a stage (a timer thread, a control socket, a test):
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use ringstage::prelude::*;
///
/// let sum = Arc::new(AtomicU64::new(0));
/// let mut b = Runtime::builder(1);
/// let add = b.stage::<u64>("add", StageConfig::on([0]));
/// let total = sum.clone();
/// b.handler(add, move |_| {
///     let total = total.clone();
///     handler_fn(move |n: u64, _cx: &mut Context<'_>| { total.fetch_add(n, Ordering::Relaxed); })
/// });
/// let rt = b.start()?;
/// let inject = rt.injector(add);
/// std::thread::spawn(move || {
///     for n in 1..=10 {
///         while inject.try_enqueue(n).is_err() {
///             std::thread::yield_now(); // the stage's ring is full: try again
///         }
///     }
/// })
/// .join()
/// .unwrap();
/// while sum.load(Ordering::Relaxed) < 55 {
///     std::thread::yield_now();
/// }
/// rt.shutdown();
/// rt.join()?;
/// # Ok::<(), ringstage::Error>(())
/// ```
pub struct Injector<E> {
    pub(crate) targets: Arc<[InjectTarget<E>]>,
    pub(crate) rr: Arc<AtomicUsize>,
    pub(crate) counters: Arc<InjectCounters>,
    pub(crate) epoch: Instant,
    /// Elastic stages: the replicas taking new events.
    pub(crate) active: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Stages with admission control: per replica, its gate.
    pub(crate) gates: Option<Arc<[Arc<crate::control::Gate>]>>,
}

impl<E> Clone for Injector<E> {
    fn clone(&self) -> Self {
        Injector {
            targets: self.targets.clone(),
            rr: self.rr.clone(),
            counters: self.counters.clone(),
            epoch: self.epoch,
            active: self.active.clone(),
            gates: self.gates.clone(),
        }
    }
}

impl<E> std::fmt::Debug for Injector<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").field("replicas", &self.targets.len()).finish()
    }
}

impl<E: Send + 'static> Injector<E> {
    /// Puts `event` into the stage, or hands it back if the chosen replica's ring is full or
    /// its admission gate (stages with overload control) refuses it.
    pub fn try_enqueue(&self, event: E) -> Result<(), E> {
        let n = self.targets.len();
        let r = super::next_active(self.rr.fetch_add(1, Ordering::Relaxed) % n, n, super::active_mask(&self.active));
        let t = &self.targets[r];
        let at = self.epoch.elapsed().as_micros() as u32;
        if self.gates.as_ref().is_some_and(|g| !g[r].admit_n(u8::MAX, 1, at)) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(event);
        }
        // Count before the push so the event is never visible as processed-but-not-enqueued.
        self.counters.enqueued.fetch_add(1, Ordering::SeqCst);
        match t.queue.push(Stamped { at, ev: event }) {
            Ok(()) => {
                t.bell.ring();
                Ok(())
            }
            Err(e) => {
                self.counters.enqueued.fetch_sub(1, Ordering::SeqCst);
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(e.ev)
            }
        }
    }
}
