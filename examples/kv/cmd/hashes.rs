//! Hashes: HSET (field value pairs), HGET, HDEL, HLEN, HEXISTS, HGETALL. Values are stored
//! framed, so HGET answers with a view of the stored block.

use super::{array, Arity, Call, Outcome, Spec};
use crate::resp;
use crate::store::{Hash, WrongType};
use ringstage::prelude::*;

pub const COMMANDS: &[Spec] = &[
    super::spec("HSET", Arity::pairs_after(4), hset),
    super::spec("HGET", Arity::exact(3), hget),
    super::spec("HDEL", Arity::at_least(3), hdel),
    super::spec("HLEN", Arity::exact(2), hlen),
    super::spec("HEXISTS", Arity::exact(3), hexists),
    super::spec("HGETALL", Arity::exact(2), hgetall),
];

fn hset(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let (data, args) = (c.data, c.args);
    let a = |i: usize| &data[args[i].clone()];
    let h = c.store.write_or_insert::<Hash>(a(1), c.now)?;
    let mut added = 0;
    for i in (2..args.len()).step_by(2) {
        let v = resp::bulk(a(i + 1));
        match h.get_mut(a(i)) {
            Some(old) => *old = v,
            None => {
                h.insert(a(i).into(), v);
                added += 1;
            }
        }
    }
    Ok(Outcome::Reply(resp::integer(added)))
}

fn hdel(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    super::remove_members(c, |h: &mut Hash, field| h.remove(field).is_some())
}

fn hget(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let field = c.arg(2);
    let h = c.store.read::<Hash>(c.arg(1), c.now)?;
    Ok(Outcome::Reply(h.and_then(|h| h.get(field)).cloned().unwrap_or_else(|| resp::NIL.clone())))
}

fn hexists(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let field = c.arg(2);
    let h = c.store.read::<Hash>(c.arg(1), c.now)?;
    Ok(Outcome::Reply(resp::integer(i64::from(h.is_some_and(|h| h.contains_key(field))))))
}

fn hlen(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let len = c.store.read::<Hash>(c.arg(1), c.now)?.map_or(0, Hash::len);
    Ok(Outcome::Reply(resp::integer(len as i64)))
}

fn hgetall(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let h = c.store.read::<Hash>(c.arg(1), c.now)?;
    let items: Vec<IoBuf> = h.into_iter().flatten().flat_map(|(f, v)| [resp::bulk(f), v.clone()]).collect();
    Ok(array(items.into_iter()))
}
