//! Lists: LPUSH, RPUSH, LPOP, RPOP (with an optional count), LLEN, LRANGE, LINDEX, and the
//! blocking BLPOP and BRPOP. Elements are stored framed, so pops answer with views of the
//! stored blocks.

use std::time::Duration;

use super::{array, count_arg, err, int, pops, rank_range, Arity, Call, Outcome, Spec};
use crate::resp;
use crate::store::{List, WrongType};

pub const COMMANDS: &[Spec] = &[
    super::spec("LPUSH", Arity::at_least(3), |c| push(c, true)),
    super::spec("RPUSH", Arity::at_least(3), |c| push(c, false)),
    super::spec("LPOP", Arity::between(2, 3), |c| pop(c, true)),
    super::spec("RPOP", Arity::between(2, 3), |c| pop(c, false)),
    super::spec("LLEN", Arity::exact(2), llen),
    super::spec("LRANGE", Arity::exact(4), lrange),
    super::spec("LINDEX", Arity::exact(3), lindex),
    super::spec("BLPOP", Arity::at_least(3), |c| blocking_pop(c, true)),
    super::spec("BRPOP", Arity::at_least(3), |c| blocking_pop(c, false)),
];

fn push(c: &mut Call<'_>, left: bool) -> Result<Outcome, WrongType> {
    let l = c.store.write_or_insert::<List>(c.arg(1), c.now)?;
    for i in 2..c.args.len() {
        let e = resp::bulk(&c.data[c.args[i].clone()]);
        if left {
            l.push_front(e);
        } else {
            l.push_back(e);
        }
    }
    Ok(Outcome::Reply(resp::integer(l.len() as i64)))
}

fn pop(c: &mut Call<'_>, left: bool) -> Result<Outcome, WrongType> {
    let count = match count_arg(c.data, c.args, 2) {
        Ok(n) => n,
        Err(e) => return Ok(e),
    };
    let key = c.arg(1);
    let Some(l) = c.store.write::<List>(key, c.now)? else {
        return Ok(Outcome::Reply(if count.is_some() { resp::NIL_ARRAY.clone() } else { resp::NIL.clone() }));
    };
    let out = pops(count, || if left { l.pop_front() } else { l.pop_back() });
    c.store.drop_if_empty(key);
    Ok(out)
}

fn llen(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let len = c.store.read::<List>(c.arg(1), c.now)?.map_or(0, List::len);
    Ok(Outcome::Reply(resp::integer(len as i64)))
}

fn lindex(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let at = c.arg(2);
    let l = c.store.read::<List>(c.arg(1), c.now)?;
    let Some(at) = int(at) else { return Ok(err("ERR value is not an integer or out of range")) };
    let e = l.and_then(|l| rank_range(at, at, l.len()).map(|(i, _)| l[i].clone()));
    Ok(Outcome::Reply(e.unwrap_or_else(|| resp::NIL.clone())))
}

fn lrange(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let (start, stop) = (c.arg(2), c.arg(3));
    let l = c.store.read::<List>(c.arg(1), c.now)?;
    let (Some(start), Some(stop)) = (int(start), int(stop)) else {
        return Ok(err("ERR value is not an integer or out of range"));
    };
    Ok(match l.and_then(|l| rank_range(start, stop, l.len()).map(|r| (l, r))) {
        Some((l, (start, stop))) => array(l.range(start..=stop).cloned()),
        None => Outcome::Reply(resp::EMPTY_ARRAY.clone()),
    })
}

/// `BLPOP` / `BRPOP key [key ...] timeout`: pops from the first non-empty list at once, or
/// blocks (the shard parks the connection) until a push or the timeout (seconds, a decimal; 0
/// waits for ever).
fn blocking_pop(c: &mut Call<'_>, left: bool) -> Result<Outcome, WrongType> {
    let n = c.n();
    let t = std::str::from_utf8(c.arg(n - 1)).ok().and_then(|t| t.parse::<f64>().ok()).filter(|t| t.is_finite());
    let timeout = match t {
        None => return Ok(err("ERR timeout is not a float or out of range")),
        Some(t) if t < 0.0 => return Ok(err("ERR timeout is negative")),
        Some(0.0) => None,
        Some(t) => Some(Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX)),
    };
    for i in 1..n - 1 {
        let key = c.arg(i);
        let Some(l) = c.store.write::<List>(key, c.now)? else { continue };
        let Some(e) = (if left { l.pop_front() } else { l.pop_back() }) else { continue };
        c.store.drop_if_empty(key);
        return Ok(array([resp::bulk(key), e].into_iter()));
    }
    Ok(Outcome::Block { left, timeout })
}
