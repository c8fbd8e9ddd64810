//! A line-based publish/subscribe server: the program `docs/guide.md` builds step by step.
//!
//! ```text
//! cargo run --release --example pubsub -- [--addr 127.0.0.1:7200] [--workers 2]
//! printf 'SUB news\n' | nc -q 5 127.0.0.1 7200 &       # MSG news hello
//! printf 'PUB news hello\n' | nc -q 1 127.0.0.1 7200   # :1 (one subscriber got it)
//! ```
//!
//! Commands, one per line: `SUB channel`, `UNSUB channel`, `PUB channel message`, `PING`.
//! Replies: `+OK`, `:N` (subscribers reached), `+PONG`, `-ERR ...`; a subscriber gets
//! `MSG channel message` for each publication and `HEARTBEAT` every `--heartbeat-ms`.
//!
//! Stages: `net` → `session` (on every worker: framing and parsing) → `broker` (on worker 0:
//! the channel table, and every reply) → `net`. A session on another worker reaches the
//! broker through a cross-core queue; publications fan out as shared views, never copied per
//! subscriber. All of a connection's replies come from the broker, so they leave in the order
//! of its commands (two stages answering one connection could overtake each other).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ringstage::net::{ConnEvent, FrameError};
use ringstage::prelude::*;

/// Lines end in `\n` (a `\r` before it is dropped); frames are views of the received bytes.
struct Lines;

impl Decoder for Lines {
    type Frame = IoBuf;
    type Error = std::convert::Infallible;

    fn decode(&mut self, input: &IoBuf) -> Result<Decode<IoBuf>, Self::Error> {
        Ok(match input.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = input.slice(..end);
                let line = if line.ends_with(b"\r") { line.slice(..end - 1) } else { line };
                Decode::Frame { frame: line, len: end + 1 }
            }
            None => Decode::Need(None),
        })
    }
}

/// The longest line a client may send.
const MAX_LINE: usize = 4096;

/// What a session asks of the broker.
enum Req {
    Sub {
        conn: Conn,
        channel: IoBuf,
    },
    Unsub {
        conn: Conn,
        channel: IoBuf,
    },
    /// `line` is `channel message`.
    Pub {
        conn: Conn,
        channel: IoBuf,
        line: IoBuf,
    },
    /// A reply the session could give itself (`PING`, errors), sent by the broker so that it
    /// keeps its place among the connection's other replies.
    Say {
        conn: Conn,
        text: &'static [u8],
    },
    /// Close the connection once its replies are out (it finished sending, or broke a limit).
    Close {
        conn: Conn,
    },
    /// The connection closed: drop its subscriptions.
    Gone {
        conn: Conn,
    },
    /// The broker's own timer: time to tell subscribers the server is alive.
    Heartbeat,
}

/// A handler panic on a request resets the connection it came from (`PanicPolicy::Isolate`).
impl ConnEvent for Req {
    fn conn(&self) -> Option<Conn> {
        match self {
            Req::Sub { conn, .. }
            | Req::Unsub { conn, .. }
            | Req::Pub { conn, .. }
            | Req::Say { conn, .. }
            | Req::Close { conn }
            | Req::Gone { conn } => Some(*conn),
            Req::Heartbeat => None,
        }
    }
}

/// The session stage: frames each connection's lines and parses them into requests.
struct Session {
    lines: Framer<Lines>,
    broker: Outbox<Req>,
}

/// The request one line of `conn` makes.
fn parse(conn: Conn, line: IoBuf) -> Req {
    let (cmd, rest) = match line.iter().position(|&b| b == b' ') {
        Some(sp) => (line.slice(..sp), line.slice(sp + 1..)),
        None => (line.clone(), IoBuf::from_static(b"")),
    };
    let text: &'static [u8] = match &cmd[..] {
        b"PING" => b"+PONG\n",
        // The broker keeps channel names: a copy, so the receive buffer can go home.
        b"SUB" if !rest.is_empty() => return Req::Sub { conn, channel: rest.to_unpooled() },
        b"UNSUB" if !rest.is_empty() => return Req::Unsub { conn, channel: rest },
        b"PUB" => match rest.iter().position(|&b| b == b' ') {
            // The publication travels as views of this receive buffer, to every subscriber.
            Some(sp) if sp > 0 => return Req::Pub { conn, channel: rest.slice(..sp), line: rest },
            _ => b"-ERR usage: PUB channel message\n",
        },
        b"SUB" | b"UNSUB" => b"-ERR usage: SUB channel\n",
        _ => b"-ERR unknown command\n",
    };
    Req::Say { conn, text }
}

impl Handler for Session {
    type Event = NetEvent;

    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        match ev {
            NetEvent::Data { conn, data } => {
                let broker = &mut self.broker;
                let framed = self.lines.push(conn, data, |_, line| {
                    broker.send(parse(conn, line));
                    Flow::Continue
                });
                if let Err(FrameError::TooLarge { .. }) = framed {
                    self.broker.send(Req::Say { conn, text: b"-ERR line too long\n" });
                    self.broker.send(Req::Close { conn });
                }
            }
            // The client is done: close once its replies are out.
            NetEvent::Eof { conn } => {
                self.broker.send(Req::Close { conn });
            }
            NetEvent::Closed { conn } => {
                self.lines.remove(conn);
                self.broker.send(Req::Gone { conn });
            }
            _ => {}
        }
    }

    /// The broker's queue refused what we sent: offer it again, in order.
    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.broker.flush();
    }
}

/// The broker stage: one replica owns every channel.
struct Broker {
    channels: HashMap<Box<[u8]>, Vec<Conn>>,
    subscribed: ConnMap<Vec<Box<[u8]>>>,
    net: Outbox<NetCmd>,
    heartbeat: Option<(Timer<Req>, Duration)>,
    delivered: AppCounter,
}

impl Broker {
    fn reply(&mut self, conn: Conn, text: &'static [u8]) {
        self.net.send(NetCmd::Send { conn, data: IoBuf::from_static(text) });
    }
}

impl Handler for Broker {
    type Event = Req;

    fn handle(&mut self, req: Req, _cx: &mut Context<'_>) {
        match req {
            Req::Sub { conn, channel } => {
                let subs = self.channels.entry((&channel[..]).into()).or_default();
                if !subs.contains(&conn) {
                    subs.push(conn);
                    match self.subscribed.get_mut(conn) {
                        Some(list) => list.push((&channel[..]).into()),
                        None => drop(self.subscribed.insert(conn, vec![(&channel[..]).into()])),
                    }
                }
                self.reply(conn, b"+OK\n");
            }
            Req::Unsub { conn, channel } => {
                if let Some(subs) = self.channels.get_mut(&channel[..]) {
                    subs.retain(|&c| c != conn);
                    if subs.is_empty() {
                        self.channels.remove(&channel[..]);
                    }
                }
                if let Some(list) = self.subscribed.get_mut(conn) {
                    list.retain(|c| c[..] != channel[..]);
                }
                self.reply(conn, b"+OK\n");
            }
            Req::Pub { conn, channel, line } => {
                let subs = self.channels.get(&channel[..]).map_or(&[][..], Vec::as_slice);
                for &sub in subs {
                    // One chain per subscriber, all sharing `line`: a reference count each.
                    let mut msg = IoBufChain::new();
                    msg.push(IoBuf::from_static(b"MSG "));
                    msg.push(line.clone());
                    msg.push(IoBuf::from_static(b"\n"));
                    self.net.send(NetCmd::SendChain { conn: sub, data: msg });
                }
                self.delivered.add(subs.len() as u64);
                let n = IoBuf::from(format!(":{}\n", subs.len()).into_bytes());
                self.net.send(NetCmd::Send { conn, data: n });
            }
            Req::Say { conn, text } => self.reply(conn, text),
            Req::Close { conn } => {
                self.net.send(NetCmd::Close { conn });
            }
            Req::Gone { conn } => {
                for channel in self.subscribed.remove(conn).unwrap_or_default() {
                    if let Some(subs) = self.channels.get_mut(&channel) {
                        subs.retain(|&c| c != conn);
                        if subs.is_empty() {
                            self.channels.remove(&channel);
                        }
                    }
                }
            }
            Req::Heartbeat => {
                let subscribers: Vec<Conn> = self.subscribed.iter().map(|(c, _)| c).collect();
                for conn in subscribers {
                    self.reply(conn, b"HEARTBEAT\n");
                }
                if let Some((timer, every)) = &self.heartbeat {
                    // A full timer table hands the event back: then no more heartbeats.
                    let _ = timer.after(*every, Req::Heartbeat);
                }
            }
        }
    }

    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.net.flush();
    }
}

/// A line-based publish/subscribe server on ringstage.
#[derive(clap::Parser, Debug)]
#[command(name = "pubsub", version)]
struct Opts {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7200")]
    addr: SocketAddr,
    /// Pinned workers; sessions run on each, the broker on worker 0.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Subscribers get `HEARTBEAT` this often (0: never).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    heartbeat_ms: u64,
}

fn main() -> std::io::Result<()> {
    let o = <Opts as clap::Parser>::parse();
    let workers = usize::from(o.workers);
    let all: Vec<usize> = (0..workers).collect();
    let mut b = Runtime::builder(workers).signals(true);
    let session = b.stage::<NetEvent>("session", StageConfig::on(all.clone()));
    let broker = b.stage::<Req>("broker", StageConfig::on([0]).timers(1));
    b.conn_events(broker);
    let (net, listener) = b.listen(ListenConfig::new(o.addr, all), session);
    let delivered = b.counter("pubsub_deliveries_total", "Publications delivered to subscribers.");
    b.handler(session, move |s| Session {
        lines: Framer::new(Lines, MAX_LINE),
        broker: Outbox::with_waker(s.sink(broker), s.waker(session)),
    });
    let every = Duration::from_millis(o.heartbeat_ms);
    b.handler(broker, move |s| {
        let heartbeat = (!every.is_zero()).then(|| {
            let timer = s.timer(broker);
            let _ = timer.after(every, Req::Heartbeat);
            (timer, every)
        });
        Broker {
            channels: HashMap::new(),
            subscribed: ConnMap::new(),
            net: Outbox::with_waker(s.sink(net), s.waker(broker)),
            heartbeat,
            delivered: s.counter(delivered),
        }
    });
    let rt = b.start()?;
    println!("pubsub listening on {} ({workers} worker(s))", rt.local_addr(listener));
    let (sig, m) = rt.run_until_signal()?;
    eprintln!("signal {sig}: shut down");
    for s in &m.stages {
        eprintln!("stage {:<8} enqueued {} refused {} processed {}", s.name, s.enqueued, s.refused, s.processed);
    }
    Ok(())
}
