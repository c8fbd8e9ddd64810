//! The reactor: one worker's io_uring and what every operation on it needs.
//!
//! It owns the ring, the receive-buffer pool registered with it, the worker's counters and its
//! loop clock. Drivers above it (the network stage's, the file stage's) keep their own
//! records of the operations they start and name them in each SQE's `user_data` with a typed
//! [`Token`]; the worker hands each completion to the driver its token names. Nothing here
//! knows what a connection or a file is.
//!
//! Submission is batched: pushes only queue SQEs, and the worker submits once per loop
//! iteration (or when the submission queue is full).

mod target;
mod token;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};
use ringstage_sys::Features;

pub(crate) use target::{on_target, Target};
pub(crate) use token::{OpKind, Token};

use crate::buf::BufPool;
use crate::metrics::WorkerCounters;

/// One worker's ring and the state every driver shares. Lives on the worker thread.
pub(crate) struct Reactor {
    pub(crate) worker: usize,
    pub(crate) ring: IoUring,
    pub(crate) features: Features,
    /// Receive buffers (a provided-buffer ring registered with `ring`). Declared after it:
    /// the ring is dropped first, ending the registration.
    pub(crate) pool: BufPool,
    pub(crate) counters: Arc<WorkerCounters>,
    /// Set at the end of the loop iteration in which shutdown was asked.
    pub(crate) draining: bool,
    /// The runtime's shutdown flag (`draining` follows it at the end of a loop iteration).
    pub(crate) stop: Arc<AtomicBool>,
    /// Refreshed once per loop iteration.
    pub(crate) now: Instant,
    /// `now` in µs since the runtime's epoch (wrapping), the unit of queue stamps.
    pub(crate) now_us: u32,
}

impl Reactor {
    /// Whether the runtime was asked to shut down (at once, not only from the next iteration).
    pub(crate) fn stopping(&self) -> bool {
        self.draining || self.stop.load(Ordering::Relaxed)
    }

    /// Queues SQEs as one group; when the submission queue is full it submits first.
    ///
    /// # Safety
    /// Every buffer, `msghdr`, iovec and timespec the entries point to must stay valid and
    /// unmoved until the kernel has consumed them (until completion for buffers and iovecs).
    pub(crate) unsafe fn push(&mut self, sqes: &[squeue::Entry]) -> io::Result<()> {
        for attempt in 0..2 {
            // SAFETY: forwarded contract.
            if unsafe { self.ring.submission().push_multiple(sqes) }.is_ok() {
                return Ok(());
            }
            if attempt == 0 {
                self.counters.enters.add(1);
                self.ring.submit().map_err(|e| ringstage_sys::ring::explain("io_uring_enter", e))?;
            }
        }
        Err(io::Error::other("submission queue stays full after submit"))
    }

    /// Like [`Reactor::push`], for an SQE that refers to no user memory (cancel, close,
    /// accept, a receive into provided buffers).
    pub(crate) fn push_plain(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        // SAFETY: the entry points at no user memory.
        unsafe { self.push(std::slice::from_ref(&sqe)) }
    }

    /// Queues `sqe` (already carrying its token) linked to a timeout of `*limit`: if the
    /// timeout fires first the kernel cancels the operation, which then completes with
    /// `ECANCELED` (or `EINTR` if it was blocked in an io-wq worker). The timeout's own
    /// completion is ignored.
    ///
    /// # Safety
    /// As [`Reactor::push`] for `sqe`; and `limit` must stay valid until the SQEs are
    /// submitted (when the kernel copies it).
    pub(crate) unsafe fn push_linked_timeout(
        &mut self,
        sqe: squeue::Entry,
        limit: *const types::Timespec,
    ) -> io::Result<()> {
        let timeout = opcode::LinkTimeout::new(limit).build().user_data(Token::IGNORE.encode());
        // SAFETY: forwarded contract, the timespec's included.
        unsafe { self.push(&[sqe.flags(squeue::Flags::IO_LINK), timeout]) }
    }

    /// Asks the kernel to cancel the operation `target`; that operation's own completion
    /// reports the outcome.
    pub(crate) fn cancel(&mut self, target: Token) -> io::Result<()> {
        self.push_plain(opcode::AsyncCancel::new(target.encode()).build().user_data(Token::IGNORE.encode()))
    }

    /// Releases `target` now, outside the ring (the SQ stays full, or the worker is tearing
    /// down). The caller owns it and has no operation in flight on it.
    pub(crate) fn close_now(&self, target: Target) {
        match target {
            // Emptying the slot drops the table's reference to the file.
            Target::Fixed(slot) => {
                let _ = self.ring.submitter().register_files_update(slot, &[-1]);
            }
            Target::Fd(fd) => ringstage_sys::fd::close(fd),
        }
    }
}

/// Whether an operation linked to a timeout ended because the timeout fired.
pub(crate) fn timed_out(res: i32) -> bool {
    res == -libc::ECANCELED || res == -libc::EINTR
}
