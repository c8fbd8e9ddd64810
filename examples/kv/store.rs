//! The keyspace: byte-string keys to strings, lists, hashes, sets and sorted sets, with
//! optional expiry.
//!
//! Strings, list elements and hash values are kept already framed as RESP bulk strings
//! (`$5\r\nhello\r\n`, see [`crate::resp::bulk`]): a `GET`, `LPOP` or `HGET` answers with a
//! view of the stored block (one reference count increment, no copy, no formatting), and the same
//! block can be in flight to many connections at once. A write copies the value out of the
//! receive buffer once, because the receive pool is small and shared by every connection and
//! must not be pinned by stored data. Hash fields and set members are kept raw (they are keys
//! of their own maps). A collection emptied by a command is deleted, as in Redis.
//!
//! Expiry is lazy (a read of an expired key deletes it) plus active: keys given a deadline are
//! also remembered in a min-heap, and [`Store::expire`] deletes those whose time has come.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use ringstage::buf::IoBuf;

/// A stored value.
pub enum Value {
    /// A string, framed as a RESP bulk string.
    Str(IoBuf),
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
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
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

struct Entry {
    value: Value,
    expires: Option<Instant>,
}

/// A keyspace owned by one stage replica (no locks: one core serves it).
#[derive(Default)]
pub struct Store {
    map: HashMap<Box<[u8]>, Entry>,
    /// Deadlines of keys set with a time to live (entries go stale when the key changes).
    deadlines: BinaryHeap<Reverse<(Instant, Box<[u8]>)>>,
}

impl Store {
    /// A view of the framed string at `key`, unless it is missing or expired (then it is
    /// removed); `WrongType` if it holds a collection. Hot path: one hash lookup and one
    /// reference count increment, no allocation.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Result<Option<IoBuf>, WrongType> {
        match self.map.get(key) {
            None => return Ok(None),
            Some(e) if !e.expires.is_some_and(|t| t <= now) => {
                return match &e.value {
                    Value::Str(b) => Ok(Some(b.clone())),
                    _ => Err(WrongType),
                }
            }
            Some(_) => {}
        }
        self.map.remove(key);
        Ok(None)
    }

    /// The live value at `key`.
    pub fn value(&mut self, key: &[u8], now: Instant) -> Option<&Value> {
        self.live(key, now);
        self.map.get(key).map(|e| &e.value)
    }

    /// The live value at `key`, to change in place (see [`Store::drop_if_empty`]).
    pub fn value_mut(&mut self, key: &[u8], now: Instant) -> Option<&mut Value> {
        self.live(key, now);
        self.map.get_mut(key).map(|e| &mut e.value)
    }

    /// The collection of type `T` at `key`: `Ok(None)` if the key is missing, `WrongType` if it
    /// holds another type.
    pub fn read<T: Collection>(&mut self, key: &[u8], now: Instant) -> Result<Option<&T>, WrongType> {
        self.value(key, now).map(|v| T::of(v).ok_or(WrongType)).transpose()
    }

    /// Like [`Store::read`], to change in place (see [`Store::drop_if_empty`]).
    pub fn write<T: Collection>(&mut self, key: &[u8], now: Instant) -> Result<Option<&mut T>, WrongType> {
        self.value_mut(key, now).map(|v| T::of_mut(v).ok_or(WrongType)).transpose()
    }

    /// The collection of type `T` at `key`, or a new empty one stored there (without a
    /// deadline) if the key is missing; `WrongType` if it holds another type (left as it is).
    pub fn write_or_insert<T: Collection>(&mut self, key: &[u8], now: Instant) -> Result<&mut T, WrongType> {
        // Two lookups when the key is there (not `entry`: it would copy the key every time).
        let empty = || Entry { value: T::default().into_value(), expires: None };
        match self.map.get(key) {
            Some(e) if e.expires.is_some_and(|t| t <= now) => {
                self.map.remove(key);
                self.map.insert(key.into(), empty());
            }
            Some(_) => {}
            None => {
                self.map.insert(key.into(), empty());
            }
        }
        T::of_mut(&mut self.map.get_mut(key).expect("present or just inserted").value).ok_or(WrongType)
    }

    /// Deletes `key` if it holds an empty collection (after a pop or a removal).
    pub fn drop_if_empty(&mut self, key: &[u8]) {
        if self.map.get(key).is_some_and(|e| e.value.is_empty_collection()) {
            self.map.remove(key);
        }
    }

    /// Removes `key` if its deadline has passed.
    fn live(&mut self, key: &[u8], now: Instant) {
        if self.map.get(key).is_some_and(|e| e.expires.is_some_and(|t| t <= now)) {
            self.map.remove(key);
        }
    }

    /// Whether `key` holds a live value (of any type).
    pub fn contains(&mut self, key: &[u8], now: Instant) -> bool {
        self.value(key, now).is_some()
    }

    /// Stores the string `framed` under `key`, whatever it held; `expires: None` clears any
    /// deadline the key had.
    pub fn set(&mut self, key: &[u8], framed: IoBuf, expires: Option<Instant>) {
        if let Some(t) = expires {
            self.deadlines.push(Reverse((t, key.into())));
        }
        let value = Value::Str(framed);
        match self.map.get_mut(key) {
            Some(e) => *e = Entry { value, expires },
            None => {
                self.map.insert(key.into(), Entry { value, expires });
            }
        }
    }

    /// Stores the string `framed` under `key`, whatever it held; a live key keeps its deadline.
    pub fn set_keeping_deadline(&mut self, key: &[u8], framed: IoBuf, now: Instant) {
        match self.value_mut(key, now) {
            Some(v) => *v = Value::Str(framed),
            None => self.set(key, framed, None),
        }
    }

    /// The deadline of a live key: `None` if missing, `Some(None)` if it has none.
    pub fn deadline(&mut self, key: &[u8], now: Instant) -> Option<Option<Instant>> {
        self.live(key, now);
        self.map.get(key).map(|e| e.expires)
    }

    /// Sets or clears the deadline of a live key. Returns false if the key is missing.
    pub fn set_deadline(&mut self, key: &[u8], expires: Option<Instant>, now: Instant) -> bool {
        self.live(key, now);
        let Some(e) = self.map.get_mut(key) else { return false };
        e.expires = expires;
        if let Some(t) = expires {
            self.deadlines.push(Reverse((t, key.into())));
        }
        true
    }

    /// Deletes `key`; returns whether a live value was there.
    pub fn remove(&mut self, key: &[u8], now: Instant) -> bool {
        self.map.remove(key).is_some_and(|e| !e.expires.is_some_and(|t| t <= now))
    }

    /// The live keys, in no particular order.
    pub fn keys(&self, now: Instant) -> impl Iterator<Item = &[u8]> {
        self.map.iter().filter(move |(_, e)| !e.expires.is_some_and(|t| t <= now)).map(|(k, _)| &k[..])
    }

    /// Keys stored, counting expired ones not yet removed (as Redis's `DBSIZE` does).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn clear(&mut self) {
        self.map.clear();
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
            if self.map.get(&key).is_some_and(|e| e.expires == Some(t)) {
                self.map.remove(&key);
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

    #[test]
    fn set_get_remove() {
        let now = Instant::now();
        let mut s = Store::default();
        assert!(s.get(b"k", now).unwrap().is_none());
        s.set(b"k", bulk(b"v1"), None);
        assert_eq!(&s.get(b"k", now).unwrap().unwrap()[..], b"$2\r\nv1\r\n");
        s.set(b"k", bulk(b"v2"), None);
        assert_eq!(&s.get(b"k", now).unwrap().unwrap()[..], b"$2\r\nv2\r\n");
        assert_eq!(s.len(), 1);
        assert!(s.remove(b"k", now));
        assert!(!s.remove(b"k", now));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_get_shares_the_stored_block() {
        let now = Instant::now();
        let mut s = Store::default();
        s.set(b"k", bulk(b"value"), None);
        let a = s.get(b"k", now).unwrap().unwrap();
        let b = s.get(b"k", now).unwrap().unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr(), "both replies are views of the one stored block");
    }

    #[test]
    fn deadlines_expire_lazily_and_actively() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut s = Store::default();
        s.set(b"a", bulk(b"1"), Some(t0 + Duration::from_secs(1)));
        s.set(b"b", bulk(b"2"), Some(t0 + Duration::from_secs(1)));
        s.set(b"c", bulk(b"3"), Some(t0 + Duration::from_secs(1)));
        s.set(b"c", bulk(b"3"), None); // the old deadline no longer applies
        s.set(b"d", bulk(b"4"), Some(t0 + Duration::from_secs(100)));
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
    }

    #[test]
    fn collections_have_types_and_vanish_when_emptied() {
        let now = Instant::now();
        let mut s = Store::default();
        assert_eq!(s.read::<List>(b"l", now).unwrap(), None);
        s.write_or_insert::<List>(b"l", now).unwrap().push_back(bulk(b"x"));
        assert_eq!(s.value(b"l", now).map(Value::type_name), Some("list"));
        assert_eq!(s.get(b"l", now), Err(WrongType), "GET of a list");
        assert!(s.contains(b"l", now));
        // An existing value of another type is refused, not replaced.
        assert_eq!(s.write_or_insert::<MemberSet>(b"l", now).err(), Some(WrongType));
        assert_eq!(s.read::<Hash>(b"l", now).err(), Some(WrongType));
        assert_eq!(s.read::<List>(b"l", now).unwrap().map(List::len), Some(1));
        s.write::<List>(b"l", now).unwrap().unwrap().pop_front();
        s.drop_if_empty(b"l");
        assert!(!s.contains(b"l", now), "an emptied list is deleted");
        s.set(b"k", bulk(b"v"), None);
        s.drop_if_empty(b"k");
        assert!(s.contains(b"k", now), "strings are never 'empty collections'");
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
            s.set(&[i], bulk(b"x"), Some(t0));
        }
        assert_eq!(s.expire(t0, 4), 4);
        assert_eq!(s.expire(t0, 100), 6);
        assert_eq!(s.len(), 0);
    }
}
