//! UDP sockets: bound (with `SO_REUSEPORT` for one socket per worker), non-blocking, and the
//! probe for UDP generic segmentation offload (`UDP_SEGMENT`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::socket::{set_int, to_raw};

/// A UDP socket bound to `addr` (close-on-exec, non-blocking). With `reuseport`, several
/// workers bind their own socket to one address and the kernel spreads the datagrams over
/// them by the source's address and port, so one peer's datagrams keep reaching one socket.
/// An IPv6 wildcard address (`[::]`) takes IPv4 too (dual stack) unless the host's
/// `net.ipv6.bindv6only` says otherwise.
pub fn bind(addr: SocketAddr, reuseport: bool) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let ty = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: socket takes no pointers.
    let fd = unsafe { syscall!(socket(domain, ty, 0)) }?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if reuseport {
        set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let (sa, len) = to_raw(&addr);
    // SAFETY: `sa` is a live sockaddr_storage holding an address of length `len`.
    unsafe { syscall!(bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_storage).cast(), len)) }?;
    Ok(fd)
}

/// Whether the kernel segments a large UDP send by itself (`UDP_SEGMENT`, Linux 4.18): set
/// and cleared on `fd` to find out.
pub fn gso_supported(fd: RawFd) -> bool {
    set_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok()
}

/// Whether the IPv6 socket `fd` refuses IPv4 (`IPV6_V6ONLY`).
pub fn v6_only(fd: RawFd) -> io::Result<bool> {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `v` is a live i32 and `len` holds its size.
    unsafe { syscall!(getsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, (&mut v as *mut i32).cast(), &mut len)) }?;
    Ok(v != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::local_addr;

    #[test]
    fn reuseport_sockets_share_a_port_and_gso_is_probed() {
        let a = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = local_addr(a.as_raw_fd()).unwrap();
        assert_ne!(addr.port(), 0);
        let b = bind(addr, true).unwrap();
        assert_eq!(local_addr(b.as_raw_fd()).unwrap(), addr);
        assert!(bind(addr, false).is_err(), "without SO_REUSEPORT the port is taken");
        // Every kernel this crate runs on (6.0+) has it.
        assert!(gso_supported(a.as_raw_fd()));
    }

    #[test]
    fn a_wildcard_ipv6_socket_is_dual_stack_unless_the_host_says_otherwise() {
        let s = bind("[::]:0".parse().unwrap(), false).unwrap();
        let host = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").map(|v| v.trim() == "1");
        assert_eq!(v6_only(s.as_raw_fd()).unwrap(), host.unwrap_or(false));
    }
}
