//! Feed saved detections (`blastnet replay --detections-out`) through the
//! engine alone, without the detector or MQTT: isolates the engine's
//! behaviour on real picks and makes engine changes comparable on the same
//! picks.
//!
//! Usage: `cargo run -p blastnet-aggregator-core --example offline_replay --
//! <manifest.json> <detections.jsonl> <events-out.jsonl>`, or
//! `offline_replay --trace <trace.jsonl> <events-out.jsonl>` to repeat a live
//! run's engine calls exactly (recorded by the aggregator or `blastnet
//! replay` with `BLASTNET_ENGINE_TRACE=<trace.jsonl>`).
//!
//! Nodes come from the manifest (as the node runtime announces them);
//! temperature and wind from its `environment` (as `blastnet replay` sets
//! them). Detections are fed in onset order with the watermark at each onset,
//! then flushed. Truth is not read. `BLASTNET_ENGINE_JSON` may override
//! engine settings, e.g. `{"model_sigma_s": 0.005}`.
use std::io::Write;

use blastnet_aggregator_core::{Action, Engine, EngineConfig, NodeInfo, TraceEntry};
use blastnet_contract::{Detection, EventStatus, Manifest};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() == 4 && a[1] == "--trace" {
        return replay_trace(&a[2], &a[3]);
    }
    if a.len() != 4 {
        return Err(
            "usage: offline_replay <manifest.json> <detections.jsonl> <events-out.jsonl>".into(),
        );
    }
    let text = std::fs::read_to_string(&a[1]).map_err(|e| format!("{}: {e}", a[1]))?;
    let m = Manifest::from_json(&text, &a[1])?;
    // Optional overrides (any subset of EngineConfig as JSON) for comparisons.
    let mut cfg: EngineConfig = match std::env::var("BLASTNET_ENGINE_JSON") {
        Ok(j) => serde_json::from_str(&j).map_err(|e| format!("BLASTNET_ENGINE_JSON: {e}"))?,
        Err(_) => EngineConfig::default(),
    };
    if let Some(env) = &m.environment {
        cfg.temperature_c = env.temperature_c;
        cfg.wind_mps = env.wind_mps;
    }
    let mut eng = Engine::new(cfg);
    for n in &m.nodes {
        eng.upsert_node(NodeInfo {
            id: n.id.clone(),
            position: n.position(),
            clock_uncertainty_s: 1e-6,
            online: true,
            temperature_c: None,
            refused: false,
        });
    }
    let dtext = std::fs::read_to_string(&a[2]).map_err(|e| format!("{}: {e}", a[2]))?;
    let mut dets = Vec::new();
    for (i, l) in dtext
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let d: Detection =
            serde_json::from_str(l).map_err(|e| format!("{} line {}: {e}", a[2], i + 1))?;
        dets.push(d);
    }
    dets.sort_by_key(|d| d.onset_utc);
    let mut out = Vec::new();
    let t = std::time::Instant::now();
    for d in &dets {
        eng.on_detection(d, &mut out);
        if std::env::var("NO_ADVANCE").is_err() {
            let ahead: f64 = std::env::var("AHEAD")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            eng.advance(d.onset_utc.add_secs_f64(ahead), &mut out);
        }
    }
    eng.flush(&mut out);
    let el = t.elapsed();
    let n = write_finals(&out, &a[3])?;
    eprintln!(
        "{}: {} detections, {} final events, engine {:?}",
        m.name,
        dets.len(),
        n,
        el
    );
    Ok(())
}

/// Repeat a live run's engine calls (`BLASTNET_ENGINE_TRACE`) exactly.
fn replay_trace(trace: &str, events_out: &str) -> Res<()> {
    let text = std::fs::read_to_string(trace).map_err(|e| format!("{trace}: {e}"))?;
    let mut eng = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    for (i, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut v: serde_json::Value =
            serde_json::from_str(l).map_err(|e| format!("{trace} line {}: {e}", i + 1))?;
        // BLASTNET_ENGINE_JSON overrides the recorded settings (comparisons).
        if let (Some(cfg), Ok(j)) = (
            v.get_mut("config").and_then(|c| c.as_object_mut()),
            std::env::var("BLASTNET_ENGINE_JSON"),
        ) {
            let over: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&j).map_err(|e| format!("BLASTNET_ENGINE_JSON: {e}"))?;
            cfg.extend(over);
        }
        let e: TraceEntry =
            serde_json::from_value(v).map_err(|e| format!("{trace} line {}: {e}", i + 1))?;
        eng.apply(&e, &mut out);
    }
    let n = write_finals(&out, events_out)?;
    eprintln!("{trace}: {n} final events");
    Ok(())
}

fn write_finals(out: &[Action], path: &str) -> Res<usize> {
    let mut w =
        std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?);
    let mut n = 0;
    for act in out {
        if let Action::Publish(e) = act {
            if e.status == EventStatus::Final {
                serde_json::to_writer(&mut w, e)?;
                w.write_all(b"\n")?;
                n += 1;
            }
        }
    }
    w.flush()?;
    Ok(n)
}
