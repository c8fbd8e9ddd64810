//! File I/O on the ring, as a stage: [`FsCmd`]s in, [`FsEvent`]s out.
//!
//! SEDA's file stage (Haboob's `AFile`): a handler that needs a file sends the file stage a
//! command (open beneath a root, stat, read) and gets the result later as an event, at the
//! stage it named when the file stage was declared ([`Builder::files`]), on the same
//! worker. The file stage has a replica on every worker; a command goes to the sender's.
//! Commands are not handled synchronously, so handlers never block on the disk, and the file
//! stage's queue is bounded like any other: a full one refuses the command (`Err(cmd)`).
//!
//! Paths are opened with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: `..`, absolute paths and
//! symlinks that would leave the root fail with `EXDEV` in the kernel, whatever the path says.
//!
//! Each operation is bounded by [`Builder::file_timeout`] (30 s by default): its SQE is linked
//! to an `IORING_OP_LINK_TIMEOUT`, so an operation stuck on a hung network or FUSE file system
//! (or a FIFO) is cancelled by the kernel and its event carries an error of kind
//! [`io::ErrorKind::TimedOut`]. That costs a second SQE and CQE per operation, which is why the
//! network's hot-path sends are bounded by a sweep instead.
//!
//! Each operation allocates its record once (the path, `open_how`, the `statx` buffer or the
//! read buffer the kernel writes, kept until completion): this is the cache-miss path, not the
//! hot path.
//!
//! # Examples
//!
//! A stage that reads a file's first KiB and prints its size:
//!
//! ```no_run
//! use std::sync::Arc;
//! use ringstage::fs::{FilesId, FsCmd, FsEvent, Root};
//! use ringstage::prelude::*;
//!
//! enum Ev { Start, Fs(FsEvent) }
//! impl From<FsEvent> for Ev {
//!     fn from(e: FsEvent) -> Ev { Ev::Fs(e) }
//! }
//!
//! struct Reader { fs: Sink<FsCmd>, files: FilesId, root: Arc<Root> }
//! impl Handler for Reader {
//!     type Event = Ev;
//!     fn handle(&mut self, ev: Ev, _cx: &mut Context<'_>) {
//!         let cmd = match ev {
//!             Ev::Start => FsCmd::Open { files: self.files, root: self.root.clone(), path: b"index.html"[..].into(), tag: 1 },
//!             Ev::Fs(FsEvent::Opened { result: Ok(f), .. }) => {
//!                 FsCmd::Read { files: self.files, file: Arc::new(f), offset: 0, len: 1024, tag: 2 }
//!             }
//!             Ev::Fs(FsEvent::Read { result: Ok(bytes), .. }) => return println!("{} bytes", bytes.len()),
//!             Ev::Fs(other) => return eprintln!("{other:?}"),
//!         };
//!         let _ = self.fs.try_enqueue(cmd); // refused: the file stage is full; shed or retry
//!     }
//! }
//!
//! let root = Arc::new(Root::open("/var/www").unwrap());
//! let mut b = Runtime::builder(1);
//! let reader = b.stage::<Ev>("reader", StageConfig::on([0]));
//! let (fs, files) = b.files(reader);
//! b.handler(reader, move |s| Reader { fs: s.sink(fs), files, root: root.clone() });
//! let rt = b.start().unwrap();
//! rt.injector(reader).try_enqueue(Ev::Start).ok();
//! ```
//!
//! [`Builder::files`]: crate::runtime::Builder::files
//! [`Builder::file_timeout`]: crate::runtime::Builder::file_timeout

mod driver;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

pub(crate) use driver::{Deliver, DeliverTo, FsDriver, FsStage};

use crate::buf::IoBuf;

/// A directory handle that file opens are confined beneath (`O_PATH | O_DIRECTORY`).
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens `path` as a root. Fails if it is not a directory (the error names the path).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Root> {
        let path = path.as_ref();
        let fd = ringstage_sys::fd::open_dir(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Root { fd })
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

/// Identifies a file stage user declared with [`Builder::files`](crate::runtime::Builder::files):
/// the stage that gets the [`FsEvent`]s of the commands that name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FilesId(pub(crate) usize);

/// What a handler asks of the file stage. Each command's result comes back as an [`FsEvent`]
/// with its `tag`, to the stage `files` names, on the sender's worker.
#[derive(Debug)]
pub enum FsCmd {
    /// Open `path` (relative, `/`-separated bytes) read-only beneath `root`; escapes (`..`,
    /// absolute paths, symlinks out of the root) fail with `EXDEV`. Answered with
    /// [`FsEvent::Opened`].
    Open {
        /// Where the result goes.
        files: FilesId,
        /// The directory the path is confined beneath.
        root: Arc<Root>,
        /// The path.
        path: Box<[u8]>,
        /// Handed back in the event.
        tag: u64,
    },
    /// `statx` of an open file (kept open until the operation completes). Answered with
    /// [`FsEvent::Stat`].
    Stat {
        /// Where the result goes.
        files: FilesId,
        /// The file.
        file: Arc<OwnedFd>,
        /// Handed back in the event.
        tag: u64,
    },
    /// Read up to `len` bytes at `offset` into a new buffer (one allocation of `len` bytes).
    /// Answered with [`FsEvent::Read`]: the bytes read (fewer at the end of the file).
    Read {
        /// Where the result goes.
        files: FilesId,
        /// The file.
        file: Arc<OwnedFd>,
        /// Where to start.
        offset: u64,
        /// How many bytes at most.
        len: usize,
        /// Handed back in the event.
        tag: u64,
    },
}

impl FsCmd {
    pub(crate) fn files(&self) -> FilesId {
        match self {
            FsCmd::Open { files, .. } | FsCmd::Stat { files, .. } | FsCmd::Read { files, .. } => *files,
        }
    }

    pub(crate) fn tag(&self) -> u64 {
        match self {
            FsCmd::Open { tag, .. } | FsCmd::Stat { tag, .. } | FsCmd::Read { tag, .. } => *tag,
        }
    }
}

/// The result of an [`FsCmd`], with the command's tag.
#[derive(Debug)]
pub enum FsEvent {
    /// The file of an [`FsCmd::Open`], or why not.
    Opened {
        /// The command's tag.
        tag: u64,
        /// The open file.
        result: io::Result<OwnedFd>,
    },
    /// The metadata of an [`FsCmd::Stat`], or why not.
    Stat {
        /// The command's tag.
        tag: u64,
        /// What `statx` reported.
        result: io::Result<FileStat>,
    },
    /// The bytes of an [`FsCmd::Read`] (empty at the end of the file), or why not.
    Read {
        /// The command's tag.
        tag: u64,
        /// The bytes read.
        result: io::Result<IoBuf>,
    },
}

impl FsEvent {
    /// The tag of the command this answers.
    pub fn tag(&self) -> u64 {
        match self {
            FsEvent::Opened { tag, .. } | FsEvent::Stat { tag, .. } | FsEvent::Read { tag, .. } => *tag,
        }
    }
}

/// An operation's completion result as an `io::Result`: a linked timeout that fired is
/// `TimedOut`.
fn result(res: i32) -> io::Result<i32> {
    if crate::reactor::timed_out(res) {
        Err(io::Error::new(io::ErrorKind::TimedOut, "file operation timed out (see Builder::file_timeout)"))
    } else if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res)
    }
}
