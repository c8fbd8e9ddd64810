//! Ending a connection: a graceful close (queued output first), an abort (output dropped,
//! operations in flight cancelled, a reset when output was lost), and `shutdown(SHUT_WR)`.

use io_uring::{opcode, squeue};

use super::Net;
use crate::net::conn::{Life, Shut};
use crate::net::NetEvent;
use crate::reactor::{on_target, OpKind, Reactor, Token};

/// `SO_LINGER` on with a zero timeout: the socket's close sends a reset (RST), not a FIN.
/// Static, so the kernel may read it whenever the linked `setsockopt` runs.
static LINGER_RESET: libc::linger = libc::linger { l_onoff: 1, l_linger: 0 };

impl Net {
    /// Starts closing: no more reads. `graceful` lets queued sends finish first; otherwise
    /// queued bytes are dropped and an in-flight send is cancelled (and the connection reset if
    /// that loses output).
    pub(super) fn begin_close(&mut self, r: &mut Reactor, idx: usize, graceful: bool) {
        self.begin_close_with(r, idx, graceful, false);
    }

    /// [`Net::begin_close`]; `reset` makes an abort reset the connection even if no queued
    /// output is lost (the part of a response already sent is known to be short).
    pub(super) fn begin_close_with(&mut self, r: &mut Reactor, idx: usize, graceful: bool, reset: bool) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        match c.life {
            Life::Closed => return,
            Life::Closing { graceful: was, .. } if graceful || !was => {
                if let Life::Closing { reset: r0, .. } = &mut c.life {
                    *r0 |= reset;
                }
                return self.maybe_finish_close(r, idx);
            }
            _ => {}
        }
        if graceful && matches!(c.life, Life::Open) && c.tls.is_some() {
            self.tls_close_notify(r, idx);
        }
        let c = &mut self.conns[idx];
        let tx = &mut c.tx;
        // An abort that loses output resets (see `Life::Closing`).
        let reset = reset || !graceful && (tx.has_output() || tx.sending || tx.splicing > 0);
        c.life = Life::Closing { graceful, reset };
        // The ops to cancel: the recv, and on abort whatever sends or splices are in flight.
        let mut ops = [None; 4];
        if c.rx.armed {
            ops[0] = Some(OpKind::Recv);
        }
        if !graceful {
            if c.tx.sending {
                ops[1] = Some(OpKind::Send);
            }
            if c.tx.splicing > 0 {
                ops[2] = Some(OpKind::SpliceIn);
                ops[3] = Some(OpKind::SpliceOut);
            }
            if !c.tx.busy() {
                c.tx.drop_output();
            }
        }
        let gen = c.gen;
        for kind in ops.into_iter().flatten() {
            // A cancel that cannot be queued only means the op completes on its own (the recv
            // at EOF, a send or splice when the close below resets the socket).
            let _ = r.cancel(Token::new(kind, idx, gen));
        }
        self.maybe_finish_close(r, idx);
    }

    /// Submits the close once nothing is in flight. A multishot recv ends only after the
    /// cancel took effect, so the socket stays open until then.
    ///
    /// Called after every completion of a connection's op: the common case (not closing) is
    /// one load, inlined.
    #[inline]
    pub(super) fn maybe_finish_close(&mut self, r: &mut Reactor, idx: usize) {
        if self.conns.get(idx).is_some_and(|c| matches!(c.life, Life::Closing { .. })) {
            self.finish_close(r, idx);
        }
    }

    #[cold]
    fn finish_close(&mut self, r: &mut Reactor, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        // Pending SEND_ZC notifications do not hold the close back: a peer that reads nothing
        // would never let them come while the socket is open (its views move to the orphans).
        let Life::Closing { graceful, reset } = c.life else { return };
        if c.tx.busy() {
            return;
        }
        if graceful && c.tx.has_output() {
            return self.pump(r, idx);
        }
        if c.rx.armed {
            // Graceful close of a reading connection: cancel the recv first.
            return;
        }
        c.life = Life::Closed;
        let token = Token::new(OpKind::Close, idx, c.gen);
        let close = on_target!(c.target, |t| opcode::Close::new(t).build()).user_data(token.encode());
        let pushed = if reset {
            // SO_LINGER {on, 0}, then the close: a hard link, so the close runs even where the
            // kernel cannot set socket options on the ring (before 6.7; then a FIN it is).
            let linger = (&LINGER_RESET as *const libc::linger).cast();
            let len = std::mem::size_of::<libc::linger>() as u32;
            let (level, name) = (libc::SOL_SOCKET as u32, libc::SO_LINGER as u32);
            let set = on_target!(c.target, |t| opcode::SetSockOpt::new(t, level, name, linger, len).build())
                .flags(squeue::Flags::IO_HARDLINK)
                .user_data(Token::IGNORE.encode());
            // SAFETY: the option value is a static; the close refers to no user memory.
            unsafe { r.push(&[set, close]) }
        } else {
            r.push_plain(close)
        };
        r.counters.io_started.add(1);
        if pushed.is_err() {
            // The socket is owned by this connection and no op is in flight on it.
            r.close_now(self.conns[idx].target);
            self.on_closed(r, idx, token);
        }
    }

    pub(super) fn on_closed(&mut self, r: &mut Reactor, idx: usize, t: Token) {
        r.counters.io_finished.add(1);
        if !self.conns.get(idx).is_some_and(|c| t.is_for(c.gen) && matches!(c.life, Life::Closed)) {
            return;
        }
        let mut c = self.conns.remove(idx);
        if !c.tx.zc_held.is_empty() {
            let key = Token::new(OpKind::Send, idx, c.gen).encode();
            self.zc_orphans.insert(key, std::mem::take(&mut c.tx.zc_held));
        }
        self.endpoint_closed(r, c.endpoint);
        r.counters.closed.add(1);
        if self.tls_unannounced(r, c.endpoint, c.tls.take()) {
            return; // its stage never heard of it
        }
        let conn = Self::conn_id(r, idx, c.gen);
        self.emit(r, c.endpoint, c.replica, NetEvent::Closed { conn });
    }

    /// Sends the FIN a `Shutdown` asked for, now that everything before it is sent.
    pub(super) fn submit_shutdown(&mut self, r: &mut Reactor, idx: usize) {
        let c = &mut self.conns[idx];
        let sqe = on_target!(c.target, |t| opcode::Shutdown::new(t, libc::SHUT_WR).build())
            .user_data(Token::new(OpKind::Shutdown, idx, c.gen).encode());
        c.tx.shut = Shut::InFlight;
        if r.push_plain(sqe).is_err() {
            self.conns[idx].tx.shut = Shut::Asked; // not sent: the abort below ends it
            return self.begin_close(r, idx, false);
        }
        r.counters.io_started.add(1);
    }

    pub(super) fn on_shutdown(&mut self, r: &mut Reactor, idx: usize, t: Token, res: i32) {
        r.counters.io_finished.add(1);
        let Some(c) = self.conn_for(idx, t) else { return };
        c.tx.shut = Shut::Done;
        if res < 0 && !c.closing() {
            return self.begin_close(r, idx, false); // the peer is gone
        }
        self.maybe_finish_close(r, idx);
    }
}
