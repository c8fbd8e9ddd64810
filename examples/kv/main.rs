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

mod command;
mod resp;
mod slow;
mod store;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use ringstage::prelude::*;

use command::{shard_here, BlockTimeout, Command, Resume, Shard, Unblock};
use resp::Limits;
use slow::{Slow, SlowDone, SlowReq};

struct Opts {
    addr: SocketAddr,
    cpu: usize,
    slow_cpu: Option<usize>,
    capacity: usize,
    slow_capacity: usize,
    max_blocked: usize,
    limits: Limits,
    idle: Duration,
    spin: Duration,
    /// Total memory of the connections' unparsed input (`maxmemory-clients`).
    max_input: usize,
}

const USAGE: &str = "usage: kv [--addr HOST:PORT] [--cpu N] [--slow-cpu M] [--stage-capacity N]
  [--slow-capacity N] [--max-blocked N] [--max-bulk-mb MB] [--idle-timeout-s S]
  [--spin-us US (poll this long for work before sleeping; default 0)]
  [--max-clients-input-mb MB (all connections' input not yet run; the largest holder is closed
    beyond it; default 256)]";

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        addr: "127.0.0.1:6380".parse().unwrap(),
        cpu: 0,
        slow_cpu: None,
        capacity: 4096,
        slow_capacity: 64,
        max_blocked: 16384,
        limits: Limits::default(),
        idle: Duration::from_secs(300),
        spin: Duration::ZERO,
        max_input: 256 << 20,
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
            "--cpu" => o.cpu = num(&v)? as usize,
            "--slow-cpu" => o.slow_cpu = Some(num(&v)? as usize),
            "--stage-capacity" => o.capacity = num(&v)?.max(1) as usize,
            "--slow-capacity" => o.slow_capacity = num(&v)?.max(1) as usize,
            "--max-blocked" => o.max_blocked = num(&v)?.clamp(1, 1 << 24) as usize,
            "--max-bulk-mb" => o.limits.max_bulk = (num(&v)?.clamp(1, 4096) as usize) << 20,
            "--idle-timeout-s" => o.idle = Duration::from_secs(num(&v)?.max(1)),
            "--spin-us" => o.spin = Duration::from_micros(num(&v)?),
            "--max-clients-input-mb" => o.max_input = (num(&v)?.clamp(1, 1 << 20) as usize) << 20,
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
        eprintln!("kv: {e}");
        std::process::exit(1);
    }
}

fn run(o: Opts) -> std::io::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slow_cpu = o.slow_cpu.unwrap_or((o.cpu + 1) % cores);
    let mut b = Runtime::builder(2).cpus([o.cpu, slow_cpu]).spin_before_sleep(o.spin).signals(true);
    let command = b.stage::<NetEvent>("command", StageConfig::on([0]).capacity(o.capacity));
    let resume = b.stage::<SlowDone>("resume", StageConfig::on([0]).capacity(o.capacity));
    // Blocking pops' time limits: the shard's timer hands them to this stage on worker 0.
    let unblock = b.stage::<BlockTimeout>("unblock", StageConfig::on([0]).timers(o.max_blocked));
    // One command per visit: the worker checks for new work between slow commands.
    let slow = b.stage::<SlowReq>("slow", StageConfig::on([1]).capacity(o.slow_capacity).batch(1));
    let listen = ListenConfig::new(o.addr, [0]).idle_timeout(o.idle);
    let (net, listener) = b.listen(listen, command);
    let limits = o.limits.clone();
    let (max_input, evicted) =
        (o.max_input, b.counter("kv_clients_evicted_total", "Connections closed for the total input limit."));
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
