//! Controllers: stages that measure themselves and adapt.
//!
//! - [`overload`]: SEDA's adaptive admission control — a token bucket whose rate follows the
//!   stage's 90th-percentile response time against a target (multiplicative decrease above it,
//!   additive increase well below it), with priority classes so lower classes are shed first.

pub mod overload;

pub use overload::{OverloadConfig, OverloadController};
