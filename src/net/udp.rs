//! UDP: sockets declared with [`Builder::udp`](crate::runtime::Builder::udp), one per worker
//! (`SO_REUSEPORT`), on the same event/command model as TCP: datagrams arrive as
//! [`NetEvent::Datagram`](super::NetEvent::Datagram) (the source and an [`IoBuf`] view of the
//! pool buffer the kernel wrote them into) and go out with
//! [`NetCmd::SendTo`](super::NetCmd::SendTo).
//!
//! - **Receive**: one multishot `RECVMSG` per socket into the worker's provided buffers; the
//!   kernel's `io_uring_recvmsg_out` header gives the source, the payload and the truncation
//!   flag. A datagram larger than a pool buffer (less 44 bytes of header and address) is
//!   counted and reported ([`NetEvent::Truncated`](super::NetEvent::Truncated)), never
//!   delivered as if whole. When the pool is empty the receive waits for buffers (datagrams
//!   wait in the socket's kernel buffer, dropped by the kernel only when that is full).
//! - **Send**: one `SENDMSG` per command, the destination and the view in a send slot of the
//!   socket (reused: no allocation once warm), at most
//!   [`UdpConfig::sends_in_flight`] at once; past that a send is refused with
//!   [`NetEvent::SendToFailed`](super::NetEvent::SendToFailed) (`WouldBlock`), as UDP drops
//!   rather than queues. [`NetCmd::SendSegments`](super::NetCmd::SendSegments) sends one
//!   buffer as many datagrams of one size with UDP GSO (`UDP_SEGMENT`): one trip through the
//!   stack for up to 64 datagrams.
//! - A stage that refuses a datagram event parks it, as for TCP; the receive goes on into the
//!   pool until it is empty, then waits.

use std::net::SocketAddr;

/// Identifies a UDP socket declared with [`Builder::udp`](crate::runtime::Builder::udp).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpId(pub(crate) usize);

/// One worker's socket of a UDP declaration: where a datagram came in, and what a reply is
/// sent through (its worker owns it; commands are routed there). `Copy`, 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Udp {
    pub(crate) worker: u16,
    pub(crate) id: u16,
}

impl Udp {
    /// The worker that owns the socket.
    pub fn worker(&self) -> usize {
        self.worker as usize
    }

    /// The declaration it belongs to.
    pub fn id(&self) -> UdpId {
        UdpId(self.id as usize)
    }
}

/// Options of a UDP socket.
///
/// # Examples
///
/// ```
/// use ringstage::prelude::*;
///
/// let mut b = Runtime::builder(1);
/// let app = b.stage::<NetEvent>("app", StageConfig::on([0]));
/// let (_net, _udp) = b.udp(UdpConfig::new("127.0.0.1:0".parse().unwrap(), [0]), app);
/// ```
#[derive(Clone, Debug)]
pub struct UdpConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) workers: Vec<usize>,
    pub(crate) sends_in_flight: usize,
}

impl UdpConfig {
    /// Bind `addr` (port 0 picks a free port) on each of `workers`, each with its own
    /// `SO_REUSEPORT` socket. `[::]` takes IPv4 too (dual stack: IPv4 peers appear as
    /// `::ffff:a.b.c.d`, and an IPv4 destination is mapped the same way).
    pub fn new(addr: SocketAddr, workers: impl IntoIterator<Item = usize>) -> UdpConfig {
        UdpConfig { addr, workers: workers.into_iter().collect(), sends_in_flight: 256 }
    }

    /// Most sends a socket has at the kernel at once (default 256). A send completes as soon as
    /// the kernel has the datagram unless the socket's send buffer is full; a send past the
    /// limit is refused ([`NetEvent::SendToFailed`](super::NetEvent::SendToFailed)).
    pub fn sends_in_flight(mut self, n: usize) -> Self {
        self.sends_in_flight = n.clamp(1, 1 << 16);
        self
    }
}
