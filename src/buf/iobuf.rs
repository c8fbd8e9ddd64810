use std::fmt;
use std::ops::{Bound, Deref, RangeBounds};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicUsize, Ordering};

use super::pool::PoolShared;

/// Shared header of a block: refcount, extent and owner.
pub(crate) struct Header {
    pub(crate) refs: AtomicUsize,
    pub(crate) base: *mut u8,
    pub(crate) cap: usize,
    pub(crate) owner: Owner,
}

pub(crate) enum Owner {
    /// `base..base+cap` is a `Box<[u8]>`; the header itself is a `Box<Header>`.
    Heap,
    /// One allocation of [`inline_layout`]`(cap)`: the header, then the `cap` bytes.
    Inline,
    /// Buffer `bid` of a pool; the header lives in the pool.
    Pool { pool: *const PoolShared, bid: u16 },
}

/// A refcounted, immutable view of bytes. See the [module docs](super) for costs.
///
/// ```
/// use ringstage::buf::IoBuf;
/// let mut b = IoBuf::from(b"hello world".to_vec());
/// let hello = b.split_to(5);      // no copy: both views share one block
/// assert_eq!(&hello[..], b"hello");
/// assert_eq!(&b[..], b" world");
/// ```
pub struct IoBuf {
    /// `None` for static bytes.
    hdr: Option<NonNull<Header>>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the refcount is atomic and the bytes are immutable while shared (mutation needs a
// unique view); releasing a pool buffer from any thread is supported by `PoolShared::release`.
unsafe impl Send for IoBuf {}
// SAFETY: `&IoBuf` only reads the bytes.
unsafe impl Sync for IoBuf {}

impl IoBuf {
    /// A view of static bytes; never allocates or counts references.
    pub const fn from_static(bytes: &'static [u8]) -> IoBuf {
        IoBuf { hdr: None, ptr: bytes.as_ptr(), len: bytes.len() }
    }

    /// Copies `bytes` into a new heap block: one allocation holding the header and the bytes.
    pub fn copy_from_slice(bytes: &[u8]) -> IoBuf {
        IoBuf::concat(&[bytes])
    }

    /// Copies `parts`, one after the other, into a new heap block: one allocation holding the
    /// header and the bytes (e.g. a protocol frame: a length line, the payload, a trailer).
    ///
    /// # Panics
    /// If the total length overflows `isize`.
    pub fn concat(parts: &[&[u8]]) -> IoBuf {
        let len = parts.iter().try_fold(0usize, |n, p| n.checked_add(p.len())).expect("IoBuf::concat length overflow");
        let hdr = alloc_inline(len);
        // SAFETY: the header was just written and is owned here.
        let base = unsafe { hdr.as_ref() }.base;
        let mut at = base;
        for p in parts {
            // SAFETY: the parts add up to `len`, the room after the header; they cannot overlap
            // a block allocated just now.
            unsafe {
                std::ptr::copy_nonoverlapping(p.as_ptr(), at, p.len());
                at = at.add(p.len());
            }
        }
        IoBuf { hdr: Some(hdr), ptr: base, len }
    }

    /// Builds a view over a block whose header already counts this view.
    ///
    /// # Safety
    /// `hdr` must be live with `refs >= 1` owned by the new view, and `ptr..ptr+len` must lie
    /// inside `hdr.base..hdr.base+hdr.cap`.
    pub(crate) unsafe fn from_header(hdr: NonNull<Header>, ptr: *const u8, len: usize) -> IoBuf {
        IoBuf { hdr: Some(hdr), ptr, len }
    }

    /// Bytes in this view.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn header(&self) -> Option<&Header> {
        // SAFETY: a view holds one reference, so its header is live for `&self`.
        self.hdr.map(|h| unsafe { h.as_ref() })
    }

    /// Whether this is the only view of its block (static bytes never are).
    pub fn is_unique(&self) -> bool {
        self.header().is_some_and(|h| h.refs.load(Ordering::Acquire) == 1)
    }

    /// Whether the bytes live in a pool buffer (received data).
    pub fn is_pooled(&self) -> bool {
        self.header().is_some_and(|h| matches!(h.owner, Owner::Pool { .. }))
    }

    /// A view to keep: the same view when its bytes are not in a receive pool, else a copy of
    /// them into a new heap block, so the pool buffer can go back to the kernel when the
    /// received view drops.
    ///
    /// A received view pins its whole pool buffer (often 4-16 KiB for a few bytes of it), and a
    /// worker has a fixed number of them: a handler that stores received views (a cache's
    /// values, a session's name) runs its worker out of receive buffers. Store
    /// `data.to_unpooled()` instead. Cost: one allocation and a copy of `len` bytes when
    /// pooled; one reference count increment otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringstage::buf::IoBuf;
    ///
    /// let static_view = IoBuf::from_static(b"kept as is");
    /// let kept = static_view.to_unpooled();
    /// assert!(!kept.is_pooled());
    /// assert_eq!(&kept[..], b"kept as is");
    /// ```
    pub fn to_unpooled(&self) -> IoBuf {
        if self.is_pooled() {
            IoBuf::copy_from_slice(self)
        } else {
            self.clone()
        }
    }

    /// Free bytes in the block before this view.
    pub fn headroom(&self) -> usize {
        self.header().map_or(0, |h| self.ptr as usize - h.base as usize)
    }

    /// Mutable access to the bytes when this is the only view of the block.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if !self.is_unique() {
            return None;
        }
        // SAFETY: unique view of a writable (heap or pool) block: nobody else can read it.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u8, self.len) })
    }

    /// Grows the view `n` bytes into its headroom (e.g. to put a header in front of received
    /// bytes without copying them) and returns the new front bytes to fill. `None` unless the
    /// view is unique and has `n` bytes of headroom.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if !self.is_unique() || self.headroom() < n {
            return None;
        }
        // SAFETY: `n <= headroom`, so the new start is inside the block.
        self.ptr = unsafe { self.ptr.sub(n) };
        self.len += n;
        // SAFETY: unique view; the first `n` bytes lie inside the block.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u8, n) })
    }

    /// A new view of `range` of this one. O(1), no copy: one reference count increment.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringstage::buf::IoBuf;
    ///
    /// let line = IoBuf::from(b"GET /index.html HTTP/1.1".to_vec());
    /// let target = line.slice(4..15);
    /// assert_eq!(&target[..], b"/index.html");
    /// ```
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> IoBuf {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e + 1,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len,
        };
        assert!(start <= end && end <= self.len, "slice {start}..{end} out of bounds of {}", self.len);
        let mut v = self.clone();
        // SAFETY: `start <= len`, so the new pointer stays inside the view.
        v.ptr = unsafe { v.ptr.add(start) };
        v.len = end - start;
        v
    }

    /// Splits off and returns the first `at` bytes; `self` keeps the rest. O(1), one reference
    /// count increment.
    ///
    /// # Examples
    ///
    /// Framing: take whole frames off the front of received bytes, keep the partial rest.
    ///
    /// ```
    /// use ringstage::buf::IoBuf;
    ///
    /// let mut input = IoBuf::from(b"ping\npong\npa".to_vec());
    /// let mut frames = Vec::new();
    /// while let Some(end) = input.iter().position(|&b| b == b'\n') {
    ///     frames.push(input.split_to(end + 1));
    /// }
    /// assert_eq!(frames.len(), 2);
    /// assert_eq!(&input[..], b"pa"); // waits for the rest of its frame
    /// ```
    ///
    /// # Panics
    /// If `at > len`.
    pub fn split_to(&mut self, at: usize) -> IoBuf {
        let front = self.slice(..at);
        self.advance(at);
        front
    }

    /// Splits off and returns the bytes from `at`; `self` keeps the first `at`. O(1).
    ///
    /// # Panics
    /// If `at > len`.
    pub fn split_off(&mut self, at: usize) -> IoBuf {
        let back = self.slice(at..);
        self.len = at;
        back
    }

    /// Drops the first `n` bytes from the view.
    ///
    /// # Panics
    /// If `n > len`.
    #[inline]
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len, "advance {n} past end {}", self.len);
        // SAFETY: `n <= len`, so the pointer stays inside the view.
        self.ptr = unsafe { self.ptr.add(n) };
        self.len -= n;
    }

    /// Extends this view over `next` when `next` starts where this view ends in the same
    /// block (pieces a [`BufWriter`](super::BufWriter) handed out one after another, parts of
    /// one received buffer): one view instead of two, no copy. Returns whether it did.
    /// O(1), no atomic operation.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringstage::buf::IoBuf;
    ///
    /// let mut b = IoBuf::from(b"hello world".to_vec());
    /// let rest = b.split_off(5);
    /// assert!(b.join(&rest)); // adjacent in one block: one view again
    /// assert_eq!(&b[..], b"hello world");
    /// assert!(!b.join(&IoBuf::from_static(b"!")));
    /// ```
    pub fn join(&mut self, next: &IoBuf) -> bool {
        let adjacent = self.hdr.is_some() && self.hdr == next.hdr && self.ptr.wrapping_add(self.len) == next.ptr;
        if adjacent {
            self.len += next.len;
        }
        adjacent
    }

    /// Shortens the view to `len` bytes (no effect if already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl Clone for IoBuf {
    /// One relaxed atomic increment (none for static bytes).
    #[inline]
    fn clone(&self) -> IoBuf {
        if let Some(h) = self.header() {
            // Relaxed suffices: the new view is derived from a live one (as `Arc::clone`).
            let old = h.refs.fetch_add(1, Ordering::Relaxed);
            assert!(old < usize::MAX / 2, "IoBuf refcount overflow");
        }
        IoBuf { hdr: self.hdr, ptr: self.ptr, len: self.len }
    }
}

impl Drop for IoBuf {
    /// One atomic decrement; none for the last view (nor for static bytes).
    #[inline]
    fn drop(&mut self) {
        let Some(h) = self.hdr else { return };
        // SAFETY: this view holds a reference, so the header is live.
        let hdr = unsafe { h.as_ref() };
        // The last view skips the atomic read-modify-write, as folly's IOBuf does: no other
        // view exists, and none can be made without one, so nobody else can change the count.
        // The acquire load synchronises with every other view's release decrement before the
        // block is reused. (A free pool buffer's count reads 0: `BufPool::take` checks it.)
        if hdr.refs.load(Ordering::Acquire) == 1 {
            hdr.refs.store(0, Ordering::Relaxed);
        } else if hdr.refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        } else {
            // Synchronise with every other view's release before reusing the block.
            fence(Ordering::Acquire);
        }
        match hdr.owner {
            Owner::Heap => {
                // SAFETY: last reference to a heap block: reassemble the Box<[u8]> and the
                // Box<Header> created in `From<Vec<u8>>` and free both.
                unsafe {
                    let bytes = std::ptr::slice_from_raw_parts_mut(hdr.base, hdr.cap);
                    drop(Box::from_raw(bytes));
                    drop(Box::from_raw(h.as_ptr()));
                }
            }
            Owner::Inline => {
                let layout = inline_layout(hdr.cap);
                // SAFETY: last reference to a block made by `concat` with this very layout; the
                // header has no drop glue worth running (an atomic and plain data).
                unsafe { std::alloc::dealloc(h.as_ptr().cast::<u8>(), layout) };
            }
            // SAFETY: last reference to pool buffer `bid`; the pool is kept alive by the
            // reference this buffer holds on it, which `release` gives up.
            Owner::Pool { pool, bid } => unsafe { PoolShared::release(pool, bid, hdr.base) },
        }
    }
}

/// Allocates an inline block of `cap` bytes (uninitialised) after its header, whose count is
/// 1: the caller owns that reference. One allocation.
pub(crate) fn alloc_inline(cap: usize) -> NonNull<Header> {
    let layout = inline_layout(cap);
    // SAFETY: the layout is non-zero-sized (it holds a header).
    let block = unsafe { std::alloc::alloc(layout) };
    let Some(hdr) = NonNull::new(block.cast::<Header>()) else { std::alloc::handle_alloc_error(layout) };
    // SAFETY: the bytes start right after the header, inside the allocation.
    let base = unsafe { block.add(std::mem::size_of::<Header>()) };
    // SAFETY: `hdr` is a fresh, suitably aligned allocation with room for a `Header`.
    unsafe { hdr.as_ptr().write(Header { refs: AtomicUsize::new(1), base, cap, owner: Owner::Inline }) };
    hdr
}

/// The allocation of an inline block of `len` bytes: a header, then the bytes.
fn inline_layout(len: usize) -> std::alloc::Layout {
    let size = std::mem::size_of::<Header>().checked_add(len).expect("IoBuf size overflow");
    std::alloc::Layout::from_size_align(size, std::mem::align_of::<Header>()).expect("IoBuf size overflow")
}

impl From<Vec<u8>> for IoBuf {
    /// Takes ownership of the vector's bytes (shrinks it to fit; allocates the header).
    fn from(v: Vec<u8>) -> IoBuf {
        let bytes = Box::into_raw(v.into_boxed_slice());
        let cap = bytes.len();
        let base = bytes as *mut u8;
        let hdr = Box::new(Header { refs: AtomicUsize::new(1), base, cap, owner: Owner::Heap });
        IoBuf { hdr: Some(NonNull::from(Box::leak(hdr))), ptr: base, len: cap }
    }
}

impl From<&'static str> for IoBuf {
    fn from(s: &'static str) -> IoBuf {
        IoBuf::from_static(s.as_bytes())
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr..ptr+len` lies inside a block kept alive by this view's reference (or is
        // static), and shared views never write.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl AsRef<[u8]> for IoBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq<[u8]> for IoBuf {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq for IoBuf {
    fn eq(&self, other: &IoBuf) -> bool {
        **self == **other
    }
}

impl fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoBuf").field("len", &self.len).field("pooled", &self.is_pooled()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_share_one_block() {
        let mut b = IoBuf::from(b"0123456789".to_vec());
        let c = b.clone();
        assert!(!b.is_unique());
        let mid = b.slice(2..5);
        assert_eq!(&mid[..], b"234");
        assert_eq!(mid.as_ptr(), c[2..].as_ptr(), "slice is a view, not a copy");
        let back = b.split_off(7);
        assert_eq!((&b[..], &back[..]), (&b"0123456"[..], &b"789"[..]));
        let front = b.split_to(3);
        assert_eq!((&front[..], &b[..]), (&b"012"[..], &b"3456"[..]));
        assert_eq!(b.headroom(), 3);
        drop((c, mid, back, front));
        assert!(b.is_unique());
    }

    #[test]
    fn mutation_needs_uniqueness() {
        let mut b = IoBuf::from(vec![0u8; 8]);
        b.advance(4);
        let c = b.clone();
        assert!(b.as_mut_slice().is_none());
        assert!(b.prepend(2).is_none());
        drop(c);
        b.as_mut_slice().unwrap().copy_from_slice(b"body");
        b.prepend(2).unwrap().copy_from_slice(b"H:");
        assert_eq!(&b[..], b"H:body");
        assert!(b.prepend(3).is_none(), "only 2 bytes of headroom left");
    }

    #[test]
    fn adjacent_views_of_one_block_join() {
        let b = IoBuf::from(b"0123456789".to_vec());
        let (mut a, c, d) = (b.slice(0..3), b.slice(3..6), b.slice(7..9));
        assert!(a.join(&c));
        assert_eq!(&a[..], b"012345");
        assert!(!a.join(&d), "a gap between them");
        assert!(!a.join(&IoBuf::from(b"6".to_vec())), "another block");
        let (mut s, t) = (IoBuf::from_static(b"ab"), IoBuf::from_static(b"cd"));
        assert!(!s.join(&t), "static bytes have no block to be sure of");
        drop((b, c, d));
        assert_eq!(&a[..], b"012345");
    }

    #[test]
    fn static_bytes_are_free() {
        let s = IoBuf::from_static(b"static");
        let t = s.slice(1..3);
        assert_eq!(&t[..], b"ta");
        assert!(!s.is_unique() && !s.is_pooled() && s.headroom() == 0);
        let mut e = IoBuf::from(Vec::new());
        assert!(e.is_empty() && e.as_mut_slice().unwrap().is_empty());
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn slice_out_of_bounds_panics() {
        IoBuf::from_static(b"abc").slice(2..4);
    }

    #[test]
    fn copies_live_in_one_block_with_their_header() {
        let b = IoBuf::concat(&[b"$5\r\n", b"hello", b"\r\n"]);
        assert_eq!(&b[..], b"$5\r\nhello\r\n");
        let h = b.header().unwrap();
        assert!(matches!(h.owner, Owner::Inline));
        assert_eq!(h.base as usize, h as *const Header as usize + std::mem::size_of::<Header>());
        let mut v = b.slice(4..9);
        assert_eq!(&v[..], b"hello");
        assert_eq!(v.headroom(), 4);
        drop(b);
        v.as_mut_slice().unwrap().copy_from_slice(b"HELLO");
        assert_eq!(v.prepend(4).unwrap(), b"$5\r\n");
        assert_eq!(&v[..], b"$5\r\nHELLO");
        let e = IoBuf::copy_from_slice(b"");
        assert!(e.is_empty() && e.is_unique());
        let c = IoBuf::copy_from_slice(b"abc").clone();
        assert_eq!(&c[..], b"abc"); // the original view dropped first; Miri checks the free
    }

    #[test]
    fn clones_dropped_on_other_threads() {
        for b in [IoBuf::from(vec![7u8; 64]), IoBuf::copy_from_slice(&[7u8; 64])] {
            shared_across_threads(b);
        }
    }

    fn shared_across_threads(b: IoBuf) {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let v = b.slice(i..i + 8);
                std::thread::spawn(move || v.iter().map(|&x| x as u32).sum::<u32>())
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), 56);
        }
        assert!(b.is_unique());
    }
}
