//! Echo server built from two stages: the network I/O stage and an echo handler stage.
//!
//! ```text
//! cargo run --release --example echo -- [--addr 127.0.0.1:7000] [--split] [--cpu N] [--zero-copy-min BYTES]
//!     [--net-capacity N] [--spin-us US]
//! ```
//!
//! By default both stages share one pinned worker, so an event never leaves its core.
//! `--split` puts the echo stage on a second worker: received buffers then cross cores to the
//! handler and back to the I/O stage, without being copied. `--zero-copy-min` sends replies of
//! at least that many bytes with SEND_ZC, so even the kernel does not copy them on the way out.
//!
//! A command the network stage refuses (its queue is full: `--net-capacity`, 4096 by default)
//! waits in an [`Outbox`], in order, and goes the next loop iteration: nothing is lost and no
//! connection is cut for it.
//!
//! `--spin-us` has the worker poll that long for new work before it sleeps
//! ([`Builder::spin_before_sleep`]): lower latency for CPU.

use std::net::SocketAddr;

use ringstage::prelude::*;

struct Echo {
    net: Outbox<NetCmd>,
}

impl Handler for Echo {
    type Event = NetEvent;

    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        match ev {
            // The received pool buffer goes straight back out: zero copies.
            NetEvent::Data { conn, data } => {
                self.net.send(NetCmd::Send { conn, data });
            }
            // The client finished sending: close once what it sent has been echoed.
            NetEvent::Eof { conn } => {
                self.net.send(NetCmd::Close { conn });
            }
            _ => {}
        }
    }

    /// Commands the network stage refused wait in the outbox; offer them again.
    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.net.flush();
    }
}

/// Echo server built from two stages: the network I/O stage and an echo handler stage.
#[derive(clap::Parser, Debug)]
#[command(name = "echo", version)]
struct Opts {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Put the echo stage on a second worker: buffers cross cores and back, uncopied.
    #[arg(long)]
    split: bool,
    /// First CPU to pin to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Send replies of at least this many bytes with SEND_ZC.
    #[arg(long, value_name = "BYTES")]
    zero_copy_min: Option<usize>,
    /// Commands the network stage's queue holds per worker.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    net_capacity: u64,
    /// Poll this long for work before sleeping.
    #[arg(long, value_name = "US", default_value_t = 0)]
    spin_us: u64,
}

fn main() -> std::io::Result<()> {
    let o = <Opts as clap::Parser>::parse();
    let (addr, split, cpu, zc_min) = (o.addr, o.split, o.cpu, o.zero_copy_min);
    let (net_capacity, spin) = (o.net_capacity as usize, std::time::Duration::from_micros(o.spin_us));
    let workers = if split { 2 } else { 1 };
    let mut b = Runtime::builder(workers)
        .cpus((0..workers).map(|i| cpu + i))
        .signals(true)
        .net_capacity(net_capacity)
        .spin_before_sleep(spin);
    let echo = b.stage::<NetEvent>("echo", StageConfig::on([workers - 1]));
    let (net, listener) = b.listen(ListenConfig::new(addr, [0]).zero_copy_sends(zc_min), echo);
    b.handler(echo, move |s| Echo { net: Outbox::with_waker(s.sink(net), s.waker(echo)) });
    let rt = b.start()?;
    println!("echo listening on {} ({} worker{})", rt.local_addr(listener), workers, if split { "s" } else { "" });
    let (sig, m) = rt.run_until_signal()?;
    eprintln!("signal {sig}: shut down");
    for s in &m.stages {
        eprintln!("stage {:<6} enqueued {} refused {} processed {}", s.name, s.enqueued, s.refused, s.processed);
    }
    for w in &m.workers {
        eprintln!(
            "worker {} loops {} enters {} cqes {} enobufs {} accepted {} closed {}",
            w.worker, w.loops, w.enters, w.cqes, w.enobufs, w.accepted, w.closed
        );
    }
    Ok(())
}
