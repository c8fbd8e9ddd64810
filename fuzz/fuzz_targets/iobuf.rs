//! `IoBuf` views against a model (a `Vec<u8>` per view): slicing, splitting, advancing,
//! truncating, cloning, prepending into headroom and gathering into chains keep every view's
//! bytes equal to the model's, and uniqueness follows the live views.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringstage::buf::{IoBuf, IoBufChain};

fuzz_target!(|ops: &[u8]| {
    let Some((&n, ops)) = ops.split_first() else { return };
    let base: Vec<u8> = (0..n).collect();
    let mut views: Vec<(IoBuf, Vec<u8>)> = vec![(IoBuf::from(base.clone()), base)];
    for pair in ops.chunks(2) {
        let (op, arg) = (pair[0], usize::from(*pair.get(1).unwrap_or(&0)));
        let i = arg % views.len();
        let len = views[i].1.len();
        let k = if len == 0 { 0 } else { arg % (len + 1) };
        match op % 8 {
            0 => {
                let v = (views[i].0.slice(k..), views[i].1[k..].to_vec());
                views.push(v);
            }
            1 => {
                let front = views[i].0.split_to(k);
                let model = views[i].1.drain(..k).collect();
                views.push((front, model));
            }
            2 => {
                let back = views[i].0.split_off(k);
                let model = views[i].1.split_off(k);
                views.push((back, model));
            }
            3 => {
                views[i].0.advance(k);
                views[i].1.drain(..k);
            }
            4 => {
                views[i].0.truncate(k);
                views[i].1.truncate(k);
            }
            5 if views.len() > 1 => {
                views.swap_remove(i);
            }
            6 => {
                let unique = views[i].0.is_unique();
                let model_room = views[i].0.headroom();
                if let Some(front) = views[i].0.prepend(k.min(4)) {
                    assert!(unique && model_room >= k.min(4));
                    front.fill(0xAB);
                    let mut m = vec![0xAB; k.min(4)];
                    m.extend_from_slice(&views[i].1);
                    views[i].1 = m;
                }
            }
            _ => {
                let mut chain = IoBufChain::new();
                for (v, _) in &views {
                    chain.push(v.clone());
                }
                let want: Vec<u8> = views.iter().flat_map(|(_, m)| m.iter().copied()).collect();
                assert_eq!(chain.len(), want.len());
                chain.advance(k.min(chain.len()));
                assert_eq!(chain.to_vec(), want[k.min(want.len())..]);
            }
        }
        for (v, m) in &views {
            assert_eq!(&v[..], &m[..]);
        }
    }
    if views.len() == 1 {
        assert!(views[0].0.is_unique());
    }
});
