//! The file stage's driver: the operations in flight on one worker's ring, and the delivery
//! of their results to the stages that asked.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use io_uring::{opcode, squeue, types};
use slab::Slab;

use super::{result, FileStat, FsCmd, FsEvent};
use crate::buf::IoBuf;
use crate::reactor::{OpKind, Reactor, Token};
use crate::stage::{Context, Handler, Sink};

/// Delivers a file stage user's events: converts an [`FsEvent`] into the user stage's event
/// type and enqueues it, keeping those its stage refuses, in order, for later.
pub(crate) trait Deliver {
    /// Hands `ev` on, or keeps it behind the ones already kept. Returns whether it was kept.
    fn deliver(&mut self, ev: FsEvent) -> bool;
    /// Offers the kept events again, in order; returns how many went in.
    fn flush(&mut self) -> usize;
}

/// A [`Deliver`] into a stage of events `E`.
pub(crate) struct DeliverTo<E> {
    pub(crate) sink: Sink<E>,
    pub(crate) kept: VecDeque<E>,
}

impl<E: From<FsEvent> + Send + 'static> Deliver for DeliverTo<E> {
    fn deliver(&mut self, ev: FsEvent) -> bool {
        let ev = E::from(ev);
        if self.kept.is_empty() {
            match self.sink.try_enqueue(ev) {
                Ok(()) => return false,
                Err(ev) => self.kept.push_back(ev),
            }
        } else {
            self.kept.push_back(ev);
        }
        true
    }

    fn flush(&mut self) -> usize {
        let mut n = 0;
        while let Some(ev) = self.kept.pop_front() {
            if let Err(ev) = self.sink.try_enqueue(ev) {
                self.kept.push_front(ev);
                break;
            }
            n += 1;
        }
        n
    }
}

/// What an operation in flight keeps alive for the kernel, and what its result becomes.
enum Op {
    Open {
        /// The path and `open_how` the kernel reads.
        _path: CString,
        _how: Box<types::OpenHow>,
    },
    Stat {
        buf: Box<libc::statx>,
        _file: Arc<OwnedFd>,
    },
    Read {
        buf: Vec<u8>,
        _file: Arc<OwnedFd>,
    },
}

struct Record {
    op: Op,
    files: usize,
    tag: u64,
}

/// One worker's file operations.
pub(crate) struct FsDriver {
    ops: Slab<Record>,
    /// Per `FilesId`: where its events go.
    deliver: Vec<Box<dyn Deliver>>,
    /// The time limit linked to every operation, boxed: the kernel reads it at submission.
    limit: Option<Box<types::Timespec>>,
}

impl FsDriver {
    pub(crate) fn new(deliver: Vec<Box<dyn Deliver>>, limit: Option<Duration>) -> FsDriver {
        FsDriver { ops: Slab::new(), deliver, limit: limit.map(|d| Box::new(types::Timespec::from(d))) }
    }

    /// Starts the operation of `cmd`. An error before it reaches the ring (a path with a NUL,
    /// a full submission queue) is answered at once.
    pub(crate) fn command(&mut self, r: &mut Reactor, cmd: FsCmd) {
        let (files, tag) = (cmd.files().0, cmd.tag());
        if files >= self.deliver.len() {
            return; // an id from another runtime names nothing here
        }
        let (sqe, op) = match cmd {
            FsCmd::Open { root, path, .. } => {
                let Ok(path) = CString::new(path.into_vec()) else {
                    let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL");
                    return self.emit(r, files, FsEvent::Opened { tag, result: Err(e) });
                };
                let how = Box::new(
                    types::OpenHow::new()
                        .flags((libc::O_RDONLY | libc::O_CLOEXEC) as u64)
                        .resolve(libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS),
                );
                let sqe =
                    opcode::OpenAt2::new(types::Fd(root.fd()), path.as_ptr(), &*how as *const types::OpenHow).build();
                (sqe, Op::Open { _path: path, _how: how })
            }
            FsCmd::Stat { file, .. } => {
                // SAFETY: statx is plain data; all-zero is valid.
                let mut buf: Box<libc::statx> = Box::new(unsafe { std::mem::zeroed() });
                let empty: &'static std::ffi::CStr = c"";
                let mask = libc::STATX_TYPE | libc::STATX_SIZE | libc::STATX_MTIME | libc::STATX_INO;
                let sqe = opcode::Statx::new(
                    types::Fd(file.as_raw_fd()),
                    empty.as_ptr(),
                    (&mut *buf as *mut libc::statx).cast(),
                )
                .flags(libc::AT_EMPTY_PATH)
                .mask(mask)
                .build();
                (sqe, Op::Stat { buf, _file: file })
            }
            FsCmd::Read { file, offset, len, .. } => {
                let mut buf: Vec<u8> = Vec::with_capacity(len);
                let n = len.min(u32::MAX as usize) as u32;
                let sqe = opcode::Read::new(types::Fd(file.as_raw_fd()), buf.as_mut_ptr(), n).offset(offset).build();
                (sqe, Op::Read { buf, _file: file })
            }
        };
        let key = self.ops.insert(Record { op, files, tag });
        let sqe = sqe.user_data(Token::new(OpKind::File, key, 0).encode());
        let pushed = match &self.limit {
            // SAFETY: what the SQE points to (path, open_how, statx buffer, read buffer, the
            // file) is heap memory owned by the record, which stays in the slab until the
            // completion; the limit is boxed in the driver, which outlives the submission.
            Some(limit) => unsafe { r.push_linked_timeout(sqe, &**limit) },
            // SAFETY: as above.
            None => unsafe { r.push(std::slice::from_ref(&sqe.flags(squeue::Flags::empty()))) },
        };
        match pushed {
            Ok(()) => r.counters.io_started.add(1),
            Err(e) => {
                let rec = self.ops.remove(key);
                self.finish(r, rec, Err(e));
            }
        }
    }

    /// A file operation completed.
    pub(crate) fn complete(&mut self, r: &mut Reactor, t: Token, res: i32) {
        let Some(rec) = self.ops.try_remove(t.key as usize) else { return };
        self.finish(r, rec, result(res));
        // After the event it produced was enqueued (see `Shared::quiescent`).
        r.counters.io_finished.add(1);
    }

    fn finish(&mut self, r: &mut Reactor, rec: Record, res: std::io::Result<i32>) {
        let Record { op, files, tag } = rec;
        let ev = match op {
            // SAFETY: a successful openat2 returns a new descriptor owned by nobody else.
            Op::Open { .. } => FsEvent::Opened { tag, result: res.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }) },
            Op::Stat { buf, .. } => FsEvent::Stat {
                tag,
                result: res.map(|_| {
                    let kind = buf.stx_mode as u32 & libc::S_IFMT;
                    let secs = buf.stx_mtime.tv_sec.max(0) as u64;
                    FileStat {
                        size: buf.stx_size,
                        modified: SystemTime::UNIX_EPOCH + Duration::new(secs, buf.stx_mtime.tv_nsec),
                        is_file: kind == libc::S_IFREG,
                        is_dir: kind == libc::S_IFDIR,
                        ino: buf.stx_ino,
                    }
                }),
            },
            Op::Read { mut buf, .. } => FsEvent::Read {
                tag,
                result: res.map(|n| {
                    // SAFETY: the kernel initialised the first `n <= capacity` bytes.
                    unsafe { buf.set_len(n as usize) };
                    IoBuf::from(buf)
                }),
            },
        };
        self.emit(r, files, ev);
    }

    fn emit(&mut self, r: &mut Reactor, files: usize, ev: FsEvent) {
        if self.deliver[files].deliver(ev) {
            // Kept for later: counted as work in flight until delivered.
            r.counters.io_started.add(1);
            r.counters.parked.add(1);
        }
    }

    /// Offers kept events again; returns how many went in.
    pub(crate) fn flush_kept(&mut self, r: &mut Reactor) -> usize {
        let n: usize = self.deliver.iter_mut().map(|d| d.flush()).sum();
        r.counters.io_finished.add(n as u64);
        n
    }

    /// Shutdown: file operations still in flight (only after a forced drain) may be written
    /// by the kernel until the ring's asynchronous teardown ends: their buffers are leaked
    /// rather than freed.
    pub(crate) fn teardown(&mut self) {
        std::mem::forget(std::mem::take(&mut self.ops));
    }
}

/// The file stage's handler: starts the operations its commands ask for.
pub(crate) struct FsStage {
    pub(crate) driver: Rc<RefCell<FsDriver>>,
}

impl Handler for FsStage {
    type Event = FsCmd;

    fn handle(&mut self, cmd: FsCmd, cx: &mut Context<'_>) {
        self.driver.borrow_mut().command(cx.reactor(), cmd);
    }
}
