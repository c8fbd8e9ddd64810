//! The network driver: one worker's listeners, connectors and connections, and the ring
//! operations on them. One file per operation, as monoio's `driver/op`: [`accept`],
//! [`connect`], [`recv`], [`send`] (gather, coalescing, zero copy), [`splice`] (files), and
//! [`close`] (close, shutdown, abort).
//!
//! The network stage's handler runs commands against it ([`Net::command`]); the worker hands
//! it the completions whose [`Token`] names one of its operations ([`Net::complete`]).

mod accept;
mod close;
mod connect;
mod recv;
mod send;
mod splice;
#[cfg(feature = "tls")]
mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
mod tls;
mod udp;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use io_uring::cqueue;
use slab::Slab;

pub(crate) use accept::Endpoint;
use connect::{Connecting, Dest};
pub(crate) use tls::TlsConn;
pub(crate) use udp::UdpSocket;

use super::conn::{ConnState, Life, RecvSide, SendSide};
use super::{Conn, NetCmd, NetEvent};
use crate::buf::{BufWriter, IoBufChain};
use crate::reactor::{OpKind, Reactor, Target, Token};

/// This worker's listeners, connectors and connections.
pub(crate) struct Net {
    pub(crate) endpoints: Vec<Endpoint>,
    /// This worker's UDP sockets, by their declaration's id (`None`: on another worker).
    udp: Vec<Option<UdpSocket>>,
    /// UDP sockets whose receive ran out of buffers.
    udp_starved: Vec<usize>,
    /// Per `ConnectorId`: its index in `endpoints`.
    connectors: Vec<usize>,
    /// Outbound connects in flight (cancelled when the runtime drains).
    connecting: Slab<Connecting>,
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
    /// Where small views of a send are copied together (see [`send`]).
    coalesce: BufWriter,
    /// Peer-address buffers for accepted connections' `SO_PEERNAME` reads, reused. Boxed: a
    /// connection holds one (at a stable address) while the kernel may write it.
    #[allow(clippy::vec_box)]
    names: Vec<Box<[u8; PEER_NAME_LEN]>>,
}

/// Room for an IPv4 or IPv6 peer address.
const PEER_NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();

impl Net {
    pub(crate) fn new(endpoints: Vec<Endpoint>, sockets: Vec<UdpSocket>, fixed_files: bool) -> Net {
        let connectors = (0..endpoints.len()).filter(|&i| endpoints[i].is_connector()).collect();
        let mut udp: Vec<Option<UdpSocket>> = Vec::new();
        for s in sockets {
            let id = s.id();
            if udp.len() <= id {
                udp.resize_with(id + 1, || None);
            }
            udp[id] = Some(s);
        }
        Net {
            udp,
            udp_starved: Vec::new(),
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
            coalesce: BufWriter::new(64 << 10),
            names: Vec::new(),
        }
    }

    /// Events waiting for their stage to accept them.
    pub(crate) fn has_stalled(&self) -> bool {
        !self.stalled.is_empty()
    }

    /// Connections waiting for buffers.
    pub(crate) fn has_starved(&self) -> bool {
        !self.starved.is_empty() || !self.udp_starved.is_empty()
    }

    /// The stage events of `emit`'s index `ei` go to: an endpoint's, or past them a UDP
    /// socket's.
    fn sink(&self, ei: usize) -> &crate::stage::Sink<NetEvent> {
        match self.endpoints.get(ei) {
            Some(e) => &e.sink,
            None => &self.udp[ei - self.endpoints.len()].as_ref().expect("events only of this worker's sockets").sink,
        }
    }

    fn conn_id(r: &Reactor, idx: usize, gen: u32) -> Conn {
        Conn { worker: r.worker as u16, idx: idx as u32, gen }
    }

    /// The live connection of slot `idx` that `t` is for (not a reused slot's newer tenant).
    fn conn_for(&mut self, idx: usize, t: Token) -> Option<&mut ConnState> {
        self.conns.get_mut(idx).filter(|c| t.is_for(c.gen))
    }

    /// Takes a new connection of endpoint `ei` (already counted in its `open`) into the table,
    /// gives the endpoint's stage its first event (`first` makes it from the connection's id and
    /// the endpoint's), choosing the replica all its events will go to, and starts receiving.
    fn open_conn(&mut self, r: &mut Reactor, ei: usize, target: Target, first: impl FnOnce(Conn, usize) -> NetEvent) {
        let Some(idx) = self.insert_conn_tls(r, ei, target) else { return };
        let first = first(Self::conn_id(r, idx, self.conns[idx].gen), self.endpoints[ei].id);
        self.announce(r, idx, first);
        if self.arm_recv(r, idx).is_err() {
            self.begin_close(r, idx, false);
        }
    }

    /// Takes a new connection of endpoint `ei` into the table; returns its slot.
    fn insert_conn(&mut self, r: &mut Reactor, ei: usize, target: Target) -> usize {
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let cfg = self.endpoints[ei].cfg.clone();
        self.conns.insert(ConnState {
            target,
            gen,
            endpoint: ei,
            replica: 0,
            life: Life::Open,
            rx: RecvSide::default(),
            tx: SendSide::new(cfg.output_limit as u64, cfg.backpressure, r.now),
            last_active: r.now,
            name: None,
            tls: None,
        })
    }

    /// Takes a new connection into the table as [`Net::insert_conn`] does, with a TLS session
    /// when its endpoint speaks TLS. `None` when that session cannot be made: the connection
    /// is then closed at once, before anything is started on it.
    fn insert_conn_tls(&mut self, r: &mut Reactor, ei: usize, target: Target) -> Option<usize> {
        let idx = self.insert_conn(r, ei, target);
        if let Some(setup) = &self.endpoints[ei].cfg.tls {
            match tls::TlsConn::new(setup, r.now) {
                Ok(t) => self.conns[idx].tls = Some(t),
                Err(e) => {
                    log::warn!("ringstage: worker {}: TLS session not made: {e}", r.worker);
                    self.begin_close(r, idx, false);
                    return None;
                }
            }
        }
        Some(idx)
    }

    /// Gives connection `idx`'s endpoint stage its first event, choosing from it the replica
    /// all its events will go to.
    fn announce(&mut self, r: &mut Reactor, idx: usize, first: NetEvent) {
        let Some(first) = self.hold_for_handshake(r, idx, first) else { return };
        let ei = self.conns[idx].endpoint;
        let replica = self.endpoints[ei].sink.pick(&first) as u16;
        self.conns[idx].replica = replica;
        self.emit(r, ei, replica, first);
    }

    /// Routes a network completion. Hot path: a receive's or a send's is handled here, inline
    /// in the worker's reap; the others go through one call.
    #[inline]
    pub(crate) fn complete(&mut self, r: &mut Reactor, t: Token, res: i32, flags: u32) {
        let idx = t.key as usize;
        let done = match t.kind {
            OpKind::Recv => self.on_recv(r, idx, t, res, flags),
            OpKind::Send => self.on_send(r, idx, t, res, flags),
            _ => return self.complete_other(r, t, res, flags),
        };
        if let Err(e) = done {
            Self::op_failed(r, e);
        }
    }

    #[cold]
    fn op_failed(r: &Reactor, e: std::io::Error) {
        // Only a persistently full SQ lands here; the op stays un-armed and the tick retries
        // the listener, while the connection is closed.
        log::warn!("ringstage: worker {}: {e}", r.worker);
    }

    /// The completions of everything but receives and sends.
    #[inline(never)]
    fn complete_other(&mut self, r: &mut Reactor, t: Token, res: i32, flags: u32) {
        let idx = t.key as usize;
        let done = match t.kind {
            OpKind::Accept => self.on_accept(r, idx, res, flags),
            OpKind::Backoff => self.on_backoff(r, idx),
            OpKind::Recv | OpKind::Send => unreachable!("handled by `complete`"),
            OpKind::SpliceIn | OpKind::SpliceOut => {
                self.on_splice(r, idx, t, res);
                Ok(())
            }
            OpKind::Close => {
                self.on_closed(r, idx, t);
                Ok(())
            }
            OpKind::Shutdown => {
                self.on_shutdown(r, idx, t, res);
                Ok(())
            }
            OpKind::Connect => {
                self.on_connect(r, idx, res);
                Ok(())
            }
            OpKind::PeerName => {
                self.on_peer_name(r, idx, t, res);
                Ok(())
            }
            OpKind::FdInstall => {
                self.on_installed(r, idx, t, res);
                Ok(())
            }
            OpKind::UdpRecv => self.on_udp_recv(r, idx, res, flags),
            OpKind::UdpSend => {
                self.on_udp_send(r, idx, res);
                Ok(())
            }
            OpKind::Doorbell | OpKind::Ignore | OpKind::File => Ok(()),
        };
        if let Err(e) = done {
            Self::op_failed(r, e);
        }
    }

    /// Executes a command from a handler stage.
    #[inline]
    pub(crate) fn command(&mut self, r: &mut Reactor, cmd: NetCmd) {
        let Some(conn) = cmd.conn() else { return self.unconnected(r, cmd) };
        let idx = conn.idx as usize;
        let live =
            self.conns.get(idx).is_some_and(|c| c.gen == conn.gen && !matches!(c.life, Life::Closed) && !c.aborting());
        if !live || conn.worker() != r.worker {
            return; // stale id or already aborted: the bytes are dropped with the command
        }
        let c = &mut self.conns[idx];
        match cmd {
            NetCmd::Close { .. } => self.begin_close(r, idx, true),
            NetCmd::Abort { .. } => self.begin_close_with(r, idx, false, true),
            NetCmd::PauseReads { .. } => {
                c.rx.paused = true;
                self.hold_reads(r, idx);
            }
            NetCmd::ResumeReads { .. } => {
                c.rx.paused = false;
                self.release_reads(r, idx);
            }
            cmd => self.queue_output(r, idx, cmd),
        }
    }

    /// The commands that name no connection: a connect, a datagram.
    #[cold]
    #[inline(never)]
    fn unconnected(&mut self, r: &mut Reactor, cmd: NetCmd) {
        match cmd {
            NetCmd::Connect { connector, addr, tag, .. } => self.connect(r, connector, Dest::Tcp(addr), tag),
            NetCmd::ConnectUnix { connector, path, tag, .. } => self.connect(r, connector, Dest::Unix(path), tag),
            NetCmd::SendTo { socket, to, data } => self.send_to(r, socket, to, data, 0),
            NetCmd::SendSegments { socket, to, data, size } => self.send_to(r, socket, to, data, size.max(1)),
            _ => {}
        }
    }

    /// Delivers an event to the connection's replica of the listener's stage, or parks it (in
    /// order) if refused.
    fn emit(&mut self, r: &mut Reactor, ei: usize, replica: u16, ev: NetEvent) {
        // Behind parked events, a new one parks too, so the stage sees them in order.
        let ev = if self.stalled.is_empty() {
            match self.sink(ei).try_enqueue_to(replica.into(), ev) {
                Ok(()) => return,
                Err(ev) => ev,
            }
        } else {
            ev
        };
        self.stalled.push_back((ei, replica, ev));
        r.counters.io_started.add(1);
        r.counters.parked.add(1);
    }

    /// Retries parked events in order; stops at the first refusal. Returns how many went in.
    pub(crate) fn flush_stalled(&mut self, r: &mut Reactor) -> usize {
        let mut n = 0;
        while let Some((ei, replica, ev)) = self.stalled.pop_front() {
            if let Err(ev) = self.sink(ei).try_enqueue_to(replica.into(), ev) {
                self.stalled.push_front((ei, replica, ev));
                break;
            }
            r.counters.io_finished.add(1);
            n += 1;
        }
        n
    }

    /// Every 100 ms: idle and send timeouts, and listeners whose re-arm failed. A connection is
    /// idle when nothing completed on it for the idle timeout; its output is stuck when one
    /// send or splice has been in flight (no progress: each completes on partial progress) for
    /// the send timeout. Either way it is aborted, which cancels what is in flight.
    pub(crate) fn tick(&mut self, r: &mut Reactor) {
        let now = r.now;
        if now.duration_since(self.last_sweep) < Duration::from_millis(100) {
            return;
        }
        self.last_sweep = now;
        self.rearm_listeners(r);
        if self
            .endpoints
            .iter()
            .all(|l| l.cfg.idle_timeout.is_none() && l.cfg.send_timeout.is_none() && l.cfg.tls.is_none())
        {
            return;
        }
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let cfg = &self.endpoints[c.endpoint].cfg;
                let idle = !c.closing() && cfg.idle_timeout.is_some_and(|d| now.duration_since(c.last_active) >= d);
                let stuck = c.tx.busy()
                    && !c.aborting()
                    && cfg.send_timeout.is_some_and(|d| now.duration_since(c.tx.since) >= d);
                idle || stuck || Self::handshake_late(c, cfg, now)
            })
            .map(|(i, _)| i)
            .collect();
        for idx in expired {
            let cfg = &self.endpoints[self.conns[idx].endpoint].cfg;
            if Self::handshake_late(&self.conns[idx], cfg, now) {
                r.counters.tls_handshake_timeouts.add(1);
                if let Some(t) = self.conns[idx].tls.as_mut() {
                    t.timed_out();
                }
            }
            self.begin_close(r, idx, false);
        }
    }

    /// Whether connection `c`'s TLS handshake has run past its endpoint's limit.
    fn handshake_late(c: &ConnState, cfg: &crate::net::ListenConfig, now: Instant) -> bool {
        !c.closing()
            && c.tls
                .as_ref()
                .is_some_and(|t| t.handshaking() && now.duration_since(t.started()) >= cfg.tls_handshake_timeout)
    }

    /// Shutdown, phase one: stop accepting, connecting and reading; queued sends still finish.
    pub(crate) fn begin_drain(&mut self, r: &mut Reactor) {
        self.stop_listeners(r);
        self.cancel_connects(r);
        self.stop_udp(r);
        let recvs: Vec<(usize, u32)> = self.conns.iter().filter(|(_, c)| c.rx.armed).map(|(i, c)| (i, c.gen)).collect();
        for (idx, gen) in recvs {
            let _ = r.cancel(Token::new(OpKind::Recv, idx, gen));
        }
        self.starved.clear();
    }

    /// Shutdown, last phase: close every remaining socket synchronously.
    pub(crate) fn teardown(&mut self, r: &mut Reactor) {
        for (_, c) in self.conns.iter() {
            if !matches!(c.life, Life::Closed) {
                // The connection owns its socket; the ring is about to be torn down.
                r.close_now(c.target);
            }
        }
        for (_, c) in self.conns.iter_mut() {
            // Views a SEND_ZC may still be reading (no notification yet): leaked, not freed,
            // so their memory cannot be reused under the kernel.
            std::mem::forget(std::mem::take(&mut c.tx.zc_held));
        }
        std::mem::forget(std::mem::take(&mut self.zc_orphans));
        self.conns.clear();
        self.stalled.clear();
        for l in &mut self.endpoints {
            l.fd = None;
        }
    }
}

/// Whether a completion's flags say more completions of the same (multishot) operation follow.
fn more(flags: u32) -> bool {
    cqueue::more(flags)
}
