//! A replica's wake-up call to itself: "run my `woken` hook in the next loop iteration".

use std::cell::Cell;
use std::rc::Rc;

/// Asks for the [`Handler::woken`](super::Handler::woken) hook of one replica (a stage on one
/// worker) to run at the start of that replica's next visit, in its worker's next loop
/// iteration; the worker does not sleep while a wake-up is pending. Taken at set-up with
/// [`Setup::waker`](crate::runtime::Setup::waker), usable from anything on that worker (the
/// replica's handler, an [`Outbox`](super::Outbox) it owns, another stage's handler there).
///
/// For work that must be retried soon but has no event to carry it: output a full queue
/// refused (what [`Outbox`](super::Outbox) does with it), requests held back in order. Waking
/// twice before the hook runs runs it once. Not `Send`: it belongs to its worker.
///
/// Cost: `wake` is one store to a flag the worker checks once per visit of the replica.
#[derive(Clone)]
pub struct Waker {
    flag: Rc<Cell<bool>>,
}

impl Waker {
    pub(crate) fn new(flag: Rc<Cell<bool>>) -> Waker {
        Waker { flag }
    }

    /// Asks for the replica's `woken` hook to run in the next loop iteration.
    pub fn wake(&self) {
        self.flag.set(true);
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker").field("pending", &self.flag.get()).finish()
    }
}
