//! Running under systemd's protocols: the HTTP example started by `systemd-socket-activate`
//! (Debian's systemd package) serves the socket it is given and reports readiness and
//! shutdown on `NOTIFY_SOCKET`; a descriptor of the wrong kind is refused with a clear error.

mod example;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

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
    let port = free_port();
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
    let port = free_port();
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
