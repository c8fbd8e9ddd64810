//! Batching controller (SEDA/Sandstorm): tunes how many events a replica handles per visit from
//! its measured output rate.
//!
//! Every window it measures events handled per second. While throughput holds (at least 0.9x
//! the best seen), it shrinks the batch by /1.2 — smaller batches mean lower latency and fairer
//! interleaving of stages. When throughput falls under 0.9x the best, the batch was too small to
//! amortise per-batch costs: it grows past where it was (x1.2 twice), and keeps growing x1.2
//! while each step improves throughput by more than 5% (without this upward probe a stage that
//! starts small never finds that larger batches pay). A swing of 5x in the rate means
//! the load changed, so the best is forgotten and the search starts again. Bounds 1..=1024.
//! Windows with too few events (an idle stage) are not judged.

use std::time::{Duration, Instant};

/// Tuning of a [`BatchController`].
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Measurement window.
    pub window: Duration,
    /// Starting batch size.
    pub initial: usize,
    /// Smallest batch.
    pub min: usize,
    /// Largest batch.
    pub max: usize,
    /// Fewest events for a window to be judged.
    pub min_events: u64,
}

impl Default for BatchConfig {
    fn default() -> BatchConfig {
        BatchConfig { window: Duration::from_millis(100), initial: 64, min: 1, max: 1024, min_events: 100 }
    }
}

/// One replica's batch-size controller (single-threaded; no allocation).
#[derive(Debug)]
pub struct BatchController {
    cfg: BatchConfig,
    batch: f64,
    best: f64,
    last_rate: f64,
    window_start: Option<Instant>,
    events: u64,
    /// The last move was a grow (so an improvement means: keep growing).
    grew: bool,
}

impl BatchController {
    /// A controller at `cfg.initial`.
    pub fn new(cfg: BatchConfig) -> BatchController {
        let batch = cfg.initial.clamp(cfg.min, cfg.max) as f64;
        BatchController { cfg, batch, best: 0.0, last_rate: 0.0, window_start: None, events: 0, grew: false }
    }

    /// The batch size to use now.
    pub fn batch(&self) -> usize {
        self.batch.round() as usize
    }

    /// Counts `n` handled events at `now`; at the end of a window adapts the batch size.
    pub fn record(&mut self, n: usize, now: Instant) {
        self.events += n as u64;
        let start = *self.window_start.get_or_insert(now);
        let dt = now.saturating_duration_since(start);
        if dt < self.cfg.window {
            return;
        }
        let events = std::mem::take(&mut self.events);
        self.window_start = Some(now);
        if events < self.cfg.min_events {
            return; // idle: nothing to learn
        }
        let rate = events as f64 / dt.as_secs_f64();
        if self.last_rate > 0.0 && (rate > 5.0 * self.last_rate || rate * 5.0 < self.last_rate) {
            self.best = 0.0; // the load changed: search again
        }
        self.last_rate = rate;
        // Steps are 20%, but at least one event: at small sizes 20% rounds to no change, and
        // the search would shuttle between two sizes without ever probing above them.
        let size = self.batch.round();
        if self.grew && rate > 1.05 * self.best {
            self.best = rate;
            self.batch = (self.batch * 1.2).max(size + 1.0); // growing pays: keep going
        } else if rate >= 0.9 * self.best {
            self.best = self.best.max(rate);
            self.batch = (self.batch / 1.2).min(size - 1.0); // throughput holds: try smaller
            self.grew = false;
        } else {
            // Too small to amortise per-batch costs: undo the shrink and probe above it.
            self.batch = (self.batch * 1.2 * 1.2).max(size + 2.0);
            self.grew = true;
        }
        self.batch = self.batch.clamp(self.cfg.min as f64, self.cfg.max as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage whose batch costs `fixed` plus `per` per event, driven at saturation for `secs`
    /// of simulated time. Returns the final batch size.
    fn run(ctl: &mut BatchController, fixed: Duration, per: Duration, secs: f64) -> usize {
        let t0 = Instant::now();
        let mut t = Duration::ZERO;
        while t.as_secs_f64() < secs {
            let b = ctl.batch();
            t += fixed + per * b as u32;
            ctl.record(b, t0 + t);
        }
        ctl.batch()
    }

    #[test]
    fn grows_from_a_tiny_batch() {
        // At batch 1-2, a 20% step rounds to no change: the search must still climb.
        let mut c = BatchController::new(BatchConfig { initial: 2, ..BatchConfig::default() });
        let b = run(&mut c, Duration::from_micros(200), Duration::from_micros(2), 10.0);
        assert!(b >= 16, "batch grew from 2: {b}");
    }

    #[test]
    fn grows_to_amortise_a_per_batch_cost() {
        // 100 µs per batch + 1 µs per event: batch 1 gives ~9.9k/s, batch 200 ~667k/s.
        let mut c = BatchController::new(BatchConfig { initial: 4, ..BatchConfig::default() });
        let b = run(&mut c, Duration::from_micros(100), Duration::from_micros(1), 30.0);
        assert!(b >= 50, "batch grew to amortise the fixed cost: {b}");
        let rate = |b: usize| b as f64 / (100e-6 + b as f64 * 1e-6);
        assert!(rate(b) >= 0.3 * rate(1024), "throughput within reach of the best: batch {b}");
    }

    #[test]
    fn shrinks_when_batching_buys_nothing() {
        // No per-batch cost: every batch size gives the same rate, so smaller is better.
        let mut c = BatchController::new(BatchConfig { initial: 512, ..BatchConfig::default() });
        let b = run(&mut c, Duration::ZERO, Duration::from_micros(2), 20.0);
        assert!(b <= 4, "batch shrank toward 1: {b}");
    }

    #[test]
    fn idle_windows_are_not_judged_and_bounds_hold() {
        let t0 = Instant::now();
        let mut c = BatchController::new(BatchConfig::default());
        for i in 1..100 {
            c.record(1, t0 + Duration::from_millis(100 * i)); // 10 events/s: idle
        }
        assert_eq!(c.batch(), 64);
        let mut c = BatchController::new(BatchConfig { initial: 5000, ..BatchConfig::default() });
        assert_eq!(c.batch(), 1024);
        c.record(1, t0);
        assert_eq!(c.batch(), 1024);
    }
}
