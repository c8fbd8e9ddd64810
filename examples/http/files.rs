//! The cache-miss stage: loads a file with openat2 (confined beneath the root), statx and read,
//! all on the ring, and hands the entry back to the cache stage. A file larger than the
//! cacheable size is not read: its open descriptor goes back instead, and the body is spliced
//! from the page cache to the socket per request.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use ringstage::fs::{FileStat, Root};
use ringstage::prelude::*;

use crate::cache::{CacheEvent, Entry, SharedCache};
use crate::proto;

pub struct FileReq {
    pub key: Box<[u8]>,
}

pub struct Files {
    pub cache: Sink<CacheEvent>,
    pub root: Arc<Root>,
    pub shared: Arc<SharedCache>,
    /// Results the cache stage refused (it was full); retried before new work and on ticks.
    pub undelivered: Rc<RefCell<VecDeque<CacheEvent>>>,
}

/// One load in progress; moves from callback to callback.
struct Load {
    key: Box<[u8]>,
    rel: Vec<u8>,
    cache: Sink<CacheEvent>,
    root: Arc<Root>,
    shared: Arc<SharedCache>,
    undelivered: Rc<RefCell<VecDeque<CacheEvent>>>,
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

fn finish(ld: Load, result: Result<Arc<Entry>, u16>) {
    let ev = CacheEvent::Loaded { key: ld.key, result };
    if let Err(ev) = ld.cache.try_enqueue(ev) {
        ld.undelivered.borrow_mut().push_back(ev);
    }
}

fn open(cx: &mut Context<'_>, ld: Load) {
    let root = ld.root.clone();
    let rel = ld.rel.clone();
    cx.open_beneath(&root, &rel, move |r, cx| match r {
        Ok(fd) => stat(cx, ld, fd),
        Err(e) => finish(ld, Err(status_of(&e))),
    });
}

fn stat(cx: &mut Context<'_>, ld: Load, fd: OwnedFd) {
    cx.stat(fd.as_raw_fd(), move |r, cx| match r {
        Ok(st) if st.is_dir && !ld.key.ends_with(b"/") => {
            // A directory named without its trailing slash: the relative links of its index
            // would resolve against its parent, so the client is sent to the slashed name (as
            // nginx does). With the slash, its index.html was asked for instead.
            cx.close(fd);
            finish(ld, Err(301));
        }
        Ok(st) if st.is_file && st.size as usize > ld.shared.max_file => {
            // Too large to cache: keep the file open and splice it per request (zero copy).
            let e = Entry::spliced(&ld.rel, Arc::new(fd), st.size, st.ino, proto::unix_secs(st.modified));
            finish(ld, Ok(Arc::new(e)));
        }
        Ok(st) if st.is_file => read(cx, ld, fd, st, Vec::new()),
        Ok(_) => {
            cx.close(fd);
            finish(ld, Err(403)); // neither a regular file nor a directory
        }
        Err(e) => {
            cx.close(fd);
            finish(ld, Err(status_of(&e)));
        }
    });
}

fn read(cx: &mut Context<'_>, ld: Load, fd: OwnedFd, st: FileStat, mut got: Vec<IoBuf>) {
    let have: u64 = got.iter().map(|b| b.len() as u64).sum();
    if have < st.size {
        let want = (st.size - have) as usize;
        return cx.read_at(fd.as_raw_fd(), have, want, move |r, cx| match r {
            Ok(b) if b.is_empty() => {
                // The file shrank under us: serve what there is, uncached.
                got.push(b);
                let st = FileStat { size: have, ..st };
                read(cx, ld, fd, st, got)
            }
            Ok(b) => {
                got.push(b);
                read(cx, ld, fd, st, got)
            }
            Err(e) => {
                cx.close(fd);
                finish(ld, Err(status_of(&e)));
            }
        });
    }
    cx.close(fd);
    let body = match got.len() {
        0 => IoBuf::from_static(b""),
        1 => got.pop().expect("one"),
        _ => IoBuf::from(got.iter().flat_map(|b| b.iter().copied()).collect::<Vec<u8>>()), // short reads: rare
    };
    let cached = body.len() <= ld.shared.max_file;
    let e = Arc::new(Entry::new(&ld.rel, body, st.ino, proto::unix_secs(st.modified), cached));
    if cached {
        ld.shared.insert(&ld.key, e.clone());
    }
    finish(ld, Ok(e));
}

impl Files {
    fn redeliver(&mut self) {
        let mut q = self.undelivered.borrow_mut();
        while let Some(ev) = q.pop_front() {
            if let Err(ev) = self.cache.try_enqueue(ev) {
                q.push_front(ev);
                break;
            }
        }
    }
}

impl Handler for Files {
    type Event = FileReq;

    fn handle(&mut self, req: FileReq, cx: &mut Context<'_>) {
        self.redeliver();
        let mut rel = req.key[1..].to_vec();
        if rel.is_empty() || rel.ends_with(b"/") {
            rel.extend_from_slice(b"index.html");
        }
        let ld = Load {
            key: req.key,
            rel,
            cache: self.cache.clone(),
            root: self.root.clone(),
            shared: self.shared.clone(),
            undelivered: self.undelivered.clone(),
        };
        open(cx, ld);
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
