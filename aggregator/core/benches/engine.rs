//! Engine throughput (detections ingested and associated per second, one
//! core) and the latency of `on_detection` for the deciding detection (the
//! one whose call creates an event).
//!
//! Streams (20 % airbursts at 1–3 km, 0.5 ms pick noise, 10 % echoes, one
//! false trigger per node per minute, watermark advanced at every detection):
//! - `steady`: 24 nodes over 4 km, a source every 10 s for 2000 s;
//! - `dense`: 12 nodes over 4 km, a source every 3 s for 600 s (five or six
//!   sources in flight at any time: the combinatorial seeding dominates).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use blastnet_aggregator_core::{Action, Engine, EngineConfig, NodeInfo, Phase, Propagation};
use blastnet_contract::testing::DetectionBuilder;
use blastnet_contract::{Detection, Enu, EnuFrame, Geodetic, SourceKind, UtcNs};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn scenario(n_nodes: usize, period_s: f64, n_sources: usize) -> (Vec<NodeInfo>, Vec<Detection>) {
    let frame = EnuFrame::new(Geodetic::new(33.5, 36.3, 690.0));
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let p = Propagation::still_air(15.0);
    let nodes: Vec<(String, Enu)> = (0..n_nodes)
        .map(|i| {
            (
                format!("n{i:02}"),
                Enu::new(
                    r.random_range(-2000.0..2000.0),
                    r.random_range(-2000.0..2000.0),
                    0.0,
                ),
            )
        })
        .collect();
    let noise = Normal::new(0.0, 0.5e-3).unwrap();
    let t0 = UtcNs::from_secs(1_644_357_900);
    let mut dets = Vec::new();
    let mk = |id: &str, e: Enu, t: f64, kind| {
        let g = frame.to_geodetic(e);
        DetectionBuilder::new(id, 0, t0.add_secs_f64(t))
            .onset_uncertainty_s(0.5e-3)
            .kind(kind, 0.9)
            .peak(100.0)
            .at(g)
            .site("city")
            .build()
    };
    for k in 0..n_sources {
        let src = Enu::new(
            r.random_range(-2000.0..2000.0),
            r.random_range(-2000.0..2000.0),
            if r.random_bool(0.2) {
                r.random_range(1000.0..3000.0)
            } else {
                0.0
            },
        );
        let ts = period_s * k as f64 + r.random_range(0.0..1.0);
        for (id, e) in &nodes {
            let t = ts
                + p.travel_time(Phase::Acoustic, src.to_array(), e.to_array())
                + noise.sample(&mut r);
            dets.push(mk(id, *e, t, SourceKind::Explosion));
            if r.random_bool(0.1) {
                dets.push(mk(
                    id,
                    *e,
                    t + r.random_range(0.05..1.0),
                    SourceKind::Explosion,
                ));
            }
        }
    }
    for (id, e) in &nodes {
        let span = period_s * n_sources as f64;
        for _ in 0..(span / 60.0) as usize {
            dets.push(mk(
                id,
                *e,
                r.random_range(0.0..span),
                SourceKind::OtherImpulsive,
            ));
        }
    }
    dets.sort_by_key(|d| d.onset_utc);
    let infos = nodes
        .iter()
        .map(|(id, e)| NodeInfo {
            id: id.clone(),
            position: frame.to_geodetic(*e),
            clock_uncertainty_s: 1e-6,
            online: true,
            temperature_c: None,
            refused: false,
        })
        .collect();
    (infos, dets)
}

fn engine(infos: &[NodeInfo]) -> Engine {
    let mut e = Engine::new(EngineConfig::default());
    for n in infos {
        e.upsert_node(n.clone());
    }
    e
}

fn bench(c: &mut Criterion) {
    for (name, nodes, period, sources) in [("steady", 24, 10.0, 200), ("dense", 12, 3.0, 200)] {
        run_case(c, name, nodes, period, sources);
    }
}

fn run_case(c: &mut Criterion, name: &str, n_nodes: usize, period: f64, n_sources: usize) {
    let (infos, dets) = scenario(n_nodes, period, n_sources);
    // Latency of the deciding detection, and a sanity count of events.
    let mut eng = engine(&infos);
    let mut out = Vec::new();
    let mut deciding = Vec::new();
    let mut all = Vec::with_capacity(dets.len());
    for d in &dets {
        out.clear();
        let t = Instant::now();
        eng.on_detection(d, &mut out);
        let dt = t.elapsed();
        all.push(dt);
        if out
            .iter()
            .any(|a| matches!(a, Action::Publish(e) if e.revision == 1))
        {
            deciding.push(dt);
        }
        eng.advance(d.onset_utc, &mut out);
    }
    eng.flush(&mut out);
    let pct = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * q).round() as usize]
    };
    eprintln!(
        "{name}: {} detections, {} events created; on_detection for the deciding detection: p50 {:?}, p99 {:?}, max {:?}; all calls p99 {:?}",
        dets.len(),
        deciding.len(),
        pct(&mut deciding, 0.5),
        pct(&mut deciding, 0.99),
        pct(&mut deciding, 1.0),
        pct(&mut all, 0.99)
    );

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(dets.len() as u64));
    g.sample_size(10);
    g.bench_function(name, |b| {
        b.iter(|| {
            let mut eng = engine(&infos);
            let mut out = Vec::new();
            for d in &dets {
                eng.on_detection(d, &mut out);
                eng.advance(d.onset_utc, &mut out);
                out.clear();
            }
            eng.flush(&mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
