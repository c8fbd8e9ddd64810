//! The command stage: RESP framing per connection, then each command run against the keyspace,
//! in arrival order.
//!
//! Fast commands run here, on the connection's core, and their replies go to the net stage as
//! views: a `GET` reply is the stored block itself. A slow command (`DEBUG SLEEP`) goes to the
//! slow stage on its own core; until its reply comes back (through the resume stage, which
//! shares this stage's state on the same core) later commands of that connection wait, so
//! replies stay in request order. If the slow stage refuses, the command is answered `-BUSY`
//! at once.
//!
//! The replies to the commands of one receive leave as one chain (one command to the net stage
//! however deep the pipeline: `redis-cli --pipe` sends hundreds of commands per receive). A
//! command the net stage refuses waits, in order, with any after it, and is offered again the
//! next loop iteration (the command stage's `woken`): a burst delays replies, never drops them.

mod blocking;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use ringstage::buf::BufWriter;
use ringstage::net::FrameError;
use ringstage::prelude::*;

use crate::cmd::{self, section, Outcome};
use crate::resp::{self, Limits, Resp};
use crate::slow::{SlowDone, SlowReq};
use crate::store::Store;

struct KvConn {
    /// A slow command is out (or a blocking pop waits): later commands wait behind it, in the
    /// framer.
    waiting: bool,
    /// A final reply was queued (`QUIT`, a protocol error): further input is ignored.
    done: bool,
    /// A blocking pop waits for one of these keys (`waiting` is set too).
    blocked: Option<Blocked>,
    /// The client finished sending: close once nothing of it is pending.
    eof: bool,
}

/// A `BLPOP` / `BRPOP` waiting for a push.
struct Blocked {
    keys: Vec<Box<[u8]>>,
    left: bool,
    /// Tells this wait from earlier ones of the same connection.
    id: u64,
    /// Its time limit, cancelled when a push serves it first.
    timer: Option<TimerKey>,
}

/// A blocking pop's time limit ran out: delivered by the shard's timer to the unblock stage.
pub struct BlockTimeout {
    conn: Conn,
    id: u64,
}

/// The state of one core's keyspace and connections, shared by the command and resume stages
/// of that core (both run on its thread, so a `RefCell` suffices).
pub struct Shard {
    /// To the net stage; what it refuses waits here, in order, with any command after it.
    net: Outbox<NetCmd>,
    slow: Sink<SlowReq>,
    limits: Limits,
    store: Store,
    conns: ConnMap<KvConn>,
    commands: u64,
    /// Connections opened, in all.
    connections: u64,
    started: Instant,
    /// Memory held by the connections' unframed input (as last counted), and its limit.
    input: usize,
    input_limit: usize,
    /// Connections closed for that limit (`INFO stats`, and the `kv_clients_evicted_total`
    /// counter).
    evicted: u64,
    evictions: AppCounter,
    /// Connections blocked on each key, first come first served.
    waiters: HashMap<Box<[u8]>, VecDeque<(Conn, u64)>>,
    next_block: u64,
    /// Delivers blocking pops' time limits to the unblock stage (on this core).
    timer: Timer<BlockTimeout>,
    /// Connections just unblocked, whose waiting commands are to run.
    unblocked: Vec<Conn>,
    /// Replies of the commands being run, all for `replies_to`, sent as one chain.
    replies: IoBufChain,
    /// Where short replies are written (copied), instead of a block each.
    out: BufWriter,
    replies_to: Option<Conn>,
}

/// One core's shard and the RESP framing of its connections' input. Apart, so that the
/// framer can hand each command to the shard while it holds the connection's input.
pub struct Kv {
    shard: RefCell<Shard>,
    framer: RefCell<Framer<Resp>>,
}

impl Kv {
    /// Runs `f` on the shard and the framer.
    fn with<R>(&self, f: impl FnOnce(&mut Shard, &mut Framer<Resp>) -> R) -> R {
        f(&mut self.shard.borrow_mut(), &mut self.framer.borrow_mut())
    }
}

pub type SharedShard = Rc<Kv>;

thread_local! {
    static SHARD: RefCell<Option<SharedShard>> = const { RefCell::new(None) };
}

/// The shard of the calling worker thread, created by `make` on first use.
pub fn shard_here(make: impl FnOnce() -> Shard) -> SharedShard {
    SHARD.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| {
                let shard = make();
                // A connection's unrun input: one command (a bulk string and its header line),
                // or the commands that arrived behind a slow one.
                let limit = shard.limits.max_bulk + shard.limits.max_inline;
                let framer = Framer::new(Resp { limits: shard.limits.clone(), args: Default::default() }, limit);
                Rc::new(Kv { shard: RefCell::new(shard), framer: RefCell::new(framer) })
            })
            .clone()
    })
}

impl Shard {
    /// `waker` is the command stage's: the outbox to the net stage wakes it to retry.
    pub fn new(
        net: Sink<NetCmd>,
        slow: Sink<SlowReq>,
        timer: Timer<BlockTimeout>,
        waker: Waker,
        limits: Limits,
        input_limit: usize,
        evictions: AppCounter,
    ) -> Shard {
        Shard {
            net: Outbox::with_waker(net, waker),
            slow,
            limits,
            store: Store::default(),
            conns: ConnMap::new(),
            commands: 0,
            connections: 0,
            started: Instant::now(),
            input: 0,
            input_limit,
            evicted: 0,
            evictions,
            waiters: HashMap::new(),
            next_block: 0,
            timer,
            unblocked: Vec::new(),
            replies: IoBufChain::new(),
            out: BufWriter::default(),
            replies_to: None,
        }
    }

    /// Adds a command's reply to the chain being gathered for `conn` (sent by
    /// [`Shard::send_replies`], or before any other command).
    fn reply(&mut self, conn: Conn, mut data: IoBufChain) {
        if self.replies_to != Some(conn) {
            self.send_replies();
            self.replies_to = Some(conn);
        }
        self.replies.append(&mut data);
    }

    /// Sends the gathered replies as one chain.
    fn send_replies(&mut self) {
        if let Some(conn) = self.replies_to.take() {
            let data = std::mem::take(&mut self.replies);
            if !data.is_empty() {
                self.command(NetCmd::SendChain { conn, data });
            }
        }
    }

    /// Queues a command for the net stage after the replies gathered so far.
    fn send(&mut self, cmd: NetCmd) {
        self.send_replies();
        self.command(cmd);
    }

    /// Hands `cmd` to the net stage, behind any it refused earlier; a refused one waits in
    /// the outbox, in order, retried by the command stage's `woken` the next loop iteration.
    fn command(&mut self, cmd: NetCmd) {
        self.net.send(cmd);
    }

    fn on_net(&mut self, fr: &mut Framer<Resp>, ev: NetEvent, now: Instant) {
        match ev {
            NetEvent::Opened { conn, .. } => {
                let st = KvConn { waiting: false, done: false, blocked: None, eof: false };
                self.conns.insert(conn, st);
                self.connections += 1;
            }
            NetEvent::Data { conn, data } => {
                if self.conns.get_mut(conn).is_some_and(|st| !st.done) {
                    let r = fr.push(conn, data, |dec, frame| self.run_command(conn, dec, frame, now));
                    self.framed(fr, conn, r);
                }
                self.run_unblocked(fr, now);
            }
            NetEvent::Eof { conn } => {
                let Some(st) = self.conns.get_mut(conn) else { return };
                st.eof = true;
                // A client blocked in a pop is forgotten, as Redis does: no push may ever come,
                // and it stopped talking. One waiting on a slow command gets its reply first.
                if let Some(b) = st.blocked.take() {
                    st.done = true;
                    self.forget_waits(conn, &b);
                    self.send(NetCmd::Close { conn });
                }
                self.finish_if_eof(conn);
            }
            NetEvent::Closed { conn } => {
                fr.remove(conn);
                self.input = fr.held();
                let Some(st) = self.conns.remove(conn) else { return };
                if let Some(b) = st.blocked {
                    self.forget_waits(conn, &b);
                }
            }
            // This stage opens no outbound connections; a client that does not read its replies
            // is not read either (the listener's backpressure) until they drain.
            _ => {} // no connector or UDP; backpressure is the listener's own
        }
    }

    /// After the framer ran `conn`'s commands: answers a framing error and closes, sends the
    /// replies gathered, and checks the total of unrun input.
    fn framed(&mut self, fr: &mut Framer<Resp>, conn: Conn, r: Result<(), FrameError<String>>) {
        if let Err(e) = r {
            let msg = match e {
                FrameError::Decode(msg) => format!("ERR {msg}"),
                FrameError::TooLarge { .. } => "ERR Protocol error: query buffer limit reached".to_string(),
            };
            if let Some(st) = self.conns.get_mut(conn) {
                st.done = true;
            }
            self.send(NetCmd::Send { conn, data: resp::error(&msg) });
            self.send(NetCmd::Close { conn });
        }
        self.send_replies();
        if self.conns.get_mut(conn).is_none_or(|st| st.done) {
            fr.remove(conn); // nothing more of it is run
        }
        self.account(fr);
        self.finish_if_eof(conn);
    }

    /// Runs the commands of `conn` that waited behind a slow command or a blocking pop.
    fn run_stash(&mut self, fr: &mut Framer<Resp>, conn: Conn, now: Instant) {
        let r = fr.resume(conn, |dec, frame| self.run_command(conn, dec, frame, now));
        self.framed(fr, conn, r);
    }

    /// Over the limit on all connections' unrun input (`--max-clients-input-mb`, as Redis's
    /// `maxmemory-clients`), closes the connections holding the most until it is back under,
    /// each with an error.
    fn account(&mut self, fr: &mut Framer<Resp>) {
        while fr.held() > self.input_limit {
            let Some((victim, _)) = fr.holders().max_by_key(|&(_, held)| held) else { break };
            fr.remove(victim);
            if let Some(st) = self.conns.get_mut(victim) {
                st.done = true;
            }
            self.evicted += 1;
            self.evictions.add(1);
            let e = resp::error("ERR client evicted: the server's client input buffers are over their limit");
            self.send(NetCmd::Send { conn: victim, data: e });
            self.send(NetCmd::Close { conn: victim });
        }
        self.input = fr.held();
    }

    /// The text of `INFO` for `sections` (bits of [`section`]).
    fn info(&self, sections: u8) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let on = |s: u8| sections & s != 0;
        if on(section::SERVER) {
            let up = self.started.elapsed().as_secs();
            let _ = write!(
                o,
                "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nringstage_version:{}\r\n\
                 arch_bits:64\r\nprocess_id:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                up / 86_400
            );
        }
        if on(section::CLIENTS) {
            let blocked = self.conns.iter().filter(|(_, st)| st.blocked.is_some()).count();
            let _ = write!(
                o,
                "# Clients\r\nconnected_clients:{}\r\nblocked_clients:{blocked}\r\nmaxclients:100000\r\n\r\n",
                self.conns.len()
            );
        }
        if on(section::MEMORY) {
            // The process's resident memory (this example does not count its allocations).
            let rss = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string())))
                .and_then(|v| v.trim_end_matches(" kB").parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024);
            let _ = write!(
                o,
                "# Memory\r\nused_memory:{rss}\r\nused_memory_rss:{rss}\r\nmem_clients_normal:{}\r\n\
                 maxmemory_clients:{}\r\n\r\n",
                self.input, self.input_limit
            );
        }
        if on(section::STATS) {
            let _ = write!(
                o,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nevicted_clients:{}\r\n\r\n",
                self.connections, self.commands, self.evicted
            );
        }
        if on(section::KEYSPACE) {
            o.push_str("# Keyspace\r\n");
            if self.store.len() > 0 {
                let _ = write!(o, "db0:keys={},expires={},avg_ttl=0\r\n", self.store.len(), self.store.expiring());
            }
        }
        o
    }

    /// Closes a connection whose client finished sending once no command of it is pending:
    /// its replies are all queued, and the close sends them first. An incomplete command left
    /// in the stash can never complete and is dropped.
    fn finish_if_eof(&mut self, conn: Conn) {
        let Some(st) = self.conns.get_mut(conn) else { return };
        if st.eof && !st.waiting && !st.done {
            st.done = true;
            self.send(NetCmd::Close { conn });
        }
    }

    /// Runs one command of `conn` (its words are in `dec.args`, ranges of `frame`). Returns
    /// whether the connection's later commands must wait (a slow command is out, a blocking
    /// pop waits, or the connection is done).
    fn run_command(&mut self, conn: Conn, dec: &mut Resp, frame: IoBuf, now: Instant) -> Flow {
        let data = dec.args.bytes(&frame);
        let args = &dec.args.ranges;
        if args.is_empty() {
            return Flow::Continue; // a blank line or `*0`, which Redis skips
        }
        self.commands += 1;
        match cmd::exec(&mut self.store, &mut self.out, data, args, now) {
            Outcome::Reply(r) => self.reply(conn, IoBufChain::from(r)),
            Outcome::Info(sections) => {
                let text = self.info(sections);
                self.reply(conn, IoBufChain::from(resp::bulk(text.as_bytes())))
            }
            Outcome::Chain(c) => self.reply(conn, c),
            Outcome::Close(r) => {
                self.send(NetCmd::Send { conn, data: r });
                self.send(NetCmd::Close { conn });
                if let Some(st) = self.conns.get_mut(conn) {
                    st.done = true;
                }
                return Flow::Pause;
            }
            Outcome::Block { left, timeout } => {
                if self.block(conn, data, args, left, timeout, now) {
                    return Flow::Pause;
                }
            }
            Outcome::Slow(dur) => match self.slow.try_enqueue(SlowReq { conn, dur }) {
                Ok(()) => {
                    if let Some(st) = self.conns.get_mut(conn) {
                        st.waiting = true;
                    }
                    return Flow::Pause;
                }
                Err(_) => {
                    let busy = resp::error("BUSY the slow stage is saturated, try again later");
                    self.send(NetCmd::Send { conn, data: busy });
                }
            },
        }
        if !self.waiters.is_empty() && args.len() >= 3 {
            // A push (even a refused one: then the list is unchanged) may serve connections
            // blocked on its key.
            let name = &data[args[0].clone()];
            if name.eq_ignore_ascii_case(b"LPUSH") || name.eq_ignore_ascii_case(b"RPUSH") {
                self.serve(&data[args[1].clone()], now);
            }
        }
        if self.conns.get_mut(conn).is_none_or(|st| st.done) {
            return Flow::Pause;
        }
        Flow::Continue
    }

    /// A slow command of `conn` finished: reply, then run what waited behind it.
    fn resume(&mut self, fr: &mut Framer<Resp>, done: SlowDone, now: Instant) {
        let conn = done.conn;
        let Some(st) = self.conns.get_mut(conn) else { return }; // closed meanwhile
        st.waiting = false;
        if st.done {
            return;
        }
        self.send(NetCmd::Send { conn, data: resp::OK.clone() });
        self.run_stash(fr, conn, now);
        self.run_unblocked(fr, now);
    }
}

/// The command stage: RESP in from the net stage.
pub struct Command {
    pub shard: SharedShard,
}

impl Handler for Command {
    type Event = NetEvent;

    fn handle(&mut self, ev: NetEvent, cx: &mut Context<'_>) {
        self.shard.with(|sh, fr| sh.on_net(fr, ev, cx.now()));
    }

    /// Active expiry: up to 1000 keys past their deadline per tick.
    fn tick(&mut self, cx: &mut Context<'_>) {
        self.shard.shard.borrow_mut().store.expire(cx.now(), 1000);
    }

    /// The net stage refused replies (the shard's outbox): offer them again.
    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.shard.shard.borrow_mut().net.flush();
    }
}

/// The unblock stage: blocking pops whose time limit ran out (events from the shard's timer).
pub struct Unblock {
    pub shard: SharedShard,
}

impl Handler for Unblock {
    type Event = BlockTimeout;

    fn handle(&mut self, t: BlockTimeout, cx: &mut Context<'_>) {
        self.shard.with(|sh, fr| sh.timed_out(fr, t, cx.now()));
    }
}

/// The resume stage: replies of slow commands, back on the connection's core.
pub struct Resume {
    pub shard: SharedShard,
}

impl Handler for Resume {
    type Event = SlowDone;

    fn handle(&mut self, done: SlowDone, cx: &mut Context<'_>) {
        self.shard.with(|sh, fr| sh.resume(fr, done, cx.now()));
    }
}
