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

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringstage::buf::BufWriter;
use ringstage::prelude::*;

use crate::resp::{self, Frame, Limits};
use crate::slow::{SlowDone, SlowReq};
use crate::store::{Hash, List, MemberSet, Store, Str, WrongType, ZSet};

struct KvConn {
    /// Bytes of a command not complete yet, or that arrived while a slow command was out.
    stash: Vec<u8>,
    /// The stash completes its first command at this length (0: not known).
    need: usize,
    /// A slow command is out: later commands wait behind it.
    waiting: bool,
    /// A final reply was queued (`QUIT`, a protocol error): further input is ignored.
    done: bool,
    /// A blocking pop waits for one of these keys (`waiting` is set too).
    blocked: Option<Blocked>,
    /// The client finished sending: close once nothing of it is pending.
    eof: bool,
    /// The stash's memory as last counted in `Shard::input`.
    counted: usize,
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

/// What running one command produced.
enum Outcome {
    Reply(IoBuf),
    Chain(IoBufChain),
    /// `INFO` for these sections ([`section`] bits): the shard, which knows its connections,
    /// writes it.
    Info(u8),
    /// Hand to the slow stage: sleep this long, then reply `+OK`.
    Slow(Duration),
    /// Reply, then close the connection.
    Close(IoBuf),
    /// `BLPOP` / `BRPOP` found every key empty: wait for a push to one of `args[1..n-1]`, or
    /// until the time limit (`None`: no limit).
    Block {
        left: bool,
        timeout: Option<Duration>,
    },
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
    /// Arguments of the command being run (kept to avoid an allocation per command).
    args: resp::Args,
    commands: u64,
    /// Connections opened, in all.
    connections: u64,
    started: Instant,
    /// Memory held by the connections' stashes (input not run yet), and its limit.
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

pub type SharedShard = Rc<RefCell<Shard>>;

thread_local! {
    static SHARD: RefCell<Option<SharedShard>> = const { RefCell::new(None) };
}

/// The shard of the calling worker thread, created by `make` on first use.
pub fn shard_here(make: impl FnOnce() -> Shard) -> SharedShard {
    SHARD.with(|s| s.borrow_mut().get_or_insert_with(|| Rc::new(RefCell::new(make()))).clone())
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
            args: resp::Args::default(),
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

    fn on_net(&mut self, ev: NetEvent, now: Instant) {
        match ev {
            NetEvent::Opened { conn, .. } => {
                let st = KvConn {
                    stash: Vec::new(),
                    need: 0,
                    waiting: false,
                    done: false,
                    blocked: None,
                    eof: false,
                    counted: 0,
                };
                self.conns.insert(conn, st);
                self.connections += 1;
            }
            NetEvent::Data { conn, data } => {
                self.on_data(conn, &data, now);
                self.account(conn);
                self.run_unblocked(now);
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
                let Some(st) = self.conns.remove(conn) else { return };
                self.input -= st.counted;
                if let Some(b) = st.blocked {
                    self.forget_waits(conn, &b);
                }
            }
            // This stage opens no outbound connections; a client that does not read its replies
            // is not read either (the listener's backpressure) until they drain.
            NetEvent::Connected { .. }
            | NetEvent::ConnectFailed { .. }
            | NetEvent::Backlogged { .. }
            | NetEvent::Drained { .. } => {}
        }
    }

    fn on_data(&mut self, conn: Conn, data: &[u8], now: Instant) {
        let limit = self.limits.max_bulk + self.limits.max_inline;
        let Some(st) = self.conns.get_mut(conn) else { return };
        if st.done {
            return;
        }
        if !st.waiting && st.stash.is_empty() {
            // The common case: whole commands in one receive, read straight from the pool buffer.
            let used = self.run(conn, data, now);
            let Some(st) = self.conns.get_mut(conn) else { return };
            if used < data.len() && !st.done {
                st.stash.extend_from_slice(&data[used..]);
            }
            return;
        }
        if st.stash.len() + data.len() > limit {
            let e = resp::error("ERR Protocol error: query buffer limit reached");
            st.done = true;
            self.send(NetCmd::Send { conn, data: e });
            self.send(NetCmd::Close { conn });
            return;
        }
        st.stash.extend_from_slice(data);
        if !st.waiting && st.stash.len() >= st.need {
            self.run_stash(conn, now);
        }
    }

    /// Runs the complete commands in the connection's stash and keeps the rest there.
    fn run_stash(&mut self, conn: Conn, now: Instant) {
        let Some(st) = self.conns.get_mut(conn) else { return };
        let buf = std::mem::take(&mut st.stash);
        let used = self.run(conn, &buf, now);
        let Some(st) = self.conns.get_mut(conn) else { return };
        st.stash = buf;
        st.stash.drain(..used);
        if st.stash.is_empty() && st.stash.capacity() > 64 << 10 {
            st.stash = Vec::new(); // a large value passed through: give its memory back
        }
        self.account(conn);
        self.finish_if_eof(conn);
    }

    /// Counts the memory `conn`'s stash holds into the shard's total; over the limit
    /// (`--max-clients-input-mb`, as Redis's `maxmemory-clients`), closes the connections
    /// holding the most until it is back under, each with an error.
    fn account(&mut self, conn: Conn) {
        if let Some(st) = self.conns.get_mut(conn) {
            self.input = self.input - st.counted + st.stash.capacity();
            st.counted = st.stash.capacity();
        }
        while self.input > self.input_limit {
            let Some((victim, _)) = self.conns.iter().filter(|(_, st)| st.counted > 0).max_by_key(|(_, st)| st.counted)
            else {
                break;
            };
            let st = self.conns.get_mut(victim).expect("just found");
            st.done = true;
            self.input -= std::mem::take(&mut st.counted);
            st.stash = Vec::new();
            self.evicted += 1;
            self.evictions.add(1);
            let e = resp::error("ERR client evicted: the server's client input buffers are over their limit");
            self.send(NetCmd::Send { conn: victim, data: e });
            self.send(NetCmd::Close { conn: victim });
        }
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

    /// Runs the commands at the front of `buf` until one is incomplete, a slow command is out
    /// or the connection is done. Returns the bytes consumed.
    fn run(&mut self, conn: Conn, buf: &[u8], now: Instant) -> usize {
        let mut pos = 0;
        let mut args = std::mem::take(&mut self.args);
        loop {
            match resp::parse(&buf[pos..], &self.limits, &mut args) {
                Frame::Partial { need } => {
                    if let Some(st) = self.conns.get_mut(conn) {
                        st.need = need.unwrap_or(0);
                    }
                    break;
                }
                Frame::Error(msg) => {
                    if let Some(st) = self.conns.get_mut(conn) {
                        st.done = true;
                    }
                    self.send(NetCmd::Send { conn, data: resp::error(&format!("ERR {msg}")) });
                    self.send(NetCmd::Close { conn });
                    pos = buf.len();
                    break;
                }
                Frame::Command { consumed } => {
                    let data = args.bytes(&buf[pos..]);
                    let args = &args.ranges;
                    pos += consumed;
                    if args.is_empty() {
                        continue;
                    }
                    self.commands += 1;
                    match exec(&mut self.store, &mut self.out, data, args, now) {
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
                            pos = buf.len();
                            break;
                        }
                        Outcome::Block { left, timeout } => {
                            if self.block(conn, data, args, left, timeout, now) {
                                break;
                            }
                        }
                        Outcome::Slow(dur) => match self.slow.try_enqueue(SlowReq { conn, dur }) {
                            Ok(()) => {
                                if let Some(st) = self.conns.get_mut(conn) {
                                    st.waiting = true;
                                    st.need = 0;
                                }
                                break;
                            }
                            Err(_) => {
                                let busy = resp::error("BUSY the slow stage is saturated, try again later");
                                self.send(NetCmd::Send { conn, data: busy });
                            }
                        },
                    }
                    if !self.waiters.is_empty() && args.len() >= 3 {
                        // A push (even a refused one: then the list is unchanged) may serve
                        // connections blocked on its key.
                        let name = &data[args[0].clone()];
                        if name.eq_ignore_ascii_case(b"LPUSH") || name.eq_ignore_ascii_case(b"RPUSH") {
                            self.serve(&data[args[1].clone()], now);
                        }
                    }
                    if self.conns.get_mut(conn).is_none_or(|st| st.done) {
                        pos = buf.len();
                        break;
                    }
                }
            }
        }
        self.args = args;
        self.send_replies();
        pos
    }

    /// A slow command of `conn` finished: reply, then run what waited behind it.
    fn resume(&mut self, done: SlowDone, now: Instant) {
        let conn = done.conn;
        let Some(st) = self.conns.get_mut(conn) else { return }; // closed meanwhile
        st.waiting = false;
        if st.done {
            return;
        }
        self.send(NetCmd::Send { conn, data: resp::OK.clone() });
        self.run_stash(conn, now);
        self.run_unblocked(now);
    }

    /// Parks `conn` on the keys of the blocking pop in `data`/`args` (later commands of the
    /// connection wait behind it). Returns false, having answered `-BUSY`, when the timer
    /// table is full.
    fn block(
        &mut self,
        conn: Conn,
        data: &[u8],
        args: &[Range<usize>],
        left: bool,
        timeout: Option<Duration>,
        now: Instant,
    ) -> bool {
        let id = self.next_block;
        self.next_block += 1;
        let mut timer = None;
        if let Some(t) = timeout {
            // `at`, not `after`: the limit counts from this command's loop time.
            let at = now.checked_add(t).unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
            match self.timer.at(at, BlockTimeout { conn, id }) {
                Ok(key) => timer = Some(key),
                Err(_) => {
                    let busy = resp::error("BUSY too many blocked clients, try again later");
                    self.send(NetCmd::Send { conn, data: busy });
                    return false;
                }
            }
        }
        let keys: Vec<Box<[u8]>> = args[1..args.len() - 1].iter().map(|r| data[r.clone()].into()).collect();
        for k in &keys {
            self.waiters.entry(k.clone()).or_default().push_back((conn, id));
        }
        if let Some(st) = self.conns.get_mut(conn) {
            st.waiting = true;
            st.need = 0;
            st.blocked = Some(Blocked { keys, left, id, timer });
        }
        true
    }

    /// A push to `key` happened: hands its elements to the connections blocked on it, first
    /// blocked first served, while both last.
    fn serve(&mut self, key: &[u8], now: Instant) {
        while let Some(&(conn, id)) = self.waiters.get(key).and_then(|q| q.front()) {
            let state = self.conns.get_mut(conn).filter(|st| !st.done).and_then(|st| st.blocked.as_ref());
            let Some(left) = state.filter(|b| b.id == id).map(|b| b.left) else {
                // Its connection is finishing (a reply could not be queued): no element for it.
                let q = self.waiters.get_mut(key).expect("just looked at");
                q.pop_front();
                if q.is_empty() {
                    self.waiters.remove(key);
                }
                continue;
            };
            let elem = match self.store.write::<List>(key, now) {
                Ok(Some(l)) if left => l.pop_front(),
                Ok(Some(l)) => l.pop_back(),
                _ => None,
            };
            let Some(elem) = elem else { return };
            self.store.drop_if_empty(key);
            let mut reply = IoBufChain::new();
            reply.push(resp::array_header(2));
            reply.push(resp::bulk(key));
            reply.push(elem);
            self.unblock(conn, NetCmd::SendChain { conn, data: reply });
        }
    }

    /// The unblock stage's event: a blocking pop's time limit ran out.
    fn timed_out(&mut self, t: BlockTimeout, now: Instant) {
        if self.conns.get_mut(t.conn).and_then(|st| st.blocked.as_ref()).is_some_and(|b| b.id == t.id) {
            self.unblock(t.conn, NetCmd::Send { conn: t.conn, data: resp::NIL_ARRAY.clone() });
            self.run_unblocked(now);
        }
    }

    /// Ends `conn`'s wait with `reply`; its waiting commands run in [`Shard::run_unblocked`].
    fn unblock(&mut self, conn: Conn, reply: NetCmd) {
        let Some(st) = self.conns.get_mut(conn) else { return };
        let Some(b) = st.blocked.take() else { return };
        st.waiting = false;
        self.forget_waits(conn, &b);
        self.send(reply);
        self.unblocked.push(conn);
    }

    /// Removes `conn`'s entries for the wait `b` from the waiter queues, and its time limit.
    fn forget_waits(&mut self, conn: Conn, b: &Blocked) {
        if let Some(k) = b.timer {
            self.timer.cancel(k);
        }
        for k in &b.keys {
            if let Some(q) = self.waiters.get_mut(k) {
                q.retain(|&(c, id)| !(c == conn && id == b.id));
                if q.is_empty() {
                    self.waiters.remove(k);
                }
            }
        }
    }

    /// Runs the commands that waited behind blocking pops that just ended (which may push and
    /// end more of them).
    fn run_unblocked(&mut self, now: Instant) {
        while let Some(conn) = self.unblocked.pop() {
            if self.conns.get_mut(conn).is_some_and(|st| !st.done && !st.waiting) {
                self.run_stash(conn, now);
            }
        }
    }
}

/// The sections of `INFO`, as bits of a mask.
mod section {
    pub const SERVER: u8 = 1;
    pub const CLIENTS: u8 = 2;
    pub const MEMORY: u8 = 4;
    pub const STATS: u8 = 8;
    pub const KEYSPACE: u8 = 16;
    pub const ALL: u8 = 31;

    /// The section named `name` (`all`, `default` and `everything` name all of them; an
    /// unknown name none).
    pub fn named(name: &[u8]) -> u8 {
        match name.to_ascii_lowercase().as_slice() {
            b"server" => SERVER,
            b"clients" => CLIENTS,
            b"memory" => MEMORY,
            b"stats" => STATS,
            b"keyspace" => KEYSPACE,
            b"all" | b"default" | b"everything" => ALL,
            _ => 0,
        }
    }
}

/// Parses an integer argument as Redis does: canonical decimal only (no `+`, no leading zeros,
/// no spaces).
fn int(s: &[u8]) -> Option<i64> {
    let v: i64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    (v.to_string().as_bytes() == s).then_some(v)
}

fn wrong_args(name: &[u8]) -> Outcome {
    let name = String::from_utf8_lossy(name).to_lowercase();
    Outcome::Reply(resp::error(&format!("ERR wrong number of arguments for '{name}' command")))
}

fn err(msg: &str) -> Outcome {
    Outcome::Reply(resp::error(msg))
}

/// When a key given a time to live expires.
enum Expiry {
    /// Already: the time is now or past.
    Past,
    At(Instant),
}

/// The expiry `amount` units of `unit_ms` milliseconds from now, checked as Redis checks it:
/// an amount that is not an integer is `value is not an integer`; one whose milliseconds, or
/// whose absolute time in milliseconds since the epoch, overflow 64 bits is `invalid expire
/// time in '<cmd>' command` (`cmd` lower case). Nothing is changed on an error.
fn expiry(now: Instant, amount: &[u8], unit_ms: i64, cmd: &str) -> Result<Expiry, Outcome> {
    let n = int(amount).ok_or_else(|| err("ERR value is not an integer or out of range"))?;
    let invalid = || err(&format!("ERR invalid expire time in '{cmd}' command"));
    let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    let epoch_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    if ms > i64::MAX - epoch_ms {
        return Err(invalid());
    }
    if ms <= 0 {
        return Ok(Expiry::Past);
    }
    now.checked_add(Duration::from_millis(ms as u64)).map(Expiry::At).ok_or_else(invalid)
}

/// Like [`expiry`], for the commands that set a value with a time to live (`SET EX`, `SETEX`):
/// the time must lie ahead.
fn ttl_deadline(now: Instant, amount: &[u8], unit_ms: i64, cmd: &str) -> Result<Instant, Outcome> {
    match expiry(now, amount, unit_ms, cmd)? {
        Expiry::At(t) => Ok(t),
        Expiry::Past => Err(err(&format!("ERR invalid expire time in '{cmd}' command"))),
    }
}

/// A string reply: a short string framed into `out` (a copy, no allocation), a long one as a
/// view of its stored block.
fn str_reply(out: &mut BufWriter, s: Str<'_>) -> IoBuf {
    match s {
        Str::Framed(f) => f.clone(),
        Str::Raw(b) => {
            resp::write_bulk(out, b);
            out.take()
        }
    }
}

/// Runs one command. `data` holds the bytes `args` index into; `out` takes short replies.
fn exec(store: &mut Store, out: &mut BufWriter, data: &[u8], args: &[Range<usize>], now: Instant) -> Outcome {
    let a = |i: usize| &data[args[i].clone()];
    let n = args.len();
    let name = a(0);
    let mut up = [0u8; 12];
    let cmd: &[u8] = if name.len() <= up.len() {
        up[..name.len()].copy_from_slice(name);
        up[..name.len()].make_ascii_uppercase();
        &up[..name.len()]
    } else {
        b""
    };
    let arity = |ok: bool| if ok { None } else { Some(wrong_args(name)) };
    let check = match cmd {
        b"GET" | b"TTL" | b"PTTL" | b"PERSIST" | b"INCR" | b"DECR" | b"ECHO" => arity(n == 2),
        b"STRLEN" | b"GETDEL" | b"KEYS" => arity(n == 2),
        b"SET" => arity(n >= 3),
        b"SETNX" | b"GETSET" | b"APPEND" => arity(n == 3),
        b"SETEX" | b"PSETEX" => arity(n == 4),
        b"INCRBY" | b"DECRBY" | b"EXPIRE" | b"PEXPIRE" => arity(n == 3),
        b"DEL" | b"EXISTS" | b"MGET" => arity(n >= 2),
        b"MSET" => arity(n >= 3 && n % 2 == 1),
        b"PING" => arity(n <= 2),
        b"DBSIZE" | b"QUIT" => arity(n == 1),
        b"SELECT" => arity(n == 2),
        b"DEBUG" | b"CONFIG" => arity(n >= 2),
        b"LLEN" | b"SCARD" | b"SMEMBERS" | b"HLEN" | b"HGETALL" | b"TYPE" => arity(n == 2),
        b"LPUSH" | b"RPUSH" | b"SADD" | b"SREM" | b"HDEL" => arity(n >= 3),
        b"LPOP" | b"RPOP" | b"SPOP" => arity(n == 2 || n == 3),
        b"LRANGE" => arity(n == 4),
        b"LINDEX" | b"SISMEMBER" | b"HGET" | b"HEXISTS" => arity(n == 3),
        b"HSET" => arity(n >= 4 && n % 2 == 0),
        b"ZADD" => arity(n >= 4),
        b"ZCARD" => arity(n == 2),
        b"ZPOPMIN" => arity(n == 2 || n == 3),
        b"ZSCORE" => arity(n == 3),
        b"ZREM" => arity(n >= 3),
        b"ZRANGE" => arity(n == 4 || n == 5),
        b"BLPOP" | b"BRPOP" => arity(n >= 3),
        _ => None,
    };
    if let Some(e) = check {
        return e;
    }
    match cmd {
        b"GET" => Outcome::Reply(match store.get(a(1), now) {
            Ok(Some(v)) => str_reply(out, v),
            Ok(None) => resp::NIL.clone(),
            Err(WrongType) => resp::WRONGTYPE.clone(),
        }),
        b"SET" => set(store, data, args, now),
        b"SETEX" | b"PSETEX" => {
            let (unit, name) = if cmd == b"SETEX" { (1000, "setex") } else { (1, "psetex") };
            match ttl_deadline(now, a(2), unit, name) {
                Ok(t) => {
                    store.set(a(1), a(3), Some(t));
                    Outcome::Reply(resp::OK.clone())
                }
                Err(e) => e,
            }
        }
        b"SETNX" => Outcome::Reply(resp::integer(if store.contains(a(1), now) {
            0
        } else {
            store.set(a(1), a(2), None);
            1
        })),
        // The old value (or nil), replaced or removed. A string only.
        b"GETSET" | b"GETDEL" => match store.get(a(1), now) {
            Err(WrongType) => wrongtype(),
            Ok(old) => {
                let reply = old.map_or_else(|| resp::NIL.clone(), |v| str_reply(out, v));
                if cmd == b"GETSET" {
                    store.set(a(1), a(2), None);
                } else {
                    store.remove(a(1), now);
                }
                Outcome::Reply(reply)
            }
        },
        b"STRLEN" => match store.get(a(1), now) {
            Err(WrongType) => wrongtype(),
            Ok(v) => Outcome::Reply(resp::integer(v.map_or(0, |v| v.bytes().len()) as i64)),
        },
        // A copy of the value with the bytes added (values are immutable blocks shared with
        // replies in flight); the deadline stays.
        b"APPEND" => match store.get(a(1), now) {
            Err(WrongType) => wrongtype(),
            Ok(old) => {
                let mut v = old.map_or(&[][..], Str::bytes).to_vec();
                v.extend_from_slice(a(2));
                store.set_keeping_deadline(a(1), &v, now);
                Outcome::Reply(resp::integer(v.len() as i64))
            }
        },
        // Every live key matching the glob pattern (as Redis, a full scan of the keyspace).
        b"KEYS" => {
            let keys: Vec<IoBuf> = store.keys(now).filter(|k| glob(a(1), k)).map(resp::bulk).collect();
            array(keys.into_iter())
        }
        b"DEL" => Outcome::Reply(resp::integer((1..n).filter(|&i| store.remove(a(i), now)).count() as i64)),
        b"EXISTS" => Outcome::Reply(resp::integer((1..n).filter(|&i| store.contains(a(i), now)).count() as i64)),
        // As in Redis, a key of another type reads as missing here.
        b"MGET" => {
            let replies: Vec<IoBuf> = (1..n)
                .map(|i| match store.get(a(i), now) {
                    Ok(Some(v)) => str_reply(out, v),
                    _ => resp::NIL.clone(),
                })
                .collect();
            array(replies.into_iter())
        }
        b"MSET" => {
            for i in (1..n).step_by(2) {
                store.set(a(i), a(i + 1), None);
            }
            Outcome::Reply(resp::OK.clone())
        }
        b"INCR" | b"DECR" | b"INCRBY" | b"DECRBY" => {
            let by = if n == 3 {
                match int(a(2)) {
                    Some(v) => v,
                    None => return err("ERR value is not an integer or out of range"),
                }
            } else {
                1
            };
            let by = if cmd.starts_with(b"DECR") { by.checked_neg() } else { Some(by) };
            let cur = match store.get(a(1), now) {
                Err(WrongType) => return Outcome::Reply(resp::WRONGTYPE.clone()),
                Ok(None) => 0,
                Ok(Some(v)) => match int(v.bytes()) {
                    Some(v) => v,
                    None => return err("ERR value is not an integer or out of range"),
                },
            };
            let Some(v) = by.and_then(|by| cur.checked_add(by)) else {
                return err("ERR increment or decrement would overflow");
            };
            store.set_keeping_deadline(a(1), v.to_string().as_bytes(), now);
            Outcome::Reply(resp::integer(v))
        }
        b"EXPIRE" | b"PEXPIRE" => {
            let (unit, name) = if cmd == b"EXPIRE" { (1000, "expire") } else { (1, "pexpire") };
            match expiry(now, a(2), unit, name) {
                Ok(Expiry::Past) => Outcome::Reply(resp::integer(i64::from(store.remove(a(1), now)))),
                Ok(Expiry::At(at)) => Outcome::Reply(resp::integer(i64::from(store.set_deadline(a(1), Some(at), now)))),
                Err(e) => e,
            }
        }
        b"TTL" | b"PTTL" => Outcome::Reply(resp::integer(match store.deadline(a(1), now) {
            None => -2,
            Some(None) => -1,
            Some(Some(t)) => {
                let ms = t.saturating_duration_since(now).as_millis() as i64;
                if cmd == b"TTL" {
                    (ms + 500) / 1000
                } else {
                    ms
                }
            }
        })),
        b"PERSIST" => {
            let had = matches!(store.deadline(a(1), now), Some(Some(_)));
            Outcome::Reply(resp::integer(i64::from(had && store.set_deadline(a(1), None, now))))
        }
        b"TYPE" => Outcome::Reply(IoBuf::from(format!("+{}\r\n", store.type_name(a(1), now)).into_bytes())),
        b"LPUSH" | b"RPUSH" | b"LPOP" | b"RPOP" | b"LLEN" | b"LRANGE" | b"LINDEX" => {
            list(store, cmd, data, args, now).unwrap_or_else(|WrongType| wrongtype())
        }
        b"BLPOP" | b"BRPOP" => {
            blocking_pop(store, cmd == b"BLPOP", data, args, now).unwrap_or_else(|WrongType| wrongtype())
        }
        b"SADD" | b"SREM" | b"SCARD" | b"SISMEMBER" | b"SMEMBERS" | b"SPOP" => {
            set_cmd(store, cmd, data, args, now).unwrap_or_else(|WrongType| wrongtype())
        }
        b"HSET" | b"HGET" | b"HDEL" | b"HLEN" | b"HEXISTS" | b"HGETALL" => {
            hash(store, cmd, data, args, now).unwrap_or_else(|WrongType| wrongtype())
        }
        b"ZADD" | b"ZCARD" | b"ZPOPMIN" | b"ZSCORE" | b"ZREM" | b"ZRANGE" => {
            zset(store, cmd, data, args, now).unwrap_or_else(|WrongType| wrongtype())
        }
        b"DBSIZE" => Outcome::Reply(resp::integer(store.len() as i64)),
        b"FLUSHALL" | b"FLUSHDB" => {
            store.clear();
            Outcome::Reply(resp::OK.clone())
        }
        b"PING" if n == 2 => Outcome::Reply(resp::bulk(a(1))),
        b"PING" => Outcome::Reply(resp::PONG.clone()),
        b"ECHO" => Outcome::Reply(resp::bulk(a(1))),
        b"SELECT" if a(1) == b"0" => Outcome::Reply(resp::OK.clone()),
        b"SELECT" => err("ERR DB index is out of range"),
        b"QUIT" => Outcome::Close(resp::OK.clone()),
        // Clients ask for a few settings and the command table on connect (redis-benchmark
        // reads `save` and `appendonly`). Nothing is persisted or configurable at run time.
        b"CONFIG" if a(1).eq_ignore_ascii_case(b"GET") && n == 3 => {
            let value: &[u8] = match a(2).to_ascii_lowercase().as_slice() {
                b"save" => b"",
                b"appendonly" => b"no",
                b"databases" => b"1",
                _ => return Outcome::Reply(resp::EMPTY_ARRAY.clone()),
            };
            let mut c = IoBufChain::new();
            c.push(resp::array_header(2));
            c.push(resp::bulk(&a(2).to_ascii_lowercase()));
            c.push(resp::bulk(value));
            Outcome::Chain(c)
        }
        b"COMMAND" => Outcome::Reply(resp::EMPTY_ARRAY.clone()),
        b"INFO" if n == 1 => Outcome::Info(section::ALL),
        b"INFO" => Outcome::Info((1..n).fold(0, |m, i| m | section::named(a(i)))),
        b"DEBUG" if a(1).eq_ignore_ascii_case(b"SLEEP") && n == 3 => {
            let secs = std::str::from_utf8(a(2)).ok().and_then(|s| s.parse::<f64>().ok());
            match secs {
                Some(s) if (0.0..=60.0).contains(&s) => Outcome::Slow(Duration::from_secs_f64(s)),
                _ => err("ERR value is not a valid float in 0..=60"),
            }
        }
        b"DEBUG" | b"CONFIG" => {
            err(&format!("ERR unknown subcommand '{}'", String::from_utf8_lossy(&a(1)[..a(1).len().min(64)])))
        }
        _ => {
            let mut msg = format!("ERR unknown command '{}', with args beginning with: ", printable(name));
            for i in 1..n.min(4) {
                msg.push_str(&format!("'{}' ", printable(a(i))));
            }
            err(&msg)
        }
    }
}

/// Redis's glob patterns (`KEYS`): `*` any run of bytes, `?` one byte, `[abc]`, `[^a-c]` or
/// `[!a-c]` one byte of (or not of) a set with ranges, `\x` the byte `x`. An unclosed `[`
/// runs to the end of the pattern.
fn glob(p: &[u8], s: &[u8]) -> bool {
    // Backtracking to the last `*` suffices: the bytes a star takes only ever need to grow.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, si));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => {
                let (matched, end) = class(&p[pi + 1..], s[si]);
                matched.then_some(pi + 1 + end)
            }
            Some(b'\\') if pi + 1 < p.len() => (p[pi + 1] == s[si]).then_some(pi + 2),
            Some(&c) => (c == s[si]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                si += 1;
            }
            (None, Some((sp, ss))) => {
                star = Some((sp, ss + 1));
                pi = sp;
                si = ss + 1;
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches byte `b` against the set that starts `p` (just after its `[`). Returns whether it
/// matched and the length of the set with its closing `]`.
fn class(p: &[u8], b: u8) -> (bool, usize) {
    let negate = matches!(p.first(), Some(b'^' | b'!'));
    let mut i = usize::from(negate);
    let mut hit = false;
    while i < p.len() && p[i] != b']' {
        let (lo, len) = if p[i] == b'\\' && i + 1 < p.len() { (p[i + 1], 2) } else { (p[i], 1) };
        if p.get(i + len) == Some(&b'-') && p.get(i + len + 1).is_some_and(|&c| c != b']') {
            let hi = p[i + len + 1];
            hit |= (lo.min(hi)..=lo.max(hi)).contains(&b);
            i += len + 2;
        } else {
            hit |= lo == b;
            i += len;
        }
    }
    (hit != negate, (i + 1).min(p.len()))
}

/// An optional count argument (`LPOP key [count]`): `Ok(None)` when absent.
fn count_arg(data: &[u8], args: &[Range<usize>], i: usize) -> Result<Option<usize>, Outcome> {
    match args.get(i) {
        None => Ok(None),
        Some(r) => match int(&data[r.clone()]) {
            Some(c) if c >= 0 => Ok(Some(c as usize)),
            _ => Err(err("ERR value is out of range, must be positive")),
        },
    }
}

/// Elements at least this long go into an array reply as views of their stored blocks;
/// shorter ones are copied: a gather list of tiny views costs more to send than the copy.
const VIEW_MIN: usize = 512;

/// An array reply of the given framed elements: runs of short elements copied into one
/// buffer, long ones as views (so a reply of small elements is a single segment).
fn array(items: impl ExactSizeIterator<Item = IoBuf>) -> Outcome {
    let mut flat = format!("*{}\r\n", items.len()).into_bytes();
    let mut chain = IoBufChain::new();
    for it in items {
        if it.len() < VIEW_MIN {
            flat.extend_from_slice(&it);
        } else {
            if !flat.is_empty() {
                chain.push(IoBuf::from(std::mem::take(&mut flat)));
            }
            chain.push(it);
        }
    }
    if chain.is_empty() {
        return Outcome::Reply(IoBuf::from(flat));
    }
    if !flat.is_empty() {
        chain.push(IoBuf::from(flat));
    }
    Outcome::Chain(chain)
}

fn wrongtype() -> Outcome {
    Outcome::Reply(resp::WRONGTYPE.clone())
}

/// `count` pops as an array (`Some`), or one as a bulk string, nil when there is none.
fn pops(count: Option<usize>, mut pop: impl FnMut() -> Option<IoBuf>) -> Outcome {
    match count {
        None => Outcome::Reply(pop().unwrap_or_else(|| resp::NIL.clone())),
        Some(c) => {
            let items: Vec<IoBuf> = (0..c).map_while(|_| pop()).collect();
            array(items.into_iter())
        }
    }
}

/// Redis's rank rules for `len` elements: a negative index counts from the end, and the range
/// is clamped to the elements. `None` when it holds none.
fn rank_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let at = |i: i64| if i < 0 { len + i } else { i };
    let (start, stop) = (at(start).max(0), at(stop).min(len - 1));
    (start <= stop).then_some((start as usize, stop as usize))
}

/// The list commands: LPUSH, RPUSH, LPOP, RPOP (with an optional count), LLEN, LRANGE, LINDEX.
/// Elements are stored framed, so pops answer with views of the stored blocks.
fn list(store: &mut Store, cmd: &[u8], data: &[u8], args: &[Range<usize>], now: Instant) -> Result<Outcome, WrongType> {
    let a = |i: usize| &data[args[i].clone()];
    let key = a(1);
    Ok(match cmd {
        b"LPUSH" | b"RPUSH" => {
            let l = store.write_or_insert::<List>(key, now)?;
            for i in 2..args.len() {
                let e = resp::bulk(a(i));
                if cmd == b"LPUSH" {
                    l.push_front(e);
                } else {
                    l.push_back(e);
                }
            }
            Outcome::Reply(resp::integer(l.len() as i64))
        }
        b"LPOP" | b"RPOP" => {
            let count = match count_arg(data, args, 2) {
                Ok(c) => c,
                Err(e) => return Ok(e),
            };
            let Some(l) = store.write::<List>(key, now)? else {
                return Ok(Outcome::Reply(if count.is_some() { resp::NIL_ARRAY.clone() } else { resp::NIL.clone() }));
            };
            let out = pops(count, || if cmd == b"LPOP" { l.pop_front() } else { l.pop_back() });
            store.drop_if_empty(key);
            out
        }
        _ => {
            let l = store.read::<List>(key, now)?;
            let len = l.map_or(0, List::len);
            if cmd == b"LLEN" {
                return Ok(Outcome::Reply(resp::integer(len as i64)));
            }
            let Some(start) = int(a(2)) else { return Ok(err("ERR value is not an integer or out of range")) };
            if cmd == b"LINDEX" {
                let e = l.zip(rank_range(start, start, len)).map(|(l, (i, _))| l[i].clone());
                return Ok(Outcome::Reply(e.unwrap_or_else(|| resp::NIL.clone())));
            }
            let Some(stop) = int(a(3)) else { return Ok(err("ERR value is not an integer or out of range")) };
            match l.zip(rank_range(start, stop, len)) {
                Some((l, (start, stop))) => array(l.range(start..=stop).cloned()),
                None => Outcome::Reply(resp::EMPTY_ARRAY.clone()),
            }
        }
    })
}

/// `BLPOP` / `BRPOP key [key ...] timeout`: pops from the first non-empty list at once, or
/// blocks (the shard parks the connection) until a push or the timeout (seconds, a decimal; 0
/// waits for ever).
fn blocking_pop(
    store: &mut Store,
    left: bool,
    data: &[u8],
    args: &[Range<usize>],
    now: Instant,
) -> Result<Outcome, WrongType> {
    let a = |i: usize| &data[args[i].clone()];
    let n = args.len();
    let t = std::str::from_utf8(a(n - 1)).ok().and_then(|t| t.parse::<f64>().ok()).filter(|t| t.is_finite());
    let timeout = match t {
        None => return Ok(err("ERR timeout is not a float or out of range")),
        Some(t) if t < 0.0 => return Ok(err("ERR timeout is negative")),
        Some(0.0) => None,
        Some(t) => Some(Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX)),
    };
    for i in 1..n - 1 {
        let Some(l) = store.write::<List>(a(i), now)? else { continue };
        let Some(e) = (if left { l.pop_front() } else { l.pop_back() }) else { continue };
        store.drop_if_empty(a(i));
        return Ok(array([resp::bulk(a(i)), e].into_iter()));
    }
    Ok(Outcome::Block { left, timeout })
}

/// The set commands: SADD, SREM, SCARD, SISMEMBER, SMEMBERS, SPOP (an arbitrary member, with
/// an optional count).
fn set_cmd(
    store: &mut Store,
    cmd: &[u8],
    data: &[u8],
    args: &[Range<usize>],
    now: Instant,
) -> Result<Outcome, WrongType> {
    let a = |i: usize| &data[args[i].clone()];
    let key = a(1);
    Ok(match cmd {
        b"SADD" => {
            let m = store.write_or_insert::<MemberSet>(key, now)?;
            let added = (2..args.len()).filter(|&i| m.insert(a(i))).count();
            Outcome::Reply(resp::integer(added as i64))
        }
        b"SREM" => {
            let Some(m) = store.write::<MemberSet>(key, now)? else { return Ok(Outcome::Reply(resp::ZERO.clone())) };
            let n = (2..args.len()).filter(|&i| m.remove(a(i))).count();
            store.drop_if_empty(key);
            Outcome::Reply(resp::integer(n as i64))
        }
        b"SPOP" => {
            let count = match count_arg(data, args, 2) {
                Ok(c) => c,
                Err(e) => return Ok(e),
            };
            let Some(m) = store.write::<MemberSet>(key, now)? else {
                return Ok(Outcome::Reply(if count.is_some() { resp::EMPTY_ARRAY.clone() } else { resp::NIL.clone() }));
            };
            let out = pops(count, || m.pop().map(|x| resp::bulk(&x)));
            store.drop_if_empty(key);
            out
        }
        _ => {
            let m = store.read::<MemberSet>(key, now)?;
            match cmd {
                b"SCARD" => Outcome::Reply(resp::integer(m.map_or(0, MemberSet::len) as i64)),
                b"SISMEMBER" => Outcome::Reply(resp::integer(i64::from(m.is_some_and(|m| m.contains(a(2)))))),
                _ => {
                    let members: Vec<IoBuf> = m.into_iter().flat_map(MemberSet::iter).map(resp::bulk).collect();
                    array(members.into_iter())
                }
            }
        }
    })
}

/// The hash commands: HSET (field value pairs), HGET, HDEL, HLEN, HEXISTS, HGETALL. Values
/// are stored framed, so HGET answers with a view of the stored block.
fn hash(store: &mut Store, cmd: &[u8], data: &[u8], args: &[Range<usize>], now: Instant) -> Result<Outcome, WrongType> {
    let a = |i: usize| &data[args[i].clone()];
    let key = a(1);
    Ok(match cmd {
        b"HSET" => {
            let h = store.write_or_insert::<Hash>(key, now)?;
            let mut added = 0;
            for i in (2..args.len()).step_by(2) {
                let v = resp::bulk(a(i + 1));
                match h.get_mut(a(i)) {
                    Some(old) => *old = v,
                    None => {
                        h.insert(a(i).into(), v);
                        added += 1;
                    }
                }
            }
            Outcome::Reply(resp::integer(added))
        }
        b"HDEL" => {
            let Some(h) = store.write::<Hash>(key, now)? else { return Ok(Outcome::Reply(resp::ZERO.clone())) };
            let n = (2..args.len()).filter(|&i| h.remove(a(i)).is_some()).count();
            store.drop_if_empty(key);
            Outcome::Reply(resp::integer(n as i64))
        }
        _ => {
            let h = store.read::<Hash>(key, now)?;
            match cmd {
                b"HGET" => Outcome::Reply(h.and_then(|h| h.get(a(2))).cloned().unwrap_or_else(|| resp::NIL.clone())),
                b"HEXISTS" => Outcome::Reply(resp::integer(i64::from(h.is_some_and(|h| h.contains_key(a(2)))))),
                b"HLEN" => Outcome::Reply(resp::integer(h.map_or(0, Hash::len) as i64)),
                _ => {
                    let items: Vec<IoBuf> =
                        h.into_iter().flatten().flat_map(|(f, v)| [resp::bulk(f), v.clone()]).collect();
                    array(items.into_iter())
                }
            }
        }
    })
}

/// A score as Redis reads one: a float, `inf`, `+inf` or `-inf`; never NaN.
fn parse_score(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    let v: f64 = match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => t.parse().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

/// A score as a bulk string, as Redis prints doubles (see [`resp::double`]).
fn score_bulk(v: f64) -> IoBuf {
    resp::bulk(resp::double(v).as_bytes())
}

/// The sorted-set commands: ZADD (`[NX | XX]` then score member pairs), ZCARD, ZSCORE, ZREM,
/// ZPOPMIN (with an optional count), ZRANGE by rank (`[WITHSCORES]`).
fn zset(store: &mut Store, cmd: &[u8], data: &[u8], args: &[Range<usize>], now: Instant) -> Result<Outcome, WrongType> {
    let a = |i: usize| &data[args[i].clone()];
    let key = a(1);
    Ok(match cmd {
        b"ZADD" => {
            // The options, then score-member pairs: anything else where a score belongs is not
            // a valid float (`nan`, an empty string).
            let (mut nx, mut xx, mut i) = (false, false, 2);
            while i < args.len() {
                match a(i).to_ascii_uppercase().as_slice() {
                    b"NX" => nx = true,
                    b"XX" => xx = true,
                    _ => break,
                }
                i += 1;
            }
            if nx && xx {
                return Ok(err("ERR XX and NX options at the same time are not compatible"));
            }
            if i == args.len() || (args.len() - i) % 2 != 0 {
                return Ok(err("ERR syntax error"));
            }
            // Every score is checked before anything changes.
            let mut pairs = Vec::with_capacity((args.len() - i) / 2);
            for j in (i..args.len()).step_by(2) {
                let Some(score) = parse_score(a(j)) else { return Ok(err("ERR value is not a valid float")) };
                pairs.push((score, j + 1));
            }
            let z = store.write_or_insert::<ZSet>(key, now)?;
            let added = pairs.iter().filter(|&&(score, m)| z.add(a(m), score, nx, xx)).count();
            store.drop_if_empty(key); // `XX` on a new key leaves it empty
            Outcome::Reply(resp::integer(added as i64))
        }
        b"ZREM" => {
            let Some(z) = store.write::<ZSet>(key, now)? else { return Ok(Outcome::Reply(resp::ZERO.clone())) };
            let n = (2..args.len()).filter(|&i| z.remove(a(i))).count();
            store.drop_if_empty(key);
            Outcome::Reply(resp::integer(n as i64))
        }
        b"ZPOPMIN" => {
            let count = match count_arg(data, args, 2) {
                Ok(c) => c.unwrap_or(1),
                Err(e) => return Ok(e),
            };
            let Some(z) = store.write::<ZSet>(key, now)? else { return Ok(Outcome::Reply(resp::EMPTY_ARRAY.clone())) };
            let items: Vec<IoBuf> = (0..count)
                .map_while(|_| z.pop_min())
                .flat_map(|(m, score)| [resp::bulk(&m), score_bulk(score)])
                .collect();
            store.drop_if_empty(key);
            array(items.into_iter())
        }
        _ => {
            let z = store.read::<ZSet>(key, now)?;
            match cmd {
                b"ZCARD" => Outcome::Reply(resp::integer(z.map_or(0, ZSet::len) as i64)),
                b"ZSCORE" => {
                    Outcome::Reply(z.and_then(|z| z.score(a(2))).map_or_else(|| resp::NIL.clone(), score_bulk))
                }
                _ => {
                    let scores = match args.get(4).map(|r| &data[r.clone()]) {
                        None => false,
                        Some(w) if w.eq_ignore_ascii_case(b"WITHSCORES") => true,
                        Some(_) => return Ok(err("ERR syntax error")),
                    };
                    let (Some(start), Some(stop)) = (int(a(2)), int(a(3))) else {
                        return Ok(err("ERR value is not an integer or out of range"));
                    };
                    let len = z.map_or(0, ZSet::len);
                    let Some((z, (start, stop))) = z.zip(rank_range(start, stop, len)) else {
                        return Ok(Outcome::Reply(resp::EMPTY_ARRAY.clone()));
                    };
                    let items: Vec<IoBuf> = z
                        .range(start, stop)
                        .flat_map(|(m, s)| [Some(resp::bulk(m)), scores.then(|| score_bulk(s))])
                        .flatten()
                        .collect();
                    array(items.into_iter())
                }
            }
        }
    })
}

/// At most 64 bytes of `s`, control characters replaced (error text must stay one line).
fn printable(s: &[u8]) -> String {
    String::from_utf8_lossy(&s[..s.len().min(64)]).chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// `SET key value [NX | XX] [EX seconds | PX milliseconds | KEEPTTL]`.
fn set(store: &mut Store, data: &[u8], args: &[Range<usize>], now: Instant) -> Outcome {
    let a = |i: usize| &data[args[i].clone()];
    let syntax = || err("ERR syntax error");
    let (mut nx, mut xx, mut keep) = (false, false, false);
    let mut expires = None;
    let mut i = 3;
    while i < args.len() {
        let o = a(i);
        if o.eq_ignore_ascii_case(b"NX") && !xx {
            nx = true;
        } else if o.eq_ignore_ascii_case(b"XX") && !nx {
            xx = true;
        } else if o.eq_ignore_ascii_case(b"KEEPTTL") && expires.is_none() {
            keep = true;
        } else if (o.eq_ignore_ascii_case(b"EX") || o.eq_ignore_ascii_case(b"PX")) && !keep && expires.is_none() {
            let Some(amount) = args.get(i + 1).map(|r| &data[r.clone()]) else { return syntax() };
            let unit = if o.eq_ignore_ascii_case(b"EX") { 1000 } else { 1 };
            match ttl_deadline(now, amount, unit, "set") {
                Ok(t) => expires = Some(t),
                Err(e) => return e,
            }
            i += 1;
        } else {
            return syntax();
        }
        i += 1;
    }
    let key = a(1);
    if nx || xx || keep {
        match store.deadline(key, now) {
            None if xx => return Outcome::Reply(resp::NIL.clone()),
            Some(_) if nx => return Outcome::Reply(resp::NIL.clone()),
            Some(d) if keep => expires = d,
            _ => {}
        }
    }
    store.set(key, a(2), expires);
    Outcome::Reply(resp::OK.clone())
}

/// The command stage: RESP in from the net stage.
pub struct Command {
    pub shard: SharedShard,
}

impl Handler for Command {
    type Event = NetEvent;

    fn handle(&mut self, ev: NetEvent, cx: &mut Context<'_>) {
        self.shard.borrow_mut().on_net(ev, cx.now());
    }

    /// Active expiry: up to 1000 keys past their deadline per tick.
    fn tick(&mut self, cx: &mut Context<'_>) {
        self.shard.borrow_mut().store.expire(cx.now(), 1000);
    }

    /// The net stage refused replies (the shard's outbox): offer them again.
    fn woken(&mut self, _cx: &mut Context<'_>) {
        self.shard.borrow_mut().net.flush();
    }
}

/// The unblock stage: blocking pops whose time limit ran out (events from the shard's timer).
pub struct Unblock {
    pub shard: SharedShard,
}

impl Handler for Unblock {
    type Event = BlockTimeout;

    fn handle(&mut self, t: BlockTimeout, cx: &mut Context<'_>) {
        self.shard.borrow_mut().timed_out(t, cx.now());
    }
}

/// The resume stage: replies of slow commands, back on the connection's core.
pub struct Resume {
    pub shard: SharedShard,
}

impl Handler for Resume {
    type Event = SlowDone;

    fn handle(&mut self, done: SlowDone, cx: &mut Context<'_>) {
        self.shard.borrow_mut().resume(done, cx.now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one command given as words against `store`; returns the reply bytes.
    fn run(store: &mut Store, words: &[&[u8]], now: Instant) -> Vec<u8> {
        let mut data = Vec::new();
        let mut args = Vec::new();
        for w in words {
            args.push(data.len()..data.len() + w.len());
            data.extend_from_slice(w);
        }
        match exec(store, &mut BufWriter::default(), &data, &args, now) {
            Outcome::Reply(r) | Outcome::Close(r) => r.to_vec(),
            Outcome::Chain(c) => c.to_vec(),
            Outcome::Info(s) => format!("info {s}").into_bytes(),
            Outcome::Slow(d) => format!("slow {}ms", d.as_millis()).into_bytes(),
            Outcome::Block { left, timeout } => format!("block left={left} {timeout:?}").into_bytes(),
        }
    }

    #[test]
    fn glob_patterns_match_as_redis_does() {
        for (p, s, want) in [
            ("*", "", true),
            ("*", "anything", true),
            ("user:*", "user:42", true),
            ("user:*", "users", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h*llo*", "hello world", true),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[!e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("h[a-c]llo", "hdllo", false),
            ("h[c-a]llo", "hbllo", true),
            (r"h\*llo", "h*llo", true),
            (r"h\*llo", "hello", false),
            (r"[\]]", "]", true),
            ("a[", "a", false),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(glob(p.as_bytes(), s.as_bytes()), want, "{p:?} against {s:?}");
        }
    }

    #[test]
    fn string_commands_beyond_get_and_set() {
        let mut st = Store::default();
        let now = Instant::now();
        let r = |st: &mut Store, w: &[&[u8]]| String::from_utf8(run(st, w, now)).unwrap();
        assert_eq!(r(&mut st, &[b"SETNX", b"k", b"a"]), ":1\r\n");
        assert_eq!(r(&mut st, &[b"SETNX", b"k", b"b"]), ":0\r\n", "already set");
        assert_eq!(r(&mut st, &[b"APPEND", b"k", b"bc"]), ":3\r\n");
        assert_eq!(r(&mut st, &[b"APPEND", b"new", b"xy"]), ":2\r\n", "a missing key starts empty");
        assert_eq!(r(&mut st, &[b"STRLEN", b"k"]), ":3\r\n");
        assert_eq!(r(&mut st, &[b"STRLEN", b"none"]), ":0\r\n");
        assert_eq!(r(&mut st, &[b"GETSET", b"k", b"z"]), "$3\r\nabc\r\n");
        assert_eq!(r(&mut st, &[b"GETDEL", b"k"]), "$1\r\nz\r\n");
        assert_eq!(r(&mut st, &[b"GETDEL", b"k"]), "$-1\r\n");
        assert_eq!(r(&mut st, &[b"SETEX", b"t", b"100", b"v"]), "+OK\r\n");
        assert_eq!(r(&mut st, &[b"TTL", b"t"]), ":100\r\n");
        assert_eq!(r(&mut st, &[b"APPEND", b"t", b"w"]), ":2\r\n");
        assert_eq!(r(&mut st, &[b"TTL", b"t"]), ":100\r\n", "APPEND keeps the deadline");
        assert_eq!(r(&mut st, &[b"PSETEX", b"p", b"1500", b"v"]), "+OK\r\n");
        assert_eq!(r(&mut st, &[b"PTTL", b"p"]), ":1500\r\n");
        assert!(r(&mut st, &[b"SETEX", b"t", b"0", b"v"]).starts_with("-ERR"), "a non-positive time");
        assert!(r(&mut st, &[b"SETEX", b"t", b"x", b"v"]).starts_with("-ERR"));
        assert_eq!(r(&mut st, &[b"RPUSH", b"l", b"1"]), ":1\r\n");
        let typed: [&[&[u8]]; 4] =
            [&[b"APPEND", b"l", b"x"], &[b"STRLEN", b"l"], &[b"GETSET", b"l", b"x"], &[b"GETDEL", b"l"]];
        for c in typed {
            assert!(r(&mut st, c).starts_with("-WRONGTYPE"), "{c:?}");
        }
        assert!(r(&mut st, &[b"SETEX", b"t", b"1"]).starts_with("-ERR wrong number of arguments"));
        let mut keys = r(&mut st, &[b"KEYS", b"*"]);
        assert!(keys.starts_with("*4\r\n"), "{keys}");
        for k in ["new", "t", "p", "l"] {
            assert!(keys.contains(&format!("${}\r\n{k}\r\n", k.len())), "{k} in {keys}");
        }
        keys = r(&mut st, &[b"KEYS", b"[np]*"]);
        assert!(keys.starts_with("*2\r\n") && !keys.contains("\r\nt\r\n"), "{keys}");
        let later = now + Duration::from_secs(2);
        let keys = String::from_utf8(run(&mut st, &[b"KEYS", b"p"], later)).unwrap();
        assert_eq!(keys, "*0\r\n", "an expired key is not listed");
    }

    #[test]
    fn strings_counters_and_errors() {
        let t = Instant::now();
        let mut s = Store::default();
        let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
        assert_eq!(r(&[b"get", b"k"]), "$-1\r\n");
        assert_eq!(r(&[b"SET", b"k", b"hello"]), "+OK\r\n");
        assert_eq!(r(&[b"GET", b"k"]), "$5\r\nhello\r\n");
        assert_eq!(r(&[b"SET", b"k", b"x", b"NX"]), "$-1\r\n");
        assert_eq!(r(&[b"SET", b"j", b"x", b"XX"]), "$-1\r\n");
        assert_eq!(r(&[b"SET", b"k", b"x", b"NX", b"XX"]), "-ERR syntax error\r\n");
        assert_eq!(r(&[b"MSET", b"a", b"1", b"b", b"2"]), "+OK\r\n");
        assert_eq!(r(&[b"MGET", b"a", b"nope", b"b"]), "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n");
        assert_eq!(r(&[b"INCR", b"a"]), ":2\r\n");
        assert_eq!(r(&[b"INCRBY", b"a", b"-5"]), ":-3\r\n");
        assert_eq!(r(&[b"DECR", b"new"]), ":-1\r\n");
        assert_eq!(r(&[b"INCR", b"k"]), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r(&[b"INCRBY", b"a", b"+1"]), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r(&[b"SET", b"m", b"9223372036854775807"]), "+OK\r\n");
        assert_eq!(r(&[b"INCR", b"m"]), "-ERR increment or decrement would overflow\r\n");
        assert_eq!(r(&[b"EXISTS", b"a", b"a", b"zz"]), ":2\r\n");
        assert_eq!(r(&[b"DEL", b"a", b"b", b"zz"]), ":2\r\n");
        assert_eq!(r(&[b"DBSIZE"]), ":3\r\n", "k, new and m");
        assert_eq!(r(&[b"GET"]), "-ERR wrong number of arguments for 'get' command\r\n");
        assert_eq!(r(&[b"MSET", b"a"]), "-ERR wrong number of arguments for 'mset' command\r\n");
        assert_eq!(r(&[b"NOPE", b"x\r"]), "-ERR unknown command 'NOPE', with args beginning with: 'x?' \r\n");
        assert_eq!(r(&[b"PING"]), "+PONG\r\n");
        assert_eq!(r(&[b"ECHO", b"e"]), "$1\r\ne\r\n");
        assert_eq!(r(&[b"SELECT", b"1"]), "-ERR DB index is out of range\r\n");
        assert_eq!(r(&[b"QUIT"]), "+OK\r\n");
        assert_eq!(r(&[b"DEBUG", b"SLEEP", b"0.005"]), "slow 5ms");
        assert_eq!(r(&[b"DEBUG", b"SLEEP", b"x"]), "-ERR value is not a valid float in 0..=60\r\n");
        assert_eq!(r(&[b"CONFIG", b"GET", b"SAVE"]), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
        assert_eq!(r(&[b"CONFIG", b"GET", b"maxmemory"]), "*0\r\n");
        assert_eq!(r(&[b"CONFIG", b"SET", b"x", b"y"]), "-ERR unknown subcommand 'SET'\r\n");
        assert_eq!(r(&[b"FLUSHALL"]), "+OK\r\n");
        assert_eq!(r(&[b"DBSIZE"]), ":0\r\n");
    }

    #[test]
    fn lists() {
        let t = Instant::now();
        let mut s = Store::default();
        let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
        assert_eq!(r(&[b"LPUSH", b"l", b"b", b"a"]), ":2\r\n", "pushed one by one to the front: a b");
        assert_eq!(r(&[b"RPUSH", b"l", b"c", b"d"]), ":4\r\n");
        assert_eq!(r(&[b"LRANGE", b"l", b"0", b"-1"]), "*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n");
        assert_eq!(r(&[b"LRANGE", b"l", b"-2", b"99"]), "*2\r\n$1\r\nc\r\n$1\r\nd\r\n");
        assert_eq!(r(&[b"LRANGE", b"l", b"3", b"1"]), "*0\r\n");
        assert_eq!(r(&[b"LRANGE", b"l", b"9", b"12"]), "*0\r\n");
        assert_eq!(r(&[b"LRANGE", b"l", b"-99", b"0"]), "*1\r\n$1\r\na\r\n");
        assert_eq!(r(&[b"LINDEX", b"l", b"-1"]), "$1\r\nd\r\n");
        assert_eq!(r(&[b"LINDEX", b"l", b"4"]), "$-1\r\n");
        assert_eq!(r(&[b"LLEN", b"l"]), ":4\r\n");
        assert_eq!(r(&[b"LPOP", b"l"]), "$1\r\na\r\n");
        assert_eq!(r(&[b"RPOP", b"l", b"2"]), "*2\r\n$1\r\nd\r\n$1\r\nc\r\n");
        assert_eq!(r(&[b"LPOP", b"l", b"-1"]), "-ERR value is out of range, must be positive\r\n");
        assert_eq!(r(&[b"TYPE", b"l"]), "+list\r\n");
        assert_eq!(r(&[b"RPOP", b"l", b"5"]), "*1\r\n$1\r\nb\r\n");
        assert_eq!(r(&[b"EXISTS", b"l"]), ":0\r\n", "the emptied list is deleted");
        assert_eq!(r(&[b"TYPE", b"l"]), "+none\r\n");
        assert_eq!(r(&[b"LPOP", b"l"]), "$-1\r\n");
        assert_eq!(r(&[b"LPOP", b"l", b"1"]), "*-1\r\n");
        assert_eq!(r(&[b"LLEN", b"l"]), ":0\r\n");
        assert_eq!(r(&[b"LRANGE", b"l", b"0", b"x"]), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r(&[b"LPUSH", b"l"]), "-ERR wrong number of arguments for 'lpush' command\r\n");
        // Long elements go as views between runs of copied short ones: the bytes are the same.
        let big = vec![b'b'; VIEW_MIN];
        assert_eq!(r(&[b"RPUSH", b"m", b"s1", &big, b"s2", b"s3", &big]), ":5\r\n");
        let want = format!(
            "*5\r\n$2\r\ns1\r\n${n}\r\n{b}\r\n$2\r\ns2\r\n$2\r\ns3\r\n${n}\r\n{b}\r\n",
            n = big.len(),
            b = String::from_utf8(big.clone()).unwrap()
        );
        assert_eq!(r(&[b"LRANGE", b"m", b"0", b"-1"]), want);
        let small = r(&[b"LRANGE", b"m", b"0", b"0"]);
        assert_eq!(small, "*1\r\n$2\r\ns1\r\n");
        let mut data = Vec::new();
        let mut args = Vec::new();
        for w in [&b"LRANGE"[..], b"m", b"0", b"-1"] {
            args.push(data.len()..data.len() + w.len());
            data.extend_from_slice(w);
        }
        let mut out = BufWriter::default();
        let Outcome::Chain(c) = exec(&mut s, &mut out, &data, &args, t) else { panic!() };
        assert_eq!(c.segments(), 4, "[*5 s1] [big] [s2 s3] [big]");
    }

    #[test]
    fn blocking_pops_answer_at_once_or_ask_to_block() {
        let t = Instant::now();
        let mut s = Store::default();
        let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
        assert_eq!(r(&[b"BLPOP", b"a", b"b", b"0"]), "block left=true None");
        assert_eq!(r(&[b"BRPOP", b"a", b"1.5"]), "block left=false Some(1.5s)");
        assert_eq!(r(&[b"RPUSH", b"b", b"1", b"2"]), ":2\r\n");
        assert_eq!(r(&[b"BLPOP", b"a", b"b", b"0"]), "*2\r\n$1\r\nb\r\n$1\r\n1\r\n");
        assert_eq!(r(&[b"BRPOP", b"b", b"0"]), "*2\r\n$1\r\nb\r\n$1\r\n2\r\n");
        assert_eq!(r(&[b"EXISTS", b"b"]), ":0\r\n");
        assert_eq!(r(&[b"BLPOP", b"a", b"x"]), "-ERR timeout is not a float or out of range\r\n");
        assert_eq!(r(&[b"BLPOP", b"a", b"inf"]), "-ERR timeout is not a float or out of range\r\n");
        assert_eq!(r(&[b"BLPOP", b"a", b"-0.5"]), "-ERR timeout is negative\r\n");
        assert_eq!(r(&[b"BLPOP", b"a"]), "-ERR wrong number of arguments for 'blpop' command\r\n");
    }

    #[test]
    fn sets_and_hashes() {
        let t = Instant::now();
        let mut s = Store::default();
        let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
        assert_eq!(r(&[b"SADD", b"s", b"x", b"y", b"x"]), ":2\r\n");
        assert_eq!(r(&[b"SADD", b"s", b"y", b"z"]), ":1\r\n");
        assert_eq!(r(&[b"SCARD", b"s"]), ":3\r\n");
        assert_eq!(r(&[b"SISMEMBER", b"s", b"z"]), ":1\r\n");
        assert_eq!(r(&[b"SREM", b"s", b"z", b"nope"]), ":1\r\n");
        let mut members = r(&[b"SMEMBERS", b"s"]);
        assert!(members == "*2\r\n$1\r\nx\r\n$1\r\ny\r\n" || members == "*2\r\n$1\r\ny\r\n$1\r\nx\r\n", "{members}");
        members = r(&[b"SPOP", b"s", b"5"]);
        assert!(members.starts_with("*2\r\n"), "{members}");
        assert_eq!(r(&[b"TYPE", b"s"]), "+none\r\n", "the emptied set is deleted");
        assert_eq!(r(&[b"SPOP", b"s"]), "$-1\r\n");
        assert_eq!(r(&[b"SPOP", b"s", b"1"]), "*0\r\n");
        assert_eq!(r(&[b"SMEMBERS", b"s"]), "*0\r\n");

        assert_eq!(r(&[b"HSET", b"h", b"f1", b"v1", b"f2", b"v2"]), ":2\r\n");
        assert_eq!(r(&[b"HSET", b"h", b"f1", b"new", b"f3", b"v3"]), ":1\r\n", "f1 replaced, f3 added");
        assert_eq!(r(&[b"HGET", b"h", b"f1"]), "$3\r\nnew\r\n");
        assert_eq!(r(&[b"HGET", b"h", b"zz"]), "$-1\r\n");
        assert_eq!(r(&[b"HLEN", b"h"]), ":3\r\n");
        assert_eq!(r(&[b"HEXISTS", b"h", b"f2"]), ":1\r\n");
        assert_eq!(r(&[b"HDEL", b"h", b"f2", b"f3", b"zz"]), ":2\r\n");
        assert_eq!(r(&[b"HGETALL", b"h"]), "*2\r\n$2\r\nf1\r\n$3\r\nnew\r\n");
        assert_eq!(r(&[b"TYPE", b"h"]), "+hash\r\n");
        assert_eq!(r(&[b"HSET", b"h", b"f"]), "-ERR wrong number of arguments for 'hset' command\r\n");
        assert_eq!(r(&[b"HDEL", b"h", b"f1"]), ":1\r\n");
        assert_eq!(r(&[b"EXISTS", b"h"]), ":0\r\n", "the emptied hash is deleted");
    }

    #[test]
    fn sorted_sets() {
        let t = Instant::now();
        let mut s = Store::default();
        let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
        assert_eq!(r(&[b"ZADD", b"z", b"2", b"b", b"1", b"a", b"2.5", b"c"]), ":3\r\n");
        assert_eq!(r(&[b"ZADD", b"z", b"0.5", b"c", b"-inf", b"d"]), ":1\r\n", "c moved, d added");
        assert_eq!(r(&[b"ZCARD", b"z"]), ":4\r\n");
        assert_eq!(r(&[b"ZSCORE", b"z", b"c"]), "$3\r\n0.5\r\n");
        assert_eq!(r(&[b"ZSCORE", b"z", b"d"]), "$4\r\n-inf\r\n");
        assert_eq!(r(&[b"ZSCORE", b"z", b"nope"]), "$-1\r\n");
        assert_eq!(r(&[b"ZRANGE", b"z", b"0", b"-1"]), "*4\r\n$1\r\nd\r\n$1\r\nc\r\n$1\r\na\r\n$1\r\nb\r\n");
        assert_eq!(
            r(&[b"ZRANGE", b"z", b"1", b"2", b"withscores"]),
            "*4\r\n$1\r\nc\r\n$3\r\n0.5\r\n$1\r\na\r\n$1\r\n1\r\n"
        );
        assert_eq!(r(&[b"ZRANGE", b"z", b"5", b"9"]), "*0\r\n");
        assert_eq!(r(&[b"ZADD", b"z", b"NX", b"9", b"a", b"9", b"e"]), ":1\r\n", "NX: e added, a kept");
        assert_eq!(r(&[b"ZSCORE", b"z", b"a"]), "$1\r\n1\r\n");
        assert_eq!(r(&[b"ZADD", b"z", b"XX", b"3", b"a", b"3", b"f"]), ":0\r\n", "XX: a moved, f not added");
        assert_eq!(r(&[b"ZSCORE", b"z", b"f"]), "$-1\r\n");
        assert_eq!(r(&[b"ZADD", b"z", b"1", b"a", b"nan", b"x"]), "-ERR value is not a valid float\r\n");
        assert_eq!(r(&[b"ZSCORE", b"z", b"a"]), "$1\r\n3\r\n", "a refused ZADD changed nothing");
        // Redis's own words for it.
        assert_eq!(
            r(&[b"ZADD", b"z", b"NX", b"XX", b"1", b"a"]),
            "-ERR XX and NX options at the same time are not compatible\r\n"
        );
        for bad in [&b"nan"[..], b"", b"NaN", b"1e", b" 1"] {
            assert_eq!(r(&[b"ZADD", b"z", bad, b"m"]), "-ERR value is not a valid float\r\n", "{bad:?}");
        }
        // Scores print as Redis prints doubles (%.17g).
        assert_eq!(
            r(&[b"ZADD", b"big", b"1e20", b"a", b"1.7976931348623157e308", b"b", b"+inf", b"c", b"0.1", b"d"]),
            ":4\r\n"
        );
        assert_eq!(r(&[b"ZSCORE", b"big", b"a"]), "$5\r\n1e+20\r\n");
        assert_eq!(r(&[b"ZSCORE", b"big", b"b"]), "$23\r\n1.7976931348623157e+308\r\n");
        assert_eq!(r(&[b"ZSCORE", b"big", b"c"]), "$3\r\ninf\r\n");
        assert_eq!(r(&[b"ZSCORE", b"big", b"d"]), "$19\r\n0.10000000000000001\r\n");
        assert_eq!(r(&[b"ZADD", b"z", b"1"]), "-ERR wrong number of arguments for 'zadd' command\r\n");
        assert_eq!(r(&[b"ZADD", b"z", b"1", b"a", b"2"]), "-ERR syntax error\r\n");
        assert_eq!(r(&[b"ZPOPMIN", b"z"]), "*2\r\n$1\r\nd\r\n$4\r\n-inf\r\n");
        assert_eq!(r(&[b"ZREM", b"z", b"c", b"nope"]), ":1\r\n");
        assert_eq!(r(&[b"TYPE", b"z"]), "+zset\r\n");
        assert_eq!(
            r(&[b"ZPOPMIN", b"z", b"10"]),
            "*6\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\na\r\n$1\r\n3\r\n$1\r\ne\r\n$1\r\n9\r\n"
        );
        assert_eq!(r(&[b"EXISTS", b"z"]), ":0\r\n", "the emptied sorted set is deleted");
        assert_eq!(r(&[b"ZADD", b"new", b"XX", b"1", b"a"]), ":0\r\n");
        assert_eq!(r(&[b"EXISTS", b"new"]), ":0\r\n", "XX on a missing key creates nothing");
        assert_eq!(r(&[b"ZPOPMIN", b"new"]), "*0\r\n");
    }

    #[test]
    fn each_type_refuses_the_others_commands() {
        let t = Instant::now();
        let mut s = Store::default();
        let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
        let wrong = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
        r(&[b"SET", b"str", b"1"]);
        r(&[b"RPUSH", b"list", b"1"]);
        r(&[b"SADD", b"set", b"1"]);
        r(&[b"HSET", b"hash", b"f", b"1"]);
        r(&[b"ZADD", b"zset", b"1", b"m"]);
        let keys = [(&b"str"[..], "string"), (b"list", "list"), (b"set", "set"), (b"hash", "hash"), (b"zset", "zset")];
        for (key, ok) in keys {
            assert_eq!(r(&[b"TYPE", key]), format!("+{ok}\r\n"));
            let probes: [&[&[u8]]; 6] = [
                &[b"GET", key],
                &[b"LPUSH", key, b"x"],
                &[b"SADD", key, b"x"],
                &[b"HSET", key, b"f", b"x"],
                &[b"INCR", key],
                &[b"ZADD", key, b"1", b"x"],
            ];
            for (p, owner) in probes.iter().zip(["string", "list", "set", "hash", "string", "zset"]) {
                let got = r(p);
                if owner == ok {
                    assert_ne!(got, wrong, "{p:?}");
                } else {
                    assert_eq!(got, wrong, "{p:?} on a {ok}");
                }
            }
            assert_eq!(r(&[b"TYPE", key]), format!("+{ok}\r\n"), "a refused command changed nothing");
        }
        assert_eq!(r(&[b"MGET", b"list", b"str"]), "*2\r\n$-1\r\n$1\r\n2\r\n", "MGET reads other types as missing");
        assert_eq!(r(&[b"SET", b"list", b"s"]), "+OK\r\n", "SET overwrites any type");
        assert_eq!(r(&[b"TYPE", b"list"]), "+string\r\n");
        assert_eq!(r(&[b"DEL", b"set", b"hash"]), ":2\r\n");
        assert_eq!(r(&[b"EXPIRE", b"str", b"10"]), ":1\r\n");
    }

    #[test]
    fn expiry_commands() {
        let t = Instant::now();
        let mut s = Store::default();
        let mut r = |w: &[&[u8]], now| String::from_utf8(run(&mut s, w, now)).unwrap();
        assert_eq!(r(&[b"SET", b"k", b"v", b"EX", b"10"], t), "+OK\r\n");
        assert_eq!(r(&[b"TTL", b"k"], t), ":10\r\n");
        assert_eq!(r(&[b"PTTL", b"k"], t + Duration::from_millis(2500)), ":7500\r\n");
        assert_eq!(r(&[b"SET", b"k", b"w", b"KEEPTTL"], t), "+OK\r\n");
        assert_eq!(r(&[b"TTL", b"k"], t), ":10\r\n", "KEEPTTL kept the deadline");
        assert_eq!(r(&[b"INCR", b"n"], t), ":1\r\n");
        assert_eq!(r(&[b"PEXPIRE", b"n", b"100"], t), ":1\r\n");
        assert_eq!(r(&[b"INCR", b"n"], t), ":2\r\n");
        assert_eq!(r(&[b"PTTL", b"n"], t), ":100\r\n", "INCR keeps the deadline");
        assert_eq!(r(&[b"GET", b"n"], t + Duration::from_millis(100)), "$-1\r\n");
        assert_eq!(r(&[b"SET", b"k", b"v"], t), "+OK\r\n");
        assert_eq!(r(&[b"TTL", b"k"], t), ":-1\r\n", "a plain SET clears the deadline");
        assert_eq!(r(&[b"TTL", b"zz"], t), ":-2\r\n");
        assert_eq!(r(&[b"EXPIRE", b"k", b"5"], t), ":1\r\n");
        assert_eq!(r(&[b"PERSIST", b"k"], t), ":1\r\n");
        assert_eq!(r(&[b"PERSIST", b"k"], t), ":0\r\n");
        assert_eq!(r(&[b"SET", b"k", b"v", b"EX", b"0"], t), "-ERR invalid expire time in 'set' command\r\n");
        assert_eq!(r(&[b"SET", b"k", b"v", b"PX"], t), "-ERR syntax error\r\n");
        // As Redis: seconds beyond i64::MAX / 1000 milliseconds are refused, fewer are taken.
        assert_eq!(
            r(&[b"SET", b"k", b"v", b"EX", b"9999999999999999"], t),
            "-ERR invalid expire time in 'set' command\r\n"
        );
        assert_eq!(r(&[b"SET", b"k", b"v", b"EX", b"99999999999999"], t), "+OK\r\n");
        assert_eq!(r(&[b"EXPIRE", b"k", b"-1"], t), ":1\r\n", "a non-positive expiry deletes");
        assert_eq!(r(&[b"GET", b"k"], t), "$-1\r\n");
    }

    #[test]
    fn expiry_overflows_are_errors_that_name_the_command_and_change_nothing() {
        let t = Instant::now();
        let mut st = Store::default();
        let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut st, w, t)).unwrap();
        assert_eq!(r(&[b"SET", b"k", b"v"]), "+OK\r\n");
        for (cmd, amount, name) in [
            (&b"EXPIRE"[..], &b"-9223372036854776"[..], "expire"), // below i64::MIN in ms
            (b"EXPIRE", b"9223372036854776", "expire"),            // above i64::MAX in ms
            (b"EXPIRE", b"9223372036854775", "expire"),            // fits, but not added to now
            (b"PEXPIRE", b"9223372036854775807", "pexpire"),
        ] {
            let want = format!("-ERR invalid expire time in '{name}' command\r\n");
            assert_eq!(r(&[cmd, b"k", amount]), want, "{}", String::from_utf8_lossy(amount));
            assert_eq!(r(&[b"GET", b"k"]), "$1\r\nv\r\n", "the key is kept");
        }
        assert_eq!(r(&[b"PEXPIRE", b"k", b"-9223372036854775808"]), ":1\r\n", "in the past: deleted");
        assert_eq!(r(&[b"GET", b"k"]), "$-1\r\n");
        assert_eq!(r(&[b"SETEX", b"k", b"0", b"v"]), "-ERR invalid expire time in 'setex' command\r\n");
        assert_eq!(r(&[b"PSETEX", b"k", b"-5", b"v"]), "-ERR invalid expire time in 'psetex' command\r\n");
        assert_eq!(r(&[b"SETEX", b"k", b"x", b"v"]), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(
            r(&[b"SET", b"k", b"v", b"PX", b"9223372036854775807"]),
            "-ERR invalid expire time in 'set' command\r\n"
        );
        assert_eq!(r(&[b"EXISTS", b"k"]), ":0\r\n", "nothing was set");
    }
}
