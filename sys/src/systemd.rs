//! systemd's socket activation (`LISTEN_FDS`) and readiness notification (`NOTIFY_SOCKET`),
//! as `sd_listen_fds(3)` and `sd_notify(3)` define them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST: RawFd = 3;

/// Descriptors passed to this process by socket activation, with their names
/// (`LISTEN_FDNAMES`, `"unknown"` where none is given), taken over (made close-on-exec and
/// owned). Empty when `LISTEN_PID` is not this process (the variables were meant for a
/// parent) or `LISTEN_FDS` is unset.
///
/// Call it once: a second call would take ownership of the same descriptors again. The
/// variables are left as they are.
pub fn listen_fds() -> io::Result<Vec<(OwnedFd, String)>> {
    let var = |name: &str| std::env::var(name).ok();
    let Some(pid) = var("LISTEN_PID") else { return Ok(Vec::new()) };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let n: RawFd = match var("LISTEN_FDS") {
        None => return Ok(Vec::new()),
        Some(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&n| (0..=4096).contains(&n))
            .ok_or_else(|| bad(format!("LISTEN_FDS={v:?} is not a count")))?,
    };
    let names: Vec<String> =
        var("LISTEN_FDNAMES").map(|v| v.split(':').map(str::to_string).collect()).unwrap_or_default();
    let mut fds = Vec::with_capacity(n as usize);
    for fd in FIRST..FIRST + n {
        // SAFETY: F_GETFD reads the flags of `fd` and takes no pointers; it fails with EBADF
        // when `fd` is not open, which is checked before the descriptor is taken over.
        let flags = unsafe { syscall!(fcntl(fd, libc::F_GETFD)) }
            .map_err(|e| bad(format!("LISTEN_FDS={n}, but descriptor {fd} is not open: {e}")))?;
        // SAFETY: as above; sets the close-on-exec flag of the open `fd`.
        unsafe { syscall!(fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC)) }?;
        // SAFETY: `fd` is open (checked above) and, by the socket-activation protocol, passed to
        // this process for it to own; nothing else in the process takes it (see the doc).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = names.get((fd - FIRST) as usize).cloned().unwrap_or_else(|| "unknown".to_string());
        fds.push((owned, name));
    }
    Ok(fds)
}

/// Checks that `fd` is a listening stream socket, with an error that says what it is instead.
pub fn check_listening_stream(fd: &OwnedFd) -> io::Result<()> {
    let get = |opt: i32| -> io::Result<i32> {
        let mut v: i32 = 0;
        let mut len = size_of::<i32>() as libc::socklen_t;
        // SAFETY: `v` is a live i32 and `len` holds its size.
        unsafe { syscall!(getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, (&mut v as *mut i32).cast(), &mut len)) }?;
        Ok(v)
    };
    let not =
        |what: String| io::Error::new(io::ErrorKind::InvalidInput, format!("descriptor {} {what}", fd.as_raw_fd()));
    let ty = get(libc::SO_TYPE).map_err(|e| not(format!("is not a socket ({e})")))?;
    if ty != libc::SOCK_STREAM {
        let kind = match ty {
            libc::SOCK_DGRAM => "a datagram socket",
            libc::SOCK_SEQPACKET => "a seqpacket socket",
            _ => "a socket of another type",
        };
        return Err(not(format!("is {kind}, not a stream socket")));
    }
    if get(libc::SO_ACCEPTCONN)? == 0 {
        return Err(not("is a stream socket that is not listening".to_string()));
    }
    Ok(())
}

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=...`) to the service manager when
/// `NOTIFY_SOCKET` names one (a path, or an abstract name starting with `@`). Returns whether
/// it was sent: `false` when the variable is unset (not run under a service manager).
pub fn notify(state: &str) -> io::Result<bool> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&path)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}
