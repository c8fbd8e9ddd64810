//! A small cache server (`GET`, `SET`, `DEL` in the Redis protocol, so `redis-benchmark` can
//! drive it), written the way `docs/guide.md` teaches: a session stage that frames and parses,
//! a store stage that owns the table, replies as views of the stored values, and no
//! hand-written coalescing or flow control. `ci/bench cache` runs it next to the same server
//! on tokio (`benches/peers/src/bin/tokio_cache.rs`).
//!
//! ```text
//! cargo run --release --example cache -- [--addr 127.0.0.1:6500]
//! redis-benchmark -p 6500 -t set,get -d 100 -P 16 -c 32
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;

use ringstage::net::{ConnEvent, FrameError};
use ringstage::prelude::*;

/// A RESP command (`*<n>\r\n` then `n` bulk strings): its words, as views of the input.
struct Command {
    words: [IoBuf; 3],
    n: usize,
}

/// RESP framing for commands of up to three words.
struct Resp;

/// Parses `\r\n`-terminated decimal at `at`; returns the number and where the line ends.
fn number(input: &[u8], at: usize) -> Option<Result<(usize, usize), &'static str>> {
    let end = at + input.get(at..)?.iter().position(|&b| b == b'\r')?;
    if input.len() < end + 2 {
        return None;
    }
    let digits = std::str::from_utf8(&input[at..end]).ok().and_then(|s| s.parse().ok());
    Some(digits.map(|n| (n, end + 2)).ok_or("ERR Protocol error: bad length"))
}

impl Decoder for Resp {
    type Frame = Command;
    type Error = &'static str;

    fn decode(&mut self, input: &IoBuf) -> Result<Decode<Command>, &'static str> {
        if input[0] != b'*' {
            return Err("ERR Protocol error: expected '*'");
        }
        let Some(r) = number(input, 1) else { return Ok(Decode::Need(None)) };
        let (n, mut at) = r?;
        if n == 0 || n > 3 {
            return Err("ERR wrong number of arguments");
        }
        let mut words = [IoBuf::from_static(b""), IoBuf::from_static(b""), IoBuf::from_static(b"")];
        for word in words.iter_mut().take(n) {
            if input.len() <= at {
                return Ok(Decode::Need(None));
            }
            if input[at] != b'$' {
                return Err("ERR Protocol error: expected '$'");
            }
            let Some(r) = number(input, at + 1) else { return Ok(Decode::Need(None)) };
            let (len, start) = r?;
            if input.len() < start + len + 2 {
                return Ok(Decode::Need(Some(start + len + 2)));
            }
            *word = input.slice(start..start + len);
            at = start + len + 2;
        }
        Ok(Decode::Frame { frame: Command { words, n }, len: at })
    }
}

/// What a session asks of the store.
enum Req {
    Get {
        conn: Conn,
        key: IoBuf,
    },
    Set {
        conn: Conn,
        key: IoBuf,
        value: IoBuf,
    },
    Del {
        conn: Conn,
        key: IoBuf,
    },
    /// A reply the session gives (an error), in its place among the store's replies.
    Say {
        conn: Conn,
        text: &'static [u8],
    },
    /// Close once the replies are out.
    Close {
        conn: Conn,
    },
}

impl ConnEvent for Req {
    fn conn(&self) -> Option<Conn> {
        match self {
            Req::Get { conn, .. }
            | Req::Set { conn, .. }
            | Req::Del { conn, .. }
            | Req::Say { conn, .. }
            | Req::Close { conn } => Some(*conn),
        }
    }
}

/// The session stage: frames and parses each connection's commands.
struct Session {
    resp: Framer<Resp>,
    store: Outbox<Req>,
}

impl Handler for Session {
    type Event = NetEvent;

    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        match ev {
            NetEvent::Data { conn, data } => {
                let store = &mut self.store;
                let framed = self.resp.push(conn, data, |_, c| {
                    let [name, key, value] = c.words;
                    let req = match (&name[..], c.n) {
                        (b"GET" | b"get", 2) => Req::Get { conn, key },
                        (b"SET" | b"set", 3) => Req::Set { conn, key, value },
                        (b"DEL" | b"del", 2) => Req::Del { conn, key },
                        _ => Req::Say { conn, text: b"-ERR unknown command\r\n" },
                    };
                    store.send(req);
                    Flow::Continue
                });
                match framed {
                    Ok(()) => {}
                    Err(FrameError::Decode(_)) => {
                        self.store.send(Req::Say { conn, text: b"-ERR Protocol error\r\n" });
                        self.store.send(Req::Close { conn });
                    }
                    Err(FrameError::TooLarge { .. }) => {
                        self.store.send(Req::Say { conn, text: b"-ERR request too large\r\n" });
                        self.store.send(Req::Close { conn });
                    }
                }
            }
            NetEvent::Eof { conn } => {
                self.store.send(Req::Close { conn });
            }
            NetEvent::Closed { conn } => self.resp.remove(conn),
            _ => {}
        }
    }

    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.store.flush();
    }
}

/// The store stage: the table, and every reply.
struct Store {
    /// Values kept framed (`$<len>\r\n<bytes>\r\n`), so a `GET` reply is a view of one.
    table: HashMap<Box<[u8]>, IoBuf>,
    net: Outbox<NetCmd>,
}

impl Handler for Store {
    type Event = Req;

    fn handle(&mut self, req: Req, _cx: &mut Context<'_>) {
        let (conn, reply) = match req {
            Req::Get { conn, key } => {
                (conn, self.table.get(&key[..]).cloned().unwrap_or(IoBuf::from_static(b"$-1\r\n")))
            }
            Req::Set { conn, key, value } => {
                // A copy: a stored value must not pin the receive buffer it arrived in.
                let head = format!("${}\r\n", value.len());
                let framed = IoBuf::concat(&[head.as_bytes(), &value, b"\r\n"]);
                self.table.insert((&key[..]).into(), framed);
                (conn, IoBuf::from_static(b"+OK\r\n"))
            }
            Req::Del { conn, key } => {
                let gone = self.table.remove(&key[..]).is_some();
                (conn, IoBuf::from_static(if gone { b":1\r\n" } else { b":0\r\n" }))
            }
            Req::Say { conn, text } => (conn, IoBuf::from_static(text)),
            Req::Close { conn } => {
                self.net.send(NetCmd::Close { conn });
                return;
            }
        };
        self.net.send(NetCmd::Send { conn, data: reply });
    }

    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.net.flush();
    }
}

/// A small cache server, written the way the guide teaches.
#[derive(clap::Parser, Debug)]
#[command(name = "cache", version)]
struct Opts {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6500")]
    addr: SocketAddr,
    /// CPU of the one worker.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
}

fn main() -> std::io::Result<()> {
    let o = <Opts as clap::Parser>::parse();
    let mut b = Runtime::builder(1).cpus([o.cpu]).signals(true);
    let session = b.stage::<NetEvent>("session", StageConfig::on([0]));
    let store = b.stage::<Req>("store", StageConfig::on([0]));
    b.conn_events(store);
    let (net, listener) = b.listen(ListenConfig::new(o.addr, [0]), session);
    b.handler(session, move |s| Session {
        resp: Framer::new(Resp, 1 << 20),
        store: Outbox::with_waker(s.sink(store), s.waker(session)),
    });
    b.handler(store, move |s| Store { table: HashMap::new(), net: Outbox::with_waker(s.sink(net), s.waker(store)) });
    let rt = b.start()?;
    println!("cache listening on {}", rt.local_addr(listener));
    rt.run_until_signal()?;
    Ok(())
}
