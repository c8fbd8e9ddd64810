//! [`BufWriter`]: small output copied into shared blocks, handed out as [`IoBuf`] views.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use super::iobuf::{alloc_inline, Header};
use super::IoBuf;

/// Writes small pieces of output (a reply line, a short value copied out of storage, a
/// received command kept for later) into blocks of `block_size` bytes, and hands each piece
/// out as an [`IoBuf`] view of its block: one allocation per block, not per piece.
///
/// ```text
///  block (one allocation)      taken views              the piece being written
///  ┌────────┬──────────┬──────┬──────────────┬──────────────────────────────────┐
///  │ header │ piece 1  │ pc 2 │ pending ...  │ free                             │
///  └────────┴──────────┴──────┴──────────────┴──────────────────────────────────┘
///              ▲ IoBuf    ▲ IoBuf   ▲ start      ▲ filled                       cap
/// ```
///
/// Pieces taken one after another are adjacent in memory, so a send that gathers them (for
/// one connection) needs a single iovec for all of them. The writer keeps one reference to
/// its block; the block is freed when the writer has moved on and the last view of it drops,
/// on any thread.
///
/// A piece that does not fit in what is left of the block moves to a new block (its bytes
/// written so far are copied once); a piece larger than `block_size` gets a block of its own.
/// Blocks are recycled: the writer keeps the block it last moved away from, and starts over in
/// it once no view of it is left (the sends that read it completed), so a writer whose pieces
/// are short-lived allocates nothing after its first two blocks.
///
/// Costs: [`write`](BufWriter::write) is a `memcpy`; [`take`](BufWriter::take) one atomic
/// increment; moving to another block one atomic load per block checked, and an allocation of
/// `block_size` bytes only when neither is free. No lock.
///
/// # Examples
///
/// ```
/// use ringstage::buf::BufWriter;
///
/// let mut w = BufWriter::new(4096);
/// w.write(b"$5\r\n");
/// w.write(b"hello");
/// w.write(b"\r\n");
/// let reply = w.take(); // one view of the three writes
/// assert_eq!(&reply[..], b"$5\r\nhello\r\n");
/// let next = w.copy(b"+OK\r\n");
/// assert_eq!(next.as_ptr(), reply.as_ptr().wrapping_add(reply.len()), "adjacent to the last piece");
/// ```
pub struct BufWriter {
    /// The block being filled; this writer holds one reference to it.
    block: Option<NonNull<Header>>,
    /// The block filled before, kept (with a reference) to be reused once its views are gone.
    spare: Option<NonNull<Header>>,
    /// Bytes of the block written so far (taken, or in the pending piece).
    filled: usize,
    /// Where the pending piece starts.
    start: usize,
    block_size: usize,
}

// SAFETY: the writer owns one counted reference to its block (atomic count, as `IoBuf`'s) and
// writes only bytes beyond every view it handed out; moving it to another thread moves that.
unsafe impl Send for BufWriter {}

impl BufWriter {
    /// A writer of blocks of `block_size` bytes (at least 64); allocates nothing until the
    /// first write.
    pub fn new(block_size: usize) -> BufWriter {
        BufWriter { block: None, spare: None, filled: 0, start: 0, block_size: block_size.max(64) }
    }

    fn header(&self) -> Option<&Header> {
        // SAFETY: the writer's own reference keeps its block's header live.
        self.block.map(|h| unsafe { h.as_ref() })
    }

    /// Bytes written since the last [`take`](BufWriter::take).
    pub fn pending(&self) -> usize {
        self.filled - self.start
    }

    /// Appends `bytes` to the pending piece. Hot path: a `memcpy`, no allocation while the
    /// block has room.
    pub fn write(&mut self, bytes: &[u8]) {
        let room = self.header().map_or(0, |h| h.cap - self.filled);
        if room < bytes.len() {
            self.grow(bytes.len());
        }
        let h = self.header().expect("a block with room");
        // SAFETY: `filled + len <= cap`, so the destination lies inside the block, past every
        // byte a view covers (views end at `start <= filled`): nobody else reads or writes it.
        // The source is a distinct borrowed slice.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), h.base.add(self.filled), bytes.len()) };
        self.filled += bytes.len();
    }

    /// Moves the pending piece to the start of a block with room for it and `more` bytes:
    /// this block again if no view of it is left, else the spare one if none of its views is,
    /// else a new block (and this one becomes the spare).
    #[cold]
    fn grow(&mut self, more: usize) {
        let pending = self.pending();
        let need = pending + more;
        // Only the writer's own reference left: nobody reads the block any more. (Acquire:
        // every view's release of it happens before the bytes are written again.)
        let free = |h: Option<NonNull<Header>>, need: usize| {
            h.is_some_and(|h| {
                // SAFETY: the writer holds a reference to its blocks: their headers are live.
                let h = unsafe { h.as_ref() };
                h.refs.load(Ordering::Acquire) == 1 && h.cap >= need
            })
        };
        if free(self.block, need) {
            let h = self.header().expect("checked");
            // SAFETY: the pending bytes lie inside the block; no view covers any of it any more,
            // so moving them to its start (the ranges may overlap) overwrites nothing read.
            unsafe { std::ptr::copy(h.base.add(self.start), h.base, pending) };
        } else {
            let next = if free(self.spare, need) {
                self.spare.take().expect("checked")
            } else {
                alloc_inline(self.block_size.max(need))
            };
            // SAFETY: `next` is live (the writer's reference) and no view of it is left.
            let next_base = unsafe { next.as_ref() }.base;
            if let Some(h) = self.header() {
                // SAFETY: the pending bytes `start..filled` were written by this writer and lie
                // in the current block (live: we hold a reference); `next` has room for them
                // and is another block.
                unsafe { std::ptr::copy_nonoverlapping(h.base.add(self.start), next_base, pending) };
            }
            // The current block becomes the spare (the old spare, still read, is given up).
            release(self.spare.take());
            self.spare = self.block.replace(next);
        }
        self.start = 0;
        self.filled = pending;
    }

    /// Ends the pending piece and returns it as a view (empty, with no block, if nothing was
    /// written). O(1): one atomic increment.
    pub fn take(&mut self) -> IoBuf {
        let Some(h) = self.header().filter(|_| self.filled > self.start) else { return IoBuf::from_static(b"") };
        let old = h.refs.fetch_add(1, Ordering::Relaxed);
        assert!(old < usize::MAX / 2, "IoBuf refcount overflow");
        // SAFETY: `start..filled` are written bytes of the live block, which the writer never
        // writes again; the reference just counted is the new view's.
        let v = unsafe { IoBuf::from_header(self.block.expect("checked"), h.base.add(self.start), self.pending()) };
        self.start = self.filled;
        v
    }

    /// [`write`](BufWriter::write) then [`take`](BufWriter::take): `bytes` as a view of a
    /// shared block. What to use to keep a few bytes of a received buffer without pinning the
    /// pool buffer (see [`IoBuf::is_pooled`]).
    pub fn copy(&mut self, bytes: &[u8]) -> IoBuf {
        self.write(bytes);
        self.take()
    }

    /// Drops the pending piece's bytes (they are overwritten by the next write).
    pub fn discard(&mut self) {
        self.filled = self.start;
    }
}

/// Gives up the writer's reference to block `h` (freeing it if no view is left).
fn release(h: Option<NonNull<Header>>) {
    if let Some(h) = h {
        // SAFETY: the writer's reference, handed to a view of no bytes, whose drop gives it up
        // as any view's would (freeing the block if it was the last).
        drop(unsafe { IoBuf::from_header(h, h.as_ref().base, 0) });
    }
}

impl Default for BufWriter {
    /// Blocks of 16 KiB.
    fn default() -> BufWriter {
        BufWriter::new(16 << 10)
    }
}

impl Drop for BufWriter {
    fn drop(&mut self) {
        release(self.block.take());
        release(self.spare.take());
    }
}

impl std::fmt::Debug for BufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufWriter").field("block_size", &self.block_size).field("pending", &self.pending()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_share_a_block_and_outlive_the_writer() {
        let mut w = BufWriter::new(64);
        let a = w.copy(b"first ");
        w.write(b"sec");
        w.write(b"ond");
        let b = w.take();
        assert_eq!((&a[..], &b[..]), (&b"first "[..], &b"second"[..]));
        assert_eq!(b.as_ptr(), a.as_ptr().wrapping_add(6), "adjacent");
        assert!(w.take().is_empty(), "nothing pending");
        drop(w);
        assert_eq!(&a[..], b"first ", "views keep the block");
        let t = std::thread::spawn(move || b.to_vec());
        assert_eq!(t.join().unwrap(), b"second");
    }

    #[test]
    fn a_piece_that_does_not_fit_moves_whole_to_a_new_block() {
        let mut w = BufWriter::new(64);
        let a = w.copy(&[1u8; 40]);
        w.write(&[2u8; 20]);
        w.write(&[3u8; 20]); // 80 bytes would not fit: the pending 20 move with it
        let b = w.take();
        assert_eq!(&b[..20], &[2u8; 20]);
        assert_eq!(&b[20..], &[3u8; 20]);
        assert_ne!(b.as_ptr(), a.as_ptr().wrapping_add(40), "a new block");
        let big = w.copy(&[7u8; 1000]);
        assert_eq!(big.len(), 1000);
        assert!(big.iter().all(|&x| x == 7));
        w.write(b"dropped");
        w.discard();
        assert_eq!(w.pending(), 0);
        assert_eq!(&w.copy(b"kept")[..], b"kept");
        assert_eq!(&a[..], &[1u8; 40]);
    }

    #[test]
    fn blocks_whose_views_are_gone_are_reused() {
        let mut w = BufWriter::new(64);
        let first = w.copy(&[1; 40]).as_ptr(); // dropped at once: the block is free again
        let b = w.copy(&[2; 40]); // no room left: the block is reused from its start
        assert_eq!(b.as_ptr(), first, "the same block, from the start");
        let c = w.copy(&[3; 40]); // `b` still reads it: a new block, and the old one is the spare
        assert_ne!(c.as_ptr(), first);
        drop(b);
        let d = w.copy(&[4; 40]); // `c` reads the current one; the spare is free: reused
        assert_eq!(d.as_ptr(), first);
        assert_eq!((&c[..], &d[..]), (&[3u8; 40][..], &[4u8; 40][..]));
    }

    #[test]
    fn a_writer_that_hands_out_nothing_frees_its_blocks() {
        let mut w = BufWriter::new(64);
        for i in 0..=100u8 {
            w.write(&[i; 50]); // moves to a new block every other write; Miri checks the frees
            if i % 3 == 0 {
                w.discard();
            }
        }
        let last = w.take();
        assert!(!last.is_empty());
    }
}
