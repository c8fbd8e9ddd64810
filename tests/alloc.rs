//! The hot path does not allocate: once connections are open and warm, receiving a message,
//! passing it through a stage (on the same worker or across cores) and sending it back costs
//! the worker threads no heap allocation. Checked with a counting global allocator that counts
//! only on the runtime's worker threads (flagged by the handler factories, which run there).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use ringstage::prelude::*;

/// `System`, counting allocations (and reallocations) made on flagged threads.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // `const` and without a destructor: usable from inside the allocator.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only an atomic and a const thread-local, and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Does nothing: placed on a worker only so that its factory flags that worker's thread.
struct Marker;

impl Handler for Marker {
    type Event = ();
    fn handle(&mut self, _: (), _: &mut Context<'_>) {}
}

/// An echo server whose worker threads count their allocations: the net stage on worker 0,
/// the echo stage on `echo_worker`.
fn counted_echo_server(workers: usize, echo_worker: usize) -> (Runtime, SocketAddr) {
    let mut b = Runtime::builder(workers);
    for w in 0..workers {
        let m = b.stage::<()>(&format!("marker{w}"), StageConfig::on([w]));
        b.handler(m, |_| {
            COUNTED.with(|c| c.set(true));
            Marker
        });
    }
    serve(b, "echo", StageConfig::on([echo_worker]), |c| c, |net| Echo { net })
}

/// Round trips of 64-byte messages on `conns` connections, one message in flight on each.
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

/// Allocations on the worker threads over `rounds` round trips on 16 warm connections.
fn allocs_in_steady_state(workers: usize, echo_worker: usize, rounds: usize) -> u64 {
    // One runtime at a time: the count is process-wide, and another test's runtime starting
    // or stopping would allocate inside this one's window.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (rt, addr) = counted_echo_server(workers, echo_worker);
    let mut streams: Vec<_> = (0..16).map(|_| connect(addr)).collect();
    // Warm up: accepts, first receives, queues and pools reach their working sizes.
    ping_pong(&mut streams, 200);
    let before = ALLOCS.load(Ordering::Relaxed);
    ping_pong(&mut streams, rounds);
    let after = ALLOCS.load(Ordering::Relaxed);
    let m = rt.metrics();
    let echo = m.stage("echo").unwrap();
    assert!(echo.processed >= 16 * (200 + rounds as u64), "every message passed the echo stage: {echo:?}");
    drop(streams);
    rt.shutdown();
    rt.join().unwrap();
    after - before
}

#[test]
fn echo_on_the_receiving_worker_does_not_allocate_per_message() {
    // The counter is live: setting up a runtime allocates on its workers.
    let setup = ALLOCS.load(Ordering::Relaxed);
    let n = allocs_in_steady_state(1, 0, 3000);
    assert!(ALLOCS.load(Ordering::Relaxed) > setup, "the counting allocator saw the workers' start-up");
    assert_eq!(n, 0, "worker allocations over 48,000 echoed messages");
}

#[test]
fn echo_across_cores_does_not_allocate_per_message() {
    // Every message crosses cores twice (net stage on worker 0, echo on worker 1).
    let n = allocs_in_steady_state(2, 1, 3000);
    assert_eq!(n, 0, "worker allocations over 48,000 messages echoed across cores");
}
