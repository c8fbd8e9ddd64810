//! [`Target`]: what an operation acts on, a descriptor or a slot of the ring's file table.

use std::os::fd::RawFd;

/// A socket or file as an SQE names it: a descriptor of the process, or a slot of the ring's
/// registered file table (a *direct descriptor*: no `struct file` lookup or reference count
/// per operation, and not counted against the process's descriptors). io-uring's
/// `types::Fd` / `types::Fixed` distinction, kept in one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Fd(RawFd),
    Fixed(u32),
}

/// Builds an SQE on a [`Target`], with `$t` bound to the matching `io_uring::types::Fd` or
/// `types::Fixed`: `on_target!(target, |t| opcode::Send::new(t, buf, len).build())`.
macro_rules! on_target {
    ($target:expr, |$t:ident| $e:expr) => {
        match $target {
            $crate::reactor::Target::Fd(fd) => {
                let $t = io_uring::types::Fd(fd);
                $e
            }
            $crate::reactor::Target::Fixed(slot) => {
                let $t = io_uring::types::Fixed(slot);
                $e
            }
        }
    };
}
pub(crate) use on_target;
