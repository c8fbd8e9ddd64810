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
