//! The commands: one table of `(name, arity, handler)` built from each data type's module, and
//! the helpers their handlers share. A handler gets a [`Call`] (the keyspace, the command's
//! arguments as ranges of the receive buffer, the loop clock) and returns an [`Outcome`]; the
//! shard (`shard.rs`) turns outcomes into replies, slow-stage requests and blocked waits.

mod hashes;
mod keys;
mod lists;
mod server;
mod sets;
mod strings;
#[cfg(test)]
mod tests;
mod zsets;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use ringstage::buf::BufWriter;
use ringstage::prelude::*;

use crate::resp;
use crate::store::{Collection, Store, Str, WrongType};

pub use server::section;

/// What running one command produced.
pub enum Outcome {
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

/// One command to run: the keyspace, where short replies are written, and the arguments.
pub struct Call<'a> {
    pub store: &'a mut Store,
    /// Short replies are copied in here instead of a block each.
    pub out: &'a mut BufWriter,
    /// The bytes `args` index into (the receive buffer, or the connection's stash).
    pub data: &'a [u8],
    /// The command's words; `args[0]` is its name.
    pub args: &'a [Range<usize>],
    /// The loop clock of the receive.
    pub now: Instant,
}

impl<'a> Call<'a> {
    /// Word `i` of the command (0: its name).
    fn arg(&self, i: usize) -> &'a [u8] {
        &self.data[self.args[i].clone()]
    }

    /// How many words the command has, its name included.
    fn n(&self) -> usize {
        self.args.len()
    }
}

/// How many words (the name included) a command takes: `min..=max`, in steps of `step` from
/// `min` (`MSET key value [key value ...]`).
#[derive(Clone, Copy)]
pub struct Arity {
    min: usize,
    max: usize,
    step: usize,
}

impl Arity {
    const fn exact(n: usize) -> Arity {
        Arity { min: n, max: n, step: 1 }
    }
    const fn at_least(n: usize) -> Arity {
        Arity { min: n, max: usize::MAX, step: 1 }
    }
    const fn between(min: usize, max: usize) -> Arity {
        Arity { min, max, step: 1 }
    }
    /// `n` words, then pairs.
    const fn pairs_after(n: usize) -> Arity {
        Arity { min: n, max: usize::MAX, step: 2 }
    }
    fn admits(self, n: usize) -> bool {
        n >= self.min && n <= self.max && (n - self.min) % self.step == 0
    }
}

/// A command's handler; `Err(WrongType)` answers `-WRONGTYPE`.
type Run = fn(&mut Call<'_>) -> Result<Outcome, WrongType>;

/// One entry of the command table.
pub struct Spec {
    /// Upper case.
    name: &'static str,
    arity: Arity,
    run: Run,
}

const fn spec(name: &'static str, arity: Arity, run: Run) -> Spec {
    Spec { name, arity, run }
}

/// Every command, by upper-case name. Built once; a lookup is a hash of the (at most 12-byte)
/// name and one compare.
static TABLE: LazyLock<HashMap<&'static [u8], &'static Spec, foldhash::fast::FixedState>> = LazyLock::new(|| {
    let all = [
        strings::COMMANDS,
        keys::COMMANDS,
        lists::COMMANDS,
        sets::COMMANDS,
        hashes::COMMANDS,
        zsets::COMMANDS,
        server::COMMANDS,
    ];
    let mut t = HashMap::with_hasher(foldhash::fast::FixedState::default());
    for spec in all.into_iter().flatten() {
        assert!(spec.name.len() <= NAME_MAX, "{} is longer than a command name may be", spec.name);
        assert!(t.insert(spec.name.as_bytes(), spec).is_none(), "{} is in the table twice", spec.name);
    }
    t
});

/// The longest command name.
const NAME_MAX: usize = 12;

/// Runs one command. `data` holds the bytes `args` index into; `out` takes short replies.
pub fn exec(store: &mut Store, out: &mut BufWriter, data: &[u8], args: &[Range<usize>], now: Instant) -> Outcome {
    let name = &data[args[0].clone()];
    let mut up = [0u8; NAME_MAX];
    let spec = if name.len() <= NAME_MAX {
        let up = &mut up[..name.len()];
        up.copy_from_slice(name);
        up.make_ascii_uppercase();
        TABLE.get(&*up)
    } else {
        None
    };
    let Some(spec) = spec else { return unknown(data, args) };
    if !spec.arity.admits(args.len()) {
        return wrong_args(name);
    }
    (spec.run)(&mut Call { store, out, data, args, now }).unwrap_or_else(|WrongType| wrongtype())
}

/// `-ERR unknown command 'name', with args beginning with: ...`, as Redis words it.
fn unknown(data: &[u8], args: &[Range<usize>]) -> Outcome {
    let a = |i: usize| &data[args[i].clone()];
    let mut msg = format!("ERR unknown command '{}', with args beginning with: ", printable(a(0)));
    for i in 1..args.len().min(4) {
        msg.push_str(&format!("'{}' ", printable(a(i))));
    }
    err(&msg)
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

/// `SREM` / `HDEL` / `ZREM key member [member ...]`: removes each member with `remove`
/// (whether it was there) and answers how many were; a collection left empty is deleted.
fn remove_members<T: Collection>(
    c: &mut Call<'_>,
    mut remove: impl FnMut(&mut T, &[u8]) -> bool,
) -> Result<Outcome, WrongType> {
    let (key, data, args) = (c.arg(1), c.data, c.args);
    let Some(coll) = c.store.write::<T>(key, c.now)? else { return Ok(Outcome::Reply(resp::ZERO.clone())) };
    let n = args[2..].iter().filter(|r| remove(coll, &data[(*r).clone()])).count();
    c.store.drop_if_empty(key);
    Ok(Outcome::Reply(resp::integer(n as i64)))
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
/// shorter ones are copied into one buffer as the reply is built. The network stage would
/// coalesce them too (`ListenConfig::coalesce_below`), but a chain of a view per element costs
/// more: `LRANGE_100` pipelined took 15-20% more server CPU per request that way (`ci/bench
/// kv`, 2026-12-04: capacity against redis-server 1.23x instead of 1.52x).
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

/// At most 64 bytes of `s`, control characters replaced (error text must stay one line).
fn printable(s: &[u8]) -> String {
    String::from_utf8_lossy(&s[..s.len().min(64)]).chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}
