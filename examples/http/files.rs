//! The cache-miss stage: loads a file through the file stage (openat2 confined beneath the
//! root, statx, read, all on the ring) and hands the entry back to the cache stage. A file
//! larger than the cacheable size is not read: its open descriptor goes back instead, and the
//! body is spliced from the page cache to the socket per request.

use std::collections::VecDeque;
use std::sync::Arc;

use ringstage::fs::{FileStat, FilesId, FsCmd, FsEvent, Root};
use ringstage::prelude::*;
use slab::Slab;

use crate::cache::{CacheEvent, Entry, SharedCache};
use crate::proto;

pub struct FileReq {
    pub key: Box<[u8]>,
}

/// What the files stage handles: the cache stage's misses, and the file stage's answers.
pub enum FilesEvent {
    Load(FileReq),
    Fs(FsEvent),
}

impl From<FsEvent> for FilesEvent {
    fn from(e: FsEvent) -> FilesEvent {
        FilesEvent::Fs(e)
    }
}

pub struct Files {
    pub cache: Sink<CacheEvent>,
    pub fs: Sink<FsCmd>,
    pub files: FilesId,
    pub root: Arc<Root>,
    pub shared: Arc<SharedCache>,
    /// Loads in progress, by the tag of their file operation.
    pub loads: Slab<Load>,
    /// Results the cache stage refused (it was full); retried before new work and on ticks.
    pub undelivered: VecDeque<CacheEvent>,
}

/// One load in progress.
pub struct Load {
    key: Box<[u8]>,
    /// The path beneath the root (the key, with `index.html` for a directory).
    rel: Vec<u8>,
    file: Option<Arc<std::os::fd::OwnedFd>>,
    stat: Option<FileStat>,
    got: Vec<IoBuf>,
}

fn status_of(e: &std::io::Error) -> u16 {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return 503; // the file system did not answer within --file-timeout-ms: retry later
    }
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG) => 404,
        Some(libc::EXDEV | libc::ELOOP | libc::EACCES | libc::EPERM) => 403, // outside the root
        // Out of descriptors or memory for now: a refusal to retry, not a server fault.
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => 503,
        _ => 500,
    }
}

impl Files {
    fn redeliver(&mut self) {
        while let Some(ev) = self.undelivered.pop_front() {
            if let Err(ev) = self.cache.try_enqueue(ev) {
                self.undelivered.push_front(ev);
                break;
            }
        }
    }

    fn finish(&mut self, tag: usize, result: Result<Arc<Entry>, u16>) {
        let ld = self.loads.remove(tag);
        let ev = CacheEvent::Loaded { key: ld.key, result };
        if let Err(ev) = self.cache.try_enqueue(ev) {
            self.undelivered.push_back(ev);
        }
    }

    /// The next file operation of load `tag`; a full file stage fails the load (503).
    fn ask(&mut self, tag: usize, cmd: FsCmd) {
        if self.fs.try_enqueue(cmd).is_err() {
            self.finish(tag, Err(503));
        }
    }

    fn read_more(&mut self, tag: usize) {
        let ld = &self.loads[tag];
        let (st, file) = (ld.stat.expect("stat before reading"), ld.file.clone().expect("open before reading"));
        let have: u64 = ld.got.iter().map(|b| b.len() as u64).sum();
        if have < st.size {
            let cmd =
                FsCmd::Read { files: self.files, file, offset: have, len: (st.size - have) as usize, tag: tag as u64 };
            return self.ask(tag, cmd);
        }
        let ld = &mut self.loads[tag];
        let body = match ld.got.len() {
            0 => IoBuf::from_static(b""),
            1 => ld.got.pop().expect("one"),
            _ => IoBuf::from(ld.got.iter().flat_map(|b| b.iter().copied()).collect::<Vec<u8>>()), // short reads: rare
        };
        let cached = body.len() <= self.shared.max_file;
        let e = Arc::new(Entry::new(&ld.rel, body, st.ino, proto::unix_secs(st.modified), cached));
        if cached {
            self.shared.insert(&ld.key, e.clone());
        }
        self.finish(tag, Ok(e));
    }

    fn on_fs(&mut self, ev: FsEvent) {
        let tag = ev.tag() as usize;
        if !self.loads.contains(tag) {
            return;
        }
        match ev {
            FsEvent::Opened { result: Ok(fd), .. } => {
                let file = Arc::new(fd);
                self.loads[tag].file = Some(file.clone());
                self.ask(tag, FsCmd::Stat { files: self.files, file, tag: tag as u64 });
            }
            FsEvent::Stat { result: Ok(st), .. } => {
                let ld = &mut self.loads[tag];
                ld.stat = Some(st);
                if st.is_dir && !ld.key.ends_with(b"/") {
                    // A directory named without its trailing slash: the relative links of its
                    // index would resolve against its parent, so the client is sent to the
                    // slashed name (as nginx does). With the slash, its index.html was asked for.
                    self.finish(tag, Err(301));
                } else if st.is_file && st.size as usize > self.shared.max_file {
                    // Too large to cache: keep the file open and splice it per request (zero copy).
                    let file = ld.file.clone().expect("opened");
                    let e = Entry::spliced(&ld.rel, file, st.size, st.ino, proto::unix_secs(st.modified));
                    self.finish(tag, Ok(Arc::new(e)));
                } else if st.is_file {
                    self.read_more(tag);
                } else {
                    self.finish(tag, Err(403)); // neither a regular file nor a directory
                }
            }
            FsEvent::Read { result: Ok(b), .. } => {
                let ld = &mut self.loads[tag];
                if b.is_empty() {
                    // The file shrank under us: serve what there is, uncached.
                    let have = ld.got.iter().map(|b| b.len() as u64).sum();
                    ld.stat = ld.stat.map(|st| FileStat { size: have, ..st });
                }
                ld.got.push(b);
                self.read_more(tag);
            }
            FsEvent::Opened { result: Err(e), .. }
            | FsEvent::Stat { result: Err(e), .. }
            | FsEvent::Read { result: Err(e), .. } => self.finish(tag, Err(status_of(&e))),
        }
    }
}

impl Handler for Files {
    type Event = FilesEvent;

    fn handle(&mut self, ev: FilesEvent, _cx: &mut Context<'_>) {
        self.redeliver();
        match ev {
            FilesEvent::Load(req) => {
                let mut rel = req.key[1..].to_vec();
                if rel.is_empty() || rel.ends_with(b"/") {
                    rel.extend_from_slice(b"index.html");
                }
                let path = rel.clone().into_boxed_slice();
                let tag = self.loads.insert(Load { key: req.key, rel, file: None, stat: None, got: Vec::new() });
                let cmd = FsCmd::Open { files: self.files, root: self.root.clone(), path, tag: tag as u64 };
                self.ask(tag, cmd);
            }
            FilesEvent::Fs(ev) => self.on_fs(ev),
        }
    }

    fn tick(&mut self, _cx: &mut Context<'_>) {
        self.redeliver();
    }
}

#[cfg(test)]
mod tests {
    use super::status_of;
    use std::io::{Error, ErrorKind};

    #[test]
    fn load_errors_map_to_statuses() {
        assert_eq!(status_of(&Error::from_raw_os_error(libc::ENOENT)), 404);
        assert_eq!(status_of(&Error::from_raw_os_error(libc::EXDEV)), 403, "outside the root");
        assert_eq!(status_of(&Error::new(ErrorKind::TimedOut, "stuck")), 503, "file op timed out");
        assert_eq!(status_of(&Error::from_raw_os_error(libc::EIO)), 500);
        assert_eq!(status_of(&Error::from_raw_os_error(libc::EMFILE)), 503, "out of descriptors: retry");
    }
}
