//! The hot path does not allocate: once connections are open and warm, receiving a message,
//! passing it through a stage (on the same worker or across cores) and sending it back costs
//! the worker threads no heap allocation. Checked with `metrics::CountingAlloc` as the global
//! allocator: each worker publishes the allocations made on its own thread.

mod common;

use std::time::Duration;

use common::*;
use ringstage::prelude::*;

#[global_allocator]
static ALLOC: ringstage::metrics::CountingAlloc = ringstage::metrics::CountingAlloc::system();

/// Every worker's published allocation count, once the workers are idle (a worker publishes
/// its count before it sleeps).
fn worker_allocations(rt: &Runtime) -> Vec<u64> {
    std::thread::sleep(Duration::from_millis(100));
    rt.metrics().workers.iter().map(|w| w.allocations).collect()
}

/// Round trips of 64-byte messages on each of `streams`, one message in flight on each.
fn ping_pong(streams: &mut [std::net::TcpStream], rounds: usize) {
    use std::io::{Read, Write};
    let msg = pattern(7, 64);
    let mut got = [0u8; 64];
    for _ in 0..rounds {
        for s in streams.iter_mut() {
            s.write_all(&msg).unwrap();
        }
        for s in streams.iter_mut() {
            s.read_exact(&mut got).unwrap();
            assert_eq!(&got[..], &msg[..], "echoed unchanged");
        }
    }
}

/// Allocations on each worker thread over `rounds` round trips on 16 warm connections.
fn allocs_in_steady_state(workers: usize, echo_worker: usize, rounds: usize) -> Vec<u64> {
    let (rt, addr) = echo_server(Runtime::builder(workers), echo_worker, |c| c);
    let mut streams: Vec<_> = (0..16).map(|_| connect(addr)).collect();
    // Warm up: accepts, first receives, queues and pools reach their working sizes.
    ping_pong(&mut streams, 200);
    let before = worker_allocations(&rt);
    assert!(before.iter().all(|&n| n > 0), "the count is live: every worker allocated while starting: {before:?}");
    ping_pong(&mut streams, rounds);
    let after = worker_allocations(&rt);
    let m = rt.metrics();
    let echo = m.stage("echo").unwrap();
    assert!(echo.processed >= 16 * (200 + rounds as u64), "every message passed the echo stage: {echo:?}");
    drop(streams);
    rt.shutdown();
    rt.join().unwrap();
    after.iter().zip(&before).map(|(a, b)| a - b).collect()
}

#[test]
fn echo_on_the_receiving_worker_does_not_allocate_per_message() {
    let n = allocs_in_steady_state(1, 0, 3000);
    assert_eq!(n, [0], "worker allocations over 48,000 echoed messages");
}

#[test]
fn echo_across_cores_does_not_allocate_per_message() {
    // Every message crosses cores twice (net stage on worker 0, echo on worker 1).
    let n = allocs_in_steady_state(2, 1, 3000);
    assert_eq!(n, [0, 0], "worker allocations over 48,000 messages echoed across cores");
}
