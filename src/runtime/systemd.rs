//! Running under systemd (or another service manager speaking its protocols): listeners on
//! sockets the manager opened (socket activation, [`ListenConfig::inherited`]), and readiness
//! notification. A runtime tells the manager `READY=1` once it serves and `STOPPING=1` when
//! it begins to shut down, whenever `NOTIFY_SOCKET` is set (a `Type=notify` service); nothing
//! otherwise.
//!
//! [`ListenConfig::inherited`]: crate::net::ListenConfig::inherited

pub use ringstage_sys::systemd::{listen_fds, notify};

/// Sends `state` if a service manager listens; a failure is logged, not returned: the service
/// runs either way.
pub(crate) fn tell(state: &str) {
    if let Err(e) = notify(state) {
        log::warn!("ringstage: could not tell the service manager {state:?}: {e}");
    }
}
