//! The deployment docs/deploy.md shows, as it shows it: two copies of the HTTP example behind
//! HAProxy with health checks, one copy stopped under a steady load, no request lost.

mod example;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The HAProxy configuration of docs/deploy.md, with `front` and the copies' ports in place of
/// 8080, 8081 and 8082.
fn documented_config(front: u16, a: u16, b: u16) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deploy.md")).unwrap();
    let start = doc.find("```haproxy\n").expect("docs/deploy.md shows an HAProxy configuration") + 11;
    let len = doc[start..].find("```").unwrap();
    let cfg = doc[start..start + len].to_string();
    assert!(cfg.contains(":8080") && cfg.contains(":8081") && cfg.contains(":8082"), "{cfg}");
    cfg.replace(":8080", &format!(":{front}")).replace(":8081", &format!(":{a}")).replace(":8082", &format!(":{b}"))
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request on a new connection: the status code, or 0 for no answer.
fn get(port: u16) -> u16 {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else { return 0 };
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if c.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").is_err() {
        return 0;
    }
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn two_copies_behind_haproxy_lose_no_request_when_one_stops() {
    let found = Command::new("haproxy").arg("-v").output();
    assert!(found.is_ok_and(|o| o.status.success()), "haproxy is required (ci/test installs it)");
    let copy_a = example::start("http", &[]);
    let copy_b = example::start("http", &[]);
    let (pa, pb, front) = (copy_a.addr.port(), copy_b.addr.port(), example::free_port());
    let dir = std::env::temp_dir().join(format!("rs-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, documented_config(front, pa, pb)).unwrap();
    let check = Command::new("haproxy").arg("-c").arg("-f").arg(&cfg).output().unwrap();
    assert!(
        check.status.success(),
        "the documented configuration is valid: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _lb = Haproxy(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Up once it answers (and both copies are checked up: `rise 2` at 200 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(front) != 200 {
        assert!(Instant::now() < deadline, "haproxy answers");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(600));

    // A steady load: one request after another, each on a new connection, for a bounded time.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let load = std::thread::spawn(move || {
        let mut statuses = Vec::new();
        while !s2.load(Ordering::Relaxed) && statuses.len() < 20_000 {
            statuses.push(get(front));
        }
        statuses
    });
    std::thread::sleep(Duration::from_millis(500));
    drop(copy_a); // SIGTERM, then waits for it to exit
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let statuses = load.join().unwrap();
    let failed = statuses.iter().filter(|&&s| s != 200).count();
    assert!(statuses.len() > 50, "the load ran: {} requests", statuses.len());
    assert_eq!(failed, 0, "{failed} of {} requests failed", statuses.len());
    // The remaining copy serves alone.
    assert_eq!(get(front), 200);
    drop(copy_b);
    let _ = std::fs::remove_dir_all(&dir);
}
