//! Sorted sets: ZADD (`[NX | XX]` then score member pairs), ZCARD, ZSCORE, ZREM, ZPOPMIN (with
//! an optional count), ZRANGE by rank (`[WITHSCORES]`).

use super::{array, count_arg, err, int, rank_range, Arity, Call, Outcome, Spec};
use crate::resp;
use crate::store::{WrongType, ZSet};
use ringstage::prelude::*;

pub const COMMANDS: &[Spec] = &[
    super::spec("ZADD", Arity::at_least(4), zadd),
    super::spec("ZCARD", Arity::exact(2), zcard),
    super::spec("ZSCORE", Arity::exact(3), zscore),
    super::spec("ZREM", Arity::at_least(3), zrem),
    super::spec("ZPOPMIN", Arity::between(2, 3), zpopmin),
    super::spec("ZRANGE", Arity::between(4, 5), zrange),
];

fn zadd(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let n = c.n();
    // The options, then score-member pairs: anything else where a score belongs is not a valid
    // float (`nan`, an empty string).
    let (mut nx, mut xx, mut i) = (false, false, 2);
    while i < n {
        match c.arg(i).to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            _ => break,
        }
        i += 1;
    }
    if nx && xx {
        return Ok(err("ERR XX and NX options at the same time are not compatible"));
    }
    if i == n || (n - i) % 2 != 0 {
        return Ok(err("ERR syntax error"));
    }
    // Every score is checked before anything changes.
    let mut pairs = Vec::with_capacity((n - i) / 2);
    for j in (i..n).step_by(2) {
        let Some(score) = parse_score(c.arg(j)) else { return Ok(err("ERR value is not a valid float")) };
        pairs.push((score, c.arg(j + 1)));
    }
    let key = c.arg(1);
    let z = c.store.write_or_insert::<ZSet>(key, c.now)?;
    let added = pairs.iter().filter(|&&(score, m)| z.add(m, score, nx, xx)).count();
    c.store.drop_if_empty(key); // `XX` on a new key leaves it empty
    Ok(Outcome::Reply(resp::integer(added as i64)))
}

fn zrem(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    super::remove_members(c, |z: &mut ZSet, member| z.remove(member))
}

fn zpopmin(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let count = match count_arg(c.data, c.args, 2) {
        Ok(n) => n.unwrap_or(1),
        Err(e) => return Ok(e),
    };
    let key = c.arg(1);
    let Some(z) = c.store.write::<ZSet>(key, c.now)? else { return Ok(Outcome::Reply(resp::EMPTY_ARRAY.clone())) };
    let items: Vec<IoBuf> =
        (0..count).map_while(|_| z.pop_min()).flat_map(|(m, score)| [resp::bulk(&m), score_bulk(score)]).collect();
    c.store.drop_if_empty(key);
    Ok(array(items.into_iter()))
}

fn zcard(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let len = c.store.read::<ZSet>(c.arg(1), c.now)?.map_or(0, ZSet::len);
    Ok(Outcome::Reply(resp::integer(len as i64)))
}

fn zscore(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let member = c.arg(2);
    let z = c.store.read::<ZSet>(c.arg(1), c.now)?;
    Ok(Outcome::Reply(z.and_then(|z| z.score(member)).map_or_else(|| resp::NIL.clone(), score_bulk)))
}

fn zrange(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let (data, args) = (c.data, c.args);
    let z = c.store.read::<ZSet>(c.arg(1), c.now)?;
    let scores = match args.get(4).map(|r| &data[r.clone()]) {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"WITHSCORES") => true,
        Some(_) => return Ok(err("ERR syntax error")),
    };
    let (Some(start), Some(stop)) = (int(&data[args[2].clone()]), int(&data[args[3].clone()])) else {
        return Ok(err("ERR value is not an integer or out of range"));
    };
    let len = z.map_or(0, ZSet::len);
    let Some((z, (start, stop))) = z.zip(rank_range(start, stop, len)) else {
        return Ok(Outcome::Reply(resp::EMPTY_ARRAY.clone()));
    };
    let items: Vec<IoBuf> = z
        .range(start, stop)
        .flat_map(|(m, s)| [Some(resp::bulk(m)), scores.then(|| score_bulk(s))])
        .flatten()
        .collect();
    Ok(array(items.into_iter()))
}

/// A score as Redis reads one: a float, `inf`, `+inf` or `-inf`; never NaN.
fn parse_score(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    let v: f64 = match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => t.parse().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

/// A score as a bulk string, as Redis prints doubles (see [`resp::double`]).
fn score_bulk(v: f64) -> IoBuf {
    resp::bulk(resp::double(v).as_bytes())
}
