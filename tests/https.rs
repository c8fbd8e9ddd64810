//! The HTTP example over TLS (`--tls-self-signed`, `--tls-cert`/`--tls-key`), checked with
//! real clients: curl for a page and a file too large for the page cache (read and encrypted
//! in user space, since only kernel TLS could splice it), `openssl s_client` for the protocol
//! and ALPN, and bad key files refused at start with the file named.

mod example;

use std::process::Command;

fn curl(args: &[&str]) -> std::process::Output {
    let out = Command::new("curl").args(["-sk", "--max-time", "20"]).args(args).output();
    out.expect("curl is required (ci/test installs it)")
}

#[test]
fn curl_and_openssl_get_pages_and_large_files_over_tls() {
    let dir = std::env::temp_dir().join(format!("rs-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big: Vec<u8> = (0..6_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    std::fs::write(dir.join("index.html"), b"<p>hello over tls</p>").unwrap();
    let server = example::start("http", &["--tls-self-signed", "--root", dir.to_str().unwrap()]);
    let base = format!("https://localhost:{}", server.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", server.addr.port());

    let page = curl(&["--resolve", &resolve, &format!("{base}/index.html")]);
    assert!(page.status.success(), "{}", String::from_utf8_lossy(&page.stderr));
    assert_eq!(page.stdout, b"<p>hello over tls</p>");
    // Above the page cache's file limit (4 MiB): sent from the file, encrypted on the way.
    let file = curl(&["--resolve", &resolve, &format!("{base}/big.bin")]);
    assert!(file.status.success(), "{}", String::from_utf8_lossy(&file.stderr));
    assert!(file.stdout == big, "the large file came back whole ({} bytes)", file.stdout.len());
    // Several requests on one connection, as curl reuses it.
    let two = curl(&["--resolve", &resolve, &format!("{base}/index.html"), &format!("{base}/index.html")]);
    assert_eq!(two.stdout, b"<p>hello over tls</p><p>hello over tls</p>".to_vec());

    let s = Command::new("openssl")
        .args(["s_client", "-connect", &server.addr.to_string(), "-alpn", "http/1.1"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is required (ci/test installs it)");
    let text = String::from_utf8_lossy(&s.stderr).into_owned() + &String::from_utf8_lossy(&s.stdout);
    assert!(text.contains("New, TLSv1.3"), "{text}");
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn key_files_that_are_missing_or_not_pem_are_refused_with_their_name() {
    let dir = std::env::temp_dir().join(format!("rs-https-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, b"not a certificate").unwrap();
    let (code, err) =
        example::refused("http", &["--tls-cert", cert.to_str().unwrap(), "--tls-key", "/nonexistent/key.pem"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cert.pem") && err.contains("no certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
