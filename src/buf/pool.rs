use std::alloc::Layout;
use std::cell::UnsafeCell;
use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use ringstage_sys::{BufRing, Doorbell};

use super::iobuf::{Header, Owner};
use super::IoBuf;
use crate::queue::mpsc;

/// A worker's provided buffer ring and the buffers behind it.
///
/// Created and used on its home worker only (`!Send`); the [`IoBuf`]s it hands out may go
/// anywhere. `count` buffers of `buf_size` bytes live in one zeroed, page-aligned region whose
/// pages become resident only once the kernel writes into them, so idle connections cost no
/// buffer memory.
///
/// **Growth.** A handler that keeps received views keeps their buffers out of the ring. When
/// every buffer is out and receives wait for one, a pool made [`BufPool::with_growth`] adds
/// another region of `count` buffers (fresh memory, resident as it is written), up to its
/// maximum; past it, the connections that need a buffer wait until one comes back, while
/// those that do not go on. A view's buffer and header never move: regions are only added.
///
/// **Hot reuse.** The kernel takes buffers from the ring in order, so a ring holding every free
/// buffer would cycle through all of them: each receive would land in the buffer used longest
/// ago, out of cache (with 1024 buffers of 16 KiB, 16 MiB go round). The ring is instead kept at
/// a *window* of buffers, twice the most the kernel took between two refills lately (at least
/// 64); other free buffers wait on a stack, the most recently released on top, and refill the
/// ring from there once per loop iteration. The buffers in use stay few and warm, and the
/// others are never touched (nor made resident). When a receive finds the ring empty
/// (`ENOBUFS`), the window opens to the whole pool and closes again as the peak decays
/// (1/64 per refill). Measured on the proxy example moving 16 KiB messages: 5% less CPU per
/// message (paired runs; receives into a pool of 64 buffers only gave 7%).
pub struct BufPool {
    shared: Arc<PoolShared>,
    _home_only: PhantomData<*const ()>,
}

/// Counters of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers in the pool.
    pub buffers: usize,
    /// Buffers handed out as `IoBuf`s and not yet back in the ring.
    pub outstanding: usize,
    /// Buffers in the kernel's ring now (the rest of the free ones wait on the spare stack).
    pub in_ring: usize,
    /// The number of buffers the ring is topped up to.
    pub window: usize,
    /// Buffers released on the home worker.
    pub returned_home: u64,
    /// Buffers released on other threads (through the return queue).
    pub returned_remote: u64,
}

/// `count` buffers and their headers; a pool's regions are made as it grows, never moved.
struct Region {
    base: NonNull<u8>,
    layout: Layout,
    headers: Box<[Header]>,
}

pub(crate) struct PoolShared {
    owner: usize,
    /// The first region, made at once: its buffers are found without the lookup below.
    first: Region,
    /// The regions after the first (up to `max / count - 1`), made as the pool grows (only on
    /// the home thread; read anywhere once set).
    more: Box<[OnceLock<Region>]>,
    /// log2 of the buffers per region: buffer `bid` is number `bid & (count - 1)` of region
    /// `bid >> shift`.
    shift: u32,
    buf_size: usize,
    /// Touched only on the owner thread (checked by `thread_token`).
    home: UnsafeCell<Home>,
    returns: mpsc::Queue<u16>,
    returned_remote: AtomicU64,
    /// Keeps the pool alive for buffers still out when the `BufPool` handle drops, without a
    /// count per buffer: every release off the home path subtracts one (so it is <= 0 while
    /// the handle lives), and the handle's drop adds the buffers not released at home
    /// (`Home::live`). What is left then is the number still out; the release that takes it
    /// to zero drops the pool (see `release`).
    handover: AtomicIsize,
    /// Set by the home worker while receives wait for buffers; a remote release then rings
    /// `waker` so the worker re-arms them without waiting for its tick.
    starved: AtomicBool,
    waker: OnceLock<Arc<Doorbell>>,
    /// Counts this pool's drop (tests check it happens exactly once).
    #[cfg(test)]
    freed: OnceLock<Arc<AtomicUsize>>,
}

/// Fewest buffers the ring is kept at (all of them, in a smaller pool).
const MIN_WINDOW: usize = 64;

/// The ring's window when the pool starts (lowered as the measured peak allows).
const START_WINDOW: usize = 256;

struct Home {
    ring: BufRing,
    /// Buffers made so far (regions times their size).
    total: usize,
    /// Entries of the ring (the first region's count): the window's ceiling.
    ring_entries: usize,
    /// Buffers pushed into the ring and not yet taken by a completion.
    in_ring: usize,
    /// Free buffers outside the ring, the most recently released last (capacity: the most the
    /// pool may grow to, reserved up front, so pushing never allocates).
    spare: Vec<u16>,
    /// The number of buffers the ring is topped up to.
    window: usize,
    /// Most buffers taken between two refills lately.
    peak: usize,
    /// Buffers taken since the last refill.
    taken: usize,
    /// Buffers pushed into the ring since the last publish.
    unpublished: bool,
    outstanding: usize,
    returned_home: u64,
    /// Buffers taken minus buffers released at home, since the start (those released on
    /// other threads stay counted: see `PoolShared::handover`).
    live: usize,
    /// The `BufPool` handle was dropped: releases on the home thread go the other threads' way.
    orphaned: bool,
    /// The clock [`BufPool::oldest_held_ms`] reads ages by, in ms (`BufPool::set_clock_ms`).
    now_ms: u32,
    /// Per buffer: `now_ms` when it was last taken.
    taken_at: Vec<u32>,
    /// The ring's contents in order, as the kernel would take them (tests play the kernel).
    #[cfg(test)]
    shadow: std::collections::VecDeque<u16>,
}

impl Home {
    /// Gives free buffer `bid` back: to the ring while it holds fewer than the window, else to
    /// the top of the spare stack. Returns whether the ring got it (publish pending).
    ///
    /// # Safety
    /// `addr..addr + len` is buffer `bid`'s memory, which must be in no ring slot, have no
    /// views, and outlive the ring's registration.
    #[inline]
    unsafe fn put(&mut self, addr: *mut u8, len: u32, bid: u16) -> bool {
        if self.in_ring < self.window {
            // SAFETY: forwarded contract; at most `count` buffers exist, so the ring (of
            // `count` entries) cannot overfill.
            unsafe { self.push(addr, len, bid) };
            true
        } else {
            self.spare.push(bid);
            false
        }
    }

    /// # Safety
    /// As [`Home::put`].
    #[inline]
    unsafe fn push(&mut self, addr: *mut u8, len: u32, bid: u16) {
        // SAFETY: forwarded contract.
        unsafe { self.ring.push(addr, len, bid) };
        self.in_ring += 1;
        self.unpublished = true;
        #[cfg(test)]
        self.shadow.push_back(bid);
    }
}

// SAFETY: `home` is only accessed on the owner thread; every other field is immutable after
// construction or atomic. The region is plain memory whose buffers are owned one at a time.
unsafe impl Send for PoolShared {}
// SAFETY: as above.
unsafe impl Sync for PoolShared {}

/// A process-unique id of the calling thread (0 while thread-locals are being torn down).
fn thread_token() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    thread_local!(static TOKEN: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    TOKEN.try_with(|t| *t).unwrap_or(0)
}

impl PoolShared {
    /// Hands buffer `bid` back to its home ring. Its last use of the pool: a release may drop
    /// the pool, after its `BufPool` handle dropped.
    ///
    /// On the home thread (the hot path) this is plain memory: no atomic operation. Elsewhere,
    /// a queue push and one atomic subtraction (`handover`).
    ///
    /// # Safety
    /// `pool` must point to the pool that handed out buffer `bid` (in [`BufPool::take`]),
    /// `base` be that buffer's address (its header's), and `bid` must have no remaining views:
    /// the pool is live until this buffer's release.
    pub(crate) unsafe fn release(pool: *const PoolShared, bid: u16, base: *mut u8) {
        // SAFETY: a buffer out keeps its pool alive (see `handover`) until the end of this call.
        let p = unsafe { &*pool };
        if thread_token() == p.owner {
            // SAFETY: owner thread, and no `Home` borrow is held across code that drops IoBufs.
            let home = unsafe { &mut *p.home.get() };
            if !home.orphaned {
                // SAFETY: the buffer is in no ring slot (it was taken) and its memory lives as
                // long as the pool, which outlives the ring registration.
                if unsafe { home.put(base, p.buf_size as u32, bid) } {
                    home.ring.publish();
                    home.unpublished = false;
                }
                home.outstanding -= 1;
                home.returned_home += 1;
                home.live -= 1;
                return;
            }
            // The handle is gone: nobody refills the ring; only the pool's life is left to
            // settle, below.
        } else {
            // Capacity equals the buffer count and each buffer is out at most once: never full.
            if p.returns.push(bid).is_err() {
                unreachable!("pool return queue overflow: a buffer was released twice");
            }
            p.returned_remote.fetch_add(1, Ordering::Relaxed);
            // Pairs with the fence in the worker's sleep path (`Doorbell::prepare_sleep`) after
            // it set `starved`: one of the two sides sees the other.
            fence(Ordering::SeqCst);
            if p.starved.load(Ordering::Relaxed) {
                if let Some(w) = p.waker.get() {
                    w.ring();
                }
            }
        }
        // Nothing of the pool is touched after this subtraction unless it reaches zero: then
        // the handle has dropped, handing over the count of buffers still out, and this was
        // the last of them. AcqRel: every other release (and the handover) happens before the
        // drop.
        if p.handover.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the strong count the handle left behind for the buffers still out
            // (`BufPool::drop`); no buffer is out any more.
            unsafe { Arc::decrement_strong_count(pool) };
        }
    }

    /// Buffer `bid`'s region, and its number in it. The first region's buffers (all of a pool
    /// that did not grow) take one compare.
    #[inline(always)]
    fn locate(&self, bid: u16) -> (&Region, usize) {
        let (i, per) = (bid as usize, 1usize << self.shift);
        if i < per {
            (&self.first, i)
        } else {
            let r = self.more[(i >> self.shift) - 1].get().expect("a buffer of a region that was made");
            (r, i & (per - 1))
        }
    }

    #[inline(always)]
    fn header(&self, bid: u16) -> &Header {
        let (r, i) = self.locate(bid);
        &r.headers[i]
    }

    #[inline(always)]
    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        let (r, i) = self.locate(bid);
        // SAFETY: `i < count`, the region's buffer count, so the offset stays inside it.
        unsafe { r.base.as_ptr().add(i * self.buf_size) }
    }
}

/// Allocates region `index` of `count` buffers of `buf_size` bytes, the headers naming `pool`.
fn make_region(pool: *const PoolShared, index: usize, count: usize, buf_size: usize) -> io::Result<Region> {
    let size = buf_size
        .checked_mul(count)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pool size overflows"))?;
    let layout = Layout::from_size_align(size, 4096).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `size > 0` (count and buf_size are non-zero).
    let base = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
        .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, format!("buffer pool region of {size} bytes")))?;
    let headers = (0..count)
        .map(|i| Header {
            refs: AtomicUsize::new(0),
            // SAFETY: `i < count`: inside the region.
            base: unsafe { base.as_ptr().add(i * buf_size) },
            cap: buf_size,
            owner: Owner::Pool { pool, bid: (index * count + i) as u16 },
        })
        .collect();
    Ok(Region { base, layout, headers })
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        for r in std::iter::once(&self.first).chain(self.more.iter().filter_map(OnceLock::get)) {
            // SAFETY: the region was allocated with its `layout` in `make_region`, and no view
            // is left (the last handle or release drops the pool).
            unsafe { std::alloc::dealloc(r.base.as_ptr(), r.layout) };
        }
        #[cfg(test)]
        if let Some(f) = self.freed.get() {
            f.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl BufPool {
    /// `count` (a power of two, at most 32768) buffers of `buf_size` bytes as buffer group
    /// `bgid`, all placed in the ring. Call [`BufPool::register`] to hand it to a ring.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn new(count: u16, buf_size: usize, bgid: u16) -> io::Result<BufPool> {
        BufPool::with_growth(count, count as usize, buf_size, bgid)
    }

    /// Like [`BufPool::new`], growing by `count` buffers at a time while every buffer is out
    /// and receives wait, up to `max` buffers in all (`max` is rounded down to a multiple of
    /// `count`, at most 32768 and 16 regions).
    pub fn with_growth(count: u16, max: usize, buf_size: usize, bgid: u16) -> io::Result<BufPool> {
        if buf_size == 0 || buf_size > u32::MAX as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffer size must be in 1..=u32::MAX"));
        }
        let ring = BufRing::new(count, bgid)?;
        let per = count as usize;
        let regions = (max.min(1 << 15) / per).clamp(1, 16);
        let cap = regions * per;
        // The first region's headers name the pool, which does not exist yet: made with a
        // placeholder, then fixed up inside `new_cyclic`, once the pool's address is known.
        let mut first = Some(make_region(std::ptr::null(), 0, per, buf_size)?);
        let shared = Arc::new_cyclic(|weak| {
            let mut first = first.take().expect("made above");
            for h in first.headers.iter_mut() {
                if let Owner::Pool { pool, .. } = &mut h.owner {
                    *pool = weak.as_ptr();
                }
            }
            PoolShared {
                owner: thread_token(),
                first,
                more: (1..regions).map(|_| OnceLock::new()).collect(),
                shift: per.trailing_zeros(),
                buf_size,
                home: UnsafeCell::new(Home {
                    ring,
                    total: per,
                    ring_entries: per,
                    in_ring: 0,
                    spare: Vec::with_capacity(cap),
                    window: START_WINDOW.min(per),
                    peak: START_WINDOW / 2,
                    taken: 0,
                    unpublished: false,
                    outstanding: 0,
                    returned_home: 0,
                    live: 0,
                    orphaned: false,
                    now_ms: 0,
                    taken_at: vec![0; per],
                    #[cfg(test)]
                    shadow: std::collections::VecDeque::new(),
                }),
                returns: mpsc::Queue::new(cap),
                returned_remote: AtomicU64::new(0),
                handover: AtomicIsize::new(0),
                starved: AtomicBool::new(false),
                waker: OnceLock::new(),
                #[cfg(test)]
                freed: OnceLock::new(),
            }
        });
        let pool = BufPool { shared, _home_only: PhantomData };
        let home = pool.home();
        // The window's worth into the ring, the rest on the stack with buffer 0 nearest the top.
        for bid in (0..count).rev() {
            home.spare.push(bid);
        }
        pool.refill();
        Ok(pool)
    }

    /// Adds a region of buffers if every buffer is out and the pool is below its maximum.
    /// Returns whether it grew. Allocates the region: not on the hot path (only when receives
    /// wait for buffers).
    fn grow(&self) -> bool {
        let home = self.home();
        let next = home.total >> self.shared.shift;
        if next > self.shared.more.len() || !home.spare.is_empty() || home.in_ring > 0 || self.has_returns() {
            return false;
        }
        let per = 1usize << self.shared.shift;
        let Ok(region) = make_region(Arc::as_ptr(&self.shared), next, per, self.shared.buf_size) else {
            return false; // out of memory: the receives wait for buffers to come back
        };
        if self.shared.more[next - 1].set(region).is_err() {
            return false;
        }
        for bid in (next * per..(next + 1) * per).rev() {
            home.spare.push(bid as u16);
        }
        home.total += per;
        home.taken_at.resize(home.total, home.now_ms);
        log::info!("ringstage: receive buffers all held; the pool grew to {} buffers", home.total);
        true
    }

    #[allow(clippy::mut_from_ref)]
    fn home(&self) -> &mut Home {
        // SAFETY: `BufPool` is `!Send` and created on the owner thread, so this is the owner
        // thread; callers hold the borrow only inside one method that drops no IoBuf.
        unsafe { &mut *self.shared.home.get() }
    }

    /// Registers the ring with `submitter`'s io_uring.
    ///
    /// # Safety
    /// The pool must outlive the registration: unregister it or close that io_uring before the
    /// pool is dropped.
    pub unsafe fn register(&self, submitter: &io_uring::Submitter<'_>) -> io::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.home().ring.register(submitter) }
    }

    /// Unregisters the ring from `submitter`'s io_uring.
    pub fn unregister(&self, submitter: &io_uring::Submitter<'_>) -> io::Result<()> {
        self.home().ring.unregister(submitter)
    }

    /// The buffer group id to put in recv SQEs.
    pub fn bgid(&self) -> u16 {
        self.home().ring.bgid()
    }

    /// Size of each buffer.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn buf_size(&self) -> usize {
        self.shared.buf_size
    }

    /// Wraps buffer `bid`, which a completion reported holding `len` bytes, as an `IoBuf`.
    /// Hot path: no allocation, no atomic read-modify-write.
    ///
    /// # Safety
    /// The kernel must have handed buffer `bid` over (a receive's completion named it): it
    /// is out of the ring, so neither the kernel nor a pending receive writes it any more.
    ///
    /// # Panics
    /// If `bid` or `len` is out of range, or the buffer is already out (a kernel or caller bug).
    #[inline]
    pub unsafe fn take(&self, bid: u16, len: usize) -> IoBuf {
        let h = self.shared.header(bid);
        assert!(len <= self.shared.buf_size, "completion length {len} exceeds buffer size");
        // No view of a free buffer exists to change its count meanwhile: a load and a store
        // do, without a read-modify-write. The load synchronises with its last view's drop.
        let was = h.refs.load(Ordering::Acquire);
        assert_eq!(was, 0, "buffer {bid} taken while still referenced");
        h.refs.store(1, Ordering::Relaxed);
        let home = self.home();
        home.outstanding += 1;
        home.live += 1;
        home.taken += 1;
        home.taken_at[bid as usize] = home.now_ms;
        debug_assert!(home.in_ring > 0, "buffer {bid} taken from an empty ring");
        home.in_ring = home.in_ring.saturating_sub(1);
        #[cfg(test)]
        if home.shadow.front() == Some(&bid) {
            home.shadow.pop_front(); // as the kernel takes them
        } else {
            home.shadow.retain(|&b| b != bid); // a test picked its own buffer
        }
        // SAFETY: the header is live with the one reference just set, and `len <= cap`.
        unsafe { IoBuf::from_header(NonNull::from(h), h.base, len) }
    }

    /// Takes back buffers released on other threads, then tops the ring up to its window
    /// (see [the type's docs](BufPool)). Call once per loop iteration, before re-arming
    /// receives that ran out of buffers. Returns how many buffers came back from other threads.
    /// Hot path: no allocation, no lock; one release store when the ring got buffers.
    pub fn drain_returns(&self) -> usize {
        let home = self.home();
        let mut n = 0;
        // SAFETY: only the owner thread pops, and `BufPool` lives on it.
        while let Some(bid) = unsafe { self.shared.returns.pop() } {
            // SAFETY: as in `release`: the buffer is free and its memory outlives the ring.
            unsafe { home.put(self.shared.buf_ptr(bid), self.shared.buf_size as u32, bid) };
            n += 1;
        }
        home.outstanding -= n;
        self.refill();
        n
    }

    /// Sets the window from the peak of buffers taken per refill and tops the ring up to it
    /// from the spare stack, most recently released first; publishes what it pushed (and
    /// what `drain_returns` put in the ring).
    fn refill(&self) {
        let home = self.home();
        let entries = home.ring_entries;
        home.peak = home.peak.max(home.taken);
        home.window = (2 * home.peak).clamp(MIN_WINDOW.min(entries), entries);
        home.peak -= home.peak.div_ceil(64);
        home.taken = 0;
        while home.in_ring < home.window {
            let Some(bid) = home.spare.pop() else { break };
            // SAFETY: a buffer on the spare stack is free and in no ring slot; its memory
            // outlives the ring.
            unsafe { home.push(self.shared.buf_ptr(bid), self.shared.buf_size as u32, bid) };
        }
        if home.unpublished {
            home.ring.publish();
            home.unpublished = false;
        }
    }

    /// Doorbell of the home worker, rung by remote releases while the pool is starved.
    pub fn set_waker(&self, bell: Arc<Doorbell>) {
        let _ = self.shared.waker.set(bell);
    }

    /// Marks whether receives are waiting for buffers (see [`BufPool::set_waker`]). Starving
    /// opens the ring's window to the whole pool at the next refill.
    pub fn set_starved(&self, starved: bool) {
        if starved {
            let home = self.home();
            home.peak = home.peak.max(home.total / 2);
            self.grow();
        }
        self.shared.starved.store(starved, Ordering::SeqCst);
    }

    /// Whether buffers released on other threads wait to be drained.
    pub fn has_returns(&self) -> bool {
        !self.shared.returns.is_empty()
    }

    /// Free buffers, in the ring or waiting to enter it (counting drained returns only).
    pub fn available(&self) -> usize {
        let home = self.home();
        home.total - home.outstanding
    }

    /// Sets the clock, in ms, that takes are stamped with and [`BufPool::oldest_held_ms`]
    /// measures by (the worker sets it every tick).
    pub fn set_clock_ms(&self, ms: u32) {
        self.home().now_ms = ms;
    }

    /// How long the buffer held longest by views has been out, in ms of the pool's clock
    /// (0 when none is out): what tells a handler that stores received views from one that
    /// passes them on. O(buffers): one load of each buffer's count; the worker calls it once
    /// per tick.
    pub fn oldest_held_ms(&self) -> u32 {
        let home = self.home();
        if home.outstanding == 0 {
            return 0; // an idle worker scans nothing
        }
        let mut oldest = 0;
        for (bid, &at) in home.taken_at.iter().enumerate() {
            if self.shared.header(bid as u16).refs.load(Ordering::Relaxed) > 0 {
                oldest = oldest.max(home.now_ms.wrapping_sub(at));
            }
        }
        oldest
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let home = self.home();
        PoolStats {
            buffers: home.total,
            outstanding: home.outstanding,
            in_ring: home.in_ring,
            window: home.window,
            returned_home: home.returned_home,
            returned_remote: self.shared.returned_remote.load(Ordering::Relaxed),
        }
    }
}

impl Drop for BufPool {
    /// Hands the pool's life over to the buffers still out, if any (see
    /// `PoolShared::handover`): the last of them to be released drops it.
    fn drop(&mut self) {
        let home = self.home();
        home.orphaned = true;
        let live = home.live as isize;
        // A strong count for the buffers still out, which the last of them gives up: made
        // before they can see the handover (one could be released on another thread at once).
        let kept = Arc::into_raw(Arc::clone(&self.shared));
        if self.shared.handover.fetch_add(live, Ordering::AcqRel) + live == 0 {
            // SAFETY: none is out, so nothing else gives up the count made just above.
            unsafe { Arc::decrement_strong_count(kept) };
        }
    }
}

impl std::fmt::Debug for BufPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufPool").field("stats", &self.stats()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the kernel: fills buffer `bid` with `data` and hands it out as a completion would.
    fn recv(pool: &BufPool, bid: u16, data: &[u8]) -> IoBuf {
        // SAFETY: test-only stand-in for the kernel writing into a buffer it owns and handing it
        // over with a completion.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), pool.shared.buf_ptr(bid), data.len());
            pool.take(bid, data.len())
        }
    }

    #[test]
    fn last_view_returns_buffer_home() {
        let pool = BufPool::new(4, 64, 1).unwrap();
        assert_eq!(pool.available(), 4);
        let mut b = recv(&pool, 0, b"GET / HTTP/1.1\r\n");
        let line = b.split_to(5);
        let c = b.clone();
        assert_eq!(pool.available(), 3);
        assert!(line.is_pooled());
        assert_eq!(&line[..], b"GET /");
        drop((b, line));
        assert_eq!(pool.available(), 3, "a view is still alive");
        drop(c);
        assert_eq!(pool.available(), 4);
        assert_eq!(pool.stats().returned_home, 1);
        // The same buffer can be taken again.
        let again = recv(&pool, 0, b"x");
        assert_eq!(&again[..], b"x");
    }

    /// The buffer the kernel would take next.
    fn next_in_ring(pool: &BufPool) -> u16 {
        *pool.home().shadow.front().expect("a buffer in the ring")
    }

    #[test]
    fn a_pool_grows_while_every_buffer_is_held_and_stops_at_its_maximum() {
        let pool = BufPool::with_growth(4, 12, 64, 1).unwrap();
        let mut held = Vec::new();
        for round in 0..3 {
            assert_eq!(pool.stats().buffers, 4 * (round + 1));
            while pool.available() > 0 {
                let bid = next_in_ring(&pool);
                held.push(recv(&pool, bid, &[bid as u8; 8]));
            }
            // Every buffer is out and a receive waits: the pool adds a region, up to 12.
            pool.set_starved(true);
            pool.drain_returns(); // the loop's refill
        }
        assert_eq!((pool.stats().buffers, pool.available()), (12, 0), "at its maximum, no more growth");
        // Views of every region read their own bytes, and come home when dropped.
        for b in &held {
            assert!(b.iter().all(|&x| x == b[0]));
        }
        let bids: std::collections::HashSet<u8> = held.iter().map(|b| b[0]).collect();
        assert_eq!(bids.len(), 12, "twelve distinct buffers");
        drop(held);
        pool.set_starved(false);
        assert_eq!(pool.available(), 12);
        // A pool whose buffers are not all out does not grow.
        let pool = BufPool::with_growth(4, 16, 64, 1).unwrap();
        let one = recv(&pool, next_in_ring(&pool), b"x");
        pool.set_starved(true);
        assert_eq!(pool.stats().buffers, 4);
        drop(one);
    }

    #[test]
    fn the_oldest_held_buffer_is_timed_by_the_pool_clock() {
        let pool = BufPool::with_growth(2, 4, 64, 1).unwrap();
        assert_eq!(pool.oldest_held_ms(), 0, "nothing out");
        pool.set_clock_ms(100);
        let old = recv(&pool, 0, b"kept");
        pool.set_clock_ms(300);
        let young = recv(&pool, 1, b"passed on");
        pool.set_clock_ms(350);
        assert_eq!(pool.oldest_held_ms(), 250, "the view taken at 100 is 250 ms old");
        drop(old);
        assert_eq!(pool.oldest_held_ms(), 50);
        // Buffers of a region made later are timed too.
        let other = recv(&pool, next_in_ring(&pool), b"held");
        pool.set_starved(true);
        pool.drain_returns();
        let bid = next_in_ring(&pool);
        assert!(bid >= 2, "a buffer of the second region");
        let grown = recv(&pool, bid, b"grown");
        drop((young, other));
        pool.set_clock_ms(1350);
        assert_eq!(pool.oldest_held_ms(), 1000, "the grown buffer, taken at 350");
        drop(grown);
        assert_eq!(pool.oldest_held_ms(), 0);
    }

    #[test]
    fn an_unpooled_copy_lets_the_receive_buffer_go_home() {
        let pool = BufPool::new(2, 64, 1).unwrap();
        let b = recv(&pool, 0, b"value to store");
        let kept = b.slice(9..).to_unpooled();
        assert!(!kept.is_pooled());
        drop(b);
        assert_eq!(pool.available(), 2, "the stored copy does not pin the pool buffer");
        assert_eq!(&kept[..], b"store");
        let again = kept.to_unpooled();
        assert_eq!(again.as_ptr(), kept.as_ptr(), "an unpooled view is shared, not copied again");
    }

    #[test]
    fn remote_drop_goes_through_return_queue() {
        let pool = BufPool::new(8, 32, 1).unwrap();
        let bufs: Vec<_> = (0..8).map(|i| recv(&pool, i, &[i as u8; 32])).collect();
        assert_eq!(pool.available(), 0);
        let t = std::thread::spawn(move || {
            let sum: usize = bufs.iter().map(|b| b[0] as usize).sum();
            drop(bufs);
            sum
        });
        assert_eq!(t.join().unwrap(), 28);
        assert_eq!(pool.available(), 0, "remote returns wait for the home worker");
        assert_eq!(pool.drain_returns(), 8);
        assert_eq!(pool.available(), 8);
        assert_eq!(pool.stats().returned_remote, 8);
    }

    #[test]
    fn views_outlive_the_pool_handle() {
        let pool = BufPool::new(2, 16, 1).unwrap();
        let b = recv(&pool, 1, b"survivor");
        drop(pool);
        assert_eq!(&b[..], b"survivor");
        drop(b); // frees the region; Miri checks for leaks and use-after-free
    }

    #[test]
    fn the_last_buffer_out_drops_the_pool_whichever_thread_releases_it() {
        // Released at home and on other threads before the handle drops, then buffers still
        // out on three threads (racing with the handle's drop) and on the home thread: the
        // pool is freed exactly once, by whichever goes last. Miri checks for the leak or the
        // use after free a miscount would cause.
        let pool = BufPool::new(8, 16, 1).unwrap();
        let mut bufs: Vec<_> = (0..8).map(|i| recv(&pool, i, &[i as u8; 16])).collect();
        drop(bufs.pop()); // home release
        let early = bufs.pop().unwrap();
        std::thread::spawn(move || drop(early)).join().unwrap(); // remote release
        assert_eq!(pool.drain_returns(), 1);
        let home_kept = bufs.pop().unwrap();
        let go = Arc::new(std::sync::Barrier::new(4));
        let ts: Vec<_> = bufs
            .chunks(2)
            .map(|c| {
                let (mine, go) = (c.to_vec(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    mine.iter().map(|b| b[0] as usize).sum::<usize>()
                })
            })
            .collect();
        drop(bufs); // the threads hold the only other views now
        go.wait();
        drop(pool);
        let sum: usize = ts.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(sum, 10, "buffers 0..=4 read after their pool's handle dropped");
        assert_eq!(&home_kept[..], &[5u8; 16]);
    }

    #[test]
    fn pool_handover_stress() {
        // The handle drops while two threads release their buffers, at points that vary by
        // round, with buffers released at home before and after: every pool is freed exactly
        // once (a double free would also crash; a leak shows in the count).
        let rounds = if cfg!(miri) { 3 } else { 500 };
        let freed = Arc::new(AtomicUsize::new(0));
        for r in 0..rounds {
            let pool = BufPool::new(8, 16, 1).unwrap();
            pool.shared.freed.set(freed.clone()).unwrap();
            let mut bufs: Vec<_> = (0..8).map(|i| recv(&pool, i, &[i as u8; 16])).collect();
            let ts: Vec<_> = (0..2)
                .map(|t| {
                    let mine: Vec<_> = bufs.drain(..3).collect();
                    std::thread::spawn(move || {
                        for (k, b) in mine.into_iter().enumerate() {
                            for _ in 0..(r + t + k) % 7 {
                                std::thread::yield_now();
                            }
                            assert_eq!(b.len(), 16);
                        }
                    })
                })
                .collect();
            let late = bufs.pop();
            if r % 2 == 0 {
                drop(bufs.pop()); // a home release before the handover
            }
            for _ in 0..r % 5 {
                std::thread::yield_now();
            }
            drop(pool);
            drop((bufs, late)); // home releases after it
            for t in ts {
                t.join().unwrap();
            }
            assert_eq!(freed.load(Ordering::Relaxed), r + 1, "round {r}: the pool is freed exactly once");
        }
    }

    #[test]
    #[should_panic(expected = "still referenced")]
    fn double_take_is_caught() {
        let pool = BufPool::new(2, 16, 1).unwrap();
        // SAFETY: a test of the check itself; nothing writes the buffer.
        let _a = unsafe { pool.take(0, 1) };
        // SAFETY: as above.
        let _b = unsafe { pool.take(0, 1) };
    }

    /// Plays the kernel properly: takes the buffer at the head of the ring.
    fn kernel_recv(pool: &BufPool, data: &[u8]) -> Option<IoBuf> {
        let bid = *pool.home().shadow.front()?;
        Some(recv(pool, bid, data))
    }

    #[test]
    fn a_trickle_of_receives_cycles_through_a_small_window_only() {
        let pool = BufPool::new(512, 64, 1).unwrap();
        let mut used = std::collections::BTreeSet::new();
        let mut late = std::collections::BTreeSet::new();
        let rounds = if cfg!(miri) { 300 } else { 5000 };
        for i in 0..rounds {
            let b = kernel_recv(&pool, b"ping").expect("the ring has buffers");
            used.insert(b.as_ptr() as usize);
            if i >= rounds - 100 {
                late.insert(b.as_ptr() as usize);
            }
            drop(b);
            pool.drain_returns(); // one loop iteration
        }
        // A ring of all 512 free buffers would have used every one of them, in turn.
        assert!(used.len() <= START_WINDOW + 1, "{} distinct buffers", used.len());
        assert_eq!(late.len(), MIN_WINDOW, "once the window closed, only its buffers go round");
        let st = pool.stats();
        assert_eq!((st.window, st.in_ring, pool.available()), (MIN_WINDOW, MIN_WINDOW, 512));
    }

    #[test]
    fn a_burst_widens_the_window_and_starving_opens_it_all() {
        let pool = BufPool::new(512, 64, 1).unwrap();
        for _ in 0..150 {
            pool.drain_returns(); // idle loops: the window closes to its minimum
        }
        let st = pool.stats();
        assert_eq!(st.window, MIN_WINDOW);
        // Buffers already in the ring stay there; the kernel takes them all in one loop
        // iteration, then finds the ring empty.
        let burst: Vec<_> = std::iter::from_fn(|| kernel_recv(&pool, b"x")).collect();
        assert_eq!(burst.len(), st.in_ring);
        pool.set_starved(true);
        pool.drain_returns();
        let st = pool.stats();
        assert_eq!(st.window, 512, "ENOBUFS opens the window to the whole pool");
        assert_eq!(st.in_ring, 512 - burst.len(), "every free buffer is in the ring");
        pool.set_starved(false);
        drop(burst);
        pool.drain_returns();
        assert_eq!(pool.available(), 512, "nothing lost");
        assert!(pool.stats().in_ring <= 512);
        // Without more bursts the window closes again.
        for _ in 0..300 {
            pool.drain_returns();
        }
        assert_eq!(pool.stats().window, MIN_WINDOW);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(BufPool::new(3, 16, 1).is_err(), "count must be a power of two");
        assert!(BufPool::new(4, 0, 1).is_err());
    }
}
