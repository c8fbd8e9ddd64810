//! Zero-copy buffers.
//!
//! - [`IoBuf`]: a refcounted, immutable view into a block of bytes: a receive buffer from a
//!   receive pool, a heap block, or static bytes. `clone`, `slice`, `split_to` and `split_off` make
//!   new views of the same block in O(1) without copying; the block is released when the last
//!   view drops.
//! - [`IoBufChain`]: an ordered list of views sent with one gather write.
//! - [`BufWriter`]: small output (reply lines, short values) copied into shared blocks and
//!   handed out as views: one allocation per block, not per piece.
//! - `BufPool` (public with the `internals` feature): one worker's provided buffer ring. A
//!   multishot recv fills a pool buffer once; the bytes then travel to handlers, other stages
//!   and the send path as `IoBuf` views. The last drop hands the buffer back to its home ring,
//!   directly on the home worker or over a lock-free return queue from any other thread.
//!
//! Costs: a clone is one atomic increment; a drop one atomic decrement, except the last view's
//! drop, which sees the count at 1 and needs no read-modify-write (as in folly's IOBuf). For the
//! last view of a pool buffer, add one ring slot write and a release store on the home thread
//! (no atomic read-modify-write: a buffer out holds no count on its pool), or one queue push
//! and one atomic subtraction on other threads. A received buffer that is read and dropped
//! where it arrived costs no locked instruction at all (`benches/iobuf.rs`: take, share once
//! and release in 24 ns, from 35 ns with a swap, a pool count and two decrements).
//!
//! Views never allocate; only making a block does: `IoBuf::from(Vec)` takes the vector's
//! buffer and allocates a header beside it, `copy_from_slice` and `concat` copy into one
//! allocation holding both.

mod chain;
mod iobuf;
mod pool;
mod writer;

pub use chain::IoBufChain;
pub use iobuf::IoBuf;
#[cfg(not(feature = "internals"))]
pub(crate) use pool::BufPool;
#[cfg(feature = "internals")]
pub use pool::{BufPool, PoolStats};
pub use writer::BufWriter;
