//! File I/O on the ring: `openat2` confined beneath a root directory, `statx`, `read`, `close`.
//!
//! Each call submits one SQE from a handler and runs `done` with the result when the
//! completion is reaped, on the same worker, with a fresh [`Context`] — typically to continue a
//! small state machine or to enqueue an event into the stage that owns the request. The op's
//! record (the callback with the path, `open_how`, `statx` buffer or read buffer it keeps alive
//! until completion) lives in the worker's op slab, keyed by the SQE's `user_data`. Each op
//! allocates its record once: this is the cache-miss path, not the hot path.
//!
//! Paths are opened with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: `..`, absolute paths and
//! symlinks that would leave the root fail with `EXDEV` in the kernel, whatever the path says.
//!
//! Each operation is bounded by [`crate::runtime::Builder::file_timeout`] (30 s by default): its
//! SQE is linked to an `IORING_OP_LINK_TIMEOUT`, so an operation stuck on a hung network or FUSE
//! file system (or a FIFO) is cancelled by the kernel and `done` gets an error of kind
//! [`io::ErrorKind::TimedOut`]. That costs a second SQE and CQE per operation, which is why the
//! network's hot-path sends are bounded by a sweep instead (see the net module).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, SystemTime};

use io_uring::{opcode, types};

use crate::buf::IoBuf;
use crate::runtime::io::Io;
use crate::stage::Context;

/// A directory handle that file opens are confined beneath (`O_PATH | O_DIRECTORY`).
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens `path` as a root. Fails if it is not a directory.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Root> {
        use std::os::unix::ffi::OsStrExt;
        let c = CString::new(path.as_ref().as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: `c` is a valid NUL-terminated string; open takes no other pointers.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{}: {e}", path.as_ref().display())));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(Root { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// The directory's descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// What `statx` reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub modified: SystemTime,
    /// Regular file.
    pub is_file: bool,
    /// Directory.
    pub is_dir: bool,
    /// Inode number (for validators).
    pub ino: u64,
}

/// A completion callback: gets the CQE result and the worker's I/O core.
pub(crate) type OpDone = Box<dyn FnOnce(i32, &mut Io)>;

fn result(res: i32) -> io::Result<i32> {
    if res == -libc::ETIMEDOUT {
        Err(io::Error::new(io::ErrorKind::TimedOut, "file operation timed out (see Builder::file_timeout)"))
    } else if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res)
    }
}

impl Context<'_> {
    /// Opens `path` (relative, `/`-separated bytes) read-only beneath `root`.
    /// Escapes (`..`, absolute paths, symlinks out of the root) fail with `EXDEV`.
    pub fn open_beneath(
        &mut self,
        root: &Root,
        path: &[u8],
        done: impl FnOnce(io::Result<OwnedFd>, &mut Context<'_>) + 'static,
    ) {
        let Ok(c) = CString::new(path) else {
            return done(Err(io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL")), self);
        };
        let how = Box::new(
            types::OpenHow::new()
                .flags((libc::O_RDONLY | libc::O_CLOEXEC) as u64)
                .resolve(libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS),
        );
        let sqe = opcode::OpenAt2::new(types::Fd(root.fd()), c.as_ptr(), &*how as *const types::OpenHow).build();
        let rec: OpDone = Box::new(move |res, io| {
            drop((c, how)); // kept alive until the kernel is done with them
                            // SAFETY: a successful openat2 returns a new descriptor owned by nobody else.
            let r = result(res).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
            done(r, &mut Context { io })
        });
        // SAFETY: the path and `open_how` are heap-allocated and owned by the op record until
        // its completion.
        unsafe { self.io.submit_op(sqe, rec, true) };
    }

    /// `statx` of an open file.
    pub fn stat(&mut self, fd: RawFd, done: impl FnOnce(io::Result<FileStat>, &mut Context<'_>) + 'static) {
        // SAFETY: statx is plain data; all-zero is valid.
        let mut buf: Box<libc::statx> = Box::new(unsafe { std::mem::zeroed() });
        let empty: &'static std::ffi::CStr = c"";
        let mask = libc::STATX_TYPE | libc::STATX_SIZE | libc::STATX_MTIME | libc::STATX_INO;
        let sqe = opcode::Statx::new(types::Fd(fd), empty.as_ptr(), (&mut *buf as *mut libc::statx).cast())
            .flags(libc::AT_EMPTY_PATH)
            .mask(mask)
            .build();
        let rec: OpDone = Box::new(move |res, io| {
            let r = result(res).map(|_| {
                let kind = buf.stx_mode as u32 & libc::S_IFMT;
                let mtime =
                    SystemTime::UNIX_EPOCH + Duration::new(buf.stx_mtime.tv_sec.max(0) as u64, buf.stx_mtime.tv_nsec);
                FileStat {
                    size: buf.stx_size,
                    modified: mtime,
                    is_file: kind == libc::S_IFREG,
                    is_dir: kind == libc::S_IFDIR,
                    ino: buf.stx_ino,
                }
            });
            done(r, &mut Context { io })
        });
        // SAFETY: the statx buffer is boxed in the op record until completion; the empty path
        // is static.
        unsafe { self.io.submit_op(sqe, rec, true) };
    }

    /// Reads up to `len` bytes at `offset` into a new buffer (one allocation of `len` bytes);
    /// `done` gets the bytes read (fewer at end of file).
    pub fn read_at(
        &mut self,
        fd: RawFd,
        offset: u64,
        len: usize,
        done: impl FnOnce(io::Result<IoBuf>, &mut Context<'_>) + 'static,
    ) {
        let mut v: Vec<u8> = Vec::with_capacity(len);
        let sqe =
            opcode::Read::new(types::Fd(fd), v.as_mut_ptr(), len.min(u32::MAX as usize) as u32).offset(offset).build();
        let rec: OpDone = Box::new(move |res, io| {
            let r = result(res).map(|n| {
                // SAFETY: the kernel initialised the first `n <= capacity` bytes.
                unsafe { v.set_len(n as usize) };
                IoBuf::from(v)
            });
            done(r, &mut Context { io })
        });
        // SAFETY: the vector's heap block is owned by the op record until completion and not
        // touched before.
        unsafe { self.io.submit_op(sqe, rec, true) };
    }

    /// Closes `fd` on the ring (fire and forget).
    pub fn close(&mut self, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        std::mem::forget(fd); // the ring closes it
        let sqe = opcode::Close::new(types::Fd(raw)).build();
        // SAFETY: the close refers to no user memory.
        unsafe { self.io.submit_op(sqe, Box::new(|_, _| {}), false) };
    }
}
