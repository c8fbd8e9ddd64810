//! Raw Linux layer of ringstage.
//!
//! Everything here is mechanism, not policy: ring setup with a feature probe and clear errors,
//! sockets (TCP, UDP, Unix), CPU pinning, provided-buffer-ring registration and eventfd doorbells. No threads are
//! spawned and nothing on a hot path allocates.

#![warn(missing_docs)]

/// Calls a libc function and turns a `-1` return into `Err(io::Error::last_os_error())`.
///
/// Like mio's helper, it is the one place raw syscalls are made. It expands to an unsafe call,
/// so each use sits in an `unsafe` block whose `// SAFETY:` comment says why the arguments are
/// valid for that call.
#[macro_export]
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        let res = libc::$fn($($arg, )*);
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod bufring;
pub mod cpu;
pub mod doorbell;
pub mod fd;
pub mod pipe;
pub mod ring;
pub mod signal;
pub mod socket;
pub mod systemd;
pub mod udp;
pub mod unix;

pub use bufring::BufRing;
pub use doorbell::Doorbell;
pub use ring::{Features, RingConfig};
