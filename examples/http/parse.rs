//! The parse stage: HTTP/1.1 request framing, limits and validation (httparse), per
//! connection. Complete requests go to the cache stage, which answers them in order.
//!
//! When the cache stage's queue refuses a request, the request becomes a 503 that still goes
//! through the cache stage, behind the connection's earlier requests: a direct answer from here
//! would overtake their responses, and a pipelining client would take the 503 for an earlier
//! request. Until the refused request and those after it are in, the connection is held: its
//! requests wait here in order and its reads are paused (TCP holds the rest). The stage's
//! `Waker` retries the held connections the next loop iteration, oldest hold first, up to the
//! first refusal.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ringstage::prelude::*;

use crate::cache::CacheEvent;
use crate::chunked::{Chunked, Feed};
use crate::proto;

/// The largest request head the parse stage takes (`Span`s address a head with 16 bits).
pub const MAX_HEAD: u64 = u16::MAX as u64;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request line (414 beyond).
    pub max_line: usize,
    /// Largest request head (431 beyond); at most [`MAX_HEAD`].
    pub max_head: usize,
    /// Largest request body (413 beyond).
    pub max_body: u64,
    /// Whole request head must arrive within this (408 after).
    pub header_timeout: Duration,
    /// Requests served on one connection; the last one's response closes it (nginx's
    /// `keepalive_requests`).
    pub max_requests: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line: 8 * 1024,
            max_head: 16 * 1024,
            max_body: 1 << 20,
            header_timeout: Duration::from_secs(10),
            max_requests: 1000,
        }
    }
}

/// What a request asks for.
#[derive(Debug)]
pub enum Kind {
    Plaintext,
    /// Prometheus text exposition of the runtime's metrics.
    Stats,
    /// A page rendered with a configurable amount of CPU work (the overload demo).
    Dynamic,
    /// The raw request target (where it lies in the request's head; decoded by the cache
    /// stage).
    File(Span),
    /// Answer with this status and close.
    Error(u16),
    /// Refused by the cache stage's queue (overload): answer 503 with `Retry-After`, in order,
    /// keeping the connection.
    Busy,
    /// Not a request: the client finished sending, so close the connection once the requests
    /// before this one are answered (it travels behind them, in order).
    Eof,
}

/// Where a part of a request head (the target, a field value) lies in it: heads are at most
/// [`MAX_HEAD`] bytes. An empty span stands for a field not given (four bytes, where an
/// `Option` would take six): an empty value of the fields kept means nothing either.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    at: u16,
    len: u16,
}

/// A parsed request. Its target and the header values the cache stage needs are spans of one
/// view of the received head (`src`), not copies, and not a view each: a `Request` crosses two
/// stage queues by value, and at 88 bytes (over 180 with a view per part) each move is a few
/// vector stores rather than a `memcpy` call (a test in `cache.rs` keeps it there).
#[derive(Debug)]
pub struct Request {
    pub conn: Conn,
    /// When the request's last byte was taken in (the worker's loop clock).
    pub received: std::time::Instant,
    pub head: bool,
    pub keep_alive: bool,
    /// An HTTP/1.0 request: a connection kept open must say so (`Connection: keep-alive`).
    pub http10: bool,
    pub kind: Kind,
    /// The request head as received (empty for a request made up here, e.g. an error).
    src: IoBuf,
    range: Span,
    if_none_match: Span,
    if_modified_since: Span,
    if_unmodified_since: Span,
    if_range: Span,
}

impl Request {
    fn part(&self, s: Span) -> Option<&[u8]> {
        (s.len > 0).then(|| &self.src[s.at as usize..][..s.len as usize])
    }

    /// The raw request target of a file request.
    pub fn target(&self) -> Option<&[u8]> {
        match self.kind {
            Kind::File(t) => self.part(t),
            _ => None,
        }
    }

    /// The `Range` field's value, if given.
    pub fn range(&self) -> Option<&[u8]> {
        self.part(self.range)
    }

    /// The `If-None-Match` field's value, if given.
    pub fn if_none_match(&self) -> Option<&[u8]> {
        self.part(self.if_none_match)
    }

    /// The `If-Modified-Since` field's value, if given.
    pub fn if_modified_since(&self) -> Option<&[u8]> {
        self.part(self.if_modified_since)
    }

    /// The `If-Unmodified-Since` field's value, if given.
    pub fn if_unmodified_since(&self) -> Option<&[u8]> {
        self.part(self.if_unmodified_since)
    }

    /// The `If-Range` field's value, if given.
    pub fn if_range(&self) -> Option<&[u8]> {
        self.part(self.if_range)
    }

    /// Its response ends the connection: the client asked for that, or the request failed.
    pub fn closes(&self) -> bool {
        !self.keep_alive || matches!(self.kind, Kind::Error(_))
    }

    /// The end of its response's head: `Connection: close` if the response ends the
    /// connection, `Connection: keep-alive` if it keeps an HTTP/1.0 one, then the blank line.
    pub fn tail(&self) -> &'static [u8] {
        match (self.keep_alive, self.http10) {
            (false, _) => TAIL_CLOSE,
            (true, true) => TAIL_KEEP_ALIVE,
            (true, false) => TAIL_KEEP,
        }
    }

    pub fn error(conn: Conn, status: u16) -> Request {
        Request::headless(conn, Instant::now(), false, false, Kind::Error(status))
    }

    /// A request that keeps no view of its head, so no span either: every kind but a file
    /// request, which alone reads its target and fields later.
    fn headless(conn: Conn, received: Instant, head: bool, keep_alive: bool, kind: Kind) -> Request {
        let src = IoBuf::from_static(b"");
        Request {
            conn,
            received,
            head,
            keep_alive,
            http10: false,
            kind,
            src,
            range: Span::default(),
            if_none_match: Span::default(),
            if_modified_since: Span::default(),
            if_unmodified_since: Span::default(),
            if_range: Span::default(),
        }
    }
}

/// The connection tails of a response head (see [`Request::tail`]).
pub static TAIL_KEEP: &[u8] = b"\r\n";
pub static TAIL_KEEP_ALIVE: &[u8] = b"Connection: keep-alive\r\n\r\n";
pub static TAIL_CLOSE: &[u8] = b"Connection: close\r\n\r\n";

struct HttpConn {
    /// Bytes of an incomplete request head (rare: a head split across receives).
    stash: Vec<u8>,
    /// When the current incomplete head started (for the 408 deadline).
    started: Option<Instant>,
    /// Body bytes still to discard.
    skip: u64,
    /// A chunked body being read, and the request it belongs to (answered once it ended).
    chunked: Option<(Chunked, Request)>,
    /// A final response was queued: ignore further input.
    done: bool,
    /// Requests waiting for room in the cache stage's queue, in order (the first one refused is
    /// a `Busy`); non-empty only while the connection's reads are paused.
    held: VecDeque<Request>,
    /// The `ResumeReads` after a hold is still to be sent (the network stage refused it).
    resume: bool,
    /// Its answers are backlogged: the network stage is not reading it.
    backlogged: bool,
    /// Requests taken from it so far (see [`Limits::max_requests`]).
    requests: u64,
}

impl HttpConn {
    /// Whether this server, not the client, is holding up its input: a hold (until its
    /// `ResumeReads` is sent), or a backlog.
    fn paused(&self) -> bool {
        self.backlogged || !self.held.is_empty() || self.resume
    }

    /// Reads resume after a pause: the rest of a head cut by it could not arrive meanwhile, so
    /// its deadline counts from now.
    fn restart_deadline(&mut self, now: Instant) {
        if self.started.is_some() {
            self.started = Some(now);
        }
    }

    fn new() -> HttpConn {
        HttpConn {
            stash: Vec::new(),
            started: None,
            skip: 0,
            chunked: None,
            done: false,
            held: VecDeque::new(),
            resume: false,
            backlogged: false,
            requests: 0,
        }
    }

    /// Whether the next request is the last this connection may make (its response closes it).
    fn at_limit(&self, limits: &Limits) -> bool {
        self.requests + 1 >= limits.max_requests
    }
}

pub struct Parse {
    to: Handoff,
    pub limits: Limits,
    conns: ConnMap<HttpConn>,
    /// The loop clock of the event being handled (header deadlines, request receive times).
    now: Instant,
}

/// Where complete requests go. Kept apart from the connection table so that a request is
/// handed over as soon as it is parsed, while its connection's state is borrowed (a list of
/// the requests one receive completed, submitted after, cost a copy of each in and out).
struct Handoff {
    net: Sink<NetCmd>,
    cache: Sink<CacheEvent>,
    /// This replica's own waker: retries of the held connections (`Handler::woken`).
    waker: Waker,
    /// Connections with requests held, or a `ResumeReads` still to send, oldest first (see the
    /// module docs).
    holding: VecDeque<Conn>,
}

impl Handoff {
    /// Hands a request of the connection whose state is `st` to the cache stage, in order
    /// behind any the connection has held. One the stage's queue refuses becomes a 503 (`Busy`)
    /// and is held, with the connection's later ones, until there is room (see the module
    /// docs).
    fn submit(&mut self, st: &mut HttpConn, req: Request) {
        if !st.held.is_empty() {
            return st.held.push_back(req);
        }
        let Err(CacheEvent::Req(mut req)) = self.cache.try_enqueue(CacheEvent::Req(req)) else { return };
        let conn = req.conn;
        shed(&mut req);
        st.held.push_back(req);
        if !st.resume {
            self.holding.push_back(conn); // (with `resume` it is listed already)
        }
        // Refused, the pause stays unsent: this connection is read on, its requests joining the
        // hold, until the next one.
        let _ = self.net.try_enqueue(NetCmd::PauseReads { conn });
        self.waker.wake();
    }
}

/// How a request's body is framed.
enum Body {
    /// This many bytes (Content-Length, or none).
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
}

enum Parsed {
    Partial,
    Complete(Request, usize, Body),
    Error(u16),
    /// A later HTTP/1.x version: parse this copy of the input instead, which says 1.1.
    AsHttp11(IoBuf),
}

impl Parse {
    pub fn new(net: Sink<NetCmd>, cache: Sink<CacheEvent>, waker: Waker, limits: Limits) -> Parse {
        let to = Handoff { net, cache, waker, holding: VecDeque::new() };
        Parse { to, limits, conns: ConnMap::new(), now: Instant::now() }
    }

    /// The client finished sending (it may half-close after its last request and wait for the
    /// answers): the connection closes after the answers to what it sent. A request cut short
    /// by the FIN can never complete and gets none.
    fn on_eof(&mut self, conn: Conn) {
        let Some(st) = self.conns.get_mut(conn) else { return };
        if st.done {
            return; // a final response already closes it
        }
        st.done = true;
        let mut last = Request::error(conn, 0);
        last.kind = Kind::Eof;
        self.to.submit(st, last);
    }

    /// Offers a held connection's requests to the cache stage again, in order; once all are
    /// in, resumes its reads. Returns whether it is still held (or its resume still unsent).
    fn retry(&mut self, conn: Conn) -> bool {
        let Some(st) = self.conns.get_mut(conn) else { return false };
        while let Some(req) = st.held.pop_front() {
            if let Err(CacheEvent::Req(mut req)) = self.to.cache.try_enqueue(CacheEvent::Req(req)) {
                shed(&mut req);
                st.held.push_front(req);
                return true;
            }
            st.resume = true;
        }
        if st.resume {
            st.resume = self.to.net.try_enqueue(NetCmd::ResumeReads { conn }).is_err();
            if !st.resume {
                st.restart_deadline(self.now);
            }
        }
        st.resume
    }

    fn on_data(&mut self, conn: Conn, mut data: IoBuf, now: Instant) {
        let (limits, to) = (&self.limits, &mut self.to);
        let Some(st) = self.conns.get_mut(conn) else { return };
        if st.done {
            return;
        }
        if st.skip > 0 {
            let k = (st.skip as usize).min(data.len());
            data.advance(k);
            st.skip -= k as u64;
        }
        if !st.stash.is_empty() {
            st.stash.extend_from_slice(&data);
            data = IoBuf::from(std::mem::take(&mut st.stash));
        }
        loop {
            if let Some((body, _)) = st.chunked.as_mut() {
                match body.feed(&data) {
                    Feed::More => break, // all consumed; `started` keeps the deadline running
                    Feed::Done(n) => {
                        data.advance(n);
                        let (_, req) = st.chunked.take().expect("a chunked body");
                        st.started = None;
                        let last = req.closes();
                        to.submit(st, req);
                        if last {
                            st.done = true;
                            break;
                        }
                    }
                    Feed::Error(status) => {
                        st.chunked = None;
                        st.done = true;
                        to.submit(st, Request::error(conn, status));
                        break;
                    }
                }
            }
            if data.is_empty() {
                st.started = None;
                break;
            }
            match parse_one(conn, &data, limits, now, st.at_limit(limits)) {
                Parsed::Partial => {
                    st.stash.extend_from_slice(&data);
                    st.started.get_or_insert(now);
                    break;
                }
                Parsed::Error(status) => {
                    st.done = true;
                    to.submit(st, Request::error(conn, status));
                    break;
                }
                Parsed::AsHttp11(copy) => data = copy,
                Parsed::Complete(req, consumed, Body::Chunked) => {
                    st.requests += 1;
                    // Answered once the body has been read: framing errors in it still get
                    // their 400 or 413 instead of the response. The header deadline covers
                    // the body too.
                    data.advance(consumed);
                    st.started.get_or_insert(now);
                    st.chunked = Some((Chunked::new(limits.max_body), req));
                }
                Parsed::Complete(req, consumed, Body::Length(body)) => {
                    st.requests += 1;
                    st.started = None;
                    data.advance(consumed);
                    let k = (body.min(data.len() as u64)) as usize;
                    data.advance(k);
                    st.skip = body - k as u64;
                    let last = req.closes();
                    to.submit(st, req);
                    if last {
                        st.done = true;
                        break;
                    }
                }
            }
        }
    }
}

/// Makes a refused request a 503 (the end-of-input marker stays itself: it answers nothing).
fn shed(req: &mut Request) {
    if !matches!(req.kind, Kind::Eof) {
        req.kind = Kind::Busy;
    }
}

/// Whether the request line at the start of `data` is longer than `max` bytes, or will be (more
/// than `max` bytes and no line end yet). The line ends at its CR, or at a bare LF (which
/// httparse also takes as the end).
fn line_too_long(data: &[u8], max: usize) -> bool {
    let scan = &data[..data.len().min(max + 2)];
    match scan.iter().position(|&b| b == b'\n') {
        Some(i) => (if i > 0 && scan[i - 1] == b'\r' { i - 1 } else { i }) > max,
        None => data.len() > max,
    }
}

/// A request line whose version httparse refused (it knows HTTP/1.0 and 1.1 only): a later
/// 1.x is to be parsed again from a copy of the input that says 1.1 (the request then views
/// the copy); anything else is answered here. The rare path, kept out of [`parse_one`].
#[cold]
#[inline(never)]
fn other_version(data: &IoBuf) -> Parsed {
    let line = &data[..data.iter().position(|&b| b == b'\n').unwrap_or(data.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let at = line.iter().rposition(|&b| b == b' ').map_or(0, |i| i + 1);
    match &line[at..] {
        // RFC 9110 §2.5: a recipient treats a higher minor version as the highest it supports.
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() && *minor > b'1' => {
            let mut copy = data.to_vec();
            copy[at + 7] = b'1';
            Parsed::AsHttp11(IoBuf::from(copy))
        }
        // Another major version (`HTTP/2.0` on an HTTP/1 connection, say).
        [b'H', b'T', b'T', b'P', b'/', major, ..] if (b'2'..=b'9').contains(major) => Parsed::Error(505),
        _ => Parsed::Error(400),
    }
}

/// Parses one request head at the start of `data`; `last` says it is the last request its
/// connection may make (its response will close it).
fn parse_one(conn: Conn, data: &IoBuf, limits: &Limits, now: Instant, last: bool) -> Parsed {
    // Uninitialised header slots: initialising 64 of them (2 KiB) per request cost more than
    // parsing a small request.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(data, &mut headers) {
        Ok(httparse::Status::Complete(n)) => {
            // httparse's default (strict) request line: method, one space, target, one space,
            // `HTTP/1.x`: its length follows from the parts, without a second scan of it.
            let line = req.method.map_or(0, str::len) + req.path.map_or(0, str::len) + 10;
            if line > limits.max_line {
                return Parsed::Error(414);
            }
            n
        }
        // An incomplete or malformed head: a request line past the limit is answered 414
        // before anything else is judged (431, 400), or waited for.
        res => {
            if line_too_long(data, limits.max_line) {
                return Parsed::Error(414);
            }
            return match res {
                Ok(_) if data.len() > limits.max_head => Parsed::Error(431),
                Ok(_) => Parsed::Partial,
                Err(httparse::Error::TooManyHeaders) => Parsed::Error(431),
                Err(httparse::Error::Version) => other_version(data),
                Err(_) => Parsed::Error(400),
            };
        }
    };
    if n > limits.max_head.min(MAX_HEAD as usize) {
        return Parsed::Error(431);
    }
    // Every part of the head lies in its first `n` (<= u16::MAX) bytes.
    let sub = |s: &[u8]| Span { at: (s.as_ptr() as usize - data.as_ptr() as usize) as u16, len: s.len() as u16 };
    let http11 = req.version == Some(1);
    let mut keep_alive = http11;
    // Transfer-Encoding: whether any was given, whether chunked is the final coding, and how
    // often chunked appears (more than once is malformed).
    let (mut cl, mut te, mut chunked, mut chunked_n, mut hosts) = (None::<u64>, false, false, 0, 0);
    let [mut range, mut inm, mut ims, mut ius, mut ir] = [Span::default(); 5];
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            for tok in h.value.split(|&b| b == b',') {
                let tok = tok.trim_ascii();
                if tok.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 18 {
                return Parsed::Error(400);
            }
            let v: u64 = std::str::from_utf8(v).unwrap_or("x").parse().unwrap_or(u64::MAX);
            if cl.is_some_and(|c| c != v) {
                return Parsed::Error(400); // conflicting lengths: request smuggling attempt
            }
            cl = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = true;
            // Codings accumulate over repeated fields; the last one seen must be chunked.
            for coding in h.value.split(|&b| b == b',') {
                chunked = coding.trim_ascii().eq_ignore_ascii_case(b"chunked");
                chunked_n += usize::from(chunked);
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            // One Host, and a valid one (RFC 9112 §3.2: a server MUST answer 400 otherwise).
            hosts += 1;
            if hosts > 1 || !proto::valid_host(h.value.trim_ascii()) {
                return Parsed::Error(400);
            }
        } else if name.eq_ignore_ascii_case(b"range") {
            range = sub(h.value);
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            inm = sub(h.value);
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            ims = sub(h.value);
        } else if name.eq_ignore_ascii_case(b"if-unmodified-since") {
            ius = sub(h.value);
        } else if name.eq_ignore_ascii_case(b"if-range") {
            ir = sub(h.value);
        }
    }
    if te && (cl.is_some() || !chunked || chunked_n > 1 || !http11) {
        // Both framings (a smuggling attempt), a final coding other than chunked (the length
        // is unknowable), chunked twice, or Transfer-Encoding in HTTP/1.0: 400 (RFC 9112 §6.1).
        return Parsed::Error(400);
    }
    if http11 && hosts == 0 {
        return Parsed::Error(400);
    }
    keep_alive &= !last;
    let body = if chunked { Body::Chunked } else { Body::Length(cl.unwrap_or(0)) };
    if matches!(body, Body::Length(n) if n > limits.max_body) {
        return Parsed::Error(413);
    }
    let method = req.method.unwrap_or("");
    let head = method == "HEAD";
    let path = req.path.unwrap_or("");
    // An absolute-form target (`http://host/path`) is routed by its path (ASCII boundaries).
    let path = &path[proto::origin_form(path.as_bytes())];
    let kind = if method != "GET" && !head {
        Kind::Error(405)
    } else if path == "/plaintext" {
        Kind::Plaintext
    } else if path == "/stats" {
        Kind::Stats
    } else if path == "/dynamic" || path.starts_with("/dynamic?") {
        Kind::Dynamic
    } else {
        Kind::File(sub(path.as_bytes()))
    };
    // Only a file request reads its target and fields later: the others keep no view (no
    // reference count taken, no pool buffer held while they wait) and no span.
    let mut req = if matches!(kind, Kind::File(_)) {
        Request {
            conn,
            received: now,
            head,
            keep_alive,
            http10: false,
            kind,
            src: data.slice(0..n),
            range,
            if_none_match: inm,
            if_modified_since: ims,
            if_unmodified_since: ius,
            if_range: ir,
        }
    } else {
        Request::headless(conn, now, head, keep_alive, kind)
    };
    req.http10 = !http11;
    Parsed::Complete(req, n, body)
}

impl Handler for Parse {
    type Event = NetEvent;

    fn handle(&mut self, ev: NetEvent, cx: &mut Context<'_>) {
        self.now = cx.now();
        match ev {
            NetEvent::Opened { conn, .. } => {
                self.conns.insert(conn, HttpConn::new());
            }
            NetEvent::Data { conn, data } => self.on_data(conn, data, self.now),
            NetEvent::Eof { conn } => self.on_eof(conn),
            NetEvent::Closed { conn } => {
                let waiting = self.conns.remove(conn).is_some_and(|st| !st.held.is_empty() || st.resume);
                if waiting {
                    self.to.holding.retain(|&c| c != conn);
                }
            }
            // Its answers drained: the network stage reads it again.
            NetEvent::Drained { conn } => {
                if let Some(st) = self.conns.get_mut(conn) {
                    st.backlogged = false;
                    if st.held.is_empty() {
                        st.restart_deadline(self.now);
                    }
                }
            }
            // A client that does not read its answers is not read either (the listener's
            // backpressure) until they drain; its header deadline waits meanwhile.
            NetEvent::Backlogged { conn } => {
                if let Some(st) = self.conns.get_mut(conn) {
                    st.backlogged = true;
                }
            }
            _ => {} // no connector, no UDP
        }
    }

    /// Enforces the header deadline: a head that started arriving too long ago gets 408.
    fn tick(&mut self, cx: &mut Context<'_>) {
        let now = cx.now();
        self.now = now;
        let limit = self.limits.header_timeout;
        for (conn, c) in self.conns.iter_mut() {
            if !c.done && !c.paused() && c.started.is_some_and(|t| now.duration_since(t) >= limit) {
                c.done = true;
                c.chunked = None; // a body trickling in too slowly: its request gets the 408
                self.to.submit(c, Request::error(conn, 408));
            }
        }
    }

    /// Retries the held connections, oldest hold first, until the cache stage refuses one
    /// (the rest would be refused too); wakes again while any is still held.
    fn woken(&mut self, cx: &mut Context<'_>) {
        self.now = cx.now();
        while let Some(&conn) = self.to.holding.front() {
            if self.retry(conn) {
                break;
            }
            self.to.holding.pop_front();
        }
        if !self.to.holding.is_empty() {
            self.to.waker.wake();
        }
    }
}
