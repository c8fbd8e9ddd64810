//! TCP sockets: listeners with `SO_REUSEPORT`, `TCP_NODELAY`, address conversion.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Creates a listening TCP socket bound to `addr`.
///
/// With `reuseport`, several workers may each bind their own socket to the same address and the
/// kernel spreads incoming connections across them.
pub fn listen(addr: SocketAddr, backlog: i32, reuseport: bool) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket takes no pointers.
    let fd = unsafe { syscall!(socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)) }?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuseport {
        set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let (sa, len) = to_raw(&addr);
    // SAFETY: `sa` is a live sockaddr_storage holding an address of length `len`.
    unsafe { syscall!(bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_storage).cast(), len)) }?;
    // SAFETY: listen takes no pointers.
    unsafe { syscall!(listen(fd.as_raw_fd(), backlog)) }?;
    Ok(fd)
}

/// Creates an unconnected TCP socket for `addr`'s family (close-on-exec, non-blocking), with
/// `TCP_NODELAY` if `nodelay`. Connect it on the ring.
pub fn stream(addr: &SocketAddr, nodelay: bool) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: socket takes no pointers.
    let fd = unsafe { syscall!(socket(domain, ty, 0)) }?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if nodelay {
        set_nodelay(fd.as_raw_fd())?;
    }
    Ok(fd)
}

/// Disables Nagle's algorithm on `fd`.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Sets an integer socket option.
pub fn set_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    let len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` is a live i32 and `len` its size.
    unsafe { syscall!(setsockopt(fd, level, name, (&value as *const i32).cast(), len)) }.map(drop)
}

/// The address `fd` is bound to.
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `sa` is a live sockaddr_storage and `len` holds its size.
    unsafe { syscall!(getsockname(fd, (&mut sa as *mut libc::sockaddr_storage).cast(), &mut len)) }?;
    from_raw(&sa)
}

/// The address `fd` is connected to.
pub fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `sa` is a live sockaddr_storage and `len` holds its size.
    unsafe { syscall!(getpeername(fd, (&mut sa as *mut libc::sockaddr_storage).cast(), &mut len)) }?;
    from_raw(&sa)
}

/// Converts the bytes of a socket address the kernel wrote (a `recvmsg` name) to a
/// `SocketAddr`. Bytes past a `sockaddr_storage` are ignored; missing ones read as zero.
pub fn from_bytes(name: &[u8]) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_storage = unsafe { zeroed() };
    let n = name.len().min(size_of::<libc::sockaddr_storage>());
    // SAFETY: `n` bytes are readable from `name` and writable in `sa` (at most its size), and
    // the two do not overlap (`sa` is a local).
    unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), (&mut sa as *mut libc::sockaddr_storage).cast::<u8>(), n) };
    from_raw(&sa)
}

/// Converts a `SocketAddr` to a `sockaddr_storage` and its length.
pub fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut sa as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut sa as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (sa, len as libc::socklen_t)
}

/// Converts a `sockaddr_storage` filled by the kernel back to a `SocketAddr`.
pub fn from_raw(sa: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match sa.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        f => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unsupported address family {f}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuseport_listeners_share_a_port() {
        let a = listen("127.0.0.1:0".parse().unwrap(), 16, true).unwrap();
        let addr = local_addr(a.as_raw_fd()).unwrap();
        assert_ne!(addr.port(), 0);
        let b = listen(addr, 16, true).unwrap();
        assert_eq!(local_addr(b.as_raw_fd()).unwrap(), addr);
        // Without SO_REUSEPORT the same bind fails.
        assert!(listen(addr, 16, false).is_err());
    }

    #[test]
    fn address_round_trip() {
        for s in ["127.0.0.1:8080", "[::1]:443", "[fe80::1%2]:9"] {
            let a: SocketAddr = s.parse().unwrap();
            let (raw, _) = to_raw(&a);
            assert_eq!(from_raw(&raw).unwrap(), a);
            // SAFETY: test only: the storage is plain data, viewed as its bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&raw as *const libc::sockaddr_storage).cast::<u8>(),
                    size_of::<libc::sockaddr_in6>(),
                )
            };
            assert_eq!(from_bytes(bytes).unwrap(), a);
        }
        assert!(from_bytes(&[0xff, 0xff]).is_err(), "an unknown family is an error");
    }
}
