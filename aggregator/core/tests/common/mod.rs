//! Synthetic scenarios for the engine tests: node positions, sources,
//! arrivals = origin + travel time + Gaussian pick noise of known sigma,
//! all from a fixed-seed ChaCha RNG.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use blastnet_aggregator_core::{Action, Engine, EngineConfig, NodeInfo, Phase, Propagation};
use blastnet_contract::testing::DetectionBuilder;
use blastnet_contract::{
    Detection, Enu, EnuFrame, Event, EventStatus, Geodetic, SourceKind, StreamKind, UtcNs,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

pub const T0: i64 = 1_644_357_900_000_000_000; // 2022-02-08T22:05:00Z

pub fn frame() -> EnuFrame {
    EnuFrame::new(Geodetic::new(33.5138, 36.2765, 690.0))
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub enu: Enu,
}

#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub enu: Enu,
    /// Seconds after T0.
    pub t: f64,
}

/// `n` nodes uniformly in a square of side `side` m centred on the origin, on the ground (u = 0).
pub fn square_array(r: &mut ChaCha8Rng, n: usize, side: f64) -> Vec<Node> {
    (0..n)
        .map(|i| Node {
            id: format!("n{:02}", i + 1),
            enu: Enu::new(
                r.random_range(-side / 2.0..side / 2.0),
                r.random_range(-side / 2.0..side / 2.0),
                0.0,
            ),
        })
        .collect()
}

pub fn prop(temperature_c: f64) -> Propagation {
    Propagation::still_air(temperature_c)
}

pub fn detection(
    node: &Node,
    seq: u64,
    onset_s: f64,
    sigma: f64,
    stream: StreamKind,
    kind: SourceKind,
    conf: f64,
) -> Detection {
    let g = frame().to_geodetic(node.enu);
    DetectionBuilder::new(node.id.clone(), seq, UtcNs(T0).add_secs_f64(onset_s))
        .onset_uncertainty_s(sigma)
        .stream(stream)
        .kind(kind, conf)
        .peak(120.0)
        .at(g)
        .build()
}

/// A default engine that knows `nodes`, all online.
pub fn online_engine(nodes: &[Node]) -> Engine {
    let mut eng = Engine::new(EngineConfig::default());
    for n in nodes {
        eng.upsert_node(node_info(n, true));
    }
    eng
}

pub fn node_info(n: &Node, online: bool) -> NodeInfo {
    NodeInfo {
        id: n.id.clone(),
        position: frame().to_geodetic(n.enu),
        clock_uncertainty_s: 1e-6,
        online,
        temperature_c: None,
        refused: false,
    }
}

/// Direct arrival time (s after T0) of `s` at `n` with noise of 1-sigma `sigma`.
pub fn arrival(p: &Propagation, s: &Source, n: &Node, sigma: f64, r: &mut ChaCha8Rng) -> f64 {
    let tt = p.travel_time(Phase::Acoustic, s.enu.to_array(), n.enu.to_array());
    s.t + tt + Normal::new(0.0, sigma).unwrap().sample(r)
}

/// Feed detections in onset order, advancing the watermark to each onset,
/// then flush. Returns all actions.
pub fn run(engine: &mut Engine, mut dets: Vec<Detection>) -> Vec<Action> {
    dets.sort_by_key(|d| d.onset_utc);
    // Per-node seq in onset order.
    let mut seqs: BTreeMap<String, u64> = BTreeMap::new();
    for d in &mut dets {
        let s = seqs.entry(d.node_id.clone()).or_insert(0);
        d.seq = *s;
        *s += 1;
    }
    let mut out = Vec::new();
    for d in &dets {
        engine.on_detection(d, &mut out);
        engine.advance(d.onset_utc, &mut out);
    }
    engine.flush(&mut out);
    out
}

pub fn finals(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish(e) if e.status == EventStatus::Final => Some(e.clone()),
            _ => None,
        })
        .collect()
}

pub fn event_enu(e: &Event) -> Enu {
    frame().to_enu(Geodetic::new(e.lat, e.lon, e.alt_m))
}

pub fn quiet_config() -> EngineConfig {
    EngineConfig {
        temperature_c: 15.0,
        ..EngineConfig::default()
    }
}

/// 1-sigma 3D radius of an event's reported uncertainty.
pub fn sigma3(e: &Event) -> f64 {
    let c = &e.uncertainty.covariance_enu;
    (c[0][0] + c[1][1] + c[2][2]).sqrt()
}
