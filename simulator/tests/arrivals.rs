//! Every truth arrival, re-derived from the manifest alone with an
//! independent closed form, is found in the WAV within one sample period
//! (ideal mode); with errors on, the manifest is measurably wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use blastnet_contract::{EnuFrame, Geodetic, Manifest, SourceKind, StreamKind, TruthSource};
use blastnet_simulator::{make_quiet, random_array, write_scenario, ScenarioSpec, WriteOptions};

/// Travel time written out here, independent of the simulator's propagation
/// code: the wavefront of a point source in air moving with uniform wind w is
/// a sphere of radius c·t centred at S + w·t, so the receiver at S + d is hit
/// when |d − w t| = c t, i.e. (c² − |w|²) t² + 2 (d·w) t − |d|² = 0.
/// (This is distance / (c + wind along the path) made exact: the simple
/// quotient ignores the cross-wind term w⊥²/2c, worth ~9 samples at 16 kHz over
/// 5 km in a 3 m/s wind.) c(T) = 331.3 √(1 + T/273.15). The wind is [east,
/// north] in the local frame at the source.
fn closed_form_travel_s(src: Geodetic, rcv: Geodetic, temperature_c: f64, wind: [f64; 2]) -> f64 {
    let d = EnuFrame::new(src).to_enu(rcv);
    let c = 331.3 * (1.0 + temperature_c / 273.15).sqrt();
    let w2 = wind[0] * wind[0] + wind[1] * wind[1];
    let dw = d.e * wind[0] + d.n * wind[1];
    let r2 = d.e * d.e + d.n * d.n + d.u * d.u;
    let a = c * c - w2;
    (-dw + (dw * dw + a * r2).sqrt()) / a
}

fn read_f32(path: &Path) -> (Vec<f32>, u32) {
    let mut r = hound::WavReader::open(path).unwrap();
    let rate = r.spec().sample_rate;
    assert_eq!(r.spec().sample_format, hound::SampleFormat::Float);
    (r.samples::<f32>().map(|s| s.unwrap()).collect(), rate)
}

fn truth_geo(t: &TruthSource) -> Geodetic {
    Geodetic::new(t.lat, t.lon, t.alt_m)
}

/// For each node and each blast truth: predicted arrival from the manifest,
/// and the onset (first non-zero sample after the previous silence) in the
/// acoustic WAV. Returns (node, truth index, onset − predicted, sample period).
fn onsets(dir: &Path, m: &Manifest) -> Vec<(String, usize, f64, f64)> {
    onsets_under(dir, m, m.environment.unwrap())
}

/// [`onsets`] predicted in the weather `env` instead of the manifest's.
fn onsets_under(
    dir: &Path,
    m: &Manifest,
    env: blastnet_contract::Environment,
) -> Vec<(String, usize, f64, f64)> {
    let mut out = Vec::new();
    for node in &m.nodes {
        let s = node
            .streams
            .iter()
            .find(|s| s.kind == StreamKind::Acoustic)
            .unwrap();
        let (x, rate) = read_f32(&dir.join(&s.file));
        let dt = 1.0 / rate as f64;
        for (j, t) in m.truth.as_ref().unwrap().iter().enumerate() {
            if !t.kind.is_blast() {
                continue;
            }
            let travel = closed_form_travel_s(
                truth_geo(t),
                node.position(),
                env.temperature_c,
                env.wind_mps,
            );
            let predicted = t.time_utc.secs_since(s.start_utc) + travel;
            // Search from 100 ms before the prediction: the scenarios space
            // their sources so that this window is silent before the arrival.
            let from = ((predicted - 0.1) / dt).floor().max(0.0) as usize;
            let k = from + x[from..].iter().position(|v| *v != 0.0).expect("an onset");
            out.push((node.id.clone(), j, k as f64 * dt - predicted, dt));
        }
    }
    out
}

fn quiet(mut spec: ScenarioSpec) -> ScenarioSpec {
    make_quiet(&mut spec);
    spec
}

#[test]
fn every_truth_arrival_is_found_within_one_sample_in_ideal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (i, (kind, n_nodes, radius, n_src)) in [
        (SourceKind::Explosion, 6, 400.0, 4),
        (SourceKind::Gunshot, 5, 300.0, 3),
        (SourceKind::Launch, 4, 300.0, 2),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = quiet(random_array(11 + i as u64, n_nodes, radius, n_src, kind));
        assert!(
            spec.environment.wind_mps != [0.0, 0.0],
            "the test needs wind to mean something"
        );
        let out = dir.path().join(format!("s{i}"));
        let m = write_scenario(
            &spec,
            5,
            &WriteOptions {
                ideal: true,
                distractor_dir: None,
            },
            &out,
        )
        .unwrap();
        let text = std::fs::read_to_string(out.join("manifest.json")).unwrap();
        let m2 = Manifest::from_json(&text, "manifest.json").unwrap();
        assert_eq!(
            m.truth.as_ref().unwrap().len(),
            m2.truth.as_ref().unwrap().len()
        );
        // The simulator's public arrival function agrees with the closed form.
        let env = m2.environment.unwrap();
        for node in &m2.nodes {
            for t in m2.truth.as_ref().unwrap() {
                let ours = t.time_utc.add_secs_f64(closed_form_travel_s(
                    truth_geo(t),
                    node.position(),
                    env.temperature_c,
                    env.wind_mps,
                ));
                let theirs = blastnet_simulator::arrival_utc(t, node.position(), &env);
                assert!(
                    (ours.0 - theirs.0).abs() <= 2,
                    "{}: {} ns",
                    node.id,
                    ours.0 - theirs.0
                );
            }
        }
        for (node, j, err, dt) in onsets(&out, &m2) {
            // The onset is the first sample at or after the true arrival:
            // 0 <= err < dt (1 ns slack for the manifest's nanosecond rounding).
            assert!(
                err >= -1e-9 && err < dt + 1e-9,
                "{kind:?} node {node} truth {j}: onset − predicted = {:.3} samples",
                err / dt
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 6 * 4 + 5 * 3 + 4 * 2);
}

#[test]
fn airburst_heard_by_an_elevated_node_is_a_double_pulse_at_the_image_delay() {
    let mut spec = quiet(random_array(3, 1, 100.0, 3, SourceKind::Explosion));
    spec.nodes[0].at = [0.0, 0.0, 30.0];
    // A sensor that does not clip at these ranges (hundreds of pascals to kilopascals).
    spec.nodes[0].sensor.full_scale_db = 194.0;
    spec.environment.wind_mps = [0.0, 0.0];
    spec.sources.truncate(3);
    let dir = tempfile::tempdir().unwrap();
    let m = write_scenario(
        &spec,
        1,
        &WriteOptions {
            ideal: true,
            distractor_dir: None,
        },
        dir.path(),
    )
    .unwrap();
    let truth = &m.truth.as_ref().unwrap()[2];
    assert!(truth.label.as_deref().unwrap().contains("airburst"));
    let node = &m.nodes[0];
    let (x, rate) = read_f32(&dir.path().join(&node.streams[0].file));
    let dt = 1.0 / rate as f64;
    let c = 331.3 * (1.0 + spec.environment.temperature_c / 273.15).sqrt();
    let a = spec.sources[2].at();
    let (h, hr) = (a[2], 30.0);
    let horiz = (a[0].powi(2) + a[1].powi(2)).sqrt();
    let direct = (horiz.powi(2) + (h - hr).powi(2)).sqrt() / c;
    let image = (horiz.powi(2) + (h + hr).powi(2)).sqrt() / c;
    let t0 = truth.time_utc.secs_since(node.streams[0].start_utc);
    // Two jumps: at the direct and at the reflected arrival, each the largest
    // sample-to-sample rise within ±2 samples of its prediction.
    let rise = |t: f64| {
        let k = (t / dt).ceil() as usize;
        (k - 2..k + 3)
            .map(|i| x[i + 1] - x[i])
            .fold(f32::MIN, f32::max)
    };
    let r1 = rise(t0 + direct - dt);
    let r2 = rise(t0 + image - dt);
    let quiet_between = rise(t0 + 0.5 * (direct + image));
    assert!(image - direct > 0.01, "geometry gives {} s", image - direct);
    assert!(
        r1 > 0.0 && r2 > 0.0 && r2 > 20.0 * quiet_between.abs(),
        "r1 {r1} r2 {r2} between {quiet_between}"
    );
    // Reflection coefficient 0.9 times the free-air law at the longer image path.
    let w = match &spec.sources[2] {
        blastnet_simulator::SourceSpec::Explosion { yield_kg_tnt, .. } => *yield_kg_tnt,
        _ => unreachable!(),
    };
    let law = |r: f64| blastnet_contract::blast::kg_free_air_overpressure_pa(r, w);
    let expected = 0.9 * law(image * c) / law(direct * c);
    let ratio = (r2 / r1) as f64;
    assert!(
        (ratio / expected - 1.0).abs() < 0.3,
        "jump ratio {ratio} vs {expected}"
    );
}

#[test]
fn ground_burst_p_wave_leads_the_air_wave_in_the_seismic_stream() {
    let spec = quiet(random_array(21, 3, 600.0, 1, SourceKind::Explosion));
    let dir = tempfile::tempdir().unwrap();
    let m = write_scenario(
        &spec,
        2,
        &WriteOptions {
            ideal: true,
            distractor_dir: None,
        },
        dir.path(),
    )
    .unwrap();
    let t = &m.truth.as_ref().unwrap()[0];
    let src = spec.sources[0].at();
    assert_eq!(src[2], 0.0);
    for (node, sim) in m.nodes.iter().zip(&spec.nodes) {
        let s = node
            .streams
            .iter()
            .find(|s| s.kind == StreamKind::Seismic)
            .unwrap();
        let (v, rate) = read_f32(&dir.path().join(&s.file));
        let dt = 1.0 / rate as f64;
        let r = ((sim.at[0] - src[0]).powi(2) + (sim.at[1] - src[1]).powi(2)).sqrt();
        let predicted = t.time_utc.secs_since(s.start_utc) + r / spec.environment.p_wave_mps;
        let k = v.iter().position(|x| *x != 0.0).unwrap();
        let err = k as f64 * dt - predicted;
        assert!(
            err >= -1e-9 && err < dt + 1e-9,
            "{}: P onset − r/vp = {:.3} samples",
            node.id,
            err / dt
        );
    }
}

#[test]
fn with_errors_on_the_manifest_positions_and_clocks_are_wrong_by_their_sigmas() {
    let spec = quiet(random_array(11, 6, 400.0, 2, SourceKind::Explosion));
    let dir = tempfile::tempdir().unwrap();
    let ideal = write_scenario(
        &spec,
        5,
        &WriteOptions {
            ideal: true,
            distractor_dir: None,
        },
        &dir.path().join("a"),
    )
    .unwrap();
    let real = write_scenario(
        &spec,
        5,
        &WriteOptions {
            ideal: false,
            distractor_dir: None,
        },
        &dir.path().join("b"),
    )
    .unwrap();
    assert_eq!(ideal.truth, real.truth);
    let frame = EnuFrame::new(ideal.nodes[0].position());
    let e = &spec.errors;
    let mut moved = 0;
    let mut shifted = 0;
    for (a, b) in ideal.nodes.iter().zip(&real.nodes) {
        let (pa, pb) = (frame.to_enu(a.position()), frame.to_enu(b.position()));
        let dh = (pa.e - pb.e).hypot(pa.n - pb.n);
        assert!(
            dh < 5.0 * e.gps_sigma_h_m * 1.5 && (pa.u - pb.u).abs() < 5.0 * e.gps_sigma_v_m,
            "{}: {dh} m",
            a.id
        );
        moved += usize::from(dh > 0.01);
        let dt = b.streams[0].start_utc.secs_since(a.streams[0].start_utc);
        assert!(
            dt.abs() < 5.0 * e.clock_offset_sigma_s,
            "{}: clock offset {dt} s",
            a.id
        );
        shifted += usize::from(b.streams[0].start_utc != a.streams[0].start_utc);
    }
    assert_eq!(moved, 6);
    assert!(shifted >= 5, "{shifted}");
    // Onsets predicted from the wrong manifest miss by GPS error / c and the clock offset.
    let worst = onsets(&dir.path().join("b"), &real)
        .iter()
        .map(|o| o.2.abs())
        .fold(0.0, f64::max);
    let bound = 5.0 * (2.0 * e.gps_sigma_h_m + e.gps_sigma_v_m) / 330.0
        + 5.0 * e.clock_offset_sigma_s
        + 1e-4;
    assert!(
        worst > 1.0 / 16_000.0 && worst < bound,
        "worst {worst} s, bound {bound} s"
    );
}

#[test]
fn the_same_seed_writes_the_same_bytes_and_another_seed_other_noise() {
    let spec = random_array(4, 2, 200.0, 1, SourceKind::Gunshot);
    let dir = tempfile::tempdir().unwrap();
    let o = WriteOptions::default();
    write_scenario(&spec, 9, &o, &dir.path().join("a")).unwrap();
    write_scenario(&spec, 9, &o, &dir.path().join("b")).unwrap();
    write_scenario(&spec, 10, &o, &dir.path().join("c")).unwrap();
    let read = |d: &str| std::fs::read(dir.path().join(d).join("r01.wav")).unwrap();
    assert_eq!(read("a"), read("b"));
    assert_ne!(read("a"), read("c"));
    // scenario.toml re-creates the spec exactly.
    let text = std::fs::read_to_string(dir.path().join("a/scenario.toml")).unwrap();
    let back = ScenarioSpec::from_toml(&text, Path::new("scenario.toml")).unwrap();
    assert_eq!(back, spec);
}

/// Random scenes stand on tilted ground, among walls, and tell the network a
/// wrong weather: the direct arrivals rendered still follow the closed form
/// from the manifest's node and truth positions (so both carry the terrain)
/// under the TRUE weather, and the manifest states the reported one.
#[test]
fn random_scenes_render_arrivals_over_tilted_ground_under_the_true_weather() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut walls = 0;
    for seed in 0..4u64 {
        let mut spec = quiet(blastnet_simulator::random_scene(seed));
        assert!(
            !spec.terrain.is_flat(),
            "seed {seed}: the test needs a slope"
        );
        spec.sources.truncate(1);
        walls += spec.walls.len();
        let out = dir.path().join(format!("r{seed}"));
        let m = write_scenario(
            &spec,
            seed,
            &WriteOptions {
                ideal: true,
                distractor_dir: None,
            },
            &out,
        )
        .unwrap();
        let reported = spec.environment.reported.unwrap();
        assert_eq!(m.environment, Some(reported));
        // The truth sits on (or above) the tilted ground: its altitude is the
        // origin's plus the ground's rise plus its height.
        let t = &m.truth.as_ref().unwrap()[0];
        let a = spec.sources[0].at();
        let frame = EnuFrame::new(spec.origin);
        let u = frame.to_enu(truth_geo(t)).u;
        assert!(
            (u - spec.terrain.ground_u(a[0], a[1]) - a[2]).abs() < 1e-3,
            "seed {seed}: up {u}"
        );
        let truth_env = blastnet_contract::Environment {
            temperature_c: spec.environment.temperature_c,
            wind_mps: spec.environment.wind_mps,
            relative_humidity_pct: None,
        };
        for (node, _, err, dt) in onsets_under(&out, &m, truth_env) {
            assert!(
                err >= -1e-9 && err < dt + 1e-9,
                "seed {seed} node {node}: onset − predicted = {:.3} samples",
                err / dt
            );
            checked += 1;
        }
    }
    assert!(checked >= 24 && walls > 0, "{checked} {walls}");
}
