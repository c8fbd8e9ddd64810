//! Ending a loopback connection with a reset, for tests of a peer that vanishes mid-transfer.

use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Makes closing `s` send a reset (RST) instead of a FIN: `SO_LINGER` on, with a zero timeout.
pub fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads a live linger struct of the given size; the descriptor is the
    // open socket `s` borrows.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}
