//! TLS records on a connection (see [`crate::net::tls`]): received ciphertext is fed to
//! rustls and the plaintext delivered as `Data`; the handshake's own messages, alerts and
//! `close_notify` are queued as raw output; a send's plaintext is encrypted before it is
//! queued. The connection's first event is held until the handshake is done.

use std::io::{IoSlice, Read, Write};

use smallvec::SmallVec;
use std::time::Instant;

use super::Net;
use crate::buf::IoBuf;
use crate::net::tls::{rustls, TlsInfo, TlsSetup};
use crate::net::{ConnectorId, NetCmd, NetEvent};
use crate::reactor::Reactor;

/// Most file bytes read and encrypted at once for a `SendFile` on a TLS connection.
const FILE_CHUNK: usize = 256 << 10;

/// A connection's TLS session.
pub(crate) struct TlsConn {
    conn: rustls::Connection,
    /// The first event (`Opened`, `Connected`), held until the handshake is done.
    pending: Option<NetEvent>,
    started: Instant,
    /// The peer sent `close_notify`.
    peer_closed: bool,
    /// Why the session failed, for a connector's `ConnectFailed`.
    error: Option<String>,
}

impl TlsConn {
    /// A session for a connection of an endpoint with `setup`.
    pub(super) fn new(setup: &TlsSetup, now: Instant) -> Result<Box<TlsConn>, rustls::Error> {
        let mut conn = match setup {
            TlsSetup::Server(cfg) => rustls::Connection::Server(rustls::ServerConnection::new(cfg.clone())?),
            TlsSetup::Client(cfg, name) => {
                rustls::Connection::Client(rustls::ClientConnection::new(cfg.clone(), name.clone())?)
            }
        };
        // Sends are bounded by the connection's output limit, not by rustls's buffer.
        conn.set_buffer_limit(None);
        Ok(Box::new(TlsConn { conn, pending: None, started: now, peer_closed: false, error: None }))
    }

    /// The handshake is not done yet (the first event is held).
    pub(super) fn handshaking(&self) -> bool {
        self.pending.is_some() || self.conn.is_handshaking()
    }

    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// The handshake ran out of time.
    pub(super) fn timed_out(&mut self) {
        self.error = Some("the TLS handshake timed out".into());
    }

    fn info(&self) -> TlsInfo {
        let c = &self.conn;
        TlsInfo {
            alpn: c.alpn_protocol().map(<[u8]>::to_vec),
            server_name: match c {
                rustls::Connection::Server(s) => s.server_name().map(String::from),
                rustls::Connection::Client(_) => None,
            },
            version: c.protocol_version(),
            suite: c.negotiated_cipher_suite().map(|s| s.suite()),
            resumed: matches!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
        }
    }

    /// Takes what rustls has to send (handshake messages, alerts, records).
    fn take_output(&mut self) -> Option<IoBuf> {
        if !self.conn.wants_write() {
            return None;
        }
        let mut out = Vec::new();
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail.
            if self.conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        Some(IoBuf::from(out))
    }

    /// Encrypts `plain`; returns the records. The pieces go in as one vectored write, so
    /// they share records: rustls makes a record of each write, and a response's head and body
    /// as two records cost the peer two decryptions instead of one (measured with wrk against
    /// the HTTP example, 1 KiB files, where the client's CPU was the limit: 0.65x nginx's
    /// req/s as two records, 1.07x as one). No plaintext copy is made on the way.
    fn encrypt<'a>(&mut self, plain: impl Iterator<Item = &'a [u8]>) -> Option<IoBuf> {
        let slices: SmallVec<[IoSlice<'a>; 8]> = plain.map(IoSlice::new).collect();
        let total: usize = slices.iter().map(|s| s.len()).sum();
        // The buffer limit is off: rustls takes it all.
        let n = self.conn.writer().write_vectored(&slices).unwrap_or(0);
        if n < total {
            // Not expected: write what is left piece by piece.
            let mut skip = n;
            for s in &slices {
                let rest = &s[skip.min(s.len())..];
                skip = skip.saturating_sub(s.len());
                let _ = self.conn.writer().write_all(rest);
            }
        }
        self.take_output()
    }
}

impl Net {
    /// Connection `idx`'s first event: held while its TLS handshake runs. Returns it back when
    /// there is no handshake to wait for.
    pub(super) fn hold_for_handshake(&mut self, r: &mut Reactor, idx: usize, first: NetEvent) -> Option<NetEvent> {
        let Some(t) = self.conns[idx].tls.as_mut() else { return Some(first) };
        if !t.conn.is_handshaking() {
            return Some(first);
        }
        t.pending = Some(first);
        self.tls_flush(r, idx); // a client's ClientHello
        None
    }

    /// Queues what rustls has to send on connection `idx` and starts sending it.
    pub(super) fn tls_flush(&mut self, r: &mut Reactor, idx: usize) {
        let c = &mut self.conns[idx];
        let Some(out) = c.tls.as_mut().and_then(|t| t.take_output()) else { return };
        let conn = Self::conn_id(r, idx, c.gen);
        self.queue_plain(r, idx, NetCmd::Send { conn, data: out });
        self.pump(r, idx);
    }

    /// Received ciphertext on TLS connection `idx`: handshake progress, then plaintext `Data`,
    /// then `Eof` if the peer sent `close_notify`.
    #[cold]
    pub(super) fn tls_input(&mut self, r: &mut Reactor, idx: usize, data: IoBuf) {
        let c = &mut self.conns[idx];
        let (ei, gen) = (c.endpoint, c.gen);
        let Some(t) = c.tls.as_mut() else { return };
        let mut rd: &[u8] = &data;
        let mut plain: Vec<u8> = Vec::new();
        let mut failed = None;
        while !rd.is_empty() && failed.is_none() {
            if let Err(e) = t.conn.read_tls(&mut rd) {
                failed = Some(e.to_string());
                break;
            }
            match t.conn.process_new_packets() {
                Ok(state) => {
                    let n = state.plaintext_bytes_to_read();
                    if n > 0 {
                        let at = plain.len();
                        plain.resize(at + n, 0);
                        if let Err(e) = t.conn.reader().read_exact(&mut plain[at..]) {
                            failed = Some(e.to_string());
                        }
                    }
                    t.peer_closed |= state.peer_has_closed();
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        drop(data); // the pool buffer goes home
        let was_handshaking = t.pending.is_some();
        let done = !t.conn.is_handshaking();
        let peer_closed = t.peer_closed;
        // Handshake replies, session tickets, and the alert of a failure.
        self.tls_flush(r, idx);
        if let Some(why) = failed {
            if was_handshaking {
                r.counters.tls_handshake_failed.add(1);
            } else {
                r.counters.tls_errors.add(1);
            }
            log::debug!("ringstage: worker {}: TLS: {why}", r.worker);
            if let Some(t) = self.conns[idx].tls.as_mut() {
                t.error = Some(why);
            }
            // Graceful: the alert goes out first. Nothing more is read.
            return self.begin_close(r, idx, true);
        }
        if was_handshaking && done {
            r.counters.tls_handshakes.add(1);
            let t = self.conns[idx].tls.as_mut().expect("checked");
            let first = t.pending.take().expect("held");
            let info = Box::new(t.info());
            self.announce(r, idx, first);
            let replica = self.conns[idx].replica;
            let conn = Self::conn_id(r, idx, gen);
            self.emit(r, ei, replica, NetEvent::Secured { conn, info });
        }
        let replica = self.conns[idx].replica;
        let conn = Self::conn_id(r, idx, gen);
        if !plain.is_empty() {
            self.emit(r, ei, replica, NetEvent::Data { conn, data: IoBuf::from(plain) });
        }
        if peer_closed && !self.conns[idx].rx.eof {
            self.conns[idx].rx.eof = true;
            self.emit(r, ei, replica, NetEvent::Eof { conn });
        }
    }

    /// A send command on TLS connection `idx`: its plaintext encrypted, the records queued.
    #[cold]
    pub(super) fn queue_tls(&mut self, r: &mut Reactor, idx: usize, cmd: NetCmd) {
        let c = &mut self.conns[idx];
        let conn = Self::conn_id(r, idx, c.gen);
        let Some(t) = c.tls.as_mut() else { return };
        let records = match cmd {
            NetCmd::Send { data, .. } => t.encrypt(std::iter::once(&data[..])),
            NetCmd::SendChain { data, .. } => t.encrypt(data.iter().map(|b| &b[..])),
            // Read and encrypted a chunk at a time as the send side gets to it (`tls_file_chunk`).
            cmd @ NetCmd::SendFile { .. } => return self.queue_plain(r, idx, cmd),
            NetCmd::Shutdown { .. } => {
                t.conn.send_close_notify();
                if let Some(out) = t.take_output() {
                    self.queue_plain(r, idx, NetCmd::Send { conn, data: out });
                }
                return self.queue_plain(r, idx, cmd);
            }
            cmd => return self.queue_plain(r, idx, cmd),
        };
        if let Some(data) = records {
            self.queue_plain(r, idx, NetCmd::Send { conn, data });
        }
    }

    /// The next piece of TLS connection `idx`'s file transfer: up to 256 KiB read from the
    /// file (`pread`: files sent on a TLS connection are encrypted in user space) and
    /// encrypted into the connection's output, so one chunk at a time is in memory. Returns
    /// false when the transfer failed (a read error, a file shorter than announced): the
    /// connection is then reset, as for a splice that fails after its head went out.
    pub(super) fn tls_file_chunk(&mut self, r: &mut Reactor, idx: usize) -> bool {
        use std::os::fd::AsRawFd;
        let c = &mut self.conns[idx];
        let Some(f) = c.tx.file.as_mut() else { return true };
        if f.remaining == 0 {
            c.tx.file = None;
            return true;
        }
        let n = (f.remaining as usize).min(FILE_CHUNK);
        let mut buf = vec![0u8; n];
        let read = ringstage_sys::fd::pread_exact(f.file.as_raw_fd(), &mut buf, f.offset);
        let failed = match read {
            Ok(got) if got == n => None,
            Ok(_) => Some("the file is shorter than announced".to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failed {
            log::debug!("ringstage: worker {}: TLS file send: {why}", r.worker);
            c.tx.file = None;
            self.begin_close_with(r, idx, false, true);
            return false;
        }
        f.offset += n as u64;
        f.remaining -= n as u64;
        let records = c.tls.as_mut().and_then(|t| t.encrypt(std::iter::once(&buf[..])));
        // The plaintext is counted out, the records in (sent and counted out as buffers).
        c.tx.unsent = c.tx.unsent.saturating_sub(n as u64);
        if let Some(records) = records {
            c.tx.unsent += records.len() as u64;
            c.tx.views += 1;
            c.tx.out.push(records);
        }
        true
    }

    /// A graceful close of TLS connection `idx`: `close_notify` goes out after the queued
    /// output.
    pub(super) fn tls_close_notify(&mut self, r: &mut Reactor, idx: usize) {
        let c = &mut self.conns[idx];
        let conn = Self::conn_id(r, idx, c.gen);
        let Some(t) = c.tls.as_mut().filter(|t| !t.handshaking()) else { return };
        t.conn.send_close_notify();
        if let Some(out) = t.take_output() {
            self.queue_plain(r, idx, NetCmd::Send { conn, data: out });
        }
    }

    /// The stream of TLS connection `idx` ended (TCP FIN). Returns whether that is a clean
    /// end (`close_notify` came first); if not, the connection is closed and counted.
    pub(super) fn tls_eof(&mut self, r: &mut Reactor, idx: usize) -> bool {
        let Some(t) = self.conns[idx].tls.as_mut() else { return true };
        if t.peer_closed {
            return true;
        }
        if t.handshaking() {
            r.counters.tls_handshake_failed.add(1);
            t.error = Some("the peer closed during the TLS handshake".into());
        } else {
            r.counters.tls_truncated.add(1);
        }
        self.begin_close(r, idx, true);
        false
    }

    /// A connection that closed before its handshake was done: a connector's stage hears
    /// `ConnectFailed` (it never heard `Connected`); a listener's hears nothing.
    pub(super) fn tls_unannounced(&mut self, r: &mut Reactor, ei: usize, t: Option<Box<TlsConn>>) -> bool {
        let Some(mut t) = t else { return false };
        match t.pending.take() {
            Some(NetEvent::Connected { connector, tag, .. }) => {
                let why = t.error.take().unwrap_or_else(|| "closed during the TLS handshake".into());
                let error = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, format!("TLS: {why}"));
                let ev = NetEvent::ConnectFailed { connector: ConnectorId(connector.0), tag, error };
                let e = &self.endpoints[ei];
                let replica = e.sink.pick(&ev) as u16;
                self.emit(r, ei, replica, ev);
                r.counters.connect_failed.add(1);
                true
            }
            Some(_) => true,
            None => false,
        }
    }
}
