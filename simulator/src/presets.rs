//! Named scenarios and a generator of random-array test scenarios.
//!
//! Geometry, sources and sensors of a preset are fixed by design (so the
//! shipped recordings are described exactly in `recordings/README.md`); the
//! seed places the local distractors (`random` is the exception: drawn
//! entirely from the seed, see `random_scene.rs`). Noise, errors and real clips are drawn
//! from the seed given to `write_scenario`.

use blastnet_contract::physics::sound_speed;
use blastnet_contract::{Geodetic, SourceKind, UtcNs};
use rand::Rng;

use crate::error::SimError;
use crate::noise::{rng_for, uniform};
use crate::spec::{
    BulletSpec, BurstSpec, DistractorKind, DistractorSpec, EnvironmentSpec, ErrorSpec, NodeSim,
    NoiseSpec, RatesSpec, SampleFormat, ScenarioSpec, SensorSpec, SourceSpec, TerrainSpec,
};

/// The preset names with a one-line description each.
pub const PRESETS: &[(&str, &str)] = &[
    ("single-blast", "one 100 kg ground burst heard by 5 nodes within 1.1 km (16 kHz, 500 Hz seismic)"),
    (
        "city-salvo",
        "a night of strikes over a city: 11 nodes over ~3.5 km, 9 explosions (3 airburst intercepts at 1.2-3.6 km) and a launch in 24 s, distractors (16 kHz 16-bit, 500 Hz seismic)",
    ),
    ("gunshot", "5 shots (3 supersonic rifle, 2 handgun) heard by 7 nodes over ~1 km (48 kHz 16-bit, 1 kHz seismic)"),
    (
        "random",
        "a randomised evaluation scene drawn from --seed: 6-14 nodes over 0.3-3 km on tilted ground, walls, 3-8 ground bursts, airbursts and gunshot bursts in and around the array, the manifest's weather off the truth (blastnet eval --locate)",
    ),
];

/// A named scenario. Names: see [`PRESETS`].
pub fn preset(name: &str, seed: u64) -> Result<ScenarioSpec, SimError> {
    let spec = match name {
        "single-blast" => single_blast(seed),
        "city-salvo" => city_salvo(seed),
        "gunshot" => gunshot(seed),
        "random" => crate::random_scene::random_scene(seed),
        _ => {
            return Err(SimError::UnknownPreset {
                name: name.to_string(),
                known: PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", "),
            })
        }
    };
    spec.validate(name)?;
    Ok(spec)
}

fn utc(text: &str) -> UtcNs {
    // Literals below are valid RFC 3339 UTC; a typo would show as the epoch in every test.
    UtcNs::parse(text).unwrap_or(UtcNs::EPOCH)
}

fn explosion(at: [f64; 3], time_s: f64, kg: f64, label: &str) -> SourceSpec {
    SourceSpec::Explosion {
        at,
        time_s,
        yield_kg_tnt: kg,
        burst: if at[2] > 0.0 {
            BurstSpec::Air
        } else {
            BurstSpec::Ground
        },
        label: Some(label.to_string()),
    }
}

/// `count` distractors of mixed kinds on random nodes at random times in 0.5..`until`.
fn random_distractors(
    seed: u64,
    nodes: &[NodeSim],
    count: usize,
    until: f64,
) -> Vec<DistractorSpec> {
    let mut rng = rng_for(seed, "preset-distractors", 0);
    (0..count)
        .map(|i| {
            let kind = [
                DistractorKind::DoorSlam,
                DistractorKind::Clap,
                DistractorKind::Hammering,
                DistractorKind::Traffic,
            ][i % 4];
            let level_db = match kind {
                DistractorKind::DoorSlam => uniform(&mut rng, 92.0, 102.0),
                DistractorKind::Clap => uniform(&mut rng, 95.0, 105.0),
                DistractorKind::Hammering => uniform(&mut rng, 95.0, 108.0),
                DistractorKind::Traffic => uniform(&mut rng, 70.0, 80.0),
            };
            DistractorSpec {
                kind,
                node: nodes[rng.random_range(0..nodes.len())].id.clone(),
                time_s: (uniform(&mut rng, 0.5, until) * 1000.0).round() / 1000.0,
                level_db: (level_db * 10.0).round() / 10.0,
                distance_m: (uniform(&mut rng, 3.0, 15.0) * 10.0).round() / 10.0,
            }
        })
        .collect()
}

fn single_blast(seed: u64) -> ScenarioSpec {
    let mut nodes = vec![
        NodeSim::new("n1", [300.0, 100.0, 2.0]),
        NodeSim::new("n2", [-400.0, 600.0, 3.0]),
        NodeSim::new("n3", [-700.0, -500.0, 1.5]),
        NodeSim::new("n4", [900.0, -300.0, 5.0]),
        NodeSim::new("n5", [100.0, 1100.0, 10.0]),
    ];
    nodes[4].sensor = SensorSpec::high_spl();
    let distractors = random_distractors(seed, &nodes, 1, 5.0);
    ScenarioSpec {
        name: "single-blast".into(),
        description: "One 100 kg TNT ground burst at scenario time 2.0 s, five nodes at 0.3-1.1 km; n5 carries a high-SPL sensor, the others MEMS microphones that clip.".into(),
        start_utc: utc("2024-05-14T10:00:00Z"),
        duration_s: 7.0,
        origin: Geodetic::new(47.3769, 8.5417, 408.0),
        environment: EnvironmentSpec { temperature_c: 18.0, wind_mps: [2.0, 1.0], relative_humidity_pct: 60.0, ..EnvironmentSpec::default() },
        rates: RatesSpec { acoustic_hz: 16_000, seismic_hz: 500 },
        errors: ErrorSpec::default(),
        noise: NoiseSpec { urban_db: Some(50.0), wind_db: Some(48.0), seismic_mps: Some(2e-7), real_clips: 1 },
        nodes,
        sources: vec![explosion([150.0, 250.0, 0.0], 2.0, 100.0, "ground burst, 100 kg TNT")],
        distractors,
        terrain: TerrainSpec::default(),
        walls: Vec::new(),
    }
}

fn city_salvo(seed: u64) -> ScenarioSpec {
    let mut nodes = vec![
        NodeSim::new("n01", [0.0, 0.0, 25.0]),
        NodeSim::new("n02", [1400.0, 300.0, 12.0]),
        NodeSim::new("n03", [-1300.0, 700.0, 18.0]),
        NodeSim::new("n04", [300.0, 1600.0, 30.0]),
        NodeSim::new("n05", [-500.0, -1500.0, 9.0]),
        NodeSim::new("n06", [1700.0, -1200.0, 15.0]),
        NodeSim::new("n07", [-1800.0, -800.0, 6.0]),
        NodeSim::new("n08", [900.0, 900.0, 40.0]),
        NodeSim::new("n09", [-900.0, 1800.0, 4.0]),
        NodeSim::new("n10", [600.0, -700.0, 21.0]),
        NodeSim::new("n01h", [0.3, 0.0, 25.0]),
    ];
    nodes[10].sensor = SensorSpec::high_spl();
    nodes[6].dies_at_s = Some(19.0);
    nodes[8].clock_offset_sigma_s = Some(5e-3); // an NTP-disciplined node
    for (i, n) in nodes.iter_mut().enumerate() {
        // Coupling differs from site to site (soil, mounting): 1e-6..1e-5 (m/s)/Pa.
        n.geophone.coupling_mps_per_pa = [
            2e-6, 5e-6, 1e-6, 8e-6, 3e-6, 1e-5, 4e-6, 1.5e-6, 6e-6, 2.5e-6, 2e-6,
        ][i];
    }
    let sources = vec![
        explosion(
            [800.0, -600.0, 0.0],
            1.0,
            250.0,
            "missile impact, 250 kg TNT",
        ),
        explosion(
            [-1200.0, 900.0, 2500.0],
            3.2,
            30.0,
            "airburst intercept at 2.5 km, 30 kg TNT",
        ),
        SourceSpec::Launch {
            at: [2300.0, 1900.0, 0.0],
            time_s: 4.0,
            level_db_at_100m: 140.0,
            duration_s: 4.0,
            rise_s: 0.6,
            label: Some("air-defence missile launch".into()),
        },
        explosion(
            [-500.0, -1200.0, 0.0],
            6.5,
            100.0,
            "missile impact, 100 kg TNT",
        ),
        explosion(
            [400.0, 1500.0, 3600.0],
            9.1,
            50.0,
            "airburst intercept at 3.6 km, 50 kg TNT",
        ),
        explosion(
            [2000.0, -2200.0, 0.0],
            12.4,
            500.0,
            "missile impact, 500 kg TNT",
        ),
        explosion(
            [-1700.0, -300.0, 0.0],
            15.0,
            20.0,
            "drone impact, 20 kg TNT",
        ),
        explosion(
            [-300.0, -200.0, 1200.0],
            18.3,
            10.0,
            "drone intercept at 1.2 km, 10 kg TNT",
        ),
        explosion(
            [1300.0, 600.0, 0.0],
            21.0,
            250.0,
            "missile impact, 250 kg TNT",
        ),
        explosion([-900.0, 1300.0, 0.0], 24.0, 50.0, "drone impact, 50 kg TNT"),
    ];
    let distractors = random_distractors(seed, &nodes, 8, 30.0);
    ScenarioSpec {
        name: "city-salvo".into(),
        description: "Modelled on a night of strikes over a city: 9 explosions (ground impacts of 20-500 kg TNT and three airburst intercepts at 1.2-3.6 km altitude) and one launch within 24 s, heard by 11 rooftop nodes over ~3.5 km (n01h is a high-SPL sensor beside n01's MEMS microphone; n07 dies at 19 s; n09 keeps NTP time), with urban and wind noise and local distractors.".into(),
        start_utc: utc("2022-03-01T01:30:00Z"),
        duration_s: 36.0,
        origin: Geodetic::new(50.4501, 30.5234, 179.0),
        environment: EnvironmentSpec { temperature_c: 2.0, wind_mps: [3.0, -1.5], relative_humidity_pct: 80.0, ..EnvironmentSpec::default() },
        rates: RatesSpec { acoustic_hz: 16_000, seismic_hz: 500 },
        errors: ErrorSpec::default(),
        noise: NoiseSpec { urban_db: Some(52.0), wind_db: Some(55.0), seismic_mps: Some(3e-7), real_clips: 3 },
        nodes,
        sources,
        distractors,
        terrain: TerrainSpec::default(),
        walls: Vec::new(),
    }
}

fn gunshot(seed: u64) -> ScenarioSpec {
    let nodes: Vec<NodeSim> = [
        ("g1", [0.0, 0.0, 3.0]),
        ("g2", [450.0, 120.0, 2.0]),
        ("g3", [-380.0, 260.0, 4.0]),
        ("g4", [150.0, -420.0, 2.5]),
        ("g5", [-250.0, -350.0, 6.0]),
        ("g6", [300.0, 480.0, 3.5]),
        ("g7", [-520.0, -60.0, 2.0]),
    ]
    .into_iter()
    .map(|(id, at)| NodeSim::new(id, at))
    .collect();
    let rifle = |dir: [f64; 3]| {
        Some(BulletSpec {
            direction: dir,
            speed_mps: 900.0,
            calibre_m: 0.00556,
            length_m: 0.023,
            range_m: 600.0,
        })
    };
    let sources = vec![
        SourceSpec::Gunshot {
            at: [60.0, 80.0, 1.5],
            time_s: 0.8,
            peak_db_at_1m: 152.0,
            duration_ms: 0.4,
            bullet: None,
            label: Some("handgun, 9 mm".into()),
        },
        SourceSpec::Gunshot {
            at: [-120.0, 200.0, 1.5],
            time_s: 1.6,
            peak_db_at_1m: 160.0,
            duration_ms: 0.6,
            bullet: rifle([1.0, -0.3, 0.0]),
            label: Some("rifle, 5.56 mm, supersonic".into()),
        },
        SourceSpec::Gunshot {
            at: [-120.0, 200.0, 1.5],
            time_s: 1.9,
            peak_db_at_1m: 160.0,
            duration_ms: 0.6,
            bullet: rifle([1.0, -0.25, 0.0]),
            label: Some("rifle, 5.56 mm, supersonic".into()),
        },
        SourceSpec::Gunshot {
            at: [280.0, -160.0, 1.5],
            time_s: 3.0,
            peak_db_at_1m: 150.0,
            duration_ms: 0.35,
            bullet: None,
            label: Some("handgun, 9 mm".into()),
        },
        SourceSpec::Gunshot {
            at: [-200.0, -280.0, 1.5],
            time_s: 3.5,
            peak_db_at_1m: 160.0,
            duration_ms: 0.6,
            bullet: rifle([0.2, 1.0, 0.0]),
            label: Some("rifle, 5.56 mm, supersonic".into()),
        },
    ];
    let distractors = random_distractors(seed, &nodes, 3, 6.0);
    ScenarioSpec {
        name: "gunshot".into(),
        description: "Five shots (two 9 mm handgun, three supersonic 5.56 mm rifle with N-waves) within 3 s, heard by 7 nodes over ~1 km.".into(),
        start_utc: utc("2023-07-21T23:10:00Z"),
        duration_s: 7.5,
        origin: Geodetic::new(40.4406, -79.9959, 240.0),
        environment: EnvironmentSpec { temperature_c: 22.0, wind_mps: [-1.0, 0.5], relative_humidity_pct: 65.0, ..EnvironmentSpec::default() },
        rates: RatesSpec { acoustic_hz: 48_000, seismic_hz: 1000 },
        errors: ErrorSpec::default(),
        noise: NoiseSpec { urban_db: Some(55.0), wind_db: Some(45.0), seismic_mps: Some(2e-7), real_clips: 2 },
        nodes,
        sources,
        distractors,
        terrain: TerrainSpec::default(),
        walls: Vec::new(),
    }
}

/// A random array for tests: `n_nodes` nodes uniform in a disc of `radius_m`
/// (heights 1.5–10 m), `n_sources` sources of `kind` inside 0.8 × radius,
/// spaced in time so that no arrival overlaps the previous source's sound at
/// any node. Explosions alternate ground bursts (1–200 kg) and, every third,
/// an airburst at 0.5–2 × radius altitude; gunshots are muzzle blasts
/// (150–160 dB at 1 m); launches roar at 130–145 dB at 100 m. Any other
/// `kind` gives explosions. Light urban noise and MEMS sensors; 16 kHz
/// (48 kHz for gunshots) and 500 Hz seismic.
pub fn random_array(
    seed: u64,
    n_nodes: usize,
    radius_m: f64,
    n_sources: usize,
    kind: SourceKind,
) -> ScenarioSpec {
    let mut rng = rng_for(seed, "random-array", 0);
    let disc = |rng: &mut rand_chacha::ChaCha8Rng, r: f64| {
        let rho = r * rng.random::<f64>().sqrt();
        let th = uniform(rng, 0.0, std::f64::consts::TAU);
        [
            (rho * th.cos() * 10.0).round() / 10.0,
            (rho * th.sin() * 10.0).round() / 10.0,
        ]
    };
    let nodes: Vec<NodeSim> = (0..n_nodes.max(1))
        .map(|i| {
            let [e, n] = disc(&mut rng, radius_m);
            NodeSim::new(
                format!("r{:02}", i + 1),
                [e, n, (uniform(&mut rng, 1.5, 10.0) * 10.0).round() / 10.0],
            )
        })
        .collect();
    let env = EnvironmentSpec {
        temperature_c: (uniform(&mut rng, -5.0, 30.0) * 10.0).round() / 10.0,
        wind_mps: [
            (uniform(&mut rng, -4.0, 4.0) * 10.0).round() / 10.0,
            (uniform(&mut rng, -4.0, 4.0) * 10.0).round() / 10.0,
        ],
        ..EnvironmentSpec::default()
    };
    let max_alt = 2.0 * radius_m.max(50.0);
    let c_min = sound_speed(env.temperature_c) - 6.0;
    let max_travel = (2.0 * radius_m + max_alt) / c_min;
    let tail = match kind {
        SourceKind::Launch => 5.0,
        _ => 1.5,
    };
    let mut t = 0.5;
    let mut sources = Vec::new();
    for i in 0..n_sources {
        let [e, n] = disc(&mut rng, 0.8 * radius_m);
        let s = match kind {
            SourceKind::Gunshot => SourceSpec::Gunshot {
                at: [e, n, 1.5],
                time_s: t,
                peak_db_at_1m: (uniform(&mut rng, 150.0, 160.0) * 10.0).round() / 10.0,
                duration_ms: 0.5,
                bullet: None,
                label: None,
            },
            SourceKind::Launch => SourceSpec::Launch {
                at: [e, n, 0.0],
                time_s: t,
                level_db_at_100m: (uniform(&mut rng, 130.0, 145.0) * 10.0).round() / 10.0,
                duration_s: 3.0,
                rise_s: 0.5,
                label: None,
            },
            _ => {
                let kg = (10f64.powf(uniform(&mut rng, 0.0, 2.3)) * 10.0).round() / 10.0;
                if i % 3 == 2 {
                    let alt = (uniform(&mut rng, 0.5, 2.0) * radius_m.max(50.0)).round();
                    SourceSpec::Explosion {
                        at: [e, n, alt],
                        time_s: t,
                        yield_kg_tnt: kg,
                        burst: BurstSpec::Air,
                        label: None,
                    }
                } else {
                    SourceSpec::Explosion {
                        at: [e, n, 0.0],
                        time_s: t,
                        yield_kg_tnt: kg,
                        burst: BurstSpec::Ground,
                        label: None,
                    }
                }
            }
        };
        sources.push(s);
        t += max_travel + tail;
    }
    let acoustic_hz = if kind == SourceKind::Gunshot {
        48_000
    } else {
        16_000
    };
    ScenarioSpec {
        name: format!("random-{}-{seed}", kind.as_str()),
        description: format!("Random array: {n_nodes} nodes within {radius_m} m, {n_sources} {} sources, seed {seed}.", kind.as_str()),
        start_utc: utc("2024-01-01T00:00:00Z"),
        duration_s: t.max(1.0),
        origin: Geodetic::new(45.0, 10.0, 100.0),
        environment: env,
        rates: RatesSpec { acoustic_hz, seismic_hz: 500 },
        errors: ErrorSpec::default(),
        noise: NoiseSpec { urban_db: Some(45.0), wind_db: None, seismic_mps: Some(1e-7), real_clips: 0 },
        nodes,
        sources,
        distractors: Vec::new(),
        terrain: TerrainSpec::default(),
        walls: Vec::new(),
    }
}

/// Turn off every noise, self-noise and distractor, and write float samples:
/// the rendered streams are then exactly the sum of the arrivals (for tests
/// that check onsets sample by sample).
pub fn make_quiet(spec: &mut ScenarioSpec) {
    spec.noise = NoiseSpec::default();
    spec.distractors.clear();
    for n in &mut spec.nodes {
        n.sensor.self_noise_db = None;
        n.sensor.format = SampleFormat::F32;
        n.geophone.self_noise_mps = None;
        n.geophone.format = SampleFormat::F32;
    }
}
