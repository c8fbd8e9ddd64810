//! Key-value server speaking a subset of the Redis protocol (RESP2), on ringstage.
//!
//! ```text
//! cargo run --release --example kv -- [--addr 127.0.0.1:6380] [--cpu N] [--slow-cpu M]
//! redis-cli -p 6380 set greeting hello && redis-cli -p 6380 get greeting
//! redis-benchmark -p 6380 -t set,get -n 100000 -P 16
//! ```
//!
//! Stages: `net` (accept/recv/send, built in) → `command` (RESP framing and the keyspace; one
//! core serves both, like Redis's one thread) → `net`. Slow commands (`DEBUG SLEEP s`) go to
//! the `slow` stage on a second worker and come back through `resume`, on the first worker,
//! which keeps each connection's replies in order. Only those events cross cores: fast
//! commands never wait behind slow ones, which is the difference from Redis, where
//! `DEBUG SLEEP` stalls every client. A blocking pop (`BLPOP`, `BRPOP`) parks its connection
//! in the command stage; its time limit is a timer event for the `unblock` stage, on the same
//! core, cancelled when a push serves it first.
//!
//! Commands: GET SET (NX XX EX PX KEEPTTL) MGET MSET DEL EXISTS TYPE INCR DECR INCRBY DECRBY
//! EXPIRE PEXPIRE TTL PTTL PERSIST; lists LPUSH RPUSH LPOP RPOP LLEN LRANGE LINDEX BLPOP BRPOP;
//! sets SADD SREM SCARD SISMEMBER SMEMBERS SPOP; hashes HSET HGET HDEL HLEN HEXISTS HGETALL;
//! sorted sets ZADD ZCARD ZSCORE ZREM ZPOPMIN ZRANGE; DBSIZE FLUSHALL FLUSHDB PING ECHO SELECT 0
//! INFO QUIT DEBUG SLEEP, plus empty answers to the CONFIG GET and COMMAND queries clients make
//! on connect.

mod cmd;
mod shard;
mod slow;
mod store;
#[path = "../common/tls.rs"]
mod tls;

/// RESP2 framing and replies: the `ringstage-resp` crate.
use ringstage_resp as resp;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use ringstage::prelude::*;

use resp::Limits;
use shard::{shard_here, BlockTimeout, Command, Resume, Shard, Unblock};
use slow::{Slow, SlowDone, SlowReq};

/// A Redis-protocol (RESP2) key-value server on ringstage.
#[derive(clap::Parser, Debug)]
#[command(name = "kv", version)]
struct Opts {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6380")]
    addr: SocketAddr,
    /// CPU of the keyspace's worker.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// CPU of the slow stage's worker (default: the next one).
    #[arg(long)]
    slow_cpu: Option<usize>,
    /// Events each stage's queue holds.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    stage_capacity: u64,
    /// Slow commands that may wait; beyond it they are answered -BUSY at once.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    slow_capacity: u64,
    /// Blocking pops that may wait with a time limit; beyond it they are answered -BUSY.
    #[arg(long, value_name = "N", default_value_t = 16384, value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    max_blocked: u64,
    /// Largest bulk string.
    #[arg(long, value_name = "MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_bulk_mb: u64,
    /// Connections idle this long are closed.
    #[arg(long, value_name = "S", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_s: u64,
    /// Poll this long for work before sleeping.
    #[arg(long, value_name = "US", default_value_t = 0)]
    spin_us: u64,
    /// All connections' input not yet run; beyond it the largest holder is closed (Redis's
    /// maxmemory-clients).
    #[arg(long, value_name = "MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_clients_input_mb: u64,
    /// TLS, as `redis-server --tls-port`.
    #[command(flatten)]
    tls: tls::TlsArgs,
}

fn main() {
    let o = <Opts as clap::Parser>::parse();
    if let Err(e) = run(o) {
        eprintln!("kv: {e}");
        std::process::exit(1);
    }
}

fn run(o: Opts) -> std::io::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slow_cpu = o.slow_cpu.unwrap_or((o.cpu + 1) % cores);
    let spin = Duration::from_micros(o.spin_us);
    let mut b = Runtime::builder(2).cpus([o.cpu, slow_cpu]).spin_before_sleep(spin).signals(true);
    let capacity = o.stage_capacity as usize;
    let command = b.stage::<NetEvent>("command", StageConfig::on([0]).capacity(capacity));
    let resume = b.stage::<SlowDone>("resume", StageConfig::on([0]).capacity(capacity));
    // Blocking pops' time limits: the shard's timer hands them to this stage on worker 0.
    let unblock = b.stage::<BlockTimeout>("unblock", StageConfig::on([0]).timers(o.max_blocked as usize));
    // A blocking stage (SEDA's thread-pool stage): alone on its worker, one command per visit.
    let slow = b.stage::<SlowReq>("slow", StageConfig::on([1]).blocking().capacity(o.slow_capacity as usize));
    let mut listen = ListenConfig::new(o.addr, [0]).idle_timeout(Duration::from_secs(o.idle_timeout_s));
    if let Some(cfg) = o.tls.server_config(&[])? {
        listen = listen.tls(cfg);
    }
    let (net, listener) = b.listen(listen, command);
    let limits = Limits { max_bulk: (o.max_bulk_mb as usize) << 20, ..Limits::default() };
    let (max_input, evicted) = (
        (o.max_clients_input_mb as usize) << 20,
        b.counter("kv_clients_evicted_total", "Connections closed for the total input limit."),
    );
    // Both stages of worker 0 get the same shard: the first to be set up creates it (and
    // takes its sinks).
    let make_shard = move |s: &mut Setup<'_>| {
        shard_here(|| {
            let evictions = s.counter(evicted);
            Shard::new(
                s.sink(net),
                s.sink(slow),
                s.timer(unblock),
                s.waker(command),
                limits.clone(),
                max_input,
                evictions,
            )
        })
    };
    let (make, make2) = (make_shard.clone(), make_shard.clone());
    b.handler(command, move |s| Command { shard: make(s) });
    b.handler(resume, move |s| Resume { shard: make2(s) });
    b.handler(unblock, move |s| Unblock { shard: make_shard(s) });
    b.handler(slow, move |s| Slow { resume: s.sink(resume), undelivered: VecDeque::new() });
    let rt = b.start()?;
    println!("kv listening on {} (keyspace on CPU {}, slow stage on CPU {slow_cpu})", rt.local_addr(listener), o.cpu);
    let (sig, m) = rt.run_until_signal()?;
    eprintln!("signal {sig}: shut down");
    for s in &m.stages {
        eprintln!(
            "stage {:<7} enqueued {:>9} refused {:>7} processed {:>9}",
            s.name, s.enqueued, s.refused, s.processed
        );
    }
    Ok(())
}
