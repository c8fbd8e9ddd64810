//! The admission gate of one replica: a token bucket that every producer consults, on any
//! worker, and that the replica's [`OverloadController`](super::OverloadController) steers by
//! setting its rate.
//!
//! The bucket's level and the time of its last refill share one `AtomicU64`, so taking tokens
//! is a single compare-and-swap (retried only when another producer got there first). Times
//! are the runtime's loop clock: microseconds since its epoch, wrapping at 32 bits (71 min).

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// A gap this large between a producer's clock and the last refill means the bucket sat idle
/// through a wrap of the 32-bit clock (or longer): it is simply full.
const FAR: i64 = 1 << 30;

/// A token bucket shared by all producers into one replica.
#[derive(Debug)]
pub struct Gate {
    /// `tokens: f32` in the high half, the last refill's clock (µs) in the low half.
    state: CachePadded<AtomicU64>,
    /// Tokens per second, as `f64` bits.
    rate: AtomicU64,
    /// Bucket depth in seconds of the rate.
    burst: f64,
    classes: u8,
}

fn pack(tokens: f32, at: u32) -> u64 {
    u64::from(tokens.to_bits()) << 32 | u64::from(at)
}

fn unpack(s: u64) -> (f32, u32) {
    (f32::from_bits((s >> 32) as u32), s as u32)
}

impl Gate {
    /// A full bucket refilled at `rate` per second, `burst` seconds deep, with `classes`
    /// priority classes.
    pub fn new(rate: f64, burst: f64, classes: u8) -> Gate {
        let g = Gate { state: CachePadded::new(AtomicU64::new(0)), rate: AtomicU64::new(0), burst, classes };
        g.set_rate(rate);
        g.state.store(pack(g.depth(rate) as f32, 0), Ordering::Relaxed);
        g
    }

    fn depth(&self, rate: f64) -> f64 {
        (rate * self.burst).max(1.0)
    }

    /// The refill rate, per second.
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    /// Sets the refill rate (the controller's decision); tokens already in the bucket stay.
    pub fn set_rate(&self, rate: f64) {
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Takes `n` tokens for events of `class` (clamped to `classes - 1`; 0 is the lowest) at
    /// loop-clock time `now_us`, or none. A class leaves a reserve for the classes above it,
    /// so the lowest is refused first as tokens run short.
    ///
    /// Hot path: no allocation, no lock; one CAS on success, none on refusal.
    pub fn admit_n(&self, class: u8, n: usize, now_us: u32) -> bool {
        let rate = self.rate();
        let depth = self.depth(rate);
        let classes = self.classes.max(1);
        let c = class.min(classes - 1);
        let reserve = depth * f64::from(classes - 1 - c) / f64::from(classes);
        let need = n as f64;
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (tokens, at) = unpack(cur);
            let dt = i64::from(now_us.wrapping_sub(at) as i32);
            let (tokens, at) = if dt.abs() >= FAR {
                (depth, now_us)
            } else if dt > 0 {
                ((f64::from(tokens) + dt as f64 * rate / 1e6).min(depth), now_us)
            } else {
                // Another worker's clock ran a little ahead: nothing to add yet.
                (f64::from(tokens).min(depth), at)
            };
            if tokens < need + reserve {
                return false;
            }
            let next = pack((tokens - need) as f32, at);
            match self.state.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_the_rate_up_to_the_depth() {
        // 1000/s, 10 ms deep: 10 tokens.
        let g = Gate::new(1000.0, 0.01, 1);
        assert!(g.admit_n(0, 10, 0));
        assert!(!g.admit_n(0, 1, 0), "empty");
        assert!(g.admit_n(0, 1, 1000), "1 ms later: one token");
        assert!(!g.admit_n(0, 1, 1000));
        assert!(g.admit_n(0, 10, 1_000_000), "a second later: full again, not 1000");
        assert!(!g.admit_n(0, 1, 1_000_000));
    }

    #[test]
    fn slow_rates_accumulate_fractions() {
        // 10/s: a token per 100 ms, taken from calls every 50 µs.
        let g = Gate::new(10.0, 0.01, 1);
        assert!(g.admit_n(0, 1, 0));
        let mut admitted_at = None;
        for t in (50..200_000u32).step_by(50) {
            if g.admit_n(0, 1, t) {
                admitted_at = Some(t);
                break;
            }
        }
        let t = admitted_at.expect("a token came back");
        assert!((99_000..=101_000).contains(&t), "after ~100 ms: {t}");
    }

    #[test]
    fn lower_classes_leave_a_reserve() {
        let g = Gate::new(1000.0, 0.01, 2); // 10 tokens; class 0 must leave 5
        assert!(g.admit_n(0, 5, 0));
        assert!(!g.admit_n(0, 1, 0), "class 0 stops at the reserve");
        assert!(g.admit_n(1, 5, 0), "class 1 may take it");
    }

    #[test]
    fn clocks_slightly_behind_and_wrapped_are_safe() {
        let g = Gate::new(1000.0, 0.01, 1);
        assert!(g.admit_n(0, 10, 5000));
        assert!(!g.admit_n(0, 1, 4990), "a clock 10 µs behind adds nothing");
        assert!(g.admit_n(0, 1, 6000), "and the refill still counts from 5000");
        // Idle across the 32-bit wrap: full, not stuck.
        assert!(g.admit_n(0, 10, 6000u32.wrapping_add(3 << 30)));
    }

    #[test]
    fn producers_on_many_threads_never_take_more_than_there_is() {
        // No refill (rate ~0 over the test's clock): exactly the depth gets through.
        let g = std::sync::Arc::new(Gate::new(100_000.0, 0.01, 1)); // 1000 tokens
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..if cfg!(miri) { 300 } else { 1000 }).filter(|_| g.admit_n(0, 1, 0)).count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
