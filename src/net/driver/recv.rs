//! Receiving: a connection's multishot receive into the worker's buffer pool, held back
//! while the connection is paused or backlogged, and waiting for buffers when the pool ran dry.

use io_uring::{cqueue, opcode};

use super::{more, Net};
use crate::net::NetEvent;
use crate::reactor::{on_target, OpKind, Reactor, Token};

impl Net {
    /// Connection `idx`'s multishot receive into the pool.
    pub(super) fn recv_sqe(&self, r: &Reactor, idx: usize) -> io_uring::squeue::Entry {
        let c = &self.conns[idx];
        on_target!(c.target, |t| opcode::RecvMulti::new(t, r.pool.bgid()).build())
            .user_data(Token::new(OpKind::Recv, idx, c.gen).encode())
    }

    pub(super) fn arm_recv(&mut self, r: &mut Reactor, idx: usize) -> std::io::Result<()> {
        r.push_plain(self.recv_sqe(r, idx))?;
        self.conns[idx].rx.armed = true;
        r.counters.io_started.add(1);
        Ok(())
    }

    pub(super) fn on_recv(
        &mut self,
        r: &mut Reactor,
        idx: usize,
        t: Token,
        res: i32,
        flags: u32,
    ) -> std::io::Result<()> {
        // A buffer the kernel picked is ours whatever happens next: wrap it so it goes home.
        // SAFETY: the kernel filled buffer `bid` of this worker's pool with `res` bytes, and
        // hands it over with this completion: it is out of the ring and nobody else's.
        let data = cqueue::buffer_select(flags).map(|bid| unsafe { r.pool.take(bid, res.max(0) as usize) });
        let Some(c) = self.conn_for(idx, t) else { return Ok(()) };
        let more = more(flags);
        if !more {
            c.rx.armed = false;
            r.counters.io_finished.add(1);
        }
        c.last_active = r.now;
        // A multishot that ended (on its own, or cancelled by a pause since lifted) restarts
        // if the connection still wants reads.
        let rearm = !more && c.wants_reads() && !r.draining;
        let (closing, ei, replica, gen, tls) = (c.closing(), c.endpoint, c.replica, c.gen, c.tls.is_some());
        match res {
            n if n > 0 => {
                let mut rearm = rearm;
                if !closing {
                    let data = data.expect("recv with data carries a buffer");
                    if tls {
                        self.tls_input(r, idx, data);
                        rearm &= !self.conns[idx].closing();
                    } else {
                        self.emit(r, ei, replica, NetEvent::Data { conn: Self::conn_id(r, idx, gen), data });
                    }
                }
                if rearm {
                    self.arm_recv(r, idx)?;
                }
            }
            // Peer finished sending (the multishot recv ended; none is re-armed): tell the
            // stage after its data; the handler closes. (A TLS stream must have ended with
            // `close_notify`, which told the stage already.)
            0 if !closing => {
                if self.tls_eof(r, idx) && !self.conns[idx].rx.eof {
                    self.conns[idx].rx.eof = true;
                    self.emit(r, ei, replica, NetEvent::Eof { conn: Self::conn_id(r, idx, gen) });
                }
            }
            0 => self.begin_close(r, idx, true),
            e if -e == libc::ENOBUFS => {
                r.counters.enobufs.add(1);
                if !closing && !r.draining {
                    self.conns[idx].rx.starved = true;
                    self.starved.push_back(idx);
                    r.pool.set_starved(true);
                }
            }
            // Cancelled by a close, the drain, or a pause (re-armed if lifted meanwhile).
            e if -e == libc::ECANCELED => {
                if rearm {
                    self.arm_recv(r, idx)?;
                }
            }
            _ => self.begin_close(r, idx, false), // reset or other error: abort
        }
        if !more {
            self.maybe_finish_close(r, idx);
        }
        Ok(())
    }

    /// Re-arms receives that stopped for lack of buffers, oldest first, one per free buffer:
    /// each had bytes waiting when it stopped, so it takes a buffer at once, and re-arming
    /// more than there are buffers would only have the rest fail again (with 4 buffers and
    /// many connections, re-arming them all made ENOBUFS completions by the million).
    pub(crate) fn rearm_starved(&mut self, r: &mut Reactor) {
        let mut free = self.rearm_udp_starved(r, r.pool.available());
        while free > 0 {
            let Some(idx) = self.starved.pop_front() else { break };
            let Some(c) = self.conns.get_mut(idx).filter(|c| c.rx.starved) else { continue };
            c.rx.starved = false;
            // A paused or backlogged connection is re-armed when that ends.
            if c.wants_reads() && !r.draining {
                if self.arm_recv(r, idx).is_err() {
                    self.begin_close(r, idx, false);
                }
                free -= 1;
            }
        }
        if self.starved.is_empty() && self.udp_starved.is_empty() {
            r.pool.set_starved(false);
        }
    }

    /// Stops reading (paused, or backlogged with backpressure): cancels the multishot recv. Its
    /// last completion (ECANCELED) re-arms it if reading was wanted again meanwhile.
    pub(super) fn hold_reads(&mut self, r: &mut Reactor, idx: usize) {
        let c = &self.conns[idx];
        if c.rx.armed && !c.wants_reads() {
            // A cancel that cannot be queued leaves the recv armed: the connection is read on,
            // bounded by the pool, as before flow control; the next hold retries.
            let _ = r.cancel(Token::new(OpKind::Recv, idx, c.gen));
        }
    }

    /// Restarts reading if the connection wants it and nothing else (a recv still armed, one
    /// waiting for buffers, the drain) stands in the way.
    pub(super) fn release_reads(&mut self, r: &mut Reactor, idx: usize) {
        let c = &self.conns[idx];
        if c.wants_reads() && !c.rx.armed && !c.rx.starved && !r.draining && self.arm_recv(r, idx).is_err() {
            self.begin_close(r, idx, false);
        }
    }
}
