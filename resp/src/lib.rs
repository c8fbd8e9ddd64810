//! RESP2, the Redis protocol, for ringstage: request framing (what `redis-cli` and
//! `redis-benchmark` send) as a [`Decoder`](ringstage::net::Decoder) for the framing layer,
//! and reply encoding into `IoBuf`s. The key-value example serves Redis clients with it.
//!
//! A request is a multibulk array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or an
//! inline command (`GET k\r\n`, whitespace separated, as typed into `telnet`). Parsing works on
//! a byte slice and yields the arguments as ranges of it, so the command stage reads keys and
//! values straight out of the received pool buffer. Errors use Redis's wording; after a
//! protocol error the connection is answered and closed, as Redis does.

use std::ops::Range;

use ringstage::buf::{BufWriter, IoBuf};

/// Size limits of a request (Redis's `proto-max-bulk-len` and friends).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest bulk string (key or value).
    pub max_bulk: usize,
    /// Most arguments in one command.
    pub max_args: usize,
    /// Longest inline command or `*`/`$` header line.
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_bulk: 64 << 20, max_args: 1 << 20, max_inline: 64 << 10 }
    }
}

/// Outcome of parsing the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One command, whose arguments were pushed, spans the first `consumed` bytes. An empty
    /// argument list is a blank line or `*0`, which Redis skips.
    Command { consumed: usize },
    /// More bytes are needed; when known, the command is complete at `need` bytes, so the
    /// caller need not parse again before it has that many (large values stay O(n)).
    Partial { need: Option<usize> },
    /// Malformed: answer with this error and close.
    Error(String),
}

/// A command's arguments, as ranges of the bytes they are in: the request itself for a
/// multibulk command (no copy), a decoded copy for an inline one (its quotes and escapes
/// make its arguments differ from its bytes).
#[derive(Debug, Default)]
pub struct Args {
    pub ranges: Vec<Range<usize>>,
    /// An inline command's arguments, unquoted; `ranges` index it when `inline`.
    decoded: Vec<u8>,
    inline: bool,
}

impl Args {
    /// The bytes `ranges` index: `data` (what was parsed) or the decoded inline arguments.
    pub fn bytes<'a>(&'a self, data: &'a [u8]) -> &'a [u8] {
        if self.inline {
            &self.decoded
        } else {
            data
        }
    }
}

/// RESP framing for a [`Framer`](ringstage::net::Framer): a frame is one command's bytes (a
/// view of the receive buffer when the command came whole), and the decoder's `args` hold its
/// words until the next frame is decoded.
#[derive(Debug, Default)]
pub struct Resp {
    pub limits: Limits,
    pub args: Args,
}

impl ringstage::net::Decoder for Resp {
    type Frame = ringstage::buf::IoBuf;
    type Error = String;

    fn decode(&mut self, input: &ringstage::buf::IoBuf) -> Result<ringstage::net::Decode<Self::Frame>, String> {
        use ringstage::net::Decode;
        match parse(input, &self.limits, &mut self.args) {
            Frame::Command { consumed } => Ok(Decode::Frame { frame: input.slice(..consumed), len: consumed }),
            Frame::Partial { need } => Ok(Decode::Need(need)),
            Frame::Error(msg) => Err(msg),
        }
    }
}

/// Parses one command at the start of `data` into `args` (cleared first). Hot path: no
/// allocation once `args` has grown.
pub fn parse(data: &[u8], lim: &Limits, args: &mut Args) -> Frame {
    args.ranges.clear();
    args.inline = false;
    match data.first() {
        None => Frame::Partial { need: None },
        Some(b'*') => multibulk(data, lim, &mut args.ranges),
        Some(_) => {
            args.inline = true;
            inline(data, lim, args)
        }
    }
}

/// The position after the `\r\n` ending the line that starts at `from`, and the line's end.
fn line(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = from + data[from..].iter().position(|&b| b == b'\n')?;
    let end = if nl > from && data[nl - 1] == b'\r' { nl - 1 } else { nl };
    Some((end, nl + 1))
}

/// A decimal integer as Redis reads a length: optional `-`, digits, no more than 18 of them.
fn number(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = digits.iter().fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'));
    Some(if neg { -v } else { v })
}

fn multibulk(data: &[u8], lim: &Limits, args: &mut Vec<Range<usize>>) -> Frame {
    let Some((end, mut pos)) = line(data, 0) else {
        return if data.len() > lim.max_inline {
            Frame::Error("Protocol error: too big mbulk count string".into())
        } else {
            Frame::Partial { need: None }
        };
    };
    let n = match number(&data[1..end]) {
        Some(n) if n <= lim.max_args as i64 => n,
        _ => return Frame::Error("Protocol error: invalid multibulk length".into()),
    };
    for _ in 0..n.max(0) {
        let Some(&first) = data.get(pos) else { return Frame::Partial { need: None } };
        if first != b'$' {
            return Frame::Error(format!("Protocol error: expected '$', got '{}'", first as char));
        }
        let Some((end, body)) = line(data, pos) else {
            return if data.len() - pos > lim.max_inline {
                Frame::Error("Protocol error: too big bulk count string".into())
            } else {
                Frame::Partial { need: None }
            };
        };
        let len = match number(&data[pos + 1..end]) {
            Some(l) if (0..=lim.max_bulk as i64).contains(&l) => l as usize,
            _ => return Frame::Error("Protocol error: invalid bulk length".into()),
        };
        let need = body + len + 2;
        if data.len() < need {
            return Frame::Partial { need: Some(need) };
        }
        if &data[body + len..need] != b"\r\n" {
            return Frame::Error("Protocol error: bulk string not ended by CRLF".into());
        }
        args.push(body..body + len);
        pos = need;
    }
    Frame::Command { consumed: pos }
}

/// An inline command (`SET "a b" 'c d'\r\n`), split as Redis's `sdssplitargs` does: words
/// apart by whitespace; in double quotes `\n`, `\r`, `\t`, `\b`, `\a`, `\xHH` and `\<c>`
/// escapes; in single quotes only `\'`; a closing quote must end its word. The words go into
/// `args.decoded`.
fn inline(data: &[u8], lim: &Limits, args: &mut Args) -> Frame {
    let Some((end, next)) = line(data, 0) else {
        // Until its LF arrives, a line at the limit may still be followed by its CR.
        return if data.strip_suffix(b"\r").unwrap_or(data).len() > lim.max_inline {
            Frame::Error("Protocol error: too big inline request".into())
        } else {
            Frame::Partial { need: None }
        };
    };
    if end > lim.max_inline {
        return Frame::Error("Protocol error: too big inline request".into());
    }
    let unbalanced = || Frame::Error("Protocol error: unbalanced quotes in request".into());
    let line = &data[..end];
    let out = &mut args.decoded;
    out.clear();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let start = out.len();
        let mut quote = None;
        loop {
            let Some(&c) = line.get(i) else {
                if quote.is_some() {
                    return unbalanced();
                }
                break;
            };
            match quote {
                Some(b'"') => match (c, line.get(i + 1)) {
                    (b'\\', Some(b'x'))
                        if line.get(i + 2..i + 4).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                    {
                        let hex = std::str::from_utf8(&line[i + 2..i + 4]).expect("hex digits");
                        out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                        i += 3;
                    }
                    (b'\\', Some(&e)) => {
                        out.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            e => e,
                        });
                        i += 1;
                    }
                    (b'"', next) => {
                        if next.is_some_and(|n| !n.is_ascii_whitespace()) {
                            return unbalanced();
                        }
                        i += 1;
                        break;
                    }
                    (c, _) => out.push(c),
                },
                Some(_) => match (c, line.get(i + 1)) {
                    (b'\\', Some(b'\'')) => {
                        out.push(b'\'');
                        i += 1;
                    }
                    (b'\'', next) => {
                        if next.is_some_and(|n| !n.is_ascii_whitespace()) {
                            return unbalanced();
                        }
                        i += 1;
                        break;
                    }
                    (c, _) => out.push(c),
                },
                None if c.is_ascii_whitespace() => break,
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None => out.push(c),
            }
            i += 1;
        }
        if args.ranges.len() == lim.max_args {
            return Frame::Error("Protocol error: invalid multibulk length".into());
        }
        args.ranges.push(start..out.len());
    }
    Frame::Command { consumed: next }
}

pub static OK: IoBuf = IoBuf::from_static(b"+OK\r\n");
pub static PONG: IoBuf = IoBuf::from_static(b"+PONG\r\n");
pub static NIL: IoBuf = IoBuf::from_static(b"$-1\r\n");
pub static ZERO: IoBuf = IoBuf::from_static(b":0\r\n");
pub static ONE: IoBuf = IoBuf::from_static(b":1\r\n");
pub static EMPTY_ARRAY: IoBuf = IoBuf::from_static(b"*0\r\n");
/// The null array (`LPOP key count` on a missing key).
pub static NIL_ARRAY: IoBuf = IoBuf::from_static(b"*-1\r\n");
pub static WRONGTYPE: IoBuf =
    IoBuf::from_static(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");

/// `-<msg>\r\n` (the message starts with its error code: `ERR`, `WRONGTYPE`, `BUSY`).
pub fn error(msg: &str) -> IoBuf {
    IoBuf::from(format!("-{msg}\r\n").into_bytes())
}

/// A RESP length or integer line (`:<n>\r\n`, `$<len>\r\n`, `*<n>\r\n`) formatted on the
/// stack: the buffer and how much of it is used.
fn number_line(kind: u8, n: i64) -> ([u8; 24], usize) {
    use std::io::Write;
    let mut buf = [0u8; 24]; // the kind, 20 characters of i64::MIN, CRLF
    buf[0] = kind;
    let mut w = &mut buf[1..];
    write!(w, "{n}\r\n").expect("fits");
    let len = 24 - w.len();
    (buf, len)
}

/// `:<n>\r\n`, copied once from the stack (exactly sized, so nothing reallocates to shrink it).
pub fn integer(n: i64) -> IoBuf {
    match n {
        0 => ZERO.clone(),
        1 => ONE.clone(),
        n => {
            let (buf, len) = number_line(b':', n);
            IoBuf::copy_from_slice(&buf[..len])
        }
    }
}

/// `$<len>\r\n<bytes>\r\n`: one allocation holding the framed bytes (and the view's header),
/// so the value can later be sent as it is, any number of times, without formatting or
/// copying.
pub fn bulk(bytes: &[u8]) -> IoBuf {
    let (head, n) = number_line(b'$', bytes.len() as i64);
    IoBuf::concat(&[&head[..n], bytes, b"\r\n"])
}

/// Writes `$<len>\r\n<bytes>\r\n` into `out`'s pending piece: a bulk string reply copied
/// into a shared block instead of a block of its own.
pub fn write_bulk(out: &mut BufWriter, bytes: &[u8]) {
    let (head, n) = number_line(b'$', bytes.len() as i64);
    out.write(&head[..n]);
    out.write(bytes);
    out.write(b"\r\n");
}

/// `*<n>\r\n` (the header of an array whose elements follow).
pub fn array_header(n: usize) -> IoBuf {
    let (buf, len) = number_line(b'*', n as i64);
    IoBuf::copy_from_slice(&buf[..len])
}

/// A double as Redis 7.0 prints one (`addReplyDouble`): `inf`, `-inf`, else C's `%.17g`, 17
/// significant digits without trailing zeros, in exponent form below 1e-4 or from 1e17 on
/// (`1e+20`, `1.7976931348623157e+308`, `0.10000000000000001`, `3`).
pub fn double(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // 17 significant digits in exponent form: `d.dddddddddddddddde±x`.
    let e = format!("{v:.16e}");
    let (mantissa, exp) = e.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("an exponent");
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..17).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        trim(&format!("{v:.*}", (16 - exp) as usize))
    }
}

/// The bytes of a framed bulk string made by [`bulk`] (without its header and CRLF).
pub fn bulk_payload(framed: &IoBuf) -> &[u8] {
    let start = framed.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
    &framed[start..framed.len().saturating_sub(2).max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(data: &[u8]) -> (Frame, Vec<Vec<u8>>) {
        let mut args = Args::default();
        let f = parse(data, &Limits::default(), &mut args);
        let bytes = args.bytes(data);
        (f, args.ranges.iter().map(|r| bytes[r.clone()].to_vec()).collect())
    }

    #[test]
    fn inline_commands_follow_redis_quoting() {
        let w = |s: &str| words(s.as_bytes());
        assert_eq!(w("set \"a b\" 'c d'\r\n").1, [&b"set"[..], b"a b", b"c d"]);
        assert_eq!(w("echo \"x\\ny\\t\\x41\\\"\\\\z\"\r\n").1, [&b"echo"[..], b"x\ny\tA\"\\z"]);
        assert_eq!(w("echo 'it\\'s' \"\"\r\n").1, [&b"echo"[..], b"it's", b""], "an empty quoted word counts");
        assert_eq!(w("echo '\\n'\r\n").1, [&b"echo"[..], b"\\n"], "no escapes in single quotes");
        assert_eq!(w("a\"b c\"\r\n").1, [&b"ab c"[..]], "a quote may start inside a word");
        assert_eq!(w("echo \"\\xzz\"\r\n").1, [&b"echo"[..], b"xzz"], "not hex: the escaped character");
        let bad = Frame::Error("Protocol error: unbalanced quotes in request".into());
        for s in ["set \"a b\r\n", "set 'a\r\n", "set \"a\"b\r\n", "set 'a'b\r\n", "echo \"\\\"\r\n"] {
            assert_eq!(w(s).0, bad, "{s:?}");
        }
    }

    #[test]
    fn multibulk_and_inline_commands() {
        let (f, a) = words(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\r\nl\r\nrest");
        assert_eq!(f, Frame::Command { consumed: 31 });
        assert_eq!(a, [&b"SET"[..], b"k", b"va\r\nl"], "a bulk string may hold CRLF");
        let (f, a) = words(b"  GET   key\r\nPING\r\n");
        assert_eq!(f, Frame::Command { consumed: 13 });
        assert_eq!(a, [&b"GET"[..], b"key"]);
        let (f, a) = words(b"PING\n");
        assert_eq!((f, a), (Frame::Command { consumed: 5 }, vec![b"PING".to_vec()]), "bare LF ends a line");
        let (f, a) = words(b"*0\r\n");
        assert_eq!((f, a.len()), (Frame::Command { consumed: 4 }, 0));
        let (f, a) = words(b"*1\r\n$0\r\n\r\n");
        assert_eq!((f, a), (Frame::Command { consumed: 10 }, vec![Vec::new()]), "empty bulk string");
    }

    #[test]
    fn every_split_point_is_partial_then_the_same_command() {
        let msg = b"*3\r\n$3\r\nSET\r\n$4\r\nkey1\r\n$10\r\n0123456789\r\n";
        let (full, args) = words(msg);
        assert_eq!(full, Frame::Command { consumed: msg.len() });
        for cut in 0..msg.len() {
            let (f, _) = words(&msg[..cut]);
            match f {
                Frame::Partial { need: Some(n) } => assert!(n > cut && n <= msg.len(), "need {n} at cut {cut}"),
                Frame::Partial { need: None } => {}
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        assert_eq!(args[2], b"0123456789");
        // The hint names exactly the end of the command once the last bulk header is in.
        assert_eq!(words(&msg[..msg.len() - 3]).0, Frame::Partial { need: Some(msg.len()) });
    }

    #[test]
    fn malformed_requests_get_redis_errors() {
        let err = |d: &[u8]| match words(d).0 {
            Frame::Error(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(d)),
        };
        assert_eq!(err(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(err(b"*2\r\n$3\r\nGET\r\n:1\r\n"), "Protocol error: expected '$', got ':'");
        assert_eq!(err(b"*1\r\n$-1\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(err(b"*1\r\n$99999999999999999999\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(err(b"*1\r\n$3\r\nGETxx"), "Protocol error: bulk string not ended by CRLF");
        let lim = Limits { max_bulk: 4, max_args: 2, max_inline: 16 };
        let mut a = Args::default();
        assert!(matches!(parse(b"*1\r\n$5\r\n", &lim, &mut a), Frame::Error(e) if e.contains("bulk length")));
        assert!(matches!(parse(b"*3\r\n", &lim, &mut a), Frame::Error(e) if e.contains("multibulk length")));
        assert!(matches!(parse(&[b'a'; 17], &lim, &mut a), Frame::Error(e) if e.contains("too big inline")));
        assert!(matches!(parse(b"a b c\r\n", &lim, &mut a), Frame::Error(_)), "too many inline args");
        assert_eq!(parse(&[b'a'; 16], &lim, &mut a), Frame::Partial { need: None }, "at the limit: wait");
        // A line right at the limit, cut between its CR and LF (found by fuzz/resp), is waited
        // for, then parsed.
        let mut at_limit = [b'a'; 18];
        at_limit[16] = b'\r';
        assert_eq!(parse(&at_limit[..17], &lim, &mut a), Frame::Partial { need: None });
        at_limit[17] = b'\n';
        assert_eq!(parse(&at_limit, &lim, &mut a), Frame::Command { consumed: 18 });
        at_limit[16] = b'b';
        assert!(matches!(parse(&at_limit[..17], &lim, &mut a), Frame::Error(e) if e.contains("too big inline")));
    }

    /// The invariants `fuzz/fuzz_targets/resp.rs` checks, over deterministic random inputs
    /// drawn from the protocol's own bytes (so the parser gets deep), in every `cargo test`.
    #[test]
    fn random_input_stays_in_bounds_and_prefixes_wait() {
        let alphabet = b"*$\r\n0123-9 :SETGETx\t\"'\\";
        let lim = Limits { max_bulk: 16, max_args: 4, max_inline: 24 };
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut args, mut scratch) = (Args::default(), Args::default());
        let mut complete = 0;
        for _ in 0..200_000 {
            let len = (next() % 40) as usize;
            let data: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            match parse(&data, &lim, &mut args) {
                Frame::Command { consumed } => {
                    complete += 1;
                    assert!(consumed > 0 && consumed <= data.len());
                    let bytes = args.bytes(&data).len();
                    assert!(args.ranges.len() <= lim.max_args);
                    assert!(args.ranges.iter().all(|r| r.start <= r.end && r.end <= consumed.min(bytes)));
                    for cut in 0..consumed {
                        let f = parse(&data[..cut], &lim, &mut scratch);
                        assert!(
                            matches!(f, Frame::Partial { need } if need.is_none_or(|n| n > cut && n <= consumed)),
                            "{:?} cut at {cut}: {f:?}",
                            String::from_utf8_lossy(&data)
                        );
                    }
                }
                Frame::Partial { need } => assert!(need.is_none_or(|n| n > data.len())),
                Frame::Error(e) => assert!(e.starts_with("Protocol error")),
            }
        }
        assert!(complete > 1000, "only {complete} inputs parsed as commands: the test is too shallow");
    }

    #[test]
    fn doubles_print_as_percent_17g() {
        for (v, s) in [
            (1e20, "1e+20"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (3.0, "3"),
            (-2.5, "-2.5"),
            (0.1, "0.10000000000000001"),
            (1.5e-5, "1.5e-05"),
            (1.1, "1.1000000000000001"),
            (0.0001, "0.0001"),
            (1e16, "10000000000000000"),
            (1e17, "1e+17"),
            (123456789.125, "123456789.125"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (0.0, "0"),
        ] {
            assert_eq!(double(v), s, "{v:e}");
            assert_eq!(double(v).parse::<f64>().unwrap_or(v), v, "reads back: {s}");
        }
    }

    #[test]
    fn replies_are_framed() {
        assert_eq!(&bulk(b"hi")[..], b"$2\r\nhi\r\n");
        assert_eq!(bulk_payload(&bulk(b"hi")), b"hi");
        assert_eq!(bulk_payload(&bulk(b"")), b"");
        for n in [0, 1, 9, 10, 99, 100, 12345] {
            let b = bulk(&vec![b'x'; n]);
            assert_eq!(b.len(), 1 + n.to_string().len() + 2 + n + 2, "exact framing for {n} bytes");
        }
        assert_eq!(&integer(-42)[..], b":-42\r\n");
        assert_eq!(&integer(1)[..], b":1\r\n");
        assert_eq!(&integer(i64::MIN)[..], b":-9223372036854775808\r\n");
        assert_eq!(&integer(i64::MAX)[..], b":9223372036854775807\r\n");
        assert_eq!(&error("ERR x")[..], b"-ERR x\r\n");
        assert_eq!(&array_header(3)[..], b"*3\r\n");
        assert_eq!(number(b"-1"), Some(-1));
        assert_eq!(number(b"+1"), None);
        assert_eq!(number(b""), None);
    }
}
