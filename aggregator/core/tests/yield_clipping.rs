//! Yield from peak overpressure when some sensors saturate: a clipped peak
//! is only a lower bound of the true one and must not pull the estimate
//! down (a MEMS microphone clips near 100 Pa; a 250 kg blast 1–2 km away
//! brings several hundred Pa).
#![allow(clippy::unwrap_used)]

mod common;

use blastnet_contract::blast::{peak_overpressure_pa, Burst};
use blastnet_contract::{Enu, SourceKind, StreamKind};
use common::*;

fn located_yield(clip_pa: f64) -> (Option<blastnet_contract::YieldEstimate>, usize) {
    let w_kg = 250.0;
    let mut r = rng(7);
    let nodes = square_array(&mut r, 8, 4000.0);
    let p = prop(15.0);
    let s = Source {
        enu: Enu::new(150.0, -220.0, 0.0),
        t: 1.0,
    };
    let mut eng = online_engine(&nodes);
    let mut clipped = 0;
    let dets = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut d = detection(
                n,
                i as u64,
                arrival(&p, &s, n, 1e-4, &mut r),
                1e-4,
                StreamKind::Acoustic,
                SourceKind::Explosion,
                0.9,
            );
            let range = s.enu.distance(n.enu);
            let true_peak = peak_overpressure_pa(Burst::Surface, range, w_kg);
            d.peak = true_peak.min(clip_pa);
            d.clipped = true_peak > clip_pa;
            clipped += usize::from(d.clipped);
            d
        })
        .collect();
    let f = finals(&run(&mut eng, dets));
    assert_eq!(f.len(), 1, "{f:#?}");
    (f[0].yield_estimate.clone(), clipped)
}

#[test]
fn clipped_sensors_do_not_bias_the_yield() {
    let w_kg = 250.0;
    // Nothing clipped: the estimate brackets the truth.
    let (y, n) = located_yield(f64::INFINITY);
    assert_eq!(n, 0);
    let y = y.unwrap();
    assert!(y.low_kg_tnt <= w_kg && w_kg <= y.high_kg_tnt, "{y:?}");
    // Most sensors clipped at 150 Pa: the rest still bracket the truth.
    let (y, n) = located_yield(150.0);
    assert!((3..8).contains(&n), "{n} clipped");
    let y = y.unwrap();
    assert!(
        y.low_kg_tnt <= w_kg && w_kg <= y.high_kg_tnt,
        "{n} clipped: {y:?}"
    );
    // Every sensor clipped: no estimate rather than a wrong one.
    let (y, n) = located_yield(1.0);
    assert_eq!(n, 8);
    assert!(y.is_none(), "{y:?}");
}
