//! One connection's state in the network driver: its receive side, its send side and where
//! it is in its life.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use crate::buf::IoBufChain;
use crate::reactor::Target;

/// The bytes of output limit a queued view uses up at least (see [`SendSide::over_limit`]).
pub(crate) const VIEW_CHARGE: u64 = 4096;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// Reading (unless held back) and sending.
    Open,
    /// Closing: no more reads. A graceful close sends what is queued first; an abort drops it
    /// and cancels what is in flight, and, when output was lost that way (or a file transfer
    /// failed after its head went out), `reset`s the connection, so the peer sees an error, not
    /// a stream that merely ends early.
    Closing { graceful: bool, reset: bool },
    /// The close is submitted; the slot is freed when it completes.
    Closed,
}

/// The receive side: a multishot receive into the worker's buffer pool.
#[derive(Debug, Default)]
pub(crate) struct RecvSide {
    /// A multishot receive is armed.
    pub(crate) armed: bool,
    /// The receive ended for lack of buffers (ENOBUFS): waiting for buffers to come back.
    pub(crate) starved: bool,
    /// The peer's FIN arrived: nothing more to read.
    pub(crate) eof: bool,
    /// The handler paused reading ([`NetCmd::PauseReads`](super::NetCmd::PauseReads)).
    pub(crate) paused: bool,
}

/// Gather-send state at a stable heap address: the kernel reads `msg` and `iov` until the
/// send completes, while the connection slab may move.
pub(crate) struct SendState {
    pub(crate) iov: Vec<libc::iovec>,
    pub(crate) msg: libc::msghdr,
}

/// A file transfer by splice: file → pipe → socket, a pipe's worth at a time.
pub(crate) struct FileSend {
    pub(crate) file: Arc<OwnedFd>,
    pub(crate) offset: u64,
    /// Bytes not yet moved from the file into the pipe.
    pub(crate) remaining: u64,
    /// Bytes in the pipe, not yet in the socket.
    pub(crate) in_pipe: u64,
    pub(crate) pipe: super::SplicePipe,
}

/// Output queued behind a file transfer.
pub(crate) enum Queued {
    Bufs(IoBufChain),
    File(FileSend),
    /// `shutdown(SHUT_WR)` once everything before it is sent.
    Shutdown,
}

/// Where the write side stands with respect to a [`NetCmd::Shutdown`](super::NetCmd::Shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shut {
    /// Sending as usual.
    No,
    /// A shutdown was asked (queued behind the output before it): later output is dropped.
    Asked,
    /// The `shutdown(SHUT_WR)` is in flight.
    InFlight,
    /// The FIN is sent.
    Done,
}

/// The send side: output queued and in flight, and the accounting behind flow control.
pub(crate) struct SendSide {
    /// Views to send next, in order (the send in flight reads the front of it).
    pub(crate) out: IoBufChain,
    /// The iovecs and `msghdr` of a gather send, allocated on the first one.
    pub(crate) gather: Option<Box<SendState>>,
    /// The file transfer in progress (after `out` drained).
    pub(crate) file: Option<Box<FileSend>>,
    /// Output waiting behind `file`, in order.
    pub(crate) queue: VecDeque<Queued>,
    /// A send is in flight.
    pub(crate) sending: bool,
    /// The send in flight is a SEND_ZC.
    pub(crate) zc: bool,
    /// Views sent by SEND_ZC, oldest first, each held until the kernel's notification says it
    /// no longer reads them (one entry per notification due).
    pub(crate) zc_held: VecDeque<IoBufChain>,
    /// Splice operations in flight.
    pub(crate) splicing: u8,
    pub(crate) shut: Shut,
    /// Bytes queued or in flight, not yet taken by the kernel: buffers and file bytes.
    pub(crate) unsent: u64,
    /// Views queued or in flight: each may pin a whole pool buffer, however few bytes it has.
    pub(crate) views: u32,
    /// The endpoint's [`ListenConfig::output_limit`](super::ListenConfig::output_limit).
    pub(crate) limit: u64,
    /// Unsent output is over `limit` (until it is down to half).
    pub(crate) backlogged: bool,
    /// The endpoint's [`ListenConfig::backpressure`](super::ListenConfig::backpressure): no
    /// reads while backlogged.
    pub(crate) backpressure: bool,
    /// Listed in the driver's dirty list: output arrived during the current net batch.
    pub(crate) dirty: bool,
    /// When the send or splice in flight was submitted (for the send timeout).
    pub(crate) since: Instant,
}

impl SendSide {
    pub(crate) fn new(limit: u64, backpressure: bool, now: Instant) -> SendSide {
        SendSide {
            out: IoBufChain::new(),
            gather: None,
            file: None,
            queue: VecDeque::new(),
            sending: false,
            zc: false,
            zc_held: VecDeque::new(),
            splicing: 0,
            shut: Shut::No,
            unsent: 0,
            views: 0,
            limit,
            backlogged: false,
            backpressure,
            dirty: false,
            since: now,
        }
    }

    /// A send, splice or shutdown is in flight.
    pub(crate) fn busy(&self) -> bool {
        self.sending || self.splicing > 0 || matches!(self.shut, Shut::InFlight)
    }

    /// Output not yet handed to the kernel.
    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty() || self.file.is_some() || !self.queue.is_empty()
    }

    /// Drops all queued output (abort; nothing may be in flight).
    pub(crate) fn drop_output(&mut self) {
        self.out.clear();
        self.file = None;
        self.queue.clear();
        self.unsent = 0;
        self.views = 0;
    }

    /// Over the output limit: more unsent bytes than it, or more views than one per 4 KiB of it.
    pub(crate) fn over_limit(&self) -> bool {
        self.unsent > self.limit || u64::from(self.views) > self.limit / VIEW_CHARGE
    }

    /// Down to half the output limit, in bytes and in views.
    pub(crate) fn under_half(&self) -> bool {
        self.unsent <= self.limit / 2 && u64::from(self.views) <= self.limit / VIEW_CHARGE / 2
    }
}

/// One connection.
pub(crate) struct ConnState {
    /// The socket.
    pub(crate) target: Target,
    pub(crate) gen: u32,
    /// Where it came from: an index into the driver's endpoints.
    pub(crate) endpoint: usize,
    /// The replica of the endpoint's stage that gets this connection's events, chosen when
    /// it opens: all of them reach one replica, in order, whatever the stage's active set.
    pub(crate) replica: u16,
    pub(crate) life: Life,
    pub(crate) rx: RecvSide,
    pub(crate) tx: SendSide,
    /// When an operation on it last completed (for the idle timeout).
    pub(crate) last_active: Instant,
    /// Where the kernel writes the peer's address of an accepted connection (until `Opened`).
    pub(crate) name: Option<Box<[u8; std::mem::size_of::<libc::sockaddr_in6>()]>>,
    /// The TLS session of a TLS listener's or connector's connection.
    pub(crate) tls: Option<Box<super::driver::TlsConn>>,
}

impl ConnState {
    /// Closing without flushing.
    pub(crate) fn aborting(&self) -> bool {
        matches!(self.life, Life::Closing { graceful: false, .. })
    }

    /// Closing, or closed.
    pub(crate) fn closing(&self) -> bool {
        !matches!(self.life, Life::Open)
    }

    /// Whether the connection should have a receive armed: open for reading, not paused by the
    /// handler, not held back by its own backlog.
    pub(crate) fn wants_reads(&self) -> bool {
        !(self.closing() || self.rx.eof || self.rx.paused || self.tx.backlogged && self.tx.backpressure)
    }
}
