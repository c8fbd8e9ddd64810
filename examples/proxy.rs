//! A TCP proxy: each accepted connection is paired with an outbound connection to the
//! upstream, and bytes pass both ways as `IoBuf` views. The pool buffer a receive filled on one
//! side is the memory the send on the other side reads: no copy in user space.
//!
//! ```text
//! cargo run --release --example proxy -- --upstream HOST:PORT|unix:PATH [--addr 127.0.0.1:7100]
//!     [--workers N] [--cpu FIRST] [--connect-timeout-ms MS] [--buffer-kib KIB] [--idle-timeout-s S]
//!     [--output-kib KIB]
//! ```
//!
//! Every worker accepts (one `SO_REUSEPORT` socket each) and dials the upstream itself
//! (`NetCmd::Connect` for its own worker; `NetCmd::ConnectUnix` for an upstream given as
//! `unix:PATH` or `unix:@name`, a Unix domain socket), so both connections of a pair live on one core and
//! their events never cross cores. Bytes a client sends before its upstream is connected wait,
//! up to 64 KiB. A side that finished sending (its FIN, `NetEvent::Eof`) has the FIN passed on
//! to the other (`NetCmd::Shutdown`, after what was queued for it), so a client may half-close
//! after its request and still read the whole answer; once both sides have finished, the pair
//! is closed. When either side closes, or the upstream cannot be reached, the other side is
//! closed after what was queued for it has been sent. A connection with nothing received or
//! sent for `--idle-timeout-s` (600 s, nginx's `proxy_timeout`) is closed, and its pair with it.
//!
//! Receive buffers are 16 KiB by default (`--buffer-kib`), nginx's `proxy_buffer_size` for
//! streams: a proxy moves bulk data, and each receive completion and hand-off costs the same
//! whatever its size. 1024 of them per worker; untouched ones cost no resident memory.
//!
//! Flow control: when one side reads slower than the other sends, what waits for it is held to
//! `--output-kib` (64 KiB by default, and at most 16 views): that side is `Backlogged`, and
//! the proxy stops reading the other side (`NetCmd::PauseReads`) until it has `Drained`. TCP
//! then closes the sender's window, end to end, as a direct connection would. So a slow reader
//! holds a few buffers of its worker's pool, not all of them: the other pairs keep moving.
//! The connections' own backpressure is off (`ListenConfig::backpressure(false)`): a side is
//! paused for its peer's backlog, never for its own, which could deadlock a pair whose two ends
//! each wait to finish writing before they read.

use std::net::SocketAddr;
use std::time::Duration;

use ringstage::net::{ConnectConfig, ConnectorId};
use ringstage::prelude::*;

/// Most bytes a client may send before its upstream connection is up.
const EARLY_MAX: usize = 64 << 10;

/// One end of a pair, and whether it finished sending.
struct End {
    /// The other end: the upstream of a client once connected, the client of an upstream.
    peer: Option<Conn>,
    /// A client's bytes sent before its upstream was connected.
    early: IoBufChain,
    eof: bool,
}

impl End {
    fn new(peer: Option<Conn>) -> End {
        End { peer, early: IoBufChain::new(), eof: false }
    }
}

struct Proxy {
    /// To the network stage. A command it refuses (its queue full) waits here, in order with
    /// those after it, and goes the next loop iteration (`woken`): no byte of a stream is
    /// dropped and no pair is cut for a burst.
    net: Outbox<NetCmd>,
    connector: ConnectorId,
    upstream: Upstream,
    ends: ConnMap<End>,
    /// Clients whose upstream connect is in flight, by the connect's tag.
    dialing: slab::Slab<Conn>,
}

impl Proxy {
    /// Queues `data` on `to`.
    fn forward(&mut self, to: Conn, data: IoBufChain) {
        self.net.send(NetCmd::SendChain { conn: to, data });
    }

    fn close(&mut self, conn: Conn) {
        self.net.send(NetCmd::Close { conn });
    }

    fn opened(&mut self, client: Conn, worker: usize) {
        self.ends.insert(client, End::new(None));
        let tag = self.dialing.insert(client);
        let (connector, tag) = (self.connector, tag as u64);
        let dial = match &self.upstream {
            Upstream::Tcp(addr) => NetCmd::Connect { connector, addr: *addr, worker, tag },
            Upstream::Unix(path) => NetCmd::ConnectUnix { connector, path: path.clone(), worker, tag },
        };
        self.net.send(dial);
    }

    fn connected(&mut self, up: Conn, tag: u64) {
        let Some((client, end)) = self.dialing.try_remove(tag as usize).and_then(|c| Some((c, self.ends.get_mut(c)?)))
        else {
            return self.close(up); // the client left while the connect was in flight
        };
        end.peer = Some(up);
        let (early, client_eof) = (std::mem::take(&mut end.early), end.eof);
        self.ends.insert(up, End::new(Some(client)));
        if !early.is_empty() {
            self.forward(up, early);
        }
        if client_eof {
            self.shutdown(up);
        }
    }

    /// Passes a FIN on: `to` gets one once what was queued for it is sent.
    fn shutdown(&mut self, to: Conn) {
        self.net.send(NetCmd::Shutdown { conn: to });
    }

    /// `conn` finished sending: pass the FIN on to its peer, and close the pair once both have.
    fn eof(&mut self, conn: Conn) {
        let Some(end) = self.ends.get_mut(conn) else { return };
        end.eof = true;
        let Some(peer) = end.peer else { return }; // passed on once the upstream is connected
        self.shutdown(peer);
        if self.ends.get(peer).is_some_and(|p| p.eof) {
            self.close(conn);
            self.close(peer);
        }
    }

    fn connect_failed(&mut self, tag: u64, error: std::io::Error) {
        if let Some(client) = self.dialing.try_remove(tag as usize) {
            eprintln!("proxy: upstream {}: {error}", self.upstream);
            if self.ends.contains(client) {
                self.close(client);
            }
        }
    }

    fn data(&mut self, conn: Conn, data: IoBuf) {
        match self.ends.get_mut(conn) {
            Some(End { peer: Some(peer), .. }) => {
                let peer = *peer;
                self.forward(peer, IoBufChain::from(data));
            }
            Some(End { peer: None, early, .. }) => {
                if early.len() + data.len() > EARLY_MAX {
                    self.close(conn);
                } else {
                    early.push(data);
                }
            }
            None => {}
        }
    }

    /// `conn` has too much waiting for it (`pause`) or is down to half again: stop or restart
    /// reading the side that sends to it. (An upstream still connecting has nothing queued.)
    fn reads_of_peer(&mut self, conn: Conn, pause: bool) {
        let Some(peer) = self.ends.get(conn).and_then(|e| e.peer) else { return };
        let cmd = if pause { NetCmd::PauseReads { conn: peer } } else { NetCmd::ResumeReads { conn: peer } };
        self.net.send(cmd);
    }

    fn closed(&mut self, conn: Conn) {
        // The other end is closed once its queued output has gone; its own `Closed` removes it.
        if let Some(peer) = self.ends.remove(conn).and_then(|e| e.peer) {
            self.close(peer);
        }
    }
}

impl Handler for Proxy {
    type Event = NetEvent;

    fn handle(&mut self, ev: NetEvent, cx: &mut Context<'_>) {
        match ev {
            NetEvent::Opened { conn, .. } => self.opened(conn, cx.worker()),
            NetEvent::Connected { conn, tag, .. } => self.connected(conn, tag),
            NetEvent::ConnectFailed { tag, error, .. } => self.connect_failed(tag, error),
            NetEvent::Data { conn, data } => self.data(conn, data),
            NetEvent::Eof { conn } => self.eof(conn),
            NetEvent::Closed { conn } => self.closed(conn),
            NetEvent::Backlogged { conn } => self.reads_of_peer(conn, true),
            NetEvent::Drained { conn } => self.reads_of_peer(conn, false),
            _ => {} // no UDP here
        }
    }

    /// The network stage refused commands: offer them again.
    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.net.flush();
    }
}

/// Where the proxy connects to.
#[derive(Clone, Debug)]
enum Upstream {
    Tcp(SocketAddr),
    Unix(std::sync::Arc<std::path::Path>),
}

impl std::str::FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Upstream, String> {
        match s.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Ok(Upstream::Unix(std::path::Path::new(path).into())),
            Some(_) => Err("unix: needs a path".into()),
            None => s.parse().map(Upstream::Tcp).map_err(|e| format!("{s}: {e} (HOST:PORT or unix:PATH)")),
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Tcp(a) => a.fmt(f),
            Upstream::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A TCP proxy on ringstage: each client's upstream connection is dialled from its worker.
#[derive(clap::Parser, Debug)]
#[command(name = "proxy", version)]
struct Opts {
    /// Where to forward each client's connection: HOST:PORT, or unix:PATH for a Unix domain
    /// socket (unix:@name for an abstract one).
    #[arg(long)]
    upstream: Upstream,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7100")]
    addr: SocketAddr,
    /// Pinned workers, each accepting on its own SO_REUSEPORT socket.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// First CPU to pin to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// An upstream connect that takes longer fails the client.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    connect_timeout_ms: u64,
    /// Receive buffer size.
    #[arg(long, value_name = "KIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    buffer_kib: u64,
    /// A pair with a side idle this long is closed (nginx's proxy_timeout).
    #[arg(long, value_name = "S", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_s: u64,
    /// Output waiting for a slow reader beyond which the other side is paused.
    #[arg(long, value_name = "KIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    output_kib: u64,
}

fn main() -> std::io::Result<()> {
    let o = <Opts as clap::Parser>::parse();
    let (addr, upstream, cpu, connect_ms, buf_kib, idle_s) =
        (o.addr, o.upstream, o.cpu, o.connect_timeout_ms, o.buffer_kib as usize, o.idle_timeout_s);
    let output_kib = o.output_kib as usize;
    let workers = usize::from(o.workers);
    let all: Vec<usize> = (0..workers).collect();
    let mut b =
        Runtime::builder(workers).cpus((0..workers).map(|i| cpu + i)).buffers(1024, buf_kib << 10).signals(true);
    let proxy = b.stage::<NetEvent>("proxy", StageConfig::on(all.clone()));
    let idle = Duration::from_secs(idle_s);
    // Each side is paused for its peer's backlog (the handler), not for its own.
    let limit = output_kib << 10;
    let client_side = ListenConfig::new(addr, all).idle_timeout(idle).output_limit(limit).backpressure(false);
    let (net, listener) = b.listen(client_side, proxy);
    let dial = ConnectConfig::new()
        .timeout(Duration::from_millis(connect_ms))
        .idle_timeout(idle)
        .output_limit(limit)
        .backpressure(false);
    let (_, connector) = b.connector(dial, proxy);
    let to = upstream.clone();
    b.handler(proxy, move |s| Proxy {
        net: Outbox::with_waker(s.sink(net), s.waker(proxy)),
        connector,
        upstream: to.clone(),
        ends: ConnMap::new(),
        dialing: slab::Slab::new(),
    });
    let rt = b.start()?;
    println!("proxy listening on {} to {upstream} ({workers} worker(s))", rt.local_addr(listener));
    let (sig, m) = rt.run_until_signal()?;
    eprintln!("signal {sig}: shut down");
    for w in &m.workers {
        eprintln!(
            "worker {} accepted {} connected {} connect_failed {} closed {}",
            w.worker, w.accepted, w.connected, w.connect_failed, w.closed
        );
    }
    Ok(())
}
