//! Accept under EMFILE: the server backs off and re-arms instead of spinning, and serves again
//! once descriptors free up. Its own test binary, because it lowers RLIMIT_NOFILE.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ringstage::prelude::*;

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[test]
fn emfile_backs_off_without_spinning() {
    // The clients live in a child process, so their descriptors do not count against ours. It
    // is spawned (inheriting the normal limit) before ours is lowered, and connects once it
    // reads the port. The kernel reads the limit when an accept is armed, so the server
    // starts after the limit is lowered.
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import socket,sys,time\n\
             port=int(sys.stdin.readline())\n\
             cs=[socket.create_connection(('127.0.0.1',port)) for _ in range(24)]\n\
             time.sleep(1.5)\n",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the client side");
    // Leave room for a few more descriptors only.
    let mut orig = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into a live struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut orig) }, 0);
    // Room for the runtime's own descriptors (ring, eventfd, listener) and a few connections.
    let limit = open_fds() + 10;
    let lim = libc::rlimit { rlim_cur: limit, rlim_max: orig.rlim_max };
    // SAFETY: plain setrlimit with a live struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let (rt, addr) = echo_server(Runtime::builder(1), 0, |c| c);
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", addr.port()).unwrap();
    }
    let loops0 = rt.metrics().total(|w| w.loops);
    let t0 = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success());
    let m = rt.metrics();
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(m.total(|w| w.accept_backoffs) > 0, "EMFILE was hit: {:?}", m.workers);
    let loops_per_sec = (m.total(|w| w.loops) - loops0) as f64 / elapsed;
    assert!(loops_per_sec < 2000.0, "the worker backs off instead of spinning: {loops_per_sec:.0} loops/s");

    // Restore the limit: the backed-off accept re-arms and serves new clients.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &orig) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = std::panic::catch_unwind(|| roundtrip(addr, pattern(42, 4096), 64));
        if r.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "server recovered after EMFILE");
        std::thread::sleep(Duration::from_millis(50));
    }
}
