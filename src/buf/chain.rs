use smallvec::SmallVec;

use super::IoBuf;

/// An ordered list of [`IoBuf`] views sent as one gather write (`sendmsg` with an iovec each).
///
/// Up to four views are stored inline (a typical response: head, date line, tail, body), so
/// building and sending such a chain does not allocate; longer chains spill to the heap once and
/// keep that storage. The views (and the pool buffers behind them) stay alive until the
/// chain drops them, which the send path does only once the kernel is done with them.
///
/// The chain does not store its byte count (`len` adds the views' lengths): without it, a
/// network command carrying a chain stays within 128 bytes with its queue stamp, which the
/// compiler moves with a few vector stores instead of a `memcpy` call.
///
/// # Examples
///
/// ```
/// use ringstage::buf::{IoBuf, IoBufChain};
///
/// let body = IoBuf::from(vec![b'x'; 1000]);
/// let mut reply = IoBufChain::new();
/// reply.push(IoBuf::from_static(b"$1000\r\n"));
/// reply.push(body.clone()); // shared, not copied
/// reply.push(IoBuf::from_static(b"\r\n"));
/// assert_eq!(reply.len(), 1009);
/// assert_eq!(reply.segments(), 3);
/// reply.advance(7); // the kernel took the first 7 bytes
/// assert_eq!(reply.segments(), 2);
/// ```
#[derive(Default, Debug)]
pub struct IoBufChain {
    /// Never holds an empty view.
    bufs: SmallVec<[IoBuf; 4]>,
}

impl IoBufChain {
    /// An empty chain.
    pub fn new() -> IoBufChain {
        IoBufChain::default()
    }

    /// Total bytes: the sum over the views, O(views).
    pub fn len(&self) -> usize {
        self.bufs.iter().map(IoBuf::len).sum()
    }

    /// Whether the chain holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Number of views.
    pub fn segments(&self) -> usize {
        self.bufs.len()
    }

    /// Appends a view (empty views are skipped).
    pub fn push(&mut self, buf: IoBuf) {
        if !buf.is_empty() {
            self.bufs.push(buf);
        }
    }

    /// Moves all views of `other` to the end of `self`. Appending to an empty chain swaps the
    /// two (no per-view work); one view is a push.
    pub fn append(&mut self, other: &mut IoBufChain) {
        if self.bufs.is_empty() {
            std::mem::swap(&mut self.bufs, &mut other.bufs);
        } else if other.bufs.len() == 1 {
            self.bufs.extend(other.bufs.pop());
        } else {
            self.bufs.extend(other.bufs.drain(..));
        }
    }

    /// The views, in order.
    pub fn iter(&self) -> impl Iterator<Item = &IoBuf> {
        self.bufs.iter()
    }

    /// Fills `out` (cleared first) with one `iovec` per view, at most `max`. Returns the bytes
    /// covered. The iovecs point into the views: keep the chain unchanged while they are in use.
    pub fn fill_iovecs(&self, out: &mut Vec<libc::iovec>, max: usize) -> usize {
        out.clear();
        let mut bytes = 0;
        for b in self.bufs.iter().take(max) {
            out.push(libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() });
            bytes += b.len();
        }
        bytes
    }

    /// Drops the first `n` bytes (after a partial send), releasing fully sent views.
    ///
    /// # Panics
    /// If `n > len`.
    pub fn advance(&mut self, n: usize) {
        let (whole, rest) = self.reach(n, "advance");
        if whole == self.bufs.len() {
            // All sent (the common case): dropping the views in place is cheaper than a drain.
            self.bufs.clear();
            return;
        }
        self.bufs.drain(..whole);
        if rest > 0 {
            self.bufs[0].advance(rest);
        }
    }

    /// How many views lie wholly inside the first `n` bytes, and how far `n` reaches into the
    /// next one. Panics (naming `op`) if the chain is shorter than `n`, before anything changes.
    fn reach(&self, n: usize, op: &str) -> (usize, usize) {
        let (mut whole, mut rest) = (0, n);
        while whole < self.bufs.len() && self.bufs[whole].len() <= rest {
            rest -= self.bufs[whole].len();
            whole += 1;
        }
        assert!(rest == 0 || whole < self.bufs.len(), "{op} {n} past chain end {}", n - rest);
        (whole, rest)
    }

    /// Splits off the first `n` bytes as a chain of their own (views, no copy); `self` keeps
    /// the rest. Allocates only when more than four views go.
    ///
    /// # Panics
    /// If `n > len`.
    pub fn split_to(&mut self, n: usize) -> IoBufChain {
        let (whole, rest) = self.reach(n, "split_to");
        let mut bufs: SmallVec<[IoBuf; 4]> = self.bufs.drain(..whole).collect();
        if rest > 0 {
            bufs.push(self.bufs[0].split_to(rest));
        }
        IoBufChain { bufs }
    }

    /// Makes runs of small views into single views, so a gather send carries few iovecs:
    /// neighbours in one block are joined ([`IoBuf::join`], free), and runs of two or more
    /// views shorter than `below` bytes are copied into `w`, one view per run of up to
    /// `max_run` bytes. Larger views stay as they are. Returns how many views there are fewer.
    ///
    /// A gather of many tiny views costs the kernel more than one copy of their bytes: each
    /// iovec is imported and copied on its own. Copying also releases the small views at once,
    /// with the pool buffers behind them.
    ///
    /// Cost: O(views), in place (no allocation but `w`'s blocks); the copied bytes once.
    pub fn coalesce(&mut self, w: &mut super::BufWriter, below: usize, max_run: usize) -> usize {
        let n = self.bufs.len();
        if n < 2 {
            return 0;
        }
        let take = |b: &mut IoBuf| std::mem::replace(b, IoBuf::from_static(b""));
        // Views are read at `i` and written back at `j <= i`. A lone small view waits in
        // `first` (it starts a run only if another follows); a run being copied is `w`'s
        // pending piece.
        let (mut j, mut first, mut copying) = (0, None::<IoBuf>, false);
        for i in 0..n {
            let b = take(&mut self.bufs[i]);
            if !copying {
                let joined = match first.as_mut() {
                    Some(f) => f.join(&b),
                    None => j > 0 && self.bufs[j - 1].join(&b),
                };
                if joined {
                    continue;
                }
            }
            let small = b.len() < below;
            if copying {
                if small && w.pending() + b.len() <= max_run {
                    w.write(&b);
                    continue;
                }
                self.bufs[j] = w.take();
                j += 1;
                copying = false;
            }
            if small {
                match first.take() {
                    Some(f) if f.len() + b.len() <= max_run => {
                        w.write(&f);
                        w.write(&b);
                        copying = true;
                    }
                    Some(f) => {
                        self.bufs[j] = f;
                        j += 1;
                        first = Some(b);
                    }
                    None => first = Some(b),
                }
                continue;
            }
            if let Some(f) = first.take() {
                self.bufs[j] = f;
                j += 1;
            }
            self.bufs[j] = b;
            j += 1;
        }
        if copying {
            self.bufs[j] = w.take();
            j += 1;
        }
        if let Some(f) = first {
            self.bufs[j] = f;
            j += 1;
        }
        self.bufs.truncate(j);
        n - j
    }

    /// Drops every view.
    pub fn clear(&mut self) {
        self.bufs.clear();
    }

    /// Copies the bytes out into one vector (for tests and slow paths; allocates).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for b in &self.bufs {
            v.extend_from_slice(b);
        }
        v
    }
}

impl From<IoBuf> for IoBufChain {
    fn from(b: IoBuf) -> IoBufChain {
        let mut c = IoBufChain::new();
        c.push(b);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_and_partial_advance() {
        let mut c = IoBufChain::new();
        c.push(IoBuf::from_static(b"HTTP/1.1 200 OK\r\n"));
        c.push(IoBuf::from_static(b""));
        c.push(IoBuf::from(b"body".to_vec()));
        assert_eq!((c.len(), c.segments()), (21, 2));
        let mut iov = Vec::new();
        assert_eq!(c.fill_iovecs(&mut iov, 8), 21);
        assert_eq!(iov.len(), 2);
        assert_eq!(iov[1].iov_len, 4);
        c.advance(15);
        assert_eq!(c.to_vec(), b"\r\nbody");
        c.advance(3);
        assert_eq!((c.to_vec(), c.segments()), (b"ody".to_vec(), 1));
        let mut d = IoBufChain::from(IoBuf::from_static(b"!"));
        c.append(&mut d);
        assert!(d.is_empty());
        assert_eq!(c.to_vec(), b"ody!");
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn split_to_takes_a_prefix_as_views() {
        let base = IoBuf::from(b"0123456789".to_vec());
        let mut c = IoBufChain::new();
        c.push(base.slice(0..4));
        c.push(IoBuf::from_static(b"ab"));
        c.push(base.slice(4..10));
        let whole = c.split_to(0);
        assert!(whole.is_empty() && c.len() == 12);
        let front = c.split_to(7);
        assert_eq!((front.to_vec(), front.segments()), (b"0123ab4".to_vec(), 3));
        assert_eq!((c.to_vec(), c.len(), c.segments()), (b"56789".to_vec(), 5, 1));
        assert_eq!(front.iter().nth(2).unwrap().as_ptr(), base[4..].as_ptr(), "a view, not a copy");
        let rest = c.split_to(5);
        assert_eq!(rest.to_vec(), b"56789");
        assert!(c.is_empty() && c.segments() == 0);
        let mut d = IoBufChain::from(IoBuf::from_static(b"xy"));
        assert_eq!(d.split_to(2).to_vec(), b"xy");
        assert!(d.is_empty());
    }

    #[test]
    fn append_moves_every_view_in_order_and_empties_the_other() {
        let chain = |parts: &[&'static [u8]]| {
            let mut c = IoBufChain::new();
            parts.iter().for_each(|p| c.push(IoBuf::from_static(p)));
            c
        };
        // Into an empty chain, one view, several views (spilling past the inline four).
        let mut c = IoBufChain::new();
        let mut d = chain(&[b"ab", b"c"]);
        c.append(&mut d);
        assert!(d.is_empty() && d.segments() == 0);
        c.append(&mut chain(&[b"d"]));
        let mut e = chain(&[b"ef", b"g", b"h"]);
        c.append(&mut e);
        assert!(e.is_empty());
        c.append(&mut IoBufChain::new());
        assert_eq!((c.to_vec(), c.len(), c.segments()), (b"abcdefgh".to_vec(), 8, 6));
        // The emptied chain is still usable.
        d.push(IoBuf::from_static(b"z"));
        assert_eq!(d.to_vec(), b"z");
    }

    #[test]
    fn coalescing_copies_runs_of_small_views_and_joins_neighbours() {
        let mut w = super::super::BufWriter::new(256);
        let big = IoBuf::from(vec![b'B'; 100]);
        let block = IoBuf::from(b"abcdef".to_vec());
        let mut c = IoBufChain::new();
        for p in [&b"h1"[..], b"h2", b"h3"] {
            c.push(IoBuf::from(p.to_vec())); // a run of three small views: one copy
        }
        c.push(big.clone()); // large: kept
        c.push(block.slice(0..2));
        c.push(block.slice(2..4)); // adjacent in one block: joined
        c.push(big.slice(0..60)); // large
        c.push(IoBuf::from(b"lone".to_vec())); // a small view alone: kept
        c.push(big.clone());
        let want = c.to_vec();
        assert_eq!(c.segments(), 9);
        assert_eq!(c.coalesce(&mut w, 50, 1024), 3);
        assert_eq!(c.to_vec(), want, "the same bytes, in order");
        let lens: Vec<usize> = c.iter().map(IoBuf::len).collect();
        assert_eq!(lens, [6, 100, 4, 60, 4, 100]);
        assert_eq!(c.iter().nth(1).unwrap().as_ptr(), big.as_ptr(), "large views are not copied");
        assert_eq!(c.iter().nth(2).unwrap().as_ptr(), block.as_ptr(), "joined, not copied");
        // Runs stop at `max_run` bytes; nothing to do for fewer than two views.
        let mut d = IoBufChain::new();
        for i in 0..10u8 {
            d.push(IoBuf::from(vec![i; 10]));
        }
        let want = d.to_vec();
        assert_eq!(d.coalesce(&mut w, 50, 30), 6, "three pieces of 30 bytes and one of 10");
        assert_eq!((d.to_vec(), d.segments()), (want, 4));
        let mut e = IoBufChain::from(IoBuf::from(b"x".to_vec()));
        assert_eq!(e.coalesce(&mut w, 50, 30), 0);
    }

    #[test]
    #[should_panic(expected = "past chain end")]
    fn advance_past_end_panics() {
        IoBufChain::from(IoBuf::from_static(b"ab")).advance(3);
    }

    #[test]
    #[should_panic(expected = "split_to 4 past chain end 3")]
    fn split_past_end_panics() {
        let mut c = IoBufChain::from(IoBuf::from_static(b"ab"));
        c.push(IoBuf::from_static(b"c"));
        c.split_to(4);
    }
}
