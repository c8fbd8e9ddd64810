//! The HTTP example's chunked-body reader: never a panic, never past its input, and the same
//! verdict however the body is cut into receives.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../examples/http/chunked.rs"]
mod chunked;

use chunked::{Chunked, Feed};

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else { return };
    let whole = Chunked::new(1 << 12).feed(data);
    if let Feed::Done(n) = whole {
        assert!(n <= data.len());
    }
    // The same bytes in two receives, split at `cut`.
    let cut = usize::from(cut).min(data.len());
    let mut c = Chunked::new(1 << 12);
    let split = match c.feed(&data[..cut]) {
        Feed::More => match c.feed(&data[cut..]) {
            Feed::Done(n) => Feed::Done(cut + n),
            other => other,
        },
        other => other,
    };
    assert_eq!(whole, split, "verdict depends on where the body was cut ({cut})");
});
