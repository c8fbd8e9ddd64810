//! Connecting: an outbound TCP or Unix domain connect on the ring, bounded by a linked timeout.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use io_uring::{opcode, types};

use super::accept::timespec;
use super::Net;
use crate::net::{ConnAddrs, ConnectorId, NetEvent};
use crate::reactor::{timed_out, OpKind, Reactor, Target, Token};

/// Where a connect goes.
pub(super) enum Dest {
    Tcp(SocketAddr),
    Unix(std::sync::Arc<std::path::Path>),
}

/// A connect in flight: what the kernel reads until it completes, kept at a stable address.
pub(super) struct Connecting {
    /// The socket (closed if the connect fails).
    fd: OwnedFd,
    endpoint: usize,
    tag: u64,
    /// The TCP address connected to (`None`: a Unix socket).
    to: Option<SocketAddr>,
    /// The address and the time limit, read by the kernel (the limit at submission).
    addr: Box<libc::sockaddr_storage>,
    limit: Box<types::Timespec>,
}

impl Net {
    /// Starts an outbound connection of connector `id` (see
    /// [`NetCmd::Connect`](crate::net::NetCmd::Connect)): a plain socket, connected on the ring
    /// with the connector's time limit linked to the connect.
    pub(super) fn connect(&mut self, r: &mut Reactor, id: ConnectorId, dest: Dest, tag: u64) {
        // Ids come from the builder; one from another runtime names nothing here.
        let Some(&ei) = self.connectors.get(id.0 as usize) else { return };
        let e = &self.endpoints[ei];
        let (limit, timeout) = (e.cfg.max_connections, e.connect_timeout.unwrap_or_default());
        let socket = if r.draining {
            Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "the runtime is shutting down"))
        } else if e.open >= limit {
            Err(std::io::Error::other(format!("the connector has its limit of {limit} connections open")))
        } else {
            match &dest {
                Dest::Tcp(addr) => ringstage_sys::socket::stream(addr, e.cfg.nodelay)
                    .map(|fd| (fd, ringstage_sys::socket::to_raw(addr))),
                Dest::Unix(path) => {
                    ringstage_sys::unix::sockaddr(path).and_then(|sa| Ok((ringstage_sys::unix::stream()?, sa)))
                }
            }
        };
        let (fd, (sa, len)) = match socket {
            Ok(s) => s,
            Err(error) => return self.connect_failed(r, ei, tag, error),
        };
        self.endpoints[ei].open += 1;
        let key = self.connecting.insert(Connecting {
            fd,
            endpoint: ei,
            tag,
            to: match dest {
                Dest::Tcp(addr) => Some(addr),
                Dest::Unix(_) => None,
            },
            addr: Box::new(sa),
            limit: Box::new(timespec(timeout)),
        });
        let c = &self.connecting[key];
        let sqe =
            opcode::Connect::new(types::Fd(c.fd.as_raw_fd()), (&*c.addr as *const libc::sockaddr_storage).cast(), len)
                .build()
                .user_data(Token::new(OpKind::Connect, key, 0).encode());
        // SAFETY: the address and the timespec are boxed in the record, which stays in the
        // slab until the connect completes (after its submission); the socket stays open.
        match unsafe { r.push_linked_timeout(sqe, &*c.limit) } {
            Ok(()) => r.counters.io_started.add(1),
            Err(e) => {
                let c = self.connecting.remove(key);
                self.endpoints[ei].open -= 1;
                self.connect_failed(r, ei, c.tag, e);
            }
        }
    }

    /// A connect completed (`res` 0) or failed: the connection joins the table like an
    /// accepted one, or the connector's stage hears why not.
    pub(super) fn on_connect(&mut self, r: &mut Reactor, key: usize, res: i32) {
        let Some(c) = self.connecting.try_remove(key) else { return };
        self.connected(r, c, res);
        // After the event it produced was enqueued (see `Shared::quiescent`).
        r.counters.io_finished.add(1);
    }

    fn connected(&mut self, r: &mut Reactor, c: Connecting, res: i32) {
        let Connecting { fd, endpoint: ei, tag, to, .. } = c;
        // While draining, a connect ends cancelled or, if it won the race, unused.
        let failed = if r.draining {
            Some(std::io::Error::new(std::io::ErrorKind::Interrupted, "the runtime is shutting down"))
        } else if timed_out(res) {
            Some(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out (see ConnectConfig::timeout)"))
        } else if res < 0 {
            Some(std::io::Error::from_raw_os_error(-res))
        } else {
            None
        };
        if let Some(error) = failed {
            self.endpoints[ei].open -= 1;
            drop(fd); // closes the socket
            return self.connect_failed(r, ei, tag, error);
        }
        r.counters.connected.add(1);
        // A plain descriptor: one getsockname for the port the kernel picked.
        let addrs = match to {
            Some(to) => ConnAddrs::new(Some(to), ringstage_sys::socket::local_addr(fd.as_raw_fd()).ok()),
            None => ConnAddrs::default(),
        };
        let target = Target::Fd(fd.into_raw_fd());
        self.open_conn(r, ei, target, |conn, id| NetEvent::Connected {
            conn,
            connector: ConnectorId(id as u32),
            tag,
            addrs,
        });
    }

    fn connect_failed(&mut self, r: &mut Reactor, ei: usize, tag: u64, error: std::io::Error) {
        r.counters.connect_failed.add(1);
        let e = &self.endpoints[ei];
        let ev = NetEvent::ConnectFailed { connector: ConnectorId(e.id as u32), tag, error };
        let replica = e.sink.pick(&ev) as u16;
        self.emit(r, ei, replica, ev);
    }

    /// Shutdown: cancels the connects in flight instead of waiting for their time limits.
    pub(super) fn cancel_connects(&mut self, r: &mut Reactor) {
        let sockets: Vec<i32> = self.connecting.iter().map(|(_, c)| c.fd.as_raw_fd()).collect();
        for fd in sockets {
            let any_op_on = types::CancelBuilder::fd(types::Fd(fd)).all();
            let sqe = opcode::AsyncCancel2::new(any_op_on).build().user_data(Token::IGNORE.encode());
            if r.push_plain(sqe).is_err() {
                break; // the SQ stays full: the connects' own time limits end them
            }
        }
    }
}
