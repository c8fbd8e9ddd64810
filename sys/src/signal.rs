//! Termination signals taken synchronously: blocked in every thread, read from a signalfd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The set of `signals`.
fn set_of(signals: &[i32]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset.
    unsafe { syscall!(sigemptyset(&mut set)) }?;
    for &s in signals {
        // SAFETY: as above; an invalid signal number is an EINVAL error, not UB.
        unsafe { syscall!(sigaddset(&mut set, s)) }?;
    }
    Ok(set)
}

/// Blocks `signals` in the calling thread (and the threads it spawns afterwards, which inherit
/// its mask), so that they wait to be read from a [`SignalFd`] instead of running a handler or
/// their default action.
pub fn block(signals: &[i32]) -> io::Result<libc::sigset_t> {
    let set = set_of(signals)?;
    // SAFETY: `set` is initialised; the old mask is not wanted. pthread_sigmask returns an
    // error number instead of setting errno, so it is not a `syscall!`.
    match unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } {
        0 => Ok(set),
        rc => Err(io::Error::from_raw_os_error(rc)),
    }
}

/// A descriptor that becomes readable when one of a set of blocked signals is pending.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// A non-blocking, close-on-exec signalfd for `set` (as returned by [`block`]).
    pub fn new(set: &libc::sigset_t) -> io::Result<SignalFd> {
        // SAFETY: `set` is a live, initialised sigset; -1 asks for a new descriptor.
        let fd = unsafe { syscall!(signalfd(-1, set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)) }?;
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(SignalFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// The descriptor, to wait on.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Takes one pending signal: its number, or `None` if none is pending.
    pub fn take(&self) -> io::Result<Option<i32>> {
        // SAFETY: signalfd_siginfo is plain data; all-zero is valid.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into the live `info`.
        match unsafe { syscall!(read(self.fd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size)) } {
            Ok(n) if n as usize == size => Ok(Some(info.ssi_signo as i32)),
            Ok(_) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read from a signalfd")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Blocks until one of `fds` is readable (or has hung up); returns the index of the first such.
/// Interrupted waits are retried.
pub fn wait_readable(fds: &[RawFd]) -> io::Result<usize> {
    let mut polls: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    loop {
        // SAFETY: `polls` is a live array of `polls.len()` pollfd entries.
        match unsafe { syscall!(poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1)) } {
            Ok(_) => {
                let ready = polls.iter().position(|p| p.revents != 0);
                if let Some(i) = ready {
                    return Ok(i);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_is_read_from_the_signalfd() {
        // SIGWINCH: harmless if it escaped; blocked on this test's thread only, and raised at
        // this thread, so no other test sees it.
        let set = block(&[libc::SIGWINCH]).unwrap();
        let sfd = SignalFd::new(&set).unwrap();
        assert_eq!(sfd.take().unwrap(), None);
        // SAFETY: sends a signal to this very thread, which has it blocked.
        assert_eq!(unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGWINCH) }, 0);
        assert_eq!(wait_readable(&[sfd.fd()]).unwrap(), 0);
        assert_eq!(sfd.take().unwrap(), Some(libc::SIGWINCH));
        assert_eq!(sfd.take().unwrap(), None);
    }
}
