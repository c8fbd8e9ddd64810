//! RFC 9112 / RFC 9110 rules the HTTP example must follow, each found broken by testing from
//! outside: Host validation, the three date forms, HEAD with Range, HTTP/1.0 keep-alive and
//! other versions, the requests-per-connection limit, and `Connection: close` at shutdown.

mod example;
mod http_client;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use http_client::*;

/// Sends `raw` on a fresh connection; returns the response and whether the server then closed.
fn answer_and_close(addr: std::net::SocketAddr, raw: &str) -> (Response, bool) {
    let mut c = connect(addr);
    c.get_mut().write_all(raw.as_bytes()).unwrap();
    let r = read_response(&mut c, raw.starts_with("HEAD")).expect("a response");
    (r, closed_by_server(&mut c))
}

#[test]
fn a_missing_repeated_or_malformed_host_gets_400_and_a_close() {
    let s = server(&[]);
    let host = |h: &str| format!("GET /plaintext HTTP/1.1\r\n{h}\r\n\r\n");
    for bad in [
        host("Host: a\r\nHost: a"),
        host("Host: a\r\nHost: b"),
        host("Host: a b"),
        host("Host: x}"),
        host("Host: localhost:abc"),
        host("Host: user@host"),
        host("Host: [::1"),
        host("Host: caf\u{e9}"),
        host("Host:"),
        host("X-Other: y"),
    ] {
        let (r, closed) = answer_and_close(s.addr, &bad);
        assert_eq!(r.status, 400, "{bad:?}");
        assert_eq!(r.header("connection"), Some("close"), "{bad:?}");
        assert!(closed, "{bad:?}");
    }
    for good in [host("Host: t"), host("Host: 127.0.0.1:8080"), host("Host: [::1]:80"), host("Host: a.b-c_d~e")] {
        assert_eq!(request(s.addr, &good).status, 200, "{good:?}");
    }
    // HTTP/1.0 may leave Host out; an empty one is still malformed.
    assert_eq!(request(s.addr, "GET /plaintext HTTP/1.0\r\n\r\n").status, 200);
    assert_eq!(request(s.addr, "GET /plaintext HTTP/1.0\r\nHost:\r\n\r\n").status, 400);
}

#[test]
fn conditional_requests_take_all_three_date_forms() {
    let s = server(&[]);
    let ask = |field: &str, date: &str| {
        request(
            s.addr,
            &format!("GET /files/1k.txt HTTP/1.1\r\nHost: t\r\n{field}: {date}\r\nConnection: close\r\n\r\n"),
        )
        .status
    };
    // A date after the file's modification (2060 from a two-digit year: not 50 years ahead).
    for later in ["Thu, 01 Jan 2060 00:00:00 GMT", "Thursday, 01-Jan-60 00:00:00 GMT", "Thu Jan  1 00:00:00 2060"] {
        assert_eq!(ask("If-Modified-Since", later), 304, "{later}");
        assert_eq!(ask("If-Unmodified-Since", later), 200, "{later}");
    }
    for earlier in ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
        assert_eq!(ask("If-Modified-Since", earlier), 200, "{earlier}");
        assert_eq!(ask("If-Unmodified-Since", earlier), 412, "{earlier}");
    }
    // Not a date: ignored, whatever the field.
    assert_eq!(ask("If-Modified-Since", "yesterday"), 200);
    assert_eq!(ask("If-Unmodified-Since", "yesterday"), 200);
    // If-Range in the obsolete forms names the version by its date too.
    let lm = get(s.addr, "/files/1k.txt").header("last-modified").unwrap().to_string();
    let r = request(
        s.addr,
        &format!(
            "GET /files/1k.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\nIf-Range: {lm}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!((r.status, r.body.len()), (206, 10));
}

#[test]
fn a_head_request_ignores_range() {
    let s = server(&[]);
    let (r, _) = answer_and_close(
        s.addr,
        "HEAD /files/1k.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((r.status, r.header("content-length"), r.header("content-range")), (200, Some("1024"), None));
    let (r, _) = answer_and_close(
        s.addr,
        "GET /files/1k.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((r.status, r.body.len()), (206, 10), "a GET still gets its range");
}

#[test]
fn an_http10_keep_alive_connection_is_told_so_and_kept() {
    let s = server(&[]);
    let mut c = connect(s.addr);
    for path in ["/files/1k.txt", "/plaintext", "/nothing-here", "/files/1k.txt"] {
        c.get_mut().write_all(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes()).unwrap();
        let r = read_response(&mut c, false).expect("an answer on the kept connection");
        assert_eq!(r.header("connection"), Some("keep-alive"), "{path}");
        assert_eq!(r.status, if path == "/nothing-here" { 404 } else { 200 }, "{path}");
    }
    // Without keep-alive a 1.0 connection closes after its answer, and says so.
    let (r, closed) = answer_and_close(s.addr, "GET /plaintext HTTP/1.0\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed);
}

#[test]
fn apache_bench_keep_alive_finishes_at_once() {
    let Ok(out) = Command::new("ab").arg("-V").output() else {
        panic!("ab is required (ci/test installs apache2-utils)");
    };
    assert!(out.status.success());
    let s = server(&[]);
    let t0 = Instant::now();
    // ab speaks HTTP/1.0 with `Connection: keep-alive`; told nothing, it waited for its timeout.
    let out = Command::new("ab")
        .args(["-k", "-n", "200", "-c", "4", "-s", "5"])
        .arg(format!("http://{}/files/1k.txt", s.addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Complete requests:      200"), "{text}");
    assert!(text.contains("Failed requests:        0"), "{text}");
    assert!(text.contains("Keep-Alive requests:    200"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(4), "ab took {:?}", t0.elapsed());
}

#[test]
fn later_minor_versions_are_served_as_1_1_and_other_majors_get_505() {
    let s = server(&[]);
    let mut c = connect(s.addr);
    c.get_mut()
        .write_all(b"GET /files/1k.txt HTTP/1.2\r\nHost: t\r\n\r\nGET /plaintext HTTP/1.9\r\nHost: t\r\n\r\n")
        .unwrap();
    let a = read_response(&mut c, false).unwrap();
    let b = read_response(&mut c, false).unwrap();
    assert_eq!((a.status, a.body.len(), a.header("connection")), (200, 1024, None), "kept alive, as 1.1");
    assert_eq!((b.status, &b.body[..]), (200, &b"Hello, World!"[..]));
    // As 1.1, it needs a Host.
    assert_eq!(request(s.addr, "GET /plaintext HTTP/1.2\r\n\r\n").status, 400);
    for v in ["HTTP/2.0", "HTTP/3.0", "HTTP/2"] {
        let (r, closed) = answer_and_close(s.addr, &format!("GET / {v}\r\nHost: t\r\n\r\n"));
        assert_eq!(r.status, 505, "{v}");
        assert!(closed, "{v}");
    }
    for v in ["HTTP/1.x", "HTTQ/1.1", "HTTP/11"] {
        assert_eq!(answer_and_close(s.addr, &format!("GET / {v}\r\nHost: t\r\n\r\n")).0.status, 400, "{v}");
    }
}

#[test]
fn a_connection_serves_its_request_limit_then_closes() {
    let check = |s: &example::Server, limit: usize| {
        let mut c = connect(s.addr);
        // More than the limit, pipelined: the ones past it are never answered.
        let reqs = "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n".repeat(limit + 5);
        c.get_mut().write_all(reqs.as_bytes()).unwrap();
        for i in 1..=limit {
            let r = read_response(&mut c, false).unwrap_or_else(|| panic!("answer {i} of {limit}"));
            assert_eq!(r.status, 200);
            let close = r.header("connection") == Some("close");
            assert_eq!(close, i == limit, "answer {i} of {limit}");
        }
        assert!(closed_by_server(&mut c), "closed after answer {limit}");
    };
    check(&server(&["--keepalive-requests", "3"]), 3);
    check(&server(&[]), 1000); // the default, as nginx's keepalive_requests
}

#[test]
fn responses_sent_after_sigterm_say_connection_close() {
    // A slow page keeps a request in flight while the server is told to stop.
    let s = server(&["--dynamic-us", "600000"]);
    let mut c = connect(s.addr);
    c.get_mut().write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().header("connection"), None, "kept alive before");
    c.get_mut().write_all(b"GET /dynamic HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(s.pid() as i32, libc::SIGTERM) };
    let r = read_response(&mut c, false).expect("the answer in flight is still sent");
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(closed_by_server(&mut c));
}

/// How one download ended.
#[derive(Debug, PartialEq)]
enum Download {
    /// The whole body, byte for byte.
    Whole,
    /// A refusal the client can retry: 503 with `Retry-After`.
    Busy,
    /// The connection failed (a reset): the client knows it has nothing.
    Failed,
    /// A 200 whose body ended early with a clean close: what must never happen.
    Truncated(usize),
}

#[test]
fn out_of_descriptors_a_large_file_gets_503_never_a_short_200() {
    use std::io::{BufReader, Read};
    let dir = TempDir::new("fd-shortage");
    let file = pattern(8 << 20);
    std::fs::write(dir.join("big.bin"), &file).unwrap();
    // Few descriptors, and a file too large to cache: each transfer holds it open and a pipe
    // (three), and stalls once the socket buffers are full (up to 4 MiB on the server's side).
    let s = example::start_limited("http", &["--root", dir.root(), "--cache-file-kb", "64"], Some(128));
    let n = 120;
    let go = std::sync::Arc::new(std::sync::Barrier::new(n));
    let ts: Vec<_> = (0..n)
        .map(|_| {
            let (addr, go, file) = (s.addr, go.clone(), file.clone());
            std::thread::spawn(move || {
                let mut c = connect(addr);
                small_receive_buffer(c.get_ref());
                c.get_mut().write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
                // Nobody reads until every request is in: the transfers hold their pipes.
                go.wait();
                read_download(&mut c, &file)
            })
        })
        .collect();
    let got: Vec<Download> = ts.into_iter().map(|t| t.join().unwrap()).collect();
    let count = |d: &Download| got.iter().filter(|g| *g == d).count();
    let truncated: Vec<_> = got.iter().filter(|g| matches!(g, Download::Truncated(_))).collect();
    assert!(truncated.is_empty(), "short 200s: {truncated:?}");
    assert!(count(&Download::Whole) > 0, "{got:?}");
    assert!(count(&Download::Busy) > 0, "the limit was never reached: {got:?}");

    fn small_receive_buffer(s: &std::net::TcpStream) {
        use std::os::fd::AsRawFd;
        let size: libc::c_int = 32 << 10;
        // SAFETY: setsockopt reads a live int of the given size on the open socket `s`.
        let rc = unsafe {
            libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, (&size as *const libc::c_int).cast(), 4)
        };
        assert_eq!(rc, 0);
    }

    fn read_download(c: &mut BufReader<std::net::TcpStream>, file: &[u8]) -> Download {
        let Some(r) = read_head(c) else { return Download::Failed };
        if r.status == 503 {
            assert_eq!(r.header("retry-after"), Some("1"));
            return Download::Busy;
        }
        assert_eq!((r.status, r.header("content-length")), (200, Some(&*file.len().to_string())));
        let mut body = Vec::new();
        match c.read_to_end(&mut body) {
            Err(_) => Download::Failed,
            Ok(_) if body == file => Download::Whole,
            Ok(n) => Download::Truncated(n),
        }
    }
}

#[test]
fn a_file_that_shrinks_during_its_transfer_resets_the_connection() {
    use std::io::Read;
    let dir = TempDir::new("shrink");
    let path = dir.join("big.bin");
    std::fs::write(&path, pattern(8 << 20)).unwrap();
    let s = server(&["--root", dir.root(), "--cache-file-kb", "64"]);
    let mut c = connect(s.addr);
    c.get_mut().write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_head(&mut c).expect("the head");
    assert_eq!((r.status, r.header("content-length")), (200, Some("8388608")));
    // The transfer stalls on the unread socket; meanwhile the file loses most of its bytes.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4096).unwrap();
    let mut body = Vec::new();
    let end = c.read_to_end(&mut body);
    assert!(body.len() < 8 << 20);
    let e = end.expect_err("a reset, not a clean end after a short body");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
}
