//! Queue micro-benchmarks, side by side with crossbeam's `ArrayQueue`.
//!
//! - `single`: one push and one pop, same thread (the per-item cost of a stage hop).
//! - `batch32`: 32 pushes then 32 pops, reported per batch (divide by 32 per item); ringstage
//!   uses `push_all`/`pop_batch`, which publish once per batch.
//! - `transfer`: items streamed from one pinned-free thread to another, per item.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use ringstage::queue::{mpsc, spsc};

fn single(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue/single");
    g.throughput(Throughput::Elements(1));
    let (mut tx, mut rx) = spsc::channel::<u64>(1024);
    g.bench_function("ringstage_spsc", |b| {
        b.iter(|| {
            tx.push(black_box(1)).unwrap();
            black_box(rx.pop().unwrap());
        })
    });
    let q = mpsc::Queue::<u64>::new(1024);
    g.bench_function("ringstage_mpsc", |b| {
        b.iter(|| {
            q.push(black_box(1)).unwrap();
            // SAFETY: this thread is the only consumer.
            black_box(unsafe { q.pop() }.unwrap());
        })
    });
    let aq = ArrayQueue::<u64>::new(1024);
    g.bench_function("crossbeam_array_queue", |b| {
        b.iter(|| {
            aq.push(black_box(1)).unwrap();
            black_box(aq.pop().unwrap());
        })
    });
    g.finish();
}

fn batch32(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue/batch32");
    g.throughput(Throughput::Elements(32));
    let (mut tx, mut rx) = spsc::channel::<u64>(1024);
    g.bench_function("ringstage_spsc", |b| {
        b.iter(|| {
            tx.push_all((0..32u32).map(|k| black_box(k as u64))).unwrap();
            let mut s = 0;
            rx.pop_batch(32, |v| s += v);
            black_box(s)
        })
    });
    let aq = ArrayQueue::<u64>::new(1024);
    g.bench_function("crossbeam_array_queue", |b| {
        b.iter(|| {
            for i in 0..32u64 {
                aq.push(black_box(i)).unwrap();
            }
            let mut s = 0;
            while let Some(v) = aq.pop() {
                s += v;
            }
            black_box(s)
        })
    });
    g.finish();
}

fn transfer(c: &mut Criterion) {
    const N: u64 = 100_000;
    let mut g = c.benchmark_group("queue/transfer");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    for batch in [1usize, 32] {
        g.bench_with_input(BenchmarkId::new("ringstage_spsc", batch), &batch, |b, &batch| {
            b.iter(|| {
                let (mut tx, mut rx) = spsc::channel::<u64>(1024);
                let t = std::thread::spawn(move || {
                    let mut got = 0;
                    while got < N {
                        got += rx.pop_batch(batch, |v| {
                            black_box(v);
                        }) as u64;
                    }
                });
                let mut i = 0;
                while i < N {
                    if batch == 1 {
                        if tx.push(i).is_ok() {
                            i += 1;
                        }
                    } else if tx.push_all((0..batch as u32).map(|k| i + k as u64)).is_ok() {
                        i += batch as u64;
                    }
                }
                t.join().unwrap();
            })
        });
        g.bench_with_input(BenchmarkId::new("crossbeam_array_queue", batch), &batch, |b, _| {
            b.iter(|| {
                let q = std::sync::Arc::new(ArrayQueue::<u64>::new(1024));
                let q2 = q.clone();
                let t = std::thread::spawn(move || {
                    let mut got = 0;
                    while got < N {
                        if let Some(v) = q2.pop() {
                            black_box(v);
                            got += 1;
                        }
                    }
                });
                let mut i = 0;
                while i < N {
                    if q.push(i).is_ok() {
                        i += 1;
                    }
                }
                t.join().unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, single, batch32, transfer);
criterion_main!(benches);
