//! Echoes must not move a location, and an exactly determined (3-arrival)
//! fix must report the uncertainty its pick and model sigmas imply.
#![allow(clippy::unwrap_used)]

mod common;

use blastnet_aggregator_core::{crlb, Arrival, Dims, Engine, EngineConfig, Phase};
use blastnet_contract::{Enu, Event, SourceKind, StreamKind};
use common::*;

/// Pick sigma of the synthetic detections (s).
const PICK: f64 = 1e-4;

fn direct(nodes: &[Node], s: &Source) -> Vec<blastnet_contract::Detection> {
    let p = prop(15.0);
    nodes
        .iter()
        .map(|n| {
            let t = s.t + p.travel_time(Phase::Acoustic, s.enu.to_array(), n.enu.to_array());
            detection(
                n,
                0,
                t,
                PICK,
                StreamKind::Acoustic,
                SourceKind::Explosion,
                0.9,
            )
        })
        .collect()
}

fn one_final(eng: &mut Engine, dets: Vec<blastnet_contract::Detection>) -> Event {
    let f = finals(&run(eng, dets));
    assert_eq!(f.len(), 1, "exactly one event expected: {f:#?}");
    f[0].clone()
}

fn engine(nodes: &[Node], cfg: EngineConfig) -> Engine {
    let mut eng = Engine::new(cfg);
    for n in nodes {
        eng.upsert_node(node_info(n, true));
    }
    eng
}

#[test]
fn an_echo_after_the_direct_arrival_does_not_move_the_location() {
    let mut r = rng(3);
    let nodes = square_array(&mut r, 6, 1500.0);
    let s = Source {
        enu: Enu::new(120.0, -80.0, 0.0),
        t: 5.0,
    };
    let clean = direct(&nodes, &s);
    let base = one_final(&mut engine(&nodes, quiet_config()), clean.clone());
    assert_eq!(base.detections.len(), 6);
    // 30 ms: outside every gate. 12 ms: inside the seeding tolerance (20 ms),
    // where the earliest consistent pick of a node must be preferred.
    for delay in [0.030, 0.012] {
        for k in 0..nodes.len() {
            let mut dets = clean.clone();
            let mut echo = clean[k].clone();
            echo.onset_utc = echo.onset_utc.add_secs_f64(delay);
            dets.push(echo.clone());
            let e = one_final(&mut engine(&nodes, quiet_config()), dets);
            let moved = event_enu(&e).distance(event_enu(&base));
            // Same arrivals used: the same solution (to solver precision).
            assert!(
                moved < 1e-3,
                "echo +{delay} s at node {k} moved the event by {moved} m"
            );
            assert!(
                e.detections.iter().all(|d| d.onset_utc != echo.onset_utc),
                "echo used: {e:#?}"
            );
            assert!(
                e.outliers.iter().any(|d| d.onset_utc == echo.onset_utc),
                "echo not listed as an outlier: {e:#?}"
            );
        }
    }
}

#[test]
fn a_three_arrival_fix_reports_the_uncertainty_of_its_pick_and_model_sigmas() {
    let mut r = rng(5);
    let nodes = square_array(&mut r, 3, 1200.0);
    let s = Source {
        enu: Enu::new(60.0, 40.0, 0.0),
        t: 5.0,
    };
    let p = prop(15.0);
    let bound = |model: f64| {
        let sig = (PICK * PICK + 1e-12 + model * model).sqrt(); // pick ⊕ 1 µs clock ⊕ model
        let sensors: Vec<Arrival> = nodes
            .iter()
            .map(|n| Arrival {
                position: n.enu,
                time_s: 0.0,
                sigma_s: sig,
                phase: Phase::Acoustic,
            })
            .collect();
        crlb(&sensors, s.enu, &p, Dims::Ground)
            .unwrap()
            .horizontal_m
    };
    let cfg = EngineConfig::default();
    assert!(
        cfg.model_sigma_s >= 1e-3,
        "a real-world model error by default"
    );
    let e = one_final(&mut engine(&nodes, cfg.clone()), direct(&nodes, &s));
    assert_eq!(e.detections.len(), 3);
    // Noise-free arrivals: the exact source, with the uncertainty that the
    // sigmas imply (zero residual dof: nothing may shrink it).
    assert!(event_enu(&e).distance(s.enu) < 0.05, "{e:#?}");
    let b = bound(cfg.model_sigma_s);
    assert!(
        e.uncertainty.horizontal_m >= 0.99 * b,
        "reported {} m < bound {} m",
        e.uncertainty.horizontal_m,
        b
    );
    // The model term dominates: without it the bound is ~10 times smaller.
    assert!(bound(0.0) < 0.2 * b);
    // Nothing checks an exactly determined fit: lower confidence.
    assert!(e.confidence <= 0.5 * 0.9 + 1e-9, "{}", e.confidence);
}

/// An event says how firmly its support pins it down: a six-node fix on the
/// ground plane has three checks beyond its unknowns and is sound; the same
/// source heard by four nodes has one and is marginal. An aliasing check
/// that found an "equally good" fit elsewhere for clean picks would be
/// wrong: none is reported.
#[test]
fn an_event_reports_its_checks_and_whether_its_support_is_thin() {
    let mut r = rng(5);
    let nodes = square_array(&mut r, 6, 1500.0);
    let s = Source {
        enu: Enu::new(-150.0, 60.0, 0.0),
        t: 5.0,
    };
    let all = direct(&nodes, &s);
    let e = one_final(&mut engine(&nodes, quiet_config()), all.clone());
    let q = e.quality.clone().expect("a quality");
    assert_eq!(e.dims, 2);
    assert_eq!(q.checks, 3, "{q:?}");
    assert!(!q.marginal && !q.aliased, "{q:?}");

    let four: Vec<Node> = nodes[..4].to_vec();
    let e = one_final(&mut engine(&four, quiet_config()), all[..4].to_vec());
    let q = e.quality.clone().expect("a quality");
    assert_eq!(q.checks, 1, "{q:?}");
    assert!(q.marginal, "{q:?}");
    assert!(!q.aliased, "{q:?}");
}
