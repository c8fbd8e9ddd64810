//! File transfers by splice: file → pipe → socket, two linked `SPLICE`s per pipe's worth, so
//! a file's bytes never enter user memory. The pipe comes with the command
//! ([`SplicePipe`](crate::net::SplicePipe)), made before the response head was committed.

use std::os::fd::AsRawFd;

use io_uring::{opcode, squeue, types};

use super::Net;
use crate::reactor::{on_target, OpKind, Reactor, Token};

impl Net {
    /// Submits the next splice step of the connection's file transfer. Returns false (and
    /// clears the transfer) when it is complete.
    pub(super) fn submit_splice(&mut self, r: &mut Reactor, idx: usize) -> bool {
        let c = &mut self.conns[idx];
        let (sock, gen) = (c.target, c.gen);
        let f = c.tx.file.as_mut().expect("a file transfer");
        if f.in_pipe == 0 && f.remaining == 0 {
            c.tx.file = None;
            return false;
        }
        let (pr, pw) = f.pipe.fds();
        let chunk = u64::from(f.pipe.capacity);
        let out_tok = Token::new(OpKind::SpliceOut, idx, gen).encode();
        let res = if f.in_pipe > 0 {
            // Finish what is in the pipe first (the socket took less last time).
            let n = f.in_pipe.min(chunk) as u32;
            c.tx.splicing = 1;
            r.push_plain(
                on_target!(sock, |t| opcode::Splice::new(types::Fd(pr), -1, t, -1, n).build()).user_data(out_tok),
            )
        } else {
            let n = f.remaining.min(chunk) as u32;
            let file_in = opcode::Splice::new(types::Fd(f.file.as_raw_fd()), f.offset as i64, types::Fd(pw), -1, n)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(Token::new(OpKind::SpliceIn, idx, gen).encode());
            let to_sock =
                on_target!(sock, |t| opcode::Splice::new(types::Fd(pr), -1, t, -1, n).build()).user_data(out_tok);
            c.tx.splicing = 2;
            // SAFETY: splices refer to descriptors only; the file and the pipe are owned by the
            // transfer, which lives until both completions arrive.
            unsafe { r.push(&[file_in, to_sock]) }
        };
        let c = &mut self.conns[idx];
        c.tx.since = r.now;
        match res {
            Ok(()) => r.counters.io_started.add(u64::from(c.tx.splicing)),
            Err(_) => {
                c.tx.splicing = 0;
                self.begin_close(r, idx, false);
            }
        }
        true
    }

    pub(super) fn on_splice(&mut self, r: &mut Reactor, idx: usize, t: Token, res: i32) {
        r.counters.io_finished.add(1);
        let file_side = t.kind == OpKind::SpliceIn;
        let Some(c) = self.conn_for(idx, t) else { return };
        c.tx.splicing -= 1;
        c.last_active = r.now;
        let mut fail = false;
        let closing = c.closing();
        if let Some(f) = c.tx.file.as_mut() {
            match (file_side, res) {
                (true, n) if n > 0 => {
                    f.offset += n as u64;
                    f.remaining -= n as u64;
                    f.in_pipe += n as u64;
                }
                (true, _) => fail = true, // the file ended early (or failed): the length promised is wrong
                (false, n) if n > 0 => {
                    f.in_pipe -= n as u64;
                    c.tx.unsent = c.tx.unsent.saturating_sub(n as u64);
                    r.counters.spliced.add(n as u64);
                }
                // A short file-side splice breaks the link: resubmit from the pipe.
                (false, e) if -e == libc::ECANCELED && !closing => {}
                (false, _) => fail = true, // peer gone, or our cancel
            }
        }
        if c.tx.splicing > 0 {
            return;
        }
        if fail || c.aborting() {
            // The head (and part of the body) went out: only a reset tells the peer.
            c.tx.drop_output();
            self.begin_close_with(r, idx, false, fail); // ends with maybe_finish_close
            return;
        }
        self.output_sent(r, idx, 0, 0);
        self.pump(r, idx);
        self.maybe_finish_close(r, idx);
    }
}
