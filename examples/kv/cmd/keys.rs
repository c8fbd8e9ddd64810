//! Keys of any type: DEL, EXISTS, KEYS (Redis's glob patterns), TYPE, EXPIRE, PEXPIRE, TTL,
//! PTTL, PERSIST, DBSIZE, FLUSHALL, FLUSHDB.

use super::{array, expiry, Arity, Call, Expiry, Outcome, Spec};
use crate::resp;
use crate::store::WrongType;
use ringstage::prelude::*;

pub const COMMANDS: &[Spec] = &[
    super::spec("DEL", Arity::at_least(2), del),
    super::spec("EXISTS", Arity::at_least(2), exists),
    super::spec("KEYS", Arity::exact(2), keys),
    super::spec("TYPE", Arity::exact(2), type_of),
    super::spec("EXPIRE", Arity::exact(3), |c| expire(c, 1000, "expire")),
    super::spec("PEXPIRE", Arity::exact(3), |c| expire(c, 1, "pexpire")),
    super::spec("TTL", Arity::exact(2), |c| ttl(c, 1000)),
    super::spec("PTTL", Arity::exact(2), |c| ttl(c, 1)),
    super::spec("PERSIST", Arity::exact(2), persist),
    super::spec("DBSIZE", Arity::exact(1), |c| Ok(Outcome::Reply(resp::integer(c.store.len() as i64)))),
    super::spec("FLUSHALL", Arity::at_least(1), flush),
    super::spec("FLUSHDB", Arity::at_least(1), flush),
];

fn del(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let n = (1..c.n()).filter(|&i| c.store.remove(c.arg(i), c.now)).count();
    Ok(Outcome::Reply(resp::integer(n as i64)))
}

fn exists(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let n = (1..c.n()).filter(|&i| c.store.contains(c.arg(i), c.now)).count();
    Ok(Outcome::Reply(resp::integer(n as i64)))
}

/// Every live key matching the glob pattern (as Redis, a full scan of the keyspace).
fn keys(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let pattern = c.arg(1);
    let keys: Vec<IoBuf> = c.store.keys(c.now).filter(|k| glob(pattern, k)).map(resp::bulk).collect();
    Ok(array(keys.into_iter()))
}

fn type_of(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    Ok(Outcome::Reply(IoBuf::from(format!("+{}\r\n", c.store.type_name(c.arg(1), c.now)).into_bytes())))
}

/// `EXPIRE` / `PEXPIRE key amount` in units of `unit_ms`; a time now or past deletes the key.
fn expire(c: &mut Call<'_>, unit_ms: i64, name: &str) -> Result<Outcome, WrongType> {
    let (key, now) = (c.arg(1), c.now);
    Ok(match expiry(now, c.arg(2), unit_ms, name) {
        Ok(Expiry::Past) => Outcome::Reply(resp::integer(i64::from(c.store.remove(key, now)))),
        Ok(Expiry::At(at)) => Outcome::Reply(resp::integer(i64::from(c.store.set_deadline(key, Some(at), now)))),
        Err(e) => e,
    })
}

/// `TTL` (rounded to seconds) / `PTTL`: -2 for a missing key, -1 for one without a deadline.
fn ttl(c: &mut Call<'_>, unit_ms: u128) -> Result<Outcome, WrongType> {
    Ok(Outcome::Reply(resp::integer(match c.store.deadline(c.arg(1), c.now) {
        None => -2,
        Some(None) => -1,
        Some(Some(t)) => {
            let ms = t.saturating_duration_since(c.now).as_millis();
            ((ms + unit_ms / 2) / unit_ms) as i64
        }
    })))
}

fn persist(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let had = matches!(c.store.deadline(c.arg(1), c.now), Some(Some(_)));
    Ok(Outcome::Reply(resp::integer(i64::from(had && c.store.set_deadline(c.arg(1), None, c.now)))))
}

fn flush(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    c.store.clear();
    Ok(Outcome::Reply(resp::OK.clone()))
}

/// Redis's glob patterns (`KEYS`): `*` any run of bytes, `?` one byte, `[abc]`, `[^a-c]` or
/// `[!a-c]` one byte of (or not of) a set with ranges, `\x` the byte `x`. An unclosed `[`
/// runs to the end of the pattern.
pub(super) fn glob(p: &[u8], s: &[u8]) -> bool {
    // Backtracking to the last `*` suffices: the bytes a star takes only ever need to grow.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, si));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => {
                let (matched, end) = class(&p[pi + 1..], s[si]);
                matched.then_some(pi + 1 + end)
            }
            Some(b'\\') if pi + 1 < p.len() => (p[pi + 1] == s[si]).then_some(pi + 2),
            Some(&c) => (c == s[si]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                si += 1;
            }
            (None, Some((sp, ss))) => {
                star = Some((sp, ss + 1));
                pi = sp;
                si = ss + 1;
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches byte `b` against the set that starts `p` (just after its `[`). Returns whether it
/// matched and the length of the set with its closing `]`.
fn class(p: &[u8], b: u8) -> (bool, usize) {
    let negate = matches!(p.first(), Some(b'^' | b'!'));
    let mut i = usize::from(negate);
    let mut hit = false;
    while i < p.len() && p[i] != b']' {
        let (lo, len) = if p[i] == b'\\' && i + 1 < p.len() { (p[i + 1], 2) } else { (p[i], 1) };
        if p.get(i + len) == Some(&b'-') && p.get(i + len + 1).is_some_and(|&c| c != b']') {
            let hi = p[i + len + 1];
            hit |= (lo.min(hi)..=lo.max(hi)).contains(&b);
            i += len + 2;
        } else {
            hit |= lo == b;
            i += len;
        }
    }
    (hit != negate, (i + 1).min(p.len()))
}
