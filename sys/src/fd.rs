//! Descriptors and the limits on them.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Closes `fd`, which the caller owns and will not use again (errors are of no use then:
/// the descriptor is released either way).
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and gives it up; close takes no pointers.
    let _ = unsafe { syscall!(close(fd)) };
}

/// The soft limit on this process's open descriptors (`RLIMIT_NOFILE`).
pub fn nofile_limit() -> io::Result<u64> {
    rlimit(libc::RLIMIT_NOFILE)
}

/// The soft limit on this process's locked memory (`RLIMIT_MEMLOCK`), in bytes.
pub fn memlock_limit() -> io::Result<u64> {
    rlimit(libc::RLIMIT_MEMLOCK)
}

fn rlimit(which: libc::__rlimit_resource_t) -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the live local `lim`.
    unsafe { syscall!(getrlimit(which, &mut lim)) }?;
    Ok(lim.rlim_cur)
}

/// Opens directory `path` as an `O_PATH` handle (close-on-exec), for operations relative to
/// it (`openat2` beneath it).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string; open takes no other pointers.
    let fd = unsafe { syscall!(open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)) }?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A duplicate of `fd` (close-on-exec): another handle to the same open socket.
pub fn duplicate(fd: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes no pointers; `fd` is open for the borrow.
    let new = unsafe { syscall!(fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0)) }?;
    // SAFETY: `new` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Reads into all of `buf` from `offset` of `fd` (a regular file), retrying short reads;
/// returns the bytes read, fewer than `buf.len()` only at the end of the file.
pub fn pread_exact(fd: std::os::fd::RawFd, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a live, writable buffer of `rest.len()` bytes.
        let n =
            unsafe { syscall!(pread(fd, rest.as_mut_ptr().cast(), rest.len(), (offset + done as u64) as libc::off_t)) };
        match n {
            Ok(0) => break,
            Ok(n) => done += n as usize,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_and_directories_open() {
        assert!(nofile_limit().unwrap() > 0);
        memlock_limit().unwrap();
        let d = open_dir(Path::new("/")).unwrap();
        drop(d);
        let e = open_dir(Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
    }
}
