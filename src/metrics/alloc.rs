//! Counting heap allocations per thread, for `ringstage_worker_allocations_total`.
//!
//! Opt in by making [`CountingAlloc`] the program's global allocator:
//!
//! ```
//! #[global_allocator]
//! static ALLOC: ringstage::metrics::CountingAlloc = ringstage::metrics::CountingAlloc::system();
//! ```
//!
//! Each worker then publishes the allocations made on its thread, and a steady
//! `ringstage_worker_allocations_total` under load shows handlers that keep to the
//! no-allocation rule of hot paths. Without it the count stays at zero.
//!
//! Cost: one thread-local add per allocation (no atomic, no lock); freeing is not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // `const`-initialised and without a destructor: readable from inside the allocator, at
    // any point of a thread's life, without allocating.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// A global allocator that counts the allocations (and reallocations) each thread makes, and
/// passes every call on to `A`.
#[derive(Debug, Default)]
pub struct CountingAlloc<A = System> {
    inner: A,
}

impl CountingAlloc<System> {
    /// Counting over the system allocator.
    pub const fn system() -> CountingAlloc<System> {
        CountingAlloc { inner: System }
    }
}

impl<A> CountingAlloc<A> {
    /// Counting over `inner` (another global allocator, e.g. jemalloc's).
    pub const fn new(inner: A) -> CountingAlloc<A> {
        CountingAlloc { inner }
    }
}

#[inline]
fn count() {
    // (`try_with`: never panic inside the allocator, whatever the thread's state.)
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

/// Allocations the calling thread has made through [`CountingAlloc`] so far (zero if it is not
/// the global allocator).
pub fn thread_allocations() -> u64 {
    ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

// SAFETY: every method passes its arguments unchanged to `A`, which upholds `GlobalAlloc`'s
// contract; counting touches only a thread-local `Cell` and never allocates or unwinds.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.inner.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_calls_made_through_it_on_this_thread_only() {
        let a = CountingAlloc::system();
        let before = thread_allocations();
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: a non-zero-size layout; each pointer is freed once with its layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            let p = a.realloc(p, layout, 128);
            assert!(!p.is_null());
            a.dealloc(p, Layout::from_size_align(128, 8).unwrap());
            let z = a.alloc_zeroed(layout);
            assert!(!z.is_null() && *z == 0);
            a.dealloc(z, layout);
        }
        assert_eq!(thread_allocations() - before, 3, "alloc, realloc and alloc_zeroed; not dealloc");
        let other = std::thread::spawn(thread_allocations).join().unwrap();
        assert_eq!(other, 0, "another thread's count is its own (nothing went through `a` there)");
    }
}
