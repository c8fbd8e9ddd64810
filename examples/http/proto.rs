//! HTTP/1.1 details: dates, MIME types, status lines, path decoding, ranges.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringstage::buf::IoBuf;

pub const SERVER: &str = "ringstage";

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

pub fn mime(path: &[u8]) -> &'static str {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let ext = name.rsplit(|&b| b == b'.').next().filter(|e| e.len() < name.len()).unwrap_or(b"");
    match ext.to_ascii_lowercase().as_slice() {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" => "text/javascript; charset=utf-8",
        b"json" => "application/json",
        b"txt" => "text/plain; charset=utf-8",
        b"svg" => "image/svg+xml",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"ico" => "image/x-icon",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"ttf" => "font/ttf",
        b"otf" => "font/otf",
        b"mp4" => "video/mp4",
        b"webm" => "video/webm",
        b"mp3" => "audio/mpeg",
        b"ogg" => "audio/ogg",
        b"csv" => "text/csv; charset=utf-8",
        b"md" => "text/markdown; charset=utf-8",
        b"zip" => "application/zip",
        b"gz" => "application/gzip",
        b"wasm" => "application/wasm",
        b"pdf" => "application/pdf",
        b"xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, usize, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m as usize, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: i64) -> String {
    HttpDate(secs).to_string()
}

/// Seconds since the epoch, displayed as an IMF-fixdate (written without allocating).
pub struct HttpDate(pub i64);

impl std::fmt::Display for HttpDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = self.0.div_euclid(86_400);
        let rem = self.0.rem_euclid(86_400);
        let (y, m, d) = civil(days);
        write!(
            f,
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            DAYS[days.rem_euclid(7) as usize],
            d,
            MONTHS[m - 1],
            y,
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

/// Overwrites `buf` with `parts` if it is the only view of its bytes and `parts` fill it to
/// the byte. Returns false otherwise, leaving `buf` as it was.
pub fn refill(buf: &mut IoBuf, parts: &[&[u8]]) -> bool {
    if buf.len() != parts.iter().map(|p| p.len()).sum::<usize>() {
        return false;
    }
    let Some(out) = buf.as_mut_slice() else { return false };
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    true
}

/// Bytes that change now and then (each second, for a `Date:` line), shared by responses as
/// an `IoBuf`. A new version is written in place, into the buffer of the version before, once
/// no response holds that any more; otherwise into a new buffer. The first version makes that
/// spare buffer too, so from then on nothing is allocated.
pub struct Rewritten {
    current: IoBuf,
    spare: IoBuf,
}

impl Rewritten {
    pub fn new() -> Rewritten {
        Rewritten { current: IoBuf::from_static(b""), spare: IoBuf::from_static(b"") }
    }

    pub fn current(&self) -> &IoBuf {
        &self.current
    }

    /// Makes `parts`, concatenated, the current version.
    pub fn set(&mut self, parts: &[&[u8]]) {
        let mut next = std::mem::replace(&mut self.spare, IoBuf::from_static(b""));
        if !refill(&mut next, parts) {
            next = IoBuf::concat(parts);
        }
        let old = std::mem::replace(&mut self.current, next);
        self.spare = if old.is_empty() { IoBuf::concat(parts) } else { old };
    }
}

/// Parses an HTTP-date in any of the three forms a recipient must accept (RFC 9110 §5.6.7):
/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and C's asctime form (`Sun Nov  6 08:49:37 1994`).
/// `None` for anything else (then the header is ignored, as RFC 9110 asks). An RFC 850 year
/// has two digits: it is the nearest year with them that is not more than 50 years ahead.
pub fn parse_http_date(s: &[u8]) -> Option<i64> {
    let this_year = civil(unix_secs(SystemTime::now()).div_euclid(86_400)).0;
    parse_http_date_in(s, this_year)
}

/// [`parse_http_date`], with the current year given (for RFC 850's two-digit years).
fn parse_http_date_in(s: &[u8], this_year: i64) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?;
    let mut it = s.split_ascii_whitespace();
    let first = it.next()?;
    let (d, mon, y, hms) = if first.ends_with(',') {
        let second = it.next()?;
        if let Some((d, rest)) = second.split_once('-') {
            // RFC 850: `06-Nov-94`, a full weekday name before it.
            let (mon, yy) = rest.split_once('-')?;
            let yy = if yy.len() == 2 { digits(yy)? } else { return None };
            let mut y = this_year - this_year.rem_euclid(100) + yy;
            if y > this_year + 50 {
                y -= 100;
            }
            (d, mon, y, it.next()?)
        } else {
            // IMF-fixdate: `06 Nov 1994`. The year has four digits, which also keeps the day
            // arithmetic far from overflow.
            let (mon, y) = (it.next()?, it.next()?);
            (second, mon, if y.len() == 4 { digits(y)? } else { return None }, it.next()?)
        }
    } else {
        // asctime: `Nov  6 08:49:37 1994`, no zone (it is GMT).
        let (mon, d, hms, y) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || y.len() != 4 {
            return None;
        }
        return date_secs(d, mon, digits(y)?, hms);
    };
    if it.next() != Some("GMT") || it.next().is_some() {
        return None;
    }
    date_secs(d, mon, y, hms)
}

/// Seconds since the epoch of day `d` (one or two digits) of month `mon` (`Jan`..`Dec`) of
/// year `y` at `hms` (exactly `HH:MM:SS`).
fn date_secs(d: &str, mon: &str, y: i64, hms: &str) -> Option<i64> {
    let m = MONTHS.iter().position(|&x| x == mon)? as i64 + 1;
    // Digits only (no sign): `i64::from_str` would take "-5" and "+5".
    let d = if d.len() <= 2 { digits(d)? } else { return None };
    let hms = hms.as_bytes();
    if hms.len() != 8 || hms[2] != b':' || hms[5] != b':' {
        return None;
    }
    let field = |i: usize| digits(std::str::from_utf8(&hms[i..i + 2]).ok()?);
    let (h, mi, se) = (field(0)?, field(3)?, field(6)?);
    if !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// A non-empty run of ASCII digits as a number (short runs only: callers bound the length).
fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A per-worker `Date:` header line, rebuilt at most once a second and shared as an `IoBuf`.
///
/// Reads the wall clock only when the stage's loop clock has passed the next wall-clock second
/// boundary, so the hot path neither allocates nor calls `clock_gettime`.
pub struct DateLine {
    /// The wall clock, as time since the Unix epoch (a seam for tests).
    wall: fn() -> Duration,
    secs: i64,
    /// When (loop clock) to look at the wall clock again.
    next: Option<Instant>,
    /// (Always 37 bytes: each second's line is written over the one of two seconds ago.)
    line: Rewritten,
}

impl DateLine {
    pub fn new() -> DateLine {
        DateLine::with_clock(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    /// A line that reads the wall clock from `wall` (time since the Unix epoch).
    pub fn with_clock(wall: fn() -> Duration) -> DateLine {
        let mut d = DateLine { wall, secs: -1, next: None, line: Rewritten::new() };
        d.get(Instant::now());
        d
    }

    /// The current line (`Date: ...\r\n`) at `now`, the stage's loop clock.
    pub fn get(&mut self, now: Instant) -> IoBuf {
        if self.next.is_none_or(|n| now >= n) {
            let wall = (self.wall)();
            // Wall-clock steps move the line by at most a second, never freeze it: the next
            // look is at most a second away.
            self.next = Some(now + Duration::from_nanos(1_000_000_000 - u64::from(wall.subsec_nanos())));
            let secs = wall.as_secs() as i64;
            if secs != self.secs {
                self.secs = secs;
                let mut text = [0u8; 64];
                let mut w = &mut text[..];
                let _ = write!(w, "Date: {}\r\n", HttpDate(secs)); // (fits: 37 bytes)
                let n = 64 - w.len();
                self.line.set(&[&text[..n]]);
            }
        }
        self.line.current().clone()
    }
}

/// Where the origin-form part of a request target lies in it: all of an origin-form target
/// (`/path?query`), or the path and query of an absolute-form one (`http://host:port/path?query`,
/// which RFC 9112 §3.2.2 has a server accept; the authority is dropped: this server has one
/// site). An absolute-form target with an empty path names `/`: the range is then the slash
/// before its authority (a query is dropped with it). Anything else is returned whole, to be
/// refused later.
pub fn origin_form(target: &[u8]) -> std::ops::Range<usize> {
    let has = |scheme: &[u8]| target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme);
    let at = if has(b"http://") {
        7
    } else if has(b"https://") {
        8
    } else {
        return 0..target.len();
    };
    match target[at..].iter().position(|&b| matches!(b, b'/' | b'?' | b'#')) {
        Some(0) => 0..target.len(), // no authority: malformed
        Some(i) if target[at + i] == b'/' => at + i..target.len(),
        _ => at - 1..at,
    }
}

/// Whether `v` is a valid `Host` field value (RFC 9112 §3.2, RFC 3986 §3.2.2): `uri-host`
/// then an optional `:port`, where the host is an IP literal in brackets, or a non-empty
/// registered name (letters, digits, `-._~`, `%XX` escapes and the sub-delimiters
/// `!$&'()*+,;=`; an IPv4 address is one of these) and the port is digits. No user info, no
/// spaces, nothing outside that grammar.
pub fn valid_host(v: &[u8]) -> bool {
    // One pass over a registered name (every request has one): a table lookup a byte.
    let mut i = 0;
    while let Some(&b) = v.get(i) {
        if reg_name_byte(b) {
            i += 1;
        } else if b == b'%' && v.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            i += 3;
        } else {
            break;
        }
    }
    let port = match &v[i..] {
        [] => return i > 0,
        [b':', port @ ..] if i > 0 => port,
        [b'[', ..] if i == 0 => {
            // An IP literal: `[...]`, then the port, if any.
            let Some(end) = v.iter().position(|&b| b == b']') else { return false };
            if !valid_ip_literal(&v[1..end]) {
                return false;
            }
            match &v[end + 1..] {
                [] => return true,
                [b':', port @ ..] => port,
                _ => return false,
            }
        }
        _ => return false,
    };
    port.iter().all(u8::is_ascii_digit)
}

/// The inside of an `IP-literal`'s brackets: an IPv6 address (hex digits, `:` and `.`, which
/// is as far as a field check needs to go), or an `IPvFuture` (`v`, hex digits, `.`, then
/// unreserved, sub-delimiters or `:`).
fn valid_ip_literal(inside: &[u8]) -> bool {
    let v6 = |b: &u8| b.is_ascii_hexdigit() || b":.".contains(b);
    let future = matches!(inside.first(), Some(b'v' | b'V'))
        && inside.contains(&b'.')
        && inside[1..].iter().all(|&b| reg_name_byte(b) || b == b':');
    !inside.is_empty() && (inside.iter().all(v6) || future)
}

/// `unreserved` or `sub-delims` of RFC 3986: one table lookup (this runs on every request).
fn reg_name_byte(b: u8) -> bool {
    const TABLE: [bool; 256] = {
        let mut t = [false; 256];
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            t[c] = b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'')
                || matches!(b, b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=');
            c += 1;
        }
        t
    };
    TABLE[b as usize]
}

/// Why a request target cannot name a file.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// Malformed: bad escape, NUL, not absolute.
    Bad,
    /// Would leave the root (`..`) or hides a separator (`%2f`).
    Forbidden,
}

/// Decodes a request target's path into a normalised, root-relative key starting with `/`.
/// The query is dropped. `.` segments and empty segments are removed; `..` is refused outright
/// rather than resolved, and so is an encoded `/` or `\`, so no spelling reaches outside.
pub fn decode_path(target: &[u8]) -> Result<Vec<u8>, PathError> {
    let path = target.split(|&b| b == b'?' || b == b'#').next().unwrap_or(b"");
    if path.first() != Some(&b'/') {
        return Err(PathError::Bad);
    }
    let mut out = Vec::with_capacity(path.len());
    let mut seg: Vec<u8> = Vec::new();
    let mut i = 0;
    let flush = |seg: &mut Vec<u8>, out: &mut Vec<u8>| -> Result<(), PathError> {
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => return Err(PathError::Forbidden),
            s => {
                out.push(b'/');
                out.extend_from_slice(s);
            }
        }
        seg.clear();
        Ok(())
    };
    while i < path.len() {
        let c = path[i];
        match c {
            b'/' => flush(&mut seg, &mut out)?,
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16).map(|v| v as u8);
                let v = path.get(i + 1).and_then(|&h| hex(h)).zip(path.get(i + 2).and_then(|&l| hex(l)));
                let Some((h, l)) = v else { return Err(PathError::Bad) };
                match h * 16 + l {
                    0 => return Err(PathError::Bad),
                    b'/' | b'\\' => return Err(PathError::Forbidden),
                    b => seg.push(b),
                }
                i += 2;
            }
            0 => return Err(PathError::Bad),
            b'\\' => return Err(PathError::Forbidden),
            _ => seg.push(c),
        }
        i += 1;
    }
    let trailing = path.ends_with(b"/");
    flush(&mut seg, &mut out)?;
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    Ok(out)
}

/// A parsed single `Range: bytes=` request against a body of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// No usable range: serve the whole body (absent, malformed, or several ranges).
    Full,
    /// `start..=end`.
    Part(u64, u64),
    /// Syntactically valid but outside the body: 416.
    Unsatisfiable,
}

pub fn parse_range(h: &[u8], len: u64) -> Range {
    let Some(spec) = h.strip_prefix(b"bytes=") else { return Range::Full };
    if spec.contains(&b',') {
        return Range::Full; // multipart ranges are not served; the whole body is valid too
    }
    let s = match std::str::from_utf8(spec) {
        Ok(s) => s.trim(),
        Err(_) => return Range::Full,
    };
    let Some((a, b)) = s.split_once('-') else { return Range::Full };
    let num =
        |x: &str| if x.bytes().all(|c| c.is_ascii_digit()) && !x.is_empty() { x.parse::<u64>().ok() } else { None };
    match (a.is_empty(), b.is_empty()) {
        (true, false) => match num(b) {
            Some(0) => Range::Unsatisfiable,
            Some(n) if len > 0 => Range::Part(len.saturating_sub(n), len - 1),
            Some(_) => Range::Unsatisfiable,
            None => Range::Full,
        },
        (false, _) => {
            let Some(start) = num(a) else { return Range::Full };
            let end = if b.is_empty() { Some(u64::MAX) } else { num(b) };
            let Some(end) = end else { return Range::Full };
            if end < start {
                return Range::Full;
            }
            if start >= len {
                return Range::Unsatisfiable;
            }
            Range::Part(start, end.min(len - 1))
        }
        _ => Range::Full,
    }
}

/// A complete small response with a body (errors, 503): one allocation, rare path. `tail`
/// ends the head: the `Connection` field if any, then the blank line.
pub fn simple(status: u16, body: &str, tail: &[u8], extra: &str, date: &IoBuf) -> IoBuf {
    let mut v = format!("HTTP/1.1 {status} {}\r\nServer: {SERVER}\r\n", reason(status)).into_bytes();
    v.extend_from_slice(date);
    v.extend_from_slice(
        format!("Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{extra}", body.len()).as_bytes(),
    );
    v.extend_from_slice(tail);
    v.extend_from_slice(body.as_bytes());
    IoBuf::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_rewrites_only_a_unique_buffer_of_the_same_length() {
        let mut b = IoBuf::copy_from_slice(b"abcdef");
        assert!(refill(&mut b, &[b"xy", b"zuvw"]));
        assert_eq!(&b[..], b"xyzuvw");
        assert!(!refill(&mut b, &[b"short"]), "a different length");
        let held = b.clone();
        assert!(!refill(&mut b, &[b"123456"]), "another view still reads these bytes");
        assert_eq!((&b[..], &held[..]), (&b"xyzuvw"[..], &b"xyzuvw"[..]));
        assert!(!refill(&mut IoBuf::from_static(b"static"), &[b"123456"]));
    }

    thread_local! {
        /// The test's wall clock, ms since the epoch (each test runs on its own thread).
        static WALL_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(1_700_000_000_000) };
    }

    fn test_wall() -> Duration {
        Duration::from_millis(WALL_MS.with(|w| w.get()))
    }

    /// Moves the test's wall clock on by `ms`.
    fn wall_passes(ms: u64) {
        WALL_MS.with(|w| w.set(w.get() + ms));
    }

    #[test]
    fn the_date_line_reuses_the_buffer_of_the_line_before_unless_it_is_held() {
        let mut d = DateLine::with_clock(test_wall);
        let t0 = Instant::now();
        // The loop clock moves with the test's wall clock, a second per step.
        let mut step = 0u32;
        let mut line = |d: &mut DateLine| {
            step += 1;
            wall_passes(1000);
            d.get(t0 + Duration::from_secs(step.into()))
        };
        let first = line(&mut d);
        let a = first.as_ptr();
        drop(first);
        let second = line(&mut d);
        assert_ne!(second.as_ptr(), a, "a new second, a new line");
        drop(second);
        let third = line(&mut d);
        assert_eq!(third.as_ptr(), a, "rewritten in place: nobody held the line of two seconds ago");
        let text = std::str::from_utf8(&third).unwrap();
        assert!(text.starts_with("Date: ") && text.ends_with(" GMT\r\n") && text.len() == 37, "{text:?}");
        assert_eq!(parse_http_date(&third[6..35]), Some(test_wall().as_secs() as i64), "the current second: {text:?}");
        // A response still holding the spare (e.g. in a slow client's send queue) keeps it.
        let _held = third;
        let _ = line(&mut d);
        assert_ne!(line(&mut d).as_ptr(), a, "the held line is not overwritten");
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        for t in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_http_date(http_date(t).as_bytes()), Some(t));
        }
        // A huge year used to overflow the day arithmetic (a panic in debug builds).
        assert_eq!(parse_http_date(b"Sun, 06 Nov 9223372036854775807 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov -1 08:49:37 GMT"), None);
        // Signs and short or long fields used to parse (the fuzzer found a time with
        // "-0...049" seconds that landed before year 0 and did not print back).
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:-0000000049 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 -8:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, +6 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 8:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37:00 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 6 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        // Years below 1000 print with four digits, so they parse back.
        let early = parse_http_date(b"Thu, 01 Jan 0043 00:00:00 GMT").unwrap();
        assert_eq!(http_date(early), "Thu, 01 Jan 0043 00:00:00 GMT");
    }

    #[test]
    fn the_obsolete_date_forms_are_accepted() {
        let t = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), Some(t));
        assert_eq!(parse_http_date(b"Sun Nov 06 08:49:37 1994"), Some(t));
        // Two-digit years: the nearest not more than 50 years ahead.
        let in_2026 = |s: &[u8]| parse_http_date_in(s, 2026).map(|t| civil(t.div_euclid(86_400)).0);
        assert_eq!(in_2026(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(1994));
        assert_eq!(in_2026(b"Monday, 06-Nov-76 08:49:37 GMT"), Some(2076));
        assert_eq!(in_2026(b"Monday, 06-Nov-77 08:49:37 GMT"), Some(1977));
        assert_eq!(in_2026(b"Monday, 06-Nov-00 08:49:37 GMT"), Some(2000));
        for bad in [
            &b"Sunday, 06-Nov-1994 08:49:37 GMT"[..],
            b"Sunday, 06-Nov-94 08:49:37",
            b"Sunday, 06-Nov-94 08:49:37 UTC",
            b"Sunday, 06-Nov 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 94",
            b"Sun Nov  6 08:49:37 1994 GMT",
            b"Sun Nov 6 8:49:37 1994",
            b"Sun Foo  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn date_line_reads_the_wall_clock_only_past_a_second_boundary() {
        wall_passes(250); // a quarter into a second: the next boundary is 750 ms away
        let t0 = Instant::now();
        let mut d = DateLine::with_clock(test_wall);
        let first = d.get(t0);
        assert!(first.starts_with(b"Date: ") && first.ends_with(b" GMT\r\n"));
        // The wall clock's second changes...
        wall_passes(1100);
        // ...but the loop clock has not reached the boundary: no look, the same shared line.
        assert_eq!(d.get(t0 + Duration::from_millis(700)).as_ptr(), first.as_ptr());
        // The loop clock passed the boundary: the line follows the wall clock.
        let now = d.get(t0 + Duration::from_millis(800));
        assert_ne!(&now[..], &first[..]);
        assert_eq!(&now[6..now.len() - 2], http_date(test_wall().as_secs() as i64).as_bytes());
    }

    #[test]
    fn host_values_follow_the_uri_host_grammar() {
        for ok in ["t", "localhost:8080", "127.0.0.1", "a.b-c_d~e", "[::1]", "[::1]:443", "x:", "%41b", "[v1.x]"] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "x}",
            "localhost:abc",
            "user@host",
            ":80",
            "a:1:2",
            "[::1",
            "[]",
            "[::1]x",
            "%4",
            "%zz",
            "a\tb",
            "\u{e9}",
            "[g::1]",
            "h/p",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn paths_never_leave_the_root() {
        assert_eq!(decode_path(b"/a/./b//c?x=1").unwrap(), b"/a/b/c");
        let of = |t: &'static [u8]| &t[origin_form(t)];
        assert_eq!(of(b"/a?b"), b"/a?b");
        assert_eq!(of(b"http://h:80/a/b?c"), b"/a/b?c");
        assert_eq!(of(b"HTTPS://h/"), b"/");
        assert_eq!(of(b"http://user@h"), b"/", "an empty path is /");
        assert_eq!(of(b"http://h?q"), b"/");
        assert_eq!(of(b"http://h#f"), b"/");
        assert_eq!(of(b"http:///a"), b"http:///a", "no authority: left to be refused");
        assert_eq!(of(b"http://"), b"http://");
        assert_eq!(of(b"ftp://h/a"), b"ftp://h/a");
        assert_eq!(of(b"*"), b"*");
        assert_eq!(decode_path(b"/").unwrap(), b"/");
        assert_eq!(decode_path(b"/dir/").unwrap(), b"/dir/");
        assert_eq!(decode_path(b"/h%20i").unwrap(), b"/h i");
        assert_eq!(decode_path(b"/../etc/passwd"), Err(PathError::Forbidden));
        assert_eq!(decode_path(b"/%2e%2e/etc/passwd"), Err(PathError::Forbidden));
        assert_eq!(decode_path(b"/a/%2E%2E/%2e%2e/x"), Err(PathError::Forbidden));
        assert_eq!(decode_path(b"/a%2f..%2fb"), Err(PathError::Forbidden));
        assert_eq!(decode_path(b"/a%5c..%5cb"), Err(PathError::Forbidden));
        assert_eq!(decode_path(b"/a%00b"), Err(PathError::Bad));
        assert_eq!(decode_path(b"/a%zz"), Err(PathError::Bad));
        assert_eq!(decode_path(b"relative"), Err(PathError::Bad));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(b"bytes=0-9", 100), Range::Part(0, 9));
        assert_eq!(parse_range(b"bytes=90-", 100), Range::Part(90, 99));
        assert_eq!(parse_range(b"bytes=-10", 100), Range::Part(90, 99));
        assert_eq!(parse_range(b"bytes=50-1000", 100), Range::Part(50, 99));
        assert_eq!(parse_range(b"bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-1,5-6", 100), Range::Full);
        assert_eq!(parse_range(b"items=0-1", 100), Range::Full);
        assert_eq!(parse_range(b"bytes=9-1", 100), Range::Full);
    }

    #[test]
    fn mime_by_extension() {
        assert!(mime(b"/index.html").starts_with("text/html"));
        assert_eq!(mime(b"/x.PNG"), "image/png");
        assert_eq!(mime(b"/noext"), "application/octet-stream");
        assert_eq!(mime(b"/dir.d/noext"), "application/octet-stream");
        assert_eq!(mime(b"/fonts/a.woff2"), "font/woff2");
        assert_eq!(mime(b"/a.tar.gz"), "application/gzip");
    }
}
