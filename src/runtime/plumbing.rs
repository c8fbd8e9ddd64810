//! The typed queues of one stage, made at declaration and dealt out to workers at start.

use std::any::Any;
use std::sync::Arc;

use ringstage_sys::Doorbell;

use crate::queue::{mpsc, spsc};
use crate::stage::injector::InjectTarget;
use crate::stage::Stamped;

/// Type-erased plumbing, so the builder can hold stages of different event types.
pub(crate) trait Plumbing: Send {
    /// Per worker: its `WorkerParts<E>`; and the stage's `Arc<[InjectTarget<E>]>`.
    fn split(self: Box<Self>, bells: &[Arc<Doorbell>]) -> (Vec<Box<dyn Any + Send>>, Box<dyn Any + Send + Sync>);
}

/// What one worker gets of one stage.
pub(crate) struct WorkerParts<E> {
    /// Per replica: the SPSC producer from this worker (`None` for a replica on this worker).
    pub(crate) producers: Option<Vec<Option<spsc::Producer<Stamped<E>>>>>,
    /// If a replica lives here: its consumers (one per other worker) and its injection queue.
    #[allow(clippy::type_complexity)]
    pub(crate) consumer: Option<(Vec<spsc::Consumer<Stamped<E>>>, Arc<mpsc::Queue<Stamped<E>>>)>,
    pub(crate) router: Option<fn(&E) -> usize>,
}

pub(crate) struct TypedPlumbing<E> {
    /// `[worker][replica]`.
    producers: Vec<Vec<Option<spsc::Producer<Stamped<E>>>>>,
    /// `[replica]`.
    consumers: Vec<Vec<spsc::Consumer<Stamped<E>>>>,
    inject: Vec<Arc<mpsc::Queue<Stamped<E>>>>,
    replica_workers: Vec<usize>,
    router: Option<fn(&E) -> usize>,
}

impl<E: Send + 'static> TypedPlumbing<E> {
    /// One SPSC ring per (producer worker, replica) for every producer worker other than the
    /// replica's own, plus one injection ring per replica.
    pub(crate) fn new(workers: usize, replicas: &[usize], capacity: usize, router: Option<fn(&E) -> usize>) -> Self {
        let mut producers: Vec<Vec<Option<spsc::Producer<Stamped<E>>>>> =
            (0..workers).map(|_| (0..replicas.len()).map(|_| None).collect()).collect();
        let mut consumers = Vec::new();
        for (r, &home) in replicas.iter().enumerate() {
            let mut cs = Vec::new();
            for (p, row) in producers.iter_mut().enumerate() {
                if p != home && home < workers {
                    let (tx, rx) = spsc::channel(capacity);
                    row[r] = Some(tx);
                    cs.push(rx);
                }
            }
            consumers.push(cs);
        }
        let inject = replicas.iter().map(|_| Arc::new(mpsc::Queue::new(capacity))).collect();
        TypedPlumbing { producers, consumers, inject, replica_workers: replicas.to_vec(), router }
    }
}

impl<E: Send + 'static> Plumbing for TypedPlumbing<E> {
    fn split(self: Box<Self>, bells: &[Arc<Doorbell>]) -> (Vec<Box<dyn Any + Send>>, Box<dyn Any + Send + Sync>) {
        let TypedPlumbing { producers, consumers, inject, replica_workers, router } = *self;
        let targets: Arc<[InjectTarget<E>]> = inject
            .iter()
            .zip(&replica_workers)
            .map(|(q, &w)| InjectTarget { queue: q.clone(), bell: bells[w].clone() })
            .collect();
        let mut consumers: Vec<Option<Vec<spsc::Consumer<Stamped<E>>>>> = consumers.into_iter().map(Some).collect();
        let per_worker = producers
            .into_iter()
            .enumerate()
            .map(|(w, row)| {
                let consumer = replica_workers
                    .iter()
                    .position(|&rw| rw == w)
                    .map(|r| (consumers[r].take().expect("one replica per worker"), inject[r].clone()));
                Box::new(WorkerParts { producers: Some(row), consumer, router }) as Box<dyn Any + Send>
            })
            .collect();
        (per_worker, Box::new(targets))
    }
}
