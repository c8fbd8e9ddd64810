//! Descriptors and the limits on them.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
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
