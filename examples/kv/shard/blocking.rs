//! Blocking pops (`BLPOP`, `BRPOP`): a connection parked on its keys until a push serves it,
//! first blocked first served, or its time limit (a framework `Timer`) passes.

use std::ops::Range;
use std::time::{Duration, Instant};

use ringstage::prelude::*;

use super::{BlockTimeout, Blocked, Shard};
use crate::resp::{self, Resp};
use crate::store::List;

impl Shard {
    /// Parks `conn` on the keys of the blocking pop in `data`/`args` (later commands of the
    /// connection wait behind it). Returns false, having answered `-BUSY`, when the timer
    /// table is full.
    pub(super) fn block(
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
            st.blocked = Some(Blocked { keys, left, id, timer });
        }
        true
    }

    /// A push to `key` happened: hands its elements to the connections blocked on it, first
    /// blocked first served, while both last.
    pub(super) fn serve(&mut self, key: &[u8], now: Instant) {
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
    pub(super) fn timed_out(&mut self, fr: &mut Framer<Resp>, t: BlockTimeout, now: Instant) {
        if self.conns.get_mut(t.conn).and_then(|st| st.blocked.as_ref()).is_some_and(|b| b.id == t.id) {
            self.unblock(t.conn, NetCmd::Send { conn: t.conn, data: resp::NIL_ARRAY.clone() });
            self.run_unblocked(fr, now);
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
    pub(super) fn forget_waits(&mut self, conn: Conn, b: &Blocked) {
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
    pub(super) fn run_unblocked(&mut self, fr: &mut Framer<Resp>, now: Instant) {
        while let Some(conn) = self.unblocked.pop() {
            if self.conns.get_mut(conn).is_some_and(|st| !st.done && !st.waiting) {
                self.run_stash(fr, conn, now);
            }
        }
    }
}
