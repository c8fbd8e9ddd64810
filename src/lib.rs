//! ringstage: the Staged Event-Driven Architecture (SEDA) on io_uring.
//!
//! A server is a graph of **stages**. Each stage is a [`Handler`](stage::Handler) plus a bounded
//! inbound queue; its replicas run on **pinned workers**, one io_uring per worker. Completions
//! become events for the stage that owns the operation; stages on the same worker hand events
//! over in plain memory, stages on different workers through SPSC rings with doorbell wakeups
//! for sleeping workers. Received bytes land in a pool buffer once and travel as
//! [`IoBuf`](buf::IoBuf) views to handlers, other stages and the send path.
//!
//! See the README for a tour and `examples/echo.rs` for a complete server.

#![warn(missing_docs)]

pub mod buf;
pub mod control;
mod error;
pub mod fs;
pub mod metrics;
pub mod net;
#[cfg(feature = "internals")]
pub mod queue;
#[cfg(not(feature = "internals"))]
pub(crate) mod queue;
mod reactor;
pub mod runtime;
pub mod stage;

pub use error::{Error, Result};

/// The names most servers need.
pub mod prelude {
    pub use crate::buf::{IoBuf, IoBufChain};
    pub use crate::metrics::{AppCounter, CounterId};
    pub use crate::net::{
        Conn, ConnAddrs, ConnEvent, ConnMap, Decode, Decoder, Flow, Framer, ListenConfig, ListenerId, NetCmd, NetEvent,
        Udp, UdpConfig, UdpId,
    };
    pub use crate::runtime::{Builder, Handle, Runtime, Setup};
    pub use crate::stage::{
        handler_fn, Context, Handler, Injector, Outbox, PanicPolicy, Sink, StageConfig, StageId, Timer, TimerKey, Waker,
    };
    pub use crate::Error;
}

/// Compiles the README's examples as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
