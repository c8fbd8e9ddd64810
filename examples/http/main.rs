//! Staged HTTP/1.1 static-file server (Haboob, rebuilt on ringstage).
//!
//! ```text
//! cargo run --release --example http -- [--addr 127.0.0.1:8080] [--root DIR] [--workers N]
//!     [--tls-cert FILE --tls-key FILE | --tls-self-signed]
//! cargo run --release --example http -- --help     # every limit and option
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
#[path = "../common/tls.rs"]
mod tls;

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

/// Staged HTTP/1.1 static-file server (Haboob, rebuilt on ringstage).
#[derive(clap::Parser, Debug)]
#[command(name = "http", version)]
struct Opts {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Directory to serve (nothing outside it is reachable).
    #[arg(long, default_value = BUNDLED)]
    root: String,
    /// Pinned workers, one replica of every stage each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// First CPU to pin to (worker i on CPU cpu + i).
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Longest request line in bytes (414 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_line)]
    max_line: usize,
    /// Largest request head in bytes (431 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_head as u64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_HEAD))]
    max_head: u64,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_body)]
    max_body: u64,
    /// The whole request head must arrive within this (408 after).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Requests per connection; the last response closes it (nginx's keepalive_requests).
    #[arg(long, value_name = "N", default_value_t = KEEPALIVE_REQUESTS, value_parser = clap::value_parser!(u64).range(1..))]
    keepalive_requests: u64,
    /// Events each stage's queue holds per replica.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    stage_capacity: u64,
    /// Page cache size.
    #[arg(long, value_name = "MB", default_value_t = 64)]
    cache_mb: usize,
    /// Files up to this size are cached; larger ones are spliced from the page cache.
    #[arg(long, value_name = "KB", default_value_t = 4096)]
    cache_file_kb: usize,
    /// How long a cached file is served before it is checked again.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    cache_ttl_ms: u64,
    /// Idle keep-alive connections are closed after this.
    #[arg(long, value_name = "S", default_value_t = 60)]
    idle_timeout_s: u64,
    /// A send or splice with no progress for this long aborts its connection.
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    send_timeout_ms: u64,
    /// File operations are cancelled after this (503 with Retry-After).
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    file_timeout_ms: u64,
    /// CPU time each /dynamic page burns.
    #[arg(long, value_name = "US", default_value_t = 200)]
    dynamic_us: u64,
    /// p90 target of /dynamic's admission control (0: no admission control).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    overload_target_ms: u64,
    /// Poll this long for work before sleeping.
    #[arg(long, value_name = "US", default_value_t = 0)]
    spin_us: u64,
    /// HTTPS.
    #[command(flatten)]
    tls: tls::TlsArgs,
}

/// `--keepalive-requests`' default, as nginx's `keepalive_requests`.
const KEEPALIVE_REQUESTS: u64 = 1000;

impl Opts {
    fn limits(&self) -> Limits {
        Limits {
            max_line: self.max_line,
            max_head: self.max_head as usize,
            max_body: self.max_body,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            max_requests: self.keepalive_requests,
        }
    }
}

fn main() {
    let o = <Opts as clap::Parser>::parse();
    if let Err(e) = run(o) {
        eprintln!("http: {e}");
        std::process::exit(1);
    }
}

fn run(o: Opts) -> std::io::Result<()> {
    let root = Arc::new(Root::open(&o.root)?);
    let ttl = Duration::from_millis(o.cache_ttl_ms);
    let shared = Arc::new(SharedCache::new(o.cache_mb << 20, o.cache_file_kb << 10, ttl));
    let workers = usize::from(o.workers);
    let all: Vec<usize> = (0..workers).collect();
    let mut b = Runtime::builder(workers)
        .cpus((0..workers).map(|i| o.cpu + i))
        .file_timeout(Some(Duration::from_millis(o.file_timeout_ms)))
        .spin_before_sleep(Duration::from_micros(o.spin_us))
        .signals(true);
    let cap = o.stage_capacity as usize;
    // One page per visit: the cheap stages on the same core run between pages. Declared first
    // (replicas run in declaration order), so a rendered page passes cache and net and leaves
    // in the same loop iteration instead of waiting behind the next page.
    let mut dyn_cfg = StageConfig::on(all.clone()).capacity(cap).batch(1);
    if o.overload_target_ms > 0 {
        let target = Duration::from_millis(o.overload_target_ms);
        // Samples come from the cache stage: from request parse to response (end to end).
        dyn_cfg = dyn_cfg.overload(OverloadConfig { external_samples: true, ..OverloadConfig::new(target) });
    }
    let dynamic = b.stage::<parse::Request>("dynamic", dyn_cfg);
    let parse = b.stage::<NetEvent>("parse", StageConfig::on(all.clone()).capacity(cap));
    let cache = b.stage::<CacheEvent>("cache", StageConfig::on(all.clone()).capacity(cap));
    let files = b.stage::<FilesEvent>("files", StageConfig::on(all.clone()).capacity(cap.min(1024)));
    let (fs, files_id) = b.files(files);
    // Under systemd's socket activation (`LISTEN_FDS`, e.g. `systemd-socket-activate -l 8080
    // http`), serve the socket it passed instead of binding `--addr`.
    let listen = match ringstage::runtime::systemd::listen_fds()?.into_iter().next() {
        Some((fd, _name)) => ListenConfig::inherited(fd, all)?,
        None => ListenConfig::new(o.addr, all),
    };
    let mut listen = listen
        .idle_timeout(Duration::from_secs(o.idle_timeout_s))
        .send_timeout(Duration::from_millis(o.send_timeout_ms));
    let tls = o.tls.server_config(&[b"http/1.1"])?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(cfg) = tls {
        listen = listen.tls(cfg);
    }
    let (net, listener) = b.listen(listen, parse);
    let classes = Responses::CLASSES
        .map(|c| b.counter(&format!("http_responses_total{{class=\"{c}\"}}"), "Responses sent, by status class."));
    let limits = o.limits();
    b.handler(parse, move |s| Parse::new(s.sink(net), s.sink(cache), s.waker(parse), limits.clone()));
    let sh = shared.clone();
    b.handler(cache, move |s| {
        let responses = Responses(classes.map(|id| s.counter(id)));
        Cache::new(s.sink(net), s.sink(files), s.sink(dynamic), s.handle(), sh.clone(), s.waker(cache), responses)
    });
    let work = Duration::from_micros(o.dynamic_us);
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
    println!("http listening on {} serving {} ({} worker(s), {scheme})", rt.local_addr(listener), o.root, o.workers);
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
