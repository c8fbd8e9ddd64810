//! Unix domain stream listeners: a path (a stale socket file left by a process that died is
//! replaced; a live one is an error) or an abstract name (`@name`).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// A listening Unix stream socket at `path` (close-on-exec), its file given `mode` when set.
/// A path starting with `@` names an abstract socket (no file). A socket file nobody listens
/// on (its server died) is removed and bound again; one a live server listens on is
/// `AddrInUse`, with the path in the message.
pub fn listen_unix(path: &Path, mode: Option<u32>) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        return UnixListener::bind_addr(&addr).map(OwnedFd::from);
    }
    let l = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                let msg = format!("{} is in use: a server listens on it", path.display());
                return Err(io::Error::new(io::ErrorKind::AddrInUse, msg));
            }
            // Nobody answers: the file of a server that is gone.
            std::fs::remove_file(path)?;
            UnixListener::bind(path)?
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("bind {}: {e}", path.display()))),
    };
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(OwnedFd::from(l))
}

/// An unconnected Unix stream socket (close-on-exec, non-blocking). Connect it on the ring,
/// to the address of [`sockaddr`].
pub fn stream() -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: socket takes no pointers.
    let fd = unsafe { syscall!(socket(libc::AF_UNIX, ty, 0)) }?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The `sockaddr_un` of `path` (or, for `@name`, of the abstract socket `name`) and its
/// length. A path too long for one (107 bytes) is an `InvalidInput` error naming it.
pub fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_storage, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_un.
    let sun = unsafe { &mut *(&mut sa as *mut libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // An abstract name starts with a NUL and is not NUL-terminated; a path is.
    let (name, terminated): (&[u8], bool) = match bytes.strip_prefix(b"@") {
        Some(name) => (name, false),
        None => (bytes, true),
    };
    let room = sun.sun_path.len() - 1; // the leading NUL of an abstract name, or a path's final one
    if name.is_empty() || name.len() > room || (terminated && name.contains(&0)) {
        let msg = format!("{} is not a Unix socket address (at most {room} bytes, no NUL)", path.display());
        return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    }
    let start = usize::from(!terminated);
    for (dst, &b) in sun.sun_path[start..].iter_mut().zip(name) {
        *dst = b as libc::c_char;
    }
    let base = std::mem::size_of::<libc::sa_family_t>();
    let len = base + start + name.len() + usize::from(terminated);
    Ok((sa, len as libc::socklen_t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_paths_and_abstract_names_and_their_limits() {
        let (_, len) = sockaddr(Path::new("/run/a.sock")).unwrap();
        assert_eq!(len as usize, 2 + "/run/a.sock".len() + 1);
        let (sa, len) = sockaddr(Path::new("@name")).unwrap();
        assert_eq!(len as usize, 2 + 1 + 4);
        // SAFETY: test only: the storage holds a sockaddr_un.
        let sun = unsafe { &*(&sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
        assert_eq!(sun.sun_path[0], 0);
        assert_eq!(sun.sun_path[1] as u8, b'n');
        let long = format!("/{}", "x".repeat(200));
        let err = sockaddr(Path::new(&long)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("at most 107 bytes"), "{err}");
        assert!(sockaddr(Path::new("")).is_err());
    }
}
