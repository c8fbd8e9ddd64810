//! Sets: SADD, SREM, SCARD, SISMEMBER, SMEMBERS, SPOP (an arbitrary member, with an optional
//! count).

use super::{array, count_arg, pops, Arity, Call, Outcome, Spec};
use crate::resp;
use crate::store::{MemberSet, WrongType};
use ringstage::prelude::*;

pub const COMMANDS: &[Spec] = &[
    super::spec("SADD", Arity::at_least(3), sadd),
    super::spec("SREM", Arity::at_least(3), srem),
    super::spec("SCARD", Arity::exact(2), scard),
    super::spec("SISMEMBER", Arity::exact(3), sismember),
    super::spec("SMEMBERS", Arity::exact(2), smembers),
    super::spec("SPOP", Arity::between(2, 3), spop),
];

fn sadd(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let (data, args) = (c.data, c.args);
    let m = c.store.write_or_insert::<MemberSet>(c.arg(1), c.now)?;
    let added = args[2..].iter().filter(|r| m.insert(&data[(*r).clone()])).count();
    Ok(Outcome::Reply(resp::integer(added as i64)))
}

fn srem(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    super::remove_members(c, |m: &mut MemberSet, member| m.remove(member))
}

fn scard(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let len = c.store.read::<MemberSet>(c.arg(1), c.now)?.map_or(0, MemberSet::len);
    Ok(Outcome::Reply(resp::integer(len as i64)))
}

fn sismember(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let member = c.arg(2);
    let m = c.store.read::<MemberSet>(c.arg(1), c.now)?;
    Ok(Outcome::Reply(resp::integer(i64::from(m.is_some_and(|m| m.contains(member))))))
}

fn smembers(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let m = c.store.read::<MemberSet>(c.arg(1), c.now)?;
    let members: Vec<IoBuf> = m.into_iter().flat_map(MemberSet::iter).map(resp::bulk).collect();
    Ok(array(members.into_iter()))
}

fn spop(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    let count = match count_arg(c.data, c.args, 2) {
        Ok(n) => n,
        Err(e) => return Ok(e),
    };
    let key = c.arg(1);
    let Some(m) = c.store.write::<MemberSet>(key, c.now)? else {
        return Ok(Outcome::Reply(if count.is_some() { resp::EMPTY_ARRAY.clone() } else { resp::NIL.clone() }));
    };
    let out = pops(count, || m.pop().map(|x| resp::bulk(&x)));
    c.store.drop_if_empty(key);
    Ok(out)
}
