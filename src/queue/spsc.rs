//! Bounded single-producer single-consumer ring.
//!
//! ```
//! let (mut tx, mut rx) = ringstage::queue::spsc::channel::<u32>(4);
//! assert!(tx.push(1).is_ok());
//! assert_eq!(rx.pop(), Some(1));
//! ```

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

struct Ring<T> {
    /// Next slot the consumer reads. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes. Written by the producer only.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: a value is written by the producer before the release store of `tail` that publishes it
// and read by the consumer after the acquire load that observes it (and symmetrically for slot
// reuse through `head`), so each slot has one owner at a time; `T: Send` lets values cross.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Ring<T> {
    #[inline]
    fn slot(&self, pos: usize) -> *mut MaybeUninit<T> {
        // `mask + 1 == slots.len()`, so the index is in bounds.
        self.slots[pos & self.mask].get()
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let (head, tail) = (*self.head.get_mut(), *self.tail.get_mut());
        let mut pos = head;
        while pos != tail {
            // SAFETY: slots in head..tail hold initialised values that nobody else can reach now.
            unsafe { (*self.slot(pos)).assume_init_drop() };
            pos = pos.wrapping_add(1);
        }
    }
}

/// The sending half. `Send` but not `Clone`: exactly one producer.
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    tail: usize,
    head_cache: usize,
}

/// The receiving half. `Send` but not `Clone`: exactly one consumer.
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    head: usize,
    tail_cache: usize,
}

/// Creates a ring holding up to `capacity` values, rounded up to a power of two.
///
/// # Panics
/// If `capacity` is zero.
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(capacity > 0, "spsc capacity must be non-zero");
    let cap = capacity.next_power_of_two();
    let slots = (0..cap).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let ring = Arc::new(Ring {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        slots,
        mask: cap - 1,
    });
    (Producer { ring: ring.clone(), tail: 0, head_cache: 0 }, Consumer { ring, head: 0, tail_cache: 0 })
}

impl<T> Producer<T> {
    /// Total slots.
    pub fn capacity(&self) -> usize {
        self.ring.mask + 1
    }

    /// Slots free now, refreshing the cached consumer index. Only the consumer can change this
    /// value, and only upwards, so `n <= free()` guarantees the next `n` pushes succeed.
    pub fn free(&mut self) -> usize {
        self.head_cache = self.ring.head.load(Ordering::Acquire);
        self.capacity() - self.tail.wrapping_sub(self.head_cache)
    }

    /// Values queued (a snapshot).
    pub fn len(&self) -> usize {
        self.tail.wrapping_sub(self.ring.head.load(Ordering::Acquire))
    }

    /// Whether no value is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `value`, or hands it back if the ring is full.
    ///
    /// Hot path: no allocation, no lock; one release store, plus one acquire load when the
    /// cached consumer index says the ring is full.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.tail.wrapping_sub(self.head_cache) == self.capacity() {
            self.head_cache = self.ring.head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_cache) == self.capacity() {
                return Err(value);
            }
        }
        // SAFETY: the slot at `tail` is free (tail - head < capacity) and only the producer
        // writes free slots; the consumer will not read it before the release store below.
        unsafe { (*self.ring.slot(self.tail)).write(value) };
        self.tail = self.tail.wrapping_add(1);
        self.ring.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Appends every value of `values` or none: if fewer slots are free than `values.len()`,
    /// the untouched iterator is handed back. One release store for the whole batch.
    #[inline]
    pub fn push_all<I: ExactSizeIterator<Item = T>>(&mut self, values: I) -> Result<(), I> {
        let n = values.len();
        if self.capacity() - self.tail.wrapping_sub(self.head_cache) < n && self.free() < n {
            return Err(values);
        }
        let mut pos = self.tail;
        for v in values.take(n) {
            // SAFETY: `n` slots from `tail` are free (checked above); unpublished until the store.
            unsafe { (*self.ring.slot(pos)).write(v) };
            pos = pos.wrapping_add(1);
        }
        self.tail = pos;
        self.ring.tail.store(pos, Ordering::Release);
        Ok(())
    }
}

impl<T> Consumer<T> {
    /// Total slots.
    pub fn capacity(&self) -> usize {
        self.ring.mask + 1
    }

    /// Values queued (a snapshot).
    pub fn len(&self) -> usize {
        self.ring.tail.load(Ordering::Acquire).wrapping_sub(self.head)
    }

    /// Whether no value is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the oldest value. Hot path: no allocation, no lock; one release store, plus one
    /// acquire load when the cached producer index says the ring is empty.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.tail_cache {
            self.tail_cache = self.ring.tail.load(Ordering::Acquire);
            if self.head == self.tail_cache {
                return None;
            }
        }
        // SAFETY: head < tail_cache, and the acquire load of tail made the producer's write of
        // this slot visible; the slot is ours until the release store of head below.
        let v = unsafe { (*self.ring.slot(self.head)).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        self.ring.head.store(self.head, Ordering::Release);
        Some(v)
    }

    /// Removes up to `max` values, passing each to `f`; publishes the freed slots once.
    /// Returns how many were taken.
    #[inline]
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let mut avail = self.tail_cache.wrapping_sub(self.head);
        if avail < max {
            self.tail_cache = self.ring.tail.load(Ordering::Acquire);
            avail = self.tail_cache.wrapping_sub(self.head);
        }
        let n = avail.min(max);
        if n == 0 {
            return 0;
        }
        /// Publishes the consumed slots once, also when `f` unwinds mid-batch, so values not
        /// yet handed out stay in the ring and are dropped exactly once.
        struct Publish<'a> {
            head: &'a mut usize,
            shared: &'a AtomicUsize,
        }
        impl Drop for Publish<'_> {
            fn drop(&mut self) {
                self.shared.store(*self.head, Ordering::Release);
            }
        }
        let ring = &*self.ring;
        let guard = Publish { head: &mut self.head, shared: &ring.head };
        for _ in 0..n {
            // SAFETY: slots head..head+n were published (acquire load above) and not yet freed;
            // each is read once, and `head` moves past it before `f` can unwind.
            let v = unsafe { (*ring.slot(*guard.head)).assume_init_read() };
            *guard.head = guard.head.wrapping_add(1);
            f(v);
        }
        drop(guard);
        n
    }
}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("spsc::Producer").field("capacity", &self.capacity()).field("len", &self.len()).finish()
    }
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("spsc::Consumer").field("capacity", &self.capacity()).field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_when_full_and_returns_value() {
        let (mut tx, mut rx) = channel(3); // rounds to 4
        for i in 0..4 {
            tx.push(i).unwrap();
        }
        assert_eq!(tx.push(99), Err(99));
        assert_eq!(rx.pop(), Some(0));
        tx.push(4).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| rx.pop()).collect();
        assert_eq!(got, [1, 2, 3, 4]);
        assert_eq!(rx.pop(), None);
    }

    #[test]
    fn push_all_is_all_or_nothing() {
        let (mut tx, mut rx) = channel(4);
        tx.push(0u8).unwrap();
        let it = tx.push_all([1, 2, 3, 4].into_iter()).unwrap_err();
        assert_eq!(it.collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(tx.len(), 1);
        tx.push_all([1, 2, 3].into_iter()).unwrap();
        let mut got = vec![];
        assert_eq!(rx.pop_batch(10, |v| got.push(v)), 4);
        assert_eq!(got, [0, 1, 2, 3]);
    }

    #[test]
    fn drops_unread_values() {
        let v = Arc::new(());
        let (mut tx, mut rx) = channel(8);
        for _ in 0..5 {
            tx.push(v.clone()).unwrap();
        }
        drop(rx.pop());
        drop((tx, rx));
        assert_eq!(Arc::strong_count(&v), 1);
    }

    #[test]
    fn wraps_many_times() {
        let (mut tx, mut rx) = channel(2);
        for i in 0..1000u32 {
            tx.push(i).unwrap();
            assert_eq!(rx.pop(), Some(i));
        }
    }

    #[test]
    fn threads_transfer_in_order() {
        const N: u32 = if cfg!(miri) { 500 } else { 1_000_000 };
        let (mut tx, mut rx) = channel(64);
        let t = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                if i % 3 == 0 {
                    let batch = (i..(i + 4).min(N)).map(Box::new);
                    let len = batch.len() as u32;
                    if tx.push_all(batch).is_ok() {
                        i += len;
                    }
                } else if tx.push(Box::new(i)).is_ok() {
                    i += 1;
                }
                std::hint::spin_loop();
            }
        });
        let mut next = 0;
        while next < N {
            rx.pop_batch(7, |v| {
                assert_eq!(*v, next);
                next += 1;
            });
            std::hint::spin_loop();
        }
        t.join().unwrap();
        assert!(rx.is_empty());
    }
}
