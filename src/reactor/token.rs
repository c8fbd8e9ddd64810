//! Typed `user_data`: what a completion is for.
//!
//! ```text
//!  63        56 55                 32 31                               0
//! ┌────────────┬─────────────────────┬──────────────────────────────────┐
//! │   OpKind   │ generation (24 bit) │   key (a slab index: a connection, │
//! │            │                     │   an endpoint, a file op)          │
//! └────────────┴─────────────────────┴──────────────────────────────────┘
//! ```
//!
//! The key names the record the driver keeps for the operation; the generation tells a
//! completion of a record's earlier tenant (a reused connection slot) from a current one.

/// What an operation on the ring is, and so which driver its completion goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum OpKind {
    /// The worker's doorbell read (its eventfd): another worker has work for it.
    Doorbell = 1,
    /// A listener's accept (multishot or single).
    Accept,
    /// The timer after which a listener that backed off accepts again.
    Backoff,
    /// A connection's multishot receive.
    Recv,
    /// A connection's send (gathered, or zero copy).
    Send,
    /// An `ASYNC_CANCEL`, or another operation whose completion needs nothing done.
    Ignore,
    /// A connection's close.
    Close,
    /// The file-to-pipe half of a splice.
    SpliceIn,
    /// The pipe-to-socket half of a splice.
    SpliceOut,
    /// A connection's `shutdown(SHUT_WR)`.
    Shutdown,
    /// An outbound connect.
    Connect,
    /// A file operation of the fs stage.
    File,
    /// A UDP socket's multishot `RECVMSG` (key: the socket's id).
    UdpRecv,
    /// A UDP `SENDMSG` (key: the socket's id above 16 bits, its send slot below).
    UdpSend,
    /// An accepted connection's `getsockopt(SO_PEERNAME)`.
    PeerName,
    /// An accepted connection's direct descriptor installed in the process's table, to read
    /// its local address.
    FdInstall,
}

impl OpKind {
    fn from_u8(v: u8) -> Option<OpKind> {
        use OpKind::*;
        Some(match v {
            1 => Doorbell,
            2 => Accept,
            3 => Backoff,
            4 => Recv,
            5 => Send,
            6 => Ignore,
            7 => Close,
            8 => SpliceIn,
            9 => SpliceOut,
            10 => Shutdown,
            11 => Connect,
            12 => File,
            13 => UdpRecv,
            14 => UdpSend,
            15 => PeerName,
            16 => FdInstall,
            _ => return None,
        })
    }
}

/// The bits of a generation a token keeps.
const GEN_MASK: u32 = 0xff_ffff;

/// An operation's identity in its SQE's `user_data` and its CQE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: OpKind,
    pub(crate) key: u32,
    /// The low 24 bits of the record's generation.
    pub(crate) gen: u32,
}

impl Token {
    #[inline]
    pub(crate) fn new(kind: OpKind, key: usize, gen: u32) -> Token {
        Token { kind, key: key as u32, gen: gen & GEN_MASK }
    }

    /// A token for an operation whose completion is ignored (a cancel, a linked timeout).
    pub(crate) const IGNORE: Token = Token { kind: OpKind::Ignore, key: 0, gen: 0 };

    #[inline]
    pub(crate) fn encode(self) -> u64 {
        (self.kind as u64) << 56 | u64::from(self.gen) << 32 | u64::from(self.key)
    }

    /// The token of a completion's `user_data`; `None` for one this crate did not make.
    #[inline]
    pub(crate) fn decode(ud: u64) -> Option<Token> {
        let kind = OpKind::from_u8((ud >> 56) as u8)?;
        Some(Token { kind, key: ud as u32, gen: (ud >> 32) as u32 & GEN_MASK })
    }

    /// Whether this token is for the record of generation `gen` (full width).
    #[inline]
    pub(crate) fn is_for(self, gen: u32) -> bool {
        gen & GEN_MASK == self.gen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_generations_wrap_at_24_bits() {
        for kind in [OpKind::Doorbell, OpKind::Recv, OpKind::File, OpKind::UdpRecv, OpKind::UdpSend] {
            for (key, gen) in [(0usize, 0u32), (u32::MAX as usize, GEN_MASK), (7, 1 << 24 | 5)] {
                let t = Token::new(kind, key, gen);
                assert_eq!(Token::decode(t.encode()), Some(t));
                assert!(t.is_for(gen), "{kind:?} {key} {gen}");
                assert!(!t.is_for(gen.wrapping_add(1)));
            }
        }
        assert_eq!(Token::decode(0), None, "user_data 0 is nobody's");
        assert_eq!(Token::decode(99 << 56), None);
    }
}
