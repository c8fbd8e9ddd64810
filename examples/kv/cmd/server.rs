//! The connection and the server: PING, ECHO, SELECT 0, QUIT, INFO, DEBUG SLEEP, and the
//! CONFIG GET and COMMAND queries clients make on connect.

use std::time::Duration;

use super::{err, Arity, Call, Outcome, Spec};
use crate::resp;
use crate::store::WrongType;
use ringstage::prelude::*;

pub const COMMANDS: &[Spec] = &[
    super::spec("PING", Arity::between(1, 2), ping),
    super::spec("ECHO", Arity::exact(2), |c| Ok(Outcome::Reply(resp::bulk(c.arg(1))))),
    super::spec("SELECT", Arity::exact(2), select),
    super::spec("QUIT", Arity::exact(1), |_| Ok(Outcome::Close(resp::OK.clone()))),
    super::spec("CONFIG", Arity::at_least(2), config),
    super::spec("COMMAND", Arity::at_least(1), |_| Ok(Outcome::Reply(resp::EMPTY_ARRAY.clone()))),
    super::spec("INFO", Arity::at_least(1), info),
    super::spec("DEBUG", Arity::at_least(2), debug),
];

fn ping(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    Ok(Outcome::Reply(if c.n() == 2 { resp::bulk(c.arg(1)) } else { resp::PONG.clone() }))
}

fn select(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    Ok(if c.arg(1) == b"0" { Outcome::Reply(resp::OK.clone()) } else { err("ERR DB index is out of range") })
}

/// Clients ask for a few settings on connect (redis-benchmark reads `save` and `appendonly`).
/// Nothing is persisted or configurable at run time.
fn config(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    if !(c.arg(1).eq_ignore_ascii_case(b"GET") && c.n() == 3) {
        return Ok(unknown_subcommand(c.arg(1)));
    }
    let name = c.arg(2).to_ascii_lowercase();
    let value: &[u8] = match name.as_slice() {
        b"save" => b"",
        b"appendonly" => b"no",
        b"databases" => b"1",
        _ => return Ok(Outcome::Reply(resp::EMPTY_ARRAY.clone())),
    };
    let mut reply = IoBufChain::new();
    reply.push(resp::array_header(2));
    reply.push(resp::bulk(&name));
    reply.push(resp::bulk(value));
    Ok(Outcome::Chain(reply))
}

fn info(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    Ok(Outcome::Info(if c.n() == 1 { section::ALL } else { (1..c.n()).fold(0, |m, i| m | section::named(c.arg(i))) }))
}

/// `DEBUG SLEEP seconds`: a stand-in for a slow command (a blocking library call, a slow
/// backend), run by the slow stage.
fn debug(c: &mut Call<'_>) -> Result<Outcome, WrongType> {
    if !(c.arg(1).eq_ignore_ascii_case(b"SLEEP") && c.n() == 3) {
        return Ok(unknown_subcommand(c.arg(1)));
    }
    let secs = std::str::from_utf8(c.arg(2)).ok().and_then(|s| s.parse::<f64>().ok());
    Ok(match secs {
        Some(s) if (0.0..=60.0).contains(&s) => Outcome::Slow(Duration::from_secs_f64(s)),
        _ => err("ERR value is not a valid float in 0..=60"),
    })
}

fn unknown_subcommand(sub: &[u8]) -> Outcome {
    err(&format!("ERR unknown subcommand '{}'", String::from_utf8_lossy(&sub[..sub.len().min(64)])))
}

/// The sections of `INFO`, as bits of a mask.
pub mod section {
    pub const SERVER: u8 = 1;
    pub const CLIENTS: u8 = 2;
    pub const MEMORY: u8 = 4;
    pub const STATS: u8 = 8;
    pub const KEYSPACE: u8 = 16;
    pub const ALL: u8 = 31;

    /// The section named `name` (`all`, `default` and `everything` name all of them; an
    /// unknown name none).
    pub fn named(name: &[u8]) -> u8 {
        match name.to_ascii_lowercase().as_slice() {
            b"server" => SERVER,
            b"clients" => CLIENTS,
            b"memory" => MEMORY,
            b"stats" => STATS,
            b"keyspace" => KEYSPACE,
            b"all" | b"default" | b"everything" => ALL,
            _ => 0,
        }
    }
}
