//! [`Setup`]: what a handler's factory gets on its worker, to take sinks, timers, wakers and
//! counters before the worker runs.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use super::plumbing::WorkerParts;
use super::{Handle, Shared, StageMeta};
use crate::fs::FsDriver;
use crate::metrics::{AppCounter, CounterId, WorkerCounters};
use crate::net::{Conn, Net, NetCmd};
use crate::stage::{LocalQueue, OnPanic, PanicKey, Sink, SinkInner, StageId, Stamped};

/// Per-worker setup context: hands out sinks while replicas are constructed.
pub struct Setup<'a> {
    pub(super) worker: usize,
    pub(super) workers: usize,
    pub(super) meta: &'a [StageMeta],
    pub(super) parts: &'a mut [Option<Box<dyn Any + Send>>],
    pub(super) sinks: Vec<Option<Rc<dyn Any>>>,
    pub(super) locals: Vec<Option<Rc<dyn Any>>>,
    pub(super) timers: Vec<Option<Rc<dyn Any>>>,
    pub(super) wakers: Vec<Option<Rc<Cell<bool>>>>,
    pub(super) counters: Arc<WorkerCounters>,
    pub(super) wake: Rc<Cell<u64>>,
    pub(super) clock: Rc<Cell<u32>>,
    pub(super) now: Rc<Cell<std::time::Instant>>,
    pub(super) controllers: Vec<Option<Rc<RefCell<crate::control::OverloadController>>>>,
    pub(super) shared: Arc<Shared>,
    /// This worker's network and file drivers, shared by the worker (completions) and the
    /// built-in stages' handlers (commands).
    pub(super) net: Rc<RefCell<Net>>,
    pub(super) fs: Rc<RefCell<FsDriver>>,
    /// The network stage, if declared (to abort the connection of an event a handler
    /// panicked on).
    pub(super) net_stage: Option<StageId<NetCmd>>,
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

    /// This worker's slot of application counter `id` ([`Builder::counter`](super::Builder::counter)).
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

    /// This worker's network driver.
    pub(crate) fn net_driver(&self) -> Rc<RefCell<Net>> {
        self.net.clone()
    }

    /// This worker's file driver.
    pub(crate) fn fs_driver(&self) -> Rc<RefCell<FsDriver>> {
        self.fs.clone()
    }

    /// What a panic on an event of stage `idx` does beyond dropping it: aborts the event's
    /// connection, if the stage knows it ([`Builder::conn_events`](super::Builder::conn_events)) and a
    /// network stage exists.
    pub(crate) fn on_panic<E: Send + 'static>(&mut self, idx: usize) -> Option<OnPanic<E>> {
        let key = *self.meta[idx].conn_of.as_ref()?.downcast_ref::<PanicKey<E>>()?;
        let net = self.sink(self.net_stage?);
        Some(OnPanic {
            key,
            act: Box::new(move |c: u128| {
                if net.try_enqueue(NetCmd::Abort { conn: Conn::unpack(c) }).is_err() {
                    log::warn!("ringstage: the network stage refused the abort of a connection whose handler panicked");
                }
            }),
        })
    }

    /// The admission controller of stage `idx`'s replica on this worker, if it has one.
    pub(crate) fn controller(&mut self, idx: usize) -> Option<Rc<RefCell<crate::control::OverloadController>>> {
        let cfg = self.meta[idx].cfg.overload.clone()?;
        let r = self.meta[idx].cfg.workers.iter().position(|&w| w == self.worker)?;
        let gate = self.meta[idx].gates.as_ref().expect("a gate per controlled replica")[r].clone();
        let epoch = self.shared.epoch;
        let c = self.controllers[idx].get_or_insert_with(|| {
            Rc::new(RefCell::new(crate::control::OverloadController::with_gate(cfg, gate, Some(epoch))))
        });
        Some(c.clone())
    }

    /// A [`Timer`](crate::stage::Timer) into stage `id`'s replica on this worker: events it
    /// schedules are handed to that replica's handler once their delay has passed. Typically
    /// taken by the stage's own handler to send itself events later (timeouts, retries,
    /// back-off); any stage on the same worker may take one. Allocates the replica's timer
    /// table ([`StageConfig::timers`](crate::stage::StageConfig::timers)) on first use.
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
    /// that replica's [`Handler::woken`](crate::stage::Handler::woken) hook in the worker's next loop iteration. Typically
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

    pub(crate) fn local<E: Send + 'static>(&mut self, idx: usize) -> Rc<LocalQueue<E>> {
        let cap = self.meta[idx].cfg.capacity;
        let rc = self.locals[idx].get_or_insert_with(|| Rc::new(LocalQueue::<E>::new(cap)) as Rc<dyn Any>);
        rc.clone().downcast::<LocalQueue<E>>().expect("local queue type matches stage")
    }

    #[allow(clippy::type_complexity)]
    pub(crate) fn take_consumer<E: Send + 'static>(
        &mut self,
        idx: usize,
    ) -> (Vec<crate::queue::spsc::Consumer<Stamped<E>>>, Arc<crate::queue::mpsc::Queue<Stamped<E>>>) {
        self.parts::<E>(idx).consumer.take().expect("one replica per worker")
    }
}
