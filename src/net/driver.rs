//! The per-worker connection table and its completion handling.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types};
use slab::Slab;

use super::{Conn, ConnectorId, ListenConfig, ListenerId, NetCmd, NetEvent};
use crate::buf::IoBufChain;
use crate::runtime::io::{token, Io};
use crate::stage::Sink;

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Most iovecs per send; the rest goes in the next send.
const MAX_IOV: usize = 64;
/// The bytes of output limit a queued view uses up at least (see `ConnState::over_limit`).
const VIEW_CHARGE: u64 = 4096;

/// `SO_LINGER` on with a zero timeout: the socket's close sends a reset (RST), not a FIN.
/// Static, so the kernel may read it whenever the linked `setsockopt` runs.
static LINGER_RESET: libc::linger = libc::linger { l_onoff: 1, l_linger: 0 };

/// Builds an SQE on a connection's socket `fd`, a slot of the ring's file table when `fixed`
/// (`ConnState::fixed`), else a descriptor: `sock!(fixed, fd, |t| opcode::Send::new(t, ...).build())`.
macro_rules! sock {
    ($fixed:expr, $fd:expr, |$t:ident| $e:expr) => {
        if $fixed {
            let $t = types::Fixed($fd as u32);
            $e
        } else {
            let $t = types::Fd($fd);
            $e
        }
    };
}

/// The largest direct-descriptor table the kernel allows (`IORING_MAX_FIXED_FILES`).
const MAX_FIXED_FILES: u64 = 1 << 20;

fn timespec(d: Duration) -> types::Timespec {
    types::Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos())
}

/// Where this worker's connections come from: a listener (its socket on this worker), or a
/// connector (outbound connections, [`NetCmd::Connect`]). Holds the stage their events go to,
/// their options and how many are open.
pub(crate) struct Endpoint {
    /// The `ListenerId` or `ConnectorId`.
    id: usize,
    /// The listening socket (`None` for a connector, or a listener that stopped).
    fd: Option<OwnedFd>,
    cfg: Arc<ListenConfig>,
    sink: Sink<NetEvent>,
    /// A connector's time limit for a connect, linked to it on the ring.
    connect_timeout: Option<Duration>,
    armed: bool,
    /// The armed accept is multishot (see `Io::arm_accept`).
    multishot: bool,
    backing_off: bool,
    backoff: Duration,
    open: usize,
    /// Stable home for the back-off timespec the kernel reads at submission.
    backoff_ts: Box<types::Timespec>,
}

impl Endpoint {
    /// Whether a multishot accept, which takes every connection waiting in the backlog at
    /// once, stays under the connection limit even if the backlog is full twice over.
    fn multishot_fits(&self) -> bool {
        self.cfg.max_connections.saturating_sub(self.open) > 2 * self.cfg.backlog.max(1) as usize
    }

    /// A listener (`fd` is its socket) or, with `connect_timeout`, a connector.
    pub(crate) fn new(
        id: usize,
        fd: Option<OwnedFd>,
        cfg: Arc<ListenConfig>,
        sink: Sink<NetEvent>,
        connect_timeout: Option<Duration>,
    ) -> Endpoint {
        Endpoint {
            id,
            fd,
            cfg,
            sink,
            connect_timeout,
            armed: false,
            multishot: false,
            backing_off: false,
            backoff: BACKOFF_MIN,
            open: 0,
            backoff_ts: Box::new(timespec(BACKOFF_MIN)),
        }
    }
}

/// Gather-send state at a stable heap address: the kernel reads `msg` and `iov` until the
/// send completes, while the connection slab may move.
struct SendState {
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
}

/// A file transfer by splice: file → pipe → socket, a chunk at a time.
struct FileSend {
    file: Arc<OwnedFd>,
    offset: u64,
    /// Bytes not yet moved from the file into the pipe.
    remaining: u64,
    /// Bytes in the pipe, not yet in the socket.
    in_pipe: u64,
    pipe: super::SplicePipe,
}

/// Output queued behind a file transfer.
enum Queued {
    Bufs(IoBufChain),
    File(FileSend),
    /// `shutdown(SHUT_WR)` once everything before it is sent.
    Shutdown,
}

struct ConnState {
    /// The socket: a slot of the ring's file table when `fixed`, else a descriptor.
    fd: RawFd,
    fixed: bool,
    gen: u32,
    /// Where it came from: an index into `Net::endpoints`.
    endpoint: usize,
    /// The replica of the endpoint's stage that gets this connection's events, chosen when
    /// it opens: all of them reach one replica, in order, whatever the stage's active set.
    replica: u16,
    recv_armed: bool,
    sending: bool,
    /// The send in flight is a SEND_ZC.
    zc: bool,
    /// Views sent by SEND_ZC, oldest first, each held until the kernel's notification says it
    /// no longer reads them (one entry per notification due).
    zc_held: VecDeque<IoBufChain>,
    /// Waiting for buffers (recv ended with ENOBUFS).
    starved: bool,
    /// The peer's FIN arrived: nothing more to read.
    eof: bool,
    /// The handler paused reading ([`NetCmd::PauseReads`]).
    paused: bool,
    /// Unsent output is over `limit` (until it is down to half).
    backlogged: bool,
    /// The endpoint's [`ListenConfig::backpressure`]: no reads while backlogged.
    backpressure: bool,
    /// Bytes queued or in flight, not yet taken by the kernel: buffers and file bytes.
    unsent: u64,
    /// Views queued or in flight: each may pin a whole pool buffer, however few bytes it has.
    views: u32,
    /// The endpoint's [`ListenConfig::output_limit`].
    limit: u64,
    /// Closing: no more reads; `graceful` flushes queued sends first.
    closing: bool,
    graceful: bool,
    /// Output was lost (an abort with sends queued or in flight, a file transfer that failed
    /// after its head went out): the close resets the connection, so the peer sees an error,
    /// not a stream that merely ends early.
    reset: bool,
    close_submitted: bool,
    out: IoBufChain,
    send: Option<Box<SendState>>,
    /// The file transfer in progress (after `out` drained).
    file: Option<Box<FileSend>>,
    /// Output waiting behind `file`, in order.
    queue: VecDeque<Queued>,
    /// Splice ops in flight.
    splicing: u8,
    /// A `Shutdown` was asked: later output is dropped.
    write_shut: bool,
    /// The `shutdown(SHUT_WR)` op is in flight.
    shutting: bool,
    /// Listed in `Net::dirty`: output arrived during the current net batch.
    dirty: bool,
    last_active: Instant,
    /// When the send or splice in flight was submitted (for the send timeout).
    out_since: Instant,
}

impl ConnState {
    /// Closing without flushing.
    fn aborting(&self) -> bool {
        self.closing && !self.graceful
    }

    /// A send, splice or shutdown is in flight.
    fn busy(&self) -> bool {
        self.sending || self.splicing > 0 || self.shutting
    }

    /// Output not yet handed to the kernel.
    fn has_output(&self) -> bool {
        !self.out.is_empty() || self.file.is_some() || !self.queue.is_empty()
    }

    /// Drops all queued output (abort; nothing may be in flight).
    fn drop_output(&mut self) {
        self.out.clear();
        self.file = None;
        self.queue.clear();
        self.unsent = 0;
        self.views = 0;
    }

    /// Over the output limit: more unsent bytes than it, or more views than one per 4 KiB of it.
    fn over_limit(&self) -> bool {
        self.unsent > self.limit || u64::from(self.views) > self.limit / VIEW_CHARGE
    }

    /// Down to half the output limit, in bytes and in views.
    fn under_half(&self) -> bool {
        self.unsent <= self.limit / 2 && u64::from(self.views) <= self.limit / VIEW_CHARGE / 2
    }

    /// Whether the connection should have a recv armed: open for reading, not paused by the
    /// handler, not held back by its own backlog.
    fn wants_reads(&self) -> bool {
        !(self.closing || self.eof || self.paused || self.backlogged && self.backpressure)
    }
}

/// This worker's listeners, connectors and connections.
pub(crate) struct Net {
    pub(crate) endpoints: Vec<Endpoint>,
    /// Per `ConnectorId`: its index in `endpoints`.
    connectors: Vec<usize>,
    /// Sockets with a connect in flight (cancelled when the runtime drains).
    connecting: Slab<RawFd>,
    conns: Slab<ConnState>,
    next_gen: u32,
    /// Events the target stage refused; retried in order each loop iteration. Bounded by the
    /// pool size (data) plus open connections (open/close).
    stalled: VecDeque<(usize, u16, NetEvent)>,
    /// Connections whose receive ran out of buffers, in the order they did: re-armed as
    /// buffers come back, no more at once than there are buffers to take.
    starved: VecDeque<usize>,
    /// Connections given output during the current net batch, sent at its end.
    dirty: Vec<(usize, u32)>,
    last_sweep: Instant,
    /// Accepted connections live in the ring's file table (registered at start when wanted
    /// and granted; fixed from then on). Outbound ones are plain descriptors.
    fixed: bool,
    fixed_wanted: bool,
    /// Views of closed connections that SEND_ZC notifications are still due for, by the
    /// send's token. A closed socket frees its queued data, so they come soon.
    zc_orphans: HashMap<u64, VecDeque<IoBufChain>>,
}

impl Net {
    pub(crate) fn new(endpoints: Vec<Endpoint>, fixed_files: bool) -> Net {
        let connectors = (0..endpoints.len()).filter(|&i| endpoints[i].connect_timeout.is_some()).collect();
        Net {
            fixed: false,
            fixed_wanted: fixed_files,
            endpoints,
            connectors,
            connecting: Slab::new(),
            conns: Slab::new(),
            next_gen: 0,
            stalled: VecDeque::new(),
            starved: VecDeque::new(),
            dirty: Vec::new(),
            last_sweep: Instant::now(),
            zc_orphans: HashMap::new(),
        }
    }

    /// Events waiting for their stage to accept them.
    pub(crate) fn has_stalled(&self) -> bool {
        !self.stalled.is_empty()
    }

    /// Connections waiting for buffers.
    pub(crate) fn has_starved(&self) -> bool {
        !self.starved.is_empty()
    }
}

impl Io {
    fn conn_id(&self, idx: usize, gen: u32) -> Conn {
        Conn { worker: self.worker as u16, idx: idx as u32, gen }
    }

    /// Arms multishot accept on every listener of this worker, after registering the sparse
    /// file table connections are accepted into (when wanted and the kernel grants it).
    pub(crate) fn net_start(&mut self) -> std::io::Result<()> {
        if self.net.fixed_wanted && self.net.endpoints.iter().any(|e| e.fd.is_some()) {
            self.net.fixed = self.register_file_table();
        }
        for li in 0..self.net.endpoints.len() {
            self.arm_accept(li)?;
        }
        Ok(())
    }

    /// Registers a sparse file table sized for this worker's listeners: their connection limits
    /// plus room for closes in flight, within `RLIMIT_NOFILE` (the kernel's bound for a table,
    /// and the bound plain descriptors would have had). Returns whether it was granted.
    fn register_file_table(&mut self) -> bool {
        let listeners = self.net.endpoints.iter().filter(|e| e.fd.is_some());
        let wanted: u64 = listeners.map(|l| l.cfg.max_connections as u64).sum::<u64>() + 16;
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into a live struct.
        let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 1024 };
        let n = wanted.min(nofile).min(MAX_FIXED_FILES) as u32;
        n > 0 && self.ring.submitter().register_files_sparse(n).is_ok()
    }

    /// Releases a connection's socket now, outside the ring (no SQ space, or teardown).
    fn close_now(&self, fd: RawFd, fixed: bool) {
        if fixed {
            // Emptying the slot drops the table's reference to the socket.
            let _ = self.ring.submitter().register_files_update(fd as u32, &[-1]);
        } else {
            // SAFETY: the caller owns `fd` and no op is in flight on it.
            unsafe { libc::close(fd) };
        }
    }

    fn arm_accept(&mut self, li: usize) -> std::io::Result<()> {
        let l = &self.net.endpoints[li];
        let Some(fd) = l.fd.as_ref() else { return Ok(()) };
        // At its connection limit a listener stops accepting: further clients wait in the
        // kernel's backlog (not accepted and reset) until a connection closes.
        if l.armed || self.draining || l.open >= l.cfg.max_connections {
            return Ok(());
        }
        // A multishot accept takes every connection waiting in the backlog at once, so it is
        // armed only while that cannot pass the limit; nearer to it, accepts go one at a time.
        let multishot = l.multishot_fits();
        let (fd, fixed) = (types::Fd(fd.as_raw_fd()), self.net.fixed);
        // A direct descriptor has no close-on-exec flag to set (the kernel refuses it).
        let flags = if fixed { 0 } else { libc::SOCK_CLOEXEC };
        let sqe = if multishot {
            opcode::AcceptMulti::new(fd).allocate_file_index(fixed).flags(flags).build()
        } else {
            let slot = fixed.then(types::DestinationSlot::auto_target);
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut()).file_index(slot).flags(flags).build()
        };
        self.push_plain(sqe.user_data(token::make(token::ACCEPT, li as u32, 0)))?;
        self.net.endpoints[li].armed = true;
        self.net.endpoints[li].multishot = multishot;
        self.counters.io_started.add(1);
        Ok(())
    }

    /// Routes a network completion.
    pub(crate) fn net_complete(&mut self, kind: u8, idx: u32, gen: u32, res: i32, flags: u32) {
        let idx = idx as usize;
        let r = match kind {
            token::ACCEPT => self.on_accept(idx, res, flags),
            token::BACKOFF => {
                self.net.endpoints[idx].backing_off = false;
                self.arm_accept(idx)
            }
            token::RECV => self.on_recv(idx, gen, res, flags),
            token::SEND => self.on_send(idx, gen, res, flags),
            token::SPLICE_IN | token::SPLICE_OUT => {
                self.on_splice(idx, gen, kind == token::SPLICE_IN, res);
                Ok(())
            }
            token::CLOSE => {
                self.on_closed(idx, gen);
                Ok(())
            }
            token::SHUTDOWN => {
                self.on_shutdown(idx, gen, res);
                Ok(())
            }
            // Cancel results need no action: the operation they target reports its own
            // outcome. Closes of refused connections carry the same token.
            _ => Ok(()),
        };
        if let Err(e) = r {
            // Only a persistently full SQ lands here; the op stays un-armed and the tick retries
            // the listener, while the connection is closed.
            eprintln!("ringstage: worker {}: {e}", self.worker);
        }
    }

    fn on_accept(&mut self, li: usize, res: i32, flags: u32) -> std::io::Result<()> {
        let more = cqueue::more(flags);
        if !more {
            self.net.endpoints[li].armed = false;
            self.counters.io_finished.add(1);
        }
        if res >= 0 {
            self.net.endpoints[li].backoff = BACKOFF_MIN;
            self.accepted(li, res);
        } else {
            match -res {
                libc::ECANCELED if self.draining => {
                    self.net.endpoints[li].fd = None;
                    return Ok(());
                }
                // The connection failed, not the listener: take the next one. (ECANCELED: the
                // multishot a back-off below stopped; the back-off is already under way.)
                libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR | libc::EAGAIN | libc::ECANCELED => {}
                // Out of descriptors, table slots or memory, or a listener the kernel refuses:
                // back off instead of re-arming in a loop.
                e => {
                    if !matches!(e, libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS) {
                        let err = std::io::Error::from_raw_os_error(e);
                        eprintln!("ringstage: worker {}: accept failed, backing off: {err}", self.worker);
                    }
                    self.counters.accept_backoffs.add(1);
                    let l = &mut self.net.endpoints[li];
                    l.backing_off = true;
                    if more {
                        // Stop the multishot so the kernel does not retry it in a loop either.
                        self.cancel(token::make(token::ACCEPT, li as u32, 0))?;
                    }
                }
            }
        }
        if !more && !self.draining {
            let l = &mut self.net.endpoints[li];
            if l.backing_off {
                *l.backoff_ts = timespec(l.backoff);
                l.backoff = (l.backoff * 2).min(BACKOFF_MAX);
                let sqe = opcode::Timeout::new(&*l.backoff_ts as *const types::Timespec)
                    .build()
                    .user_data(token::make(token::BACKOFF, li as u32, 0));
                // SAFETY: the timespec is boxed in the listener, which lives as long as the ring.
                unsafe { self.push(&[sqe]) }?;
            } else {
                self.arm_accept(li)?;
            }
        }
        Ok(())
    }

    /// A connection was accepted: `fd` is a slot of the file table when `Net::fixed`. It
    /// inherited `TCP_NODELAY` from the listener.
    ///
    /// Near the listener's limit its multishot accept is cancelled, and single-shot accepts
    /// follow, one at a time, none at the limit (re-armed when a connection closes, see
    /// `on_closed`): clients past the limit wait in the backlog, never accepted and reset.
    fn accepted(&mut self, li: usize, fd: RawFd) {
        let l = &mut self.net.endpoints[li];
        if self.draining {
            // Refused: nothing was started on it. A table slot is emptied on the ring (the
            // completion needs no action); a descriptor is closed at once.
            if self.net.fixed {
                let sqe = opcode::Close::new(types::Fixed(fd as u32)).build();
                if self.push_plain(sqe.user_data(token::make(token::CANCEL, 0, 0))).is_ok() {
                    return;
                }
            }
            self.close_now(fd, self.net.fixed);
            return;
        }
        l.open += 1;
        if l.armed && l.multishot && !l.multishot_fits() {
            // Near the limit: a single-shot accept takes over when this multishot ends.
            let _ = self.cancel(token::make(token::ACCEPT, li as u32, 0));
        }
        self.counters.accepted.add(1);
        let fixed = self.net.fixed;
        self.open_conn(li, fd, fixed, |conn, id| NetEvent::Opened { conn, listener: ListenerId(id) });
    }

    /// Takes a new connection of endpoint `ei` (already counted in its `open`) into the table,
    /// gives the endpoint's stage its first event (`first` makes it from the connection's id and
    /// the endpoint's), choosing the replica all its events will go to, and starts receiving.
    fn open_conn(&mut self, ei: usize, fd: RawFd, fixed: bool, first: impl FnOnce(Conn, usize) -> NetEvent) {
        self.net.next_gen = self.net.next_gen.wrapping_add(1);
        let gen = self.net.next_gen;
        let cfg = &self.net.endpoints[ei].cfg;
        let (limit, backpressure) = (cfg.output_limit as u64, cfg.backpressure);
        let idx = self.net.conns.insert(ConnState {
            fd,
            fixed,
            gen,
            endpoint: ei,
            replica: 0,
            recv_armed: false,
            sending: false,
            zc: false,
            zc_held: VecDeque::new(),
            starved: false,
            eof: false,
            paused: false,
            backlogged: false,
            backpressure,
            unsent: 0,
            views: 0,
            limit,
            closing: false,
            graceful: false,
            reset: false,
            close_submitted: false,
            out: IoBufChain::new(),
            send: None,
            file: None,
            queue: VecDeque::new(),
            splicing: 0,
            write_shut: false,
            shutting: false,
            dirty: false,
            last_active: self.now,
            out_since: self.now,
        });
        let e = &self.net.endpoints[ei];
        let first = first(self.conn_id(idx, gen), e.id);
        let replica = e.sink.pick(&first) as u16;
        self.net.conns[idx].replica = replica;
        self.emit(ei, replica, first);
        if self.arm_recv(idx).is_err() {
            self.begin_close(idx, false);
        }
    }

    /// Starts an outbound connection of connector `id` (see [`NetCmd::Connect`]): a plain
    /// socket, connected on the ring with the connector's time limit linked to the connect.
    fn connect(&mut self, id: ConnectorId, addr: SocketAddr, tag: u64) {
        // Ids come from the builder; one from another runtime names nothing here.
        let Some(&ei) = self.net.connectors.get(id.0) else { return };
        let e = &self.net.endpoints[ei];
        let (limit, timeout) = (e.cfg.max_connections, e.connect_timeout.unwrap_or_default());
        let socket = if self.draining {
            Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "the runtime is shutting down"))
        } else if e.open >= limit {
            Err(std::io::Error::other(format!("the connector has its limit of {limit} connections open")))
        } else {
            ringstage_sys::socket::stream(&addr, e.cfg.nodelay)
        };
        let fd = match socket {
            Ok(fd) => fd,
            Err(error) => return self.connect_failed(ei, tag, error),
        };
        self.net.endpoints[ei].open += 1;
        let key = self.net.connecting.insert(fd.as_raw_fd());
        let (sa, len) = ringstage_sys::socket::to_raw(&addr);
        let sa = Box::new(sa);
        let ts = Box::new(timespec(timeout));
        let sqe = opcode::Connect::new(types::Fd(fd.as_raw_fd()), (&*sa as *const libc::sockaddr_storage).cast(), len)
            .build();
        let limit: *const types::Timespec = &*ts;
        let done: crate::fs::OpDone = Box::new(move |res, io| {
            drop((sa, ts)); // the kernel is done with both
            io.connect_done(ei, key, fd, tag, res);
        });
        // SAFETY: the address and the timespec are boxed in `done`, which lives until the
        // connect completes, after its submission; the socket too, and it stays open.
        unsafe { self.submit_op_within(sqe, done, Some(limit)) };
    }

    /// A connect completed (`res` 0) or failed: the connection joins the table like an
    /// accepted one, or the connector's stage hears why not.
    fn connect_done(&mut self, ei: usize, key: usize, fd: OwnedFd, tag: u64, res: i32) {
        self.net.connecting.remove(key);
        // While draining, a connect ends cancelled or, if it won the race, unused.
        let failed = if self.draining {
            Some(std::io::Error::new(std::io::ErrorKind::Interrupted, "the runtime is shutting down"))
        } else if res < 0 {
            Some(std::io::Error::from_raw_os_error(-res))
        } else {
            None
        };
        if let Some(error) = failed {
            self.net.endpoints[ei].open -= 1;
            return self.connect_failed(ei, tag, error); // drops (closes) the socket
        }
        self.counters.connected.add(1);
        self.open_conn(ei, fd.into_raw_fd(), false, |conn, id| NetEvent::Connected {
            conn,
            connector: ConnectorId(id),
            tag,
        });
    }

    fn connect_failed(&mut self, ei: usize, tag: u64, error: std::io::Error) {
        self.counters.connect_failed.add(1);
        let e = &self.net.endpoints[ei];
        let ev = NetEvent::ConnectFailed { connector: ConnectorId(e.id), tag, error };
        let replica = e.sink.pick(&ev) as u16;
        self.emit(ei, replica, ev);
    }

    fn arm_recv(&mut self, idx: usize) -> std::io::Result<()> {
        let c = &self.net.conns[idx];
        let sqe = sock!(c.fixed, c.fd, |t| opcode::RecvMulti::new(t, self.pool.bgid()).build()).user_data(token::make(
            token::RECV,
            idx as u32,
            c.gen,
        ));
        self.push_plain(sqe)?;
        self.net.conns[idx].recv_armed = true;
        self.counters.io_started.add(1);
        Ok(())
    }

    fn on_recv(&mut self, idx: usize, gen: u32, res: i32, flags: u32) -> std::io::Result<()> {
        // A buffer the kernel picked is ours whatever happens next: wrap it so it goes home.
        let data = cqueue::buffer_select(flags).map(|bid| self.pool.take(bid, res.max(0) as usize));
        let Some(c) = self.net.conns.get_mut(idx).filter(|c| token::same_gen(c.gen, gen)) else {
            return Ok(());
        };
        let more = cqueue::more(flags);
        if !more {
            c.recv_armed = false;
            self.counters.io_finished.add(1);
        }
        c.last_active = self.now;
        // A multishot that ended (on its own, or cancelled by a pause since lifted) restarts
        // if the connection still wants reads.
        let rearm = !more && c.wants_reads() && !self.draining;
        let (closing, li, replica, cgen) = (c.closing, c.endpoint, c.replica, c.gen);
        match res {
            n if n > 0 => {
                if !closing {
                    let data = data.expect("recv with data carries a buffer");
                    self.emit(li, replica, NetEvent::Data { conn: self.conn_id(idx, cgen), data });
                }
                if rearm {
                    self.arm_recv(idx)?;
                }
            }
            // Peer finished sending (the multishot recv ended; none is re-armed): tell the
            // stage after its data; the handler closes.
            0 if !closing => {
                self.net.conns[idx].eof = true;
                self.emit(li, replica, NetEvent::Eof { conn: self.conn_id(idx, cgen) });
            }
            0 => self.begin_close(idx, true),
            e if -e == libc::ENOBUFS => {
                self.counters.enobufs.add(1);
                if !closing && !self.draining {
                    self.net.conns[idx].starved = true;
                    self.net.starved.push_back(idx);
                    self.pool.set_starved(true);
                }
            }
            // Cancelled by a close, the drain, or a pause (re-armed if lifted meanwhile).
            e if -e == libc::ECANCELED => {
                if rearm {
                    self.arm_recv(idx)?;
                }
            }
            _ => self.begin_close(idx, false), // reset or other error: abort
        }
        if !more {
            self.maybe_finish_close(idx);
        }
        Ok(())
    }

    /// Re-arms receives that stopped for lack of buffers, oldest first, one per free buffer:
    /// each had bytes waiting when it stopped, so it takes a buffer at once, and re-arming
    /// more than there are buffers would only have the rest fail again (with 4 buffers and
    /// many connections, re-arming them all made ENOBUFS completions by the million).
    pub(crate) fn net_rearm_starved(&mut self) {
        let mut free = self.pool.available();
        while free > 0 {
            let Some(idx) = self.net.starved.pop_front() else { break };
            let Some(c) = self.net.conns.get_mut(idx).filter(|c| c.starved) else { continue };
            c.starved = false;
            // A paused or backlogged connection is re-armed when that ends.
            if c.wants_reads() && !self.draining {
                if self.arm_recv(idx).is_err() {
                    self.begin_close(idx, false);
                }
                free -= 1;
            }
        }
        if self.net.starved.is_empty() {
            self.pool.set_starved(false);
        }
    }

    /// Executes a command from a handler stage.
    pub(crate) fn net_command(&mut self, cmd: NetCmd) {
        if let NetCmd::Connect { connector, addr, tag, .. } = cmd {
            return self.connect(connector, addr, tag);
        }
        let Some(conn) = cmd.conn() else { return }; // every other command names a connection
        let idx = conn.idx as usize;
        let live = self.net.conns.get(idx).is_some_and(|c| c.gen == conn.gen && !c.close_submitted && !c.aborting());
        if !live || conn.worker() != self.worker {
            return; // stale id or already aborted: the bytes are dropped with the command
        }
        let c = &mut self.net.conns[idx];
        match cmd {
            NetCmd::Close { .. } => return self.begin_close(idx, true),
            NetCmd::PauseReads { .. } => {
                c.paused = true;
                return self.hold_reads(idx);
            }
            NetCmd::ResumeReads { .. } => {
                c.paused = false;
                return self.release_reads(idx);
            }
            _ if c.write_shut => return, // after a Shutdown nothing more can be sent
            _ => {}
        }
        // Behind a file transfer, output waits its turn in `queue`.
        let behind = c.file.is_some() || !c.queue.is_empty();
        let queue_bufs = |q: &mut VecDeque<Queued>, mut chain: IoBufChain| match q.back_mut() {
            Some(Queued::Bufs(b)) => b.append(&mut chain),
            _ => q.push_back(Queued::Bufs(chain)),
        };
        match cmd {
            NetCmd::Send { data, .. } => {
                c.unsent += data.len() as u64;
                c.views += u32::from(!data.is_empty());
                if behind {
                    queue_bufs(&mut c.queue, IoBufChain::from(data));
                } else {
                    c.out.push(data);
                }
            }
            NetCmd::SendChain { mut data, .. } => {
                c.unsent += data.len() as u64;
                c.views += data.segments() as u32;
                if behind {
                    queue_bufs(&mut c.queue, data);
                } else {
                    c.out.append(&mut data);
                }
            }
            NetCmd::SendFile { file, offset, len, pipe, .. } => {
                c.unsent += len;
                let f = FileSend { file, offset, remaining: len, in_pipe: 0, pipe };
                if behind || !c.out.is_empty() {
                    c.queue.push_back(Queued::File(f));
                } else {
                    c.file = Some(Box::new(f));
                }
            }
            NetCmd::Shutdown { .. } => {
                c.write_shut = true;
                c.queue.push_back(Queued::Shutdown);
            }
            // Handled above.
            NetCmd::Connect { .. } | NetCmd::Close { .. } | NetCmd::PauseReads { .. } | NetCmd::ResumeReads { .. } => {
                return
            }
        }
        if !c.backlogged && !c.closing && c.over_limit() {
            self.set_backlogged(idx, true);
        }
        let c = &mut self.net.conns[idx];
        // Sent when the batch ends: every response a batch produced for this connection
        // (pipelined requests) leaves in one gathered send.
        if !c.dirty {
            c.dirty = true;
            self.net.dirty.push((idx, conn.gen));
        }
    }

    /// The connection's unsent output went over its limit (`full`) or back down to half of it:
    /// tell its stage, and hold or release its reads if it has backpressure.
    fn set_backlogged(&mut self, idx: usize, full: bool) {
        let c = &mut self.net.conns[idx];
        c.backlogged = full;
        let (ei, replica, gen, backpressure) = (c.endpoint, c.replica, c.gen, c.backpressure);
        let conn = self.conn_id(idx, gen);
        if full {
            self.counters.backlogged.add(1);
            self.emit(ei, replica, NetEvent::Backlogged { conn });
        } else {
            self.emit(ei, replica, NetEvent::Drained { conn });
        }
        match (backpressure, full) {
            (false, _) => {}
            (true, true) => self.hold_reads(idx),
            (true, false) => self.release_reads(idx),
        }
    }

    /// `n` bytes in `views` whole views of the connection's output were taken by the kernel; a
    /// backlogged connection down to half its limit is drained.
    fn output_sent(&mut self, idx: usize, n: u64, views: usize) {
        let c = &mut self.net.conns[idx];
        c.unsent = c.unsent.saturating_sub(n);
        c.views = c.views.saturating_sub(views as u32);
        if c.backlogged && !c.closing && c.under_half() {
            self.set_backlogged(idx, false);
        }
    }

    /// Stops reading (paused, or backlogged with backpressure): cancels the multishot recv. Its
    /// last completion (ECANCELED) re-arms it if reading was wanted again meanwhile.
    fn hold_reads(&mut self, idx: usize) {
        let c = &self.net.conns[idx];
        if c.recv_armed && !c.wants_reads() {
            // A cancel that cannot be queued leaves the recv armed: the connection is read on,
            // bounded by the pool, as before flow control; the next hold retries.
            let _ = self.cancel(token::make(token::RECV, idx as u32, c.gen));
        }
    }

    /// Restarts reading if the connection wants it and nothing else (a recv still armed, one
    /// waiting for buffers, the drain) stands in the way.
    fn release_reads(&mut self, idx: usize) {
        let c = &self.net.conns[idx];
        if c.wants_reads() && !c.recv_armed && !c.starved && !self.draining && self.arm_recv(idx).is_err() {
            self.begin_close(idx, false);
        }
    }

    /// Starts the sends that commands of the batch just handled asked for: one gathered send
    /// per connection, however many commands it got. Hot path: no allocation (the list keeps
    /// its capacity).
    pub(crate) fn net_flush_sends(&mut self) {
        let mut dirty = std::mem::take(&mut self.net.dirty);
        for &(idx, gen) in &dirty {
            let Some(c) = self.net.conns.get_mut(idx).filter(|c| c.gen == gen) else { continue };
            c.dirty = false;
            self.pump(idx);
        }
        dirty.clear();
        if self.net.dirty.is_empty() {
            self.net.dirty = dirty; // keep the allocation
        }
    }

    /// Starts the next transfer when nothing is in flight: queued buffers, then the file
    /// transfer, then whatever waited behind it.
    fn pump(&mut self, idx: usize) {
        loop {
            let Some(c) = self.net.conns.get_mut(idx) else { return };
            if c.busy() || c.aborting() || c.close_submitted {
                return;
            }
            if !c.out.is_empty() {
                return self.submit_send(idx);
            }
            if c.file.is_some() {
                if self.submit_splice(idx) {
                    return;
                }
                continue; // the transfer was complete: move on
            }
            match c.queue.pop_front() {
                Some(Queued::Bufs(b)) => c.out = b,
                Some(Queued::File(f)) => c.file = Some(Box::new(f)),
                Some(Queued::Shutdown) => return self.submit_shutdown(idx),
                None => return,
            }
        }
    }

    /// Sends the FIN a `Shutdown` asked for, now that everything before it is sent.
    fn submit_shutdown(&mut self, idx: usize) {
        let c = &mut self.net.conns[idx];
        let sqe = sock!(c.fixed, c.fd, |t| opcode::Shutdown::new(t, libc::SHUT_WR).build()).user_data(token::make(
            token::SHUTDOWN,
            idx as u32,
            c.gen,
        ));
        c.shutting = true;
        if self.push_plain(sqe).is_err() {
            self.net.conns[idx].shutting = false;
            return self.begin_close(idx, false);
        }
        self.counters.io_started.add(1);
    }

    fn on_shutdown(&mut self, idx: usize, gen: u32, res: i32) {
        self.counters.io_finished.add(1);
        let Some(c) = self.net.conns.get_mut(idx).filter(|c| token::same_gen(c.gen, gen)) else { return };
        c.shutting = false;
        if res < 0 && !c.closing {
            return self.begin_close(idx, false); // the peer is gone
        }
        self.maybe_finish_close(idx);
    }

    /// Submits the next splice step of the connection's file transfer. Returns false (and
    /// clears the transfer) when it is complete.
    fn submit_splice(&mut self, idx: usize) -> bool {
        let c = &mut self.net.conns[idx];
        let (sock, gen, fixed) = (c.fd, c.gen, c.fixed);
        let f = c.file.as_mut().expect("a file transfer");
        if f.in_pipe == 0 && f.remaining == 0 {
            c.file = None;
            return false;
        }
        let (r, w) = f.pipe.fds();
        let chunk = u64::from(f.pipe.capacity);
        let out_tok = token::make(token::SPLICE_OUT, idx as u32, gen);
        let res = if f.in_pipe > 0 {
            // Finish what is in the pipe first (the socket took less last time).
            let n = f.in_pipe.min(chunk) as u32;
            c.splicing = 1;
            self.push_plain(
                sock!(fixed, sock, |t| opcode::Splice::new(types::Fd(r), -1, t, -1, n).build()).user_data(out_tok),
            )
        } else {
            let n = f.remaining.min(chunk) as u32;
            let file_in = opcode::Splice::new(types::Fd(f.file.as_raw_fd()), f.offset as i64, types::Fd(w), -1, n)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(token::make(token::SPLICE_IN, idx as u32, gen));
            let to_sock =
                sock!(fixed, sock, |t| opcode::Splice::new(types::Fd(r), -1, t, -1, n).build()).user_data(out_tok);
            c.splicing = 2;
            // SAFETY: splices refer to descriptors only; the file and the pipe are owned by the
            // transfer, which lives until both completions arrive.
            unsafe { self.push(&[file_in, to_sock]) }
        };
        let c = &mut self.net.conns[idx];
        c.out_since = self.now;
        match res {
            Ok(()) => self.counters.io_started.add(u64::from(c.splicing)),
            Err(_) => {
                c.splicing = 0;
                self.begin_close(idx, false);
            }
        }
        true
    }

    fn on_splice(&mut self, idx: usize, gen: u32, file_side: bool, res: i32) {
        self.counters.io_finished.add(1);
        let Some(c) = self.net.conns.get_mut(idx).filter(|c| token::same_gen(c.gen, gen)) else { return };
        c.splicing -= 1;
        c.last_active = self.now;
        let mut fail = false;
        if let Some(f) = c.file.as_mut() {
            match (file_side, res) {
                (true, n) if n > 0 => {
                    f.offset += n as u64;
                    f.remaining -= n as u64;
                    f.in_pipe += n as u64;
                }
                (true, _) => fail = true, // the file ended early (or failed): the length promised is wrong
                (false, n) if n > 0 => {
                    f.in_pipe -= n as u64;
                    c.unsent = c.unsent.saturating_sub(n as u64);
                    self.counters.spliced.add(n as u64);
                }
                // A short file-side splice breaks the link: resubmit from the pipe.
                (false, e) if -e == libc::ECANCELED && !c.closing => {}
                (false, _) => fail = true, // peer gone, or our cancel
            }
        }
        if c.splicing > 0 {
            return;
        }
        if fail || c.aborting() {
            // The head (and part of the body) went out: only a reset tells the peer.
            c.reset |= fail;
            c.drop_output();
            self.begin_close(idx, false); // ends with maybe_finish_close
            return;
        }
        self.output_sent(idx, 0, 0);
        self.pump(idx);
        self.maybe_finish_close(idx);
    }

    fn submit_send(&mut self, idx: usize) {
        let c = &mut self.net.conns[idx];
        if c.out.is_empty() {
            return;
        }
        let st = c.send.get_or_insert_with(|| {
            Box::new(SendState {
                iov: Vec::new(),
                // SAFETY: msghdr is plain data; all-zero is valid (no name, no control).
                msg: unsafe { std::mem::zeroed() },
            })
        });
        let bytes = c.out.fill_iovecs(&mut st.iov, MAX_IOV);
        let ud = token::make(token::SEND, idx as u32, c.gen);
        let zc_min = self.net.endpoints[c.endpoint].cfg.zc_min;
        c.zc = self.features.send_zc && zc_min.is_some_and(|m| bytes >= m);
        // Zero copy: the kernel reads the views' memory in place; they stay alive in `zc_held`
        // until its notification (see `on_send`).
        let send = if let [one] = st.iov[..] {
            // One segment: a plain send, without the msghdr and iovec import of sendmsg.
            let (buf, len) = (one.iov_base as *const u8, one.iov_len.min(u32::MAX as usize) as u32);
            if c.zc {
                sock!(c.fixed, c.fd, |t| opcode::SendZc::new(t, buf, len).flags(libc::MSG_NOSIGNAL).build())
            } else {
                sock!(c.fixed, c.fd, |t| opcode::Send::new(t, buf, len).flags(libc::MSG_NOSIGNAL).build())
            }
        } else {
            st.msg.msg_iov = st.iov.as_mut_ptr();
            st.msg.msg_iovlen = st.iov.len();
            let msg = &st.msg as *const libc::msghdr;
            let flags = libc::MSG_NOSIGNAL as u32;
            if c.zc {
                sock!(c.fixed, c.fd, |t| opcode::SendMsgZc::new(t, msg).flags(flags).build())
            } else {
                sock!(c.fixed, c.fd, |t| opcode::SendMsg::new(t, msg).flags(flags).build())
            }
        }
        .user_data(ud);
        if c.zc {
            self.counters.zc_sends.add(1);
        }
        c.sending = true;
        c.out_since = self.now;
        self.counters.sends.add(1);
        // No linked timeout: arming and cancelling one per send cost ~10% of the CPU per
        // request on /plaintext; the sweep in `net_tick` enforces the send timeout instead.
        // SAFETY: msghdr and iovecs live in the boxed SendState and the views in `out`, both
        // untouched until the send completes.
        match unsafe { self.push(&[send]) } {
            Ok(()) => self.counters.io_started.add(1),
            Err(_) => {
                self.net.conns[idx].sending = false;
                self.begin_close(idx, false);
            }
        }
    }

    fn on_send(&mut self, idx: usize, gen: u32, res: i32, flags: u32) -> std::io::Result<()> {
        self.counters.io_finished.add(1);
        if cqueue::notif(flags) {
            // A SEND_ZC's memory is no longer read by the kernel: release the oldest views,
            // held by the connection or, once it closed, by the orphans.
            if let Some(c) = self.net.conns.get_mut(idx).filter(|c| token::same_gen(c.gen, gen)) {
                c.zc_held.pop_front();
            } else {
                let key = token::make(token::SEND, idx as u32, gen);
                if let Some(q) = self.net.zc_orphans.get_mut(&key) {
                    q.pop_front();
                    if q.is_empty() {
                        self.net.zc_orphans.remove(&key);
                    }
                }
            }
            return Ok(());
        }
        let Some(c) = self.net.conns.get_mut(idx).filter(|c| token::same_gen(c.gen, gen)) else {
            return Ok(());
        };
        c.sending = false;
        c.last_active = self.now;
        let zc = std::mem::take(&mut c.zc);
        // A SEND_ZC's result with F_MORE promises a notification, until which whatever it may
        // have read (the sent bytes; after a failure, all of them) must stay alive.
        let hold = zc && cqueue::more(flags);
        if hold {
            self.counters.io_started.add(1); // the notification, finished above
        }
        if res < 0 {
            // EPIPE/ECONNRESET (peer gone) or ECANCELED (send timeout): abort.
            if hold {
                let all = std::mem::take(&mut c.out);
                c.zc_held.push_back(all);
            }
            c.drop_output();
            self.begin_close(idx, false);
        } else {
            let views = c.out.segments();
            if hold {
                let sent = c.out.split_to(res as usize);
                c.zc_held.push_back(sent);
            } else {
                c.out.advance(res as usize);
            }
            if c.aborting() {
                c.drop_output();
            } else {
                let views = views - c.out.segments();
                self.output_sent(idx, res as u64, views);
                self.pump(idx);
            }
        }
        self.maybe_finish_close(idx);
        Ok(())
    }

    /// Starts closing: no more reads. `graceful` lets queued sends finish first; otherwise
    /// queued bytes are dropped and an in-flight send is cancelled.
    fn begin_close(&mut self, idx: usize, graceful: bool) {
        let Some(c) = self.net.conns.get_mut(idx) else { return };
        if c.closing && (graceful || !c.graceful) {
            self.maybe_finish_close(idx);
            return;
        }
        c.closing = true;
        c.graceful = graceful;
        // An abort that loses output resets (see `ConnState::reset`).
        c.reset |= !graceful && (c.has_output() || c.sending || c.splicing > 0);
        // The ops to cancel: the recv, and on abort whatever sends or splices are in flight.
        let mut ops = [None; 4];
        if c.recv_armed {
            ops[0] = Some(token::RECV);
        }
        if !graceful {
            if c.sending {
                ops[1] = Some(token::SEND);
            }
            if c.splicing > 0 {
                ops[2] = Some(token::SPLICE_IN);
                ops[3] = Some(token::SPLICE_OUT);
            }
            if !c.busy() {
                c.drop_output();
            }
        }
        let gen = c.gen;
        for kind in ops.into_iter().flatten() {
            // A cancel that cannot be queued only means the op completes on its own (the recv
            // at EOF, a send or splice when the close below resets the socket).
            let _ = self.cancel(token::make(kind, idx as u32, gen));
        }
        self.maybe_finish_close(idx);
    }

    /// Asks the kernel to cancel the op whose `user_data` is `target`; that op's own completion
    /// reports the outcome.
    fn cancel(&mut self, target: u64) -> std::io::Result<()> {
        self.push_plain(opcode::AsyncCancel::new(target).build().user_data(token::make(token::CANCEL, 0, 0)))
    }

    /// Submits the close once nothing is in flight. A multishot recv ends only after the
    /// cancel took effect, so the fd stays open until then.
    fn maybe_finish_close(&mut self, idx: usize) {
        let Some(c) = self.net.conns.get_mut(idx) else { return };
        // Pending SEND_ZC notifications do not hold the close back: a peer that reads nothing
        // would never let them come while the socket is open (its views move to the orphans).
        if !c.closing || c.close_submitted || c.busy() {
            return;
        }
        if c.graceful && c.has_output() {
            self.pump(idx);
            return;
        }
        if c.recv_armed {
            // Graceful close of a reading connection: cancel the recv first.
            return;
        }
        c.close_submitted = true;
        let close = sock!(c.fixed, c.fd, |t| opcode::Close::new(t).build()).user_data(token::make(
            token::CLOSE,
            idx as u32,
            c.gen,
        ));
        let pushed = if c.reset {
            // SO_LINGER {on, 0}, then the close: a hard link, so the close runs even where the
            // kernel cannot set socket options on the ring (before 6.7; then a FIN it is).
            let linger = (&LINGER_RESET as *const libc::linger).cast();
            let len = std::mem::size_of::<libc::linger>() as u32;
            let set = sock!(c.fixed, c.fd, |t| opcode::SetSockOpt::new(
                t,
                libc::SOL_SOCKET as u32,
                libc::SO_LINGER as u32,
                linger,
                len
            )
            .build())
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(token::make(token::CANCEL, 0, 0));
            // SAFETY: the option value is a static; the close refers to no user memory.
            unsafe { self.push(&[set, close]) }
        } else {
            self.push_plain(close)
        };
        if pushed.is_err() {
            // The socket is owned by this connection and no op is in flight on it.
            let c = &self.net.conns[idx];
            self.close_now(c.fd, c.fixed);
            let gen = self.net.conns[idx].gen & 0xff_ffff;
            self.counters.io_started.add(1);
            self.on_closed(idx, gen);
            return;
        }
        self.counters.io_started.add(1);
    }

    fn on_closed(&mut self, idx: usize, gen: u32) {
        self.counters.io_finished.add(1);
        if !self.net.conns.get(idx).is_some_and(|c| token::same_gen(c.gen, gen) && c.close_submitted) {
            return;
        }
        let mut c = self.net.conns.remove(idx);
        if !c.zc_held.is_empty() {
            let key = token::make(token::SEND, idx as u32, c.gen);
            self.net.zc_orphans.insert(key, std::mem::take(&mut c.zc_held));
        }
        let e = &mut self.net.endpoints[c.endpoint];
        e.open -= 1;
        if !e.armed && !e.backing_off && e.open < e.cfg.max_connections {
            // A listener that stopped at its limit takes the next client from its backlog.
            let _ = self.arm_accept(c.endpoint);
        }
        self.counters.closed.add(1);
        let conn = self.conn_id(idx, c.gen);
        self.emit(c.endpoint, c.replica, NetEvent::Closed { conn });
    }

    /// Delivers an event to the connection's replica of the listener's stage, or parks it (in
    /// order) if refused.
    fn emit(&mut self, li: usize, replica: u16, ev: NetEvent) {
        // Behind parked events, a new one parks too, so the stage sees them in order.
        let ev = if self.net.stalled.is_empty() {
            match self.net.endpoints[li].sink.try_enqueue_to(replica.into(), ev) {
                Ok(()) => return,
                Err(ev) => ev,
            }
        } else {
            ev
        };
        self.net.stalled.push_back((li, replica, ev));
        self.counters.io_started.add(1);
        self.counters.parked.add(1);
    }

    /// Retries parked events in order; stops at the first refusal. Returns how many went in.
    pub(crate) fn net_flush_stalled(&mut self) -> usize {
        let mut n = 0;
        while let Some((li, replica, ev)) = self.net.stalled.pop_front() {
            if let Err(ev) = self.net.endpoints[li].sink.try_enqueue_to(replica.into(), ev) {
                self.net.stalled.push_front((li, replica, ev));
                break;
            }
            self.counters.io_finished.add(1);
            n += 1;
        }
        n
    }

    /// Every 100 ms: idle and send timeouts, and listeners whose re-arm failed. A connection is
    /// idle when nothing completed on it for the idle timeout; its output is stuck when one
    /// send or splice has been in flight (no progress: each completes on partial progress) for
    /// the send timeout. Either way it is aborted, which cancels what is in flight.
    pub(crate) fn net_tick(&mut self) {
        let now = self.now;
        let since = now.duration_since(self.net.last_sweep);
        if since < Duration::from_millis(100) {
            return;
        }
        self.net.last_sweep = now;
        for li in 0..self.net.endpoints.len() {
            let l = &self.net.endpoints[li];
            if !l.armed && !l.backing_off && l.fd.is_some() && self.arm_accept(li).is_err() {
                break;
            }
        }
        if self.net.endpoints.iter().all(|l| l.cfg.idle_timeout.is_none() && l.cfg.send_timeout.is_none()) {
            return;
        }
        let expired: Vec<usize> = self
            .net
            .conns
            .iter()
            .filter(|(_, c)| {
                let cfg = &self.net.endpoints[c.endpoint].cfg;
                let idle = !c.closing && cfg.idle_timeout.is_some_and(|d| now.duration_since(c.last_active) >= d);
                let stuck =
                    c.busy() && !c.aborting() && cfg.send_timeout.is_some_and(|d| now.duration_since(c.out_since) >= d);
                idle || stuck
            })
            .map(|(i, _)| i)
            .collect();
        for idx in expired {
            self.begin_close(idx, false);
        }
    }

    /// Shutdown, phase one: stop accepting, connecting and reading; queued sends still finish.
    pub(crate) fn net_begin_drain(&mut self) {
        for li in 0..self.net.endpoints.len() {
            if self.net.endpoints[li].armed {
                let _ = self.cancel(token::make(token::ACCEPT, li as u32, 0));
            } else {
                self.net.endpoints[li].fd = None;
            }
        }
        let sockets: Vec<RawFd> = self.net.connecting.iter().map(|(_, &fd)| fd).collect();
        for fd in sockets {
            let any_op_on = types::CancelBuilder::fd(types::Fd(fd)).all();
            let sqe = opcode::AsyncCancel2::new(any_op_on).build().user_data(token::make(token::CANCEL, 0, 0));
            if self.push_plain(sqe).is_err() {
                break; // the SQ stays full: the connects' own time limits end them
            }
        }
        let recvs: Vec<(usize, u32)> =
            self.net.conns.iter().filter(|(_, c)| c.recv_armed).map(|(i, c)| (i, c.gen)).collect();
        for (idx, gen) in recvs {
            let _ = self.cancel(token::make(token::RECV, idx as u32, gen));
        }
        self.net.starved.clear();
    }

    /// Shutdown, last phase: close every remaining socket synchronously.
    pub(crate) fn net_teardown(&mut self) {
        for (_, c) in self.net.conns.iter() {
            if !c.close_submitted {
                // The connection owns its socket; the ring is about to be torn down.
                self.close_now(c.fd, c.fixed);
            }
        }
        for (_, c) in self.net.conns.iter_mut() {
            // Views a SEND_ZC may still be reading (no notification yet): leaked, not freed,
            // so their memory cannot be reused under the kernel.
            std::mem::forget(std::mem::take(&mut c.zc_held));
        }
        std::mem::forget(std::mem::take(&mut self.net.zc_orphans));
        self.net.conns.clear();
        self.net.stalled.clear();
        for l in &mut self.net.endpoints {
            l.fd = None;
        }
    }
}
