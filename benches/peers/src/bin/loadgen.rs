//! Closed-loop echo load client: `--conns` connections, each with one `--size`-byte message in
//! flight at a time (`--depth` to pipeline more), timed per message into an HDR histogram.
//! With `--server-pid` it also reads the server's CPU time (all threads, ns, from schedstat)
//! across exactly the measured window; its own CPU time over the same window is always
//! reported (`client_cpu_ns`), so a run can tell when the client, not the server, was the
//! limit. Prints one JSON line.
//!
//! `--udp 1`: UDP echo: `--conns` sockets (each connected to the server), each with `--depth`
//! datagrams of `--size` bytes in flight, each answered by `--replies` copies (default 1); a reply missing for 200 ms counts as an error and the
//! socket goes on with its next round.
//!
//! `--idle N`: open N idle connections, print `ready`, hold them until stdin closes.
//!
//! `--resp get|set`: Redis protocol, one command in flight per connection, each connection on
//! its own key. With `--slow-every K`, every K-th command of a connection (staggered across
//! connections) is `DEBUG SLEEP <--slow-ms>/1000` instead; those are counted in `slow` and kept
//! out of the latency histogram, which then holds the fast commands only. `-BUSY` replies
//! count as `refused`, other error replies as `errors`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: String,
    conns: usize,
    size: usize,
    depth: usize,
    warmup: f64,
    secs: f64,
    server_pid: Option<u32>,
    idle: usize,
    /// HTTP mode: keep-alive GETs of this path; per-connection counts give Jain's fairness.
    http: Option<String>,
    /// Open loop (HTTP mode): total requests per second, spread evenly over the connections.
    /// Latency is measured from each request's scheduled time (no coordinated omission).
    rate: Option<f64>,
    /// Connections are grouped into this many clients (connection c belongs to client
    /// c % clients) for Jain's fairness index; default: one client per connection.
    clients: Option<usize>,
    /// RESP mode: `get` or `set` commands.
    resp: Option<String>,
    /// RESP mode: every K-th command is a slow one (0: none).
    slow_every: u64,
    /// RESP mode: how long a slow command takes, in ms.
    slow_ms: f64,
    /// UDP echo mode.
    udp: bool,
    /// UDP mode: datagrams the server answers each one with.
    replies: usize,
}

fn parse() -> Args {
    let mut a = Args { addr: "127.0.0.1:7000".into(), conns: 64, size: 64, depth: 1, warmup: 1.0, secs: 5.0, server_pid: None, idle: 0, http: None, rate: None, clients: None, resp: None, slow_every: 0, slow_ms: 5.0, udp: false, replies: 1 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--addr" => a.addr = v,
            "--conns" => a.conns = v.parse().unwrap(),
            "--size" => a.size = v.parse().unwrap(),
            "--depth" => a.depth = v.parse().unwrap(),
            "--warmup" => a.warmup = v.parse().unwrap(),
            "--secs" => a.secs = v.parse().unwrap(),
            "--server-pid" => a.server_pid = Some(v.parse().unwrap()),
            "--idle" => a.idle = v.parse().unwrap(),
            "--http" => a.http = Some(v),
            "--rate" => a.rate = Some(v.parse().unwrap()),
            "--clients" => a.clients = Some(v.parse().unwrap()),
            "--resp" => a.resp = Some(v),
            "--slow-every" => a.slow_every = v.parse().unwrap(),
            "--slow-ms" => a.slow_ms = v.parse().unwrap(),
            "--udp" => a.udp = v == "1",
            "--replies" => a.replies = v.parse().unwrap(),
            _ => panic!("unknown flag {k}"),
        }
    }
    a
}

/// CPU time of every thread of `pid`, in ns.
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s.split_whitespace().next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

fn main() {
    let a = parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        if a.idle > 0 {
            let mut held = Vec::with_capacity(a.idle);
            for _ in 0..a.idle {
                held.push(TcpStream::connect(&a.addr).await.expect("connect"));
            }
            // Make sure the server has accepted them all: one round trip on the last one.
            let last = held.last_mut().unwrap();
            last.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            last.read_exact(&mut b).await.unwrap();
            println!("ready {}", held.len());
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            return;
        }
        let hist = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(100, 10_000_000_000, 3).unwrap()));
        let count = Rc::new(Cell::new(0u64));
        let measuring = Rc::new(Cell::new(false));
        let stop = Rc::new(Cell::new(false));
        let mut tasks = Vec::new();
        let clients = a.clients.unwrap_or(a.conns).clamp(1, a.conns);
        let per_conn: Rc<RefCell<Vec<u64>>> = Rc::new(RefCell::new(vec![0; clients]));
        let errors = Rc::new(Cell::new(0u64));
        let refused = Rc::new(Cell::new(0u64));
        let interval = a.rate.map(|r| Duration::from_secs_f64(a.conns as f64 / r));
        if let Some(path) = a.http.clone() {
            for c in 0..a.conns {
                let (hist, count, measuring, stop) = (hist.clone(), count.clone(), measuring.clone(), stop.clone());
                let (per_conn, errors, refused) = (per_conn.clone(), errors.clone(), refused.clone());
                let addr = a.addr.clone();
                let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes();
                tasks.push(tokio::task::spawn_local(async move {
                    let Ok(mut s) = TcpStream::connect(&addr).await else {
                        errors.set(errors.get() + 1);
                        return;
                    };
                    s.set_nodelay(true).unwrap();
                    // Responses are read straight into `buf`'s spare room (no staging buffer), and
                    // it grows only as far as the largest response needs: a big per-connection
                    // buffer would make the client's cache footprint, and so its cost per
                    // request, grow with the number of connections.
                    let mut buf: Vec<u8> = Vec::with_capacity(4096);
                    // Open loop: Poisson arrivals (exponential gaps with mean `interval`) per
                    // connection, from a per-connection xorshift stream.
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((c as u64 + 1) * 0x2545_F491_4F6C_DD1D);
                    let mut gap = move |iv: Duration| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let u = ((rng >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                        iv.mul_f64(-u.ln())
                    };
                    let mut due = interval.map(|iv| Instant::now() + gap(iv));
                    while !stop.get() {
                        let t0 = match (due.as_mut(), interval) {
                            (Some(d), Some(iv)) => {
                                tokio::time::sleep_until((*d).into()).await;
                                let t = *d;
                                *d += gap(iv);
                                t
                            }
                            _ => Instant::now(),
                        };
                        let mut status_ok;
                        // A response that ends its connection (`Connection: close`, e.g. at
                        // the server's requests-per-connection limit) is followed by a new
                        // connection, as wrk does.
                        let mut closes;
                        if s.write_all(&req).await.is_err() {
                            errors.set(errors.get() + 1);
                            return;
                        }
                        // Read one response: head, then Content-Length bytes of body.
                        let total = loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = std::str::from_utf8(&buf[..end]).unwrap_or("");
                                let ok = head.starts_with("HTTP/1.1 200");
                                status_ok = ok;
                                closes = head.lines().any(|l| l.eq_ignore_ascii_case("connection: close"));
                                let busy = head.starts_with("HTTP/1.1 503");
                                let len = head
                                    .lines()
                                    .find_map(|l| {
                                        let (k, v) = l.split_once(':')?;
                                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                                    })
                                    .unwrap_or(0);
                                if busy {
                                    if measuring.get() && buf.len() >= end + 4 + len {
                                        refused.set(refused.get() + 1);
                                    }
                                } else if !ok {
                                    errors.set(errors.get() + 1);
                                }
                                if buf.len() >= end + 4 + len {
                                    break end + 4 + len;
                                }
                            }
                            if buf.capacity() - buf.len() < 2048 {
                                buf.reserve(buf.capacity().max(4096));
                            }
                            match s.read_buf(&mut buf).await {
                                Ok(0) | Err(_) => {
                                    errors.set(errors.get() + 1);
                                    return;
                                }
                                Ok(_) => {}
                            }
                        };
                        buf.drain(..total);
                        if closes {
                            let Ok(again) = TcpStream::connect(&addr).await else {
                                errors.set(errors.get() + 1);
                                return;
                            };
                            s = again;
                            s.set_nodelay(true).unwrap();
                            buf.clear();
                        }
                        if measuring.get() && status_ok {
                            hist.borrow_mut().record((t0.elapsed().as_nanos() as u64).max(100)).unwrap();
                            count.set(count.get() + 1);
                            per_conn.borrow_mut()[c % clients] += 1;
                        }
                    }
                }));
            }
        }
        let slow = Rc::new(Cell::new(0u64));
        if let Some(mode) = a.resp.clone() {
            assert!(mode == "get" || mode == "set", "--resp get|set");
            for c in 0..a.conns {
                let (hist, count, measuring, stop) = (hist.clone(), count.clone(), measuring.clone(), stop.clone());
                let (errors, refused, slow, per_conn) = (errors.clone(), refused.clone(), slow.clone(), per_conn.clone());
                let (addr, every) = (a.addr.clone(), a.slow_every);
                let key = format!("key:{c:06}");
                let cmd = |words: &[&str]| {
                    let mut m = format!("*{}\r\n", words.len());
                    for w in words {
                        m.push_str(&format!("${}\r\n{w}\r\n", w.len()));
                    }
                    m.into_bytes()
                };
                let set = cmd(&["SET", &key, "xyz"]);
                let fast = if mode == "get" { cmd(&["GET", &key]) } else { set.clone() };
                let slow_cmd = cmd(&["DEBUG", "SLEEP", &format!("{}", a.slow_ms / 1000.0)]);
                tasks.push(tokio::task::spawn_local(async move {
                    let Ok(mut s) = TcpStream::connect(&addr).await else {
                        errors.set(errors.get() + 1);
                        return;
                    };
                    s.set_nodelay(true).unwrap();
                    let mut buf: Vec<u8> = Vec::with_capacity(512);
                    let mut n = 0u64;
                    let mut first = true;
                    while !stop.get() {
                        n += 1;
                        let is_slow = every > 0 && (n + c as u64).is_multiple_of(every);
                        let req = if first { &set } else if is_slow { &slow_cmd } else { &fast };
                        let t0 = Instant::now();
                        if s.write_all(req).await.is_err() {
                            errors.set(errors.get() + 1);
                            return;
                        }
                        // One reply: a line (+ - :), or a bulk string ($len, then len bytes + CRLF).
                        let total = loop {
                            if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                                if buf[0] != b'$' {
                                    break nl + 1;
                                }
                                let len: i64 = std::str::from_utf8(&buf[1..nl - 1]).ok().and_then(|v| v.parse().ok()).unwrap_or(-1);
                                let need = if len < 0 { nl + 1 } else { nl + 1 + len as usize + 2 };
                                if buf.len() >= need {
                                    break need;
                                }
                            }
                            match s.read_buf(&mut buf).await {
                                Ok(0) | Err(_) => {
                                    errors.set(errors.get() + 1);
                                    return;
                                }
                                Ok(_) => {}
                            }
                        };
                        let (kind, busy) = (buf[0], buf.starts_with(b"-BUSY"));
                        buf.drain(..total);
                        if first {
                            first = false;
                            continue;
                        }
                        if !measuring.get() {
                            continue;
                        }
                        if busy {
                            refused.set(refused.get() + 1);
                        } else if kind == b'-' {
                            errors.set(errors.get() + 1);
                        } else if is_slow {
                            slow.set(slow.get() + 1);
                        } else {
                            hist.borrow_mut().record((t0.elapsed().as_nanos() as u64).max(100)).unwrap();
                            count.set(count.get() + 1);
                            per_conn.borrow_mut()[c % clients] += 1;
                        }
                    }
                }));
            }
        }
        for c in 0..if a.udp { a.conns } else { 0 } {
            let (hist, count, measuring, stop, errors) = (hist.clone(), count.clone(), measuring.clone(), stop.clone(), errors.clone());
            let (addr, size, depth, expect) = (a.addr.clone(), a.size, a.depth, a.depth * a.replies);
            tasks.push(tokio::task::spawn_local(async move {
                let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
                s.connect(&addr).await.expect("connect");
                let msg: Vec<u8> = (0..size).map(|i| (i + c) as u8).collect();
                let mut back = vec![0u8; size + 1];
                while !stop.get() {
                    let t0 = Instant::now();
                    for _ in 0..depth {
                        s.send(&msg).await.expect("send");
                    }
                    let mut got = 0;
                    while got < expect {
                        match tokio::time::timeout(Duration::from_millis(200), s.recv(&mut back)).await {
                            Ok(Ok(n)) if back[..n] == msg[..] => got += 1,
                            Ok(Ok(_)) => panic!("udp echo mismatch"),
                            Ok(Err(e)) => panic!("udp recv: {e}"),
                            Err(_) => break, // lost: counted below
                        }
                    }
                    if measuring.get() {
                        errors.set(errors.get() + (expect - got) as u64);
                        let ns = t0.elapsed().as_nanos() as u64;
                        let mut h = hist.borrow_mut();
                        for _ in 0..got {
                            h.record(ns.max(100)).unwrap();
                        }
                        count.set(count.get() + got as u64);
                    }
                }
            }));
        }
        for c in 0..if a.http.is_some() || a.resp.is_some() || a.udp { 0 } else { a.conns } {
            let (hist, count, measuring, stop) = (hist.clone(), count.clone(), measuring.clone(), stop.clone());
            let (addr, size, depth) = (a.addr.clone(), a.size, a.depth);
            tasks.push(tokio::task::spawn_local(async move {
                let mut s = TcpStream::connect(&addr).await.expect("connect");
                s.set_nodelay(true).unwrap();
                let msg: Vec<u8> = (0..size * depth).map(|i| (i + c) as u8).collect();
                let mut back = vec![0u8; size * depth];
                while !stop.get() {
                    let t0 = Instant::now();
                    s.write_all(&msg).await.expect("write");
                    s.read_exact(&mut back).await.expect("read");
                    if back != msg {
                        panic!("echo mismatch");
                    }
                    if measuring.get() {
                        let ns = t0.elapsed().as_nanos() as u64;
                        let mut h = hist.borrow_mut();
                        for _ in 0..depth {
                            h.record(ns.max(100)).unwrap();
                        }
                        count.set(count.get() + depth as u64);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
        let cpu0 = a.server_pid.map(cpu_ns);
        let own0 = cpu_ns(std::process::id());
        measuring.set(true);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
        measuring.set(false);
        let secs = t0.elapsed().as_secs_f64();
        let cpu = a.server_pid.map(|p| cpu_ns(p) - cpu0.unwrap());
        let own = cpu_ns(std::process::id()) - own0;
        stop.set(true);
        for t in tasks {
            let _ = t.await;
        }
        let h = hist.borrow();
        let msgs = count.get();
        let pc = per_conn.borrow();
        let (sum, sq) = pc.iter().fold((0f64, 0f64), |(s, q), &x| (s + x as f64, q + (x as f64) * (x as f64)));
        let jain = if sq > 0.0 { sum * sum / (pc.len() as f64 * sq) } else { 0.0 };
        println!(
            "{{\"slow\":{},\"refused\":{},\"jain\":{:.4},\"errors\":{},\"msgs\":{},\"secs\":{:.3},\"rate\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"server_cpu_ns\":{},\"cpu_ns_per_msg\":{:.1},\"client_cpu_ns\":{}}}",
            slow.get(),
            refused.get(),
            jain,
            errors.get(),
            msgs,
            secs,
            msgs as f64 / secs,
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.9) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.value_at_quantile(0.999) as f64 / 1000.0,
            cpu.unwrap_or(0),
            cpu.map_or(0.0, |c| c as f64 / msgs.max(1) as f64),
            own,
        );
    });
}
