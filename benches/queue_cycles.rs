//! SPSC push+pop cost in TSC cycles per item (the design's "<= 15 cycles per item in batches
//! of 32"), single-threaded so the number is the queue's own instruction cost. Best of 30 runs
//! of 1M items each; prints one JSON line per case for `ci/bench`.

use std::hint::black_box;
use std::time::Instant;

use ringstage::queue::spsc;

#[cfg(target_arch = "x86_64")]
fn cycles() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn cycles() -> u64 {
    0
}

fn measure(name: &str, items: u64, mut f: impl FnMut()) {
    let mut best_c = f64::MAX;
    let mut best_ns = f64::MAX;
    for _ in 0..30 {
        let (c0, t0) = (cycles(), Instant::now());
        f();
        let (c1, ns) = (cycles(), t0.elapsed().as_nanos() as f64);
        best_c = best_c.min((c1 - c0) as f64 / items as f64);
        best_ns = best_ns.min(ns / items as f64);
    }
    println!("{{\"case\":\"{name}\",\"cycles_per_item\":{best_c:.2},\"ns_per_item\":{best_ns:.2}}}");
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    const N: u64 = 1 << 20;
    let (mut tx, mut rx) = spsc::channel::<u64>(1024);
    measure("spsc_single_push_pop", N, || {
        for i in 0..N {
            tx.push(black_box(i)).unwrap();
            black_box(rx.pop().unwrap());
        }
    });
    measure("spsc_batch32_push_pop", N, || {
        for i in 0..N / 32 {
            tx.push_all((0..32u32).map(|k| black_box(i * 32 + k as u64))).unwrap();
            let mut s = 0;
            rx.pop_batch(32, |v| s += v);
            black_box(s);
        }
    });
    let q = crossbeam_queue::ArrayQueue::<u64>::new(1024);
    measure("crossbeam_single_push_pop", N, || {
        for i in 0..N {
            q.push(black_box(i)).unwrap();
            black_box(q.pop().unwrap());
        }
    });
}
