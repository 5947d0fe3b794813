//! The event's kind uses where the source is: a source located well above
//! the ground (an air-defence intercept) is an explosion even when the
//! nodes' classifiers, hearing a pulse reshaped by kilometres of air and a
//! ground reflection, call it a gunshot. On the ground the nodes decide.
#![allow(clippy::unwrap_used)]

mod common;

use blastnet_contract::{Enu, SourceKind, StreamKind};
use common::*;

fn kind_of(height_m: f64, seed: u64) -> (SourceKind, f64) {
    let mut r = rng(seed);
    let nodes = square_array(&mut r, 9, 4000.0);
    let p = prop(15.0);
    let s = Source {
        enu: Enu::new(200.0, -300.0, height_m),
        t: 1.0,
    };
    let mut eng = online_engine(&nodes);
    let dets = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            detection(
                n,
                i as u64,
                arrival(&p, &s, n, 1e-4, &mut r),
                1e-4,
                StreamKind::Acoustic,
                SourceKind::Gunshot,
                0.8,
            )
        })
        .collect();
    let f = finals(&run(&mut eng, dets));
    assert_eq!(f.len(), 1, "{f:#?}");
    let e = &f[0];
    (e.kind, e.alt_m)
}

#[test]
fn a_source_kilometres_up_is_an_explosion_whatever_the_nodes_say() {
    for seed in 0..5 {
        // On the ground the nodes' decision stands.
        let (kind, ground) = kind_of(0.0, seed);
        assert_eq!(kind, SourceKind::Gunshot, "seed {seed}");
        let (kind, alt) = kind_of(2000.0, seed);
        assert!(
            alt - ground > 1500.0,
            "seed {seed}: located {} m up",
            alt - ground
        );
        assert_eq!(kind, SourceKind::Explosion, "seed {seed}");
    }
}
