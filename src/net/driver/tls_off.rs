//! Without the `tls` feature: a connection never has a TLS session, and these are the driver's
//! TLS entry points with nothing to do (each caller checks for a session first, or passes the
//! connection's `None` through).

use std::time::Instant;

use super::Net;
use crate::buf::IoBuf;
use crate::net::tls::TlsSetup;
use crate::net::{NetCmd, NetEvent};
use crate::reactor::Reactor;

/// Uninhabited: no connection has a TLS session.
pub(crate) enum TlsConn {}

impl TlsConn {
    pub(super) fn new(setup: &TlsSetup, _now: Instant) -> Result<Box<TlsConn>, std::convert::Infallible> {
        match *setup {}
    }

    pub(super) fn handshaking(&self) -> bool {
        match *self {}
    }

    pub(super) fn started(&self) -> Instant {
        match *self {}
    }

    pub(super) fn timed_out(&mut self) {
        match *self {}
    }
}

impl Net {
    pub(super) fn hold_for_handshake(&mut self, _r: &mut Reactor, _idx: usize, first: NetEvent) -> Option<NetEvent> {
        Some(first)
    }

    pub(super) fn tls_input(&mut self, _r: &mut Reactor, _idx: usize, _data: IoBuf) {}

    pub(super) fn queue_tls(&mut self, r: &mut Reactor, idx: usize, cmd: NetCmd) {
        self.queue_plain(r, idx, cmd);
    }

    pub(super) fn tls_file_chunk(&mut self, _r: &mut Reactor, _idx: usize) -> bool {
        true
    }

    pub(super) fn tls_close_notify(&mut self, _r: &mut Reactor, _idx: usize) {}

    pub(super) fn tls_eof(&mut self, _r: &mut Reactor, _idx: usize) -> bool {
        true
    }

    pub(super) fn tls_unannounced(&mut self, _r: &mut Reactor, _ei: usize, _t: Option<Box<TlsConn>>) -> bool {
        false
    }
}
