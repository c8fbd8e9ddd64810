//! [`Error`]: what went wrong in the runtime, with the data to act on it.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// An error of the runtime. Each kind carries what a caller needs to act on it (the refused
/// call, the limit and what was needed, the address, the worker); `Display` says what to
/// change. Converts into [`io::Error`] (so `?` works in a `main` returning `io::Result`),
/// keeping the kind and the message.
///
/// # Examples
///
/// ```no_run
/// use ringstage::prelude::*;
/// use ringstage::Error;
///
/// let mut b = Runtime::builder(1);
/// let st = b.stage::<NetEvent>("echo", StageConfig::on([0]));
/// b.listen(ListenConfig::new("127.0.0.1:7000".parse().unwrap(), [0]), st);
/// b.handler(st, |_| handler_fn(|_ev: NetEvent, _cx: &mut Context<'_>| {}));
/// match b.start() {
///     Ok(rt) => drop(rt),
///     Err(Error::Bind { addr, cause }) => eprintln!("{addr} is taken: {cause}"),
///     Err(Error::RingRefused { call, .. }) => eprintln!("no io_uring here ({call} refused)"),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The kernel refused an io_uring system call: `call` is `io_uring_setup`,
    /// `io_uring_enter` or `io_uring_register (...)`; `cause` the OS error, its message saying
    /// why (the sysctl `kernel.io_uring_disabled`, a seccomp filter, a kernel without io_uring).
    RingRefused {
        /// The refused system call.
        call: &'static str,
        /// The OS error, explained.
        cause: io::Error,
    },
    /// The ring's memory could not be allocated (`ENOMEM`): `RLIMIT_MEMLOCK`, or the memory
    /// cgroup's limit, is below what the rings need.
    MemoryLimit {
        /// About what one worker's ring needs, in bytes.
        needed: u64,
        /// `RLIMIT_MEMLOCK` when it was refused, in bytes.
        limit: u64,
    },
    /// The kernel lacks something ringstage needs.
    Unsupported {
        /// What is missing, and the kernel that has it.
        what: String,
    },
    /// The stage graph or an option is wrong: a stage without a handler, a replica on a worker
    /// that does not exist, a malformed counter name, a bad limit.
    InvalidConfig(String),
    /// A listener could not bind its address (in use, not local, not permitted).
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        cause: io::Error,
    },
    /// A handler panicked: at start (its factory), or while handling an event under
    /// [`PanicPolicy::Fatal`](crate::stage::PanicPolicy::Fatal).
    Panicked {
        /// The stage, if known.
        stage: Option<String>,
        /// The panic's message.
        message: String,
    },
    /// A worker could not be set up (its ring refused, a handler factory panicked):
    /// [`Builder::start`](crate::runtime::Builder::start) fails with it, the other workers
    /// stopped.
    WorkerSetup {
        /// The worker.
        worker: usize,
        /// Why.
        cause: Box<Error>,
    },
    /// A worker stopped, and with it the runtime.
    WorkerFailed {
        /// The worker.
        worker: usize,
        /// Why it stopped.
        cause: Box<Error>,
    },
    /// Another I/O error.
    Io(io::Error),
}

/// The runtime's `Result`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The [`io::ErrorKind`] this error converts to.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::RingRefused { cause, .. } | Error::Bind { cause, .. } | Error::Io(cause) => cause.kind(),
            Error::MemoryLimit { .. } => io::ErrorKind::OutOfMemory,
            Error::Unsupported { .. } => io::ErrorKind::Unsupported,
            Error::InvalidConfig(_) => io::ErrorKind::InvalidInput,
            Error::Panicked { .. } => io::ErrorKind::Other,
            Error::WorkerFailed { cause, .. } | Error::WorkerSetup { cause, .. } => cause.kind(),
        }
    }

    /// An error of io_uring system call `call`, classified: a refusal (`EPERM`, `ENOSYS`), a
    /// memory limit (`ENOMEM`, with `needed` bytes), or another I/O error.
    pub(crate) fn ring(call: &'static str, cause: io::Error, needed: u64) -> Error {
        let explained = |e| ringstage_sys::ring::explain(call, e);
        match cause.raw_os_error() {
            Some(libc::EPERM | libc::ENOSYS | libc::EACCES) => Error::RingRefused { call, cause: explained(cause) },
            Some(libc::ENOMEM) if call == "io_uring_setup" => {
                Error::MemoryLimit { needed, limit: ringstage_sys::fd::memlock_limit().unwrap_or(0) }
            }
            _ if cause.kind() == io::ErrorKind::Unsupported => Error::Unsupported { what: cause.to_string() },
            _ => Error::Io(explained(cause)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::RingRefused { cause, .. } => write!(f, "{cause}"),
            Error::MemoryLimit { needed, limit } => write!(
                f,
                "io_uring could not allocate its ring memory (ENOMEM): RLIMIT_MEMLOCK is {} KiB and a worker's \
                 ring needs about {} KiB; raise the limit (ulimit -l, LimitMEMLOCK=) or the memory cgroup's, or \
                 use fewer ring entries",
                limit / 1024,
                needed.div_ceil(1024)
            ),
            Error::Unsupported { what } => write!(f, "{what}"),
            Error::InvalidConfig(m) => write!(f, "{m}"),
            Error::Bind { addr, cause } => write!(f, "cannot listen on {addr}: {cause}"),
            Error::Panicked { stage: Some(s), message } => write!(f, "a handler of stage '{s}' panicked: {message}"),
            Error::Panicked { stage: None, message } => write!(f, "a handler panicked: {message}"),
            Error::WorkerFailed { worker, cause } => write!(f, "worker {worker} stopped: {cause}"),
            Error::WorkerSetup { worker, cause } => write!(f, "worker {worker} setup: {cause}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::RingRefused { cause, .. } | Error::Bind { cause, .. } | Error::Io(cause) => Some(cause),
            Error::WorkerFailed { cause, .. } | Error::WorkerSetup { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            e => io::Error::new(e.kind(), e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_and_keep_their_data_and_kind() {
        let e = Error::ring("io_uring_enter", io::Error::from_raw_os_error(libc::EPERM), 0);
        assert!(matches!(e, Error::RingRefused { call: "io_uring_enter", .. }), "{e:?}");
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::PermissionDenied);
        let e = Error::ring("io_uring_setup", io::Error::from_raw_os_error(libc::ENOMEM), 70_000);
        let Error::MemoryLimit { needed: 70_000, .. } = e else { panic!("{e:?}") };
        assert!(e.to_string().contains("RLIMIT_MEMLOCK") && e.to_string().contains("69 KiB"), "{e}");
        let e = Error::ring("io_uring_enter", io::Error::from_raw_os_error(libc::EBADF), 0);
        assert!(matches!(e, Error::Io(_)));
        let addr = "127.0.0.1:1".parse().unwrap();
        let e = Error::WorkerFailed {
            worker: 3,
            cause: Box::new(Error::Bind { addr, cause: io::Error::from(io::ErrorKind::AddrInUse) }),
        };
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().starts_with("worker 3 stopped: cannot listen on 127.0.0.1:1"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
