//! A streaming reader of chunked request bodies (RFC 9112 §7.1) that discards the data: the
//! static server has no use for a body, but must find where it ends to read the next request.
//! Bytes are looked at once, as they arrive, whatever the receive boundaries; nothing is
//! buffered.

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// A chunk extension, up to CR.
    Ext,
    /// LF ending the size line.
    SizeLf,
    /// Chunk data still to skip.
    Data(u64),
    /// CR, then LF, after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    LineStart,
    /// Inside a trailer field line.
    Trailer,
    /// LF ending a trailer line; `true` when the line was empty (the end of the body).
    LineLf(bool),
}

/// Where a body stands after some bytes were fed in.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// All bytes were consumed; the body goes on.
    More,
    /// The body ended after this many of the bytes; the rest is the next request.
    Done(usize),
    /// Malformed framing (400) or a body over the limit (413).
    Error(u16),
}

/// The decoding state of one chunked body.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u32,
    line: usize,
    total: u64,
    max: u64,
}

impl Chunked {
    /// A body of at most `max` data bytes (the sum of the chunk sizes).
    pub fn new(max: u64) -> Chunked {
        Chunked { state: State::Size, size: 0, digits: 0, line: 0, total: 0, max }
    }

    /// Consumes body bytes from the start of `data`.
    pub fn feed(&mut self, data: &[u8]) -> Feed {
        let mut i = 0;
        while i < data.len() {
            if let State::Data(left) = self.state {
                // Skip chunk data in bulk.
                let k = left.min((data.len() - i) as u64);
                i += k as usize;
                self.state = if k == left { State::DataCr } else { State::Data(left - k) };
                continue;
            }
            let b = data[i];
            i += 1;
            self.line += 1;
            if self.line > MAX_LINE {
                return Feed::Error(400);
            }
            self.state = match (self.state, b) {
                (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
                (State::Size, b';') if self.digits > 0 => State::Ext,
                (State::Size, _) => {
                    let Some(d) = (b as char).to_digit(16) else { return Feed::Error(400) };
                    self.digits += 1;
                    // 16 hex digits overflow u64; far smaller sizes already break the limit.
                    if self.digits > 15 {
                        return Feed::Error(413);
                    }
                    self.size = self.size * 16 + u64::from(d);
                    State::Size
                }
                (State::Ext, b'\r') => State::SizeLf,
                (State::Ext, b'\n') => return Feed::Error(400),
                (State::Ext, _) => State::Ext,
                (State::SizeLf, b'\n') => {
                    self.line = 0;
                    let n = std::mem::take(&mut self.size);
                    self.digits = 0;
                    self.total = self.total.saturating_add(n);
                    if self.total > self.max {
                        return Feed::Error(413);
                    }
                    if n == 0 {
                        State::LineStart
                    } else {
                        State::Data(n)
                    }
                }
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.line = 0;
                    State::Size
                }
                (State::LineStart, b'\r') => State::LineLf(true),
                (State::LineStart | State::Trailer, b'\n') => return Feed::Error(400),
                (State::Trailer, b'\r') => State::LineLf(false),
                (State::LineStart | State::Trailer, _) => State::Trailer,
                (State::LineLf(true), b'\n') => return Feed::Done(i),
                (State::LineLf(false), b'\n') => {
                    self.line = 0;
                    State::LineStart
                }
                _ => return Feed::Error(400),
            };
        }
        Feed::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` split at every position into two parts, and byte by byte; all must agree.
    fn all_splits(body: &[u8], max: u64) -> Feed {
        let whole = Chunked::new(max).feed(body);
        for cut in 0..=body.len() {
            let mut c = Chunked::new(max);
            let r = match c.feed(&body[..cut]) {
                Feed::More => match c.feed(&body[cut..]) {
                    Feed::Done(n) => Feed::Done(cut + n),
                    other => other,
                },
                done_or_error => done_or_error,
            };
            assert_eq!(r, whole, "split at {cut}");
        }
        let mut c = Chunked::new(max);
        let mut bytewise = Feed::More;
        for (i, b) in body.iter().enumerate() {
            match c.feed(std::slice::from_ref(b)) {
                Feed::More => {}
                Feed::Done(1) => {
                    bytewise = Feed::Done(i + 1);
                    break;
                }
                other => {
                    bytewise = other;
                    break;
                }
            }
        }
        assert_eq!(bytewise, whole, "byte by byte");
        whole
    }

    #[test]
    fn finds_the_end_of_a_body_wherever_it_is_cut() {
        let body = b"5\r\nhello\r\n1A;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nGET /";
        assert_eq!(all_splits(body, 1000), Feed::Done(body.len() - 5));
        let trailers = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n";
        assert_eq!(all_splits(trailers, 1000), Feed::Done(trailers.len()));
        assert_eq!(all_splits(b"0\r\n\r\n", 0), Feed::Done(5), "an empty body");
        assert_eq!(all_splits(b"5\r\nhel", 1000), Feed::More);
    }

    #[test]
    fn malformed_framing_is_400_and_oversize_is_413() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"0\r\nbad\ntrailer\r\n\r\n",
            b"5 \r\nhello\r\n",
        ] {
            assert_eq!(all_splits(bad, 1000), Feed::Error(400), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(all_splits(b"10\r\n", 15), Feed::Error(413), "16 bytes over a 15-byte limit");
        assert_eq!(all_splits(b"8\r\n12345678\r\n8\r\n", 15), Feed::Error(413), "the sum counts");
        assert_eq!(all_splits(b"FFFFFFFFFFFFFFFFFFFF\r\n", u64::MAX), Feed::Error(413), "no overflow");
        let long_ext = [b"1;".as_slice(), &[b'x'; MAX_LINE], b"\r\n"].concat();
        assert_eq!(Chunked::new(1000).feed(&long_ext), Feed::Error(400), "endless extension");
    }
}
