//! CPU pinning.

use std::io;

/// Number of CPUs this process may run on.
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to CPU `cpu` (an index into the allowed set, modulo its size).
///
/// Returns the CPU id actually used.
pub fn pin_current(cpu: usize) -> io::Result<usize> {
    let ids = core_affinity::get_core_ids()
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| io::Error::other("cannot read this process's CPU affinity mask"))?;
    let id = ids[cpu % ids.len()];
    if core_affinity::set_for_current(id) {
        Ok(id.id)
    } else {
        Err(io::Error::other(format!("sched_setaffinity to CPU {} failed", id.id)))
    }
}
