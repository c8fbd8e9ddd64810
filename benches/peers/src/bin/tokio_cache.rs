//! The cache server of `examples/cache.rs` (`GET`, `SET`, `DEL` in RESP), written the natural
//! way on tokio: a task per connection reading into a buffer, parsing the complete commands in
//! it, and writing their replies with one `write_all`; the table behind an `Rc<RefCell>` on a
//! current-thread runtime (one core, pinned by the bench script), values kept framed.
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Table = Rc<RefCell<HashMap<Vec<u8>, Rc<Vec<u8>>>>>;

/// `\r\n`-terminated decimal at `at`: the number and where its line ends.
fn number(input: &[u8], at: usize) -> Option<Result<(usize, usize), ()>> {
    let end = at + input.get(at..)?.iter().position(|&b| b == b'\r')?;
    if input.len() < end + 2 {
        return None;
    }
    let n = std::str::from_utf8(&input[at..end]).ok().and_then(|s| s.parse().ok());
    Some(n.map(|n| (n, end + 2)).ok_or(()))
}

/// A command's words (ranges of the input) and its length.
type Parsed = (Vec<std::ops::Range<usize>>, usize);

/// One command at the front of `input`; `None`: not complete yet.
fn parse(input: &[u8]) -> Option<Result<Parsed, ()>> {
    if input.first()? != &b'*' {
        return Some(Err(()));
    }
    let (n, mut at) = match number(input, 1)? {
        Ok(v) => v,
        Err(()) => return Some(Err(())),
    };
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        if input.get(at)? != &b'$' {
            return Some(Err(()));
        }
        let (len, start) = match number(input, at + 1)? {
            Ok(v) => v,
            Err(()) => return Some(Err(())),
        };
        if input.len() < start + len + 2 {
            return None;
        }
        words.push(start..start + len);
        at = start + len + 2;
    }
    Some(Ok((words, at)))
}

fn run(table: &Table, input: &[u8], words: &[std::ops::Range<usize>], out: &mut Vec<u8>) {
    let w = |i: usize| &input[words[i].clone()];
    match (w(0), words.len()) {
        (b"GET" | b"get", 2) => match table.borrow().get(w(1)) {
            Some(v) => out.extend_from_slice(v),
            None => out.extend_from_slice(b"$-1\r\n"),
        },
        (b"SET" | b"set", 3) => {
            let v = w(2);
            let mut framed = format!("${}\r\n", v.len()).into_bytes();
            framed.extend_from_slice(v);
            framed.extend_from_slice(b"\r\n");
            table.borrow_mut().insert(w(1).to_vec(), Rc::new(framed));
            out.extend_from_slice(b"+OK\r\n");
        }
        (b"DEL" | b"del", 2) => {
            let gone = table.borrow_mut().remove(w(1)).is_some();
            out.extend_from_slice(if gone { b":1\r\n" } else { b":0\r\n" });
        }
        _ => out.extend_from_slice(b"-ERR unknown command\r\n"),
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6501".into());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let l = TcpListener::bind(&addr).await?;
        println!("tokio cache listening on {addr}");
        let table: Table = Rc::default();
        loop {
            let (mut s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            let table = table.clone();
            tokio::task::spawn_local(async move {
                let mut buf = Vec::with_capacity(16 << 10);
                let mut out = Vec::with_capacity(16 << 10);
                let mut chunk = vec![0u8; 16 << 10];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut at = 0;
                    while at < buf.len() {
                        match parse(&buf[at..]) {
                            None => break,
                            Some(Err(())) => {
                                let _ = s.write_all(b"-ERR Protocol error\r\n").await;
                                return;
                            }
                            Some(Ok((words, len))) => {
                                run(&table, &buf[at..at + len], &words, &mut out);
                                at += len;
                            }
                        }
                    }
                    buf.drain(..at);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            });
        }
    })
}
