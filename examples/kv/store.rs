//! The keyspace: byte-string keys to strings, lists, hashes, sets and sorted sets, with
//! optional expiry.
//!
//! **Compact entries.** The table holds one 24-byte entry per key, and a string's key and value
//! live in one allocation beside it: `[flags][key length][key][value]`. For 1M keys with 32-byte
//! values that is about 125 bytes a key (`ci/bench kv` measures it next to redis-server). A
//! `GET` copies such a value into the reply (through the shard's [`BufWriter`]: no allocation
//! per reply); a string of [`INLINE_MAX`] bytes or more is instead kept framed as a RESP bulk
//! string in an [`IoBuf`] of its own and answered with a view of it (one reference count
//! increment, no copy), so a large value can be in flight to many connections at once. List
//! elements and hash values are kept framed too; hash fields and set members raw (they are
//! keys of their own maps). A write copies the value out of the receive buffer once, because
//! the receive pool is small and shared by every connection and must not be pinned by stored
//! data. A collection emptied by a command is deleted, as in Redis.
//!
//! Expiry is lazy (a read of an expired key deletes it) plus active: the deadlines of keys
//! given one live in a map of their own (a flag in the entry says to look there, so keys
//! without one cost nothing for it), and in a min-heap whose top [`Store::expire`] deletes
//! when due.
//!
//! [`BufWriter`]: ringstage::buf::BufWriter

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use hashbrown::HashTable;
use ringstage::buf::IoBuf;

use crate::resp;

/// Strings this long or longer are kept framed and answered with a view instead of a copy:
/// below it, copying the bytes into the reply costs less than a gather entry of their own
/// (and a block each).
pub const INLINE_MAX: usize = 512;

/// A collection.
pub enum Value {
    List(List),
    Hash(Hash),
    /// Members (raw).
    Set(MemberSet),
    /// Members (raw) ordered by score.
    ZSet(ZSet),
}

/// A list of framed elements.
pub type List = VecDeque<IoBuf>;

/// A hash: fields (raw) to framed values.
pub type Hash = HashMap<Box<[u8]>, IoBuf>;

/// A collection a [`Value`] may hold, for typed access to it: [`Store::read`],
/// [`Store::write`], [`Store::write_or_insert`].
pub trait Collection: Default {
    fn of(v: &Value) -> Option<&Self>;
    fn of_mut(v: &mut Value) -> Option<&mut Self>;
    fn into_value(self) -> Value;
}

macro_rules! collection {
    ($t:ty, $variant:ident) => {
        impl Collection for $t {
            fn of(v: &Value) -> Option<&Self> {
                match v {
                    Value::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn of_mut(v: &mut Value) -> Option<&mut Self> {
                match v {
                    Value::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn into_value(self) -> Value {
                Value::$variant(self)
            }
        }
    };
}

collection!(List, List);
collection!(Hash, Hash);
collection!(MemberSet, Set);
collection!(ZSet, ZSet);

/// A set with O(1) insert, remove and pop of an arbitrary member (`SPOP`): the members in a
/// vector, each one's position in a map. (Popping "the first" member of a `HashSet` scans from
/// the start of its table, which empties as members go: quadratic over a whole set.)
#[derive(Default)]
pub struct MemberSet {
    items: Vec<Box<[u8]>>,
    pos: HashMap<Box<[u8]>, usize>,
}

impl MemberSet {
    /// Adds `m`; returns whether it was new.
    pub fn insert(&mut self, m: &[u8]) -> bool {
        if self.pos.contains_key(m) {
            return false;
        }
        self.pos.insert(m.into(), self.items.len());
        self.items.push(m.into());
        true
    }

    /// Removes `m`; returns whether it was there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        let Some(i) = self.pos.remove(m) else { return false };
        self.items.swap_remove(i);
        if let Some(moved) = self.items.get(i) {
            *self.pos.get_mut(moved).expect("every item is indexed") = i;
        }
        true
    }

    /// Removes and returns an arbitrary member (the last one added or moved).
    pub fn pop(&mut self) -> Option<Box<[u8]>> {
        let m = self.items.pop()?;
        self.pos.remove(&m);
        Some(m)
    }

    pub fn contains(&self, m: &[u8]) -> bool {
        self.pos.contains_key(m)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.items.iter().map(|m| &m[..])
    }
}

/// A sorted set: each member's score, and the members in (score, member) order.
#[derive(Default)]
pub struct ZSet {
    scores: HashMap<Box<[u8]>, f64>,
    order: BTreeSet<(Score, Box<[u8]>)>,
}

/// A score with a total order (NaN never gets in: the parser refuses it).
#[derive(Clone, Copy, PartialEq)]
struct Score(f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl ZSet {
    /// Sets `member`'s score; returns whether the member is new. `nx`: only add new members;
    /// `xx`: only update existing ones.
    pub fn add(&mut self, member: &[u8], score: f64, nx: bool, xx: bool) -> bool {
        match self.scores.get_mut(member) {
            Some(old) if !nx => {
                let prev = std::mem::replace(old, score);
                let key = self.order.take(&(Score(prev), member.into())).expect("indexed").1;
                self.order.insert((Score(score), key));
                false
            }
            Some(_) => false,
            None if xx => false,
            None => {
                self.scores.insert(member.into(), score);
                self.order.insert((Score(score), member.into()));
                true
            }
        }
    }

    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(s) => self.order.remove(&(Score(s), member.into())),
            None => false,
        }
    }

    /// The member with the lowest score (ties: the lowest member), removed.
    pub fn pop_min(&mut self) -> Option<(Box<[u8]>, f64)> {
        let (s, m) = self.order.pop_first()?;
        self.scores.remove(&m);
        Some((m, s.0))
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Members and scores by rank, from `start` to `stop` inclusive (both already in range).
    /// O(stop): the ordered set has no rank index (Redis's skiplist finds `start` in O(log n)).
    pub fn range(&self, start: usize, stop: usize) -> impl Iterator<Item = (&[u8], f64)> {
        self.order.iter().skip(start).take(stop + 1 - start).map(|(s, m)| (&m[..], s.0))
    }
}

impl Value {
    /// The name `TYPE` answers.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Value::List(l) => l.is_empty(),
            Value::Hash(h) => h.is_empty(),
            Value::Set(m) => m.len() == 0,
            Value::ZSet(z) => z.len() == 0,
        }
    }
}

/// The key holds a value of another type than the command works on.
#[derive(Debug, PartialEq, Eq)]
pub struct WrongType;

/// A stored string, as a command reads it.
#[derive(Clone, Copy, Debug)]
pub enum Str<'a> {
    /// Its bytes (a short string: copied into a reply).
    Raw(&'a [u8]),
    /// Framed as a RESP bulk string (a long one: a reply is a view of it).
    Framed(&'a IoBuf),
}

impl<'a> Str<'a> {
    /// The string's bytes.
    pub fn bytes(self) -> &'a [u8] {
        match self {
            Str::Raw(b) => b,
            Str::Framed(f) => resp::bulk_payload(f),
        }
    }
}

/// The entry's flag for a key with a deadline (its time is in `Store::deadlines`).
const TTL: u8 = 1;

/// One key's entry in the table: 24 bytes.
enum Entry {
    /// A short string and its key in one block: `[flags][key length, u32 LE][key][value]`.
    Small(Box<[u8]>),
    /// A long string, framed.
    Large(Box<Keyed<IoBuf>>),
    Coll(Box<Keyed<Value>>),
}

struct Keyed<T> {
    key: Box<[u8]>,
    flags: u8,
    value: T,
}

/// Where a short string's key starts in its block.
const KEY_AT: usize = 5;

impl Entry {
    fn key(&self) -> &[u8] {
        match self {
            Entry::Small(b) => {
                let len = u32::from_le_bytes(b[1..KEY_AT].try_into().expect("4 bytes")) as usize;
                &b[KEY_AT..KEY_AT + len]
            }
            Entry::Large(k) => &k.key,
            Entry::Coll(k) => &k.key,
        }
    }

    fn flags(&self) -> u8 {
        match self {
            Entry::Small(b) => b[0],
            Entry::Large(k) => k.flags,
            Entry::Coll(k) => k.flags,
        }
    }

    fn set_flags(&mut self, f: u8) {
        match self {
            Entry::Small(b) => b[0] = f,
            Entry::Large(k) => k.flags = f,
            Entry::Coll(k) => k.flags = f,
        }
    }

    /// A string entry for `key`: short ones in one block, long ones framed.
    fn string(key: &[u8], value: &[u8], flags: u8) -> Entry {
        if value.len() >= INLINE_MAX {
            return Entry::Large(Box::new(Keyed { key: key.into(), flags, value: resp::bulk(value) }));
        }
        let mut b = Vec::with_capacity(KEY_AT + key.len() + value.len());
        b.push(flags);
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(value);
        Entry::Small(b.into_boxed_slice())
    }

    fn str(&self) -> Option<Str<'_>> {
        match self {
            Entry::Small(b) => Some(Str::Raw(&b[KEY_AT + self.key().len()..])),
            Entry::Large(k) => Some(Str::Framed(&k.value)),
            Entry::Coll(_) => None,
        }
    }
}

/// A keyspace owned by one stage replica (no locks: one core serves it).
#[derive(Default)]
pub struct Store {
    map: HashTable<Entry>,
    /// Keys are chosen by clients and kept: SipHash, seeded per process, keeps their collisions
    /// unpredictable.
    hasher: RandomState,
    /// The deadlines of the keys flagged [`TTL`].
    ttl: HashMap<Box<[u8]>, Instant>,
    /// The same deadlines by time (entries go stale when the key changes).
    deadlines: BinaryHeap<Reverse<(Instant, Box<[u8]>)>>,
}

impl Store {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &[u8]) -> Option<&Entry> {
        self.map.find(self.hash(key), |e| e.key() == key)
    }

    fn find_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        let h = self.hash(key);
        self.map.find_mut(h, |e| e.key() == key)
    }

    /// Stores `e` under its key, replacing what was there; returns the entry replaced.
    fn put(&mut self, e: Entry) -> Option<Entry> {
        let h = self.hash(e.key());
        let hasher = &self.hasher;
        match self.map.entry(h, |x| x.key() == e.key(), |x| hasher.hash_one(x.key())) {
            hashbrown::hash_table::Entry::Occupied(mut o) => Some(std::mem::replace(o.get_mut(), e)),
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(e);
                None
            }
        }
    }

    /// Removes `key`'s entry (and its deadline).
    fn take(&mut self, key: &[u8]) -> Option<Entry> {
        let h = self.hash(key);
        let e = self.map.find_entry(h, |e| e.key() == key).ok()?.remove().0;
        if e.flags() & TTL != 0 {
            self.ttl.remove(key);
        }
        Some(e)
    }

    /// Whether the entry of `key` (flagged `flags`) has expired at `now`.
    fn expired(&self, key: &[u8], flags: u8, now: Instant) -> bool {
        flags & TTL != 0 && self.ttl.get(key).is_some_and(|&t| t <= now)
    }

    /// Removes `key` if its deadline has passed.
    fn live(&mut self, key: &[u8], now: Instant) {
        if self.find(key).is_some_and(|e| self.expired(key, e.flags(), now)) {
            self.take(key);
        }
    }

    /// The string at `key`, unless it is missing or expired (then it is removed); `WrongType`
    /// if it holds a collection. Hot path: one hash lookup (two for a key with a deadline), no
    /// allocation.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Result<Option<Str<'_>>, WrongType> {
        self.live(key, now);
        match self.find(key) {
            None => Ok(None),
            Some(e) => e.str().map(Some).ok_or(WrongType),
        }
    }

    /// The name `TYPE` answers for `key`: `none` if it is missing.
    pub fn type_name(&mut self, key: &[u8], now: Instant) -> &'static str {
        self.live(key, now);
        match self.find(key) {
            None => "none",
            Some(Entry::Coll(k)) => k.value.type_name(),
            Some(_) => "string",
        }
    }

    /// The collection of type `T` at `key`: `Ok(None)` if the key is missing, `WrongType` if it
    /// holds another type.
    pub fn read<T: Collection>(&mut self, key: &[u8], now: Instant) -> Result<Option<&T>, WrongType> {
        self.live(key, now);
        match self.find(key) {
            None => Ok(None),
            Some(Entry::Coll(k)) => T::of(&k.value).map(Some).ok_or(WrongType),
            Some(_) => Err(WrongType),
        }
    }

    /// Like [`Store::read`], to change in place (see [`Store::drop_if_empty`]).
    pub fn write<T: Collection>(&mut self, key: &[u8], now: Instant) -> Result<Option<&mut T>, WrongType> {
        self.live(key, now);
        match self.find_mut(key) {
            None => Ok(None),
            Some(Entry::Coll(k)) => T::of_mut(&mut k.value).map(Some).ok_or(WrongType),
            Some(_) => Err(WrongType),
        }
    }

    /// The collection of type `T` at `key`, or a new empty one stored there (without a
    /// deadline) if the key is missing; `WrongType` if it holds another type (left as it is).
    pub fn write_or_insert<T: Collection>(&mut self, key: &[u8], now: Instant) -> Result<&mut T, WrongType> {
        self.live(key, now);
        if self.find(key).is_none() {
            self.put(Entry::Coll(Box::new(Keyed { key: key.into(), flags: 0, value: T::default().into_value() })));
        }
        match self.find_mut(key) {
            Some(Entry::Coll(k)) => T::of_mut(&mut k.value).ok_or(WrongType),
            _ => Err(WrongType),
        }
    }

    /// Deletes `key` if it holds an empty collection (after a pop or a removal).
    pub fn drop_if_empty(&mut self, key: &[u8]) {
        if matches!(self.find(key), Some(Entry::Coll(k)) if k.value.is_empty()) {
            self.take(key);
        }
    }

    /// Whether `key` holds a live value (of any type).
    pub fn contains(&mut self, key: &[u8], now: Instant) -> bool {
        self.live(key, now);
        self.find(key).is_some()
    }

    /// Stores the string `value` under `key`, whatever it held; `expires: None` clears any
    /// deadline the key had.
    pub fn set(&mut self, key: &[u8], value: &[u8], expires: Option<Instant>) {
        let flags = if expires.is_some() { TTL } else { 0 };
        if self.put(Entry::string(key, value, flags)).is_some_and(|old| old.flags() & TTL != 0) && expires.is_none() {
            self.ttl.remove(key);
        }
        if let Some(t) = expires {
            self.ttl.insert(key.into(), t);
            self.deadlines.push(Reverse((t, key.into())));
        }
    }

    /// Stores the string `value` under `key`, whatever it held; a live key keeps its deadline.
    pub fn set_keeping_deadline(&mut self, key: &[u8], value: &[u8], now: Instant) {
        self.live(key, now);
        let flags = self.find(key).map_or(0, Entry::flags);
        self.put(Entry::string(key, value, flags));
    }

    /// The deadline of a live key: `None` if missing, `Some(None)` if it has none.
    pub fn deadline(&mut self, key: &[u8], now: Instant) -> Option<Option<Instant>> {
        self.live(key, now);
        let e = self.find(key)?;
        Some(if e.flags() & TTL != 0 { self.ttl.get(key).copied() } else { None })
    }

    /// Sets or clears the deadline of a live key. Returns false if the key is missing.
    pub fn set_deadline(&mut self, key: &[u8], expires: Option<Instant>, now: Instant) -> bool {
        self.live(key, now);
        let Some(e) = self.find_mut(key) else { return false };
        match expires {
            Some(t) => {
                e.set_flags(e.flags() | TTL);
                self.ttl.insert(key.into(), t);
                self.deadlines.push(Reverse((t, key.into())));
            }
            None => {
                e.set_flags(e.flags() & !TTL);
                self.ttl.remove(key);
            }
        }
        true
    }

    /// Deletes `key`; returns whether a live value was there.
    pub fn remove(&mut self, key: &[u8], now: Instant) -> bool {
        let Some(e) = self.find(key) else { return false };
        let expired = self.expired(key, e.flags(), now);
        self.take(key);
        !expired
    }

    /// The live keys, in no particular order.
    pub fn keys(&self, now: Instant) -> impl Iterator<Item = &[u8]> {
        self.map.iter().filter(move |e| !self.expired(e.key(), e.flags(), now)).map(Entry::key)
    }

    /// Keys stored, counting expired ones not yet removed (as Redis's `DBSIZE` does).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Keys with a deadline (`INFO keyspace`'s `expires`).
    pub fn expiring(&self) -> usize {
        self.ttl.len()
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.ttl.clear();
        self.deadlines.clear();
    }

    /// Removes up to `budget` keys whose deadline has passed. Returns how many were removed.
    pub fn expire(&mut self, now: Instant, budget: usize) -> usize {
        let mut removed = 0;
        while removed < budget {
            match self.deadlines.peek() {
                Some(Reverse((t, _))) if *t <= now => {}
                _ => break,
            }
            let Some(Reverse((t, key))) = self.deadlines.pop() else { break };
            // Stale unless the key still carries exactly this deadline.
            if self.ttl.get(&key) == Some(&t) {
                self.take(&key);
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::resp::bulk;

    fn get(s: &mut Store, k: &[u8], now: Instant) -> Option<Vec<u8>> {
        s.get(k, now).unwrap().map(|v| v.bytes().to_vec())
    }

    #[test]
    fn set_get_remove() {
        let now = Instant::now();
        let mut s = Store::default();
        assert!(s.get(b"k", now).unwrap().is_none());
        s.set(b"k", b"v1", None);
        assert_eq!(get(&mut s, b"k", now).as_deref(), Some(&b"v1"[..]));
        s.set(b"k", b"v2", None);
        assert_eq!(get(&mut s, b"k", now).as_deref(), Some(&b"v2"[..]));
        assert_eq!(s.len(), 1);
        assert!(s.remove(b"k", now));
        assert!(!s.remove(b"k", now));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn short_strings_are_raw_and_long_ones_framed_views_of_one_block() {
        let now = Instant::now();
        let mut s = Store::default();
        s.set(b"short", &[b's'; INLINE_MAX - 1], None);
        assert!(matches!(s.get(b"short", now), Ok(Some(Str::Raw(b))) if b.len() == INLINE_MAX - 1));
        let long = vec![b'l'; INLINE_MAX];
        s.set(b"long", &long, None);
        let mut view = || match s.get(b"long", now) {
            Ok(Some(Str::Framed(f))) => f.clone(),
            other => panic!("{other:?}"),
        };
        let (a, b) = (view(), view());
        assert_eq!(a.as_ptr(), b.as_ptr(), "both replies are views of the one stored block");
        assert_eq!(&a[..], &bulk(&long)[..]);
        assert_eq!(s.get(b"long", now).unwrap().unwrap().bytes(), &long[..]);
        // Keys of every length, with the same bytes as values, stay apart.
        for k in [&b""[..], b"k", &[b'x'; 300]] {
            s.set(k, k, None);
        }
        for k in [&b""[..], b"k", &[b'x'; 300]] {
            assert_eq!(get(&mut s, k, now).as_deref(), Some(k));
        }
    }

    #[test]
    fn a_short_string_costs_one_block_beside_its_entry() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
        assert!(matches!(Entry::string(&[7; 16], &[9; 32], 0), Entry::Small(b) if b.len() == KEY_AT + 48));
    }

    #[test]
    fn deadlines_expire_lazily_and_actively() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut s = Store::default();
        s.set(b"a", b"1", Some(t0 + Duration::from_secs(1)));
        s.set(b"b", b"2", Some(t0 + Duration::from_secs(1)));
        s.set(b"c", b"3", Some(t0 + Duration::from_secs(1)));
        s.set(b"c", b"3", None); // the old deadline no longer applies
        s.set(b"d", b"4", Some(t0 + Duration::from_secs(100)));
        assert_eq!(s.expiring(), 3);
        assert!(s.contains(b"a", t0));
        assert!(!s.contains(b"a", later), "read after the deadline: gone");
        assert_eq!(s.len(), 3, "b is expired but not yet removed");
        assert_eq!(s.expire(later, 100), 1, "b removed; a's and c's heap entries are stale");
        assert_eq!(s.len(), 2);
        assert!(s.contains(b"c", later) && s.contains(b"d", later));
        assert_eq!(s.deadline(b"c", later), Some(None));
        assert!(s.set_deadline(b"c", Some(later), t0));
        assert_eq!(s.expire(later, 100), 1);
        assert!(!s.contains(b"c", later));
        assert_eq!(s.deadline(b"zz", later), None);
        // A deadline goes with a rewrite that keeps it, and with a plain set.
        s.set(b"e", b"5", Some(later));
        s.set_keeping_deadline(b"e", b"6", t0);
        assert_eq!(s.deadline(b"e", t0), Some(Some(later)));
        s.set(b"e", b"7", None);
        assert_eq!((s.deadline(b"e", t0), s.expiring()), (Some(None), 1), "only d keeps one");
        assert!(s.set_deadline(b"d", None, t0));
        assert_eq!(s.expiring(), 0);
    }

    #[test]
    fn collections_have_types_and_vanish_when_emptied() {
        let now = Instant::now();
        let mut s = Store::default();
        assert_eq!(s.read::<List>(b"l", now).unwrap(), None);
        s.write_or_insert::<List>(b"l", now).unwrap().push_back(bulk(b"x"));
        assert_eq!(s.type_name(b"l", now), "list");
        assert!(matches!(s.get(b"l", now), Err(WrongType)), "GET of a list");
        assert!(s.contains(b"l", now));
        // An existing value of another type is refused, not replaced.
        assert_eq!(s.write_or_insert::<MemberSet>(b"l", now).err(), Some(WrongType));
        assert_eq!(s.read::<Hash>(b"l", now).err(), Some(WrongType));
        assert_eq!(s.read::<List>(b"l", now).unwrap().map(List::len), Some(1));
        s.write::<List>(b"l", now).unwrap().unwrap().pop_front();
        s.drop_if_empty(b"l");
        assert!(!s.contains(b"l", now), "an emptied list is deleted");
        s.set(b"k", b"v", None);
        s.drop_if_empty(b"k");
        assert!(s.contains(b"k", now), "strings are never 'empty collections'");
        assert_eq!((s.type_name(b"k", now), s.type_name(b"zz", now)), ("string", "none"));
        assert_eq!(s.read::<List>(b"k", now).err(), Some(WrongType));
    }

    #[test]
    fn member_sets_keep_their_index_through_removals_and_pops() {
        let mut m = MemberSet::default();
        for x in [&b"a"[..], b"b", b"c", b"d"] {
            assert!(m.insert(x));
        }
        assert!(!m.insert(b"b"));
        assert!(m.remove(b"a"), "the last member moves into a's place");
        assert!(!m.remove(b"a"));
        assert!(m.contains(b"d") && m.remove(b"d"), "and is still found there");
        // [d b c] then [c b]: pop takes the last.
        assert_eq!(m.pop().as_deref(), Some(&b"b"[..]));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![&b"c"[..]]);
        assert!(m.contains(b"c") && m.remove(b"c"));
        assert_eq!((m.len(), m.pop()), (0, None));
    }

    #[test]
    fn expiry_respects_its_budget() {
        let t0 = Instant::now();
        let mut s = Store::default();
        for i in 0..10u8 {
            s.set(&[i], b"x", Some(t0));
        }
        assert_eq!(s.expire(t0, 4), 4);
        assert_eq!(s.expire(t0, 100), 6);
        assert_eq!(s.len(), 0);
    }
}
