//! Sending: a connection's queued output leaves in one gathered send per net batch; runs of
//! small views are first coalesced into one (a copy that pays for itself, see
//! [`IoBufChain::coalesce`](crate::buf::IoBufChain::coalesce)); large sends may go zero copy
//! (`SEND_ZC`). Unsent output is counted for flow control ([`ListenConfig::output_limit`]).
//!
//! [`ListenConfig::output_limit`]: crate::net::ListenConfig::output_limit

use std::collections::VecDeque;

use io_uring::{cqueue, opcode};

use super::{more, Net};
use crate::buf::IoBufChain;
use crate::net::conn::{FileSend, Life, Queued, SendState, Shut};
use crate::net::{NetCmd, NetEvent};
use crate::reactor::{on_target, OpKind, Reactor, Token};

/// Most iovecs per send; the rest goes in the next send.
const MAX_IOV: usize = 64;

/// Most bytes one coalesced piece holds (a run of small views longer than this is split).
const MAX_RUN: usize = 16 << 10;

impl Net {
    /// Queues the output of a send command (`Send`, `SendChain`, `SendFile`, `Shutdown`) for
    /// connection `idx`, to be sent when the batch ends.
    #[inline(always)] // one caller, per command: the hot path of every send
    pub(super) fn queue_output(&mut self, r: &mut Reactor, idx: usize, cmd: NetCmd) {
        if self.conns[idx].tls.is_some() {
            return self.queue_tls(r, idx, cmd); // encrypted first
        }
        self.queue_plain(r, idx, cmd);
    }

    /// [`Net::queue_output`] of bytes to send as they are.
    #[inline(always)]
    pub(super) fn queue_plain(&mut self, r: &mut Reactor, idx: usize, cmd: NetCmd) {
        let c = &mut self.conns[idx];
        let closing = c.closing();
        let tx = &mut c.tx;
        if !matches!(tx.shut, Shut::No) {
            return; // after a Shutdown nothing more can be sent
        }
        // Behind a file transfer, output waits its turn in `queue`.
        let behind = tx.file.is_some() || !tx.queue.is_empty();
        let queue_bufs = |q: &mut VecDeque<Queued>, mut chain: IoBufChain| match q.back_mut() {
            Some(Queued::Bufs(b)) => b.append(&mut chain),
            _ => q.push_back(Queued::Bufs(chain)),
        };
        match cmd {
            NetCmd::Send { data, .. } => {
                tx.unsent += data.len() as u64;
                tx.views += u32::from(!data.is_empty());
                if behind {
                    queue_bufs(&mut tx.queue, IoBufChain::from(data));
                } else {
                    tx.out.push(data);
                }
            }
            NetCmd::SendChain { mut data, .. } => {
                tx.unsent += data.len() as u64;
                tx.views += data.segments() as u32;
                if behind {
                    queue_bufs(&mut tx.queue, data);
                } else {
                    tx.out.append(&mut data);
                }
            }
            NetCmd::SendFile { file, offset, len, pipe, .. } => {
                tx.unsent += len;
                let f = FileSend { file, offset, remaining: len, in_pipe: 0, pipe };
                if behind || !tx.out.is_empty() {
                    tx.queue.push_back(Queued::File(f));
                } else {
                    tx.file = Some(Box::new(f));
                }
            }
            NetCmd::Shutdown { .. } => {
                tx.shut = Shut::Asked;
                tx.queue.push_back(Queued::Shutdown);
            }
            // Not output: handled by `Net::command`.
            NetCmd::Connect { .. }
            | NetCmd::ConnectUnix { .. }
            | NetCmd::SendTo { .. }
            | NetCmd::SendSegments { .. }
            | NetCmd::Close { .. }
            | NetCmd::Abort { .. }
            | NetCmd::PauseReads { .. }
            | NetCmd::ResumeReads { .. } => return,
        }
        if !tx.backlogged && !closing && tx.over_limit() {
            self.set_backlogged(r, idx, true);
        }
        let c = &mut self.conns[idx];
        // Sent when the batch ends: every response a batch produced for this connection
        // (pipelined requests) leaves in one gathered send.
        if !c.tx.dirty {
            c.tx.dirty = true;
            self.dirty.push((idx, c.gen));
        }
    }

    /// The connection's unsent output went over its limit (`full`) or back down to half of it:
    /// tell its stage, and hold or release its reads if it has backpressure.
    fn set_backlogged(&mut self, r: &mut Reactor, idx: usize, full: bool) {
        let c = &mut self.conns[idx];
        c.tx.backlogged = full;
        let (ei, replica, gen, backpressure) = (c.endpoint, c.replica, c.gen, c.tx.backpressure);
        let conn = Self::conn_id(r, idx, gen);
        if full {
            r.counters.backlogged.add(1);
            self.emit(r, ei, replica, NetEvent::Backlogged { conn });
        } else {
            self.emit(r, ei, replica, NetEvent::Drained { conn });
        }
        match (backpressure, full) {
            (false, _) => {}
            (true, true) => self.hold_reads(r, idx),
            (true, false) => self.release_reads(r, idx),
        }
    }

    /// `n` bytes in `views` whole views of the connection's output were taken by the kernel; a
    /// backlogged connection down to half its limit is drained.
    #[inline]
    pub(super) fn output_sent(&mut self, r: &mut Reactor, idx: usize, n: u64, views: usize) {
        let c = &mut self.conns[idx];
        c.tx.unsent = c.tx.unsent.saturating_sub(n);
        c.tx.views = c.tx.views.saturating_sub(views as u32);
        if c.tx.backlogged && !c.closing() && c.tx.under_half() {
            self.set_backlogged(r, idx, false);
        }
    }

    /// Starts the sends that commands of the batch just handled asked for: one gathered send
    /// per connection, however many commands it got. Hot path: no allocation (the list keeps
    /// its capacity).
    pub(crate) fn flush_sends(&mut self, r: &mut Reactor) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &(idx, gen) in &dirty {
            let Some(c) = self.conns.get_mut(idx).filter(|c| c.gen == gen) else { continue };
            c.tx.dirty = false;
            self.pump(r, idx);
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty; // keep the allocation
        }
    }

    /// Starts the next transfer when nothing is in flight: queued buffers, then the file
    /// transfer, then whatever waited behind it.
    pub(super) fn pump(&mut self, r: &mut Reactor, idx: usize) {
        loop {
            let Some(c) = self.conns.get_mut(idx) else { return };
            if c.tx.busy() || c.aborting() || matches!(c.life, Life::Closed) {
                return;
            }
            if !c.tx.out.is_empty() {
                return self.submit_send(r, idx);
            }
            if c.tx.file.is_some() {
                if c.tls.is_some() {
                    // Encrypted in user space, a chunk at a time, then sent as buffers.
                    if !self.tls_file_chunk(r, idx) {
                        return;
                    }
                    continue;
                }
                if self.submit_splice(r, idx) {
                    return;
                }
                continue; // the transfer was complete: move on
            }
            match c.tx.queue.pop_front() {
                Some(Queued::Bufs(b)) => c.tx.out = b,
                Some(Queued::File(f)) => c.tx.file = Some(Box::new(f)),
                Some(Queued::Shutdown) => return self.submit_shutdown(r, idx),
                None => return,
            }
        }
    }

    fn submit_send(&mut self, r: &mut Reactor, idx: usize) {
        let c = &mut self.conns[idx];
        let cfg = &self.endpoints[c.endpoint].cfg;
        if cfg.coalesce_below > 0 {
            let fewer = c.tx.out.coalesce(&mut self.coalesce, cfg.coalesce_below, MAX_RUN);
            c.tx.views -= fewer as u32;
        }
        let st = c.tx.gather.get_or_insert_with(|| {
            Box::new(SendState {
                iov: Vec::new(),
                // SAFETY: msghdr is plain data; all-zero is valid (no name, no control).
                msg: unsafe { std::mem::zeroed() },
            })
        });
        let bytes = c.tx.out.fill_iovecs(&mut st.iov, MAX_IOV);
        let ud = Token::new(OpKind::Send, idx, c.gen).encode();
        c.tx.zc = r.features.send_zc && cfg.zc_min.is_some_and(|m| bytes >= m);
        // Zero copy: the kernel reads the views' memory in place; they stay alive in `zc_held`
        // until its notification (see `on_send`).
        let send = if let [one] = st.iov[..] {
            // One segment: a plain send, without the msghdr and iovec import of sendmsg.
            let (buf, len) = (one.iov_base as *const u8, one.iov_len.min(u32::MAX as usize) as u32);
            if c.tx.zc {
                on_target!(c.target, |t| opcode::SendZc::new(t, buf, len).flags(libc::MSG_NOSIGNAL).build())
            } else {
                on_target!(c.target, |t| opcode::Send::new(t, buf, len).flags(libc::MSG_NOSIGNAL).build())
            }
        } else {
            st.msg.msg_iov = st.iov.as_mut_ptr();
            st.msg.msg_iovlen = st.iov.len();
            let msg = &st.msg as *const libc::msghdr;
            let flags = libc::MSG_NOSIGNAL as u32;
            if c.tx.zc {
                on_target!(c.target, |t| opcode::SendMsgZc::new(t, msg).flags(flags).build())
            } else {
                on_target!(c.target, |t| opcode::SendMsg::new(t, msg).flags(flags).build())
            }
        }
        .user_data(ud);
        if c.tx.zc {
            r.counters.zc_sends.add(1);
        }
        c.tx.sending = true;
        c.tx.since = r.now;
        r.counters.sends.add(1);
        // No linked timeout: arming and cancelling one per send cost ~10% of the CPU per
        // request on /plaintext; the sweep in `Net::tick` enforces the send timeout instead.
        // SAFETY: msghdr and iovecs live in the boxed SendState and the views in `out`, both
        // untouched until the send completes.
        match unsafe { r.push(&[send]) } {
            Ok(()) => r.counters.io_started.add(1),
            Err(_) => {
                self.conns[idx].tx.sending = false;
                self.begin_close(r, idx, false);
            }
        }
    }

    pub(super) fn on_send(
        &mut self,
        r: &mut Reactor,
        idx: usize,
        t: Token,
        res: i32,
        flags: u32,
    ) -> std::io::Result<()> {
        r.counters.io_finished.add(1);
        if cqueue::notif(flags) {
            // A SEND_ZC's memory is no longer read by the kernel: release the oldest views,
            // held by the connection or, once it closed, by the orphans.
            if let Some(c) = self.conn_for(idx, t) {
                c.tx.zc_held.pop_front();
            } else {
                let key = t.encode();
                if let Some(q) = self.zc_orphans.get_mut(&key) {
                    q.pop_front();
                    if q.is_empty() {
                        self.zc_orphans.remove(&key);
                    }
                }
            }
            return Ok(());
        }
        let Some(c) = self.conn_for(idx, t) else { return Ok(()) };
        c.tx.sending = false;
        c.last_active = r.now;
        let zc = std::mem::take(&mut c.tx.zc);
        // A SEND_ZC's result with F_MORE promises a notification, until which whatever it may
        // have read (the sent bytes; after a failure, all of them) must stay alive.
        let hold = zc && more(flags);
        if hold {
            r.counters.io_started.add(1); // the notification, finished above
        }
        if res < 0 {
            // EPIPE/ECONNRESET (peer gone) or ECANCELED (send timeout): abort.
            if hold {
                let all = std::mem::take(&mut c.tx.out);
                c.tx.zc_held.push_back(all);
            }
            c.tx.drop_output();
            self.begin_close(r, idx, false);
        } else {
            let views = c.tx.out.segments();
            if hold {
                let sent = c.tx.out.split_to(res as usize);
                c.tx.zc_held.push_back(sent);
            } else {
                c.tx.out.advance(res as usize);
            }
            if c.aborting() {
                c.tx.drop_output();
            } else {
                let views = views - c.tx.out.segments();
                self.output_sent(r, idx, res as u64, views);
                self.pump(r, idx);
            }
        }
        self.maybe_finish_close(r, idx);
        Ok(())
    }
}
