//! The keyspace: byte-string keys to byte-string values, with optional expiry.
//!
//! Values are kept already framed as RESP bulk strings (`$5\r\nhello\r\n`, see
//! [`crate::resp::bulk`]): a `GET` answers with a view of the stored block (one reference count
//! increment, no copy, no formatting), and the same block can be in flight to many connections
//! at once. A `SET` copies the value out of the receive buffer once, because the receive pool is
//! small and shared by every connection and must not be pinned by stored data.
//!
//! Expiry is lazy (a read of an expired key deletes it) plus active: keys given a deadline are
//! also remembered in a min-heap, and [`Store::expire`] deletes those whose time has come.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use ringstage::buf::IoBuf;

struct Entry {
    /// The value, framed as a RESP bulk string.
    framed: IoBuf,
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
    /// A view of the framed value of `key`, unless it is missing or expired (then it is
    /// removed). Hot path: one hash lookup and one reference count increment, no allocation.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<IoBuf> {
        match self.map.get(key) {
            None => return None,
            Some(e) if !e.expires.is_some_and(|t| t <= now) => return Some(e.framed.clone()),
            Some(_) => {}
        }
        self.map.remove(key);
        None
    }

    /// Removes `key` if its deadline has passed.
    fn live(&mut self, key: &[u8], now: Instant) {
        if self.map.get(key).is_some_and(|e| e.expires.is_some_and(|t| t <= now)) {
            self.map.remove(key);
        }
    }

    /// Whether `key` holds a live value.
    pub fn contains(&mut self, key: &[u8], now: Instant) -> bool {
        self.get(key, now).is_some()
    }

    /// Stores `framed` under `key`; `expires: None` clears any deadline the key had.
    pub fn set(&mut self, key: &[u8], framed: IoBuf, expires: Option<Instant>) {
        if let Some(t) = expires {
            self.deadlines.push(Reverse((t, key.into())));
        }
        match self.map.get_mut(key) {
            Some(e) => *e = Entry { framed, expires },
            None => {
                self.map.insert(key.into(), Entry { framed, expires });
            }
        }
    }

    /// Replaces the value of an existing live key, keeping its deadline. Returns false if the
    /// key is missing.
    pub fn replace(&mut self, key: &[u8], framed: IoBuf, now: Instant) -> bool {
        self.live(key, now);
        match self.map.get_mut(key) {
            Some(e) => {
                e.framed = framed;
                true
            }
            None => false,
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
        assert!(s.get(b"k", now).is_none());
        s.set(b"k", bulk(b"v1"), None);
        assert_eq!(&s.get(b"k", now).unwrap()[..], b"$2\r\nv1\r\n");
        s.set(b"k", bulk(b"v2"), None);
        assert_eq!(&s.get(b"k", now).unwrap()[..], b"$2\r\nv2\r\n");
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
        let a = s.get(b"k", now).unwrap();
        let b = s.get(b"k", now).unwrap();
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
