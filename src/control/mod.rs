//! Controllers: stages that measure themselves and adapt.
//!
//! - [`batching`]: the batch size of each replica, from its measured output rate.
//! - [`cores`]: how many replicas (cores) of a stage take new events, from its backlog.
//! - [`overload`]: SEDA's adaptive admission control — a token bucket whose rate follows the
//!   stage's 90th-percentile response time against a target (multiplicative decrease above it,
//!   additive increase well below it), with priority classes so lower classes are shed first.
//! - [`gate`]: the token bucket behind it, shared by every producer of a replica on any worker.

pub mod batching;
pub mod cores;
pub mod gate;
pub mod overload;

pub use batching::{BatchConfig, BatchController};
pub use cores::{CoreConfig, CoreController};
pub use gate::Gate;
pub use overload::{OverloadConfig, OverloadController};
