//! Running under systemd's protocols: the HTTP example started by `systemd-socket-activate`
//! (Debian's systemd package) serves the socket it is given and reports readiness and
//! shutdown on `NOTIFY_SOCKET`; a descriptor of the wrong kind is refused with a clear error.

mod example;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn activator() -> Command {
    let found = Command::new("systemd-socket-activate").arg("--version").output();
    assert!(found.is_ok_and(|o| o.status.success()), "systemd-socket-activate is required (ci/test installs systemd)");
    Command::new("systemd-socket-activate")
}

/// Connects, retrying while the activator is not listening yet.
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) => assert!(Instant::now() < deadline, "connect: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_http_example_serves_an_activated_socket_and_notifies_the_manager() {
    let dir = std::env::temp_dir().join(format!("rs-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = example::free_port();
    // `--addr` names a port nobody listens on: the example must serve the activated socket.
    // The activator gives its child only the variables it is told to (`-E`).
    let mut child = activator()
        .args(["-l", &format!("127.0.0.1:{port}"), "--fdname=http"])
        .args(["-E", &format!("NOTIFY_SOCKET={}", path.display())])
        .arg(example::example_binary("http"))
        .args(["--addr", "127.0.0.1:1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The activator starts the server on the first connection, which then waits in the backlog.
    let mut c = connect(port);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.ends_with("Hello, World!"), "{reply}");
    let mut buf = [0u8; 256];
    let n = manager.recv(&mut buf).expect("READY=1 from the server");
    assert_eq!(&buf[..n], b"READY=1");
    // SIGTERM: the server says it is stopping, then exits cleanly. (The activator exec'd it.)
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let n = manager.recv(&mut buf).expect("STOPPING=1 from the server");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_activated_socket_of_the_wrong_kind_is_refused_with_a_clear_error() {
    let port = example::free_port();
    let mut child = activator()
        .args(["--datagram", "-l", &format!("127.0.0.1:{port}")])
        .arg(example::example_binary("http"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A datagram starts it.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let _ = u.send_to(b"x", ("127.0.0.1", port));
        std::thread::sleep(Duration::from_millis(50));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(err.contains("is a datagram socket, not a stream socket"), "{err}");
}

/// Starts the HTTP example on `listener` as socket activation would hand it over (descriptor
/// 3, `LISTEN_FDS=1`, `LISTEN_PID` its own pid); returns once it serves.
fn start_on(listener: &TcpListener) -> std::process::Child {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    // `$$` is the shell's pid, which `exec` keeps for the server.
    cmd.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""])
        .arg(example::example_binary("http"))
        .args(["--addr", "127.0.0.1:1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: runs in the forked child before exec and calls only dup2 and fcntl, which are
    // async-signal-safe, on descriptors the child inherited.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0); // keep it across exec
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().unwrap();
    let mut banner = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut banner).unwrap();
    assert!(banner.starts_with("http listening on"), "{banner:?}");
    child
}

/// One keep-alive client: requests `/plaintext` until `stop`, reconnecting when the server
/// says `Connection: close`. A connection that ends before any byte of an answer is retried,
/// as HTTP clients retry an idempotent request (RFC 9112 §9.3.1); any other failure is lost.
/// Returns (answered, retried, lost).
fn keep_asking(addr: std::net::SocketAddr, stop: &std::sync::atomic::AtomicBool) -> (u64, u64, Vec<String>) {
    let (mut answered, mut retried, mut lost) = (0, 0, Vec::new());
    let mut conn: Option<std::io::BufReader<TcpStream>> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let c = match &mut conn {
            Some(c) => c,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    conn.insert(std::io::BufReader::new(s))
                }
                Err(e) => {
                    lost.push(format!("connect: {e}"));
                    continue;
                }
            },
        };
        if c.get_mut().write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").is_err() {
            retried += 1;
            conn = None;
            continue;
        }
        match read_answer(c) {
            Ok(close) => {
                answered += 1;
                if close {
                    conn = None;
                }
            }
            Err(None) => {
                retried += 1;
                conn = None;
            }
            Err(Some(e)) => {
                lost.push(e);
                conn = None;
            }
        }
    }
    (answered, retried, lost)
}

/// Reads one answer: whether it said `Connection: close`; `Err(None)` if the connection
/// ended before any of it, `Err(Some(why))` otherwise.
fn read_answer(c: &mut std::io::BufReader<TcpStream>) -> Result<bool, Option<String>> {
    use std::io::BufRead;
    let (mut close, mut len, mut first) = (false, 0usize, true);
    loop {
        let mut line = String::new();
        match c.read_line(&mut line) {
            Ok(0) | Err(_) if first => return Err(None),
            Ok(0) => return Err(Some("the answer was cut short".into())),
            Err(e) => return Err(Some(format!("read: {e}"))),
            Ok(_) => {}
        }
        if first && !line.starts_with("HTTP/1.1 200") {
            return Err(Some(format!("status line {line:?}")));
        }
        first = false;
        let l = line.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if l.starts_with("connection:") && l.contains("close") {
            close = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).map_err(|e| Some(format!("body: {e}")))?;
    Ok(close)
}

#[test]
fn a_restart_on_the_same_socket_loses_no_request() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let old = start_on(&listener);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || keep_asking(addr, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    // The new instance starts on the same socket, then the old one is told to stop: it drains
    // what it has, and every connection after that is the new one's.
    let mut new = start_on(&listener);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(old.id() as i32, libc::SIGTERM) };
    let mut old = old;
    assert!(old.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut answered, mut retried, mut lost) = (0, 0, Vec::new());
    for c in clients {
        let (a, r, l) = c.join().unwrap();
        answered += a;
        retried += r;
        lost.extend(l);
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(new.id() as i32, libc::SIGTERM) };
    assert!(new.wait().unwrap().success());
    assert!(lost.is_empty(), "lost {} of {answered} requests: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    assert!(answered > 1000, "{answered} answered");
    eprintln!("{answered} answered, {retried} retried on a connection closed before its answer");
}
