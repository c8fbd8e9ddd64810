//! A worker's I/O core: its ring, buffer pool and network state.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};

use crate::buf::BufPool;
use crate::fs::OpDone;
use crate::metrics::WorkerCounters;
use crate::net::Net;

/// `user_data` layout: `kind:8 | gen:24 | index:32`. The index is a slab key (a connection or
/// listener slot), the generation guards against a reused slot.
pub(crate) mod token {
    pub(crate) const DOORBELL: u8 = 1;
    pub(crate) const ACCEPT: u8 = 2;
    pub(crate) const BACKOFF: u8 = 3;
    pub(crate) const RECV: u8 = 4;
    pub(crate) const SEND: u8 = 5;
    pub(crate) const CANCEL: u8 = 7;
    pub(crate) const CLOSE: u8 = 8;
    pub(crate) const OP: u8 = 9;
    pub(crate) const SPLICE_IN: u8 = 10;
    pub(crate) const SPLICE_OUT: u8 = 11;
    /// The linked timeout of a generic op (its completion is ignored).
    pub(crate) const OP_TIMEOUT: u8 = 12;
    /// A connection's `shutdown(SHUT_WR)` ([`crate::net::NetCmd::Shutdown`]).
    pub(crate) const SHUTDOWN: u8 = 13;

    #[inline]
    pub(crate) fn make(kind: u8, idx: u32, gen: u32) -> u64 {
        (kind as u64) << 56 | ((gen as u64) & 0xff_ffff) << 32 | idx as u64
    }

    #[inline]
    pub(crate) fn parse(ud: u64) -> (u8, u32, u32) {
        ((ud >> 56) as u8, ud as u32, ((ud >> 32) & 0xff_ffff) as u32)
    }

    /// Whether `gen` (full width) matches the 24 bits kept in a token.
    #[inline]
    pub(crate) fn same_gen(gen: u32, token_gen: u32) -> bool {
        gen & 0xff_ffff == token_gen
    }
}

/// One worker's I/O state. Lives on the worker thread; handlers reach it through `Context`.
pub(crate) struct Io {
    pub(crate) worker: usize,
    pub(crate) ring: IoUring,
    pub(crate) features: ringstage_sys::Features,
    pub(crate) pool: BufPool,
    pub(crate) net: Net,
    /// Records of generic ops (file I/O): completion callbacks keyed by `user_data`.
    pub(crate) ops: slab::Slab<OpDone>,
    /// Time limit linked to each generic op (boxed: the kernel reads it when the SQE is
    /// submitted, which is after `submit_op` returns).
    pub(crate) op_timeout: Option<Box<types::Timespec>>,
    pub(crate) counters: Arc<WorkerCounters>,
    pub(crate) draining: bool,
    /// The runtime's shutdown flag (`draining` follows it at the end of a loop iteration).
    pub(crate) stop: Arc<std::sync::atomic::AtomicBool>,
    /// Refreshed once per loop iteration.
    pub(crate) now: Instant,
    /// `now` in µs since the runtime's epoch (wrapping), the unit of queue stamps.
    pub(crate) now_us: u32,
}

impl Io {
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
                self.ring.submit()?;
            }
        }
        Err(io::Error::other("submission queue stays full after submit"))
    }

    /// Submits a generic op whose completion runs `done`. If `bounded` and the worker has an op
    /// time limit, the op is linked to a timeout (two SQEs, queued together or not at all);
    /// if the timeout fires first the kernel cancels the op, and `done` gets `-ETIMEDOUT`.
    ///
    /// # Safety
    /// As [`Io::push`]: whatever the SQE points to must stay valid until completion (keep it in
    /// `done`'s captures, on the heap).
    pub(crate) unsafe fn submit_op(&mut self, sqe: squeue::Entry, done: OpDone, bounded: bool) {
        let limit = self.op_timeout.as_deref().filter(|_| bounded).map(|ts| ts as *const types::Timespec);
        // SAFETY: forwarded contract; the worker's timespec is boxed in `self` and outlives the
        // submission, when the kernel copies it.
        unsafe { self.submit_op_within(sqe, done, limit) }
    }

    /// Like [`Io::submit_op`], with the op's own time limit, if any, instead of the worker's.
    ///
    /// # Safety
    /// As [`Io::submit_op`]; and `limit`, if any, must point to a timespec that stays valid
    /// until the SQEs are submitted (keep it boxed in `done`'s captures).
    pub(crate) unsafe fn submit_op_within(
        &mut self,
        sqe: squeue::Entry,
        done: OpDone,
        limit: Option<*const types::Timespec>,
    ) {
        let linked = limit.is_some();
        let done: OpDone = if linked {
            // A linked op cancelled by its timeout ends with ECANCELED, or EINTR when it was
            // blocked in an io-wq worker (interrupted by the cancellation).
            Box::new(move |res, io| {
                let res = if res == -libc::ECANCELED || res == -libc::EINTR { -libc::ETIMEDOUT } else { res };
                done(res, io)
            })
        } else {
            done
        };
        let key = self.ops.insert(done);
        let sqe = sqe.user_data(token::make(token::OP, key as u32, 0));
        let pushed = match limit {
            Some(ts) => {
                let limit =
                    opcode::LinkTimeout::new(ts).build().user_data(token::make(token::OP_TIMEOUT, key as u32, 0));
                // SAFETY: forwarded contract, the timespec's included.
                unsafe { self.push(&[sqe.flags(squeue::Flags::IO_LINK), limit]) }
            }
            // SAFETY: forwarded contract.
            None => unsafe { self.push(&[sqe]) },
        };
        if pushed.is_err() {
            let done = self.ops.remove(key);
            return done(-libc::EBUSY, self);
        }
        self.counters.io_started.add(1);
    }

    /// Runs the callback of a completed generic op.
    pub(crate) fn complete_op(&mut self, key: u32, res: i32) {
        if let Some(done) = self.ops.try_remove(key as usize) {
            done(res, self);
            // After the callback enqueued what it produced: see `Shared::quiescent`.
            self.counters.io_finished.add(1);
        }
    }

    /// Like [`Io::push`], for SQEs that refer to no user memory (cancel, close, accept, recv
    /// with provided buffers).
    pub(crate) fn push_plain(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        // SAFETY: the entry points at no user memory.
        unsafe { self.push(std::slice::from_ref(&sqe)) }
    }
}
