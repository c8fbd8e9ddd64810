//! The staged HTTP example end to end on loopback: the real binary, real sockets.

mod example;
mod http_client;
mod linger;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use http_client::*;

#[test]
fn serves_bundled_files_with_headers() {
    let s = server(&[]);
    let r = get(s.addr, "/");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&r.body).contains("<h1>ringstage</h1>"));
    for f in ["files/1k.txt", "files/100k.bin", "style.css"] {
        let r = get(s.addr, &format!("/{f}"));
        assert_eq!(r.status, 200, "{f}");
        assert_eq!(r.body, std::fs::read(bundled().join(f)).unwrap(), "{f} byte for byte");
        assert!(r.header("etag").is_some() && r.header("last-modified").is_some() && r.header("date").is_some());
    }
    assert_eq!(get(s.addr, "/files/1k.txt").header("content-type"), Some("text/plain; charset=utf-8"));
    let p = get(s.addr, "/plaintext");
    assert_eq!((p.status, p.body.as_slice()), (200, &b"Hello, World!"[..]));
    assert_eq!(get(s.addr, "/missing.html").status, 404);
    // The absolute form (RFC 9112 §3.2.2: a server must accept it) names the same resources.
    let r = get(s.addr, "http://127.0.0.1:8080/files/1k.txt");
    assert_eq!((r.status, r.body), (200, std::fs::read(bundled().join("files/1k.txt")).unwrap()));
    assert_eq!(get(s.addr, "HTTP://example.org/plaintext").body, b"Hello, World!");
    assert!(
        String::from_utf8_lossy(&get(s.addr, "https://h?q=1").body).contains("<h1>ringstage</h1>"),
        "empty path: /"
    );
    assert_eq!(get(s.addr, "http:///files/1k.txt").status, 400, "no authority");
    assert_eq!(get(s.addr, "files/1k.txt").status, 400, "neither form");
}

#[test]
fn directories_are_redirected_to_their_slashed_name_and_serve_their_index() {
    let dir = TempDir::new("dirs");
    std::fs::create_dir_all(dir.join("docs/empty")).unwrap();
    std::fs::write(dir.join("docs/index.html"), b"<p>docs</p>").unwrap();
    std::fs::create_dir_all(dir.join("odd/index.html")).unwrap(); // an index that is a directory
    let s = server(&["--root", dir.root()]);
    // Without the slash, the index's relative links would resolve against the parent.
    let r = get(s.addr, "/docs");
    assert_eq!((r.status, r.header("location")), (301, Some("/docs/")));
    let r = get(s.addr, "/docs?x=1");
    assert_eq!((r.status, r.header("location")), (301, Some("/docs/?x=1")), "the query is kept");
    let r = get(s.addr, "http://h/docs/empty");
    assert_eq!((r.status, r.header("location")), (301, Some("/docs/empty/")));
    let r = request(s.addr, "HEAD /docs HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (301, 0));
    assert_eq!(get(s.addr, "/docs/").body, b"<p>docs</p>");
    assert_eq!(get(s.addr, "/docs/empty/").status, 404, "no index.html");
    assert_eq!(get(s.addr, "/odd/").status, 403, "not a regular file");
    assert_eq!(get(s.addr, "/nothing").status, 404);
}

#[test]
fn head_keep_alive_and_pipelining() {
    let s = server(&[]);
    let mut c = connect(s.addr);
    // HEAD: the GET's headers, no body.
    c.get_mut().write_all(b"HEAD /files/1k.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let h = read_response(&mut c, true).unwrap();
    assert_eq!((h.status, h.header("content-length")), (200, Some("1024")));
    // Keep-alive on the same connection, then three pipelined requests in one write, with a
    // cache miss first so later hits must wait their turn.
    c.get_mut().write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().body, b"Hello, World!");
    c.get_mut()
        .write_all(b"GET /style.css HTTP/1.1\r\nHost: t\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: t\r\n\r\nGET /files/1k.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let a = read_response(&mut c, false).unwrap();
    let b = read_response(&mut c, false).unwrap();
    let d = read_response(&mut c, false).unwrap();
    assert!(a.header("content-type").unwrap().starts_with("text/css"), "in order: css first");
    assert_eq!(b.body, b"Hello, World!");
    assert_eq!(d.body.len(), 1024);
    assert_eq!(d.header("connection"), Some("close"));
    assert!(closed_by_server(&mut c), "Connection: close is honoured");
    // HTTP/1.0 closes by default.
    let mut c = connect(s.addr);
    c.get_mut().write_all(b"GET /plaintext HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 200);
    assert!(closed_by_server(&mut c));
}

#[test]
fn validators_give_304() {
    let s = server(&[]);
    let r = get(s.addr, "/files/1k.txt");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    let inm = request(
        s.addr,
        &format!("GET /files/1k.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(inm.status, 304);
    assert!(inm.body.is_empty());
    assert_eq!(inm.header("etag"), Some(etag.as_str()));
    let weak = request(
        s.addr,
        &format!(
            "GET /files/1k.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"x\", W/{etag}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(weak.status, 304);
    let other = request(
        s.addr,
        "GET /files/1k.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"nope\"\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(other.status, 200);
    let ims = request(
        s.addr,
        &format!("GET /files/1k.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: {lm}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(ims.status, 304);
    let old = request(s.addr, "GET /files/1k.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n");
    assert_eq!(old.status, 200);
}

#[test]
fn single_ranges() {
    let s = server(&[]);
    let file = std::fs::read(bundled().join("files/100k.bin")).unwrap();
    let r = |range: &str| {
        request(
            s.addr,
            &format!("GET /files/100k.bin HTTP/1.1\r\nHost: t\r\nRange: {range}\r\nConnection: close\r\n\r\n"),
        )
    };
    let a = r("bytes=0-9");
    assert_eq!((a.status, a.header("content-range")), (206, Some("bytes 0-9/102400")));
    assert_eq!(a.body, file[..10]);
    let b = r("bytes=-100");
    assert_eq!(b.body, file[file.len() - 100..]);
    let c = r("bytes=102000-");
    assert_eq!(c.body, file[102000..]);
    let d = r("bytes=200000-");
    assert_eq!((d.status, d.header("content-range")), (416, Some("bytes */102400")));
    let e = r("bytes=0-1,5-6");
    assert_eq!((e.status, e.body.len()), (200, file.len()), "multiple ranges: the whole file");
    // If-Range: the range while the client's copy is this version, else the whole file.
    let full = get(s.addr, "/files/100k.bin");
    let (etag, modified) =
        (full.header("etag").unwrap().to_string(), full.header("last-modified").unwrap().to_string());
    let ir = |v: &str| {
        let head = format!("GET /files/100k.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\nIf-Range: {v}\r\n");
        request(s.addr, &format!("{head}Connection: close\r\n\r\n"))
    };
    let same = ir(&etag);
    assert_eq!((same.status, same.body.as_slice()), (206, &file[..10]));
    assert_eq!(ir(&modified).status, 206, "the exact Last-Modified date");
    let stale = ir("\"1-2-3\"");
    assert_eq!((stale.status, stale.body.len()), (200, file.len()), "another version: the whole file");
    assert_eq!(ir(&format!("W/{etag}")).status, 200, "a weak tag never matches");
    assert_eq!(ir("Thu, 01 Jan 1970 00:00:00 GMT").status, 200);
    assert_eq!(ir("garbage").status, 200);
}

#[test]
fn header_fields_are_found_anywhere_in_a_head_up_to_the_largest_limit() {
    // The parse stage keeps where each field lies in the head as 16-bit offsets: fields past
    // 60 000 bytes of head (which arrives in several receives) must still be found.
    let s = server(&["--max-head", "65535"]);
    let file = std::fs::read(bundled().join("files/1k.txt")).unwrap();
    let etag = get(s.addr, "/files/1k.txt").header("etag").unwrap().to_string();
    let fill = "f".repeat(60_000);
    let ask = |fields: &str| {
        request(
            s.addr,
            &format!("GET /files/1k.txt HTTP/1.1\r\nHost: t\r\nX-Fill: {fill}\r\n{fields}Connection: close\r\n\r\n"),
        )
    };
    assert_eq!(ask(&format!("If-None-Match: {etag}\r\n")).status, 304);
    let part = ask("Range: bytes=10-19\r\n");
    assert_eq!((part.status, part.body.as_slice()), (206, &file[10..20]));
    assert_eq!(ask("").body, file);
    let over = "f".repeat(66_000);
    let big = request(s.addr, &format!("GET /files/1k.txt HTTP/1.1\r\nHost: t\r\nX-Fill: {over}\r\n\r\n"));
    assert_eq!(big.status, 431);
}

#[test]
fn bad_options_are_refused_at_start_with_a_clear_error() {
    for (args, says) in [
        (["--max-head", "70000"], "invalid value '70000' for '--max-head <BYTES>': 70000 is not in 1..=65535"),
        (["--max-head", "0"], "invalid value '0' for '--max-head <BYTES>': 0 is not in 1..=65535"),
        (["--max-line", "many"], "invalid value 'many' for '--max-line <BYTES>'"),
        (["--no-such-option", "1"], "unexpected argument '--no-such-option'"),
    ] {
        let (code, err) = example::refused("http", &args);
        assert_eq!(code, Some(2), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err:?}");
    }
}

#[test]
fn bad_input_gets_clear_errors_and_no_panic() {
    let s = server(&["--max-line", "512", "--max-head", "2048", "--max-body", "1000", "--header-timeout-ms", "300"]);
    assert_eq!(request(s.addr, "BLAH\r\n\r\n").status, 400);
    assert_eq!(request(s.addr, "GET / HTTP/1.1\r\n\r\n").status, 400, "HTTP/1.1 without Host");
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(600));
    assert_eq!(request(s.addr, &long).status, 414);
    // The limit is the request line's length without its CRLF: 512 bytes pass, 513 do not,
    // whether the head is complete, or cut before its line ends (then nothing more is awaited).
    let line = |n: usize| format!("GET /{} HTTP/1.1", "a".repeat(n - 14));
    assert_eq!(request(s.addr, &format!("{}\r\nHost: t\r\n\r\n", line(512))).status, 404);
    assert_eq!(request(s.addr, &format!("{}\nHost: t\n\n", line(512))).status, 404, "bare LFs");
    assert_eq!(request(s.addr, &format!("{}\r\nHost: t\r\n\r\n", line(513))).status, 414);
    assert_eq!(request(s.addr, &format!("{}\nHost: t\n\n", line(513))).status, 414, "bare LFs");
    assert_eq!(request(s.addr, &line(513)).status, 414, "no line end yet");
    assert_eq!(request(s.addr, &format!("{}\r\nHost: t\r\n", line(513))).status, 414, "head cut");
    assert_eq!(request(s.addr, &format!("GET\t/ HTTP/1.1\r\n{}\r\n\r\n", "x".repeat(600))).status, 400);
    let fat = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Fill: {}\r\n\r\n", "b".repeat(3000));
    assert_eq!(request(s.addr, &fat).status, 431);
    let many: String = (0..80).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(request(s.addr, &format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n")).status, 431);
    let both = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello";
    assert_eq!(request(s.addr, both).status, 400, "CL + TE: refused, not guessed");
    let two = "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello";
    assert_eq!(request(s.addr, two).status, 400);
    assert_eq!(request(s.addr, "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n").status, 413);
    let r = request(s.addr, "DELETE / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    // A body within the limit is skipped and the next request on the connection is served.
    let mut c = connect(s.addr);
    c.get_mut().write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbodyGET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 200);
    assert_eq!(read_response(&mut c, false).unwrap().body, b"Hello, World!");
    // A slow client that never finishes its head gets 408 after the deadline.
    let mut c = connect(s.addr);
    let t0 = Instant::now();
    c.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let r = read_response(&mut c, false).unwrap();
    assert_eq!(r.status, 408);
    assert!(t0.elapsed() >= Duration::from_millis(250));
    assert!(closed_by_server(&mut c));
    // A head split across many small writes still parses.
    let mut c = connect(s.addr);
    for b in b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n".chunks(3) {
        c.get_mut().write_all(b).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_response(&mut c, false).unwrap().status, 200);
    // Binary garbage.
    let mut c = connect(s.addr);
    c.get_mut().write_all(&[0u8, 159, 146, 150, 13, 10, 13, 10]).unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 400);
    // The server is still healthy.
    assert_eq!(get(s.addr, "/plaintext").status, 200);
}

#[test]
fn nothing_outside_the_root_is_reachable() {
    let dir = TempDir::new("root");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/ok.txt"), b"inside").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("escape")).unwrap();
    std::os::unix::fs::symlink("../", dir.join("sub/up")).unwrap();
    std::os::unix::fs::symlink("ok.txt", dir.join("sub/alias.txt")).unwrap();
    let secret = std::env::temp_dir().join(format!("ringstage-secret-{}", std::process::id()));
    std::fs::write(&secret, b"SECRET").unwrap();
    let s = server(&["--root", dir.root()]);
    assert_eq!(get(s.addr, "/sub/ok.txt").body, b"inside");
    assert_eq!(get(s.addr, "/sub/alias.txt").body, b"inside", "symlinks within the root work");
    let secret_name = secret.file_name().unwrap().to_str().unwrap();
    for (path, want) in [
        ("/../etc/passwd", 403),
        ("/%2e%2e/etc/passwd", 403),
        ("/sub/%2E%2E/%2e%2e/etc/passwd", 403),
        ("/sub%2f..%2f..%2fetc/passwd", 403),
        ("/sub/..%5c..%5cetc/passwd", 403),
        ("/ok.txt%00.html", 400),
        ("/escape", 403),
        ("http://h/../etc/passwd", 403),
        ("http://h/%2e%2e/etc/passwd", 403),
        // The authority is dropped: the path is /passwd.
        ("http://..%2f..%2fetc/passwd", 404),
        ("/sub/up/sub/ok.txt", 200), // ../ from sub is the root itself: still inside
        (&format!("/sub/up/../{secret_name}"), 403),
    ] {
        let r = request(s.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
        assert_eq!(r.status, want, "{path}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("root:") && !r.body.windows(6).any(|w| w == b"SECRET"),
            "{path}"
        );
    }
    let _ = std::fs::remove_file(&secret);
}

#[test]
fn refused_requests_get_503_at_once() {
    // Stage queues of 2: a burst of pipelined misses overflows the cache and file stages.
    let s = server(&["--stage-capacity", "2", "--cache-ttl-ms", "0"]);
    let mut conns: Vec<_> = (0..16).map(|_| connect(s.addr)).collect();
    let burst: String = (0..16).map(|_| "GET /files/1k.txt HTTP/1.1\r\nHost: t\r\n\r\n").collect();
    for c in &mut conns {
        c.get_mut().write_all(burst.as_bytes()).unwrap();
    }
    let (mut ok, mut busy) = (0, 0);
    let t0 = Instant::now();
    for c in &mut conns {
        for _ in 0..16 {
            let r = read_response(c, false).expect("every request gets an answer");
            match r.status {
                200 => ok += 1,
                503 => {
                    assert_eq!(r.header("retry-after"), Some("1"));
                    busy += 1;
                }
                other => panic!("unexpected status {other}"),
            }
            if r.header("connection") == Some("close") {
                break;
            }
        }
    }
    assert!(busy > 0, "overload produced 503s (ok {ok})");
    assert!(ok > 0, "and still served some");
    assert!(t0.elapsed() < Duration::from_secs(10), "refusals are answered at once, not hung");
}

#[test]
fn pipelined_requests_refused_under_overload_get_their_503s_in_order() {
    // Stage queues of 2: most of 300 pipelined requests are refused. Each answer, 200 or 503,
    // must answer the request in its position; a 503 sent ahead of earlier requests' answers
    // would be taken by the client for theirs.
    let s = server(&["--stage-capacity", "2"]);
    let targets = ["/plaintext", "/files/1k.txt", "/style.css"];
    let want: Vec<Vec<u8>> = targets
        .iter()
        .map(|t| match *t {
            "/plaintext" => b"Hello, World!".to_vec(),
            f => std::fs::read(bundled().join(&f[1..])).unwrap(),
        })
        .collect();
    let burst: String =
        (0..300).map(|i| format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", targets[i % targets.len()])).collect();
    let mut c = connect(s.addr);
    c.get_mut().write_all(burst.as_bytes()).unwrap();
    let (mut ok, mut busy) = (0, 0);
    for i in 0..300 {
        let r = read_response(&mut c, false).unwrap_or_else(|| panic!("answer {i} of 300"));
        match r.status {
            200 => {
                assert!(r.body == want[i % targets.len()], "answer {i} is {}'s", targets[i % targets.len()]);
                ok += 1;
            }
            503 => {
                assert_eq!(r.header("retry-after"), Some("1"));
                assert_ne!(r.header("connection"), Some("close"), "a 503 keeps the connection");
                busy += 1;
            }
            other => panic!("answer {i}: unexpected status {other}"),
        }
    }
    assert!(busy > 0 && ok > 0, "a mix of served and refused: {ok} served, {busy} refused");
}

#[test]
fn a_client_that_pipelines_without_reading_is_paused_and_gets_every_answer() {
    // The client writes requests and reads nothing. The server stops reading it once a
    // megabyte of answers waits (the listener's backpressure), so its writes block: memory
    // stays bounded. Then it reads, and every request has its answer, in order. The head the
    // pause cut in two (the server's last receive ended inside it) gets no 408 meanwhile: it is
    // the server that holds up its rest.
    // (Many more requests than a connection may make by default.)
    let s = server(&["--header-timeout-ms", "300", "--keepalive-requests", "100000000"]);
    let mut c = connect(s.addr);
    let one = b"GET /files/1k.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let batch = one.repeat(64);
    c.get_mut().set_nonblocking(true).unwrap();
    let (mut bytes, mut progress) = (0usize, Instant::now());
    // Write until nothing more goes in for half a second.
    while progress.elapsed() < Duration::from_millis(500) {
        match c.get_mut().write(&batch[bytes % one.len()..]) {
            Ok(n) => {
                bytes += n;
                progress = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("write failed: {e}"),
        }
        // Without backpressure the server reads on and this never ends (1.4 M requests in
        // 20 s measured before it, answered 94% with 503s, 340 MB resident).
        assert!(bytes < 64 << 20, "the server never stopped reading ({bytes} bytes of requests written)");
    }
    // A request cut by the block is finished once the server reads again: from a thread,
    // while this one reads the answers.
    c.get_mut().set_nonblocking(false).unwrap();
    let rest = one[bytes % one.len()..].to_vec();
    let sent = bytes.div_ceil(one.len());
    let mut w = c.get_ref().try_clone().unwrap();
    let finisher = std::thread::spawn(move || {
        if rest.len() < one.len() {
            w.write_all(&rest).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(600)); // twice the header deadline, paused
    let stats = get(s.addr, "/stats");
    let stats = String::from_utf8_lossy(&stats.body);
    assert!(
        stats.lines().any(|l| l.starts_with("ringstage_worker_backlogged_total") && !l.ends_with(" 0")),
        "the backlog was counted"
    );
    let body = std::fs::read(bundled().join("files/1k.txt")).unwrap();
    for i in 0..sent {
        let r = read_response(&mut c, false).unwrap_or_else(|| panic!("answer {i} of {sent}"));
        match r.status {
            200 => assert!(r.body == body, "answer {i}"),
            503 => {} // the client outran the cache stage: refused, in order
            other => panic!("answer {i}: unexpected status {other}"),
        }
    }
    finisher.join().unwrap();
}

#[test]
fn curl_fetches_a_file() {
    let Ok(out) = Command::new("curl").arg("--version").output() else {
        panic!("curl is required (ci/test installs it)");
    };
    assert!(out.status.success());
    let s = server(&["--workers", "2"]);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code} %{size_download}"])
        .arg(format!("http://{}/files/100k.bin", s.addr))
        .output()
        .unwrap();
    let tail = String::from_utf8_lossy(&out.stdout[out.stdout.len().saturating_sub(20)..]).to_string();
    assert!(tail.ends_with("200 102400"), "{tail}");
    assert_eq!(&out.stdout[..102400], std::fs::read(bundled().join("files/100k.bin")).unwrap().as_slice());
}

#[test]
fn stats_endpoint_serves_prometheus_text() {
    let s = server(&[]);
    assert_eq!(get(s.addr, "/files/1k.txt").status, 200);
    let r = get(s.addr, "/stats");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    for needle in [
        "# TYPE ringstage_stage_processed_total counter",
        "ringstage_stage_processed_total{stage=\"parse\"}",
        "ringstage_stage_service_seconds{stage=\"cache\",quantile=\"0.9\"}",
        "ringstage_stage_queue_wait_seconds_count{stage=\"files\"}",
        "ringstage_worker_completions_total{worker=\"0\"}",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let parse_done: u64 = text
        .lines()
        .find(|l| l.starts_with("ringstage_stage_processed_total{stage=\"parse\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(parse_done >= 3, "counts are live: {parse_done}");
    // The buffer gauges are refreshed every tick (50 ms).
    std::thread::sleep(Duration::from_millis(120));
    let text = String::from_utf8(get(s.addr, "/stats").body).unwrap();
    assert!(text.contains("# TYPE ringstage_worker_buffer_ring_window gauge"), "{text}");
    let window: u64 = text
        .lines()
        .find(|l| l.starts_with("ringstage_worker_buffer_ring_window{worker=\"0\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!((64..=2048).contains(&window), "the ring's window is within the pool: {window}");
    // The example's own counters: responses by status class, the /stats answers included.
    let fresh = server(&[]);
    for path in ["/plaintext", "/files/1k.txt", "/files", "/missing", "/plaintext"] {
        get(fresh.addr, path);
    }
    request(fresh.addr, "BLAH\r\n\r\n");
    let text = String::from_utf8(get(fresh.addr, "/stats").body).unwrap();
    assert_eq!(text.matches("# TYPE http_responses_total counter").count(), 1, "{text}");
    for (class, n) in [("2xx", 3), ("3xx", 1), ("4xx", 2), ("5xx", 0)] {
        let line = format!("http_responses_total{{class=\"{class}\"}} {n}\n");
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
}

/// The workers' heap allocations so far, from `/stats` (the example counts them with
/// `metrics::CountingAlloc`; a worker publishes its count before it sleeps).
fn worker_allocations(addr: SocketAddr) -> u64 {
    std::thread::sleep(Duration::from_millis(100)); // let the workers go idle
    let text = String::from_utf8(get(addr, "/stats").body).unwrap();
    let counts: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("ringstage_worker_allocations_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(!counts.is_empty() && counts.iter().all(|&n| n > 0), "the count is live (start-up allocates): {text}");
    counts.iter().sum()
}

#[test]
fn requests_answered_from_the_page_cache_do_not_allocate() {
    // (Many more requests per connection than the default limit of 1000.)
    let s = server(&["--workers", "1", "--keepalive-requests", "100000000"]);
    let reqs: &[(&str, &[u8])] = &[("/plaintext", b"Hello, World!"), ("/files/1k.txt", &[])];
    let want_1k = std::fs::read(bundled().join("files/1k.txt")).unwrap();
    let mut conns: Vec<_> = (0..8).map(|_| connect(s.addr)).collect();
    let mut rounds = |n: usize| {
        for _ in 0..n {
            for c in conns.iter_mut() {
                for (path, _) in reqs {
                    c.get_mut().write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).unwrap();
                }
                for (path, body) in reqs {
                    let r = read_response(c, false).expect("a response");
                    let want = if body.is_empty() { &want_1k[..] } else { body };
                    assert_eq!((r.status, r.body.as_slice()), (200, want), "{path}");
                }
            }
        }
    };
    // Warm up: the file is in the page cache, queues and pools at their working sizes.
    rounds(50);
    // Each `/stats` request allocates (its snapshot and text, its connection): measure that
    // once, then subtract it from the window with the load in it.
    let a1 = worker_allocations(s.addr);
    let a2 = worker_allocations(s.addr);
    rounds(1000); // 16,000 requests on 8 keep-alive connections, two pipelined at a time
    let b = worker_allocations(s.addr);
    let per_stats = a2 - a1;
    let in_load = (b - a2).saturating_sub(per_stats);
    // The `Date:` line and the canned `/plaintext` response are rewritten in place each second.
    // The text's length changes with its numbers, which can move a `String`'s growth by a
    // step. An allocation per request would add 16,000.
    assert!(in_load <= 4, "{in_load} allocations over 16,000 requests (each /stats: {per_stats})");
}

#[test]
fn overload_control_sheds_dynamic_load_with_503() {
    // 2 ms of work per page, a 5 ms target, and 32 clients each keeping 4 requests in flight:
    // far beyond one core. The controller must refuse part of it at once.
    let s = server(&["--dynamic-us", "2000", "--overload-target-ms", "5"]);
    assert_eq!(get(s.addr, "/dynamic").status, 200);
    let addr = s.addr;
    let clients: Vec<_> = (0..32)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = connect(addr);
                let (mut ok, mut busy) = (0u32, 0u32);
                for _ in 0..4 {
                    let burst = "GET /dynamic HTTP/1.1\r\nHost: t\r\n\r\n".repeat(4);
                    c.get_mut().write_all(burst.as_bytes()).unwrap();
                    for _ in 0..4 {
                        match read_response(&mut c, false).expect("answered").status {
                            200 => ok += 1,
                            503 => busy += 1,
                            s => panic!("status {s}"),
                        }
                    }
                }
                (ok, busy)
            })
        })
        .collect();
    let (mut ok, mut busy) = (0, 0);
    for c in clients {
        let (o, b) = c.join().unwrap();
        ok += o;
        busy += b;
    }
    assert!(busy > 0, "the controller refused some of the overload (ok {ok})");
    assert!(ok > 0, "and admitted some");
    let text = String::from_utf8(get(s.addr, "/stats").body).unwrap();
    assert!(text.contains("ringstage_stage_refused_total{stage=\"dynamic\"}"), "{text}");
}

#[test]
fn large_files_are_spliced_zero_copy_and_in_order() {
    let dir = TempDir::new("big");
    // 3 MiB + 123 bytes of a pattern: several pipe-sized chunks and an odd tail.
    let big: Vec<u8> = (0..(3 << 20) + 123u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    std::fs::write(dir.join("small.txt"), b"small").unwrap();
    // Anything over 64 KiB is not cached but spliced.
    let s = server(&["--root", dir.root(), "--cache-file-kb", "64"]);
    let r = get(s.addr, "/big.bin");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(big.len().to_string().as_str()));
    assert!(r.body == big, "spliced body is byte-exact");
    // A range of it, HEAD, and pipelined requests around a spliced body keep their order.
    let mut c = connect(s.addr);
    c.get_mut()
        .write_all(
            b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=1000000-1000009\r\n\r\n\
              HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    let part = read_response(&mut c, false).unwrap();
    assert_eq!((part.status, part.body.as_slice()), (206, &big[1_000_000..1_000_010]));
    let head = read_response(&mut c, true).unwrap();
    assert_eq!((head.status, head.body.len()), (200, 0));
    let full = read_response(&mut c, false).unwrap();
    assert!(full.body == big);
    assert_eq!(read_response(&mut c, false).unwrap().body, b"small", "after the spliced body, in order");
    let stats = String::from_utf8(get(s.addr, "/stats").body).unwrap();
    let spliced: u64 = stats
        .lines()
        .find(|l| l.starts_with("ringstage_worker_spliced_bytes_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert_eq!(spliced, 2 * big.len() as u64 + 10, "file bodies went through splice, not user memory");
}

#[test]
fn peer_reset_during_a_spliced_transfer_is_contained() {
    let dir = TempDir::new("rst");
    std::fs::write(dir.join("huge.bin"), vec![7u8; 32 << 20]).unwrap();
    let s = server(&["--root", dir.root(), "--cache-file-kb", "64"]);
    for _ in 0..4 {
        let mut c = connect(s.addr);
        c.get_mut().write_all(b"GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut some = [0u8; 4096];
        c.read_exact(&mut some).unwrap(); // the transfer is under way
        linger::reset_on_close(c.get_ref());
        drop(c); // RST mid-transfer
    }
    // The server aborted those transfers and still serves.
    let r = get(s.addr, "/plaintext");
    assert_eq!(r.status, 200);
}

#[test]
fn a_client_that_stops_reading_a_spliced_file_is_cut_off() {
    let dir = TempDir::new("stall");
    std::fs::write(dir.join("huge.bin"), vec![7u8; 32 << 20]).unwrap();
    let s = server(&["--root", dir.root(), "--cache-file-kb", "64", "--send-timeout-ms", "300"]);
    let mut c = connect(s.addr);
    c.get_mut().write_all(b"GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut some = [0u8; 4096];
    c.read_exact(&mut some).unwrap(); // the transfer is under way; now stop reading
    std::thread::sleep(Duration::from_millis(1500));
    // The server gave up on us: what it had queued arrives, then the end, far short of 32 MiB.
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest); // EOF or reset, either way the end
    assert!(rest.len() < 30 << 20, "the stalled transfer was aborted, not finished ({} bytes)", rest.len());
    // The server still serves.
    assert_eq!(get(s.addr, "/plaintext").status, 200);
}

#[test]
fn chunked_request_bodies_are_read_past_and_checked() {
    let s = server(&["--max-body", "64", "--header-timeout-ms", "300"]);
    // A chunked body with an extension and a trailer, then a pipelined request: both answered,
    // in order, and the body's bytes are not taken for a request.
    let mut c = connect(s.addr);
    c.get_mut()
        .write_all(
            b"GET /plaintext HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;x=y\r\nGET /\r\n0\r\nX-Trailer: 1\r\n\r\n\
              GET /files/1k.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().body, b"Hello, World!");
    assert_eq!(read_response(&mut c, false).unwrap().body.len(), 1024);
    // Split across receives at awkward places (inside the size, the data, the CRLFs).
    let mut c = connect(s.addr);
    let pieces: [&[u8]; 5] = [
        b"GET /plaintext HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: t\r\n\r\n1",
        b"0\r\n0123456789abcdef",
        b"\r",
        b"\n0\r",
        b"\n\r\n",
    ];
    for p in pieces {
        c.get_mut().write_all(p).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_response(&mut c, false).unwrap().status, 200);
    // Over --max-body: 413; broken framing: 400; both close the connection.
    let chunked = "GET /plaintext HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut c = connect(s.addr);
    c.get_mut().write_all(format!("{chunked}41\r\n").as_bytes()).unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 413);
    assert!(closed_by_server(&mut c));
    assert_eq!(request(s.addr, &format!("{chunked}zz\r\n")).status, 400);
    assert_eq!(request(s.addr, &format!("{chunked}3\r\nabcX")).status, 400);
    // A final coding other than chunked, or Transfer-Encoding in HTTP/1.0: 400 (RFC 9112 6.1).
    let gz = "GET /plaintext HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n";
    assert_eq!(request(s.addr, gz).status, 400);
    let twice =
        "GET /plaintext HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(request(s.addr, twice).status, 400, "chunked applied twice");
    assert_eq!(request(s.addr, "GET /plaintext HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").status, 400);
    // A body that trickles in past the header deadline: 408.
    let mut c = connect(s.addr);
    c.get_mut().write_all(format!("{chunked}5\r\nab").as_bytes()).unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 408);
}

#[test]
fn a_client_that_half_closes_after_its_requests_gets_every_answer() {
    // Like `printf 'GET ...' | nc -N`: the requests, then a FIN, then reading. The answers
    // come from later stages (a cache miss goes through the file stage), after the FIN arrived.
    let s = server(&[]);
    let mut c = connect(s.addr);
    let reqs = "GET /files/1k.txt HTTP/1.1\r\nHost: t\r\n\r\n\
                GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n\
                HEAD /index.html HTTP/1.1\r\nHost: t\r\n\r\n\
                GET /files/100k.bin HTTP/1.1\r\nHost: t\r\n\r\n";
    c.get_mut().write_all(reqs.as_bytes()).unwrap();
    c.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    let file = std::fs::read(bundled().join("files/1k.txt")).unwrap();
    let big = std::fs::read(bundled().join("files/100k.bin")).unwrap();
    let r = read_response(&mut c, false).expect("the first answer");
    assert_eq!((r.status, &r.body), (200, &file));
    let r = read_response(&mut c, false).expect("the second answer");
    assert_eq!((r.status, &r.body[..]), (200, &b"Hello, World!"[..]));
    let r = read_response(&mut c, true).expect("the third answer");
    assert_eq!(r.status, 200);
    let r = read_response(&mut c, false).expect("the fourth answer, spliced from the file");
    assert!(r.status == 200 && r.body == big);
    assert!(closed_by_server(&mut c), "then the server closes");
    // A request cut short by the FIN gets no answer, just the close.
    let mut c = connect(s.addr);
    c.get_mut().write_all(b"GET /files/1k.txt HTTP/1.1\r\nHo").unwrap();
    c.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut c));
}
