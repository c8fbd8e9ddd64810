//! A single-writer log-linear latency histogram (microseconds), readable from any thread.
//!
//! Values below 8 µs have their own bucket; above, each power of two is split into 8 linear
//! sub-buckets (≤ 12.5% relative error), up to ~2^34 µs. Recording is one relaxed load and
//! store: no lock, no allocation, no read-modify-write.

use super::Counter;

const BUCKETS: usize = 8 + 31 * 8;

/// A latency histogram written by one worker.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[Counter]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: (0..BUCKETS).map(|_| Counter::default()).collect() }
    }
}

fn bucket(us: u64) -> usize {
    if us < 8 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // >= 3
    let sub = ((us >> (e - 3)) & 7) as usize;
    (8 + (e - 3) * 8 + sub).min(BUCKETS - 1)
}

/// Upper bound (inclusive) of bucket `i`, in µs.
fn upper(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let e = (i - 8) / 8 + 3;
    let sub = ((i - 8) % 8) as u64;
    ((8 + sub + 1) << (e - 3)) - 1
}

impl Histogram {
    /// Records `n` samples of `us` microseconds. Only the owning worker may call this.
    #[inline]
    pub fn record(&self, us: u64, n: u64) {
        self.buckets[bucket(us)].add(n);
    }

    /// Copies the counts.
    pub fn snapshot(&self) -> HistSnapshot {
        HistSnapshot { counts: self.buckets.iter().map(Counter::get).collect() }
    }
}

/// Counts of a histogram (or the sum of several).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistSnapshot {
    counts: Vec<u64>,
}

impl HistSnapshot {
    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &HistSnapshot) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value at quantile `q` (0..=1), in µs (upper bound of its bucket); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i);
            }
        }
        upper(self.counts.len() - 1)
    }

    /// Counts since `earlier` (for windows over monotone snapshots).
    pub fn since(&self, earlier: &HistSnapshot) -> HistSnapshot {
        let counts =
            self.counts.iter().enumerate().map(|(i, &c)| c - earlier.counts.get(i).copied().unwrap_or(0)).collect();
        HistSnapshot { counts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_and_tight() {
        let mut last = 0;
        for us in 0..100_000u64 {
            let b = bucket(us);
            assert!(b >= last);
            last = b;
            assert!(upper(b) >= us, "{us} fits its bucket");
            assert!(upper(b) as f64 <= us as f64 * 1.125 + 1.0, "{us}: bucket bound {} too loose", upper(b));
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for us in 1..=100 {
            h.record(us * 10, 1);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        let p90 = s.quantile(0.9);
        assert!((900..=1024).contains(&p90), "p90 {p90}");
        assert!(s.quantile(0.5) >= 500 && s.quantile(0.5) <= 576);
        assert_eq!(HistSnapshot::default().quantile(0.9), 0);
        let mut m = s.clone();
        m.merge(&s);
        assert_eq!(m.count(), 200);
        assert_eq!(m.since(&s).count(), 100);
    }
}
