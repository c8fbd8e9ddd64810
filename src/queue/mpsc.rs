//! Bounded multi-producer single-consumer queue (Vyukov's sequence-stamped ring).
//!
//! Each slot carries a stamp: `pos` when free for the producer that claims position `pos`,
//! `pos + 1` once written. Producers claim positions with one CAS on `tail`; the single consumer
//! reads without any read-modify-write.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::{Backoff, CachePadded};

struct Slot<T> {
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// The shared ring. Use [`channel`] for the safe single-consumer split, or hold a `Queue`
/// directly where the single consumer is guaranteed by other means.
pub struct Queue<T> {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
    mask: usize,
}

// SAFETY: slot ownership is handed over by the stamp protocol (release on write, acquire on read);
// values cross threads, so `T: Send`.
unsafe impl<T: Send> Sync for Queue<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Queue<T> {}

impl<T> Queue<T> {
    /// A queue of `capacity` slots, rounded up to a power of two.
    ///
    /// # Panics
    /// If `capacity` is zero.
    pub fn new(capacity: usize) -> Queue<T> {
        assert!(capacity > 0, "mpsc capacity must be non-zero");
        let cap = capacity.next_power_of_two();
        let slots = (0..cap)
            .map(|i| Slot { stamp: AtomicUsize::new(i), value: UnsafeCell::new(MaybeUninit::uninit()) })
            .collect();
        Queue {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            slots,
            mask: cap - 1,
        }
    }

    /// Total slots.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Values queued (a snapshot).
    pub fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::Acquire);
        tail.wrapping_sub(self.head.load(Ordering::Acquire)).min(self.capacity())
    }

    /// Whether no value is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `value` from any thread, or hands it back if the queue is full.
    /// Lock-free: one CAS on the shared tail; no allocation.
    pub fn push(&self, value: T) -> Result<(), T> {
        let backoff = Backoff::new();
        let mut pos = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let stamp = slot.stamp.load(Ordering::Acquire);
            let diff = stamp.wrapping_sub(pos) as isize;
            if diff == 0 {
                match self.tail.compare_exchange_weak(pos, pos.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: the CAS made this producer the only owner of position `pos`,
                        // whose slot the consumer freed (stamp == pos, acquire above).
                        unsafe { (*slot.value.get()).write(value) };
                        slot.stamp.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(cur) => {
                        pos = cur;
                        backoff.spin();
                    }
                }
            } else if diff < 0 {
                // The slot still holds the value from one lap ago: full.
                return Err(value);
            } else {
                backoff.spin();
                pos = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Removes the oldest value.
    ///
    /// # Safety
    /// Only one thread may call `pop` at a time (single consumer).
    pub unsafe fn pop(&self) -> Option<T> {
        let pos = self.head.load(Ordering::Relaxed);
        let slot = &self.slots[pos & self.mask];
        if slot.stamp.load(Ordering::Acquire) != pos.wrapping_add(1) {
            return None;
        }
        // SAFETY: stamp == pos + 1 means the producer's write is complete and visible (acquire);
        // the caller guarantees no other consumer reads this slot.
        let v = unsafe { (*slot.value.get()).assume_init_read() };
        slot.stamp.store(pos.wrapping_add(self.capacity()), Ordering::Release);
        self.head.store(pos.wrapping_add(1), Ordering::Release);
        Some(v)
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self` makes this the only consumer.
        while unsafe { self.pop() }.is_some() {}
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpsc::Queue").field("capacity", &self.capacity()).field("len", &self.len()).finish()
    }
}

/// A cloneable sending half.
#[derive(Debug)]
pub struct Sender<T>(Arc<Queue<T>>);

/// The single receiving half.
#[derive(Debug)]
pub struct Receiver<T>(Arc<Queue<T>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

/// Creates a queue of `capacity` slots (rounded up to a power of two).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let q = Arc::new(Queue::new(capacity));
    (Sender(q.clone()), Receiver(q))
}

impl<T> Sender<T> {
    /// See [`Queue::push`].
    pub fn push(&self, value: T) -> Result<(), T> {
        self.0.push(value)
    }

    /// Values queued (a snapshot).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no value is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> Receiver<T> {
    /// Removes the oldest value.
    pub fn pop(&mut self) -> Option<T> {
        // SAFETY: `Receiver` is not Clone and `pop` takes `&mut self`: one consumer.
        unsafe { self.0.pop() }
    }

    /// Values queued (a snapshot).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no value is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_when_full() {
        let (tx, mut rx) = channel(2);
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        assert_eq!(tx.push(3), Err(3));
        assert_eq!(rx.pop(), Some(1));
        tx.push(3).unwrap();
        assert_eq!((rx.pop(), rx.pop(), rx.pop()), (Some(2), Some(3), None));
    }

    #[test]
    fn drops_unread_values() {
        let v = Arc::new(());
        let (tx, rx) = channel(4);
        tx.push(v.clone()).unwrap();
        tx.push(v.clone()).unwrap();
        drop((tx, rx));
        assert_eq!(Arc::strong_count(&v), 1);
    }

    #[test]
    fn producers_fan_in_without_loss() {
        const P: usize = 3;
        const N: usize = if cfg!(miri) { 100 } else { 200_000 };
        let (tx, mut rx) = channel(16);
        let handles: Vec<_> = (0..P)
            .map(|p| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..N {
                        let mut v = Box::new((p, i));
                        while let Err(back) = tx.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut next = [0usize; P];
        let mut got = 0;
        while got < P * N {
            match rx.pop() {
                Some(v) => {
                    let (p, i) = *v;
                    assert_eq!(next[p], i, "per-producer FIFO order");
                    next[p] += 1;
                    got += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        assert!(rx.pop().is_none());
    }
}
