//! Unix domain stream listeners: echo over a socket file and an abstract name, a stale socket
//! file replaced, a live one refused, the file's permissions set.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ringstage::prelude::*;

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rs-unix-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("s.sock")
}

/// An echo server on `cfg` with two workers accepting.
fn unix_echo(cfg: ListenConfig) -> Runtime {
    let mut b = Runtime::builder(2).cpus([]);
    let echo = b.stage::<NetEvent>("echo", StageConfig::on([0, 1]));
    let (net, _) = b.listen(cfg, echo);
    b.handler(echo, move |s| Echo { net: s.sink(net) });
    b.start().expect("runtime starts")
}

fn echo_over(connect: impl Fn() -> UnixStream) {
    for i in 0..8u64 {
        let mut c = connect();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let msg = pattern(i, 100_000);
        let mut w = c.try_clone().unwrap();
        let m = msg.clone();
        let writer = std::thread::spawn(move || w.write_all(&m).unwrap());
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == msg, "connection {i}: the echo came back whole");
    }
}

#[test]
fn a_unix_socket_file_serves_with_its_mode_and_a_stale_file_is_replaced() {
    let path = temp_path("file");
    // A server that died left its socket file behind.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let rt = unix_echo(ListenConfig::unix(&path, Some(0o600), [0, 1]).expect("the stale file is replaced"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    echo_over(|| UnixStream::connect(&path).unwrap());
    rt.shutdown();
    rt.join().unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn a_socket_file_a_live_server_listens_on_is_refused_by_name() {
    let path = temp_path("live");
    let _live = UnixListener::bind(&path).unwrap();
    let err = ListenConfig::unix(&path, None, [0]).expect_err("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    // A path in a directory that does not exist says so.
    let err = ListenConfig::unix(Path::new("/nonexistent-dir/x.sock"), None, [0]).expect_err("refused");
    assert!(err.to_string().contains("/nonexistent-dir/x.sock"), "{err}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn an_abstract_unix_socket_serves() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("rs-test-{}", std::process::id());
    let rt = unix_echo(ListenConfig::unix(format!("@{name}"), None, [0, 1]).unwrap());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    echo_over(|| UnixStream::connect_addr(&addr).unwrap());
    rt.shutdown();
    rt.join().unwrap();
}
