//! A worker that stops must not leave a live process serving nothing: the refused io_uring
//! call is named, `run_until_signal` returns the worker's error at once, and the examples
//! exit non-zero. The refusals come from a seccomp filter installed in the child process
//! between fork and exec, as a container runtime's profile would.

mod example;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringstage::prelude::*;

/// A seccomp program answering `EPERM` to system call `nr` and allowing every other.
fn deny(nr: libc::c_long) -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // seccomp_data.nr
        libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, jt: 0, jf: 1, k: nr as u32 },
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// What became of an example started under a filter denying `nr`.
struct Outcome {
    code: Option<i32>,
    stderr: String,
    /// Whether it got as far as listening, and how long it lived after saying so.
    served_for: Option<Duration>,
}

fn run_denied(example: &str, nr: libc::c_long) -> Outcome {
    let mut filter = deny(nr);
    let mut cmd = Command::new(example::example_binary(example));
    cmd.args(["--addr", "127.0.0.1:0"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only makes the two prctl
    // calls (async-signal-safe), on a filter built before the fork that the child owns a copy of.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().expect("spawn the example under the filter");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    out.read_line(&mut banner).unwrap();
    let listening = banner.contains("listening").then(Instant::now);
    // Bounded: a child that lingers is killed, and the test fails on its exit code.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    Outcome { code: status.code(), stderr, served_for: listening.map(|t| t.elapsed()) }
}

#[test]
fn a_refused_io_uring_enter_stops_the_example_at_once_with_its_name() {
    let o = run_denied("echo", libc::SYS_io_uring_enter);
    // Set-up needs no enter: the server starts, then its worker's first enter is refused.
    let served = o.served_for.expect("the ring is set up without an enter");
    assert_eq!(o.code, Some(1), "exits non-zero: {}", o.stderr);
    assert!(o.stderr.contains("io_uring_enter was refused (EPERM)") && o.stderr.contains("seccomp"), "{}", o.stderr);
    assert!(o.stderr.contains("worker 0"), "{}", o.stderr);
    // Measured here at a few ms; the bound leaves room for a loaded machine.
    assert!(served < Duration::from_secs(1), "lingered {served:?} after its worker stopped");
}

#[test]
fn a_refused_io_uring_register_fails_start_with_its_name() {
    let o = run_denied("echo", libc::SYS_io_uring_register);
    assert!(o.served_for.is_none(), "started: {}", o.stderr);
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("io_uring_register (IORING_REGISTER_PROBE) was refused (EPERM)"), "{}", o.stderr);
    assert!(!o.stderr.contains("io_uring_setup was refused"), "{}", o.stderr);
}

#[test]
fn a_refused_io_uring_setup_fails_start_with_its_name() {
    let o = run_denied("http", libc::SYS_io_uring_setup);
    assert!(o.served_for.is_none(), "started: {}", o.stderr);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("io_uring_setup was refused (EPERM)") && o.stderr.contains("seccomp"), "{}", o.stderr);
}

struct Bomb;

impl Handler for Bomb {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        if let NetEvent::Data { data, .. } = ev {
            if &data[..] == b"boom" {
                panic!("the handler met a bad input");
            }
        }
    }
}

#[test]
fn a_fatal_handler_panic_ends_run_until_signal_with_the_panic_message() {
    let mut b = Runtime::builder(2).cpus([]).signals(true).panic_policy(PanicPolicy::Fatal);
    let st = b.stage::<NetEvent>("bomb", StageConfig::on([1]));
    let (_net, l) = b.listen(ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]), st);
    b.handler(st, |_| Bomb);
    let rt = b.start().unwrap();
    let addr = rt.local_addr(l);
    let t = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut s, b"boom").unwrap();
        Instant::now()
    });
    let err = rt.run_until_signal().expect_err("a dead worker ends the wait");
    let sent = t.join().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("worker 1") && msg.contains("the handler met a bad input"), "{msg}");
    assert!(sent.elapsed() < Duration::from_secs(1), "returned {:?} after the panic", sent.elapsed());
}

/// Echoes, but panics on `boom`.
struct EchoBomb {
    net: Sink<NetCmd>,
}

impl Handler for EchoBomb {
    type Event = NetEvent;
    fn handle(&mut self, ev: NetEvent, _cx: &mut Context<'_>) {
        if let NetEvent::Data { conn, data } = ev {
            if &data[..] == b"boom" {
                panic!("the handler met a bad input");
            }
            self.net.try_enqueue(NetCmd::Send { conn, data }).expect("the net stage takes the echo");
        }
    }
}

fn echoed(s: &mut std::net::TcpStream, msg: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    s.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).unwrap();
    got
}

#[test]
fn an_isolated_handler_panic_aborts_only_its_connection_and_is_counted() {
    use std::io::Read;
    // The handler runs on the other worker than the network stage: the abort crosses cores.
    let mut b = Runtime::builder(2).cpus([]);
    let st = b.stage::<NetEvent>("bomb", StageConfig::on([1]));
    let (net, l) = b.listen(ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]), st);
    b.handler(st, move |s| EchoBomb { net: s.sink(net) });
    let rt = b.start().unwrap();
    let addr = rt.local_addr(l);
    let connect = || {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let (mut good, mut bad) = (connect(), connect());
    assert_eq!(echoed(&mut good, b"hello"), b"hello");
    std::io::Write::write_all(&mut bad, b"boom").unwrap();
    let mut buf = [0u8; 16];
    let r = bad.read(&mut buf);
    assert_eq!(r.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset), "the panicking connection is reset");
    // The worker lives on: the other connection, and new ones, are served.
    assert_eq!(echoed(&mut good, b"again"), b"again");
    assert_eq!(echoed(&mut connect(), b"new"), b"new");
    let m = rt.metrics();
    let bomb = m.stages.iter().find(|s| s.name == "bomb").unwrap();
    assert_eq!(bomb.panics, 1);
    rt.shutdown();
    rt.join().expect("an isolated panic is not a worker failure");
}
