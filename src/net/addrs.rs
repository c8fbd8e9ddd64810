//! [`ConnAddrs`]: the two ends of a connection, as its opening event names them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The peer's and the local address of a connection, in [`NetEvent::Opened`] and
/// [`NetEvent::Connected`](super::NetEvent::Connected). Compact (38 bytes, so the events stay
/// within a cache line): an IPv6 address's scope id and flow label are not kept. An IPv4 peer
/// of a dual-stack (`[::]`) listener is shown as IPv4.
///
/// - **Accepted**: the peer is read on the ring (`getsockopt(SO_PEERNAME)`, as a command on
///   the direct descriptor, linked before the first receive); the local address is the
///   listener's when it is bound to one address. For a listener on a wildcard address the
///   local address is `None` unless asked for with
///   [`ListenConfig::local_addrs`](super::ListenConfig::local_addrs) (Linux before 6.19
///   cannot read a direct descriptor's local address; that option pays an operation and
///   three syscalls per connection for it), or read with a `getsockname` when
///   [`RingConfig::fixed_files`](crate::runtime::RingConfig) is off. Unix domain connections
///   have neither.
/// - **Connected**: the peer is the address connected to, the local one is read once the
///   connect succeeded.
///
/// [`NetEvent::Opened`]: super::NetEvent::Opened
///
/// # Examples
///
/// ```
/// use ringstage::prelude::*;
///
/// fn on_event(ev: &NetEvent) {
///     if let NetEvent::Opened { conn, addrs, .. } = ev {
///         if let Some(peer) = addrs.peer() {
///             println!("{conn:?} from {peer}");
///         }
///     }
/// }
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ConnAddrs {
    /// IPv4 addresses in the first 4 bytes.
    ips: [[u8; 16]; 2],
    ports: [u16; 2],
    /// Per end (peer: bits 0-1, local: bits 2-3): present, IPv4.
    flags: u8,
}

const PRESENT: u8 = 1;
const V4: u8 = 2;

impl ConnAddrs {
    pub(crate) fn new(peer: Option<SocketAddr>, local: Option<SocketAddr>) -> ConnAddrs {
        let mut a = ConnAddrs::default();
        for (end, addr) in [peer, local].into_iter().enumerate() {
            let Some(addr) = addr else { continue };
            let ip = match addr.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            let mut flags = PRESENT;
            match ip {
                IpAddr::V4(v4) => {
                    a.ips[end][..4].copy_from_slice(&v4.octets());
                    flags |= V4;
                }
                IpAddr::V6(v6) => a.ips[end] = v6.octets(),
            }
            a.ports[end] = addr.port();
            a.flags |= flags << (2 * end);
        }
        a
    }

    fn end(&self, end: usize) -> Option<SocketAddr> {
        let flags = self.flags >> (2 * end);
        if flags & PRESENT == 0 {
            return None;
        }
        let b = self.ips[end];
        let ip = if flags & V4 != 0 {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(b))
        };
        Some(SocketAddr::new(ip, self.ports[end]))
    }

    /// The address of the other end (`None` for a Unix domain socket, or when the peer was
    /// gone before it could be read).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.end(0)
    }

    /// This end's address (`None` for a Unix domain socket, or for a connection accepted on a
    /// wildcard address into a direct descriptor: see the type's docs).
    pub fn local(&self) -> Option<SocketAddr> {
        self.end(1)
    }
}

impl fmt::Debug for ConnAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnAddrs").field("peer", &self.peer()).field("local", &self.local()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_mapped_ipv4_reads_as_ipv4() {
        let peer: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.0.0.7]:9".parse().unwrap();
        let a = ConnAddrs::new(Some(peer), Some(mapped));
        assert_eq!(a.peer(), Some(peer));
        assert_eq!(a.local(), Some("10.0.0.7:9".parse().unwrap()));
        assert_eq!(ConnAddrs::default().peer(), None);
        assert!(std::mem::size_of::<ConnAddrs>() <= 38);
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b = ConnAddrs::new(None, Some(v4));
        assert_eq!((b.peer(), b.local()), (None, Some(v4)));
        assert_eq!(format!("{b:?}"), "ConnAddrs { peer: None, local: Some(127.0.0.1:80) }");
    }
}
