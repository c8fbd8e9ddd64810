//! Cross-core doorbells: an eventfd plus a "going to sleep" flag.
//!
//! A worker sets [`Doorbell::prepare_sleep`] before it blocks in `io_uring_enter`, re-checks its
//! queues, and only then waits; it keeps an eventfd read armed on its ring. A producer that made
//! work visible calls [`Doorbell::ring`], which costs one fence and one load unless the worker is
//! really asleep, in which case it writes the eventfd (one syscall) and clears the flag.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};

use crossbeam_utils::CachePadded;

/// An eventfd doorbell with a sleep flag. `Sync`: any thread may ring it.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
    sleeping: CachePadded<AtomicBool>,
}

impl Doorbell {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { crate::syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)) }?;
        Ok(Doorbell {
            // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            sleeping: CachePadded::new(AtomicBool::new(false)),
        })
    }

    /// The eventfd, for arming a read on the owner's ring.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Owner: announce that it is about to sleep. Re-check for work after this and before
    /// waiting; call [`Doorbell::awake`] when not waiting after all or after waking.
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Owner: clear the sleep flag.
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Producer: wake the owner if it announced sleep. Call after publishing work.
    /// Cost when the owner is awake: one fence and one load; no syscall.
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::SeqCst) {
            self.ring_always();
        }
    }

    /// Writes the eventfd unconditionally. Async-signal-safe (one `write`).
    pub fn ring_always(&self) {
        Self::ring_fd(self.fd.as_raw_fd());
    }

    /// Writes `1` to eventfd `fd`. Async-signal-safe; for signal handlers holding a raw fd.
    pub fn ring_fd(fd: RawFd) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local; an eventfd write only fails with EAGAIN when
        // the counter would overflow, in which case the owner is already woken.
        let _ = unsafe { syscall!(write(fd, (&one as *const u64).cast(), 8)) };
    }
}
