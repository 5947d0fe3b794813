//! The live map in a real browser, driven over the DevTools protocol
//! (playwright-core, tests/browser/map.mjs, Debian's Chromium) on a replayed
//! salvo kept up with `blastnet replay --serve`: offline, the configured
//! tiles cannot load and the page falls back to its metric grid and says
//! so; every event is drawn; clicking one opens the drawer with one
//! waveform and spectrogram per node that heard it and rays to them; the
//! time filter hides the events outside its range. Screenshots are saved
//! (the path is printed) for a person to look at.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use blastnet_aggregator::testkit::http_get;
use blastnet_contract::Event;
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

/// What the browser test needs on this machine, each missing one named.
fn prerequisites(browser_dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("`node` (Debian package nodejs)".to_string());
    }
    if Command::new("npm").arg("--version").output().is_err() {
        missing.push("`npm` (Debian package npm)".to_string());
    }
    let pw = browser_dir.join("node_modules/playwright-core/package.json");
    if !pw.is_file() {
        missing.push(format!(
            "{} (run `npm ci --no-audit --no-fund` in {})",
            pw.display(),
            browser_dir.display()
        ));
    }
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (Debian package chromium)"));
    }
    missing
}

/// A 127.0.0.1 port nothing listens on: the "tile server" of an offline field.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `blastnet replay <dir> --serve --config <cfg>`; the map URL from its log.
fn replay_serve(dir: &Path, config: &Path) -> (Stop, String, mpsc::Receiver<String>) {
    let serving = common::replay_serve(
        dir,
        &["--config".as_ref(), config.as_os_str()],
        Duration::from_secs(300),
    );
    (
        Stop(serving.child),
        format!("http://{}/", serving.addr),
        serving.rx,
    )
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn origin_ms(e: &Event) -> f64 {
    e.origin_utc.0 as f64 / 1e6
}

#[test]
fn the_map_in_a_browser_falls_back_offline_draws_every_event_opens_the_drawer_and_filters_by_time()
{
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    let missing = prerequisites(&browser_dir);
    assert!(
        missing.is_empty(),
        "this test drives Chromium with playwright-core and needs: {}; `scripts/test` installs them",
        missing.join("; ")
    );

    let work = common::shipped("city-salvo");
    let config = work.path().join("map-aggregator.toml");
    let tiles = format!("http://127.0.0.1:{}/{{z}}/{{x}}/{{y}}.png", closed_port());
    std::fs::write(
        &config,
        format!("[map]\ntile_url = \"{tiles}\"\ntile_attribution = \"unreachable test tiles\"\n"),
    )
    .unwrap();
    let (_serving, url, _log) = replay_serve(work.path(), &config);
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = |path: &str| -> String {
        let (status, body) = rt.block_on(http_get(addr, path)).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    };
    let events: Vec<Event> = serde_json::from_str(&get("/api/events")).unwrap();
    let nodes: Vec<Value> = serde_json::from_str(&get("/api/nodes")).unwrap();
    assert!(events.len() >= 3, "the salvo gave {} events", events.len());
    let map_config: Value = serde_json::from_str(&get("/api/map-config")).unwrap();
    assert_eq!(map_config["tile_url"], tiles.as_str());

    let shots: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("map-browser");
    let run = Command::new("node")
        .arg(browser_dir.join("map.mjs"))
        .arg(&url)
        .arg(&shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "node map.mjs failed ({}):\n{stderr}\n{stdout}",
        run.status
    );
    let seen: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("map.mjs output is not JSON ({e}):\n{stdout}\n{stderr}"));
    eprintln!("screenshots in {}", shots.display());
    let show = serde_json::to_string_pretty(&seen).unwrap();

    // Nothing broke, nothing left the machine.
    assert_eq!(seen["page_errors"], Value::Array(vec![]), "{show}");
    assert_eq!(seen["offsite_requests"], Value::Array(vec![]), "{show}");

    // Offline: the tiles cannot load, so the grid, and a note saying so.
    assert_eq!(seen["background"], "grid", "{show}");
    assert_eq!(seen["note_visible"], true, "{show}");
    assert!(
        seen["note"]
            .as_str()
            .is_some_and(|n| n.contains("could not load")),
        "{show}"
    );
    assert!(seen["grid_lines"].as_u64().unwrap_or(0) > 0, "{show}");

    // Every event drawn, each with its ellipse; no two labels overlap.
    let ids: BTreeSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let drawn: BTreeSet<String> = strings(&seen["drawn_events"]).into_iter().collect();
    assert_eq!(drawn, ids, "events drawn vs /api/events:\n{show}");
    let ellipses: BTreeSet<String> = strings(&seen["ellipses"]).into_iter().collect();
    assert_eq!(ellipses, ids, "1-sigma ellipses vs events:\n{show}");
    assert_eq!(seen["labels"]["overlaps"], 0, "{show}");
    assert!(
        seen["labels"]["visible"].as_u64().unwrap_or(0) > 0,
        "{show}"
    );
    // Zoomed out (Leaflet's control): crowded labels give way, still none
    // overlaps, every event still drawn (its ellipse at the least size).
    let z = &seen["zoomed_out"];
    assert!(
        z["to"].as_i64() < z["from"].as_i64(),
        "did not zoom out: {z}"
    );
    assert_eq!(z["labels"]["overlaps"], 0, "{show}");
    assert_eq!(z["drawn"], ids.len(), "{show}");

    // Node states after a replay: every replayed node ends offline with its
    // recording, so the map shows them at the data's time (the newest
    // event): a node whose statuses ran past it was reporting then.
    let newest = events.iter().map(origin_ms).fold(f64::MIN, f64::max);
    let at: f64 = seen["header"]["state_time_ms"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("node states not at the data's time:\n{show}"));
    assert!(
        (at - newest).abs() < 1.0,
        "states at {at}, newest event {newest}"
    );
    let shown_at = |n: &Value| -> String {
        let state = n["state"].as_str().unwrap_or_default();
        let last = n["last_status_utc"]
            .as_str()
            .and_then(|t| blastnet_contract::UtcNs::parse(t).ok())
            .map_or(f64::MIN, |t| t.0 as f64 / 1e6);
        if state == "offline" && last > newest {
            "online".into()
        } else {
            state.into()
        }
    };
    let expected: BTreeSet<(String, String)> = nodes
        .iter()
        .map(|n| (n["node_id"].as_str().unwrap().to_string(), shown_at(n)))
        .collect();
    let drawn_states: BTreeSet<(String, String)> = seen["node_states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v[0].as_str().unwrap().into(), v[2].as_str().unwrap().into()))
        .collect();
    assert_eq!(drawn_states, expected, "node states at the newest event");
    let online = expected.iter().filter(|(_, s)| s == "online").count();
    assert!(
        online > 0,
        "no node reporting at the newest event: {expected:?}"
    );
    assert_eq!(seen["header"]["nodes"], nodes.len().to_string(), "{show}");
    assert_eq!(seen["header"]["online"], online.to_string(), "{show}");

    // The drawer of the event heard by the most nodes.
    let d = &seen["drawer"];
    let id = d["event_id"].as_str().expect("an event clicked");
    let ev = events.iter().find(|e| e.event_id == id).unwrap();
    // The nodes that heard it: its arrivals, used or set aside.
    let heard: BTreeSet<String> = ev
        .detections
        .iter()
        .chain(&ev.outliers)
        .map(|a| a.node_id.clone())
        .collect();
    assert_eq!(d["visible"], true, "{show}");
    assert_eq!(d["state"], "ready", "{show}");
    assert_eq!(
        d["pick_rows"].as_u64().unwrap_or(0) as usize,
        ev.detections.len() + ev.outliers.len(),
        "{show}"
    );
    let rays: BTreeSet<String> = strings(&d["rays"]).into_iter().collect();
    assert!(
        heard.is_subset(&rays),
        "rays to {rays:?}, heard by {heard:?}"
    );
    let (status, body) = rt
        .block_on(http_get(addr, &format!("/api/events/{id}/waveforms")))
        .unwrap_or((0, String::new()));
    assert_eq!(
        status, 200,
        "GET /api/events/{id}/waveforms (the waveform evidence) answered {status}: {body}"
    );
    let wf: Value = serde_json::from_str(&body).unwrap();
    // One trace per node and stream served (an echo's pick is marked on
    // the trace of its node and stream).
    let served: BTreeSet<(String, String)> = wf["waveforms"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| {
                    let s = |k: &str| w[k].as_str().unwrap_or_default().to_string();
                    (s("node_id"), s("stream"))
                })
                .collect()
        })
        .unwrap_or_default();
    let rows = d["waveforms"].as_array().cloned().unwrap_or_default();
    let shown: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("node_id"), s("stream"))
        })
        .collect();
    assert_eq!(rows.len(), shown.len(), "a node and stream twice:\n{show}");
    assert_eq!(shown, served, "waveform rows vs served:\n{show}");
    let served = served.len();
    assert!(served > 0, "no waveform served for {id}: {body}");
    // One waveform per node that heard it (a node with a microphone and a
    // geophone gives two), or the drawer says why it has none.
    let with_wave: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r["node_id"].as_str().map(str::to_string))
        .collect();
    let missing: BTreeSet<String> = strings(&d["missing"]).into_iter().collect();
    let served_missing: BTreeSet<String> = wf["missing"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["node_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        missing.is_subset(&served_missing),
        "missing snippets shown {missing:?}, served {served_missing:?}:\n{show}"
    );
    let accounted: BTreeSet<String> = with_wave.union(&missing).cloned().collect();
    assert!(
        heard.is_subset(&accounted) && with_wave.is_subset(&heard),
        "waveforms of {with_wave:?} (missing {missing:?}), heard by {heard:?}:\n{show}"
    );
    for r in &rows {
        assert!(
            r["wave_colours"].as_u64().unwrap_or(0) >= 2,
            "blank waveform: {r}"
        );
        assert!(
            r["spec_frames"].as_u64().unwrap_or(0) > 0
                && r["spec_colours"].as_u64().unwrap_or(0) > 8,
            "no spectrogram: {r}"
        );
        assert_eq!(r["play"], true, "no play button: {r}");
    }
    assert_eq!(d["closed"], true, "{show}");

    // The time filter: from the middle of the slider, earlier events hidden.
    // The confidence and kind filters hide exactly the events they exclude.
    let set = |v: &Value| -> BTreeSet<String> { strings(v).into_iter().collect() };
    let ids = |keep: &dyn Fn(&Event) -> bool| -> BTreeSet<String> {
        events
            .iter()
            .filter(|e| keep(e))
            .map(|e| e.event_id.clone())
            .collect()
    };
    let min = seen["conf_filter"]["min"]
        .as_f64()
        .expect("the confidence set");
    let expected = ids(&|e| e.confidence >= min - 1e-9);
    assert!(
        expected.len() < events.len(),
        "no event below confidence {min}: the filter is not exercised"
    );
    assert_eq!(
        set(&seen["conf_filter"]["drawn"]),
        expected,
        "drawn at least confidence {min}:\n{show}"
    );
    let expected = ids(&|e| e.kind.as_str() != "explosion");
    assert_eq!(
        set(&seen["kind_filter"]["drawn"]),
        expected,
        "drawn with explosions unticked:\n{show}"
    );
    assert_eq!(
        set(&seen["after_filters"]),
        ids(&|_| true),
        "every event back with the filters reset:\n{show}"
    );

    let t = &seen["time_filter"];
    let from = t["from_ms"].as_f64().expect("a `from` bound applied");
    let expected: BTreeSet<String> = events
        .iter()
        .filter(|e| origin_ms(e) >= from)
        .map(|e| e.event_id.clone())
        .collect();
    assert!(
        !expected.is_empty() && expected.len() < events.len(),
        "the slider's middle should split the salvo: {expected:?} of {}",
        events.len()
    );
    let drawn: BTreeSet<String> = strings(&t["drawn"]).into_iter().collect();
    let listed: BTreeSet<String> = strings(&t["listed"]).into_iter().collect();
    assert_eq!(drawn, expected, "drawn after the time filter:\n{show}");
    assert_eq!(listed, expected, "listed after the time filter:\n{show}");
    assert_eq!(seen["labels_filtered"]["overlaps"], 0, "{show}");
    for name in [
        "map.png",
        "zoomed-out.png",
        "drawer.png",
        "drawer-waveforms.png",
        "time-filter.png",
    ] {
        let png = std::fs::read(shots.join(name)).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name}");
    }
}
