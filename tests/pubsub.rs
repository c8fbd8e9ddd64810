//! The pub/sub example the guide builds (`docs/guide.md`), tested from outside over loopback.

mod example;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    fn new(addr: std::net::SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Client { r: BufReader::new(s) }
    }

    fn send(&mut self, text: &str) {
        self.r.get_mut().write_all(text.as_bytes()).unwrap();
    }

    /// The next line, without its `\n`; empty at the end of the stream.
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l.trim_end_matches('\n').to_string()
    }

    fn call(&mut self, text: &str) -> String {
        self.send(text);
        self.line()
    }
}

#[test]
fn publications_reach_every_subscriber_on_either_worker_and_only_them() {
    let s = example::start("pubsub", &["--workers", "2", "--heartbeat-ms", "0"]);
    // Connections land on both workers (SO_REUSEPORT), so some sessions reach the broker
    // across cores.
    let mut subs: Vec<Client> = (0..6).map(|_| Client::new(s.addr)).collect();
    for (i, c) in subs.iter_mut().enumerate() {
        let channel = if i % 2 == 0 { "even" } else { "odd" };
        assert_eq!(c.call(&format!("SUB {channel}\n")), "+OK");
    }
    let mut publisher = Client::new(s.addr);
    assert_eq!(publisher.call("PUB even hello world\n"), ":3");
    assert_eq!(publisher.call("PUB odd x\n"), ":3");
    assert_eq!(publisher.call("PUB nobody x\n"), ":0");
    for (i, c) in subs.iter_mut().enumerate() {
        let want = if i % 2 == 0 { "MSG even hello world" } else { "MSG odd x" };
        assert_eq!(c.line(), want, "subscriber {i}");
    }
    // An unsubscribed connection gets nothing more.
    assert_eq!(subs[0].call("UNSUB even\n"), "+OK");
    assert_eq!(publisher.call("PUB even again\n"), ":2");
    assert_eq!(subs[2].line(), "MSG even again");
    assert_eq!(subs[4].line(), "MSG even again");
    assert_eq!(subs[0].call("PING\n"), "+PONG", "nothing was queued for the unsubscribed");
    // A closed connection is forgotten, once its close has reached the broker.
    drop(subs.remove(4));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match publisher.call("PUB even bye\n").as_str() {
            ":1" => break,
            ":2" => assert!(Instant::now() < deadline, "the closed subscriber was never forgotten"),
            other => panic!("publication answered {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pipelined_and_split_lines_are_answered_in_order() {
    let s = example::start("pubsub", &["--heartbeat-ms", "0"]);
    let mut c = Client::new(s.addr);
    // Several commands in one write, one cut in the middle of a line, CRLF or LF.
    c.send("PING\r\nSUB a\nPUB a hi\nPI");
    std::thread::sleep(Duration::from_millis(50));
    c.send("NG\nBOGUS\nPUB a\n");
    let replies: Vec<String> = (0..7).map(|_| c.line()).collect();
    // The broker's replies and our own publication come back in the order sent: `+OK` for the
    // subscription, then `MSG` (we are subscribed) and `:1` for the publication.
    assert_eq!(
        replies,
        ["+PONG", "+OK", "MSG a hi", ":1", "+PONG", "-ERR unknown command", "-ERR usage: PUB channel message"]
    );
}

#[test]
fn a_line_over_the_limit_ends_only_its_connection() {
    let s = example::start("pubsub", &["--heartbeat-ms", "0"]);
    let mut other = Client::new(s.addr);
    assert_eq!(other.call("SUB news\n"), "+OK");
    let mut c = Client::new(s.addr);
    c.send(&format!("PUB news {}", "x".repeat(5000)));
    assert_eq!(c.line(), "-ERR line too long");
    assert_eq!(c.line(), "", "then the connection closes");
    let mut p = Client::new(s.addr);
    assert_eq!(p.call("PUB news fine\n"), ":1");
    assert_eq!(other.line(), "MSG news fine");
}

#[test]
fn subscribers_get_heartbeats_from_the_brokers_timer() {
    let s = example::start("pubsub", &["--heartbeat-ms", "50"]);
    let mut c = Client::new(s.addr);
    assert_eq!(c.call("SUB beat\n"), "+OK");
    let t = Instant::now();
    for _ in 0..3 {
        assert_eq!(c.line(), "HEARTBEAT");
    }
    assert!(t.elapsed() >= Duration::from_millis(100), "three heartbeats 50 ms apart took {:?}", t.elapsed());
}
