//! The dynamic stage: renders a page with a configurable amount of CPU work per request, so
//! the server can be driven past its capacity on a small machine. With `--overload-target-ms`
//! it runs SEDA's adaptive admission control: the cache stage's offers are refused (503) once
//! the 90th-percentile response time would exceed the target.

use std::time::{Duration, Instant};

use ringstage::prelude::*;

use crate::cache::CacheEvent;
use crate::parse::Request;

pub struct Dynamic {
    pub cache: Sink<CacheEvent>,
    pub net: Sink<NetCmd>,
    pub work: Duration,
    pub rendered: u64,
}

impl Handler for Dynamic {
    type Event = Request;

    fn handle(&mut self, req: Request, _cx: &mut Context<'_>) {
        // The "template": an FNV-1a hash chain for `work` of CPU time.
        let t0 = Instant::now();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ self.rendered;
        let mut rounds = 0u64;
        while t0.elapsed() < self.work {
            for _ in 0..64 {
                h = (h ^ (rounds & 0xff)).wrapping_mul(0x0100_0000_01b3);
                rounds += 1;
            }
        }
        self.rendered += 1;
        let body = format!(
            "<!doctype html><title>dynamic</title><p>page {} rendered on worker {} in {} hash rounds: {h:016x}</p>\n",
            self.rendered,
            req.conn.worker(),
            rounds
        );
        let ev = CacheEvent::Rendered { req, body: IoBuf::from(body.into_bytes()) };
        if let Err(CacheEvent::Rendered { req, .. }) = self.cache.try_enqueue(ev) {
            // The cache stage is full: close the connection rather than leave it waiting.
            let _ = self.net.try_enqueue(NetCmd::Close { conn: req.conn });
        }
    }
}
