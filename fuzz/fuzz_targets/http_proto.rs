//! The HTTP example's request-target decoding (the guard against leaving the document root),
//! Range and date parsing, and the request head parse that feeds them: never a panic, and the
//! decoded path can name nothing outside the root.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../examples/http/proto.rs"]
mod proto;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = proto::decode_path(data) {
        assert!(p.starts_with(b"/"), "not rooted: {p:?}");
        assert!(!p.contains(&0), "NUL in {p:?}");
        assert!(!p.contains(&b'\\'), "backslash in {p:?}");
        for seg in p.split(|&b| b == b'/') {
            assert!(seg != b".." && seg != b".", "dot segment in {p:?}");
        }
        // Decoding is idempotent on what it produces (no second layer of escapes gets through;
        // a decoded `?` or `#` is a file name character, no longer a delimiter).
        if !p.iter().any(|b| b"%?#".contains(b)) {
            assert_eq!(proto::decode_path(&p).ok().as_deref(), Some(&p[..]));
        }
        let _ = proto::mime(&p);
    }
    let len = data.first().map_or(0, |&b| u64::from(b) * 7);
    match proto::parse_range(data, len) {
        proto::Range::Part(a, b) => assert!(a <= b && b < len, "{a}-{b} of {len}"),
        proto::Range::Full | proto::Range::Unsatisfiable => {}
    }
    if let Some(t) = proto::parse_http_date(data) {
        // A date that parses prints back as a date that parses to the same instant.
        assert_eq!(proto::parse_http_date(proto::http_date(t).as_bytes()), Some(t));
    }
    // The head parse of the example (httparse), then each header value through the helpers.
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if let Ok(httparse::Status::Complete(_)) = req.parse(data) {
        if let Some(path) = req.path {
            // As the parse stage does: the origin-form part (on character boundaries), decoded.
            let r = proto::origin_form(path.as_bytes());
            let origin = &path[r.clone()];
            assert!(r == (0..path.len()) || origin.starts_with('/'), "{path:?} -> {origin:?}");
            let _ = proto::decode_path(origin.as_bytes());
        }
        for h in req.headers.iter() {
            let _ = proto::parse_range(h.value, 1000);
            let _ = proto::parse_http_date(h.value);
        }
    }
    let status = 100 + u16::from(data.first().copied().unwrap_or(0)) % 500;
    let date = proto::DateLine::new().get(std::time::Instant::now());
    let body = String::from_utf8_lossy(data);
    let tail: &[u8] = if data.len() % 2 == 0 { b"Connection: close\r\n\r\n" } else { b"\r\n" };
    let r = proto::simple(status, &body, tail, "", &date);
    assert!(r.starts_with(format!("HTTP/1.1 {status} {}", proto::reason(status)).as_bytes()));
    let _ = proto::unix_secs(std::time::SystemTime::now());
});
