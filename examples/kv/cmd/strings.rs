//! Strings: GET, SET (NX, XX, EX, PX, KEEPTTL), SETNX, SETEX, PSETEX, GETSET, GETDEL, STRLEN,
//! APPEND, MGET, MSET, INCR, DECR, INCRBY, DECRBY.

use super::{array, err, int, str_reply, ttl_deadline, Arity, Call, Outcome, Spec};
use crate::resp;
use crate::store::{Str, WrongType};

pub const COMMANDS: &[Spec] = &[
    super::spec("GET", Arity::exact(2), get),
    super::spec("SET", Arity::at_least(3), set),
    super::spec("SETNX", Arity::exact(3), setnx),
    super::spec("SETEX", Arity::exact(4), setex),
    super::spec("PSETEX", Arity::exact(4), psetex),
    super::spec("GETSET", Arity::exact(3), getset),
    super::spec("GETDEL", Arity::exact(2), getdel),
    super::spec("STRLEN", Arity::exact(2), strlen),
    super::spec("APPEND", Arity::exact(3), append),
    super::spec("MGET", Arity::at_least(2), mget),
    super::spec("MSET", Arity::pairs_after(3), mset),
    super::spec("INCR", Arity::exact(2), |c| incr_by(c, Some(1))),
    super::spec("DECR", Arity::exact(2), |c| incr_by(c, Some(-1))),
    super::spec("INCRBY", Arity::exact(3), |c| match int(c.arg(2)) {
        Some(by) => incr_by(c, Some(by)),
        None => Ok(err("ERR value is not an integer or out of range")),
    }),
    super::spec("DECRBY", Arity::exact(3), |c| match int(c.arg(2)) {
        Some(by) => incr_by(c, by.checked_neg()),
        None => Ok(err("ERR value is not an integer or out of range")),
    }),
];

fn get(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    Ok(Outcome::Reply(match c.store.get(c.arg(1), c.now)? {
        Some(v) => str_reply(c.out, v),
        None => resp::NIL.clone(),
    }))
}

/// `SET key value [NX | XX] [EX seconds | PX milliseconds | KEEPTTL]`.
fn set(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let syntax = || Ok(err("ERR syntax error"));
    let (mut nx, mut xx, mut keep) = (false, false, false);
    let mut expires = None;
    let mut i = 3;
    while i < c.n() {
        let o = c.arg(i);
        if o.eq_ignore_ascii_case(b"NX") && !xx {
            nx = true;
        } else if o.eq_ignore_ascii_case(b"XX") && !nx {
            xx = true;
        } else if o.eq_ignore_ascii_case(b"KEEPTTL") && expires.is_none() {
            keep = true;
        } else if (o.eq_ignore_ascii_case(b"EX") || o.eq_ignore_ascii_case(b"PX")) && !keep && expires.is_none() {
            if i + 1 == c.n() {
                return syntax();
            }
            let unit = if o.eq_ignore_ascii_case(b"EX") { 1000 } else { 1 };
            match ttl_deadline(c.now, c.arg(i + 1), unit, "set") {
                Ok(t) => expires = Some(t),
                Err(e) => return Ok(e),
            }
            i += 1;
        } else {
            return syntax();
        }
        i += 1;
    }
    let key = c.arg(1);
    if nx || xx || keep {
        match c.store.deadline(key, c.now) {
            None if xx => return Ok(Outcome::Reply(resp::NIL.clone())),
            Some(_) if nx => return Ok(Outcome::Reply(resp::NIL.clone())),
            Some(d) if keep => expires = d,
            _ => {}
        }
    }
    c.store.set(key, c.arg(2), expires);
    Ok(Outcome::Reply(resp::OK.clone()))
}

fn setnx(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let added = !c.store.contains(c.arg(1), c.now);
    if added {
        c.store.set(c.arg(1), c.arg(2), None);
    }
    Ok(Outcome::Reply(resp::integer(i64::from(added))))
}

fn setex(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    set_with_ttl(c, 1000, "setex")
}

fn psetex(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    set_with_ttl(c, 1, "psetex")
}

fn set_with_ttl(c: &mut Call<'_>, unit_ms: i64, name: &str) -> Result<Outcome, WrongType> {
    Ok(match ttl_deadline(c.now, c.arg(2), unit_ms, name) {
        Ok(t) => {
            c.store.set(c.arg(1), c.arg(3), Some(t));
            Outcome::Reply(resp::OK.clone())
        }
        Err(e) => e,
    })
}

/// The old value (or nil), replaced. A string only.
fn getset(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let old = c.store.get(c.arg(1), c.now)?;
    let reply = old.map_or_else(|| resp::NIL.clone(), |v| str_reply(c.out, v));
    c.store.set(c.arg(1), c.arg(2), None);
    Ok(Outcome::Reply(reply))
}

/// The old value (or nil), removed. A string only.
fn getdel(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let old = c.store.get(c.arg(1), c.now)?;
    let reply = old.map_or_else(|| resp::NIL.clone(), |v| str_reply(c.out, v));
    c.store.remove(c.arg(1), c.now);
    Ok(Outcome::Reply(reply))
}

fn strlen(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let len = c.store.get(c.arg(1), c.now)?.map_or(0, |v| v.bytes().len());
    Ok(Outcome::Reply(resp::integer(len as i64)))
}

/// A copy of the value with the bytes added (values are immutable blocks shared with replies
/// in flight); the deadline stays.
fn append(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let old = c.store.get(c.arg(1), c.now)?;
    let mut v = old.map_or(&[][..], Str::bytes).to_vec();
    v.extend_from_slice(c.arg(2));
    c.store.set_keeping_deadline(c.arg(1), &v, c.now);
    Ok(Outcome::Reply(resp::integer(v.len() as i64)))
}

/// As in Redis, a key of another type reads as missing here.
fn mget(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let mut replies = Vec::with_capacity(c.n() - 1);
    for i in 1..c.n() {
        replies.push(match c.store.get(c.arg(i), c.now) {
            Ok(Some(v)) => str_reply(c.out, v),
            _ => resp::NIL.clone(),
        });
    }
    Ok(array(replies.into_iter()))
}

fn mset(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    for i in (1..c.n()).step_by(2) {
        c.store.set(c.arg(i), c.arg(i + 1), None);
    }
    Ok(Outcome::Reply(resp::OK.clone()))
}

/// Adds `by` (`None`: a decrement that cannot be negated) to the integer stored at the key.
fn incr_by(c: &mut Call<'_>, by: Option<i64>) -> Result<Outcome, WrongType> {
    let cur = match c.store.get(c.arg(1), c.now)? {
        None => 0,
        Some(v) => match int(v.bytes()) {
            Some(v) => v,
            None => return Ok(err("ERR value is not an integer or out of range")),
        },
    };
    let Some(v) = by.and_then(|by| cur.checked_add(by)) else {
        return Ok(err("ERR increment or decrement would overflow"));
    };
    c.store.set_keeping_deadline(c.arg(1), v.to_string().as_bytes(), c.now);
    Ok(Outcome::Reply(resp::integer(v)))
}
