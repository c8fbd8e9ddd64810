//! [`SplicePipe`]: the pipe a file transfer goes through, taken before anything is promised.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The pipe of one file transfer by splice ([`NetCmd::SendFile`](super::NetCmd::SendFile)):
/// file → pipe → socket, a pipe's worth at a time, so the file's bytes never enter user memory.
///
/// Made by the stage that answers, *before* it commits a response head: a process out of
/// descriptors (`EMFILE`) finds out here, while it can still answer 503, instead of after a
/// `200 OK` it can no longer honour. The network stage closes it when the transfer ends.
///
/// Cost: `pipe2` and two `fcntl` calls (three syscalls), for a transfer of at least the page
/// cache's worth of a file; no allocation.
#[derive(Debug)]
pub struct SplicePipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Bytes the pipe holds: the most one splice moves.
    pub(crate) capacity: u32,
}

impl SplicePipe {
    /// A pipe enlarged to 1 MiB where the system allows (`/proc/sys/fs/pipe-max-size`), else
    /// the default 64 KiB.
    ///
    /// # Errors
    /// `EMFILE`/`ENFILE` when the process or system is out of descriptors: answer the request
    /// with a refusal (HTTP 503), not a head whose body cannot follow.
    pub fn new() -> std::io::Result<SplicePipe> {
        let (read, write, capacity) = ringstage_sys::pipe::pipe(1 << 20)?;
        Ok(SplicePipe { read, write, capacity })
    }

    /// How many bytes one splice through it moves at most.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub(crate) fn fds(&self) -> (RawFd, RawFd) {
        (self.read.as_raw_fd(), self.write.as_raw_fd())
    }
}
