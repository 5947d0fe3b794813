//! The engine on recorded live runs of the shipped city-salvo (nine
//! explosions and a launch in 23 s, three airbursts): each trace is the exact
//! sequence of engine calls one `blastnet replay` made
//! (`BLASTNET_ENGINE_TRACE`), in an MQTT interleaving where an earlier engine
//! lost sources. Trace a: an early online event took a pick of a later
//! airburst, and the wind left the still-air closed form of an impact
//! outside the array without a solution. Trace b: the sweep's local fit of a
//! 1.2 km airburst settled on two wrong picks. Every explosion must be
//! located (within 5 sigma of its reported uncertainty plus the recording's
//! 1 m GPS error) and no event may lie away from every true source. The
//! same picks are also delivered in random interleavings (nodes replaying at
//! their own, varying pace, as on a loaded machine) through the service's
//! nodes-mode watermark. Truth is read only here, to judge.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use blastnet_aggregator_core::{
    Action, DataTimeOrder, Engine, EngineConfig, NodeInfo, NodesWatermark, Release, TraceEntry,
};
use blastnet_contract::{Detection, Event, EventStatus, Manifest, SourceKind, UtcNs};
use blastnet_recording::truth::{self, Judge};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn read_trace(trace: &str) -> Vec<TraceEntry> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("tests/data").join(trace)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run(entries: &[TraceEntry]) -> Vec<Event> {
    let mut eng = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    for e in entries {
        eng.apply(e, &mut out);
    }
    out.into_iter()
        .filter_map(|a| match a {
            Action::Publish(e) if e.status == EventStatus::Final => Some(e),
            _ => None,
        })
        .collect()
}

/// The shipped city-salvo's manifest.
fn salvo_manifest() -> Manifest {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recordings/city-salvo");
    let text = std::fs::read_to_string(root.join("manifest.json")).unwrap();
    Manifest::from_json(&text, "manifest.json").unwrap()
}

/// Every explosion located and no ghost, or what went wrong.
fn judge(events: &[Event]) -> Result<(), String> {
    let m = salvo_manifest();
    let truth = m.truth.clone().unwrap();
    let judge = |window_s| Judge {
        frame: truth::frame(&m).expect("nodes"),
        window_s,
        k: 5.0,
        gps_sigma_m: 1.0,
    };
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {:.5},{:.5} alt {:.0}",
                e.origin_utc, e.lat, e.lon, e.alt_m
            )
        })
        .collect();
    for t in truth.iter().filter(|t| t.kind == SourceKind::Explosion) {
        if !events.iter().any(|e| judge(1.0).matches(t, e)) {
            return Err(format!(
                "{} not located; events {summary:#?}",
                t.label.as_deref().unwrap_or("?")
            ));
        }
    }
    for e in events {
        if !truth.iter().any(|t| judge(2.0).matches(t, e)) {
            return Err(format!(
                "ghost event {} at {:.5},{:.5}",
                e.event_id, e.lat, e.lon
            ));
        }
    }
    Ok(())
}

fn check(trace: &str) {
    if let Err(e) = judge(&run(&read_trace(trace))) {
        panic!("{trace}: {e}");
    }
}

#[test]
fn salvo_trace_a_every_explosion_located() {
    check("city-salvo-interleaving-a.trace.jsonl");
}

#[test]
fn salvo_trace_b_every_explosion_located() {
    check("city-salvo-interleaving-b.trace.jsonl");
}

/// One node's messages in the order it publishes them (each at its data
/// time, see [`Stream`]): its first status, its detections (each published
/// once the detector has seen a little past the onset), a heartbeat every
/// 10 s of data time (as the replay node runtime does) and the final
/// `offline` status.
enum Msg {
    Online(NodeInfo),
    Detection(Box<Detection>),
    Heartbeat,
    Offline(NodeInfo),
}

/// A node's messages, each at its data time.
type Stream = Vec<(UtcNs, Msg)>;

/// Per-node message streams of a recorded trace of the shipped city-salvo
/// (nodes as the manifest places them, as their status announces them).
fn node_streams(trace: &str) -> (EngineConfig, Vec<(String, Stream)>) {
    let m = salvo_manifest();
    let mut cfg = None;
    let mut dets: BTreeMap<String, Vec<Detection>> = BTreeMap::new();
    for e in read_trace(trace) {
        match e {
            TraceEntry::Config(c) => cfg = Some(*c),
            TraceEntry::Detection(d) => dets.entry(d.node_id.clone()).or_default().push(*d),
            _ => {}
        }
    }
    let start = m
        .nodes
        .iter()
        .flat_map(|n| &n.streams)
        .map(|s| s.start_utc)
        .min()
        .unwrap();
    let end = dets
        .values()
        .flatten()
        .map(|d| d.onset_utc)
        .max()
        .unwrap()
        .add_secs_f64(2.0);
    let streams = m
        .nodes
        .iter()
        .map(|n| {
            let mut ds = dets.remove(&n.id).unwrap_or_default();
            ds.sort_by_key(|d| d.seq);
            let info = NodeInfo {
                id: n.id.clone(),
                position: n.position(),
                clock_uncertainty_s: ds.first().map_or(1e-6, |d| d.clock.uncertainty_s),
                online: true,
                temperature_c: None,
                refused: false,
            };
            let mut msgs = vec![(start, Msg::Online(info.clone()))];
            for d in ds {
                msgs.push((d.onset_utc.add_secs_f64(0.05), Msg::Detection(Box::new(d))));
            }
            let mut hb = start.add_secs_f64(10.0);
            while hb < end {
                msgs.push((hb, Msg::Heartbeat));
                hb = hb.add_secs_f64(10.0);
            }
            msgs.push((
                end,
                Msg::Offline(NodeInfo {
                    online: false,
                    ..info
                }),
            ));
            // Stable: a detection is published before the heartbeat that follows it.
            msgs.sort_by_key(|m| m.0);
            (n.id.clone(), msgs)
        })
        .collect();
    (cfg.unwrap(), streams)
}

/// The order a broker might deliver the nodes' messages in: nodes replay
/// concurrently at their own, varying pace (0.3x to 3x of each other, one
/// maybe starting after the others have finished).
fn delivery(streams: &[(String, Stream)], seed: u64) -> Vec<(&str, UtcNs, &Msg)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut timed: Vec<(f64, usize, usize)> = Vec::new();
    for (n, (_, msgs)) in streams.iter().enumerate() {
        let offset = if rng.random_bool(0.1) {
            rng.random_range(0.0..40.0)
        } else {
            rng.random_range(0.0..2.0)
        };
        let mut speed: f64 = 10f64.powf(rng.random_range(-0.5..0.5));
        let (mut wall, mut last) = (offset, msgs[0].0);
        for (i, (t, _)) in msgs.iter().enumerate() {
            // The pace drifts: re-drawn every data second.
            let dt = t.secs_since(last).max(0.0);
            if dt > 1.0 || rng.random_bool(0.05) {
                speed = (speed * 10f64.powf(rng.random_range(-0.2..0.2))).clamp(0.3, 3.0);
            }
            wall += dt / speed + rng.random_range(0.0..0.01);
            last = *t;
            timed.push((wall, n, i));
        }
    }
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    timed
        .into_iter()
        .map(|(_, n, i)| (streams[n].0.as_str(), streams[n].1[i].0, &streams[n].1[i].1))
        .collect()
}

/// The engine calls of one random interleaving of the nodes' streams handed
/// on in arrival order, with the nodes-mode watermark ([`NodesWatermark`]):
/// how the service drove the engine before replays were ordered by data
/// time, and close to what a live aggregator sees (arrival order), so it
/// keeps testing the engine's robustness to order.
fn interleaving(cfg: &EngineConfig, streams: &[(String, Stream)], seed: u64) -> Vec<TraceEntry> {
    let mut out = vec![TraceEntry::Config(Box::new(cfg.clone()))];
    let mut wm = NodesWatermark::new(streams.iter().map(|(id, _)| id.clone()).collect());
    for (id, t, msg) in delivery(streams, seed) {
        match msg {
            Msg::Detection(d) => {
                wm.on_detection(id);
                out.push(TraceEntry::Detection(d.clone()));
                continue;
            }
            Msg::Online(info) | Msg::Offline(info) => out.push(TraceEntry::Node(info.clone())),
            Msg::Heartbeat => {}
        }
        wm.on_status(id, t, !matches!(msg, Msg::Offline(_)));
        let step = wm.step();
        if let Some(w) = step.advance {
            out.push(TraceEntry::Advance(w));
        }
        if step.flush {
            out.push(TraceEntry::Flush);
        }
    }
    out
}

/// The engine calls of the same random interleaving as the service now makes
/// them in nodes mode: every message through [`DataTimeOrder`] (first
/// statuses register the node before the data, later changes and detections
/// wait for the watermark and go to the engine in data-time order).
fn ordered_interleaving(
    cfg: &EngineConfig,
    streams: &[(String, Stream)],
    seed: u64,
) -> Vec<TraceEntry> {
    let mut out = vec![TraceEntry::Config(Box::new(cfg.clone()))];
    let mut wm = NodesWatermark::new(streams.iter().map(|(id, _)| id.clone()).collect());
    let mut order = DataTimeOrder::new();
    let mut registered = std::collections::BTreeSet::new();
    let mut calls = Vec::new();
    for (id, t, msg) in delivery(streams, seed) {
        match msg {
            Msg::Detection(d) => {
                wm.on_detection(id);
                order.push((**d).clone());
                continue;
            }
            Msg::Online(info) | Msg::Offline(info) => {
                if registered.insert(id.to_string()) {
                    order.register_node(info.clone());
                } else {
                    order.push_node(info.clone(), t);
                }
            }
            Msg::Heartbeat => {}
        }
        wm.on_status(id, t, !matches!(msg, Msg::Offline(_)));
        let step = wm.step();
        if let Some(w) = step.advance {
            order.advance(w, &mut calls);
        }
        if step.flush {
            order.drain(&mut calls);
        }
        out.extend(calls.drain(..).map(|c| match c {
            Release::Node(info) => TraceEntry::Node(info),
            Release::Detection(d) => TraceEntry::Detection(d),
            Release::Advance(w) => TraceEntry::Advance(w),
        }));
        if step.flush {
            out.push(TraceEntry::Flush);
        }
    }
    out
}

/// Replays are deterministic: whatever order the broker interleaves the
/// nodes in, the service hands the engine the same calls, so every random
/// interleaving gives the same events, and they locate every explosion.
#[test]
fn city_salvo_gives_the_same_events_in_every_random_interleaving() {
    let (cfg, streams) = node_streams("city-salvo-interleaving-a.trace.jsonl");
    let first = run(&ordered_interleaving(&cfg, &streams, 0));
    judge(&first).unwrap_or_else(|e| panic!("interleaving 0: {e}"));
    let text = |evs: &[Event]| serde_json::to_string(evs).unwrap();
    for seed in 1..40 {
        let events = run(&ordered_interleaving(&cfg, &streams, seed));
        assert_eq!(text(&events), text(&first), "interleaving {seed} differs");
    }
}

/// At most this share of random interleavings may lose a source or make a
/// ghost. They are harsher than live replays (a node up to 40 s late, paces
/// 10x apart), and two known ones still fail (seeds 70 and 446 of 500: the
/// 500 kg impact's direct pick at n04 also fits the 1.2 km intercept, which
/// takes it first; echoes then make a ghost). Before the pre-final challenge
/// 4 of the first 100 failed (10 of 200).
const MAX_FAILED_SHARE: f64 = 0.02;

/// The picks of trace a, delivered in random interleavings
/// (`BLASTNET_INTERLEAVINGS` of them, default 100, from seed
/// `BLASTNET_INTERLEAVINGS_FIRST`, default 0; seeds fixed, so a failure
/// names the seed that repeats it). `BLASTNET_INTERLEAVINGS_DUMP=DIR` writes
/// each failing interleaving there as a trace for `offline_replay --trace`.
#[test]
fn city_salvo_is_located_in_98_percent_of_random_interleavings() {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let runs = env("BLASTNET_INTERLEAVINGS", 100);
    let first = env("BLASTNET_INTERLEAVINGS_FIRST", 0);
    let (cfg, streams) = node_streams("city-salvo-interleaving-a.trace.jsonl");
    let mut failures = Vec::new();
    for seed in first..first + runs {
        let entries = interleaving(&cfg, &streams, seed);
        if let Err(e) = judge(&run(&entries)) {
            if let Ok(dir) = std::env::var("BLASTNET_INTERLEAVINGS_DUMP") {
                let lines: Vec<String> = entries
                    .iter()
                    .map(|e| serde_json::to_string(e).unwrap())
                    .collect();
                let path = Path::new(&dir).join(format!("interleaving-{seed}.trace.jsonl"));
                std::fs::write(path, lines.join("\n") + "\n").unwrap();
            }
            failures.push(format!("seed {seed}: {e}"));
        }
    }
    // Named on every run (shown with --nocapture), so the known gaps stay in view.
    println!(
        "{} of {runs} interleavings failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        failures.len() as f64 <= MAX_FAILED_SHARE * runs as f64,
        "{} of {runs} interleavings failed (at most {MAX_FAILED_SHARE} allowed):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Regression (interleaving seed 59, and the CI run it stands for): the
/// 500 kg impact outside the array was confirmed online before its far
/// nodes' arrivals came in, with a distractor's pick at n05 in place of the
/// direct arrival; the fit settled 320 m away and rejected the later
/// arrivals of n03 and n04. The challenge before finalising refits it.
#[test]
fn an_event_confirmed_on_a_wrong_pick_is_refit_on_the_far_arrivals() {
    let (cfg, streams) = node_streams("city-salvo-interleaving-a.trace.jsonl");
    if let Err(e) = judge(&run(&interleaving(&cfg, &streams, 59))) {
        panic!("interleaving 59: {e}");
    }
}
