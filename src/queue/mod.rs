//! Bounded lock-free ring queues. Public with the `internals` feature (for the benches); the
//! runtime's stages and sinks are the way to use them.
//!
//! - [`spsc`]: one producer, one consumer; the edge between two pinned workers. Each side keeps
//!   its own index in a private field and a cached copy of the other side's, so the shared
//!   atomics are touched only when the cache says the ring is full (producer) or empty (consumer).
//!   Batch operations publish once per batch.
//! - [`mpsc`]: many producers, one consumer (Vyukov's bounded sequence queue); fan-in from
//!   threads outside the runtime and buffer returns to a pool's home worker.
//!
//! Refusal returns the value: `push` gives `Err(value)` when the ring is full. Nothing blocks,
//! nothing allocates after construction.

// Without `internals` the runtime uses part of the queues' API; the rest is what the benches
// and the unit and Miri tests exercise.
#![cfg_attr(not(feature = "internals"), allow(dead_code))]

pub mod mpsc;
pub mod spsc;
