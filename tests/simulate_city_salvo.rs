//! `blastnet simulate --preset city-salvo --ideal --out DIR` writes a folder
//! that the recording reader loads, with the contents the issue asks for;
//! and the CLI's listing and error messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use blastnet_contract::{EnuFrame, Geodetic, Manifest, SourceKind, StreamKind, UtcNs};
use blastnet_recording::{Chunk, Scenario};

fn blastnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blastnet"))
}

/// All samples of one stream (full-scale units), its rate and start.
fn read_stream(sc: &Scenario, id: &str, kind: StreamKind) -> (Vec<f32>, u32, UtcNs) {
    let mut r = sc.open_stream(id, kind).unwrap().expect("stream present");
    let (rate, start) = (r.sample_rate(), r.start_utc());
    let mut all = Vec::new();
    let mut buf = Vec::new();
    loop {
        match r.next_chunk(&mut buf, 1 << 16).unwrap() {
            Chunk::Samples { .. } => all.extend_from_slice(&buf),
            Chunk::End => break,
            Chunk::Discontinuity { .. } => panic!("{id}: one file per stream, no gaps"),
        }
    }
    (all, rate, start)
}

/// Closed-form travel time in a uniform wind (see simulator/tests/arrivals.rs):
/// the root of (c² − |w|²) t² + 2 (d·w) t − |d|² = 0, c = 331.3 √(1 + T/273.15).
fn travel_s(src: Geodetic, rcv: Geodetic, temperature_c: f64, w: [f64; 2]) -> f64 {
    let d = EnuFrame::new(src).to_enu(rcv);
    let c = 331.3 * (1.0 + temperature_c / 273.15).sqrt();
    let a = c * c - w[0] * w[0] - w[1] * w[1];
    let dw = d.e * w[0] + d.n * w[1];
    (-dw + (dw * dw + a * (d.e * d.e + d.n * d.n + d.u * d.u)).sqrt()) / a
}

fn run_ok(args: &[&str]) -> String {
    let out = blastnet().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "blastnet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn city_salvo_ideal_is_a_scenario_the_recording_reader_loads_with_the_promised_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("city-salvo");
    let stdout = run_ok(&[
        "simulate",
        "--preset",
        "city-salvo",
        "--ideal",
        "--seed",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains(dir.to_str().unwrap()) && stdout.contains("city-salvo:"),
        "{stdout}"
    );

    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let m = Manifest::from_json(&text, "manifest.json").unwrap();
    assert_eq!(m.format, "blastnet-recording/1");
    let sc = Scenario::open(&dir).unwrap();
    assert_eq!(sc.manifest.nodes.len(), m.nodes.len());

    // At least 10 nodes spread over a few km.
    assert!(m.nodes.len() >= 10);
    let f = EnuFrame::new(m.nodes[0].position());
    let pos: Vec<_> = m.nodes.iter().map(|n| f.to_enu(n.position())).collect();
    let spread = pos
        .iter()
        .flat_map(|a| pos.iter().map(move |b| a.horizontal_distance(*b)))
        .fold(0.0, f64::max);
    assert!((2000.0..6000.0).contains(&spread), "{spread} m");

    // At least 8 blasts within 30 s, 2 airbursts at 1-4 km, a launch, distractors.
    let truth = m.truth.as_ref().unwrap();
    let blasts: Vec<_> = truth
        .iter()
        .filter(|t| t.kind == SourceKind::Explosion)
        .collect();
    assert!(blasts.len() >= 8);
    let (t_first, t_last) = (
        blasts.iter().map(|t| t.time_utc).min().unwrap(),
        blasts.iter().map(|t| t.time_utc).max().unwrap(),
    );
    assert!(t_last.secs_since(t_first) <= 30.0);
    let ground = blasts.iter().map(|t| t.alt_m).fold(f64::INFINITY, f64::min);
    let airbursts = blasts
        .iter()
        .filter(|t| (1000.0..=4000.0).contains(&(t.alt_m - ground)))
        .count();
    assert!(airbursts >= 2, "{airbursts}");
    assert!(blasts
        .iter()
        .all(|t| t.yield_kg_tnt.is_some_and(|w| w > 0.0)));
    assert!(truth.iter().any(|t| t.kind == SourceKind::Launch));
    assert!(truth.iter().filter(|t| !t.kind.is_blast()).count() >= 3);
    let env = m.environment.unwrap();

    let mut lengths = Vec::new();
    for node in &m.nodes {
        let (x, rate, start) = read_stream(&sc, &node.id, StreamKind::Acoustic);
        assert_eq!(rate, 16_000);
        // 16-bit on disk (keeps the shipped folder small).
        let bytes = std::fs::metadata(dir.join(&node.streams[0].file))
            .unwrap()
            .len();
        let bits_per_sample = (bytes as f64 - 44.0) * 8.0 / x.len() as f64;
        let high_spl = node.id.ends_with('h');
        assert_eq!(
            bits_per_sample.round() as u32,
            if high_spl { 24 } else { 16 },
            "{}",
            node.id
        );
        let (v, srate, _) = read_stream(&sc, &node.id, StreamKind::Seismic);
        assert_eq!(srate, 500);
        assert!((v.len() as f64 / 500.0 - x.len() as f64 / 16_000.0).abs() < 0.01);
        lengths.push((node.id.clone(), x.len() as f64 / 16_000.0));

        // The first blast arrival at each node stands out of the noise where predicted.
        let dt = 1.0 / 16_000.0;
        let first = truth
            .iter()
            .filter(|t| t.kind.is_blast())
            .map(|t| {
                t.time_utc.secs_since(start)
                    + travel_s(
                        Geodetic::new(t.lat, t.lon, t.alt_m),
                        node.position(),
                        env.temperature_c,
                        env.wind_mps,
                    )
            })
            .fold(f64::INFINITY, f64::min);
        let k = (first / dt).ceil() as usize;
        let before = &x[k - 4800..k - 16];
        let rms =
            (before.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / before.len() as f64).sqrt();
        let peak = x[k..k + 480].iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        assert!(
            peak > 10.0 * rms,
            "{}: first arrival {first:.3} s: peak {peak} vs rms before {rms}",
            node.id
        );

        // MEMS microphones saturate on the near blasts; the high-SPL sensor does not.
        // The reader returns physical units (sample × sensitivity, Pa per full scale).
        let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64 / node.streams[0].sensitivity;
        if node.id == "n01" {
            assert!(max >= 0.999, "n01 should clip: {max}");
        }
        if high_spl {
            assert!(max < 0.5, "{}: {max}", node.id);
        }
    }
    // n07 dies at 19 s: its file ends early.
    let n07 = lengths.iter().find(|l| l.0 == "n07").unwrap().1;
    let longest = lengths.iter().map(|l| l.1).fold(0.0, f64::max);
    assert!(n07 < 19.5 && longest > 35.0, "{lengths:?}");

    // Both streams of a node share its clock; the scenario can be re-made from its scenario.toml.
    assert!(m.nodes.iter().all(|n| n
        .streams
        .iter()
        .all(|s| s.start_utc == n.streams[0].start_utc)));
    assert!(dir.join("scenario.toml").is_file());
}

#[test]
fn simulate_lists_presets_and_names_the_file_and_field_of_a_bad_spec() {
    let list = run_ok(&["simulate", "--list-presets"]);
    for name in ["single-blast", "city-salvo", "gunshot"] {
        assert!(list.contains(name), "{list}");
    }
    let out = blastnet()
        .args(["simulate", "--preset", "nope", "--out", "/nonexistent/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown preset \"nope\""));

    let toml = run_ok(&["simulate", "--preset", "single-blast", "--print-spec"]);
    assert!(toml.contains("yield_kg_tnt = 100.0"), "{toml}");
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        toml.replace("yield_kg_tnt = 100.0", "yield_kg_tnt = -5.0"),
    )
    .unwrap();
    let out = blastnet()
        .args([
            "simulate",
            "--spec",
            bad.to_str().unwrap(),
            "--out",
            tmp.path().join("o").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.toml") && err.contains("sources[0].yield_kg_tnt"),
        "{err}"
    );

    std::fs::write(
        &bad,
        toml.replace("duration_s = 7.0", "duration_s = \"long\""),
    )
    .unwrap();
    let out = blastnet()
        .args([
            "simulate",
            "--spec",
            bad.to_str().unwrap(),
            "--out",
            tmp.path().join("o").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.toml") && err.contains("duration_s"),
        "{err}"
    );

    // A good spec file round-trips into a scenario.
    let good = tmp.path().join("good.toml");
    std::fs::write(&good, &toml).unwrap();
    let out_dir = tmp.path().join("single");
    run_ok(&[
        "simulate",
        "--spec",
        good.to_str().unwrap(),
        "--seed",
        "3",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(Scenario::open(&out_dir).is_ok());
}
