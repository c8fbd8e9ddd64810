//! Accepting: a listener's multishot (or, near its limit, single) accept into the ring's file
//! table, with a back-off when the kernel refuses (out of descriptors, memory or table slots).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, squeue, types};

use super::{more, Net};
use crate::net::{ConnAddrs, ListenConfig, ListenerId, NetEvent};
use crate::reactor::{on_target, OpKind, Reactor, Target, Token};
use crate::stage::Sink;

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The largest direct-descriptor table the kernel allows (`IORING_MAX_FIXED_FILES`).
const MAX_FIXED_FILES: u64 = 1 << 20;

pub(super) fn timespec(d: Duration) -> types::Timespec {
    types::Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos())
}

/// Where this worker's connections come from: a listener (its socket on this worker), or a
/// connector (outbound connections, [`NetCmd::Connect`](crate::net::NetCmd::Connect)). Holds
/// the stage their events go to, their options and how many are open.
pub(crate) struct Endpoint {
    /// The `ListenerId` or `ConnectorId`.
    pub(super) id: usize,
    /// The listening socket (`None` for a connector, or a listener that stopped).
    pub(super) fd: Option<OwnedFd>,
    pub(super) cfg: Arc<ListenConfig>,
    pub(super) sink: Sink<NetEvent>,
    /// A connector's time limit for a connect, linked to it on the ring.
    pub(super) connect_timeout: Option<Duration>,
    armed: bool,
    /// The armed accept is multishot (see [`Net::arm_accept`]).
    multishot: bool,
    backing_off: bool,
    backoff: Duration,
    pub(super) open: usize,
    /// The address accepted connections have as theirs: the listener's, when it is bound to
    /// one address (`None` for a wildcard one, a Unix one, a connector).
    pub(super) local: Option<std::net::SocketAddr>,
    /// Stable home for the back-off timespec the kernel reads at submission.
    backoff_ts: Box<types::Timespec>,
    /// The TLS handshake budget ([`ListenConfig::tls_handshakes_per_sec`]): tokens, and when
    /// they were last refilled.
    tls_tokens: f64,
    tls_refilled: std::time::Instant,
}

impl Endpoint {
    /// A listener (`fd` is its socket) or, with `connect_timeout`, a connector.
    pub(crate) fn new(
        id: usize,
        fd: Option<OwnedFd>,
        cfg: Arc<ListenConfig>,
        sink: Sink<NetEvent>,
        connect_timeout: Option<Duration>,
    ) -> Endpoint {
        let local = match &fd {
            Some(fd) if !cfg.unix => {
                ringstage_sys::socket::local_addr(fd.as_raw_fd()).ok().filter(|a| !a.ip().is_unspecified())
            }
            _ => None,
        };
        let tls_tokens = f64::from(cfg.tls_handshakes_per_sec.unwrap_or(0));
        Endpoint {
            id,
            local,
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
            tls_tokens,
            tls_refilled: std::time::Instant::now(),
        }
    }

    pub(super) fn is_connector(&self) -> bool {
        self.connect_timeout.is_some()
    }

    /// Whether a multishot accept, which takes every connection waiting in the backlog at
    /// once, stays under the connection limit even if the backlog is full twice over.
    fn multishot_fits(&self) -> bool {
        self.cfg.max_connections.saturating_sub(self.open) > 2 * self.cfg.backlog.max(1) as usize
    }
}

impl Net {
    /// Arms the accepts of every listener of this worker, after registering the sparse file
    /// table connections are accepted into (when wanted and the kernel grants it).
    pub(crate) fn start(&mut self, r: &mut Reactor) -> std::io::Result<()> {
        if self.fixed_wanted && self.endpoints.iter().any(|e| e.fd.is_some()) {
            self.fixed = self.register_file_table(r);
        }
        for li in 0..self.endpoints.len() {
            self.arm_accept(r, li)?;
        }
        self.start_udp(r)
    }

    /// Registers a sparse file table sized for this worker's listeners: their connection limits
    /// plus room for closes in flight, within `RLIMIT_NOFILE` (the kernel's bound for a table,
    /// and the bound plain descriptors would have had). Returns whether it was granted.
    fn register_file_table(&mut self, r: &mut Reactor) -> bool {
        let listeners = self.endpoints.iter().filter(|e| e.fd.is_some());
        let wanted: u64 = listeners.map(|l| l.cfg.max_connections as u64).sum::<u64>() + 16;
        let nofile = ringstage_sys::fd::nofile_limit().unwrap_or(1024);
        let n = wanted.min(nofile).min(MAX_FIXED_FILES) as u32;
        n > 0 && r.ring.submitter().register_files_sparse(n).is_ok()
    }

    pub(super) fn arm_accept(&mut self, r: &mut Reactor, li: usize) -> std::io::Result<()> {
        let l = &self.endpoints[li];
        let Some(fd) = l.fd.as_ref() else { return Ok(()) };
        // At its connection limit a listener stops accepting: further clients wait in the
        // kernel's backlog (not accepted and reset) until a connection closes.
        if l.armed || r.draining || l.open >= l.cfg.max_connections {
            return Ok(());
        }
        // A multishot accept takes every connection waiting in the backlog at once, so it is
        // armed only while that cannot pass the limit; nearer to it, accepts go one at a time.
        let multishot = l.multishot_fits();
        let (fd, fixed) = (types::Fd(fd.as_raw_fd()), self.fixed);
        // A direct descriptor has no close-on-exec flag to set (the kernel refuses it).
        let flags = if fixed { 0 } else { libc::SOCK_CLOEXEC };
        let sqe = if multishot {
            opcode::AcceptMulti::new(fd).allocate_file_index(fixed).flags(flags).build()
        } else {
            let slot = fixed.then(types::DestinationSlot::auto_target);
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut()).file_index(slot).flags(flags).build()
        };
        r.push_plain(sqe.user_data(Token::new(OpKind::Accept, li, 0).encode()))?;
        self.endpoints[li].armed = true;
        self.endpoints[li].multishot = multishot;
        r.counters.io_started.add(1);
        Ok(())
    }

    /// Re-arms listeners whose re-arm failed (the 100 ms sweep).
    pub(super) fn rearm_listeners(&mut self, r: &mut Reactor) {
        for li in 0..self.endpoints.len() {
            let l = &self.endpoints[li];
            if !l.armed && !l.backing_off && l.fd.is_some() && self.arm_accept(r, li).is_err() {
                break;
            }
        }
    }

    /// A connection of endpoint `ei` closed: a listener that stopped at its limit takes the
    /// next client from its backlog.
    pub(super) fn endpoint_closed(&mut self, r: &mut Reactor, ei: usize) {
        let e = &mut self.endpoints[ei];
        e.open -= 1;
        if !e.armed && !e.backing_off && e.open < e.cfg.max_connections {
            let _ = self.arm_accept(r, ei);
        }
    }

    /// Shutdown: cancels the armed accepts; listeners not armed close now.
    pub(super) fn stop_listeners(&mut self, r: &mut Reactor) {
        for li in 0..self.endpoints.len() {
            if self.endpoints[li].armed {
                let _ = r.cancel(Token::new(OpKind::Accept, li, 0));
            } else {
                self.endpoints[li].fd = None;
            }
        }
    }

    pub(super) fn on_backoff(&mut self, r: &mut Reactor, li: usize) -> std::io::Result<()> {
        self.endpoints[li].backing_off = false;
        self.arm_accept(r, li)
    }

    pub(super) fn on_accept(&mut self, r: &mut Reactor, li: usize, res: i32, flags: u32) -> std::io::Result<()> {
        let more = more(flags);
        if !more {
            self.endpoints[li].armed = false;
            r.counters.io_finished.add(1);
        }
        if res >= 0 {
            self.endpoints[li].backoff = BACKOFF_MIN;
            self.accepted(r, li, res);
        } else {
            match -res {
                libc::ECANCELED if r.draining => {
                    self.endpoints[li].fd = None;
                    return Ok(());
                }
                // The connection failed, not the listener: take the next one. (ECANCELED: the
                // multishot a back-off below, or the limit, stopped.)
                libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR | libc::EAGAIN | libc::ECANCELED => {}
                // Out of descriptors, table slots or memory, or a listener the kernel refuses:
                // back off instead of re-arming in a loop.
                e => {
                    if !matches!(e, libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS) {
                        let err = std::io::Error::from_raw_os_error(e);
                        log::warn!("ringstage: worker {}: accept failed, backing off: {err}", r.worker);
                    }
                    r.counters.accept_backoffs.add(1);
                    self.endpoints[li].backing_off = true;
                    if more {
                        // Stop the multishot so the kernel does not retry it in a loop either.
                        r.cancel(Token::new(OpKind::Accept, li, 0))?;
                    }
                }
            }
        }
        if !more && !r.draining {
            let l = &mut self.endpoints[li];
            if l.backing_off {
                *l.backoff_ts = timespec(l.backoff);
                l.backoff = (l.backoff * 2).min(BACKOFF_MAX);
                let sqe = opcode::Timeout::new(&*l.backoff_ts as *const types::Timespec)
                    .build()
                    .user_data(Token::new(OpKind::Backoff, li, 0).encode());
                // SAFETY: the timespec is boxed in the listener, which lives as long as the ring.
                unsafe { r.push(&[sqe]) }?;
            } else {
                self.arm_accept(r, li)?;
            }
        }
        Ok(())
    }

    /// A connection was accepted: `fd` is a slot of the file table when `Net::fixed`. It
    /// inherited `TCP_NODELAY` from the listener.
    ///
    /// Near the listener's limit its multishot accept is cancelled, and single-shot accepts
    /// follow, one at a time, none at the limit (re-armed when a connection closes, see
    /// [`Net::endpoint_closed`]): clients past the limit wait in the backlog, never accepted
    /// and reset.
    fn accepted(&mut self, r: &mut Reactor, li: usize, fd: i32) {
        let target = if self.fixed { Target::Fixed(fd as u32) } else { Target::Fd(fd) };
        if r.draining {
            return self.refuse(r, target);
        }
        let l = &mut self.endpoints[li];
        if let Some(rate) = l.cfg.tls_handshakes_per_sec.filter(|_| l.cfg.tls.is_some()) {
            // A token bucket holding one second of handshakes.
            let rate = f64::from(rate);
            l.tls_tokens = (l.tls_tokens + r.now.duration_since(l.tls_refilled).as_secs_f64() * rate).min(rate);
            l.tls_refilled = r.now;
            if l.tls_tokens < 1.0 {
                r.counters.tls_handshakes_refused.add(1);
                return self.refuse(r, target);
            }
            l.tls_tokens -= 1.0;
        }
        let l = &mut self.endpoints[li];
        l.open += 1;
        if l.armed && l.multishot && !l.multishot_fits() {
            // Near the limit: a single-shot accept takes over when this multishot ends.
            let _ = r.cancel(Token::new(OpKind::Accept, li, 0));
        }
        r.counters.accepted.add(1);
        if l.cfg.unix {
            let addrs = ConnAddrs::default();
            return self.open_conn(r, li, target, |conn, id| NetEvent::Opened {
                conn,
                listener: ListenerId(id as u32),
                addrs,
            });
        }
        let v4 = l.cfg.addr.is_ipv4();
        let installed = l.cfg.local_addrs && l.local.is_none() && self.fixed;
        let Some(idx) = self.insert_conn_tls(r, li, target) else { return };
        let asked = if installed { self.ask_names_installed(r, idx) } else { self.ask_peer_name(r, idx, v4) };
        if asked.is_err() {
            self.announce_opened(r, idx, None);
            if self.arm_recv(r, idx).is_err() {
                self.begin_close(r, idx, false);
            }
        }
    }

    /// Closes an accepted socket nothing was started on: a table slot is emptied on the ring
    /// (the completion needs no action); a descriptor is closed at once.
    fn refuse(&mut self, r: &mut Reactor, target: Target) {
        if let Target::Fixed(slot) = target {
            let sqe = opcode::Close::new(types::Fixed(slot)).build();
            if r.push_plain(sqe.user_data(Token::IGNORE.encode())).is_ok() {
                return;
            }
        }
        r.close_now(target);
    }

    /// Reads the peer's address of accepted connection `idx` on the ring (`getsockopt
    /// SO_PEERNAME` as a socket command, which works on a direct descriptor), with its first
    /// receive linked behind it: the receive starts once the address is read, so `Opened`
    /// (sent when it is) comes before any `Data`. A failed read cancels the receive, which
    /// `on_recv` re-arms.
    fn ask_peer_name(&mut self, r: &mut Reactor, idx: usize, v4: bool) -> std::io::Result<()> {
        let mut name = self.names.pop().unwrap_or_default();
        let len = if v4 { std::mem::size_of::<libc::sockaddr_in>() } else { std::mem::size_of::<libc::sockaddr_in6>() };
        let ptr = name.as_mut_ptr();
        let c = &mut self.conns[idx];
        c.name = Some(name);
        let (level, opt) = (libc::SOL_SOCKET as u32, libc::SO_PEERNAME as u32);
        let ask = on_target!(c.target, |t| opcode::GetSockOpt::new(t, level, opt, ptr.cast(), len as u32).build())
            .user_data(Token::new(OpKind::PeerName, idx, c.gen).encode())
            .flags(squeue::Flags::IO_LINK);
        let recv = self.recv_sqe(r, idx);
        // SAFETY: the name buffer is boxed in the connection, which keeps it (and the socket)
        // until `on_peer_name` takes it back: nothing closes a connection its stage has not
        // heard of before that completion (it completes inline at submission; only the
        // worker's teardown, after the ring's last submission, drops connections unasked).
        // The receive refers to no user memory.
        match unsafe { r.push(&[ask, recv]) } {
            Ok(()) => {
                self.conns[idx].rx.armed = true;
                r.counters.io_started.add(2);
                Ok(())
            }
            Err(e) => {
                let name = self.conns[idx].name.take();
                self.names.extend(name);
                Err(e)
            }
        }
    }

    /// Reads both addresses of accepted connection `idx` (a direct descriptor of a wildcard
    /// listener with [`ListenConfig::local_addrs`]): the descriptor is installed in the
    /// process's table on the ring, its first receive linked behind, and `on_installed` asks
    /// the installed copy for both names and closes it.
    fn ask_names_installed(&mut self, r: &mut Reactor, idx: usize) -> std::io::Result<()> {
        let c = &self.conns[idx];
        let Target::Fixed(slot) = c.target else { return Err(std::io::ErrorKind::Unsupported.into()) };
        let install = opcode::FixedFdInstall::new(types::Fixed(slot), 0)
            .build()
            .user_data(Token::new(OpKind::FdInstall, idx, c.gen).encode())
            .flags(squeue::Flags::IO_LINK);
        let recv = self.recv_sqe(r, idx);
        // SAFETY: neither operation refers to user memory.
        unsafe { r.push(&[install, recv]) }?;
        self.conns[idx].rx.armed = true;
        r.counters.io_started.add(2);
        Ok(())
    }

    /// The installed copy of accepted connection `idx`'s descriptor (`res`), or why there is
    /// none: read both names from it, close it, and tell the stage `Opened`.
    pub(super) fn on_installed(&mut self, r: &mut Reactor, idx: usize, t: Token, res: i32) {
        r.counters.io_finished.add(1);
        if res >= 0 {
            let peer = ringstage_sys::socket::peer_addr(res).ok();
            let local = ringstage_sys::socket::local_addr(res).ok();
            // The copy is this function's: the connection keeps its direct descriptor.
            ringstage_sys::fd::close(res);
            if self.conn_for(idx, t).is_some() {
                self.announce_opened_with(r, idx, peer, local);
            }
        } else if self.conn_for(idx, t).is_some() {
            self.announce_opened(r, idx, None);
        }
    }

    /// The peer's address of accepted connection `idx` is read (or could not be): the stage
    /// hears `Opened`.
    pub(super) fn on_peer_name(&mut self, r: &mut Reactor, idx: usize, t: Token, res: i32) {
        r.counters.io_finished.add(1);
        let Some(c) = self.conn_for(idx, t) else { return };
        let name = c.name.take();
        let peer = match &name {
            Some(buf) if res > 0 => ringstage_sys::socket::from_bytes(&buf[..(res as usize).min(buf.len())]).ok(),
            _ => None,
        };
        self.names.extend(name);
        self.announce_opened(r, idx, peer);
    }

    fn announce_opened(&mut self, r: &mut Reactor, idx: usize, peer: Option<std::net::SocketAddr>) {
        let c = &self.conns[idx];
        let local = self.endpoints[c.endpoint].local.or_else(|| match c.target {
            // A plain descriptor can be asked (`RingConfig::fixed_files` off).
            Target::Fd(fd) => ringstage_sys::socket::local_addr(fd).ok(),
            Target::Fixed(_) => None,
        });
        self.announce_opened_with(r, idx, peer, local);
    }

    fn announce_opened_with(
        &mut self,
        r: &mut Reactor,
        idx: usize,
        peer: Option<std::net::SocketAddr>,
        local: Option<std::net::SocketAddr>,
    ) {
        let c = &self.conns[idx];
        let e = &self.endpoints[c.endpoint];
        let addrs = ConnAddrs::new(peer, local);
        let ev = NetEvent::Opened { conn: Self::conn_id(r, idx, c.gen), listener: ListenerId(e.id as u32), addrs };
        self.announce(r, idx, ev);
    }
}
