//! Staged HTTP/1.1 static-file server (Haboob, rebuilt on ringstage).
//!
//! ```text
//! cargo run --release --example http -- [--addr 127.0.0.1:8080] [--root DIR] [--workers N]
//! ```
//!
//! Stages, with one replica per worker (a connection's requests stay on its worker):
//! `net` (accept/recv/send, built in) → `parse` (framing, limits, validation) → `cache`
//! (in-order responses from the shared page cache) → on a miss, `files` (openat2/statx/read on
//! the ring) → back to `cache` → `net`. A stage that refuses a request makes it a 503 at once,
//! in order behind the connection's earlier requests.

mod cache;
mod chunked;
mod dynamic;
mod files;
mod parse;
mod proto;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringstage::control::OverloadConfig;
use ringstage::fs::Root;
use ringstage::prelude::*;

use cache::{Cache, CacheEvent, Responses, SharedCache};
use files::{Files, FilesEvent};
use parse::{Limits, Parse, MAX_HEAD};

/// Counts each worker's heap allocations for `ringstage_worker_allocations_total` in `/stats`,
/// at one thread-local add per allocation. Requests served from the page cache make none.
#[global_allocator]
static ALLOC: ringstage::metrics::CountingAlloc = ringstage::metrics::CountingAlloc::system();

const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/http/www");

struct Opts {
    addr: SocketAddr,
    root: String,
    workers: usize,
    cpu: usize,
    limits: Limits,
    capacity: usize,
    cache_bytes: usize,
    cache_file: usize,
    ttl: Duration,
    idle: Duration,
    send_timeout: Duration,
    file_timeout: Duration,
    work: Duration,
    overload_target: Option<Duration>,
    spin: Duration,
}

const USAGE: &str = "usage: http [--addr HOST:PORT] [--root DIR] [--workers N] [--cpu FIRST]
  [--max-line BYTES] [--max-head BYTES] [--max-body BYTES] [--header-timeout-ms MS]
  [--keepalive-requests N (requests per connection, the last one closes it; default 1000)]
  [--stage-capacity N] [--cache-mb MB] [--cache-file-kb KB] [--cache-ttl-ms MS] [--idle-timeout-s S]
  [--send-timeout-ms MS] [--file-timeout-ms MS]
  [--dynamic-us US] [--overload-target-ms MS (0: no admission control)]
  [--spin-us US (poll this long for work before sleeping; default 0)]";

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        addr: "127.0.0.1:8080".parse().unwrap(),
        root: BUNDLED.into(),
        workers: 1,
        cpu: 0,
        limits: Limits::default(),
        capacity: 4096,
        cache_bytes: 64 << 20,
        cache_file: 4 << 20,
        ttl: Duration::from_secs(5),
        idle: Duration::from_secs(60),
        send_timeout: Duration::from_secs(30),
        file_timeout: Duration::from_secs(10),
        work: Duration::from_micros(200),
        overload_target: None,
        spin: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "-h" || k == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it.next().ok_or_else(|| format!("{k} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{k}: not a number: {v:?}"));
        match k.as_str() {
            "--addr" => o.addr = v.parse().map_err(|_| format!("--addr: not HOST:PORT: {v:?}"))?,
            "--root" => o.root = v,
            "--workers" => o.workers = num(&v)?.max(1) as usize,
            "--cpu" => o.cpu = num(&v)? as usize,
            "--max-line" => o.limits.max_line = num(&v)? as usize,
            "--max-head" => {
                o.limits.max_head = match num(&v)? {
                    n @ 1..=MAX_HEAD => n as usize,
                    _ => return Err(format!("--max-head: 1 to {MAX_HEAD} bytes, not {v:?}")),
                }
            }
            "--max-body" => o.limits.max_body = num(&v)?,
            "--header-timeout-ms" => o.limits.header_timeout = Duration::from_millis(num(&v)?),
            "--keepalive-requests" => o.limits.max_requests = num(&v)?.max(1),
            "--stage-capacity" => o.capacity = num(&v)?.max(1) as usize,
            "--cache-mb" => o.cache_bytes = (num(&v)? as usize) << 20,
            "--cache-file-kb" => o.cache_file = (num(&v)? as usize) << 10,
            "--cache-ttl-ms" => o.ttl = Duration::from_millis(num(&v)?),
            "--idle-timeout-s" => o.idle = Duration::from_secs(num(&v)?),
            "--send-timeout-ms" => o.send_timeout = Duration::from_millis(num(&v)?.max(1)),
            "--file-timeout-ms" => o.file_timeout = Duration::from_millis(num(&v)?.max(1)),
            "--dynamic-us" => o.work = Duration::from_micros(num(&v)?),
            "--spin-us" => o.spin = Duration::from_micros(num(&v)?),
            "--overload-target-ms" => {
                let ms = num(&v)?;
                o.overload_target = (ms > 0).then(|| Duration::from_millis(ms));
            }
            _ => return Err(format!("unknown option {k}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn main() {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(o) {
        eprintln!("http: {e}");
        std::process::exit(1);
    }
}

fn run(o: Opts) -> std::io::Result<()> {
    let root = Arc::new(Root::open(&o.root)?);
    let shared = Arc::new(SharedCache::new(o.cache_bytes, o.cache_file, o.ttl));
    let all: Vec<usize> = (0..o.workers).collect();
    let mut b = Runtime::builder(o.workers)
        .cpus((0..o.workers).map(|i| o.cpu + i))
        .file_timeout(Some(o.file_timeout))
        .spin_before_sleep(o.spin)
        .signals(true);
    let cap = o.capacity;
    // One page per visit: the cheap stages on the same core run between pages. Declared first
    // (replicas run in declaration order), so a rendered page passes cache and net and leaves
    // in the same loop iteration instead of waiting behind the next page.
    let mut dyn_cfg = StageConfig::on(all.clone()).capacity(cap).batch(1);
    if let Some(target) = o.overload_target {
        // Samples come from the cache stage: from request parse to response (end to end).
        dyn_cfg = dyn_cfg.overload(OverloadConfig { external_samples: true, ..OverloadConfig::new(target) });
    }
    let dynamic = b.stage::<parse::Request>("dynamic", dyn_cfg);
    let parse = b.stage::<NetEvent>("parse", StageConfig::on(all.clone()).capacity(cap));
    let cache = b.stage::<CacheEvent>("cache", StageConfig::on(all.clone()).capacity(cap));
    let files = b.stage::<FilesEvent>("files", StageConfig::on(all.clone()).capacity(cap.min(1024)));
    let (fs, files_id) = b.files(files);
    let listen = ListenConfig::new(o.addr, all).idle_timeout(o.idle).send_timeout(o.send_timeout);
    let (net, listener) = b.listen(listen, parse);
    let classes = Responses::CLASSES
        .map(|c| b.counter(&format!("http_responses_total{{class=\"{c}\"}}"), "Responses sent, by status class."));
    let limits = o.limits.clone();
    b.handler(parse, move |s| Parse::new(s.sink(net), s.sink(cache), s.waker(parse), limits.clone()));
    let sh = shared.clone();
    b.handler(cache, move |s| {
        let responses = Responses(classes.map(|id| s.counter(id)));
        Cache::new(s.sink(net), s.sink(files), s.sink(dynamic), s.handle(), sh.clone(), s.waker(cache), responses)
    });
    let work = o.work;
    b.handler(dynamic, move |s| dynamic::Dynamic { cache: s.sink(cache), net: s.sink(net), work, rendered: 0 });
    b.handler(files, move |s| Files {
        cache: s.sink(cache),
        fs: s.sink(fs),
        files: files_id,
        root: root.clone(),
        shared: shared.clone(),
        loads: Default::default(),
        undelivered: VecDeque::new(),
    });
    let rt = b.start()?;
    println!("http listening on {} serving {} ({} worker(s))", rt.local_addr(listener), o.root, o.workers);
    let (sig, m) = rt.run_until_signal()?;
    eprintln!("signal {sig}: shut down");
    for s in &m.stages {
        eprintln!(
            "stage {:<6} enqueued {:>9} refused {:>7} processed {:>9}",
            s.name, s.enqueued, s.refused, s.processed
        );
    }
    Ok(())
}
