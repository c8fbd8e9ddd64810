//! An HTTP/1.1 client for the HTTP example's loopback tests: raw requests, response heads
//! and bodies read exactly, temporary document roots.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::example::{self, Server};

/// A fresh directory under the system temp dir for a test's files, removed when dropped (also
/// when the test fails). Declare it before the server, so the server goes first.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ringstage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }

    pub fn root(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bundled() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/http/www")
}

pub fn server(args: &[&str]) -> Server {
    example::start("http", args)
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(s)
}

/// Reads one response; `head` says whether it answers a HEAD request (no body).
pub fn read_response(r: &mut BufReader<TcpStream>, head: bool) -> Option<Response> {
    let mut resp = read_head(r)?;
    let len: usize = resp.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    if !head && resp.status != 304 {
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body).ok()?;
    }
    Some(resp)
}

/// Reads a response's status line and header fields, leaving its body unread.
pub fn read_head(r: &mut BufReader<TcpStream>) -> Option<Response> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some(Response { status, headers, body: Vec::new() })
}

/// Deterministic bytes for test files (xorshift), so every byte checked counts.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut c = connect(addr);
    c.get_mut().write_all(raw.as_bytes()).unwrap();
    read_response(&mut c, raw.starts_with("HEAD")).expect("a response")
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
}

/// The connection is closed by the server (EOF or reset) within the read timeout.
pub fn closed_by_server(c: &mut BufReader<TcpStream>) -> bool {
    let mut b = [0u8; 1];
    matches!(c.read(&mut b), Ok(0) | Err(_))
}
