//! The slow stage: commands that take milliseconds (`DEBUG SLEEP`, standing in for a call into
//! a blocking library or a slow backend), kept off the core that serves the fast commands.
//!
//! Its handler blocks, on purpose and as the only one in this project: the stage has a worker
//! of its own, so a block holds up only the slow commands queued behind it. Its queue is
//! bounded; when it is full the command stage answers `-BUSY` at once.

use std::collections::VecDeque;
use std::time::Duration;

use ringstage::prelude::*;

/// A slow command of `conn`: take `dur`.
#[derive(Debug)]
pub struct SlowReq {
    pub conn: Conn,
    pub dur: Duration,
}

/// A slow command of `conn` finished (its reply is `+OK`).
#[derive(Debug)]
pub struct SlowDone {
    pub conn: Conn,
}

pub struct Slow {
    pub resume: Sink<SlowDone>,
    /// Completions the resume stage refused for now (its queue was full): retried before the
    /// next command and on every tick, never dropped, since the connection waits for them.
    pub undelivered: VecDeque<SlowDone>,
}

impl Slow {
    fn deliver(&mut self) {
        while let Some(d) = self.undelivered.pop_front() {
            if let Err(d) = self.resume.try_enqueue(d) {
                self.undelivered.push_front(d);
                break;
            }
        }
    }
}

impl Handler for Slow {
    type Event = SlowReq;

    fn handle(&mut self, req: SlowReq, _cx: &mut Context<'_>) {
        self.deliver();
        std::thread::sleep(req.dur);
        self.undelivered.push_back(SlowDone { conn: req.conn });
        self.deliver();
    }

    fn tick(&mut self, _cx: &mut Context<'_>) {
        self.deliver();
    }
}
