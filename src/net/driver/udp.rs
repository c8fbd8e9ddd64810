//! UDP: a socket's multishot `RECVMSG` into the worker's buffer pool (the kernel's
//! `io_uring_recvmsg_out` header parsed by the io-uring crate's `RecvMsgOut`), and its
//! `SENDMSG`s, each from a reusable send slot that holds the message header, the destination
//! and the view until the kernel has them.

use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

use io_uring::{cqueue, opcode, types};

use super::{more, Net};
use crate::buf::IoBuf;
use crate::net::{NetEvent, Udp, UdpConfig};
use crate::reactor::{OpKind, Reactor, Token};
use crate::stage::Sink;

/// The most datagrams one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS` is 64 on older
/// kernels, 128 on newer).
const MAX_SEGMENTS: usize = 64;

/// The name room a receive asks for: any IPv4 or IPv6 address.
const NAME_ROOM: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// One worker's socket of a UDP declaration.
pub(crate) struct UdpSocket {
    id: usize,
    worker: u16,
    fd: OwnedFd,
    pub(super) sink: Sink<NetEvent>,
    local: SocketAddr,
    /// An IPv6 socket that takes IPv4: IPv4 destinations are sent to as `::ffff:a.b.c.d`.
    dual: bool,
    /// The kernel segments sends (`UDP_SEGMENT`).
    gso: bool,
    /// What the multishot receive takes its name and control room from (boxed: the kernel
    /// reads it at submission, and the parser reads it back at each completion).
    rx_hdr: Box<libc::msghdr>,
    armed: bool,
    pub(super) starved: bool,
    /// Boxed: an SQE points into its slot until it is submitted, and a slot added meanwhile
    /// may move the vector.
    #[allow(clippy::vec_box)]
    slots: Vec<Box<SendSlot>>,
    free: Vec<u16>,
    max_in_flight: usize,
}

/// A send in flight: the kernel reads `hdr`, `name`, `iov` and `cmsg` when it issues the
/// send, and `data`'s bytes until it completes. Boxed, so growing the slot list moves none.
struct SendSlot {
    hdr: libc::msghdr,
    name: libc::sockaddr_storage,
    iov: libc::iovec,
    cmsg: SegmentCmsg,
    data: Option<IoBuf>,
    to: SocketAddr,
}

impl SendSlot {
    fn new() -> SendSlot {
        SendSlot {
            // SAFETY: msghdr is plain data (pointers and lengths); all-zero is a valid value.
            hdr: unsafe { std::mem::zeroed() },
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
            name: unsafe { std::mem::zeroed() },
            iov: libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 },
            // SAFETY: cmsghdr is plain data (a length and two ints, maybe padding); all-zero is
            // a valid value.
            cmsg: SegmentCmsg { hdr: unsafe { std::mem::zeroed() }, size: 0, _pad: [0; 6] },
            data: None,
            to: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

/// A `UDP_SEGMENT` control message: a header and the segment size, padded to
/// `CMSG_SPACE(2)`.
#[repr(C)]
struct SegmentCmsg {
    hdr: libc::cmsghdr,
    size: u16,
    _pad: [u8; 6],
}

impl UdpSocket {
    pub(crate) fn new(
        id: usize,
        worker: usize,
        fd: OwnedFd,
        local: SocketAddr,
        cfg: &UdpConfig,
        sink: Sink<NetEvent>,
    ) -> io::Result<UdpSocket> {
        let dual = local.is_ipv6() && !ringstage_sys::udp::v6_only(fd.as_raw_fd())?;
        let gso = ringstage_sys::udp::gso_supported(fd.as_raw_fd());
        // SAFETY: msghdr is plain data (pointers and lengths); all-zero is a valid value.
        let mut rx_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        rx_hdr.msg_namelen = NAME_ROOM as libc::socklen_t;
        Ok(UdpSocket {
            id,
            worker: worker as u16,
            fd,
            sink,
            local,
            dual,
            gso,
            rx_hdr,
            armed: false,
            starved: false,
            slots: Vec::new(),
            free: Vec::new(),
            max_in_flight: cfg.sends_in_flight,
        })
    }

    pub(super) fn id(&self) -> usize {
        self.id
    }

    fn udp(&self) -> Udp {
        Udp { worker: self.worker, id: self.id as u16 }
    }

    /// `to` as this socket can send to it: IPv4 mapped into IPv6 on a dual-stack socket, an
    /// error naming both for a family it cannot reach or port 0.
    fn destination(&self, to: SocketAddr) -> io::Result<SocketAddr> {
        let unreachable = |why: &str| {
            let msg = format!("cannot send to {to} from the UDP socket on {}: {why}", self.local);
            Err(io::Error::new(io::ErrorKind::InvalidInput, msg))
        };
        if to.port() == 0 {
            return unreachable("port 0");
        }
        match (to, self.local) {
            (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => Ok(to),
            (SocketAddr::V4(a), SocketAddr::V6(_)) if self.dual => {
                Ok(SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0)))
            }
            (SocketAddr::V4(_), SocketAddr::V6(_)) => unreachable("an IPv6-only socket"),
            (SocketAddr::V6(_), SocketAddr::V4(_)) => unreachable("an IPv4 socket"),
        }
    }
}

/// The source of a datagram as the application sees it: an IPv4 peer of a dual-stack socket
/// as IPv4, as it would name it.
fn source(name: &[u8]) -> io::Result<SocketAddr> {
    Ok(match ringstage_sys::socket::from_bytes(name)? {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => SocketAddr::V6(a),
        },
        v4 => v4,
    })
}

impl Net {
    /// The index space of `emit` past the endpoints: UDP socket `id` is `endpoints + id`.
    fn udp_dest(&self, id: usize) -> usize {
        self.endpoints.len() + id
    }

    /// Arms every UDP socket's receive (at start).
    pub(super) fn start_udp(&mut self, r: &mut Reactor) -> io::Result<()> {
        for id in 0..self.udp.len() {
            if self.udp[id].is_some() {
                self.arm_udp_recv(r, id)?;
            }
        }
        Ok(())
    }

    pub(super) fn arm_udp_recv(&mut self, r: &mut Reactor, id: usize) -> io::Result<()> {
        let Some(s) = self.udp[id].as_mut() else { return Ok(()) };
        let hdr: *const libc::msghdr = &*s.rx_hdr;
        // MSG_TRUNC: the header's payload length is the datagram's full length.
        let sqe = opcode::RecvMsgMulti::new(types::Fd(s.fd.as_raw_fd()), hdr, r.pool.bgid())
            .flags(libc::MSG_TRUNC as u32)
            .build()
            .user_data(Token::new(OpKind::UdpRecv, id, 0).encode());
        // SAFETY: the message header is boxed in the socket, which lives as long as the
        // worker's ring; the kernel reads only its name and control room.
        unsafe { r.push(&[sqe]) }?;
        s.armed = true;
        r.counters.io_started.add(1);
        Ok(())
    }

    pub(super) fn on_udp_recv(&mut self, r: &mut Reactor, id: usize, res: i32, flags: u32) -> io::Result<()> {
        // SAFETY: the kernel filled buffer `bid` of this worker's pool with `res` bytes and hands
        // it over with this completion: it is out of the ring and nobody else's.
        let buf = cqueue::buffer_select(flags).map(|bid| unsafe { r.pool.take(bid, res.max(0) as usize) });
        let dest = self.udp_dest(id);
        let Some(s) = self.udp.get_mut(id).and_then(Option::as_mut) else { return Ok(()) };
        let more = more(flags);
        if !more {
            s.armed = false;
            r.counters.io_finished.add(1);
        }
        let socket = s.udp();
        let mut event = None;
        match res {
            n if n >= 0 => match buf {
                None => {} // a completion without a buffer carries nothing
                Some(buf) => match types::RecvMsgOut::parse(&buf, &s.rx_hdr) {
                    Ok(out) => match source(out.name_data()) {
                        Ok(from) if out.is_payload_truncated() => {
                            r.counters.udp_truncated.add(1);
                            event =
                                Some(NetEvent::Truncated { socket, from, len: out.incoming_payload_len() as usize });
                        }
                        Ok(from) => {
                            let at = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
                            let data = buf.slice(at..at + out.payload_data().len());
                            r.counters.udp_received.add(1);
                            event = Some(NetEvent::Datagram { socket, from, data });
                        }
                        Err(e) => {
                            log::warn!("ringstage: worker {}: UDP datagram from an unknown source: {e}", r.worker)
                        }
                    },
                    Err(()) => log::warn!("ringstage: worker {}: UDP receive shorter than its header", r.worker),
                },
            },
            e if -e == libc::ENOBUFS => {
                r.counters.enobufs.add(1);
                if !r.draining {
                    s.starved = true;
                    self.udp_starved.push(id);
                    r.pool.set_starved(true);
                }
            }
            e if -e == libc::ECANCELED => {}
            e => log::warn!(
                "ringstage: worker {}: UDP receive on {}: {}",
                r.worker,
                s.local,
                io::Error::from_raw_os_error(-e)
            ),
        }
        let rearm = !more && !s.starved && !r.draining;
        if let Some(ev) = event {
            let replica = self.udp[id].as_ref().map_or(0, |s| s.sink.pick(&ev)) as u16;
            self.emit(r, dest, replica, ev);
        }
        if rearm {
            self.arm_udp_recv(r, id)?;
        }
        Ok(())
    }

    /// Re-arms UDP receives that stopped for lack of buffers; returns how many buffers they
    /// may take of `free` (one each).
    pub(super) fn rearm_udp_starved(&mut self, r: &mut Reactor, mut free: usize) -> usize {
        while free > 0 {
            let Some(id) = self.udp_starved.pop() else { break };
            let Some(s) = self.udp[id].as_mut().filter(|s| s.starved) else { continue };
            s.starved = false;
            if !r.draining {
                if let Err(e) = self.arm_udp_recv(r, id) {
                    log::warn!("ringstage: worker {}: UDP receive not re-armed: {e}", r.worker);
                }
                free -= 1;
            }
        }
        free
    }

    /// `NetCmd::SendTo` (`segment` 0) and `NetCmd::SendSegments`.
    pub(super) fn send_to(&mut self, r: &mut Reactor, socket: Udp, to: SocketAddr, data: IoBuf, segment: u16) {
        let id = socket.id as usize;
        let Some(s) = self.udp.get(id).and_then(Option::as_ref) else { return };
        let checked = s.destination(to).and_then(|dest| {
            if segment == 0 {
                return Ok(dest);
            }
            let n = data.len().div_ceil(usize::from(segment));
            if n > MAX_SEGMENTS {
                let msg =
                    format!("{} bytes in segments of {segment} are {n} datagrams; at most {MAX_SEGMENTS}", data.len());
                return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
            }
            Ok(dest)
        });
        let dest = match checked {
            Ok(dest) => dest,
            Err(error) => return self.send_failed(r, id, to, error),
        };
        if segment == 0 || s.gso || data.len() <= usize::from(segment) {
            return self.submit_datagram(r, id, to, dest, data, segment);
        }
        // No GSO: the segments one by one.
        let mut rest = data;
        while !rest.is_empty() {
            let part = rest.split_to(rest.len().min(usize::from(segment)));
            self.submit_datagram(r, id, to, dest, part, 0);
        }
    }

    fn submit_datagram(
        &mut self,
        r: &mut Reactor,
        id: usize,
        to: SocketAddr,
        dest: SocketAddr,
        data: IoBuf,
        segment: u16,
    ) {
        let Some(s) = self.udp[id].as_mut() else { return };
        let slot = match s.free.pop() {
            Some(i) => usize::from(i),
            None if s.slots.len() < s.max_in_flight => {
                s.slots.push(Box::new(SendSlot::new()));
                s.slots.len() - 1
            }
            None => {
                let msg = format!(
                    "{} UDP sends in flight on {}: the limit (UdpConfig::sends_in_flight)",
                    s.max_in_flight, s.local
                );
                return self.send_failed(r, id, to, io::Error::new(io::ErrorKind::WouldBlock, msg));
            }
        };
        let fd = s.fd.as_raw_fd();
        let p = &mut *s.slots[slot];
        let (name, name_len) = ringstage_sys::socket::to_raw(&dest);
        p.name = name;
        p.iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
        p.hdr.msg_name = (&mut p.name as *mut libc::sockaddr_storage).cast();
        p.hdr.msg_namelen = name_len;
        p.hdr.msg_iov = &mut p.iov;
        p.hdr.msg_iovlen = 1;
        if segment > 0 {
            p.cmsg.hdr.cmsg_len = std::mem::size_of::<libc::cmsghdr>() + std::mem::size_of::<u16>();
            p.cmsg.hdr.cmsg_level = libc::SOL_UDP;
            p.cmsg.hdr.cmsg_type = libc::UDP_SEGMENT;
            p.cmsg.size = segment;
            p.hdr.msg_control = (&mut p.cmsg as *mut SegmentCmsg).cast();
            p.hdr.msg_controllen = std::mem::size_of::<SegmentCmsg>();
        } else {
            p.hdr.msg_control = std::ptr::null_mut();
            p.hdr.msg_controllen = 0;
        }
        p.data = Some(data);
        p.to = to;
        let sqe = opcode::SendMsg::new(types::Fd(fd), &p.hdr)
            .build()
            .user_data(Token::new(OpKind::UdpSend, id << 16 | slot, 0).encode());
        // SAFETY: the header, address, iovec and control message are in this slot, boxed (it
        // stays put as slots are added) and not reused until this send's completion frees it;
        // the slot keeps the view the iovec points into until then.
        match unsafe { r.push(&[sqe]) } {
            Ok(()) => r.counters.io_started.add(1),
            Err(e) => {
                p.data = None;
                s.free.push(slot as u16);
                self.send_failed(r, id, to, e);
            }
        }
    }

    pub(super) fn on_udp_send(&mut self, r: &mut Reactor, key: usize, res: i32) {
        let (id, slot) = (key >> 16, key & 0xffff);
        r.counters.io_finished.add(1);
        let Some(s) = self.udp.get_mut(id).and_then(Option::as_mut) else { return };
        let p = &mut s.slots[slot];
        p.data = None; // the kernel is done with the bytes
        let to = p.to;
        s.free.push(slot as u16);
        if res >= 0 {
            r.counters.udp_sent.add(1);
        } else {
            self.send_failed(r, id, to, io::Error::from_raw_os_error(-res));
        }
    }

    fn send_failed(&mut self, r: &mut Reactor, id: usize, to: SocketAddr, error: io::Error) {
        r.counters.udp_send_failed.add(1);
        let Some(s) = self.udp[id].as_ref() else { return };
        let ev = NetEvent::SendToFailed { socket: s.udp(), to, error };
        let replica = s.sink.pick(&ev) as u16;
        let dest = self.udp_dest(id);
        self.emit(r, dest, replica, ev);
    }

    /// The drain: stop receiving datagrams (sends in flight finish).
    pub(super) fn stop_udp(&mut self, r: &mut Reactor) {
        for (id, s) in self.udp.iter().enumerate() {
            if s.as_ref().is_some_and(|s| s.armed) {
                let _ = r.cancel(Token::new(OpKind::UdpRecv, id, 0));
            }
        }
        self.udp_starved.clear();
    }
}
