//! Networking on the ring: listeners with multishot accept, connections with multishot recv
//! into pool buffers, gather sends of `IoBuf` chains, graceful and abortive close, timeouts.
//!
//! The network I/O stage (`"net"`, one replica on every worker) owns the sockets of its
//! worker. It emits [`NetEvent`]s to the stage each listener delivers to and executes the
//! [`NetCmd`]s sent back to it; commands are routed to the worker that owns the connection.
//!
//! All events of one connection reach one replica of the listener's stage, in order: the
//! replica is chosen when the connection opens (the stage's router if it has one; else the
//! replica on the connection's worker if it is active; else the next active one, round-robin)
//! and kept until [`NetEvent::Closed`], even if an elastic stage's active set changes
//! meanwhile. Per-connection state can therefore live in the handler, in a [`ConnMap`].
//!
//! Failure behaviour:
//! - **EMFILE/ENFILE/ENOMEM on accept**: the multishot accept is stopped and re-armed after a
//!   back-off timer (10 ms doubling to 1 s) on the ring; the loop never spins on it.
//! - **ENOBUFS on recv** (pool empty): the connection waits, without a pending recv, until its
//!   worker's pool gets buffers back, then its recv is re-armed. No byte is lost: TCP holds it.
//! - **Large files**: [`NetCmd::SendFile`] splices file → pipe → socket with two linked
//!   `SPLICE` ops per chunk (up to the pipe's size), so file bytes never enter user memory.
//! - **Peer reset mid-send / send timeout**: the connection is closed, its queued buffers are
//!   released, and the handler stage gets [`NetEvent::Closed`].
//! - **Peer finished sending** (FIN): the stage gets [`NetEvent::Eof`] after the last data, and
//!   the connection stays open until the handler closes it, so answers still on their way
//!   through later stages are delivered (a client that half-closes after its request).
//! - **Peer not reading** (output piling up): when a connection's unsent output goes over its
//!   limit ([`ListenConfig::output_limit`], 1 MiB by default) the stage gets
//!   [`NetEvent::Backlogged`], and [`NetEvent::Drained`] once half of it has gone out.
//!   Meanwhile the connection is not read ([`ListenConfig::backpressure`], on by default), so
//!   the peer's further requests wait in TCP, whose window closes on it: a client that
//!   pipelines requests without reading the answers costs the server a bounded amount of
//!   memory, not the answers to everything it sent. A proxy turns that off and pauses the
//!   *other* side of the pair instead ([`NetCmd::PauseReads`] / [`NetCmd::ResumeReads`]).

mod addrs;
mod conn;
mod conn_map;
mod conn_outbox;
mod driver;
mod framing;
mod pipe;
#[cfg(feature = "tls")]
pub mod tls;
/// Without the `tls` feature: no TLS setup can exist.
#[cfg(not(feature = "tls"))]
mod tls {
    /// Uninhabited: no listener or connector has TLS.
    #[derive(Clone, Debug)]
    pub(crate) enum TlsSetup {}
}
mod udp;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

pub use addrs::ConnAddrs;
pub use conn_map::ConnMap;
pub use conn_outbox::ConnOutbox;
pub(crate) use driver::{Endpoint, Net, UdpSocket};
pub use framing::{Decode, Decoder, Flow, FrameError, Framer};
pub use pipe::SplicePipe;
pub use udp::{Udp, UdpConfig, UdpId};

use crate::buf::{IoBuf, IoBufChain};
use crate::stage::{Context, Handler};

/// A connection: its worker, slot and generation. `Copy`; stale ids are ignored safely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conn {
    pub(crate) worker: u16,
    pub(crate) idx: u32,
    pub(crate) gen: u32,
}

impl Conn {
    /// The worker that owns the socket.
    pub fn worker(&self) -> usize {
        self.worker as usize
    }

    /// A number unique among this worker's open connections (the slot index).
    pub fn slot(&self) -> usize {
        self.idx as usize
    }

    /// The id as one number (for layers that cannot name a `Conn`).
    pub(crate) fn pack(self) -> u128 {
        u128::from(self.worker) << 64 | u128::from(self.idx) << 32 | u128::from(self.gen)
    }

    pub(crate) fn unpack(v: u128) -> Conn {
        Conn { worker: (v >> 64) as u16, idx: (v >> 32) as u32, gen: v as u32 }
    }
}

/// An event that names the connection it came from, so that a handler panic on it aborts that
/// connection ([`PanicPolicy::Isolate`](crate::stage::PanicPolicy::Isolate)). Declared for a
/// stage with [`Builder::conn_events`](crate::runtime::Builder::conn_events); stages that
/// listeners and connectors deliver [`NetEvent`]s to have it already.
///
/// # Examples
///
/// ```
/// use ringstage::net::{Conn, ConnEvent};
///
/// enum Job {
///     Request { conn: Conn, line: Vec<u8> },
///     Flush,
/// }
///
/// impl ConnEvent for Job {
///     fn conn(&self) -> Option<Conn> {
///         match self {
///             Job::Request { conn, .. } => Some(*conn),
///             Job::Flush => None,
///         }
///     }
/// }
/// ```
pub trait ConnEvent {
    /// The connection the event came from, if any. Called on every event of the stage before
    /// it is handled: keep it a field read (it is, for [`NetEvent`]: one match).
    fn conn(&self) -> Option<Conn>;
}

impl ConnEvent for NetEvent {
    #[inline]
    fn conn(&self) -> Option<Conn> {
        NetEvent::conn(self)
    }
}

/// Identifies a listener declared with [`crate::runtime::Builder::listen`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(pub(crate) u32);

/// Identifies a connector declared with [`crate::runtime::Builder::connector`]: the stage that
/// gets the events of the outbound connections opened with [`NetCmd::Connect`], and their
/// options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectorId(pub(crate) u32);

/// What the network stage tells a handler stage.
///
/// A connection's events reach one replica in order: `Opened` (or `Connected`), any number of
/// `Data`, then `Eof` when the peer has finished sending, and `Closed` last. `Backlogged` and
/// `Drained` come between as its unsent output crosses the listener's limit.
///
/// # Examples
///
/// The skeleton of a handler's `handle`:
///
/// ```
/// use ringstage::prelude::*;
///
/// fn handle(ev: NetEvent, net: &mut Outbox<NetCmd>) {
///     match ev {
///         NetEvent::Opened { .. } | NetEvent::Connected { .. } => {} // set up per-connection state
///         NetEvent::Data { conn, data } => {
///             // `data` pins its pool buffer: answer from it, or copy out what you keep.
///             net.send(NetCmd::Send { conn, data });
///         }
///         NetEvent::Eof { conn } => { net.send(NetCmd::Close { conn }); }
///         NetEvent::Closed { .. } => {} // drop per-connection state
///         _ => {}
///     }
/// }
/// ```
///
/// New kinds of event may come in later versions (`#[non_exhaustive]`): a match on it ends
/// with `_ => {}`.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetEvent {
    /// A connection was accepted.
    Opened {
        /// The connection.
        conn: Conn,
        /// The listener that accepted it.
        listener: ListenerId,
        /// Its peer's and local address.
        addrs: ConnAddrs,
    },
    /// Bytes arrived. `data` is a view of the pool buffer the kernel wrote them into.
    Data {
        /// The connection.
        conn: Conn,
        /// The received bytes.
        data: IoBuf,
    },
    /// The peer finished sending (its FIN arrived, after all its data). The connection stays
    /// open for sending: answer what it asked, then [`NetCmd::Close`] it (queued output is sent
    /// first), or [`NetCmd::Shutdown`] to pass the FIN on and keep it open. A handler that
    /// ignores this keeps the connection until the peer resets it or the idle timeout.
    Eof {
        /// The connection.
        conn: Conn,
    },
    /// The connection is closed and its id is dead.
    Closed {
        /// The connection.
        conn: Conn,
    },
    /// An outbound connection asked for with [`NetCmd::Connect`] is established. Its events
    /// follow like an accepted connection's; it ends with [`NetEvent::Closed`].
    Connected {
        /// The connection.
        conn: Conn,
        /// The connector it was opened with.
        connector: ConnectorId,
        /// The `tag` of the `Connect` command.
        tag: u64,
        /// The address connected to, and the local one.
        addrs: ConnAddrs,
    },
    /// The connection's unsent output went over its limit ([`ListenConfig::output_limit`]):
    /// the peer reads slower than it is answered. Unless [`ListenConfig::backpressure`] is off,
    /// the connection is not read until [`NetEvent::Drained`].
    Backlogged {
        /// The connection.
        conn: Conn,
    },
    /// A [`NetEvent::Backlogged`] connection's unsent output is down to half its limit;
    /// reading resumes (unless the handler paused it with [`NetCmd::PauseReads`]).
    Drained {
        /// The connection.
        conn: Conn,
    },
    /// A [`NetCmd::Connect`] failed: refused, unreachable, over the connector's connection
    /// limit, cut by the runtime's shutdown, or not done within the connector's time limit
    /// (`ErrorKind::TimedOut`). No connection exists.
    ConnectFailed {
        /// The connector it was asked of.
        connector: ConnectorId,
        /// The `tag` of the `Connect` command.
        tag: u64,
        /// Why.
        error: std::io::Error,
    },
    /// A datagram arrived on a UDP socket ([`Builder::udp`](crate::runtime::Builder::udp)).
    /// `data` is a view of the pool buffer the kernel wrote it into.
    Datagram {
        /// The socket (answer through it: [`NetCmd::SendTo`]).
        socket: Udp,
        /// Its source.
        from: SocketAddr,
        /// Its payload, whole.
        data: IoBuf,
    },
    /// A datagram was larger than a receive buffer: its tail was cut by the kernel, so it is
    /// not delivered (counted in the worker's `udp_truncated`). Raise the buffer size
    /// ([`Builder::buffers`](crate::runtime::Builder::buffers)) if such datagrams are expected.
    Truncated {
        /// The socket.
        socket: Udp,
        /// Its source.
        from: SocketAddr,
        /// Its full length.
        len: usize,
    },
    #[cfg(feature = "tls")]
    /// A TLS connection's handshake is done ([`ListenConfig::tls`], [`ConnectConfig::tls`]):
    /// right after its `Opened` or `Connected`, before any `Data`. What was agreed.
    Secured {
        /// The connection.
        conn: Conn,
        /// The protocol (ALPN), server name (SNI), version, suite and resumption.
        info: Box<tls::TlsInfo>,
    },
    /// A [`NetCmd::SendTo`] or [`NetCmd::SendSegments`] failed: an address the socket cannot
    /// reach (another family, port 0), more than 64 segments, too many sends in flight
    /// (`WouldBlock`), or an error the kernel reported (a datagram too large: `EMSGSIZE`; no
    /// route to the destination).
    SendToFailed {
        /// The socket.
        socket: Udp,
        /// The destination.
        to: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

impl NetEvent {
    /// The connection the event is about (`None` for [`NetEvent::ConnectFailed`]).
    pub fn conn(&self) -> Option<Conn> {
        match self {
            NetEvent::Opened { conn, .. }
            | NetEvent::Data { conn, .. }
            | NetEvent::Eof { conn }
            | NetEvent::Backlogged { conn }
            | NetEvent::Drained { conn }
            | NetEvent::Closed { conn }
            | NetEvent::Connected { conn, .. } => Some(*conn),
            #[cfg(feature = "tls")]
            NetEvent::Secured { conn, .. } => Some(*conn),
            NetEvent::ConnectFailed { .. }
            | NetEvent::Datagram { .. }
            | NetEvent::Truncated { .. }
            | NetEvent::SendToFailed { .. } => None,
        }
    }
}

/// What a handler stage asks of the network stage.
///
/// Commands of one connection are carried out in the order sent: output is queued and sent
/// in order (views, chains and file transfers alike), and `Close` / `Shutdown` wait for it.
/// `Abort` does not wait: it resets the connection (RST).
///
/// # Examples
///
/// A response of a small head and a shared body, gathered into one send without copying the
/// body:
///
/// ```
/// use ringstage::prelude::*;
///
/// fn respond(conn: Conn, body: &IoBuf) -> NetCmd {
///     let mut data = IoBufChain::new();
///     data.push(IoBuf::from(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes()));
///     data.push(body.clone()); // one reference count increment, no copy
///     NetCmd::SendChain { conn, data }
/// }
/// ```
#[derive(Debug)]
pub enum NetCmd {
    /// Queue `data` for sending.
    Send {
        /// The connection.
        conn: Conn,
        /// Bytes to send.
        data: IoBuf,
    },
    /// Queue a chain for one gather send.
    SendChain {
        /// The connection.
        conn: Conn,
        /// Bytes to send.
        data: IoBufChain,
    },
    /// Send `len` bytes of `file` from `offset`, zero copy: the kernel splices them from the
    /// page cache through `pipe` into the socket. Ordered with the connection's other sends.
    /// If the transfer fails after it started (the file shrank, a read error), the connection
    /// is reset, so the peer sees an error instead of a short body.
    SendFile {
        /// The connection.
        conn: Conn,
        /// An open regular file (kept open until the transfer ends).
        file: std::sync::Arc<std::os::fd::OwnedFd>,
        /// Where to start.
        offset: u64,
        /// How many bytes. The connection is reset if the file turns out shorter.
        len: u64,
        /// The pipe to splice through, made before the response was committed.
        pipe: SplicePipe,
    },
    /// Stop reading, finish queued sends, then close.
    Close {
        /// The connection.
        conn: Conn,
    },
    /// Close at once with a reset (RST): queued output is dropped and sends in flight are
    /// cancelled, so the peer sees an error rather than an end of stream it could take for a
    /// complete answer. What a handler does with a connection that sent garbage; what a panic
    /// in a handler does to the connection its event came from.
    Abort {
        /// The connection.
        conn: Conn,
    },
    /// Finish queued sends, then send a FIN (`shutdown(SHUT_WR)`); keep receiving. Sends after
    /// it are dropped. What a proxy does when one side of a pair finished sending.
    Shutdown {
        /// The connection.
        conn: Conn,
    },
    /// Stop reading the connection (its recv is cancelled; bytes the peer sends wait in TCP,
    /// then its window closes) until [`NetCmd::ResumeReads`]. Data already received may still
    /// arrive. What a proxy does to one side while the other is [`NetEvent::Backlogged`].
    PauseReads {
        /// The connection.
        conn: Conn,
    },
    /// Undo [`NetCmd::PauseReads`]. Reading restarts unless the connection is itself
    /// backlogged with [`ListenConfig::backpressure`] on, or its peer finished sending.
    ResumeReads {
        /// The connection.
        conn: Conn,
    },
    /// Open a TCP connection to `addr` on worker `worker`: usually the sender's own
    /// ([`Context::worker`]), so the connection's events stay on its core. The connector's
    /// stage gets [`NetEvent::Connected`] or [`NetEvent::ConnectFailed`], with `tag`.
    ///
    /// The socket is a plain descriptor (counted against `RLIMIT_NOFILE`), connected on the
    /// ring with the connector's time limit linked to it. Refused by the sink when `worker`
    /// is not one of the runtime's workers.
    Connect {
        /// The connector (the stage to tell, the connection's options).
        connector: ConnectorId,
        /// Where to connect.
        addr: SocketAddr,
        /// The worker that will own the connection.
        worker: usize,
        /// Handed back in the resulting event, to tell attempts apart.
        tag: u64,
    },
    /// Open a Unix domain stream connection to the socket at `path` (`@name`: the abstract
    /// socket `name`), as [`NetCmd::Connect`] does over TCP: the connector's stage gets
    /// [`NetEvent::Connected`] (with no IP addresses) or [`NetEvent::ConnectFailed`], with
    /// `tag`. A path nobody listens on fails with `ConnectionRefused` or `NotFound`.
    ConnectUnix {
        /// The connector (the stage to tell, the connection's options).
        connector: ConnectorId,
        /// The socket's path.
        path: std::sync::Arc<std::path::Path>,
        /// The worker that will own the connection.
        worker: usize,
        /// Handed back in the resulting event.
        tag: u64,
    },
    /// Send `data` as one datagram to `to` through a UDP socket (one `SENDMSG`; the view is
    /// kept until the kernel has it, no copy). Failures come back as
    /// [`NetEvent::SendToFailed`]. To send several parts as one datagram, join them first
    /// ([`BufWriter`](crate::buf::BufWriter) or [`IoBuf::concat`]).
    SendTo {
        /// The socket (its worker sends).
        socket: Udp,
        /// The destination.
        to: SocketAddr,
        /// The payload.
        data: IoBuf,
    },
    /// Send `data` to `to` as datagrams of `size` bytes each (the last may be shorter), in one
    /// `SENDMSG` that the kernel segments (UDP GSO, `UDP_SEGMENT`): one trip through the stack
    /// for up to 64 datagrams. Where the kernel lacks GSO the driver sends the segments one
    /// by one. At most 64 segments, `size` at least 1.
    SendSegments {
        /// The socket (its worker sends).
        socket: Udp,
        /// The destination.
        to: SocketAddr,
        /// The datagrams, back to back.
        data: IoBuf,
        /// The size of each datagram.
        size: u16,
    },
}

impl NetCmd {
    /// The connection the command is for (`None` for a connect or a datagram).
    pub fn conn(&self) -> Option<Conn> {
        match self {
            NetCmd::Send { conn, .. }
            | NetCmd::SendChain { conn, .. }
            | NetCmd::SendFile { conn, .. }
            | NetCmd::Close { conn }
            | NetCmd::Abort { conn }
            | NetCmd::Shutdown { conn }
            | NetCmd::PauseReads { conn }
            | NetCmd::ResumeReads { conn } => Some(*conn),
            NetCmd::Connect { .. }
            | NetCmd::ConnectUnix { .. }
            | NetCmd::SendTo { .. }
            | NetCmd::SendSegments { .. } => None,
        }
    }

    /// The worker a command goes to. It runs on every command, so it is one match (the
    /// connection's variants are listed as in `conn`, rather than `conn` called first).
    #[inline]
    pub(crate) fn route(cmd: &NetCmd) -> usize {
        match cmd {
            NetCmd::Send { conn, .. }
            | NetCmd::SendChain { conn, .. }
            | NetCmd::SendFile { conn, .. }
            | NetCmd::Close { conn }
            | NetCmd::Abort { conn }
            | NetCmd::Shutdown { conn }
            | NetCmd::PauseReads { conn }
            | NetCmd::ResumeReads { conn } => conn.worker(),
            NetCmd::Connect { worker, .. } | NetCmd::ConnectUnix { worker, .. } => *worker,
            NetCmd::SendTo { socket, .. } | NetCmd::SendSegments { socket, .. } => socket.worker(),
        }
    }
}

/// Options of a listener.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) workers: Vec<usize>,
    pub(crate) backlog: i32,
    pub(crate) nodelay: bool,
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) send_timeout: Option<Duration>,
    pub(crate) zc_min: Option<usize>,
    pub(crate) output_limit: usize,
    pub(crate) backpressure: bool,
    pub(crate) coalesce_below: usize,
    /// A Unix domain listener: its connections have no IP addresses.
    pub(crate) unix: bool,
    pub(crate) tls: Option<tls::TlsSetup>,
    pub(crate) tls_handshake_timeout: Duration,
    pub(crate) tls_handshakes_per_sec: Option<u32>,
    pub(crate) local_addrs: bool,
    /// A listening socket made elsewhere (socket activation, a Unix socket), instead of
    /// binding `addr`.
    pub(crate) inherited: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

impl ListenConfig {
    /// Listen on a Unix domain stream socket at `path` (or, for `@name`, the abstract socket
    /// `name`), on each of `workers` (all accept from its one queue), its file given `mode`
    /// when set (`0o660`: owner and group may connect). The socket is bound here, so a bad
    /// path fails at once; a socket file left by a server that died is replaced, one a live
    /// server listens on is an `AddrInUse` error naming the path. Connections behave as TCP
    /// ones (`Data`, `Send`, `Close`); [`Runtime::local_addr`](crate::runtime::Runtime::local_addr)
    /// of such a listener is `0.0.0.0:0`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use ringstage::prelude::*;
    ///
    /// let cfg = ListenConfig::unix("/run/myapp/api.sock", Some(0o660), [0])?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn unix(
        path: impl AsRef<std::path::Path>,
        mode: Option<u32>,
        workers: impl IntoIterator<Item = usize>,
    ) -> std::io::Result<ListenConfig> {
        let fd = ringstage_sys::unix::listen_unix(path.as_ref(), mode)?;
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut cfg = ListenConfig::new(unspecified, workers);
        cfg.nodelay = false; // a TCP option
        cfg.unix = true;
        cfg.inherited = Some(std::sync::Arc::new(fd));
        Ok(cfg)
    }

    /// Accept on a listening socket this process was given (systemd's socket activation: see
    /// [`runtime::systemd`](crate::runtime::systemd)) instead of binding one, on each of
    /// `workers` (all of them accept from its one queue). Fails with a clear error when `fd`
    /// is not a listening TCP socket (a datagram socket, a Unix socket, one not listening).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use ringstage::prelude::*;
    /// use ringstage::runtime::systemd;
    ///
    /// let mut b = Runtime::builder(1);
    /// let app = b.stage::<NetEvent>("app", StageConfig::on([0]));
    /// let cfg = match systemd::listen_fds()?.pop() {
    ///     Some((fd, _name)) => ListenConfig::inherited(fd, [0])?,
    ///     None => ListenConfig::new("127.0.0.1:8080".parse().unwrap(), [0]),
    /// };
    /// let (_net, _listener) = b.listen(cfg, app);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn inherited(
        fd: std::os::fd::OwnedFd,
        workers: impl IntoIterator<Item = usize>,
    ) -> std::io::Result<ListenConfig> {
        use std::os::fd::AsRawFd;
        ringstage_sys::systemd::check_listening_stream(&fd)?;
        let addr = ringstage_sys::socket::local_addr(fd.as_raw_fd()).map_err(|e| {
            std::io::Error::new(e.kind(), format!("descriptor {} is not a TCP socket: {e}", fd.as_raw_fd()))
        })?;
        let mut cfg = ListenConfig::new(addr, workers);
        cfg.inherited = Some(std::sync::Arc::new(fd));
        Ok(cfg)
    }

    /// Listen on `addr` (port 0 picks a free port) on each of `workers`, each with its own
    /// `SO_REUSEPORT` socket.
    pub fn new(addr: SocketAddr, workers: impl IntoIterator<Item = usize>) -> ListenConfig {
        ListenConfig {
            addr,
            workers: workers.into_iter().collect(),
            backlog: 1024,
            nodelay: true,
            max_connections: 100_000,
            idle_timeout: None,
            send_timeout: None,
            zc_min: None,
            output_limit: 1 << 20,
            backpressure: true,
            coalesce_below: 512,
            unix: false,
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            tls_handshakes_per_sec: None,
            local_addrs: false,
            inherited: None,
        }
    }

    /// Views shorter than `bytes` that follow one another in a connection's output are copied
    /// into one buffer before they are sent (default 512; 0 turns it off): a gather of many
    /// tiny views costs the kernel more than copying them, since each iovec is imported and
    /// copied on its own, while a large view is cheaper sent as it is. Views that are
    /// neighbours in one block (pieces of a [`BufWriter`](crate::buf::BufWriter), parts of one
    /// received buffer) are joined without a copy whatever their size.
    pub fn coalesce_below(mut self, bytes: usize) -> Self {
        self.coalesce_below = bytes;
        self
    }

    /// Speak TLS on the accepted connections (rustls; see [`tls`]): each handshake runs on the
    /// connection's worker before the stage hears [`NetEvent::Opened`], followed by
    /// [`NetEvent::Secured`]; `Data` and sends are plaintext.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use ringstage::net::tls::rustls;
    /// use ringstage::prelude::*;
    ///
    /// # fn certs() -> (Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>) { unimplemented!() }
    /// let (chain, key) = certs(); // from PEM files, e.g. with rustls-pemfile
    /// let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
    ///     .with_safe_default_protocol_versions()
    ///     .unwrap()
    ///     .with_no_client_auth()
    ///     .with_single_cert(chain, key)
    ///     .unwrap();
    /// let cfg = ListenConfig::new("0.0.0.0:443".parse().unwrap(), [0]).tls(Arc::new(config));
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: std::sync::Arc<tls::rustls::ServerConfig>) -> Self {
        self.tls = Some(tls::TlsSetup::Server(config));
        self
    }

    /// A TLS handshake not done within `d` (default 10 s) is aborted and counted
    /// (`tls_handshake_timeouts`): a client that opens a connection and stalls holds it no
    /// longer. Checked by the worker's 100 ms sweep.
    #[cfg(feature = "tls")]
    pub fn tls_handshake_timeout(mut self, d: Duration) -> Self {
        self.tls_handshake_timeout = d;
        self
    }

    /// At most `n` new TLS handshakes per second per worker (a token bucket holding one
    /// second's worth); a connection accepted past it is closed at once and counted
    /// (`tls_handshakes_refused`), so a flood of handshakes, each costing a signature, cannot
    /// starve the established connections. Default: no limit.
    #[cfg(feature = "tls")]
    pub fn tls_handshakes_per_sec(mut self, n: u32) -> Self {
        self.tls_handshakes_per_sec = Some(n.max(1));
        self
    }

    /// For a listener on a wildcard address (`0.0.0.0`, `[::]`), read each accepted
    /// connection's local address too ([`ConnAddrs::local`]), which tells which of the host's
    /// addresses the client connected to (default off: `None`). Linux before 6.19 cannot read
    /// it from a direct descriptor, so each accept then also installs the descriptor in the
    /// process's table for a moment (`IORING_OP_FIXED_FD_INSTALL`, Linux 6.8) and asks it with
    /// `getpeername` and `getsockname`, then closes it: one operation and three syscalls per
    /// connection. A listener bound to one address has its local address for free.
    pub fn local_addrs(mut self, on: bool) -> Self {
        self.local_addrs = on;
        self
    }

    /// `listen(2)` backlog (default 1024).
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }

    /// Set `TCP_NODELAY` on accepted sockets (default on). It is set on the listening socket,
    /// which accepted sockets inherit it from.
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Most open connections per worker (default 100 000). At the limit the worker stops
    /// accepting (its multishot accept is cancelled): further clients wait in the kernel's
    /// listen backlog ([`ListenConfig::backlog`]), not accepted and reset, and are taken in
    /// order as connections close. A few accepted while the cancel was on its way are served,
    /// over the limit.
    ///
    /// With direct descriptors ([`RingConfig::fixed_files`](crate::runtime::RingConfig), the
    /// default) each worker's file table is sized at start to its listeners' limits plus a
    /// little room for closes in flight, within `RLIMIT_NOFILE` as it is then: raise that
    /// limit before starting the runtime to hold more connections per worker.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Close connections with no completed recv or send for this long (swept once per tick).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Abort a connection whose send (or file splice) makes no progress for `d`, so a peer
    /// that stops reading cannot pin buffers forever. Checked by the worker's 100 ms sweep
    /// (the cut comes up to 100 ms late); a send costs nothing extra for it.
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.send_timeout = Some(d);
        self
    }

    /// Unsent output (queued buffers and file bytes not yet taken by the kernel) above which a
    /// connection is backlogged (default 1 MiB): its stage gets [`NetEvent::Backlogged`], then
    /// [`NetEvent::Drained`] once the unsent output is down to half. Each queued view also
    /// counts as at least 4 KiB, since it may pin a whole pool buffer however few bytes it
    /// holds. What one connection holds is this plus the answers to what it sent before its
    /// reads stopped: the receives already under way, and its requests already inside the
    /// stages (bounded by their queues). Counting costs an add per send command and a
    /// subtract per completion.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes.max(1);
        self
    }

    /// Stop reading a backlogged connection until it drains (default on): a peer that does
    /// not read its answers is not read either, as fits request/response protocols. Turn it
    /// off where a connection's output comes from another connection (a proxy); the handler
    /// then pauses that one ([`NetCmd::PauseReads`]) on [`NetEvent::Backlogged`]. Leaving it on
    /// there could deadlock a pair whose two ends each wait to write before they read.
    pub fn backpressure(mut self, on: bool) -> Self {
        self.backpressure = on;
        self
    }

    /// Send with `SEND_ZC` (zero copy: the NIC reads the `IoBuf`s' memory, which stays pinned
    /// until the kernel's notification) when one send carries at least `min_bytes`; `None`,
    /// the default, always copies. Zero copy pays for large sends to a real NIC. It costs more
    /// than copying for small ones, and on loopback always, where the kernel copies at local
    /// delivery anyway: measured with the echo example (`--zero-copy-min 0`), +32% server CPU
    /// per 64 KiB message and +21% per 1 KiB one. Needs Linux 6.0 (probed at start; copies
    /// where it is missing).
    pub fn zero_copy_sends(mut self, min_bytes: Option<usize>) -> Self {
        self.zc_min = min_bytes;
        self
    }
}

/// Options of a connector: outbound connections opened with [`NetCmd::Connect`]. A connector
/// can open connections on every worker.
#[derive(Clone, Debug)]
pub struct ConnectConfig {
    pub(crate) timeout: Duration,
    /// The per-connection options, as for a listener's connections.
    pub(crate) conn: ListenConfig,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig::new()
    }
}

impl ConnectConfig {
    /// A connect time limit of 5 s, `TCP_NODELAY`, at most 100 000 connections per worker, no
    /// idle or send timeout, copying sends, a 1 MiB output limit with backpressure.
    pub fn new() -> ConnectConfig {
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        ConnectConfig { timeout: Duration::from_secs(5), conn: ListenConfig::new(any, []) }
    }

    /// Fail a connect not established within `d` (`ErrorKind::TimedOut`); the limit is an
    /// `IORING_OP_LINK_TIMEOUT` linked to the connect, so it costs no sweep.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Set `TCP_NODELAY` on the connections (default on).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.conn.nodelay = on;
        self
    }

    /// Most open (and opening) connections per worker; a `Connect` beyond fails at once.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.conn.max_connections = n;
        self
    }

    /// As [`ListenConfig::idle_timeout`].
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.conn.idle_timeout = Some(d);
        self
    }

    /// As [`ListenConfig::send_timeout`].
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.conn.send_timeout = Some(d);
        self
    }

    /// As [`ListenConfig::zero_copy_sends`].
    pub fn zero_copy_sends(mut self, min_bytes: Option<usize>) -> Self {
        self.conn.zc_min = min_bytes;
        self
    }

    /// As [`ListenConfig::output_limit`].
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.conn = self.conn.output_limit(bytes);
        self
    }

    /// As [`ListenConfig::backpressure`].
    pub fn backpressure(mut self, on: bool) -> Self {
        self.conn = self.conn.backpressure(on);
        self
    }

    /// Speak TLS to the servers connected to, verifying them as `config` says for the name
    /// `server_name` (sent as SNI). The stage hears [`NetEvent::Connected`] once the handshake
    /// is done, then [`NetEvent::Secured`]; a failed handshake (an untrusted or expired
    /// certificate, a wrong name) closes the connection, counted in `tls_handshake_failed`.
    #[cfg(feature = "tls")]
    pub fn tls(
        mut self,
        config: std::sync::Arc<tls::rustls::ClientConfig>,
        server_name: tls::rustls::pki_types::ServerName<'static>,
    ) -> Self {
        self.conn.tls = Some(tls::TlsSetup::Client(config, server_name));
        self
    }
}

/// The network I/O stage's handler: executes commands on the worker owning the connection.
pub(crate) struct NetStage {
    pub(crate) net: Rc<RefCell<Net>>,
}

impl Handler for NetStage {
    type Event = NetCmd;
    fn handle(&mut self, cmd: NetCmd, cx: &mut Context<'_>) {
        self.net.borrow_mut().command(cx.reactor(), cmd);
    }

    fn batch_done(&mut self, _n: usize, cx: &mut Context<'_>) {
        self.net.borrow_mut().flush_sends(cx.reactor());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command is moved into a stage queue with its stamp, out of it, and into the
    /// driver: at 128 bytes or less the compiler does each move with a few vector stores, above
    /// it with a `memcpy` call (a profile of the echo example showed ~1.4% of the server's CPU
    /// in those calls at 136 bytes).
    #[test]
    fn a_stamped_command_fits_in_two_cache_lines() {
        assert!(std::mem::size_of::<crate::stage::Stamped<NetCmd>>() <= 128);
        assert!(std::mem::size_of::<NetEvent>() <= 64);
    }
}
