//! Ring setup: flags, the feature probe, and errors that name their cause.

use std::io;

use io_uring::{opcode, IoUring, Probe};

/// How to set up one worker's ring.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// Submission queue entries (power of two).
    pub entries: u32,
    /// Completion queue entries; `0` means `4 * entries`.
    pub cq_entries: u32,
    /// `IORING_SETUP_SINGLE_ISSUER` + `DEFER_TASKRUN`: only the creating thread submits, and
    /// completion work runs when that thread enters the kernel (6.1+). Falls back when refused.
    pub defer_taskrun: bool,
    /// Connections as registered (direct) descriptors: accepted straight into a sparse file
    /// table (5.19+), so no operation on them looks up or refcounts a `struct file`. Falls back
    /// to plain descriptors when refused.
    pub fixed_files: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig { entries: 1024, cq_entries: 0, defer_taskrun: true, fixed_files: true }
    }
}

/// What the kernel granted, found by probing at setup.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// SINGLE_ISSUER + DEFER_TASKRUN are active.
    pub defer_taskrun: bool,
    /// COOP_TASKRUN is active (no IPI on completion).
    pub coop_taskrun: bool,
    /// `SEND_ZC` is supported (6.0+).
    pub send_zc: bool,
    /// `OPENAT2` is supported.
    pub openat2: bool,
    /// `STATX` is supported.
    pub statx: bool,
    /// `SPLICE` is supported.
    pub splice: bool,
}

/// A refused ring setup: the system call that failed, and its error as the kernel gave it
/// (`Display` explains it: see [`explain`]).
#[derive(Debug)]
pub struct SetupError {
    /// `io_uring_setup`, or the `io_uring_register` operation that failed.
    pub call: &'static str,
    /// The OS error (or, for a kernel too old, an `Unsupported` error saying what is missing).
    pub error: io::Error,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.error.raw_os_error() {
            Some(code) => write!(f, "{}", explain(self.call, io::Error::from_raw_os_error(code))),
            None => write!(f, "{}", self.error),
        }
    }
}

impl std::error::Error for SetupError {}

/// The ring memory `cfg` asks for, roughly (SQEs, CQEs, the SQ index array), in bytes.
pub fn ring_bytes(cfg: &RingConfig) -> u64 {
    let cq = if cfg.cq_entries == 0 { cfg.entries * 4 } else { cfg.cq_entries };
    u64::from(cfg.entries) * (64 + 4) + u64::from(cq) * 16 + 4096
}

/// Creates a ring per `cfg`, probing the features ringstage depends on.
///
/// Errors name the refused call; their message the cause: `kernel.io_uring_disabled`,
/// seccomp, a missing kernel feature, or `RLIMIT_MEMLOCK`.
pub fn setup(cfg: &RingConfig) -> Result<(IoUring, Features), SetupError> {
    let err = |call, error| SetupError { call, error };
    let cq = if cfg.cq_entries == 0 { cfg.entries * 4 } else { cfg.cq_entries };
    let mut feats = Features::default();
    let mut attempts: Vec<(bool, bool)> = Vec::new();
    if cfg.defer_taskrun {
        attempts.push((true, true));
    }
    attempts.extend([(false, true), (false, false)]);
    let mut last = None;
    let mut ring = None;
    for (defer, coop) in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq).setup_submit_all();
        if defer {
            b.setup_single_issuer().setup_defer_taskrun();
        }
        if coop {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        match b.build(cfg.entries) {
            Ok(r) => {
                feats.defer_taskrun = defer;
                feats.coop_taskrun = coop;
                ring = Some(r);
                break;
            }
            // EINVAL: this kernel does not know a flag; try the next, smaller set.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(err("io_uring_setup", e)),
        }
    }
    let ring = match ring {
        Some(r) => r,
        None => return Err(err("io_uring_setup", last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))),
    };
    let p = ring.params();
    let too_old = |what: &str| {
        let msg = format!("io_uring lacks {what}: ringstage needs Linux 6.0 or newer");
        err("io_uring_setup", io::Error::new(io::ErrorKind::Unsupported, msg))
    };
    if !p.is_feature_ext_arg() || !p.is_feature_nodrop() {
        return Err(too_old("IORING_FEAT_EXT_ARG/NODROP"));
    }
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| err("io_uring_register (IORING_REGISTER_PROBE)", e))?;
    feats.send_zc = probe.is_supported(opcode::SendZc::CODE);
    feats.openat2 = probe.is_supported(opcode::OpenAt2::CODE);
    feats.statx = probe.is_supported(opcode::Statx::CODE);
    feats.splice = probe.is_supported(opcode::Splice::CODE);
    // SEND_ZC arrived in 6.0 together with multishot recv, which the probe cannot see.
    if !feats.send_zc {
        return Err(too_old("SEND_ZC (and so multishot recv, which the probe cannot see)"));
    }
    Ok((ring, feats))
}

/// Turns an error of the io_uring system call `call` (`io_uring_setup`, `io_uring_enter`,
/// `io_uring_register ...`) into one that names the call and says what to change.
pub fn explain(call: &str, e: io::Error) -> io::Error {
    let Some(code) = e.raw_os_error() else { return e };
    let msg = match code {
        libc::EPERM => match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            Some(2) if call == "io_uring_setup" => {
                "io_uring is disabled system-wide: sysctl kernel.io_uring_disabled=2 (set it to 0)".to_string()
            }
            Some(1) if call == "io_uring_setup" => "io_uring is restricted: sysctl kernel.io_uring_disabled=1 allows \
                        only members of kernel.io_uring_group (set it to 0, or run in that group)"
                .to_string(),
            _ => format!(
                "{call} was refused (EPERM): a seccomp filter (a container runtime's default profile?) \
                 blocks it; allow io_uring_setup, io_uring_enter and io_uring_register"
            ),
        },
        libc::ENOSYS => format!(
            "{call} is not available (ENOSYS): a kernel built without CONFIG_IO_URING, or a seccomp \
             filter answering ENOSYS"
        ),
        libc::ENOMEM => {
            let cur = crate::fd::memlock_limit().map_or("unknown".into(), |l| format!("{} KiB", l / 1024));
            format!(
                "io_uring could not allocate ring memory (ENOMEM): RLIMIT_MEMLOCK is {cur}; raise it \
                 (ulimit -l, LimitMEMLOCK=) or the memory cgroup limit, or use fewer ring entries"
            )
        }
        libc::EINVAL if call == "io_uring_setup" => {
            "io_uring_setup rejected every flag set (EINVAL): ringstage needs Linux 6.0 or newer".to_string()
        }
        _ => return e,
    };
    io::Error::new(e.kind(), format!("{msg} [{e}]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_cause() {
        let e = explain("io_uring_setup", io::Error::from_raw_os_error(libc::ENOSYS)).to_string();
        assert!(e.contains("io_uring_setup") && e.contains("CONFIG_IO_URING") && e.contains("seccomp"), "{e}");
        let e = explain("io_uring_setup", io::Error::from_raw_os_error(libc::ENOMEM)).to_string();
        assert!(e.contains("RLIMIT_MEMLOCK"), "{e}");
        let e = explain("io_uring_setup", io::Error::from_raw_os_error(libc::EPERM)).to_string();
        assert!(e.contains("io_uring_disabled") || e.contains("seccomp"), "{e}");
        // A refused enter or register names itself, whatever the sysctl says.
        let e = explain("io_uring_enter", io::Error::from_raw_os_error(libc::EPERM)).to_string();
        assert!(e.starts_with("io_uring_enter was refused (EPERM)") && e.contains("seccomp"), "{e}");
        // Unrelated errors pass through untouched.
        let e = explain("io_uring_enter", io::Error::from_raw_os_error(libc::EBADF));
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn setup_probes_features() {
        let (ring, f) = setup(&RingConfig { entries: 8, ..RingConfig::default() }).unwrap();
        assert!(f.send_zc);
        assert!(ring.params().sq_entries() >= 8);
        assert!(ring.params().cq_entries() >= 32);
    }
}
