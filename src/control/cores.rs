//! Core controller: how many of a stage's replicas (one per worker) take new events.
//!
//! A stage declared on several workers with [`crate::stage::StageConfig::elastic`] starts with
//! `min` active replicas. Once per tick the controller looks at the stage's queued events: when
//! the backlog stays above `threshold` for `up_after` ticks in a row, one more replica (on one
//! more core) is activated; when the stage has been idle (nothing queued) for `down_after`
//! ticks, one is deactivated, down to `min`. An inactive replica takes no new events from sinks
//! or injectors but still drains what it holds.

/// Tuning of a [`CoreController`].
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Replicas that are always active.
    pub min: usize,
    /// Backlog (events queued over all replicas) that counts as overloaded.
    pub threshold: u64,
    /// Overloaded ticks in a row before adding a replica.
    pub up_after: u32,
    /// Idle ticks in a row before removing one.
    pub down_after: u32,
}

impl CoreConfig {
    /// `min` replicas always on; add one after 3 ticks above `threshold`, remove one after 20
    /// idle ticks.
    pub fn new(min: usize, threshold: u64) -> CoreConfig {
        CoreConfig { min: min.max(1), threshold, up_after: 3, down_after: 20 }
    }
}

/// Decides the number of active replicas from the stage's backlog.
#[derive(Debug)]
pub struct CoreController {
    cfg: CoreConfig,
    max: usize,
    active: usize,
    high: u32,
    idle: u32,
}

impl CoreController {
    /// A controller for a stage with `max` replicas, starting at `cfg.min`.
    pub fn new(cfg: CoreConfig, max: usize) -> CoreController {
        let active = cfg.min.clamp(1, max.max(1));
        CoreController { cfg, max: max.max(1), active, high: 0, idle: 0 }
    }

    /// Replicas that should take new events.
    pub fn active(&self) -> usize {
        self.active
    }

    /// One tick's observation: events queued over all replicas. Returns the active count.
    pub fn update(&mut self, queued: u64) -> usize {
        if queued > self.cfg.threshold {
            self.high += 1;
            self.idle = 0;
        } else if queued == 0 {
            self.idle += 1;
            self.high = 0;
        } else {
            self.high = 0;
            self.idle = 0;
        }
        if self.high >= self.cfg.up_after && self.active < self.max {
            self.active += 1;
            self.high = 0;
        } else if self.idle >= self.cfg.down_after && self.active > self.cfg.min {
            self.active -= 1;
            self.idle = 0;
        }
        self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_under_sustained_backlog_and_removes_when_idle() {
        let mut c = CoreController::new(CoreConfig::new(1, 10), 3);
        assert_eq!(c.active(), 1);
        // A short spike is not enough.
        c.update(100);
        c.update(100);
        c.update(5);
        assert_eq!(c.update(100), 1);
        // Sustained backlog: one more every 3 ticks, capped at 3.
        assert_eq!((c.update(100), c.update(100)), (1, 2));
        for _ in 0..20 {
            c.update(1000);
        }
        assert_eq!(c.active(), 3);
        // Some work but no backlog: hold.
        for _ in 0..50 {
            c.update(3);
        }
        assert_eq!(c.active(), 3);
        // Idle: back down to min, one per 20 idle ticks.
        for _ in 0..20 {
            c.update(0);
        }
        assert_eq!(c.active(), 2);
        for _ in 0..100 {
            c.update(0);
        }
        assert_eq!(c.active(), 1);
    }
}
