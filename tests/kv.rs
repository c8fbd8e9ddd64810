//! The key-value example end to end on loopback: the real binary, real sockets, and the real
//! `redis-cli` and `redis-benchmark` where installed (`ci/test` installs them).

mod example;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use example::{cmd, Server};

fn server(args: &[&str]) -> Server {
    example::start("kv", args)
}

struct Client(BufReader<TcpStream>);

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client(BufReader::new(s))
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).unwrap();
    }

    /// Reads one reply (a line, or a bulk string, or an array of those) as raw RESP text.
    fn reply(&mut self) -> String {
        let mut line = String::new();
        assert!(self.0.read_line(&mut line).unwrap() > 0, "connection closed instead of a reply");
        match line.as_bytes()[0] {
            b'$' => {
                let n: i64 = line[1..].trim_end().parse().unwrap();
                if n >= 0 {
                    let mut body = vec![0; n as usize + 2];
                    self.0.read_exact(&mut body).unwrap();
                    line.push_str(&String::from_utf8_lossy(&body));
                }
            }
            b'*' => {
                let n: i64 = line[1..].trim_end().parse().unwrap();
                for _ in 0..n.max(0) {
                    let item = self.reply();
                    line.push_str(&item);
                }
            }
            _ => {}
        }
        line
    }

    fn call(&mut self, words: &[&[u8]]) -> String {
        self.send(&cmd(words));
        self.reply()
    }

    /// The server closed the connection (EOF or reset) within the read timeout.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

#[test]
fn commands_over_the_wire() {
    let s = server(&[]);
    let mut c = Client::new(s.addr);
    assert_eq!(c.call(&[b"PING"]), "+PONG\r\n");
    assert_eq!(c.call(&[b"GET", b"k"]), "$-1\r\n");
    assert_eq!(c.call(&[b"SET", b"k", b"v\r\n1"]), "+OK\r\n");
    assert_eq!(c.call(&[b"GET", b"k"]), "$4\r\nv\r\n1\r\n", "values are binary safe");
    assert_eq!(c.call(&[b"INCR", b"n"]), ":1\r\n");
    assert_eq!(c.call(&[b"INCRBY", b"n", b"41"]), ":42\r\n");
    assert_eq!(c.call(&[b"MGET", b"n", b"zz", b"k"]), "*3\r\n$2\r\n42\r\n$-1\r\n$4\r\nv\r\n1\r\n");
    assert_eq!(c.call(&[b"DEL", b"n", b"zz"]), ":1\r\n");
    assert_eq!(c.call(&[b"DBSIZE"]), ":1\r\n");
    assert_eq!(c.call(&[b"SETEX", b"session:1", b"60", b"x"]), "+OK\r\n");
    assert_eq!(c.call(&[b"APPEND", b"session:1", b"yz"]), ":3\r\n");
    assert_eq!(c.call(&[b"KEYS", b"sess*"]), "*1\r\n$9\r\nsession:1\r\n");
    assert_eq!(c.call(&[b"GETDEL", b"session:1"]), "$3\r\nxyz\r\n");
    // Inline commands, as typed into telnet.
    c.send(b"SET greeting hello\r\nGET greeting\r\n");
    assert_eq!(c.reply(), "+OK\r\n");
    assert_eq!(c.reply(), "$5\r\nhello\r\n");
    // Another connection sees the same keyspace.
    let mut d = Client::new(s.addr);
    assert_eq!(d.call(&[b"GET", b"greeting"]), "$5\r\nhello\r\n");
    assert_eq!(d.call(&[b"QUIT"]), "+OK\r\n");
    assert!(d.closed(), "QUIT closes the connection");
    assert_eq!(c.call(&[b"NOPE"]), "-ERR unknown command 'NOPE', with args beginning with: \r\n");
    assert_eq!(c.call(&[b"PING"]), "+PONG\r\n", "an unknown command does not end the connection");
}

#[test]
fn pipelined_commands_split_anywhere_are_answered_in_order() {
    let s = server(&[]);
    let mut c = Client::new(s.addr);
    // ASCII, so that `reply`'s text form keeps its length.
    let big: Vec<u8> = (0..1_500_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut stream = Vec::new();
    let mut expect = Vec::new();
    for i in 0..200 {
        let key = format!("key{i}");
        let val = format!("value-{i}");
        stream.extend(cmd(&[b"SET", key.as_bytes(), val.as_bytes()]));
        expect.push("+OK\r\n".to_string());
        stream.extend(cmd(&[b"GET", key.as_bytes()]));
        expect.push(format!("${}\r\n{val}\r\n", val.len()));
        if i == 100 {
            // A value spanning many receives, in the middle of the pipeline.
            stream.extend(cmd(&[b"SET", b"big", &big]));
            expect.push("+OK\r\n".to_string());
        }
    }
    stream.extend(cmd(&[b"STRLEN?", b"x"]));
    expect.push("-ERR unknown command 'STRLEN?', with args beginning with: 'x' \r\n".to_string());
    // Writes of every size from 1 byte up, so commands and headers are cut at every kind of
    // place, from a second thread so replies can flow back meanwhile.
    let mut w = c.0.get_ref().try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut pos = 0;
        let mut size = 1;
        while pos < stream.len() {
            let end = (pos + size).min(stream.len());
            w.write_all(&stream[pos..end]).unwrap();
            pos = end;
            size = if size > 4096 { 1 } else { size * 3 + 1 };
        }
    });
    for (i, e) in expect.iter().enumerate() {
        assert_eq!(&c.reply(), e, "reply {i}");
    }
    writer.join().unwrap();
    let got = c.call(&[b"GET", b"big"]);
    let head = format!("${}\r\n", big.len());
    assert!(got.starts_with(&head) && got.len() == head.len() + big.len() + 2, "big value comes back whole");
    let mut raw = cmd(&[b"GET", b"big"]);
    raw.extend(cmd(&[b"PING"]));
    c.send(&raw);
    let mut back = vec![0u8; head.len() + big.len() + 2];
    c.0.read_exact(&mut back).unwrap();
    assert!(back[head.len()..head.len() + big.len()] == big[..], "big value's bytes intact");
    assert_eq!(c.reply(), "+PONG\r\n");
}

#[test]
fn protocol_errors_are_answered_then_the_connection_closes() {
    let s = server(&["--max-bulk-mb", "1"]);
    let cases: [(&[u8], &str); 5] = [
        (b"*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$2000000\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n:5\r\n", "-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"*1\r\n$3\r\nGETxx", "-ERR Protocol error: bulk string not ended by CRLF\r\n"),
        (&[b'a'; 70_000], "-ERR Protocol error: too big inline request\r\n"),
    ];
    for (input, want) in cases {
        let mut c = Client::new(s.addr);
        c.send(b"SET before ok\r\n");
        assert_eq!(c.reply(), "+OK\r\n");
        c.send(input);
        assert_eq!(c.reply(), want, "for {:?}", String::from_utf8_lossy(&input[..input.len().min(20)]));
        assert!(c.closed(), "closed after {want:?}");
    }
    // The server is unharmed.
    assert_eq!(Client::new(s.addr).call(&[b"GET", b"before"]), "$2\r\nok\r\n");
}

#[test]
fn garbage_input_never_takes_the_server_down() {
    let s = server(&["--max-bulk-mb", "1"]);
    let alphabet = b"*$\r\n0123456789-:+ SETGETDEBUGSLEEPxyz\0\xff";
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..60 {
        let len = 1 + (next() % 3000) as usize;
        let junk: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        let mut c = Client::new(s.addr);
        c.send(&junk);
        c.0.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
        // Whatever it answers, the server ends the exchange: it closes once it has read EOF.
        let mut rest = Vec::new();
        c.0.read_to_end(&mut rest).expect("the server closes the connection, no hang");
    }
    let mut c = Client::new(s.addr);
    assert_eq!(c.call(&[b"PING"]), "+PONG\r\n", "still serving");
}

#[test]
fn random_well_framed_commands_get_one_reply_each_and_never_take_the_server_down() {
    // Every command name the server knows (and a few it does not), with 0 to 5 arguments drawn
    // from a few keys, numbers and words, from 4 clients at once, some blocked on lists while
    // others push: each command must get exactly one well-formed reply.
    let names: &[&[u8]] = &[
        b"GET",
        b"SET",
        b"DEL",
        b"EXISTS",
        b"MGET",
        b"MSET",
        b"INCR",
        b"DECRBY",
        b"EXPIRE",
        b"PEXPIRE",
        b"TTL",
        b"PERSIST",
        b"TYPE",
        b"LPUSH",
        b"RPUSH",
        b"LPOP",
        b"RPOP",
        b"LLEN",
        b"LRANGE",
        b"LINDEX",
        b"BLPOP",
        b"BRPOP",
        b"SADD",
        b"SREM",
        b"SCARD",
        b"SISMEMBER",
        b"SMEMBERS",
        b"SPOP",
        b"HSET",
        b"HGET",
        b"HDEL",
        b"HLEN",
        b"HEXISTS",
        b"HGETALL",
        b"ZADD",
        b"ZCARD",
        b"ZSCORE",
        b"ZREM",
        b"ZPOPMIN",
        b"ZRANGE",
        b"PING",
        b"ECHO",
        b"DBSIZE",
        b"SELECT",
        b"CONFIG",
        b"NOPE",
    ];
    let words: &[&[u8]] = &[b"k", b"l", b"z", b"h", b"0", b"1", b"-1", b"2", b"0.01", b"NX", b"XX", b"x", b""];
    let s = server(&["--max-blocked", "8"]);
    let addr = s.addr;
    let clients: Vec<_> = (0..4u64)
        .map(|id| {
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (id + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let mut c = Client::new(addr);
                for _ in 0..400 {
                    let mut w: Vec<&[u8]> = vec![names[(next() % names.len() as u64) as usize]];
                    let blocking = w[0].starts_with(b"B");
                    for _ in 0..next() % 6 {
                        w.push(words[(next() % words.len() as u64) as usize]);
                    }
                    if blocking {
                        // Never wait for ever: the last argument is the time limit.
                        w.push(b"0.01");
                    }
                    let r = c.call(&w);
                    assert!(matches!(r.as_bytes()[0], b'+' | b'-' | b':' | b'$' | b'*'), "{w:?} -> {r:?}");
                }
                c.call(&[b"PING"])
            })
        })
        .collect();
    for t in clients {
        assert_eq!(t.join().expect("client finished"), "+PONG\r\n");
    }
}

#[test]
fn slow_commands_neither_delay_other_clients_nor_reorder_replies() {
    let s = server(&[]);
    let mut slow = Client::new(s.addr);
    slow.call(&[b"SET", b"k", b"v"]);
    let t0 = Instant::now();
    let mut pipe = cmd(&[b"DEBUG", b"SLEEP", b"0.4"]);
    pipe.extend(cmd(&[b"GET", b"k"]));
    slow.send(&pipe);
    // Meanwhile another client is served at full speed: its commands do not wait behind the
    // slow one, which runs on another core.
    let mut fast = Client::new(s.addr);
    let mut served = 0;
    while t0.elapsed() < Duration::from_millis(300) {
        let t = Instant::now();
        assert_eq!(fast.call(&[b"GET", b"k"]), "$1\r\nv\r\n");
        assert!(t.elapsed() < Duration::from_millis(100), "a fast command took {:?}", t.elapsed());
        served += 1;
    }
    assert!(served > 10, "only {served} fast commands in 300 ms");
    // The slow client's replies come in request order, the GET only after the sleep.
    assert_eq!(slow.reply(), "+OK\r\n");
    assert!(t0.elapsed() >= Duration::from_millis(400));
    assert_eq!(slow.reply(), "$1\r\nv\r\n");
    // A connection that goes away while its slow command runs leaves nothing behind.
    let mut gone = Client::new(s.addr);
    gone.send(&cmd(&[b"DEBUG", b"SLEEP", b"0.1"]));
    drop(gone);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(fast.call(&[b"PING"]), "+PONG\r\n");
}

#[test]
fn a_full_slow_stage_answers_busy_at_once() {
    let s = server(&["--slow-capacity", "1"]);
    let addr = s.addr;
    let t0 = Instant::now();
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30 * i));
                let mut c = Client::new(addr);
                let r = c.call(&[b"DEBUG", b"SLEEP", b"0.5"]);
                (r, t0.elapsed(), c)
            })
        })
        .collect();
    // One runs and one waits in the bounded queue; the rest are refused, and told so at once.
    let mut busy = 0;
    let mut ok = 0;
    let mut done = Vec::new();
    for h in clients {
        let (r, at, c) = h.join().unwrap();
        if r.starts_with("-BUSY") {
            assert!(at < Duration::from_millis(400), "-BUSY came late: {at:?}");
            busy += 1;
        } else {
            assert_eq!(r, "+OK\r\n");
            assert!(at >= Duration::from_millis(500));
            ok += 1;
        }
        done.push(c);
    }
    assert!(busy >= 1 && ok >= 1, "busy {busy}, ok {ok}");
    // A refused client goes on normally.
    for c in &mut done {
        assert_eq!(c.call(&[b"PING"]), "+PONG\r\n");
    }
}

#[test]
fn expired_keys_go_without_being_read() {
    let s = server(&[]);
    let mut c = Client::new(s.addr);
    for i in 0..100 {
        assert_eq!(c.call(&[b"SET", format!("t{i}").as_bytes(), b"x", b"PX", b"100"]), "+OK\r\n");
    }
    assert_eq!(c.call(&[b"SET", b"keep", b"x"]), "+OK\r\n");
    let pttl: i64 = c.call(&[b"PTTL", b"t0"]).trim_start_matches(':').trim_end().parse().unwrap();
    assert!((0..=100).contains(&pttl), "PTTL {pttl}");
    let t0 = Instant::now();
    loop {
        // DBSIZE counts expired keys until they are removed: only active expiry empties it.
        if c.call(&[b"DBSIZE"]) == ":1\r\n" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "expired keys were never removed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.call(&[b"GET", b"keep"]), "$1\r\nx\r\n");
}

fn installed(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("{tool} not installed: skipping (ci/test installs redis-tools)");
    }
    found
}

#[test]
fn blocking_pops_wait_for_a_push_or_their_time_limit() {
    let s = server(&[]);
    let (mut a, mut b, mut c) = (Client::new(s.addr), Client::new(s.addr), Client::new(s.addr));
    // `a` blocks first, with a PING pipelined behind its BLPOP; then `b`.
    let mut pipeline = cmd(&[b"BLPOP", b"q", b"0"]);
    pipeline.extend_from_slice(&cmd(&[b"PING"]));
    a.send(&pipeline);
    std::thread::sleep(Duration::from_millis(100));
    b.send(&cmd(&[b"BLPOP", b"nothing", b"q", b"0"]));
    std::thread::sleep(Duration::from_millis(100));
    // Malformed and refused pushes while clients wait serve nobody (and used to index past the
    // arguments of the first one).
    assert_eq!(c.call(&[b"LPUSH"]), "-ERR wrong number of arguments for 'lpush' command\r\n");
    assert_eq!(c.call(&[b"RPUSH", b"q"]), "-ERR wrong number of arguments for 'rpush' command\r\n");
    assert_eq!(c.call(&[b"RPUSH", b"q", b"x", b"y"]), ":2\r\n", "the length right after the push");
    assert_eq!(a.reply(), "*2\r\n$1\r\nq\r\n$1\r\nx\r\n", "first blocked, first served");
    assert_eq!(a.reply(), "+PONG\r\n", "the command behind the BLPOP ran once it was served");
    assert_eq!(b.reply(), "*2\r\n$1\r\nq\r\n$1\r\ny\r\n");
    assert_eq!(c.call(&[b"EXISTS", b"q"]), ":0\r\n", "both elements went to the waiters");

    // A time limit ends the wait with a null array, and not before it.
    let t = Instant::now();
    assert_eq!(a.call(&[b"BRPOP", b"nothing", b"0.2"]), "*-1\r\n");
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(5), "{waited:?}");

    // A list with elements answers at once; the first non-empty key wins.
    assert_eq!(c.call(&[b"RPUSH", b"k2", b"1", b"2"]), ":2\r\n");
    assert_eq!(a.call(&[b"BRPOP", b"k1", b"k2", b"5"]), "*2\r\n$2\r\nk2\r\n$1\r\n2\r\n");
    assert_eq!(a.call(&[b"SET", b"str", b"v"]), "+OK\r\n");
    assert_eq!(
        a.call(&[b"BLPOP", b"str", b"1"]),
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    );
    assert_eq!(a.call(&[b"BLPOP", b"k2", b"-1"]), "-ERR timeout is negative\r\n");

    // A blocked client that goes away is forgotten: a later push stays in the list.
    b.send(&cmd(&[b"BLPOP", b"r", b"0"]));
    std::thread::sleep(Duration::from_millis(100));
    drop(b);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.call(&[b"RPUSH", b"r", b"z"]), ":1\r\n");
    assert_eq!(c.call(&[b"LLEN", b"r"]), ":1\r\n");
}

#[test]
fn blocking_pops_time_limits_are_bounded_and_freed_when_served() {
    let s = server(&["--max-blocked", "2"]);
    let (mut a, mut c) = (Client::new(s.addr), Client::new(s.addr));
    // Served waits give their time limit's slot back (cancelled), so many in a row fit.
    for i in 0..20 {
        a.send(&cmd(&[b"BLPOP", b"q", b"30"]));
        std::thread::sleep(Duration::from_millis(5));
        let v = i.to_string();
        assert_eq!(c.call(&[b"RPUSH", b"q", v.as_bytes()]), ":1\r\n");
        assert_eq!(a.reply(), format!("*2\r\n$1\r\nq\r\n${}\r\n{v}\r\n", v.len()));
    }
    // Two waits with a time limit fill the table: a third is refused at once.
    let mut b = Client::new(s.addr);
    a.send(&cmd(&[b"BLPOP", b"q", b"30"]));
    b.send(&cmd(&[b"BLPOP", b"q", b"30"]));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.call(&[b"BLPOP", b"q", b"30"]), "-BUSY too many blocked clients, try again later\r\n");
    // A wait without a time limit needs no slot.
    c.send(&cmd(&[b"BLPOP", b"other", b"0"]));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(Client::new(s.addr).call(&[b"LPUSH", b"other", b"v"]), ":1\r\n");
    assert_eq!(c.reply(), "*2\r\n$5\r\nother\r\n$1\r\nv\r\n");
}

#[test]
fn redis_cli_over_tls_works_against_it() {
    if !installed("redis-cli") {
        return;
    }
    let s = server(&["--tls-self-signed"]);
    let port = s.addr.port().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port, "--tls", "--insecure"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["set", "greeting", "hello over tls"]), "OK\n");
    assert_eq!(cli(&["get", "greeting"]), "hello over tls\n");
    // A plaintext client on the TLS port is not understood: no reply, the connection closed.
    let out = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port, "ping"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PONG"));
}

#[test]
fn redis_cli_and_redis_benchmark_work_against_it() {
    if !installed("redis-cli") {
        return;
    }
    let s = server(&[]);
    let port = s.addr.port().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port]).args(args).output().unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["set", "greeting", "hello world"]), "OK\n");
    assert_eq!(cli(&["get", "greeting"]), "hello world\n");
    assert_eq!(cli(&["incrby", "n", "5"]), "5\n");
    assert_eq!(cli(&["mget", "greeting", "nope", "n"]), "hello world\n\n5\n");
    if !installed("redis-benchmark") {
        return;
    }
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "set,get", "-n", "20000", "-c", "8", "-P", "4", "--csv"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "redis-benchmark failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    for test in ["\"SET\"", "\"GET\""] {
        let line = text.lines().find(|l| l.starts_with(test)).unwrap_or_else(|| panic!("no {test} row in {text}"));
        let rps: f64 = line.split(',').nth(1).unwrap().trim_matches('"').parse().unwrap();
        assert!(rps > 0.0, "{line}");
    }
    assert!(!String::from_utf8_lossy(&out.stderr).contains("WARNING"), "redis-benchmark warned");
    assert_eq!(cli(&["dbsize"]), "3\n", "redis-benchmark's key plus ours");
    // redis-benchmark's whole default suite (lists, sets, hashes, sorted sets, LRANGE, MSET):
    // it stops at the first error reply, so every row must be there.
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port, "-n", "2000", "-c", "4", "-P", "4", "--csv"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("Error"), "redis-benchmark failed: {text} {err}");
    let rows = [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "RPOP",
        "SADD",
        "HSET",
        "SPOP",
        "ZADD",
        "ZPOPMIN",
        "LRANGE_100",
        "LRANGE_300",
        "LRANGE_500",
        "LRANGE_600",
        "MSET",
    ];
    for test in rows {
        let line = text
            .lines()
            .find(|l| l.trim_matches('"').starts_with(test))
            .unwrap_or_else(|| panic!("no {test} row in {text} {err}"));
        let rps: f64 = line.split("\",\"").nth(1).unwrap().parse().unwrap();
        assert!(rps > 0.0, "{line}");
    }
    assert_eq!(cli(&["type", "mylist"]), "list\n");
    assert_eq!(cli(&["llen", "mylist"]), "2000\n", "LRANGE's LPUSH pass");
    let two = cli(&["lrange", "mylist", "0", "1"]);
    assert!(two.lines().count() == 2 && two.lines().all(|l| l.len() == 3), "two 3-byte elements (-d 3): {two:?}");
}

#[test]
fn a_mass_insertion_pipe_gets_every_reply() {
    // 200 000 SETs written as fast as the socket takes them (what `redis-cli --pipe` does), the
    // replies read at the same time: hundreds of commands per receive. One net command per
    // reply used to fill the net stage's queue, and the connection was closed after ~4500.
    let s = server(&[]);
    let mut c = Client::new(s.addr);
    let n = 200_000;
    let mut all = Vec::new();
    for i in 0..n {
        all.extend(cmd(&[b"SET", format!("key:{i}").as_bytes(), format!("value-{i}").as_bytes()]));
    }
    let mut w = c.0.get_ref().try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&all).unwrap());
    for i in 0..n {
        assert_eq!(c.reply(), "+OK\r\n", "reply {i}");
    }
    writer.join().unwrap();
    assert_eq!(c.call(&[b"DBSIZE"]), format!(":{n}\r\n"));
    assert_eq!(c.call(&[b"GET", b"key:199999"]), "$12\r\nvalue-199999\r\n");
    if installed("redis-cli") {
        // And through the real tool.
        let mut pipe = Vec::new();
        for i in 0..n {
            pipe.extend(cmd(&[b"RPUSH", b"piped", format!("{i}").as_bytes()]));
        }
        let port = s.addr.port().to_string();
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port, "--pipe"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&pipe).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(&format!("errors: 0, replies: {n}")), "{text}");
        assert_eq!(c.call(&[b"LLEN", b"piped"]), format!(":{n}\r\n"));
    }
}

#[test]
fn a_client_that_half_closes_gets_its_replies_even_behind_a_slow_command() {
    let s = server(&[]);
    let mut c = Client::new(s.addr);
    let mut batch = cmd(&[b"SET", b"hc", b"v"]);
    batch.extend(cmd(&[b"DEBUG", b"SLEEP", b"0.05"]));
    batch.extend(cmd(&[b"GET", b"hc"]));
    c.send(&batch);
    c.0.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.reply(), "+OK\r\n");
    assert_eq!(c.reply(), "+OK\r\n", "the slow command's reply");
    assert_eq!(c.reply(), "$1\r\nv\r\n", "the command that waited behind it");
    assert!(c.closed(), "then the server closes");
    // A client blocked in a pop that finishes sending is forgotten, as Redis does.
    let mut b = Client::new(s.addr);
    b.send(&cmd(&[b"BLPOP", b"hq", b"0"]));
    std::thread::sleep(Duration::from_millis(100));
    b.0.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    assert!(b.closed());
    let mut c = Client::new(s.addr);
    assert_eq!(c.call(&[b"RPUSH", b"hq", b"x"]), ":1\r\n");
    assert_eq!(c.call(&[b"LLEN", b"hq"]), ":1\r\n", "the push was not given to the departed client");
}

/// The value of `field` in an `INFO` reply.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
}

#[test]
fn info_answers_each_section_with_live_figures() {
    let s = server(&[]);
    let (mut a, mut b) = (Client::new(s.addr), Client::new(s.addr));
    a.call(&[b"SET", b"k", b"v"]);
    a.call(&[b"SET", b"t", b"v", b"EX", b"100"]);
    // b blocks in a pop; the suite of Redis's tests waits on this figure.
    b.send(&cmd(&[b"BLPOP", b"nothing", b"0"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    let clients = loop {
        let c = a.call(&[b"INFO", b"clients"]);
        if info_field(&c, "blocked_clients").as_deref() == Some("1") {
            break c;
        }
        assert!(Instant::now() < deadline, "never blocked: {c}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(info_field(&clients, "connected_clients").as_deref(), Some("2"));
    assert!(clients.contains("# Clients") && !clients.contains("# Server"), "{clients}");
    let keyspace = a.call(&[b"INFO", b"keyspace"]);
    assert_eq!(info_field(&keyspace, "db0").as_deref(), Some("keys=2,expires=1,avg_ttl=0"), "{keyspace}");
    let stats = a.call(&[b"INFO", b"STATS"]);
    assert_eq!(info_field(&stats, "total_connections_received").as_deref(), Some("2"));
    let n: u64 = info_field(&stats, "total_commands_processed").unwrap().parse().unwrap();
    assert!(n >= 6, "{stats}");
    let memory = a.call(&[b"INFO", b"memory"]);
    let rss: u64 = info_field(&memory, "used_memory_rss").unwrap().parse().unwrap();
    assert!(rss > 1 << 20, "{memory}");
    let server = a.call(&[b"INFO", b"server"]);
    assert!(info_field(&server, "redis_version").is_some() && info_field(&server, "uptime_in_seconds").is_some());
    let two = a.call(&[b"INFO", b"server", b"keyspace"]);
    assert!(two.contains("# Server") && two.contains("# Keyspace") && !two.contains("# Stats"), "{two}");
    let all = a.call(&[b"INFO"]);
    for sec in ["# Server", "# Clients", "# Memory", "# Stats", "# Keyspace"] {
        assert!(all.contains(sec), "{sec} missing: {all}");
    }
    assert_eq!(a.call(&[b"INFO", b"nosuch"]), "$0\r\n\r\n");
}

#[test]
fn inline_commands_take_redis_quoting() {
    let s = server(&[]);
    let mut c = Client::new(s.addr);
    c.send(b"set \"a b\" 'c d'\r\n");
    assert_eq!(c.reply(), "+OK\r\n");
    assert_eq!(c.call(&[b"GET", b"a b"]), "$3\r\nc d\r\n");
    c.send(b"set x \"tab\\there\\x21\"\r\nget x\r\n");
    assert_eq!(c.reply(), "+OK\r\n");
    assert_eq!(c.reply(), "$9\r\ntab\there!\r\n");
    c.send(b"set \"unclosed value\r\n");
    assert_eq!(c.reply(), "-ERR Protocol error: unbalanced quotes in request\r\n");
    assert!(c.closed());
}

#[test]
fn scores_and_expiry_limits_read_as_redis_writes_them() {
    let s = server(&[]);
    let mut c = Client::new(s.addr);
    assert_eq!(c.call(&[b"ZADD", b"z", b"1e20", b"a"]), ":1\r\n");
    assert_eq!(c.call(&[b"ZSCORE", b"z", b"a"]), "$5\r\n1e+20\r\n");
    assert_eq!(c.call(&[b"ZADD", b"z", b"nan", b"m"]), "-ERR value is not a valid float\r\n");
    assert_eq!(c.call(&[b"ZADD", b"z", b"", b"m"]), "-ERR value is not a valid float\r\n");
    assert_eq!(c.call(&[b"SET", b"k", b"v"]), "+OK\r\n");
    assert_eq!(c.call(&[b"EXPIRE", b"k", b"-9223372036854776"]), "-ERR invalid expire time in 'expire' command\r\n");
    assert_eq!(
        c.call(&[b"PEXPIRE", b"k", b"9223372036854775807"]),
        "-ERR invalid expire time in 'pexpire' command\r\n"
    );
    assert_eq!(c.call(&[b"GET", b"k"]), "$1\r\nv\r\n", "kept");
}

#[test]
fn clients_over_the_total_input_limit_are_evicted_largest_first() {
    // Connections stuck behind a blocking pop keep whatever they send; over all of them
    // the server holds at most the limit, closing the largest holder with an error.
    let s = server(&["--max-clients-input-mb", "8"]);
    let mut stuck: Vec<Client> = (0..4).map(|_| Client::new(s.addr)).collect();
    for c in stuck.iter_mut() {
        c.send(&cmd(&[b"BLPOP", b"never", b"0"]));
    }
    let mut watch = Client::new(s.addr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while info_field(&watch.call(&[b"INFO", b"clients"]), "blocked_clients").as_deref() != Some("4") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    // 3 MiB each: the third passes 8 MiB. The one holding the most (its buffer grew the
    // furthest) goes, with an error; the others stay.
    let value = vec![b'x'; 3 << 20];
    for c in stuck.iter_mut() {
        c.send(&cmd(&[b"SET", b"big", &value]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let mem = watch.call(&[b"INFO", b"memory"]);
    let held: usize = info_field(&mem, "mem_clients_normal").unwrap().parse().unwrap();
    assert!(held <= 8 << 20, "{mem}");
    let stats = watch.call(&[b"INFO", b"stats"]);
    let evicted: u64 = info_field(&stats, "evicted_clients").unwrap().parse().unwrap();
    assert!((1..=2).contains(&evicted), "{stats}");
    let mut gone = 0;
    for c in stuck.iter_mut() {
        c.0.get_ref().set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut line = String::new();
        match c.0.read_line(&mut line) {
            Ok(n) if n > 0 => {
                assert!(line.starts_with("-ERR client evicted"), "{line}");
                assert!(c.closed());
                gone += 1;
            }
            _ => {} // still blocked, still connected
        }
    }
    assert_eq!(gone, evicted);
    assert_eq!(info_field(&watch.call(&[b"INFO", b"clients"]), "connected_clients"), Some(format!("{}", 5 - evicted)));
}
