//! Running out of descriptors. Connections live in the ring's file table by default (direct
//! descriptors) and in the process's descriptor table without it; either way a full table makes
//! the server back off and re-arm instead of spinning, and serve again once room frees up.
//! Its own test binary with one test, because it lowers RLIMIT_NOFILE and counts the process's
//! open descriptors.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ringstage::prelude::*;
use ringstage::runtime::RingConfig;

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

fn builder(fixed_files: bool) -> Builder {
    Runtime::builder(1).ring(RingConfig { fixed_files, ..RingConfig::default() })
}

/// Accepted connections take a process descriptor only without the file table.
fn descriptors_per_connection(fixed_files: bool) -> u64 {
    let (rt, addr) = echo_server(builder(fixed_files), 0, |c| c);
    let before = open_fds();
    let mut held = Vec::new();
    for i in 0..32u8 {
        use std::io::{Read, Write};
        let mut s = connect(addr);
        s.write_all(&[i]).unwrap();
        let mut b = [0u8];
        s.read_exact(&mut b).unwrap(); // served: the server has accepted it
        assert_eq!(b[0], i);
        held.push(s);
    }
    let grown = open_fds() - before;
    drop(held);
    rt.shutdown();
    rt.join().unwrap();
    assert!(grown >= 32, "each client socket is a descriptor of this process: {grown}");
    (grown - 32) / 32
}

/// `connections` clients (in a child process, so their descriptors do not count against ours)
/// against a server started under a limit leaving room for a few more descriptors only.
fn backs_off_when_full(fixed_files: bool) {
    let what = if fixed_files { "full file table (ENFILE)" } else { "EMFILE" };
    // The child is spawned (inheriting the normal limit) before ours is lowered, and connects
    // once it reads the port. The kernel reads the limit when an accept is armed (plain
    // descriptors) or when the file table is sized (at start), so the server starts after the
    // limit is lowered.
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
    let mut orig = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into a live struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut orig) }, 0);
    // Room for the runtime's own descriptors (ring, eventfd, listener) and a few connections.
    let limit = open_fds() + 10;
    let lim = libc::rlimit { rlim_cur: limit, rlim_max: orig.rlim_max };
    // SAFETY: plain setrlimit with a live struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let (rt, addr) = echo_server(builder(fixed_files), 0, |c| c);
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
    assert!(m.total(|w| w.accept_backoffs) > 0, "{what} was hit: {:?}", m.workers);
    let loops_per_sec = (m.total(|w| w.loops) - loops0) as f64 / elapsed;
    assert!(loops_per_sec < 2000.0, "{what}: the worker backs off instead of spinning: {loops_per_sec:.0} loops/s");

    // Restore the limit: the child's connections closed, so the backed-off accept re-arms
    // and serves new clients.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &orig) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = std::panic::catch_unwind(|| roundtrip(addr, pattern(42, 4096), 64));
        if r.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "server recovered after {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn full_descriptor_tables_back_off_without_spinning() {
    assert_eq!(descriptors_per_connection(true), 0, "direct descriptors take no process descriptor");
    assert_eq!(descriptors_per_connection(false), 1, "without the file table each connection is a descriptor");
    backs_off_when_full(false);
    backs_off_when_full(true);
}
