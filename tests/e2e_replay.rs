//! End to end: simulated scenarios (and the shipped city-salvo) through
//! `blastnet replay` — node runtimes, a real MQTT broker (embedded rumqttd or
//! a Mosquitto process), the aggregator — compared with the manifest's truth.
//!
//! Tolerance: a located blast must lie within 5 sigma of the truth, sigma
//! being the larger of the event's own 1-sigma horizontal uncertainty and its
//! Cramér–Rao bound (both from the pick uncertainties and the geometry), plus
//! the manifest's GPS position error where the scenario has one (1 m, see
//! recordings/README.md).

mod common;

use std::path::Path;
use std::process::Command;

use blastnet_contract::{Event, Manifest, SourceKind};
use blastnet_recording::truth::{self, Judge};
use blastnet_simulator::{random_array, write_scenario, WriteOptions};
use common::shipped;

fn replay(dir: &Path, broker: Option<&str>) -> (Manifest, Vec<Event>, String) {
    let events = dir.join("events.jsonl");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blastnet"));
    cmd.arg("replay").arg(dir).arg("--events-out").arg(&events);
    if let Some(b) = broker {
        cmd.args(["--broker", b]);
    }
    let out = cmd.output().expect("run blastnet replay");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay failed:\n{stderr}");
    let manifest = blastnet_recording::Scenario::open(dir)
        .expect("scenario")
        .manifest;
    let events = std::fs::read_to_string(&events)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str::<Event>(l).expect("SPEC event"))
        .collect();
    (manifest, events, stderr)
}

/// For each true blast, the horizontal error of the nearest event within 2 s
/// and the tolerance it must meet; `None` when no event is near.
fn errors(m: &Manifest, events: &[Event], gps_sigma_m: f64) -> Vec<Option<(f64, f64)>> {
    let judge = Judge {
        frame: truth::frame(m).expect("nodes"),
        window_s: 2.0,
        k: 5.0,
        gps_sigma_m,
    };
    m.truth
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter(|t| t.kind.is_blast())
        .map(|t| judge.nearest(t, events))
        .collect()
}

/// Seven nodes in a 1.5 km disc and two ground bursts inside it (random_array
/// makes every third source an airburst; the shipped city-salvo covers dense
/// salvos and airbursts, see `shipped_city_salvo_locates_every_explosion`).
fn simulated(seed: u64, dir: &Path) -> Manifest {
    let spec = random_array(seed, 7, 1500.0, 2, SourceKind::Explosion);
    write_scenario(
        &spec,
        seed,
        &WriteOptions {
            ideal: true,
            distractor_dir: None,
        },
        dir,
    )
    .expect("simulate")
}

fn assert_all_located(m: &Manifest, events: &[Event], gps_sigma_m: f64, log: &str) {
    let errs = errors(m, events, gps_sigma_m);
    assert!(!errs.is_empty());
    for (i, e) in errs.iter().enumerate() {
        let (err, tol) =
            e.unwrap_or_else(|| panic!("blast {i} not located; events: {events:#?}\n{log}"));
        assert!(
            err <= tol,
            "blast {i}: error {err:.2} m > tolerance {tol:.2} m\n{log}"
        );
    }
}

#[test]
fn simulated_blasts_are_located_through_the_embedded_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = simulated(101, dir.path());
    let (_, events, log) = replay(dir.path(), None);
    assert_all_located(&m, &events, 0.0, &log);
}

#[test]
fn simulated_blasts_are_located_through_mosquitto() {
    let mosq = blastnet_broker::Mosquitto::start_required();
    let dir = tempfile::tempdir().expect("tempdir");
    let m = simulated(202, dir.path());
    let (_, events, log) = replay(dir.path(), Some(&mosq.url()));
    assert_all_located(&m, &events, 0.0, &log);
}

/// Every explosion of the shipped city-salvo (ground impacts and airburst
/// intercepts, nine within 23 s) located within 5 sigma of its reported
/// uncertainty (and the CRLB) plus the recording's GPS error, and no ghost
/// event. The missile launch (an emergent 4 s motor onset) is not required:
/// it is a known gap, see the README.
#[test]
fn shipped_city_salvo_locates_every_explosion() {
    let work = shipped("city-salvo");
    let (mut m, events, log) = replay(work.path(), None);
    // No ghost: every event lies within 5 sigma (+ GPS error) of a true
    // source (any kind: a located launch or distractor is no ghost) heard
    // within 2 s of its origin.
    let judge = Judge {
        frame: truth::frame(&m).expect("nodes"),
        window_s: 2.0,
        k: 5.0,
        gps_sigma_m: 1.0,
    };
    let truth = m.truth.take().expect("truth");
    for e in &events {
        let explained = truth.iter().any(|t| judge.matches(t, e));
        assert!(
            explained,
            "ghost event {} at {:.5},{:.5}\n{log}",
            e.event_id, e.lat, e.lon
        );
    }
    m.truth = Some(
        truth
            .into_iter()
            .filter(|t| t.kind == SourceKind::Explosion)
            .collect(),
    );
    // The shipped recording carries GPS errors of 1 m (horizontal sigma).
    assert_all_located(&m, &events, 1.0, &log);
}

/// Log lines written to a pipe (or a file) carry no ANSI colour codes: those
/// are for a terminal. `RUST_LOG=info` so that there are log lines to colour.
#[test]
fn replay_logs_written_to_a_pipe_carry_no_ansi_escape_codes() {
    let work = shipped("single-blast");
    let out = Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .arg("replay")
        .arg(work.path())
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .expect("run blastnet replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay failed:\n{stderr}");
    assert!(stderr.contains("INFO"), "no log line to check:\n{stderr}");
    for (name, bytes) in [("stderr", &out.stderr), ("stdout", &out.stdout)] {
        assert!(
            !bytes.contains(&0x1b),
            "ESC in the piped {name}:\n{}",
            String::from_utf8_lossy(bytes).replace('\x1b', "^[")
        );
    }
}

/// Same input, same output: ten replays of the shipped city-salvo (ten
/// nodes, each replayed concurrently through the broker, so the broker
/// interleaves them differently every time), five of them while two busy
/// threads load the CPU, give byte-identical events.
#[test]
fn ten_replays_of_one_recording_give_byte_identical_events() {
    let work = shipped("city-salvo");
    let events = work.path().join("events.jsonl");
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_blastnet"))
            .arg("replay")
            .arg(work.path())
            .arg("--events-out")
            .arg(&events)
            .output()
            .expect("run blastnet replay");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&events).expect("events file")
    };
    let first = run();
    assert!(!first.is_empty(), "no events");
    for i in 1..10 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load: Vec<_> = (0..if i < 5 { 2 } else { 0 })
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        let again = run();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in load {
            t.join().expect("load thread");
        }
        assert!(again == first, "replay {i} gave other events than replay 0");
    }
}
