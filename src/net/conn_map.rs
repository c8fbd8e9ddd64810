//! [`ConnMap`]: a handler's per-connection state, indexed by [`Conn`].

use super::Conn;

/// A handler stage's per-connection values, found from a [`Conn`] in O(1).
///
/// A [`Conn`] names its worker, a slot among that worker's open connections, and a
/// generation. The map keeps one table of slots per worker; slots are reused as connections
/// close, so each table stays as long as the most connections its worker had open at once. A
/// lookup with the id of a closed connection whose slot now holds a newer one finds nothing.
///
/// Usual use: insert on [`NetEvent::Opened`](super::NetEvent::Opened), look up on `Data`,
/// remove on `Closed`. All events of a connection reach one replica (see the [module
/// docs](super)), so each replica's map holds exactly the connections it serves.
///
/// Costs: [`get`](ConnMap::get), [`get_mut`](ConnMap::get_mut) and
/// [`remove`](ConnMap::remove) are two indexings and a compare: no hashing, no allocation, no
/// lock. [`insert`](ConnMap::insert) allocates only when a worker's table grows (amortized, per
/// new highest slot). Iteration visits every slot of every table.
///
/// # Examples
///
/// ```
/// use ringstage::net::{ConnMap, NetEvent};
///
/// #[derive(Default)]
/// struct Session { requests: u32 }
///
/// fn on_event(sessions: &mut ConnMap<Session>, ev: &NetEvent) {
///     match ev {
///         NetEvent::Opened { conn, .. } => { sessions.insert(*conn, Session::default()); }
///         NetEvent::Data { conn, .. } => {
///             if let Some(s) = sessions.get_mut(*conn) { s.requests += 1; }
///         }
///         NetEvent::Closed { conn, .. } => { sessions.remove(*conn); }
///         _ => {}
///     }
/// }
/// let sessions = ConnMap::<Session>::new();
/// assert!(sessions.is_empty());
/// # let _ = on_event;
/// ```
pub struct ConnMap<T> {
    tables: Vec<Vec<Option<(Conn, T)>>>,
    len: usize,
}

impl<T> ConnMap<T> {
    /// An empty map; allocates nothing until the first insert.
    pub const fn new() -> ConnMap<T> {
        ConnMap { tables: Vec::new(), len: 0 }
    }

    /// Connections in the map.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` for `conn`. Returns what the slot held before: `conn`'s previous value,
    /// or the entry of an older connection of that slot that was never removed (its `Closed`
    /// was not handled), so that nothing is dropped unseen.
    pub fn insert(&mut self, conn: Conn, value: T) -> Option<(Conn, T)> {
        let (w, s) = (conn.worker(), conn.slot());
        if self.tables.len() <= w {
            self.tables.resize_with(w + 1, Vec::new);
        }
        let table = &mut self.tables[w];
        if table.len() <= s {
            table.resize_with(s + 1, || None);
        }
        let old = table[s].replace((conn, value));
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// `conn`'s value, if it is in the map. Hot path: no allocation, no lock.
    #[inline]
    pub fn get(&self, conn: Conn) -> Option<&T> {
        match self.tables.get(conn.worker())?.get(conn.slot())? {
            Some((c, v)) if *c == conn => Some(v),
            _ => None,
        }
    }

    /// `conn`'s value, mutably, if it is in the map. Hot path: no allocation, no lock.
    #[inline]
    pub fn get_mut(&mut self, conn: Conn) -> Option<&mut T> {
        match self.tables.get_mut(conn.worker())?.get_mut(conn.slot())? {
            Some((c, v)) if *c == conn => Some(v),
            _ => None,
        }
    }

    /// Whether `conn` is in the map.
    pub fn contains(&self, conn: Conn) -> bool {
        self.get(conn).is_some()
    }

    /// Takes `conn`'s value out of the map. A stale id (its slot reused since) takes nothing.
    pub fn remove(&mut self, conn: Conn) -> Option<T> {
        let e = self.tables.get_mut(conn.worker())?.get_mut(conn.slot())?;
        if e.as_ref().is_some_and(|(c, _)| *c == conn) {
            self.len -= 1;
            return e.take().map(|(_, v)| v);
        }
        None
    }

    /// Every connection and its value, by worker, then slot.
    pub fn iter(&self) -> impl Iterator<Item = (Conn, &T)> + '_ {
        self.tables.iter().flatten().filter_map(|e| e.as_ref().map(|(c, v)| (*c, v)))
    }

    /// Every connection and its value, mutably, by worker, then slot.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Conn, &mut T)> + '_ {
        self.tables.iter_mut().flatten().filter_map(|e| e.as_mut().map(|(c, v)| (*c, v)))
    }
}

impl<T> Default for ConnMap<T> {
    fn default() -> Self {
        ConnMap::new()
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for ConnMap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(worker: u16, idx: u32, gen: u32) -> Conn {
        Conn { worker, idx, gen }
    }

    #[test]
    fn the_same_slot_on_two_workers_holds_two_connections() {
        let mut m = ConnMap::new();
        assert!(m.insert(conn(0, 3, 1), "a").is_none());
        assert!(m.insert(conn(1, 3, 1), "b").is_none());
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(conn(0, 3, 1)), Some(&"a"));
        assert_eq!(m.get(conn(1, 3, 1)), Some(&"b"));
        assert_eq!(m.remove(conn(0, 3, 1)), Some("a"));
        assert_eq!(m.get(conn(1, 3, 1)), Some(&"b"));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_stale_id_finds_and_takes_nothing() {
        let mut m = ConnMap::new();
        m.insert(conn(0, 5, 7), 1);
        assert_eq!(m.remove(conn(0, 5, 7)), Some(1));
        m.insert(conn(0, 5, 8), 2); // the slot reused by a newer connection
        assert_eq!(m.get(conn(0, 5, 7)), None);
        assert_eq!(m.get_mut(conn(0, 5, 7)), None);
        assert_eq!(m.remove(conn(0, 5, 7)), None);
        assert!(!m.contains(conn(0, 5, 7)));
        assert_eq!(m.get(conn(0, 5, 8)), Some(&2));
        assert_eq!(m.len(), 1);
        // Ids beyond any table find nothing either.
        assert_eq!(m.get(conn(9, 0, 1)), None);
        assert_eq!(m.remove(conn(0, 500, 1)), None);
    }

    #[test]
    fn insert_hands_back_what_the_slot_held() {
        let mut m = ConnMap::new();
        assert_eq!(m.insert(conn(0, 0, 1), 10), None);
        assert_eq!(m.insert(conn(0, 0, 1), 11), Some((conn(0, 0, 1), 10)));
        // An older connection never removed: replaced, and handed back rather than dropped.
        assert_eq!(m.insert(conn(0, 0, 2), 20), Some((conn(0, 0, 1), 11)));
        assert_eq!(m.len(), 1);
        *m.get_mut(conn(0, 0, 2)).unwrap() += 1;
        assert_eq!(m.get(conn(0, 0, 2)), Some(&21));
    }

    #[test]
    fn iteration_visits_every_connection_once() {
        let mut m = ConnMap::new();
        for w in 0..3u16 {
            for s in (0..10u32).step_by(3) {
                m.insert(conn(w, s, 1), u32::from(w) * 100 + s);
            }
        }
        m.remove(conn(1, 3, 1));
        let mut seen: Vec<_> = m.iter().map(|(c, v)| (c.worker(), c.slot(), *v)).collect();
        seen.sort_unstable();
        assert_eq!(seen.len(), m.len());
        assert_eq!(seen.len(), 11);
        assert!(seen.iter().all(|&(w, s, v)| v == w as u32 * 100 + s as u32));
        assert!(!seen.iter().any(|&(w, s, _)| (w, s) == (1, 3)));
        for (_, v) in m.iter_mut() {
            *v += 1;
        }
        assert_eq!(m.get(conn(2, 9, 1)), Some(&210));
    }
}
