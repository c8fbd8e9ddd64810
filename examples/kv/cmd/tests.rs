//! The commands, run against a store without a server.

use std::time::{Duration, Instant};

use ringstage::buf::BufWriter;

use super::keys::glob;
use super::{exec, Outcome, VIEW_MIN};
use crate::store::Store;

/// Runs one command given as words against `store`; returns the reply bytes.
fn run(store: &mut Store, words: &[&[u8]], now: Instant) -> Vec<u8> {
    let mut data = Vec::new();
    let mut args = Vec::new();
    for w in words {
        args.push(data.len()..data.len() + w.len());
        data.extend_from_slice(w);
    }
    match exec(store, &mut BufWriter::default(), &data, &args, now) {
        Outcome::Reply(r) | Outcome::Close(r) => r.to_vec(),
        Outcome::Chain(c) => c.to_vec(),
        Outcome::Info(s) => format!("info {s}").into_bytes(),
        Outcome::Slow(d) => format!("slow {}ms", d.as_millis()).into_bytes(),
        Outcome::Block { left, timeout } => format!("block left={left} {timeout:?}").into_bytes(),
    }
}

#[test]
fn glob_patterns_match_as_redis_does() {
    for (p, s, want) in [
        ("*", "", true),
        ("*", "anything", true),
        ("user:*", "user:42", true),
        ("user:*", "users", false),
        ("h?llo", "hello", true),
        ("h?llo", "hllo", false),
        ("h*llo", "heeeello", true),
        ("h*llo*", "hello world", true),
        ("*a*b", "xaxxb", true),
        ("*a*b", "xaxxbc", false),
        ("h[ae]llo", "hallo", true),
        ("h[ae]llo", "hillo", false),
        ("h[^e]llo", "hallo", true),
        ("h[^e]llo", "hello", false),
        ("h[!e]llo", "hello", false),
        ("h[a-c]llo", "hbllo", true),
        ("h[a-c]llo", "hdllo", false),
        ("h[c-a]llo", "hbllo", true),
        (r"h\*llo", "h*llo", true),
        (r"h\*llo", "hello", false),
        (r"[\]]", "]", true),
        ("a[", "a", false),
        ("", "", true),
        ("", "x", false),
    ] {
        assert_eq!(glob(p.as_bytes(), s.as_bytes()), want, "{p:?} against {s:?}");
    }
}

#[test]
fn string_commands_beyond_get_and_set() {
    let mut st = Store::default();
    let now = Instant::now();
    let r = |st: &mut Store, w: &[&[u8]]| String::from_utf8(run(st, w, now)).unwrap();
    assert_eq!(r(&mut st, &[b"SETNX", b"k", b"a"]), ":1\r\n");
    assert_eq!(r(&mut st, &[b"SETNX", b"k", b"b"]), ":0\r\n", "already set");
    assert_eq!(r(&mut st, &[b"APPEND", b"k", b"bc"]), ":3\r\n");
    assert_eq!(r(&mut st, &[b"APPEND", b"new", b"xy"]), ":2\r\n", "a missing key starts empty");
    assert_eq!(r(&mut st, &[b"STRLEN", b"k"]), ":3\r\n");
    assert_eq!(r(&mut st, &[b"STRLEN", b"none"]), ":0\r\n");
    assert_eq!(r(&mut st, &[b"GETSET", b"k", b"z"]), "$3\r\nabc\r\n");
    assert_eq!(r(&mut st, &[b"GETDEL", b"k"]), "$1\r\nz\r\n");
    assert_eq!(r(&mut st, &[b"GETDEL", b"k"]), "$-1\r\n");
    assert_eq!(r(&mut st, &[b"SETEX", b"t", b"100", b"v"]), "+OK\r\n");
    assert_eq!(r(&mut st, &[b"TTL", b"t"]), ":100\r\n");
    assert_eq!(r(&mut st, &[b"APPEND", b"t", b"w"]), ":2\r\n");
    assert_eq!(r(&mut st, &[b"TTL", b"t"]), ":100\r\n", "APPEND keeps the deadline");
    assert_eq!(r(&mut st, &[b"PSETEX", b"p", b"1500", b"v"]), "+OK\r\n");
    assert_eq!(r(&mut st, &[b"PTTL", b"p"]), ":1500\r\n");
    assert!(r(&mut st, &[b"SETEX", b"t", b"0", b"v"]).starts_with("-ERR"), "a non-positive time");
    assert!(r(&mut st, &[b"SETEX", b"t", b"x", b"v"]).starts_with("-ERR"));
    assert_eq!(r(&mut st, &[b"RPUSH", b"l", b"1"]), ":1\r\n");
    let typed: [&[&[u8]]; 4] =
        [&[b"APPEND", b"l", b"x"], &[b"STRLEN", b"l"], &[b"GETSET", b"l", b"x"], &[b"GETDEL", b"l"]];
    for c in typed {
        assert!(r(&mut st, c).starts_with("-WRONGTYPE"), "{c:?}");
    }
    assert!(r(&mut st, &[b"SETEX", b"t", b"1"]).starts_with("-ERR wrong number of arguments"));
    let mut keys = r(&mut st, &[b"KEYS", b"*"]);
    assert!(keys.starts_with("*4\r\n"), "{keys}");
    for k in ["new", "t", "p", "l"] {
        assert!(keys.contains(&format!("${}\r\n{k}\r\n", k.len())), "{k} in {keys}");
    }
    keys = r(&mut st, &[b"KEYS", b"[np]*"]);
    assert!(keys.starts_with("*2\r\n") && !keys.contains("\r\nt\r\n"), "{keys}");
    let later = now + Duration::from_secs(2);
    let keys = String::from_utf8(run(&mut st, &[b"KEYS", b"p"], later)).unwrap();
    assert_eq!(keys, "*0\r\n", "an expired key is not listed");
}

#[test]
fn strings_counters_and_errors() {
    let t = Instant::now();
    let mut s = Store::default();
    let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
    assert_eq!(r(&[b"get", b"k"]), "$-1\r\n");
    assert_eq!(r(&[b"SET", b"k", b"hello"]), "+OK\r\n");
    assert_eq!(r(&[b"GET", b"k"]), "$5\r\nhello\r\n");
    assert_eq!(r(&[b"SET", b"k", b"x", b"NX"]), "$-1\r\n");
    assert_eq!(r(&[b"SET", b"j", b"x", b"XX"]), "$-1\r\n");
    assert_eq!(r(&[b"SET", b"k", b"x", b"NX", b"XX"]), "-ERR syntax error\r\n");
    assert_eq!(r(&[b"MSET", b"a", b"1", b"b", b"2"]), "+OK\r\n");
    assert_eq!(r(&[b"MGET", b"a", b"nope", b"b"]), "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n");
    assert_eq!(r(&[b"INCR", b"a"]), ":2\r\n");
    assert_eq!(r(&[b"INCRBY", b"a", b"-5"]), ":-3\r\n");
    assert_eq!(r(&[b"DECR", b"new"]), ":-1\r\n");
    assert_eq!(r(&[b"INCR", b"k"]), "-ERR value is not an integer or out of range\r\n");
    assert_eq!(r(&[b"INCRBY", b"a", b"+1"]), "-ERR value is not an integer or out of range\r\n");
    assert_eq!(r(&[b"SET", b"m", b"9223372036854775807"]), "+OK\r\n");
    assert_eq!(r(&[b"INCR", b"m"]), "-ERR increment or decrement would overflow\r\n");
    assert_eq!(r(&[b"EXISTS", b"a", b"a", b"zz"]), ":2\r\n");
    assert_eq!(r(&[b"DEL", b"a", b"b", b"zz"]), ":2\r\n");
    assert_eq!(r(&[b"DBSIZE"]), ":3\r\n", "k, new and m");
    assert_eq!(r(&[b"GET"]), "-ERR wrong number of arguments for 'get' command\r\n");
    assert_eq!(r(&[b"MSET", b"a"]), "-ERR wrong number of arguments for 'mset' command\r\n");
    assert_eq!(r(&[b"NOPE", b"x\r"]), "-ERR unknown command 'NOPE', with args beginning with: 'x?' \r\n");
    assert_eq!(r(&[b"PING"]), "+PONG\r\n");
    assert_eq!(r(&[b"ECHO", b"e"]), "$1\r\ne\r\n");
    assert_eq!(r(&[b"SELECT", b"1"]), "-ERR DB index is out of range\r\n");
    assert_eq!(r(&[b"QUIT"]), "+OK\r\n");
    assert_eq!(r(&[b"DEBUG", b"SLEEP", b"0.005"]), "slow 5ms");
    assert_eq!(r(&[b"DEBUG", b"SLEEP", b"x"]), "-ERR value is not a valid float in 0..=60\r\n");
    assert_eq!(r(&[b"CONFIG", b"GET", b"SAVE"]), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    assert_eq!(r(&[b"CONFIG", b"GET", b"maxmemory"]), "*0\r\n");
    assert_eq!(r(&[b"CONFIG", b"SET", b"x", b"y"]), "-ERR unknown subcommand 'SET'\r\n");
    assert_eq!(r(&[b"FLUSHALL"]), "+OK\r\n");
    assert_eq!(r(&[b"DBSIZE"]), ":0\r\n");
}

#[test]
fn lists() {
    let t = Instant::now();
    let mut s = Store::default();
    let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
    assert_eq!(r(&[b"LPUSH", b"l", b"b", b"a"]), ":2\r\n", "pushed one by one to the front: a b");
    assert_eq!(r(&[b"RPUSH", b"l", b"c", b"d"]), ":4\r\n");
    assert_eq!(r(&[b"LRANGE", b"l", b"0", b"-1"]), "*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n");
    assert_eq!(r(&[b"LRANGE", b"l", b"-2", b"99"]), "*2\r\n$1\r\nc\r\n$1\r\nd\r\n");
    assert_eq!(r(&[b"LRANGE", b"l", b"3", b"1"]), "*0\r\n");
    assert_eq!(r(&[b"LRANGE", b"l", b"9", b"12"]), "*0\r\n");
    assert_eq!(r(&[b"LRANGE", b"l", b"-99", b"0"]), "*1\r\n$1\r\na\r\n");
    assert_eq!(r(&[b"LINDEX", b"l", b"-1"]), "$1\r\nd\r\n");
    assert_eq!(r(&[b"LINDEX", b"l", b"4"]), "$-1\r\n");
    assert_eq!(r(&[b"LLEN", b"l"]), ":4\r\n");
    assert_eq!(r(&[b"LPOP", b"l"]), "$1\r\na\r\n");
    assert_eq!(r(&[b"RPOP", b"l", b"2"]), "*2\r\n$1\r\nd\r\n$1\r\nc\r\n");
    assert_eq!(r(&[b"LPOP", b"l", b"-1"]), "-ERR value is out of range, must be positive\r\n");
    assert_eq!(r(&[b"TYPE", b"l"]), "+list\r\n");
    assert_eq!(r(&[b"RPOP", b"l", b"5"]), "*1\r\n$1\r\nb\r\n");
    assert_eq!(r(&[b"EXISTS", b"l"]), ":0\r\n", "the emptied list is deleted");
    assert_eq!(r(&[b"TYPE", b"l"]), "+none\r\n");
    assert_eq!(r(&[b"LPOP", b"l"]), "$-1\r\n");
    assert_eq!(r(&[b"LPOP", b"l", b"1"]), "*-1\r\n");
    assert_eq!(r(&[b"LLEN", b"l"]), ":0\r\n");
    assert_eq!(r(&[b"LRANGE", b"l", b"0", b"x"]), "-ERR value is not an integer or out of range\r\n");
    assert_eq!(r(&[b"LPUSH", b"l"]), "-ERR wrong number of arguments for 'lpush' command\r\n");
    // Long elements go as views between runs of copied short ones: the bytes are the same.
    let big = vec![b'b'; VIEW_MIN];
    assert_eq!(r(&[b"RPUSH", b"m", b"s1", &big, b"s2", b"s3", &big]), ":5\r\n");
    let want = format!(
        "*5\r\n$2\r\ns1\r\n${n}\r\n{b}\r\n$2\r\ns2\r\n$2\r\ns3\r\n${n}\r\n{b}\r\n",
        n = big.len(),
        b = String::from_utf8(big.clone()).unwrap()
    );
    assert_eq!(r(&[b"LRANGE", b"m", b"0", b"-1"]), want);
    let small = r(&[b"LRANGE", b"m", b"0", b"0"]);
    assert_eq!(small, "*1\r\n$2\r\ns1\r\n");
    let mut data = Vec::new();
    let mut args = Vec::new();
    for w in [&b"LRANGE"[..], b"m", b"0", b"-1"] {
        args.push(data.len()..data.len() + w.len());
        data.extend_from_slice(w);
    }
    let mut out = BufWriter::default();
    let Outcome::Chain(c) = exec(&mut s, &mut out, &data, &args, t) else { panic!() };
    assert_eq!(c.segments(), 4, "[*5 s1] [big] [s2 s3] [big]");
}

#[test]
fn blocking_pops_answer_at_once_or_ask_to_block() {
    let t = Instant::now();
    let mut s = Store::default();
    let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
    assert_eq!(r(&[b"BLPOP", b"a", b"b", b"0"]), "block left=true None");
    assert_eq!(r(&[b"BRPOP", b"a", b"1.5"]), "block left=false Some(1.5s)");
    assert_eq!(r(&[b"RPUSH", b"b", b"1", b"2"]), ":2\r\n");
    assert_eq!(r(&[b"BLPOP", b"a", b"b", b"0"]), "*2\r\n$1\r\nb\r\n$1\r\n1\r\n");
    assert_eq!(r(&[b"BRPOP", b"b", b"0"]), "*2\r\n$1\r\nb\r\n$1\r\n2\r\n");
    assert_eq!(r(&[b"EXISTS", b"b"]), ":0\r\n");
    assert_eq!(r(&[b"BLPOP", b"a", b"x"]), "-ERR timeout is not a float or out of range\r\n");
    assert_eq!(r(&[b"BLPOP", b"a", b"inf"]), "-ERR timeout is not a float or out of range\r\n");
    assert_eq!(r(&[b"BLPOP", b"a", b"-0.5"]), "-ERR timeout is negative\r\n");
    assert_eq!(r(&[b"BLPOP", b"a"]), "-ERR wrong number of arguments for 'blpop' command\r\n");
}

#[test]
fn sets_and_hashes() {
    let t = Instant::now();
    let mut s = Store::default();
    let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
    assert_eq!(r(&[b"SADD", b"s", b"x", b"y", b"x"]), ":2\r\n");
    assert_eq!(r(&[b"SADD", b"s", b"y", b"z"]), ":1\r\n");
    assert_eq!(r(&[b"SCARD", b"s"]), ":3\r\n");
    assert_eq!(r(&[b"SISMEMBER", b"s", b"z"]), ":1\r\n");
    assert_eq!(r(&[b"SREM", b"s", b"z", b"nope"]), ":1\r\n");
    let mut members = r(&[b"SMEMBERS", b"s"]);
    assert!(members == "*2\r\n$1\r\nx\r\n$1\r\ny\r\n" || members == "*2\r\n$1\r\ny\r\n$1\r\nx\r\n", "{members}");
    members = r(&[b"SPOP", b"s", b"5"]);
    assert!(members.starts_with("*2\r\n"), "{members}");
    assert_eq!(r(&[b"TYPE", b"s"]), "+none\r\n", "the emptied set is deleted");
    assert_eq!(r(&[b"SPOP", b"s"]), "$-1\r\n");
    assert_eq!(r(&[b"SPOP", b"s", b"1"]), "*0\r\n");
    assert_eq!(r(&[b"SMEMBERS", b"s"]), "*0\r\n");

    assert_eq!(r(&[b"HSET", b"h", b"f1", b"v1", b"f2", b"v2"]), ":2\r\n");
    assert_eq!(r(&[b"HSET", b"h", b"f1", b"new", b"f3", b"v3"]), ":1\r\n", "f1 replaced, f3 added");
    assert_eq!(r(&[b"HGET", b"h", b"f1"]), "$3\r\nnew\r\n");
    assert_eq!(r(&[b"HGET", b"h", b"zz"]), "$-1\r\n");
    assert_eq!(r(&[b"HLEN", b"h"]), ":3\r\n");
    assert_eq!(r(&[b"HEXISTS", b"h", b"f2"]), ":1\r\n");
    assert_eq!(r(&[b"HDEL", b"h", b"f2", b"f3", b"zz"]), ":2\r\n");
    assert_eq!(r(&[b"HGETALL", b"h"]), "*2\r\n$2\r\nf1\r\n$3\r\nnew\r\n");
    assert_eq!(r(&[b"TYPE", b"h"]), "+hash\r\n");
    assert_eq!(r(&[b"HSET", b"h", b"f"]), "-ERR wrong number of arguments for 'hset' command\r\n");
    assert_eq!(r(&[b"HDEL", b"h", b"f1"]), ":1\r\n");
    assert_eq!(r(&[b"EXISTS", b"h"]), ":0\r\n", "the emptied hash is deleted");
}

#[test]
fn sorted_sets() {
    let t = Instant::now();
    let mut s = Store::default();
    let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
    assert_eq!(r(&[b"ZADD", b"z", b"2", b"b", b"1", b"a", b"2.5", b"c"]), ":3\r\n");
    assert_eq!(r(&[b"ZADD", b"z", b"0.5", b"c", b"-inf", b"d"]), ":1\r\n", "c moved, d added");
    assert_eq!(r(&[b"ZCARD", b"z"]), ":4\r\n");
    assert_eq!(r(&[b"ZSCORE", b"z", b"c"]), "$3\r\n0.5\r\n");
    assert_eq!(r(&[b"ZSCORE", b"z", b"d"]), "$4\r\n-inf\r\n");
    assert_eq!(r(&[b"ZSCORE", b"z", b"nope"]), "$-1\r\n");
    assert_eq!(r(&[b"ZRANGE", b"z", b"0", b"-1"]), "*4\r\n$1\r\nd\r\n$1\r\nc\r\n$1\r\na\r\n$1\r\nb\r\n");
    assert_eq!(
        r(&[b"ZRANGE", b"z", b"1", b"2", b"withscores"]),
        "*4\r\n$1\r\nc\r\n$3\r\n0.5\r\n$1\r\na\r\n$1\r\n1\r\n"
    );
    assert_eq!(r(&[b"ZRANGE", b"z", b"5", b"9"]), "*0\r\n");
    assert_eq!(r(&[b"ZADD", b"z", b"NX", b"9", b"a", b"9", b"e"]), ":1\r\n", "NX: e added, a kept");
    assert_eq!(r(&[b"ZSCORE", b"z", b"a"]), "$1\r\n1\r\n");
    assert_eq!(r(&[b"ZADD", b"z", b"XX", b"3", b"a", b"3", b"f"]), ":0\r\n", "XX: a moved, f not added");
    assert_eq!(r(&[b"ZSCORE", b"z", b"f"]), "$-1\r\n");
    assert_eq!(r(&[b"ZADD", b"z", b"1", b"a", b"nan", b"x"]), "-ERR value is not a valid float\r\n");
    assert_eq!(r(&[b"ZSCORE", b"z", b"a"]), "$1\r\n3\r\n", "a refused ZADD changed nothing");
    // Redis's own words for it.
    assert_eq!(
        r(&[b"ZADD", b"z", b"NX", b"XX", b"1", b"a"]),
        "-ERR XX and NX options at the same time are not compatible\r\n"
    );
    for bad in [&b"nan"[..], b"", b"NaN", b"1e", b" 1"] {
        assert_eq!(r(&[b"ZADD", b"z", bad, b"m"]), "-ERR value is not a valid float\r\n", "{bad:?}");
    }
    // Scores print as Redis prints doubles (%.17g).
    assert_eq!(
        r(&[b"ZADD", b"big", b"1e20", b"a", b"1.7976931348623157e308", b"b", b"+inf", b"c", b"0.1", b"d"]),
        ":4\r\n"
    );
    assert_eq!(r(&[b"ZSCORE", b"big", b"a"]), "$5\r\n1e+20\r\n");
    assert_eq!(r(&[b"ZSCORE", b"big", b"b"]), "$23\r\n1.7976931348623157e+308\r\n");
    assert_eq!(r(&[b"ZSCORE", b"big", b"c"]), "$3\r\ninf\r\n");
    assert_eq!(r(&[b"ZSCORE", b"big", b"d"]), "$19\r\n0.10000000000000001\r\n");
    assert_eq!(r(&[b"ZADD", b"z", b"1"]), "-ERR wrong number of arguments for 'zadd' command\r\n");
    assert_eq!(r(&[b"ZADD", b"z", b"1", b"a", b"2"]), "-ERR syntax error\r\n");
    assert_eq!(r(&[b"ZPOPMIN", b"z"]), "*2\r\n$1\r\nd\r\n$4\r\n-inf\r\n");
    assert_eq!(r(&[b"ZREM", b"z", b"c", b"nope"]), ":1\r\n");
    assert_eq!(r(&[b"TYPE", b"z"]), "+zset\r\n");
    assert_eq!(
        r(&[b"ZPOPMIN", b"z", b"10"]),
        "*6\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\na\r\n$1\r\n3\r\n$1\r\ne\r\n$1\r\n9\r\n"
    );
    assert_eq!(r(&[b"EXISTS", b"z"]), ":0\r\n", "the emptied sorted set is deleted");
    assert_eq!(r(&[b"ZADD", b"new", b"XX", b"1", b"a"]), ":0\r\n");
    assert_eq!(r(&[b"EXISTS", b"new"]), ":0\r\n", "XX on a missing key creates nothing");
    assert_eq!(r(&[b"ZPOPMIN", b"new"]), "*0\r\n");
}

#[test]
fn each_type_refuses_the_others_commands() {
    let t = Instant::now();
    let mut s = Store::default();
    let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut s, w, t)).unwrap();
    let wrong = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    r(&[b"SET", b"str", b"1"]);
    r(&[b"RPUSH", b"list", b"1"]);
    r(&[b"SADD", b"set", b"1"]);
    r(&[b"HSET", b"hash", b"f", b"1"]);
    r(&[b"ZADD", b"zset", b"1", b"m"]);
    let keys = [(&b"str"[..], "string"), (b"list", "list"), (b"set", "set"), (b"hash", "hash"), (b"zset", "zset")];
    for (key, ok) in keys {
        assert_eq!(r(&[b"TYPE", key]), format!("+{ok}\r\n"));
        let probes: [&[&[u8]]; 6] = [
            &[b"GET", key],
            &[b"LPUSH", key, b"x"],
            &[b"SADD", key, b"x"],
            &[b"HSET", key, b"f", b"x"],
            &[b"INCR", key],
            &[b"ZADD", key, b"1", b"x"],
        ];
        for (p, owner) in probes.iter().zip(["string", "list", "set", "hash", "string", "zset"]) {
            let got = r(p);
            if owner == ok {
                assert_ne!(got, wrong, "{p:?}");
            } else {
                assert_eq!(got, wrong, "{p:?} on a {ok}");
            }
        }
        assert_eq!(r(&[b"TYPE", key]), format!("+{ok}\r\n"), "a refused command changed nothing");
    }
    assert_eq!(r(&[b"MGET", b"list", b"str"]), "*2\r\n$-1\r\n$1\r\n2\r\n", "MGET reads other types as missing");
    assert_eq!(r(&[b"SET", b"list", b"s"]), "+OK\r\n", "SET overwrites any type");
    assert_eq!(r(&[b"TYPE", b"list"]), "+string\r\n");
    assert_eq!(r(&[b"DEL", b"set", b"hash"]), ":2\r\n");
    assert_eq!(r(&[b"EXPIRE", b"str", b"10"]), ":1\r\n");
}

#[test]
fn expiry_commands() {
    let t = Instant::now();
    let mut s = Store::default();
    let mut r = |w: &[&[u8]], now| String::from_utf8(run(&mut s, w, now)).unwrap();
    assert_eq!(r(&[b"SET", b"k", b"v", b"EX", b"10"], t), "+OK\r\n");
    assert_eq!(r(&[b"TTL", b"k"], t), ":10\r\n");
    assert_eq!(r(&[b"PTTL", b"k"], t + Duration::from_millis(2500)), ":7500\r\n");
    assert_eq!(r(&[b"SET", b"k", b"w", b"KEEPTTL"], t), "+OK\r\n");
    assert_eq!(r(&[b"TTL", b"k"], t), ":10\r\n", "KEEPTTL kept the deadline");
    assert_eq!(r(&[b"INCR", b"n"], t), ":1\r\n");
    assert_eq!(r(&[b"PEXPIRE", b"n", b"100"], t), ":1\r\n");
    assert_eq!(r(&[b"INCR", b"n"], t), ":2\r\n");
    assert_eq!(r(&[b"PTTL", b"n"], t), ":100\r\n", "INCR keeps the deadline");
    assert_eq!(r(&[b"GET", b"n"], t + Duration::from_millis(100)), "$-1\r\n");
    assert_eq!(r(&[b"SET", b"k", b"v"], t), "+OK\r\n");
    assert_eq!(r(&[b"TTL", b"k"], t), ":-1\r\n", "a plain SET clears the deadline");
    assert_eq!(r(&[b"TTL", b"zz"], t), ":-2\r\n");
    assert_eq!(r(&[b"EXPIRE", b"k", b"5"], t), ":1\r\n");
    assert_eq!(r(&[b"PERSIST", b"k"], t), ":1\r\n");
    assert_eq!(r(&[b"PERSIST", b"k"], t), ":0\r\n");
    assert_eq!(r(&[b"SET", b"k", b"v", b"EX", b"0"], t), "-ERR invalid expire time in 'set' command\r\n");
    assert_eq!(r(&[b"SET", b"k", b"v", b"PX"], t), "-ERR syntax error\r\n");
    // As Redis: seconds beyond i64::MAX / 1000 milliseconds are refused, fewer are taken.
    assert_eq!(
        r(&[b"SET", b"k", b"v", b"EX", b"9999999999999999"], t),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(r(&[b"SET", b"k", b"v", b"EX", b"99999999999999"], t), "+OK\r\n");
    assert_eq!(r(&[b"EXPIRE", b"k", b"-1"], t), ":1\r\n", "a non-positive expiry deletes");
    assert_eq!(r(&[b"GET", b"k"], t), "$-1\r\n");
}

#[test]
fn expiry_overflows_are_errors_that_name_the_command_and_change_nothing() {
    let t = Instant::now();
    let mut st = Store::default();
    let mut r = |w: &[&[u8]]| String::from_utf8(run(&mut st, w, t)).unwrap();
    assert_eq!(r(&[b"SET", b"k", b"v"]), "+OK\r\n");
    for (cmd, amount, name) in [
        (&b"EXPIRE"[..], &b"-9223372036854776"[..], "expire"), // below i64::MIN in ms
        (b"EXPIRE", b"9223372036854776", "expire"),            // above i64::MAX in ms
        (b"EXPIRE", b"9223372036854775", "expire"),            // fits, but not added to now
        (b"PEXPIRE", b"9223372036854775807", "pexpire"),
    ] {
        let want = format!("-ERR invalid expire time in '{name}' command\r\n");
        assert_eq!(r(&[cmd, b"k", amount]), want, "{}", String::from_utf8_lossy(amount));
        assert_eq!(r(&[b"GET", b"k"]), "$1\r\nv\r\n", "the key is kept");
    }
    assert_eq!(r(&[b"PEXPIRE", b"k", b"-9223372036854775808"]), ":1\r\n", "in the past: deleted");
    assert_eq!(r(&[b"GET", b"k"]), "$-1\r\n");
    assert_eq!(r(&[b"SETEX", b"k", b"0", b"v"]), "-ERR invalid expire time in 'setex' command\r\n");
    assert_eq!(r(&[b"PSETEX", b"k", b"-5", b"v"]), "-ERR invalid expire time in 'psetex' command\r\n");
    assert_eq!(r(&[b"SETEX", b"k", b"x", b"v"]), "-ERR value is not an integer or out of range\r\n");
    assert_eq!(
        r(&[b"SET", b"k", b"v", b"PX", b"9223372036854775807"]),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(r(&[b"EXISTS", b"k"]), ":0\r\n", "nothing was set");
}
