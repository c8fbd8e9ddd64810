//! The application's own counters, exposed beside the runtime's.

use std::marker::PhantomData;
use std::sync::Arc;

use super::{Counter, WorkerCounters};

/// Names a counter declared with [`Builder::counter`](crate::runtime::Builder::counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterId(pub(crate) usize);

/// One worker's slot of an application counter, from
/// [`Setup::counter`](crate::runtime::Setup::counter): handlers on that worker add to it,
/// [`Snapshot::app`](super::Snapshot::app) and the Prometheus text sum it over workers.
///
/// Not `Send`: each worker writes only its own slot, so an update is a plain load and store,
/// not a locked read-modify-write.
#[derive(Debug)]
pub struct AppCounter {
    slot: Arc<Counter>,
    _one_writer: PhantomData<*const ()>,
}

impl AppCounter {
    pub(crate) fn new(counters: &WorkerCounters, id: CounterId) -> AppCounter {
        let slot = counters.app.get(id.0).unwrap_or_else(|| panic!("counter id {} from another builder", id.0));
        AppCounter { slot: slot.clone(), _one_writer: PhantomData }
    }

    /// Adds `n`. Hot path: two plain memory operations; no allocation, no lock.
    #[inline]
    pub fn add(&self, n: u64) {
        self.slot.add(n);
    }

    /// This worker's count so far.
    pub fn get(&self) -> u64 {
        self.slot.get()
    }
}

/// Whether `name` may name an application counter: a Prometheus metric name
/// (`[a-zA-Z_:][a-zA-Z0-9_:]*`), optionally with labels: `{key="value",...}`, keys of the name
/// characters (no colon), values without `"`, `\` or line breaks.
pub(crate) fn valid_name(name: &str) -> bool {
    let (base, labels) = match name.find('{') {
        Some(i) => (&name[..i], Some(&name[i..])),
        None => (name, None),
    };
    let ident = |s: &str, colon: bool| {
        let mut cs = s.chars();
        cs.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    };
    if !ident(base, true) {
        return false;
    }
    let Some(labels) = labels else { return true };
    let Some(inner) = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')) else { return false };
    !inner.is_empty()
        && inner.split(',').all(|pair| {
            pair.split_once('=').is_some_and(|(k, v)| {
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                ident(k, false) && v.is_some_and(|v| !v.contains(['"', '\\', '\n', '\r']))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_are_prometheus_names() {
        for ok in ["http_responses_total", "a:b_c9", "_x", r#"r_total{class="2xx"}"#, r#"r{a="",b="x y"}"#] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in
            ["", "9x", "a-b", "a b", "r{}", "r{a=1}", r#"r{a="x"#, r#"r{a:b="x"}"#, r#"r{a="x"}y"#, "r{a=\"\n\"}"]
        {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
