//! File I/O on the ring (`ringstage::fs`), driven from a stage: opens confined beneath a root,
//! statx, reads, and the linked timeout that bounds each operation.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ringstage::fs::{FileStat, FilesId, FsCmd, FsEvent, Root};
use ringstage::prelude::*;

/// A request to the stage under test; each answers on its own channel.
enum Job {
    /// Open `path` beneath the root and read up to 64 KiB of it.
    Read(Vec<u8>, mpsc::Sender<io::Result<Vec<u8>>>),
    /// Open `path` beneath the root and stat it.
    Stat(Vec<u8>, mpsc::Sender<io::Result<FileStat>>),
}

/// The stage's events: jobs from the test, answers from the file stage.
enum Ev {
    Job(Job),
    Fs(FsEvent),
}

impl From<FsEvent> for Ev {
    fn from(e: FsEvent) -> Ev {
        Ev::Fs(e)
    }
}

struct Files {
    root: Arc<Root>,
    fs: Sink<FsCmd>,
    files: FilesId,
    /// Jobs waiting for the file stage, by tag.
    waiting: HashMap<u64, Job>,
    next: u64,
}

impl Handler for Files {
    type Event = Ev;

    fn handle(&mut self, ev: Ev, _cx: &mut Context<'_>) {
        let cmd = match ev {
            Ev::Job(job) => {
                let (Job::Read(path, _) | Job::Stat(path, _)) = &job;
                let path = path.clone().into_boxed_slice();
                self.next += 1;
                let tag = self.next;
                self.waiting.insert(tag, job);
                FsCmd::Open { files: self.files, root: self.root.clone(), path, tag }
            }
            Ev::Fs(ev) => {
                let tag = ev.tag();
                let Some(job) = self.waiting.remove(&tag) else { return };
                match (ev, job) {
                    (FsEvent::Opened { result: Ok(fd), .. }, job) => {
                        let file = Arc::new(fd);
                        let cmd = match &job {
                            Job::Read(..) => FsCmd::Read { files: self.files, file, offset: 0, len: 64 << 10, tag },
                            Job::Stat(..) => FsCmd::Stat { files: self.files, file, tag },
                        };
                        self.waiting.insert(tag, job);
                        cmd
                    }
                    (FsEvent::Opened { result: Err(e), .. }, Job::Read(_, reply)) => return drop(reply.send(Err(e))),
                    (FsEvent::Opened { result: Err(e), .. }, Job::Stat(_, reply)) => return drop(reply.send(Err(e))),
                    (FsEvent::Read { result, .. }, Job::Read(_, reply)) => {
                        return drop(reply.send(result.map(|b| b.to_vec())));
                    }
                    (FsEvent::Stat { result, .. }, Job::Stat(_, reply)) => return drop(reply.send(result)),
                    _ => panic!("an answer to another operation"),
                }
            }
        };
        assert!(self.fs.try_enqueue(cmd).is_ok(), "the file stage refused a command");
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ringstage-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/hello.txt"), b"hello, ring").unwrap();
        Dir(d)
    }

    /// Makes the FIFO `fifo` in the directory and opens it for writing (read-write, so the open
    /// does not wait for a reader). Reads of it wait until the writer writes.
    fn fifo_with_writer(&self) -> std::fs::File {
        let fifo = self.0.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime(dir: &Dir, timeout: Option<Duration>) -> (Runtime, Injector<Ev>) {
    let root = Arc::new(Root::open(&dir.0).unwrap());
    let mut b = Runtime::builder(1).cpus([]).file_timeout(timeout);
    let stage = b.stage::<Ev>("files", StageConfig::on([0]));
    let (fs, files) = b.files(stage);
    b.handler(stage, move |s| Files { root: root.clone(), fs: s.sink(fs), files, waiting: HashMap::new(), next: 0 });
    let rt = b.start().expect("runtime starts");
    let inj = rt.injector(stage);
    (rt, inj)
}

fn read(inj: &Injector<Ev>, path: &str) -> io::Result<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    assert!(inj.try_enqueue(Ev::Job(Job::Read(path.as_bytes().to_vec(), tx))).is_ok());
    rx.recv_timeout(Duration::from_secs(10)).expect("the file stage answers")
}

#[test]
fn opens_stats_and_reads_beneath_the_root_only() {
    let dir = Dir::new("beneath");
    std::os::unix::fs::symlink("/etc/hostname", dir.0.join("out")).unwrap();
    std::os::unix::fs::symlink("sub/hello.txt", dir.0.join("in")).unwrap();
    let (rt, inj) = runtime(&dir, Some(Duration::from_secs(5)));
    assert_eq!(read(&inj, "sub/hello.txt").unwrap(), b"hello, ring");
    assert_eq!(read(&inj, "in").unwrap(), b"hello, ring", "a symlink inside the root is followed");
    for escape in ["../etc/hostname", "/etc/hostname", "sub/../../etc/hostname", "out"] {
        let e = read(&inj, escape).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{escape}: {e}");
    }
    assert_eq!(read(&inj, "missing").unwrap_err().kind(), io::ErrorKind::NotFound);
    let (tx, rx) = mpsc::channel();
    assert!(inj.try_enqueue(Ev::Job(Job::Stat(b"sub/hello.txt".to_vec(), tx))).is_ok());
    let st = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert!(st.is_file && !st.is_dir && st.size == 11);
    let (tx, rx) = mpsc::channel();
    assert!(inj.try_enqueue(Ev::Job(Job::Stat(b"sub".to_vec(), tx))).is_ok());
    let st = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert!(st.is_dir && !st.is_file);
    // Many quick operations, each with its timeout linked: none is cancelled, and the timeouts'
    // own completions do not disturb anything.
    for _ in 0..200 {
        assert_eq!(read(&inj, "sub/hello.txt").unwrap(), b"hello, ring");
    }
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_stuck_read_is_cancelled_by_its_linked_timeout() {
    let dir = Dir::new("stuck");
    // A writer that never writes: reads of the FIFO wait for data that does not come.
    let writer = dir.fifo_with_writer();
    let limit = Duration::from_millis(300);
    let (rt, inj) = runtime(&dir, Some(limit));
    let t0 = Instant::now();
    let e = read(&inj, "fifo").unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(took >= limit && took < limit + Duration::from_secs(2), "cancelled after {took:?}");
    // The worker is free: other files are read at once.
    assert_eq!(read(&inj, "sub/hello.txt").unwrap(), b"hello, ring");
    drop(writer);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn without_a_limit_an_operation_waits_for_its_data() {
    let dir = Dir::new("nolimit");
    let mut writer = dir.fifo_with_writer();
    let (rt, inj) = runtime(&dir, None);
    let (tx, rx) = mpsc::channel();
    assert!(inj.try_enqueue(Ev::Job(Job::Read(b"fifo".to_vec(), tx))).is_ok());
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "nothing to read yet: still waiting");
    std::io::Write::write_all(&mut writer, b"late").unwrap();
    let got = rx.recv_timeout(Duration::from_secs(10)).expect("answered once data came").unwrap();
    assert_eq!(got, b"late");
    rt.shutdown();
    rt.join().unwrap();
}
