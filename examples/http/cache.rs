//! The page-cache stage: answers requests in order per connection, from a bounded cache of
//! file contents kept as `IoBuf`s. Entries are shared across connections and cores without
//! copies: a worker-local index (no lock on a hit) in front of one shared map (a lock on a miss
//! only), with CLOCK eviction by total bytes.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringstage::net::SplicePipe;
use ringstage::prelude::*;

use crate::files::{FileReq, FilesEvent};
use crate::parse::{Kind, Request, TAIL_CLOSE, TAIL_KEEP};
use crate::proto::{self, DateLine, PathError, Range};

/// The maps here are keyed by request targets and hashed once or twice per request: foldhash
/// (seeded per process) instead of SipHash took ~200 instructions off each request. Targets are
/// chosen by clients, but these maps hold files that exist (bounded by the cache size) and the
/// targets of loads in flight, and the random seed keeps collisions unpredictable from outside;
/// the KV store, whose keys clients choose and keep, stays with SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A cached (or just loaded) file.
pub struct Entry {
    pub body: IoBuf,
    /// Too large to cache: the open file, sent with splice (zero copy) instead of `body`.
    pub file: Option<Arc<std::os::fd::OwnedFd>>,
    /// Content length.
    pub len: u64,
    /// Status line and the fixed headers of a 200, ending before `Date:`.
    pub head200: IoBuf,
    pub etag: String,
    pub last_modified: String,
    pub mtime: i64,
    pub mime: &'static str,
    pub loaded: Instant,
    /// Whether it went into the shared cache (small enough).
    pub cached: bool,
    evicted: AtomicBool,
    referenced: AtomicBool,
}

impl Entry {
    /// `path` names the file actually read (for its MIME type).
    pub fn new(path: &[u8], body: IoBuf, ino: u64, mtime: i64, cached: bool) -> Entry {
        let len = body.len() as u64;
        Entry::build(path, body, None, len, ino, mtime, cached)
    }

    /// An uncached large file, to be spliced from `file`.
    pub fn spliced(path: &[u8], file: Arc<std::os::fd::OwnedFd>, len: u64, ino: u64, mtime: i64) -> Entry {
        Entry::build(path, IoBuf::from_static(b""), Some(file), len, ino, mtime, false)
    }

    fn build(
        path: &[u8],
        body: IoBuf,
        file: Option<Arc<std::os::fd::OwnedFd>>,
        len: u64,
        ino: u64,
        mtime: i64,
        cached: bool,
    ) -> Entry {
        let etag = format!("\"{ino:x}-{mtime:x}-{len:x}\"");
        let last_modified = proto::http_date(mtime);
        let mime = proto::mime(path);
        let head200 = IoBuf::from(
            format!(
                "HTTP/1.1 200 OK\r\nServer: {}\r\nContent-Type: {mime}\r\nContent-Length: {}\r\nLast-Modified: {last_modified}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\n",
                proto::SERVER,
                len
            )
            .into_bytes(),
        );
        Entry {
            body,
            file,
            len,
            head200,
            etag,
            last_modified,
            mtime,
            mime,
            loaded: Instant::now(),
            cached,
            evicted: AtomicBool::new(false),
            referenced: AtomicBool::new(false),
        }
    }

    fn fresh(&self, ttl: Duration, now: Instant) -> bool {
        !self.evicted.load(Ordering::Relaxed) && now.saturating_duration_since(self.loaded) < ttl
    }

    fn touch(&self) {
        // Write the shared line only when the bit is not already set.
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }
}

/// The cross-core cache: one map behind a mutex, touched on misses and fills only.
pub struct SharedCache {
    inner: Mutex<Inner>,
    pub capacity: usize,
    pub max_file: usize,
    pub ttl: Duration,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Box<[u8]>, Arc<Entry>>,
    clock: VecDeque<Box<[u8]>>,
    bytes: usize,
}

impl SharedCache {
    pub fn new(capacity: usize, max_file: usize, ttl: Duration) -> SharedCache {
        SharedCache { inner: Mutex::new(Inner::default()), capacity, max_file: max_file.min(capacity), ttl }
    }

    fn get(&self, key: &[u8]) -> Option<Arc<Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).map.get(key).cloned()
    }

    /// Inserts, evicting by CLOCK (second chance) until the bytes fit.
    pub fn insert(&self, key: &[u8], e: Arc<Entry>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        if let Some(old) = inner.map.remove(key) {
            old.evicted.store(true, Ordering::Relaxed);
            inner.bytes -= old.body.len();
            inner.clock.retain(|k| &**k != key);
        }
        while inner.bytes + e.body.len() > self.capacity {
            let Some(k) = inner.clock.pop_front() else { break };
            let Some(victim) = inner.map.get(&k) else { continue };
            if victim.referenced.swap(false, Ordering::Relaxed) {
                inner.clock.push_back(k); // second chance
            } else if let Some(v) = inner.map.remove(&k) {
                v.evicted.store(true, Ordering::Relaxed);
                inner.bytes -= v.body.len();
            }
        }
        inner.bytes += e.body.len();
        inner.clock.push_back(key.into());
        inner.map.insert(key.into(), e);
    }
}

pub enum CacheEvent {
    Req(Request),
    /// The dynamic stage rendered a page for `req`.
    Rendered {
        req: Request,
        body: IoBuf,
    },
    /// The file stage finished loading `key`: the entry, or an HTTP status.
    Loaded {
        key: Box<[u8]>,
        result: Result<Arc<Entry>, u16>,
    },
}

pub struct Cache {
    /// To the network stage. What it refuses waits here, in order, so responses keep their
    /// order and none is lost to a burst (a blocked connection's pipelined requests answered at
    /// once); retried the next loop iteration (`Handler::woken`). The network stage takes
    /// its whole queue each visit, so this empties as fast as it fills.
    net: Outbox<NetCmd>,
    files: Sink<FilesEvent>,
    dynamic: Sink<Request>,
    handle: Handle,
    shared: Arc<SharedCache>,
    local: HashMap<Box<[u8]>, Arc<Entry>>,
    /// Requests waiting for a load, by key.
    waiting: HashMap<Box<[u8]>, Vec<Request>>,
    /// Connections with a request waiting for a load: their later requests queue here, so
    /// pipelined responses leave in request order.
    blocked: HashMap<Conn, VecDeque<Request>>,
    date: DateLine,
    plain: PlainResponse,
    /// The loop clock of the event being handled (for the `Date:` line).
    now: Instant,
    responses: Responses,
}

/// Responses sent, by status class: this worker's slots of `http_responses_total{class="2xx"}`
/// to `{class="5xx"}` (see `/stats`).
pub struct Responses(pub [AppCounter; 4]);

impl Responses {
    pub const CLASSES: [&'static str; 4] = ["2xx", "3xx", "4xx", "5xx"];

    fn count(&self, status: u16) {
        if let Some(c) = (status / 100).checked_sub(2).and_then(|i| self.0.get(i as usize)) {
            c.add(1);
        }
    }
}

/// The complete keep-alive `/plaintext` response, rebuilt (in place) when the `Date:` line
/// changes.
struct PlainResponse {
    date: IoBuf,
    full: proto::Rewritten,
}

impl PlainResponse {
    fn get(&mut self, date: &mut DateLine, now: Instant) -> IoBuf {
        let d = date.get(now);
        if d.as_ptr() != self.date.as_ptr() {
            self.full.set(&[PLAIN_HEAD, &d[..], TAIL_KEEP, PLAIN_BODY]);
            self.date = d;
        }
        self.full.current().clone()
    }
}

static PLAIN_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: ringstage\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n";
static PLAIN_BODY: &[u8] = b"Hello, World!";

/// A request target (origin form, as received) with a slash added to its path: where a
/// directory named without one is found. httparse admitted no space or control byte into it.
fn slashed(target: &[u8]) -> String {
    let end = target.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(target.len());
    let (path, rest) = target.split_at(end);
    format!("{}/{}", String::from_utf8_lossy(path), String::from_utf8_lossy(rest))
}

/// Targets that are already a normalised key need no decoding (the common case: no copy).
/// One pass over the bytes: no escape, query, fragment, backslash or NUL, and no `/.` or `//`.
fn plain_target(t: &[u8]) -> bool {
    let mut prev = 0;
    t.first() == Some(&b'/')
        && t.iter().all(|&b| {
            let bad = matches!(b, b'%' | b'?' | b'#' | b'\\' | 0) || (prev == b'/' && matches!(b, b'.' | b'/'));
            prev = b;
            !bad
        })
}

fn etag_matches(header: &[u8], etag: &str) -> bool {
    let strip = |t: &[u8]| -> Vec<u8> { t.trim_ascii().strip_prefix(b"W/").unwrap_or(t.trim_ascii()).to_vec() };
    let mine = strip(etag.as_bytes());
    header.trim_ascii() == b"*" || header.split(|&b| b == b',').any(|t| strip(t) == mine)
}

/// Whether an `If-Range` value names this version of the file: its entity tag, compared
/// strongly (a weak tag never does), or exactly its `Last-Modified` date.
fn if_range_holds(v: &[u8], e: &Entry) -> bool {
    let v = v.trim_ascii();
    if v.starts_with(b"\"") {
        v == e.etag.as_bytes()
    } else if v.starts_with(b"W/") {
        false
    } else {
        proto::parse_http_date(v) == Some(e.mtime)
    }
}

impl Cache {
    pub fn new(
        net: Sink<NetCmd>,
        files: Sink<FilesEvent>,
        dynamic: Sink<Request>,
        handle: Handle,
        shared: Arc<SharedCache>,
        waker: Waker,
        responses: Responses,
    ) -> Cache {
        Cache {
            net: Outbox::with_waker(net, waker),
            files,
            dynamic,
            handle,
            shared,
            local: HashMap::default(),
            waiting: HashMap::default(),
            blocked: HashMap::default(),
            date: DateLine::new(),
            plain: PlainResponse { date: IoBuf::from_static(b""), full: proto::Rewritten::new() },
            now: Instant::now(),
            responses,
        }
    }

    /// Hands `cmd` to the network stage, behind any it refused earlier (see `net`).
    fn command(&mut self, cmd: NetCmd) {
        self.net.send(cmd);
    }

    /// Sends a response with status `status` (counted), then closes if asked.
    fn send(&mut self, conn: Conn, status: u16, chain: IoBufChain, close: bool) {
        self.responses.count(status);
        self.command(NetCmd::SendChain { conn, data: chain });
        if close {
            self.command(NetCmd::Close { conn });
        }
    }

    fn respond_error(&mut self, req: &Request, status: u16, extra: &str) {
        let close = req.closes() || status >= 500 && status != 503;
        let body = format!("{} {}\n", status, proto::reason(status));
        let date = self.date.get(self.now);
        let tail = if close { TAIL_CLOSE } else { req.tail() };
        let resp = proto::simple(status, if req.head { "" } else { &body }, tail, extra, &date);
        self.send(req.conn, status, IoBufChain::from(resp), close);
    }

    /// A 200 with a freshly made body (stats, dynamic pages).
    fn respond_body(&mut self, req: &Request, content_type: &str, body: IoBuf) {
        let h = format!(
            "HTTP/1.1 200 OK\r\nServer: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
            proto::SERVER,
            body.len()
        );
        let chain = self.chain(req, IoBuf::from(h.into_bytes()), Some(body));
        self.send(req.conn, 200, chain, !req.keep_alive);
    }

    /// A response as views: status line and headers, the shared `Date:` line, the connection
    /// tail, and the body unless the request is HEAD.
    fn chain(&mut self, req: &Request, head: IoBuf, body: Option<IoBuf>) -> IoBufChain {
        let mut c = IoBufChain::new();
        c.push(head);
        c.push(self.date.get(self.now));
        c.push(IoBuf::from_static(req.tail()));
        if let Some(b) = body.filter(|_| !req.head) {
            c.push(b);
        }
        c
    }

    /// Serves an entry: 200, 206, 304, 412 or 416. The 200 path is four views and no
    /// allocation. The preconditions are judged in RFC 9110's order (§13.2.2).
    fn respond(&mut self, req: &Request, e: &Entry) {
        if req.if_unmodified_since().and_then(proto::parse_http_date).is_some_and(|t| e.mtime > t) {
            return self.respond_error(req, 412, "");
        }
        let not_modified = match (req.if_none_match(), req.if_modified_since()) {
            (Some(inm), _) => etag_matches(inm, &e.etag),
            (None, Some(ims)) => proto::parse_http_date(ims).is_some_and(|t| e.mtime <= t),
            _ => false,
        };
        if not_modified {
            let h = format!(
                "HTTP/1.1 304 Not Modified\r\nServer: {}\r\nETag: {}\r\nLast-Modified: {}\r\n",
                proto::SERVER,
                e.etag,
                e.last_modified
            );
            let chain = self.chain(req, IoBuf::from(h.into_bytes()), None);
            return self.send(req.conn, 304, chain, !req.keep_alive);
        }
        let len = e.len;
        // The chain, and the body part to send as (offset, length) when the file is spliced
        // (its in-memory body is empty then).
        // If-Range (RFC 9110 §13.1.5): the range only while the client's copy is this version.
        // A Range is for GET only (RFC 9110 §14.2): a HEAD is answered as if it had none.
        let range = req.range().filter(|_| !req.head && req.if_range().is_none_or(|v| if_range_holds(v, e)));
        let (status, chain, file_part) = match range.map_or(Range::Full, |r| proto::parse_range(r, len)) {
            Range::Full => {
                let chain = self.chain(req, e.head200.clone(), Some(e.body.clone()));
                (200, chain, (!req.head).then_some((0, len)))
            }
            Range::Part(a, b) => {
                let h = format!(
                    "HTTP/1.1 206 Partial Content\r\nServer: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{len}\r\nLast-Modified: {}\r\nETag: {}\r\n",
                    proto::SERVER,
                    e.mime,
                    b - a + 1,
                    e.last_modified,
                    e.etag
                );
                let body = e.file.is_none().then(|| e.body.slice(a as usize..=b as usize));
                (206, self.chain(req, IoBuf::from(h.into_bytes()), body), (!req.head).then_some((a, b - a + 1)))
            }
            Range::Unsatisfiable => {
                return self.respond_error(req, 416, &format!("Content-Range: bytes */{len}\r\n"));
            }
        };
        match (&e.file, file_part) {
            (Some(file), Some((offset, len))) if len > 0 => {
                // The pipe first: a head is committed only with the means to send its body in
                // hand. Out of descriptors, the answer is a 503 the client can retry.
                let Ok(pipe) = SplicePipe::new() else {
                    return self.respond_error(req, 503, "Retry-After: 1\r\n");
                };
                // Headers from memory, then the body spliced from the page cache.
                let conn = req.conn;
                self.send(conn, status, chain, false);
                self.command(NetCmd::SendFile { conn, file: file.clone(), offset, len, pipe });
                if !req.keep_alive {
                    self.command(NetCmd::Close { conn });
                }
            }
            _ => self.send(req.conn, status, chain, !req.keep_alive),
        }
    }

    fn process(&mut self, req: Request, now: Instant) {
        let target = match &req.kind {
            Kind::Plaintext if req.keep_alive && !req.head && !req.http10 => {
                // The common case as one segment: the whole response, rebuilt once a second.
                let resp = self.plain.get(&mut self.date, now);
                return self.send(req.conn, 200, IoBufChain::from(resp), false);
            }
            Kind::Plaintext => {
                let c = self.chain(&req, IoBuf::from_static(PLAIN_HEAD), Some(IoBuf::from_static(PLAIN_BODY)));
                return self.send(req.conn, 200, c, !req.keep_alive);
            }
            Kind::Error(405) => return self.respond_error(&req, 405, "Allow: GET, HEAD\r\n"),
            Kind::Error(s) => return self.respond_error(&req, *s, ""),
            Kind::Busy => return self.respond_error(&req, 503, "Retry-After: 1\r\n"),
            Kind::Eof => {
                // Every earlier request of the connection is answered: close after sending.
                return self.command(NetCmd::Close { conn: req.conn });
            }
            Kind::Stats => {
                let body = IoBuf::from(self.handle.metrics().prometheus().into_bytes());
                return self.respond_body(&req, "text/plain; version=0.0.4", body);
            }
            Kind::Dynamic => {
                // Park the connection (ordering) and offer the request to the dynamic stage,
                // whose admission controller may refuse it: then 503 at once.
                let conn = req.conn;
                self.blocked.entry(conn).or_default();
                if let Err(req) = self.dynamic.try_enqueue_class(req, 0) {
                    self.respond_error(&req, 503, "Retry-After: 1\r\n");
                    self.unblock(conn, now);
                }
                return;
            }
            Kind::File(_) => req.target().unwrap_or_default(),
        };
        let key: Cow<'_, [u8]> = if plain_target(target) {
            Cow::Borrowed(target)
        } else {
            match proto::decode_path(target) {
                Ok(k) => Cow::Owned(k),
                Err(PathError::Bad) => return self.respond_error(&req, 400, ""),
                Err(PathError::Forbidden) => return self.respond_error(&req, 403, ""),
            }
        };
        let ttl = self.shared.ttl;
        if let Some(e) = self.local.get(&*key).filter(|e| e.fresh(ttl, now)).cloned() {
            e.touch();
            return self.respond(&req, &e);
        }
        if let Some(e) = self.shared.get(&key).filter(|e| e.fresh(ttl, now)) {
            e.touch();
            self.local.insert(key.as_ref().into(), e.clone());
            return self.respond(&req, &e);
        }
        // Miss: park the request (and the connection's later ones) until the file stage loads.
        let key: Box<[u8]> = key.as_ref().into();
        self.blocked.entry(req.conn).or_default();
        let first = !self.waiting.contains_key(&key);
        self.waiting.entry(key.clone()).or_default().push(req);
        if first {
            if let Err(FilesEvent::Load(FileReq { key })) = self.files.try_enqueue(FilesEvent::Load(FileReq { key })) {
                self.loaded(key, Err(503), now); // file stage full: answer at once
            }
        }
    }

    fn loaded(&mut self, key: Box<[u8]>, result: Result<Arc<Entry>, u16>, now: Instant) {
        if let Ok(e) = &result {
            if e.cached {
                self.local.insert(key.clone(), e.clone());
            }
        }
        for req in self.waiting.remove(&key).unwrap_or_default() {
            match &result {
                Ok(e) => self.respond(&req, e),
                Err(503) => self.respond_error(&req, 503, "Retry-After: 1\r\n"),
                Err(301) => {
                    let location = slashed(req.target().unwrap_or(b"/"));
                    self.respond_error(&req, 301, &format!("Location: {location}\r\n"))
                }
                Err(s) => self.respond_error(&req, *s, ""),
            }
            self.unblock(req.conn, now);
        }
    }

    /// Serves a connection's queued requests in order until one has to wait again.
    fn unblock(&mut self, conn: Conn, now: Instant) {
        let Some(mut q) = self.blocked.remove(&conn) else { return };
        while let Some(r) = q.pop_front() {
            self.process(r, now);
            if let Some(nq) = self.blocked.get_mut(&conn) {
                nq.extend(q.drain(..));
                return;
            }
        }
    }
}

impl Handler for Cache {
    type Event = CacheEvent;

    fn handle(&mut self, ev: CacheEvent, cx: &mut Context<'_>) {
        let now = cx.now();
        self.now = now;
        // Once the server is shutting down, every response says `Connection: close` (as nginx
        // does): a keep-alive client stops sending instead of racing the close.
        let last = |mut req: Request| {
            req.keep_alive &= !cx.is_shutting_down();
            req
        };
        match ev {
            CacheEvent::Req(req) => match self.blocked.get_mut(&req.conn) {
                Some(q) => q.push_back(last(req)),
                None => self.process(last(req), now),
            },
            CacheEvent::Loaded { key, result } => self.loaded(key, result, now),
            CacheEvent::Rendered { req, body } => {
                let req = last(req);
                self.respond_body(&req, "text/html; charset=utf-8", body);
                // The dynamic stage's admission control holds this end-to-end time to its target.
                self.dynamic.observe_response(now.saturating_duration_since(req.received));
                self.unblock(req.conn, now);
            }
        }
    }

    /// The network stage refused commands (see `net`): offer them again.
    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.net.flush();
    }

    /// Drops local index entries the shared cache evicted or that went stale.
    fn tick(&mut self, cx: &mut Context<'_>) {
        let (ttl, now) = (self.shared.ttl, cx.now());
        self.local.retain(|_, e| e.fresh(ttl, now));
    }
}

#[cfg(test)]
mod tests {
    use super::plain_target;

    #[test]
    fn events_move_with_inline_stores() {
        // Rust moves up to 128 bytes with inline stores and calls memcpy above that; a queued
        // event also carries a 4-byte stamp (docs/profiling.md, "Events moved through memcpy").
        assert!(std::mem::size_of::<crate::parse::Request>() <= 88, "{}", std::mem::size_of::<crate::parse::Request>());
        assert!(std::mem::size_of::<super::CacheEvent>() <= 120, "{}", std::mem::size_of::<super::CacheEvent>());
    }

    #[test]
    fn only_normalised_targets_skip_decoding() {
        for t in ["/", "/files/1k.txt", "/a.b/c..d", "/a/b./c"] {
            assert!(plain_target(t.as_bytes()), "{t}");
        }
        for t in ["", "files", "/a//b", "//", "/.", "/a/./b", "/a/../b", "/%2e", "/a?x", "/a#f", "/a\\b", "/a\0b"] {
            assert!(!plain_target(t.as_bytes()), "{t:?}");
        }
    }
}
