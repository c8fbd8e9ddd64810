//! IoBuf costs, side by side with `bytes::Bytes`: clone+drop, slice, and a pool buffer's full
//! cycle (take from the ring, share, release home).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use ringstage::buf::{BufPool, IoBuf, IoBufChain};

fn views(c: &mut Criterion) {
    let mut g = c.benchmark_group("iobuf");
    let io = IoBuf::from(vec![7u8; 4096]);
    let by = Bytes::from(vec![7u8; 4096]);
    g.bench_function("clone_drop/ringstage", |b| b.iter(|| drop(black_box(io.clone()))));
    g.bench_function("clone_drop/bytes", |b| b.iter(|| drop(black_box(by.clone()))));
    g.bench_function("slice/ringstage", |b| b.iter(|| black_box(io.slice(black_box(10)..black_box(100)))));
    g.bench_function("slice/bytes", |b| b.iter(|| black_box(by.slice(black_box(10)..black_box(100)))));
    let pool = BufPool::new(1024, 4096, 0).unwrap();
    let mut bid = 0u16;
    g.bench_function("pool_take_share_release", |b| {
        b.iter(|| {
            // Stand-in for the kernel having filled buffer `bid`: hand it out, share, drop.
            // SAFETY: the ring is not registered with any kernel ring; nothing writes it.
            let buf = unsafe { pool.take(bid, 64) };
            let view = buf.slice(0..32);
            drop(black_box(buf));
            drop(black_box(view));
            bid = (bid + 1) % 1024;
        })
    });
    let mut chain = IoBufChain::new();
    g.bench_function("chain_push_advance", |b| {
        b.iter(|| {
            chain.push(io.slice(0..64));
            chain.push(io.slice(64..128));
            chain.advance(black_box(128));
        })
    });
    g.finish();
}

criterion_group!(benches, views);
criterion_main!(benches);
