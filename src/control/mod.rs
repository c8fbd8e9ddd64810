//! Controllers: stages that measure themselves and adapt.
//!
//! - [`BatchController`]: the batch size of each replica, from its measured output rate.
//! - [`CoreController`]: how many replicas (cores) of a stage take new events, from its backlog.
//! - [`OverloadController`]: SEDA's adaptive admission control — a token bucket whose rate
//!   follows the stage's 90th-percentile response time against a target (multiplicative
//!   decrease above it, additive increase well below it), with priority classes so lower
//!   classes are shed first.
//! - `gate`: the token bucket behind it, shared by every producer of a replica on any worker
//!   (public as `Gate` with the `internals` feature, for the benches).

mod batching;
mod cores;
mod gate;
mod overload;

pub use batching::{BatchConfig, BatchController};
pub use cores::{CoreConfig, CoreController};
#[cfg(feature = "internals")]
pub use gate::Gate;
#[cfg(not(feature = "internals"))]
pub(crate) use gate::Gate;
pub use overload::{OverloadConfig, OverloadController};
