//! UDP echo server: each datagram goes back to its source, the received pool buffer sent as
//! it is (no copy).
//!
//! ```text
//! cargo run --release --example udp_echo -- [--addr 127.0.0.1:7200] [--workers N] [--cpu N]
//! ```
//!
//! With `--workers 2` each worker binds its own `SO_REUSEPORT` socket to the address and the
//! kernel spreads the peers over them (one peer's datagrams stay on one worker). Datagrams
//! larger than a receive buffer (4 KiB less 44 bytes of header) are counted and dropped, not
//! echoed cut; `--buffer-size` raises the limit (up to 65 536 for any datagram).
//!
//! `--fanout N` answers each datagram with N copies: N sends of the received view, or with
//! `--gso` one send of the copies back to back that the kernel cuts into N datagrams (UDP
//! GSO). `ci/bench udp` measures what GSO saves per datagram.

use std::net::SocketAddr;

use ringstage::prelude::*;

struct Echo {
    net: Outbox<NetCmd>,
    fanout: usize,
    gso: bool,
}

impl Handler for Echo {
    type Event = NetEvent;

    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        match ev {
            NetEvent::Datagram { socket, from, data } if self.fanout <= 1 => {
                self.net.send(NetCmd::SendTo { socket, to: from, data });
            }
            NetEvent::Datagram { socket, from, data } if self.gso && data.len() <= usize::from(u16::MAX) => {
                let copies: Vec<&[u8]> = (0..self.fanout).map(|_| &data[..]).collect();
                let size = data.len() as u16;
                self.net.send(NetCmd::SendSegments { socket, to: from, data: IoBuf::concat(&copies), size });
            }
            NetEvent::Datagram { socket, from, data } => {
                for _ in 0..self.fanout {
                    self.net.send(NetCmd::SendTo { socket, to: from, data: data.clone() });
                }
            }
            NetEvent::Truncated { from, len, .. } => log::debug!("dropped a {len}-byte datagram from {from}"),
            NetEvent::SendToFailed { to, error, .. } => log::debug!("reply to {to} failed: {error}"),
            _ => {}
        }
    }

    /// Commands the network stage refused wait in the outbox; offer them again.
    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.net.flush();
    }
}

/// UDP echo server.
#[derive(clap::Parser, Debug)]
#[command(name = "udp_echo", version)]
struct Opts {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1:7200")]
    addr: SocketAddr,
    /// Workers, each with its own SO_REUSEPORT socket.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    workers: u64,
    /// First CPU to pin to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Receive buffer size: the largest datagram taken is this less 44 bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(64..=65_536 + 44))]
    buffer_size: u64,
    /// Answer each datagram with this many copies.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    fanout: u64,
    /// Send the copies as one UDP GSO send.
    #[arg(long)]
    gso: bool,
}

fn main() -> std::io::Result<()> {
    let o = <Opts as clap::Parser>::parse();
    let workers = o.workers as usize;
    let mut b = Runtime::builder(workers)
        .cpus((0..workers).map(|i| o.cpu + i))
        .signals(true)
        .buffers(2048, o.buffer_size as usize);
    let echo = b.stage::<NetEvent>("echo", StageConfig::on(0..workers));
    let (net, udp) = b.udp(UdpConfig::new(o.addr, 0..workers), echo);
    let (fanout, gso) = (o.fanout as usize, o.gso);
    b.handler(echo, move |s| Echo { net: Outbox::with_waker(s.sink(net), s.waker(echo)), fanout, gso });
    let rt = b.start()?;
    println!("udp echo on {} ({workers} worker{})", rt.udp_addr(udp), if workers > 1 { "s" } else { "" });
    let (sig, m) = rt.run_until_signal()?;
    eprintln!("signal {sig}: shut down");
    for w in &m.workers {
        eprintln!(
            "worker {} loops {} enters {} received {} sent {} truncated {} failed {} enobufs {}",
            w.worker, w.loops, w.enters, w.udp_received, w.udp_sent, w.udp_truncated, w.udp_send_failed, w.enobufs
        );
    }
    Ok(())
}
