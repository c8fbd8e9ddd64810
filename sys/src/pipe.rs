//! Pipes for splicing files to sockets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec pipe, enlarged towards `size` bytes where the system allows
/// (`F_SETPIPE_SZ` is capped by `/proc/sys/fs/pipe-max-size` and the user's pipe pages).
/// Returns (read end, write end, capacity in bytes).
pub fn pipe(size: u32) -> io::Result<(OwnedFd, OwnedFd, u32)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the live two-element array.
    unsafe { syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK)) }?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own, with an integer argument; a refusal leaves the
    // default size, which the query below reports.
    let _ = unsafe { syscall!(fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int)) };
    // SAFETY: as above, a query without argument.
    let cap = unsafe { syscall!(fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)) }?;
    Ok((r, w, cap as u32))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pipe_reports_its_capacity() {
        let (r, w, cap) = super::pipe(1 << 16).unwrap();
        assert!(cap >= 4096, "{cap}");
        drop((r, w));
    }
}
