//! Provided buffer rings (`IORING_REGISTER_PBUF_RING`).
//!
//! The ring is a page-aligned array of `io_uring_buf` entries that user space fills and the
//! kernel consumes: a multishot recv picks the next buffer itself and reports its id in the CQE.
//! The 16-bit tail shares memory with the reserved field of entry 0, so entries are written field
//! by field, never as a whole struct.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// The kernel needs the ring page-aligned.
const PAGE: usize = 4096;

/// One registered provided-buffer ring. Owned and written by one thread.
#[derive(Debug)]
pub struct BufRing {
    base: NonNull<BufRingEntry>,
    layout: Layout,
    mask: u16,
    tail: u16,
    bgid: u16,
}

// SAFETY: the mapping is owned by this value; moving it to another thread moves the ownership.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Allocates zeroed, page-aligned memory for `entries` (a power of two, at most 32768) ring slots for buffer group `bgid`.
    pub fn new(entries: u16, bgid: u16) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring entries must be a power of two <= 32768",
            ));
        }
        let size = entries as usize * std::mem::size_of::<BufRingEntry>();
        let layout = Layout::from_size_align(size.max(PAGE), PAGE).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        let base = NonNull::new(p.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(BufRing { base, layout, mask: entries - 1, tail: 0, bgid })
    }

    /// Buffer group id to name in SQEs (`buf_group`).
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Number of ring slots.
    pub fn entries(&self) -> u16 {
        self.mask.wrapping_add(1)
    }

    /// Registers the ring with `submitter`'s ring.
    ///
    /// # Safety
    /// `self` must outlive the registration: call [`BufRing::unregister`] or close the io_uring
    /// before dropping it.
    pub unsafe fn register(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        // SAFETY: the mapping is page-aligned, sized for `entries` slots, and outlives the
        // registration per this function's contract.
        unsafe { submitter.register_buf_ring_with_flags(self.base.as_ptr() as u64, self.entries(), self.bgid, 0) }
    }

    /// Unregisters the ring from `submitter`'s ring.
    pub fn unregister(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        submitter.unregister_buf_ring(self.bgid)
    }

    /// Writes one buffer into the next free slot; it becomes visible at [`BufRing::publish`].
    ///
    /// # Safety
    /// `addr..addr+len` must stay valid, writable memory owned by nobody else until the kernel
    /// hands the buffer back in a completion, and no more than `entries` buffers may be in the
    /// ring (published or not) at once.
    #[inline]
    pub unsafe fn push(&mut self, addr: *mut u8, len: u32, bid: u16) {
        let idx = (self.tail & self.mask) as usize;
        // SAFETY: `idx <= mask`, so the slot lies inside the mapping. Only addr/len/bid are
        // written: `resv` of slot 0 is the shared tail.
        unsafe {
            let e = &mut *self.base.as_ptr().add(idx);
            e.set_addr(addr as u64);
            e.set_len(len);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes every slot pushed so far to the kernel (one release store).
    #[inline]
    pub fn publish(&mut self) {
        // SAFETY: the tail field lies in slot 0 of the live mapping and is 2-byte aligned; the
        // kernel reads it with acquire semantics, so a release store orders the entries before it.
        let tail = unsafe { &*(BufRingEntry::tail(self.base.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: frees exactly the block allocated in `new`; by `register`'s contract the kernel
        // no longer uses it.
        unsafe { dealloc(self.base.as_ptr().cast(), self.layout) };
    }
}
