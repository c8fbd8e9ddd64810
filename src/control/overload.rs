//! Adaptive overload control (Welsh & Culler, "Adaptive Overload Control for Busy Internet
//! Servers", USITS 2003), as a token bucket in front of a stage.
//!
//! Every window the controller takes the 90th percentile of the response times observed
//! (queue wait plus service) and moves the admission rate: above the target it first drops to
//! the completion rate measured in that window (the stage's capacity; this makes convergence
//! from a far too high rate take one window, not dozens), then is divided by up to `decrease` (1.2)
//! when the percentile exceeds the target (the full factor from 1.5 x target, proportionally
//! less below that), raised by `increase` when it is below
//! `headroom * target` (5% per window while the rate is under 0.8x the completion rate measured
//! in the last congested window — the stage's capacity — and 1% above that, as TCP climbs to its
//! threshold); the window right after a decrease is not judged, since its responses
//! were queued before the decrease took effect (without this, stale backlog drives the rate
//! down several times in a row and goodput collapses). Admission draws a token from a bucket refilled at that rate; a class
//! `c` of `classes` (0 the lowest) is admitted only while the bucket holds more than its
//! reserve, so as tokens run short the lowest class is refused first. The bucket is a
//! [`Gate`] shared with every producer of the replica, on any worker; the controller, which
//! lives with the replica, only sets its rate.
//!
//! All methods take the time as an argument, so the controller can be driven by a simulated
//! clock in tests; none allocates or locks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Gate;
use crate::metrics::Histogram;

/// Tuning of an [`OverloadController`].
#[derive(Clone, Debug)]
pub struct OverloadConfig {
    /// The 90th-percentile response time to hold.
    pub target: Duration,
    /// Length of a measurement window.
    pub window: Duration,
    /// Fewest samples for a window to count (a quieter window extends).
    pub min_samples: u64,
    /// Starting admission rate, per second.
    pub initial_rate: f64,
    /// Bounds of the admission rate, per second.
    pub min_rate: f64,
    /// Upper bound of the admission rate, per second.
    pub max_rate: f64,
    /// Multiplicative decrease factor when above target.
    pub decrease: f64,
    /// Additive increase per window, as a fraction of the current rate (at least `min_rate`).
    pub increase: f64,
    /// Increase only when the percentile is below `headroom * target` (default 0.8: the band
    /// 0.8..1.0 x target holds the rate, which keeps overshoots of the target small).
    pub headroom: f64,
    /// Bucket depth in seconds of the current rate (burst allowance).
    pub burst: f64,
    /// Number of priority classes (class 0 is shed first).
    pub classes: u8,
    /// The fraction of `target` the controller steers to (default 0.9): responses also spend
    /// time outside what the samples measure (the network path, the loop iteration in
    /// progress), so aiming a little under the target keeps what clients see within it.
    pub setpoint: f64,
    /// Response times come from [`crate::stage::Sink::observe_response`] (for example the
    /// stage that finally answers a request, measuring from its arrival), not from the stage's
    /// own queue wait plus service time.
    pub external_samples: bool,
}

impl OverloadConfig {
    /// Defaults from the paper: /1.2 above target, additive increase below 0.9 x target.
    pub fn new(target: Duration) -> OverloadConfig {
        OverloadConfig {
            target,
            window: Duration::from_millis(100),
            min_samples: 20,
            initial_rate: 10_000.0,
            min_rate: 10.0,
            max_rate: 10_000_000.0,
            decrease: 1.2,
            increase: 0.02,
            headroom: 0.8,
            burst: 0.01,
            classes: 1,
            setpoint: 0.9,
            external_samples: false,
        }
    }
}

/// One stage's admission controller (one per replica; single-threaded).
#[derive(Debug)]
pub struct OverloadController {
    cfg: OverloadConfig,
    /// The bucket every producer draws from; its rate is the controller's decision.
    gate: Arc<Gate>,
    /// Time zero of the gate's clock: the runtime's epoch, or the first time seen.
    epoch: Option<Instant>,
    window_start: Option<Instant>,
    window: Histogram,
    window_base: crate::metrics::HistSnapshot,
    admitted: u64,
    refused: u64,
    last_p90: Duration,
    /// Skip judging the window after a decrease: its responses were queued before it.
    hold: bool,
    /// Completion rate measured in the last window that triggered a decrease: the capacity.
    ceiling: f64,
    /// Samples in the current window.
    pending: u64,
}

impl OverloadController {
    /// A controller starting at `cfg.initial_rate`, with a gate of its own.
    pub fn new(cfg: OverloadConfig) -> OverloadController {
        let gate = Arc::new(Self::gate_for(&cfg));
        Self::with_gate(cfg, gate, None)
    }

    /// The gate a controller with `cfg` steers (full, at the initial rate).
    pub(crate) fn gate_for(cfg: &OverloadConfig) -> Gate {
        Gate::new(cfg.initial_rate.clamp(cfg.min_rate, cfg.max_rate), cfg.burst, cfg.classes)
    }

    /// A controller steering `gate`, whose clock counts microseconds from `epoch` (the
    /// runtime's; `None`: from the first time the controller sees).
    pub(crate) fn with_gate(cfg: OverloadConfig, gate: Arc<Gate>, epoch: Option<Instant>) -> OverloadController {
        gate.set_rate(cfg.initial_rate.clamp(cfg.min_rate, cfg.max_rate));
        OverloadController {
            gate,
            epoch,
            window_start: None,
            window: Histogram::default(),
            window_base: Default::default(),
            admitted: 0,
            refused: 0,
            last_p90: Duration::ZERO,
            hold: false,
            ceiling: f64::INFINITY,
            pending: 0,
            cfg,
        }
    }

    /// `now` on the gate's clock.
    fn clock(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_micros() as u32
    }

    /// Decides whether to admit an event of `class` (clamped to `classes - 1`) at `now`.
    #[inline]
    pub fn admit(&mut self, class: u8, now: Instant) -> bool {
        self.admit_n(class, 1, now)
    }

    /// Admits `n` events of `class` together, or none of them (through the shared gate;
    /// producers on other workers call the gate directly).
    pub fn admit_n(&mut self, class: u8, n: usize, now: Instant) -> bool {
        let t = self.clock(now);
        let ok = self.gate.admit_n(class, n, t);
        if ok {
            self.admitted += n as u64;
        } else {
            self.refused += n as u64;
        }
        ok
    }

    /// Records one response time and, at the end of a window, adapts the rate.
    #[inline]
    pub fn observe(&mut self, response: Duration, now: Instant) {
        if self.pending == 0 {
            // A window starts at its first sample: idle time before it would dilute the
            // completion rate measured over the window.
            self.window_start = Some(now);
        }
        self.pending += 1;
        self.window.record(response.as_micros() as u64, 1);
        self.tick(now);
    }

    /// Closes the window if it is over: the adaptation step.
    pub fn tick(&mut self, now: Instant) {
        let Some(start) = self.window_start else { return };
        if now.saturating_duration_since(start) < self.cfg.window {
            return;
        }
        let snap = self.window.snapshot();
        let w = snap.since(&self.window_base);
        if w.count() < self.cfg.min_samples {
            return; // too few samples: extend the window
        }
        let p90 = Duration::from_micros(w.quantile(0.9));
        let mut rate = self.gate.rate();
        let prev = std::mem::replace(&mut self.last_p90, p90);
        let draining = p90.as_secs_f64() < prev.as_secs_f64() * 0.9;
        let target = self.cfg.target.mul_f64(self.cfg.setpoint);
        if std::mem::take(&mut self.hold) || (p90 > target && draining) {
            // After a decrease, or while the percentile is already falling, the backlog that
            // caused it is draining: cutting again would act on stale measurements.
        } else if p90 > target {
            // Full `decrease` from 1.5 x target up; proportionally less for a slight overshoot,
            // so the rate settles just under capacity instead of see-sawing 20% below it.
            let over = (p90.as_secs_f64() / target.as_secs_f64() - 1.0) * 2.0;
            // While congested, the stage completes events at its capacity.
            let secs = now.saturating_duration_since(start).as_secs_f64().max(1e-6);
            self.ceiling = w.count() as f64 / secs;
            // Never keep admitting faster than the stage was just seen to complete, nor cut
            // below half of it (a backlog cannot grow at half the measured capacity).
            let cut = rate.min(self.ceiling) / (1.0 + (self.cfg.decrease - 1.0) * over.min(1.0));
            rate = cut.max(self.ceiling / 2.0);
            self.hold = true;
        } else if p90.as_secs_f64() < self.cfg.headroom * target.as_secs_f64() {
            // Far below the capacity measured at the last cut: climb faster; near it, slowly.
            let fast = rate < 0.8 * self.ceiling;
            let step = if fast { self.cfg.increase * 2.5 } else { self.cfg.increase / 2.0 };
            rate += (rate * step).max(self.cfg.min_rate);
        }
        self.gate.set_rate(rate.clamp(self.cfg.min_rate, self.cfg.max_rate));
        self.window_base = snap;
        self.window_start = Some(now);
        self.pending = 0;
    }

    /// Current admission rate, per second.
    pub fn rate(&self) -> f64 {
        self.gate.rate()
    }

    /// The last window's 90th-percentile response time.
    pub fn last_p90(&self) -> Duration {
        self.last_p90
    }

    /// Admitted and refused counts, of the calls made through this controller.
    pub fn counts(&self) -> (u64, u64) {
        (self.admitted, self.refused)
    }

    /// The configuration.
    pub fn config(&self) -> &OverloadConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A stage that serves `capacity` events per second in FIFO order, offered `offered`
    /// events per second in `classes` round-robin classes, simulated in 100 µs steps.
    /// Returns (admitted per class, refused per class, p90 of admitted response times in the
    /// last `measure` seconds, goodput/s in that period, controller).
    fn simulate(
        capacity: f64,
        offered: f64,
        classes: u8,
        secs: f64,
        measure: f64,
        ctl: Option<OverloadController>,
    ) -> (Vec<u64>, Vec<u64>, Duration, f64) {
        let t0 = Instant::now();
        let step = Duration::from_micros(100);
        let mut ctl = ctl;
        let mut queue: VecDeque<Duration> = VecDeque::new();
        let (mut arr_acc, mut srv_acc) = (0.0, 0.0);
        let mut admitted = vec![0u64; classes as usize];
        let mut refused = vec![0u64; classes as usize];
        let mut lat = Vec::new();
        let mut served_measured = 0u64;
        let mut k = 0u64;
        let steps = (secs / step.as_secs_f64()) as u64;
        let measure_from = Duration::from_secs_f64(secs - measure);
        for i in 0..steps {
            let t = step * i as u32;
            let now = t0 + t;
            arr_acc += offered * step.as_secs_f64();
            while arr_acc >= 1.0 {
                arr_acc -= 1.0;
                let class = (k % classes as u64) as u8;
                k += 1;
                let ok = ctl.as_mut().is_none_or(|c| c.admit(class, now));
                if ok {
                    admitted[class as usize] += 1;
                    queue.push_back(t);
                } else {
                    refused[class as usize] += 1;
                }
            }
            srv_acc += capacity * step.as_secs_f64();
            while srv_acc >= 1.0 {
                srv_acc -= 1.0;
                let Some(arrived) = queue.pop_front() else {
                    srv_acc = 0.0; // idle capacity is not banked
                    break;
                };
                let resp = t + step - arrived;
                if let Some(c) = ctl.as_mut() {
                    c.observe(resp, now);
                }
                if t >= measure_from {
                    lat.push(resp);
                    served_measured += 1;
                }
            }
            if let Some(c) = ctl.as_mut() {
                c.tick(now);
            }
        }
        lat.sort();
        let p90 = lat.get(lat.len() * 9 / 10).copied().unwrap_or_default();
        (admitted, refused, p90, served_measured as f64 / measure)
    }

    #[test]
    fn holds_the_target_under_2x_and_4x_overload() {
        let target = Duration::from_millis(5);
        for factor in [2.0, 4.0] {
            let ctl = OverloadController::new(OverloadConfig { initial_rate: 20_000.0, ..OverloadConfig::new(target) });
            let (_, refused, p90, goodput) = simulate(10_000.0, 10_000.0 * factor, 1, 8.0, 4.0, Some(ctl));
            assert!(refused[0] > 0, "{factor}x: excess is refused");
            assert!(p90 <= target.mul_f64(1.2), "{factor}x: p90 {p90:?} within 1.2 x target");
            assert!(goodput >= 9_000.0, "{factor}x: goodput {goodput:.0}/s >= 90% of capacity");
        }
    }

    #[test]
    fn without_control_latency_grows_without_bound() {
        let (_, refused, p90, _) = simulate(10_000.0, 20_000.0, 1, 4.0, 2.0, None);
        assert_eq!(refused[0], 0);
        assert!(p90 > Duration::from_secs(1), "uncontrolled p90 {p90:?}");
    }

    #[test]
    fn admits_everything_below_capacity() {
        let ctl = OverloadController::new(OverloadConfig::new(Duration::from_millis(5)));
        let (admitted, refused, _, goodput) = simulate(10_000.0, 5_000.0, 1, 6.0, 3.0, Some(ctl));
        let refused_share = refused[0] as f64 / (admitted[0] + refused[0]) as f64;
        assert!(refused_share < 0.01, "refused {refused_share:.3} at half load");
        assert!(goodput > 4_900.0);
    }

    #[test]
    fn lower_classes_are_shed_first() {
        let mut cfg = OverloadConfig::new(Duration::from_millis(5));
        cfg.classes = 2;
        cfg.initial_rate = 20_000.0;
        let (admitted, refused, p90, _) =
            simulate(10_000.0, 20_000.0, 2, 12.0, 4.0, Some(OverloadController::new(cfg)));
        assert!(refused[0] > refused[1] * 2, "class 0 refused {} vs class 1 {}", refused[0], refused[1]);
        assert!(admitted[1] > admitted[0], "class 1 got more through");
        assert!(p90 <= Duration::from_millis(6), "p90 {p90:?}");
    }

    #[test]
    fn batches_are_admitted_whole_or_not_at_all() {
        let t0 = Instant::now();
        // 1000/s with 10 ms of burst: a bucket of 10 tokens.
        let mut c = OverloadController::new(OverloadConfig {
            initial_rate: 1000.0,
            ..OverloadConfig::new(Duration::from_millis(5))
        });
        assert!(c.admit_n(0, 8, t0));
        assert!(!c.admit_n(0, 8, t0), "2 tokens left: a batch of 8 is refused whole");
        assert!(c.admit_n(0, 2, t0), "and nothing was taken by the refusal");
        assert!(!c.admit(0, t0));
        assert!(c.admit_n(0, 5, t0 + Duration::from_millis(5)), "5 ms later: 5 tokens");
        assert_eq!(c.counts(), (15, 9));
    }

    #[test]
    fn rate_moves_by_the_rules() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = OverloadController::new(OverloadConfig {
            initial_rate: 1200.0,
            min_samples: 1,
            setpoint: 1.0,
            ..OverloadConfig::new(ms(10))
        });
        // One window: a sample opens it at `at`, one 100 ms later closes and judges it.
        let window = |c: &mut OverloadController, resp: Duration, at: u64, n: usize| {
            for _ in 0..n {
                c.observe(resp, t0 + ms(at));
            }
            c.observe(resp, t0 + ms(at + 100));
        };
        window(&mut c, ms(50), 0, 150);
        // 151 completions in 0.1 s: capacity 1510/s; 1200 is under it, so 1200 / 1.2.
        assert!((c.rate() - 1000.0).abs() < 1e-6, "far above target: 1200 / 1.2 = {}", c.rate());
        window(&mut c, ms(50), 200, 1);
        assert!((c.rate() - 1000.0).abs() < 1e-6, "the window after a decrease is not judged");
        window(&mut c, ms(4), 400, 1);
        assert!((c.rate() - 1050.0).abs() < 1e-6, "under 0.8 x capacity: +5%: {}", c.rate());
        // 8.6 ms lands in the bucket bounded by 9.2 ms: between 0.9x and 1x target.
        window(&mut c, Duration::from_micros(8_600), 600, 1);
        assert!((c.rate() - 1050.0).abs() < 1e-6, "between 0.9x and 1x target: hold");
        window(&mut c, ms(1), 800, 1);
        window(&mut c, ms(1), 1000, 1);
        assert!((c.rate() - 1050.0 * 1.05 * 1.05).abs() < 1e-6, "{}", c.rate());
        window(&mut c, ms(1), 1200, 1);
        let fast = 1050.0 * 1.05 * 1.05 * 1.05; // 1215.5: now above 0.8 x 1510
        assert!((c.rate() - fast).abs() < 1e-6, "{}", c.rate());
        window(&mut c, ms(1), 1400, 1);
        assert!((c.rate() - fast * 1.01).abs() < 1e-6, "above 0.8 x capacity: +1%: {}", c.rate());
        // A long overshoot cannot drive the rate under half the measured capacity.
        for k in 0..20 {
            window(&mut c, ms(500 + 100 * k), 1600 + 200 * k, 200);
        }
        assert!(c.rate() >= 1000.0, "floor at capacity / 2: {}", c.rate());
        // The default setpoint steers to 0.9 x target: a p90 of 9.2 ms (the 8.6 ms bucket) is
        // over it and cuts.
        let mut e = OverloadController::new(OverloadConfig {
            min_samples: 1,
            initial_rate: 1000.0,
            ..OverloadConfig::new(ms(10))
        });
        window(&mut e, Duration::from_micros(8_600), 0, 150);
        assert!(e.rate() < 1000.0, "cut at 0.92 x target with setpoint 0.9: {}", e.rate());
        // An idle stretch before a window does not dilute the measured capacity.
        let mut d = OverloadController::new(OverloadConfig { min_samples: 1, ..OverloadConfig::new(ms(10)) });
        d.tick(t0);
        window(&mut d, ms(50), 5_000, 999);
        assert!(d.rate() >= 10_000.0 / 1.2 - 1.0, "capacity measured over the window only: {}", d.rate());
    }
}
