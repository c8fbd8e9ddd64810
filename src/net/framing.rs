//! Framing: a connection's stream of received views, cut into its protocol's frames.
//!
//! A [`Decoder`] says what is at the front of a connection's input: a frame and its length, or
//! that more bytes are needed (and, when its header says so, how many). A [`Framer`] drives it
//! for every connection of a handler: it keeps each connection's unfinished input, hands the
//! frames to the handler in order (several per receive when the client pipelines), and
//! applies a size limit.
//!
//! Costs. Frames that arrive whole in one receive are decoded straight from the pool buffer
//! and handed out as views of it: no copy, no allocation. Input that ends inside a frame is
//! copied out (so it does not pin a pool buffer while the rest of the frame is on its way)
//! into the connection's stash, where later receives are appended; the decoder is not called
//! again until the stash holds the length the frame needs, if it said. A frame gathered in the
//! stash is handed out as a view of the stash (one allocation for the stash's block header).
//! With the length known from a header, each byte is copied at most twice, so a frame of any
//! size costs O(n) in all; a frame whose length only its end tells (a line) is decoded again
//! from its start after each receive, O(n) per receive, bounded by the limit.

use super::{Conn, ConnMap};
use crate::buf::IoBuf;

/// What a [`Decoder`] found at the front of a connection's input.
#[derive(Debug)]
pub enum Decode<F> {
    /// A complete frame, which took the first `len` bytes of the input (at least one).
    Frame {
        /// The frame: typically views of the input (`input.slice(..len)`), no copy.
        frame: F,
        /// How many bytes of the input it took.
        len: usize,
    },
    /// No complete frame yet. `Some(n)`: the frame is `n` bytes in all, counted from the
    /// input's start (its header says so), and the decoder is not asked again before the
    /// input is that long. `None`: ask again when more bytes have come (the decoder then scans
    /// the frame's beginning again: give the length whenever the header tells it).
    Need(Option<usize>),
}

/// A protocol's framing: where its frames begin and end.
///
/// # Examples
///
/// Lines ending in `\n`:
///
/// ```
/// use ringstage::buf::IoBuf;
/// use ringstage::net::{Decode, Decoder};
///
/// struct Lines;
///
/// impl Decoder for Lines {
///     type Frame = IoBuf;
///     type Error = std::convert::Infallible;
///     fn decode(&mut self, input: &IoBuf) -> Result<Decode<IoBuf>, Self::Error> {
///         Ok(match input.iter().position(|&b| b == b'\n') {
///             Some(end) => Decode::Frame { frame: input.slice(..end), len: end + 1 },
///             None => Decode::Need(None),
///         })
///     }
/// }
/// ```
pub trait Decoder {
    /// What the handler gets.
    type Frame;
    /// Why input cannot be framed (the connection is then beyond repair: answer and close).
    type Error;

    /// Decodes the frame at the front of `input`, which starts at a frame boundary and is not
    /// empty.
    fn decode(&mut self, input: &IoBuf) -> Result<Decode<Self::Frame>, Self::Error>;
}

/// Whether a [`Framer`] goes on handing a connection's frames to the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Hand over the next frame.
    Continue,
    /// Stop after this frame: the rest of the input waits (the connection's later requests
    /// must wait behind a slow one) until [`Framer::resume`].
    Pause,
}

/// Why a connection's input could not be framed.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError<E> {
    /// The decoder refused the input.
    Decode(E),
    /// A frame is longer than the framer's limit (known from its header, or seen).
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl<E: std::fmt::Display> std::fmt::Display for FrameError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Decode(e) => write!(f, "{e}"),
            FrameError::TooLarge { limit } => write!(f, "a frame is longer than the limit of {limit} bytes"),
        }
    }
}

/// A connection's input that is not framed yet.
struct Pending {
    /// A frame's beginning, or frames held back by a pause.
    stash: Vec<u8>,
    /// The stash completes its first frame at this length (0: unknown).
    need: usize,
    paused: bool,
    /// Framing this connection failed: its further input is dropped.
    failed: bool,
}

/// A handler's framing state for all its connections: feed it each [`NetEvent::Data`] with
/// [`Framer::push`], and it calls you back with each complete frame, in order.
///
/// [`NetEvent::Data`]: super::NetEvent::Data
///
/// # Examples
///
/// A line server: each line is answered with its length; a line over 1 KiB ends the
/// connection.
///
/// ```
/// # use ringstage::buf::IoBuf;
/// # use ringstage::net::{Decode, Decoder};
/// # struct Lines;
/// # impl Decoder for Lines {
/// #     type Frame = IoBuf;
/// #     type Error = std::convert::Infallible;
/// #     fn decode(&mut self, input: &IoBuf) -> Result<Decode<IoBuf>, Self::Error> {
/// #         Ok(match input.iter().position(|&b| b == b'\n') {
/// #             Some(end) => Decode::Frame { frame: input.slice(..end), len: end + 1 },
/// #             None => Decode::Need(None),
/// #         })
/// #     }
/// # }
/// use ringstage::net::{Flow, Framer};
/// use ringstage::prelude::*;
///
/// struct LineLengths { lines: Framer<Lines>, net: Outbox<NetCmd> }
///
/// impl Handler for LineLengths {
///     type Event = NetEvent;
///     fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
///         match ev {
///             NetEvent::Data { conn, data } => {
///                 let net = &mut self.net;
///                 let framed = self.lines.push(conn, data, |_, line| {
///                     let reply = IoBuf::from(format!("{}\n", line.len()).into_bytes());
///                     net.send(NetCmd::Send { conn, data: reply });
///                     Flow::Continue
///                 });
///                 if framed.is_err() {
///                     self.net.send(NetCmd::Abort { conn });
///                 }
///             }
///             NetEvent::Eof { conn } => { self.net.send(NetCmd::Close { conn }); }
///             NetEvent::Closed { conn } => self.lines.remove(conn),
///             _ => {}
///         }
///     }
///     fn woken(&mut self, _cx: &mut Context<'_>) {
///         self.net.flush();
///     }
/// }
/// # let _ = |s: &mut Setup<'_>, net: StageId<NetCmd>, me: StageId<NetEvent>| LineLengths {
/// #     lines: Framer::new(Lines, 1024),
/// #     net: Outbox::with_waker(s.sink(net), s.waker(me)),
/// # };
/// ```
pub struct Framer<D: Decoder> {
    decoder: D,
    limit: usize,
    pending: ConnMap<Pending>,
    /// Memory held by all the connections' stashes.
    held: usize,
}

impl<D: Decoder> Framer<D> {
    /// A framer for `decoder`'s protocol whose frames may be at most `limit` bytes.
    pub fn new(decoder: D, limit: usize) -> Framer<D> {
        Framer { decoder, limit, pending: ConnMap::new(), held: 0 }
    }

    /// The decoder (for its state between frames).
    pub fn decoder(&mut self) -> &mut D {
        &mut self.decoder
    }

    /// Feeds `conn`'s received `data`: calls `f` with each complete frame, in order, until it
    /// returns [`Flow::Pause`] or no complete frame is left; what is left waits for more data
    /// (or for [`Framer::resume`]). `f` also gets the decoder. While paused, at most the
    /// framer's limit of input may wait; more is [`FrameError::TooLarge`].
    ///
    /// On an error the connection's input is dropped and nothing more of it is framed until
    /// [`Framer::remove`]: answer the client and close. Frames handed out before the error
    /// stay handed out.
    ///
    /// Hot path: when `data` holds whole frames and the connection nothing waiting, frames are
    /// views of `data`: no copy, no allocation.
    pub fn push(
        &mut self,
        conn: Conn,
        data: IoBuf,
        mut f: impl FnMut(&mut D, D::Frame) -> Flow,
    ) -> Result<(), FrameError<D::Error>> {
        let Some(p) = self.pending.get_mut(conn) else {
            let r = frames(&mut self.decoder, data, self.limit, &mut f);
            return self.keep(conn, r);
        };
        if p.failed {
            return Ok(()); // the connection's framing ended with an error: drop what follows
        }
        // Unpaused, the stash holds the beginning of one frame, no longer than the limit (see
        // `frames`); paused, what waits behind the pause may be no more than the limit either.
        if p.paused && p.stash.len() + data.len() > self.limit {
            self.fail(conn);
            return Err(FrameError::TooLarge { limit: self.limit });
        }
        let before = p.stash.capacity();
        p.stash.extend_from_slice(&data);
        self.held += p.stash.capacity() - before;
        if p.paused || p.stash.len() < p.need {
            return Ok(());
        }
        self.drain(conn, &mut f)
    }

    /// Goes on handing `conn`'s frames to `f` after a [`Flow::Pause`]. Does nothing for a
    /// connection with nothing waiting.
    pub fn resume(
        &mut self,
        conn: Conn,
        mut f: impl FnMut(&mut D, D::Frame) -> Flow,
    ) -> Result<(), FrameError<D::Error>> {
        let Some(p) = self.pending.get_mut(conn).filter(|p| !p.failed) else { return Ok(()) };
        p.paused = false;
        if p.stash.is_empty() {
            self.remove(conn); // back to framing straight from the receive buffers
            return Ok(());
        }
        if p.stash.len() < p.need {
            return Ok(());
        }
        self.drain(conn, &mut f)
    }

    /// Whether `conn`'s frames are paused.
    pub fn is_paused(&self, conn: Conn) -> bool {
        self.pending.get(conn).is_some_and(|p| p.paused && !p.failed)
    }

    /// Bytes of `conn`'s input waiting to be framed.
    pub fn buffered(&self, conn: Conn) -> usize {
        self.pending.get(conn).map_or(0, |p| p.stash.len())
    }

    /// Memory held by every connection's waiting input, in bytes (for a limit on the total,
    /// as Redis's `maxmemory-clients`).
    pub fn held(&self) -> usize {
        self.held
    }

    /// The connections with input waiting, and how much memory each holds.
    pub fn holders(&self) -> impl Iterator<Item = (Conn, usize)> + '_ {
        self.pending.iter().map(|(c, p)| (c, p.stash.capacity()))
    }

    /// Forgets `conn`'s waiting input (on [`NetEvent::Closed`](super::NetEvent::Closed), or
    /// to stop framing a connection that is being closed).
    pub fn remove(&mut self, conn: Conn) {
        if let Some(p) = self.pending.remove(conn) {
            self.held -= p.stash.capacity();
        }
    }

    /// Frames what `conn`'s stash holds.
    fn drain(&mut self, conn: Conn, f: &mut impl FnMut(&mut D, D::Frame) -> Flow) -> Result<(), FrameError<D::Error>> {
        let p = self.pending.remove(conn).expect("a connection with input waiting");
        self.held -= p.stash.capacity();
        // The stash becomes one block the frames are views of.
        let r = frames(&mut self.decoder, IoBuf::from(p.stash), self.limit, f);
        self.keep(conn, r)
    }

    /// Keeps what [`frames`] left of `conn`'s input, or forgets it on an error.
    fn keep(&mut self, conn: Conn, r: Result<Left, FrameError<D::Error>>) -> Result<(), FrameError<D::Error>> {
        let left = match r {
            Ok(left) => left,
            Err(e) => {
                self.fail(conn);
                return Err(e);
            }
        };
        if left.rest.is_empty() && !left.paused {
            return Ok(());
        }
        // Sized for what is here, not for the length a header announced: a client announcing a
        // large frame gets memory as its bytes arrive.
        let mut stash = Vec::with_capacity(left.rest.len().max(64));
        stash.extend_from_slice(&left.rest);
        self.held += stash.capacity();
        self.pending.insert(conn, Pending { stash, need: left.need, paused: left.paused, failed: false });
        Ok(())
    }

    /// Drops `conn`'s input after an error, and keeps it from being framed again until it is
    /// removed.
    fn fail(&mut self, conn: Conn) {
        self.remove(conn);
        self.pending.insert(conn, Pending { stash: Vec::new(), need: 0, paused: false, failed: true });
    }
}

impl<D: Decoder + std::fmt::Debug> std::fmt::Debug for Framer<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framer")
            .field("decoder", &self.decoder)
            .field("limit", &self.limit)
            .field("connections_waiting", &self.pending.len())
            .field("held", &self.held)
            .finish()
    }
}

/// What framing one run of input left.
struct Left {
    /// The input after the last frame handed out.
    rest: IoBuf,
    /// The length the first frame of `rest` needs (0: unknown).
    need: usize,
    paused: bool,
}

/// Hands the frames at the front of `input` to `f` until it pauses or none is complete.
fn frames<D: Decoder>(
    decoder: &mut D,
    mut input: IoBuf,
    limit: usize,
    f: &mut impl FnMut(&mut D, D::Frame) -> Flow,
) -> Result<Left, FrameError<D::Error>> {
    while !input.is_empty() {
        match decoder.decode(&input).map_err(FrameError::Decode)? {
            Decode::Frame { frame, len } => {
                assert!(len > 0 && len <= input.len(), "a decoder took {len} of {} bytes", input.len());
                input.advance(len);
                if f(decoder, frame) == Flow::Pause {
                    return Ok(Left { rest: input, need: 0, paused: true });
                }
            }
            Decode::Need(n) => {
                let need = n.unwrap_or(0);
                if need > limit || input.len() > limit {
                    return Err(FrameError::TooLarge { limit });
                }
                return Ok(Left { rest: input, need, paused: false });
            }
        }
    }
    Ok(Left { rest: input, need: 0, paused: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<len byte><payload>` frames, and lines ending in `\n` after a `L` byte: enough to
    /// exercise known and unknown lengths.
    struct Test;

    impl Decoder for Test {
        type Frame = IoBuf;
        type Error = &'static str;
        fn decode(&mut self, input: &IoBuf) -> Result<Decode<IoBuf>, &'static str> {
            match input[0] {
                b'L' => Ok(match input.iter().position(|&b| b == b'\n') {
                    Some(end) => Decode::Frame { frame: input.slice(1..end), len: end + 1 },
                    None => Decode::Need(None),
                }),
                b'!' => Err("bad frame"),
                n => {
                    let total = 1 + usize::from(n - b'0');
                    Ok(if input.len() >= total {
                        Decode::Frame { frame: input.slice(1..total), len: total }
                    } else {
                        Decode::Need(Some(total))
                    })
                }
            }
        }
    }

    fn conn(i: u32) -> Conn {
        Conn { worker: 0, idx: i, gen: 1 }
    }

    fn feed(
        fr: &mut Framer<Test>,
        c: Conn,
        bytes: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), FrameError<&'static str>> {
        fr.push(c, IoBuf::copy_from_slice(bytes), |_, f| {
            out.push(f.to_vec());
            Flow::Continue
        })
    }

    #[test]
    fn pipelined_frames_come_out_in_order_as_views_of_the_receive() {
        let mut fr = Framer::new(Test, 64);
        let data = IoBuf::copy_from_slice(b"3abc2deLhello\n");
        let base = data.as_ptr() as usize;
        let mut got = Vec::new();
        fr.push(conn(1), data, |_, f| {
            got.push((f.as_ptr() as usize - base, f.to_vec()));
            Flow::Continue
        })
        .unwrap();
        assert_eq!(got, [(1, b"abc".to_vec()), (5, b"de".to_vec()), (8, b"hello".to_vec())], "views, no copies");
        assert_eq!((fr.buffered(conn(1)), fr.held()), (0, 0));
    }

    #[test]
    fn frames_split_anywhere_across_receives_come_out_whole() {
        let stream = b"3abc5helloLone line\n2xy";
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let mut fr = Framer::new(Test, 64);
                let mut got = Vec::new();
                for part in [&stream[..cut], &stream[cut..cut2], &stream[cut2..]] {
                    if !part.is_empty() {
                        feed(&mut fr, conn(1), part, &mut got).unwrap();
                    }
                }
                let want: [&[u8]; 4] = [b"abc", b"hello", b"one line", b"xy"];
                assert_eq!(got, want, "cut at {cut} and {cut2}");
                assert_eq!(fr.held(), 0, "nothing left held");
            }
        }
    }

    #[test]
    fn a_known_length_is_not_decoded_again_before_it_has_arrived() {
        struct Counting(usize);
        impl Decoder for Counting {
            type Frame = usize;
            type Error = ();
            fn decode(&mut self, input: &IoBuf) -> Result<Decode<usize>, ()> {
                self.0 += 1;
                Ok(if input.len() >= 1000 {
                    Decode::Frame { frame: 1000, len: 1000 }
                } else {
                    Decode::Need(Some(1000))
                })
            }
        }
        let mut fr = Framer::new(Counting(0), 4096);
        let mut frames = 0;
        for _ in 0..100 {
            fr.push(conn(2), IoBuf::copy_from_slice(&[0; 10]), |_, _| {
                frames += 1;
                Flow::Continue
            })
            .unwrap();
        }
        assert_eq!(frames, 1);
        assert_eq!(fr.decoder().0, 2, "decoded when the frame began and when it was complete");
    }

    #[test]
    fn a_pause_holds_the_rest_until_resumed() {
        let mut fr = Framer::new(Test, 64);
        let mut got = Vec::new();
        fr.push(conn(3), IoBuf::copy_from_slice(b"1a1b1c"), |_, f| {
            got.push(f.to_vec());
            if f[..] == *b"a" {
                Flow::Pause
            } else {
                Flow::Continue
            }
        })
        .unwrap();
        assert_eq!(got, [b"a".to_vec()]);
        assert!(fr.is_paused(conn(3)));
        feed(&mut fr, conn(3), b"1d", &mut got).unwrap();
        assert_eq!(got.len(), 1, "held behind the pause");
        fr.resume(conn(3), |_, f| {
            got.push(f.to_vec());
            Flow::Continue
        })
        .unwrap();
        let want: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
        assert_eq!(got, want);
        assert!(!fr.is_paused(conn(3)));
        assert_eq!(fr.held(), 0);
    }

    #[test]
    fn limits_and_decoder_errors_end_the_connections_framing_only() {
        let mut fr = Framer::new(Test, 8);
        let mut got = Vec::new();
        // A header announcing more than the limit is refused at once.
        assert_eq!(feed(&mut fr, conn(4), b"9", &mut got), Err(FrameError::TooLarge { limit: 8 }));
        // So is a frame of unknown length that grows past it.
        feed(&mut fr, conn(5), b"Lsome", &mut got).unwrap();
        assert_eq!(feed(&mut fr, conn(5), b"more", &mut got), Err(FrameError::TooLarge { limit: 8 }));
        // A decoder's refusal, after the frames before it.
        assert_eq!(feed(&mut fr, conn(6), b"1x!", &mut got), Err(FrameError::Decode("bad frame")));
        assert_eq!(got, [b"x".to_vec()]);
        // A failed connection's later input is not framed; others go on.
        feed(&mut fr, conn(6), b"1y", &mut got).unwrap();
        feed(&mut fr, conn(7), b"1z", &mut got).unwrap();
        assert_eq!(got, [b"x".to_vec(), b"z".to_vec()]);
        for c in 4..=7 {
            fr.remove(conn(c));
        }
        assert_eq!(fr.held(), 0);
        // Removed, a connection id starts afresh.
        feed(&mut fr, conn(6), b"1w", &mut got).unwrap();
        assert_eq!(got.last().unwrap(), b"w");
    }
}
