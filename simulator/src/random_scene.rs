//! Randomised evaluation scenes (`blastnet simulate --preset random --seed
//! N`, issue #16): everything a deployment meets at once, drawn from the
//! seed, for the location evaluation over held-back seeds
//! (`blastnet eval --locate`).
//!
//! Per seed ([`random_scene`]):
//! - 6–14 nodes in a disc, along a bent line, or in 2–3 clusters, aperture
//!   (largest node distance) log-uniform 0.3–3 km; microphones 1.5–30 m
//!   (log-uniform) above a ground tilted up to 4 % in a random direction,
//!   the site 0–1500 m above the ellipsoid anywhere between 60° S and 60° N;
//! - per node a MEMS microphone that clips at 125 dB SPL (60 %, at least two)
//!   or a high-SPL sensor, and a geophone beside it (50 %, at least one);
//! - a reflecting wall 8–80 m from 35 % of the nodes, facing it (urban
//!   echoes 50–500 ms after the direct arrival);
//! - 3–8 sources: ground bursts and airbursts 50 m–5 km above the ground,
//!   yields log-uniform 0.1–500 kg TNT, and (arrays up to 1.5 km) bursts of
//!   2–4 muzzle blasts 0.3–0.8 s apart from one place; 45 % inside the
//!   array's convex hull, 40 % outside it out to 2× the aperture from the
//!   centroid, 15 % at 2–3× (gunshots stay within 2×);
//! - the true weather (−10..35 °C, wind up to 8 m/s) renders the scene; the
//!   manifest states a reading off it by uniform ±5 °C and ±3 m/s per wind
//!   component ([`EnvironmentSpec::reported`]);
//! - sources spaced so that each one's arrivals start 50–100 % of the
//!   previous one's arrival span (plus 0.3–1 s) after the previous one's
//!   start (arrivals of neighbours interleave across the array), as many as
//!   fit in 40 s of recording (at least three).
//!
//! Each aspect draws from its own random stream (`rng_for(seed, tag, ..)`), so
//! changing how sources are drawn leaves the array of a seed unchanged.

use blastnet_contract::physics::sound_speed;
use blastnet_contract::{Environment, Geodetic, UtcNs};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::array::ArrayShape;
use crate::noise::{rng_for, uniform};
use crate::spec::{
    BurstSpec, EnvironmentSpec, ErrorSpec, NodeSim, NoiseSpec, RatesSpec, ScenarioSpec, SensorSpec,
    SourceSpec, TerrainSpec, WallSpec,
};

/// Recording length the sources are fitted into, s.
const MAX_DURATION_S: f64 = 40.0;
/// Arrays up to this aperture may have gunshot bursts (a muzzle blast is
/// heard a few km at most).
const GUNSHOT_MAX_APERTURE_M: f64 = 1500.0;
/// Time after a source's last direct arrival that still belongs to it
/// (ground reflection, wall echoes up to 2 × 80 m / c, the blast's coda), s.
const TAIL_S: f64 = 0.6;

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (uniform(rng, lo.ln(), hi.ln())).exp()
}

/// `x` to a multiple of `step` (a power of ten), written without binary
/// noise where possible (0.1 steps give 9.2, not 9.200000000000001).
fn round_to(x: f64, step: f64) -> f64 {
    if step < 1.0 {
        let k = (1.0 / step).round();
        (x * k).round() / k
    } else {
        (x / step).round() * step
    }
}

/// Three significant digits (yields).
fn sig3(x: f64) -> f64 {
    let step = 10f64.powf(x.log10().floor() - 2.0);
    round_to(x, step)
}

/// How the nodes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Disc,
    Line,
    Clusters,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Disc => "disc",
            Layout::Line => "line",
            Layout::Clusters => "clusters",
        }
    }
}

/// Node positions [east, north] with the given layout and nominal aperture,
/// no two closer than 4 % of it, centred on their mean.
fn node_positions(rng: &mut ChaCha8Rng, n: usize, layout: Layout, aperture: f64) -> Vec<[f64; 2]> {
    let r = 0.5 * aperture;
    let disc = |rng: &mut ChaCha8Rng, radius: f64| {
        let rho = radius * rng.random::<f64>().sqrt();
        let th = uniform(rng, 0.0, std::f64::consts::TAU);
        [rho * th.cos(), rho * th.sin()]
    };
    let axis = uniform(rng, 0.0, std::f64::consts::PI);
    let bend = uniform(rng, -0.3, 0.3);
    let centres: Vec<[f64; 2]> = (0..rng.random_range(2..=3usize))
        .map(|_| disc(rng, r))
        .collect();
    let min_gap = 0.04 * aperture;
    let mut pts: Vec<[f64; 2]> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut p = [0.0, 0.0];
        for _ in 0..200 {
            p = match layout {
                Layout::Disc => disc(rng, r),
                Layout::Line => {
                    let along = uniform(rng, -r, r);
                    let across =
                        0.08 * aperture * crate::noise::normal(rng) + bend * along * along / r;
                    [
                        along * axis.cos() - across * axis.sin(),
                        along * axis.sin() + across * axis.cos(),
                    ]
                }
                Layout::Clusters => {
                    let c = centres[rng.random_range(0..centres.len())];
                    let d = 0.08 * aperture;
                    [
                        c[0] + d * crate::noise::normal(rng),
                        c[1] + d * crate::noise::normal(rng),
                    ]
                }
            };
            if pts
                .iter()
                .all(|q| (q[0] - p[0]).hypot(q[1] - p[1]) >= min_gap)
            {
                break;
            }
        }
        pts.push(p);
    }
    let k = pts.len().max(1) as f64;
    let mean = [
        pts.iter().map(|p| p[0]).sum::<f64>() / k,
        pts.iter().map(|p| p[1]).sum::<f64>() / k,
    ];
    pts.iter()
        .map(|p| [round_to(p[0] - mean[0], 0.1), round_to(p[1] - mean[1], 0.1)])
        .collect()
}

/// Where a source is drawn relative to the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    Inside,
    Near,
    Far,
}

/// A horizontal source position in `region` of `shape`.
fn source_position(rng: &mut ChaCha8Rng, shape: &ArrayShape, region: Region) -> [f64; 2] {
    let a = shape.aperture_m;
    let c = shape.centroid;
    let ring = |rng: &mut ChaCha8Rng, lo: f64, hi: f64| {
        let rho = uniform(rng, lo, hi);
        let th = uniform(rng, 0.0, std::f64::consts::TAU);
        [c[0] + rho * th.cos(), c[1] + rho * th.sin()]
    };
    match region {
        Region::Inside => {
            let (lo, hi) = shape.hull.iter().fold(
                ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]),
                |(lo, hi), p| {
                    (
                        [lo[0].min(p[0]), lo[1].min(p[1])],
                        [hi[0].max(p[0]), hi[1].max(p[1])],
                    )
                },
            );
            for _ in 0..1000 {
                let p = [uniform(rng, lo[0], hi[0]), uniform(rng, lo[1], hi[1])];
                if shape.contains(p) {
                    return p;
                }
            }
            // A hull too thin to hit: a point between two of its corners.
            let h = &shape.hull;
            let (i, j) = (rng.random_range(0..h.len()), rng.random_range(0..h.len()));
            let f = rng.random::<f64>();
            [
                h[i][0] + f * (h[j][0] - h[i][0]),
                h[i][1] + f * (h[j][1] - h[i][1]),
            ]
        }
        Region::Near => {
            let mut p = ring(rng, 0.3 * a, 2.0 * a);
            for _ in 0..1000 {
                if !shape.contains(p) {
                    break;
                }
                p = ring(rng, 0.3 * a, 2.0 * a);
            }
            p
        }
        Region::Far => ring(rng, 2.0 * a, 3.0 * a),
    }
}

/// The weather of a scene: the truth, and the reading the manifest states.
fn weather(seed: u64) -> EnvironmentSpec {
    let mut rng = rng_for(seed, "scene-weather", 0);
    let temperature_c = round_to(uniform(&mut rng, -10.0, 35.0), 0.1);
    let speed = uniform(&mut rng, 0.0, 8.0);
    let dir = uniform(&mut rng, 0.0, std::f64::consts::TAU);
    let wind_mps = [
        round_to(speed * dir.sin(), 0.1),
        round_to(speed * dir.cos(), 0.1),
    ];
    let reported = Environment {
        temperature_c: round_to(temperature_c + uniform(&mut rng, -5.0, 5.0), 0.1),
        wind_mps: [
            round_to(wind_mps[0] + uniform(&mut rng, -3.0, 3.0), 0.1),
            round_to(wind_mps[1] + uniform(&mut rng, -3.0, 3.0), 0.1),
        ],
        // Humidity is not reported: the nodes assume their configured air.
        relative_humidity_pct: None,
    };
    EnvironmentSpec {
        temperature_c,
        wind_mps,
        relative_humidity_pct: round_to(uniform(&mut rng, 30.0, 95.0), 1.0),
        reported: Some(reported),
        ..EnvironmentSpec::default()
    }
}

/// A randomised evaluation scene, deterministic from `seed` (see the module
/// documentation for what is drawn). Render it with the same seed:
/// `write_scenario(&random_scene(seed), seed, ..)`, as `blastnet simulate
/// --preset random --seed N` and `blastnet eval --locate` do.
pub fn random_scene(seed: u64) -> ScenarioSpec {
    // The array.
    let mut g = rng_for(seed, "scene-array", 0);
    let n_nodes = g.random_range(6..=14usize);
    let aperture = log_uniform(&mut g, 300.0, 3000.0);
    let layout = match g.random::<f64>() {
        x if x < 0.4 => Layout::Disc,
        x if x < 0.65 => Layout::Line,
        _ => Layout::Clusters,
    };
    let pts = node_positions(&mut g, n_nodes, layout, aperture);
    let slope_mag = uniform(&mut g, 0.0, 0.04);
    let slope_dir = uniform(&mut g, 0.0, std::f64::consts::TAU);
    let terrain = TerrainSpec {
        slope: [
            round_to(slope_mag * slope_dir.sin(), 1e-4),
            round_to(slope_mag * slope_dir.cos(), 1e-4),
        ],
    };
    let mut nodes: Vec<NodeSim> = pts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let h = round_to(log_uniform(&mut g, 1.5, 30.0), 0.1);
            let mut n = NodeSim::new(format!("n{:02}", i + 1), [p[0], p[1], h]);
            n.sensor = if g.random::<f64>() < 0.6 {
                SensorSpec::mems()
            } else {
                SensorSpec::high_spl()
            };
            n.seismic = g.random::<f64>() < 0.5;
            n.geophone.coupling_mps_per_pa = sig3(log_uniform(&mut g, 1e-6, 1e-5));
            n
        })
        .collect();
    let walled = nodes
        .iter()
        .filter(|n| n.sensor == SensorSpec::mems())
        .count();
    for n in nodes.iter_mut().take(2usize.saturating_sub(walled)) {
        n.sensor = SensorSpec::mems();
    }
    if !nodes.iter().any(|n| n.seismic) {
        nodes[0].seismic = true;
    }
    let mut w = rng_for(seed, "scene-walls", 0);
    let walls: Vec<WallSpec> = pts
        .iter()
        .filter_map(|p| {
            if w.random::<f64>() >= 0.35 {
                return None;
            }
            let d = uniform(&mut w, 8.0, 80.0);
            let az = uniform(&mut w, 0.0, 360.0);
            let (s, c) = az.to_radians().sin_cos();
            Some(WallSpec {
                at: [round_to(p[0] + d * s, 0.1), round_to(p[1] + d * c, 0.1)],
                facing_deg: round_to((az + 180.0) % 360.0, 0.1),
                length_m: round_to(uniform(&mut w, 20.0, 100.0), 1.0),
                height_m: round_to(uniform(&mut w, 8.0, 40.0), 1.0),
                reflection: round_to(uniform(&mut w, 0.5, 0.9), 0.01),
            })
        })
        .collect();
    let environment = weather(seed);
    let shape = ArrayShape::new(&pts).unwrap_or(ArrayShape {
        hull: Vec::new(),
        centroid: [0.0, 0.0],
        aperture_m: aperture,
    });

    // The sources, placed one after another in time.
    let mut s = rng_for(seed, "scene-sources", 0);
    let target = s.random_range(3..=8usize);
    let gunshots_allowed = shape.aperture_m <= GUNSHOT_MAX_APERTURE_M;
    let wind = environment.wind_mps[0].hypot(environment.wind_mps[1]);
    let c = sound_speed(environment.temperature_c);
    let node_pos: Vec<_> = nodes.iter().map(|n| terrain.place(n.at)).collect();
    let mut sources = Vec::new();
    let mut first_arrival = 0.6;
    let mut end: f64 = 0.0;
    for k in 0..target {
        let gunshot = gunshots_allowed && s.random::<f64>() < 0.3;
        let airburst = !gunshot && s.random::<f64>() < 0.35;
        let region = match s.random::<f64>() {
            x if x < 0.45 => Region::Inside,
            x if x < 0.85 || gunshot => Region::Near,
            _ => Region::Far,
        };
        let [e, n] = source_position(&mut s, &shape, region);
        let (e, n) = (round_to(e, 0.1), round_to(n, 0.1));
        let (up, rounds, spacing) = if gunshot {
            (1.5, s.random_range(2..=4usize), uniform(&mut s, 0.3, 0.8))
        } else if airburst {
            (round_to(log_uniform(&mut s, 50.0, 5000.0), 1.0), 1, 0.0)
        } else {
            (0.0, 1, 0.0)
        };
        let pos = terrain.place([e, n, up]);
        let (t_min, t_max) = node_pos
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
                let d = pos.distance(*r);
                (lo.min(d / (c + wind)), hi.max(d / (c - wind)))
            });
        let span = t_max - t_min + TAIL_S + spacing * (rounds - 1) as f64;
        if k >= 3 && first_arrival + span > MAX_DURATION_S - 1.0 {
            break;
        }
        let t0 = round_to(first_arrival - t_min, 0.001);
        if gunshot {
            let peak = round_to(uniform(&mut s, 150.0, 165.0), 0.1);
            let duration_ms = round_to(uniform(&mut s, 0.3, 0.8), 0.01);
            for r in 0..rounds {
                sources.push(SourceSpec::Gunshot {
                    at: [e, n, up],
                    time_s: round_to(t0 + spacing * r as f64, 0.001),
                    peak_db_at_1m: peak,
                    duration_ms,
                    bullet: None,
                    label: Some(format!("gunshot burst, round {} of {rounds}", r + 1)),
                });
            }
        } else {
            let yield_kg_tnt = sig3(log_uniform(&mut s, 0.1, 500.0));
            let burst = if up > 0.0 {
                BurstSpec::Air
            } else {
                BurstSpec::Ground
            };
            sources.push(SourceSpec::Explosion {
                at: [e, n, up],
                time_s: t0,
                yield_kg_tnt,
                burst,
                label: None,
            });
        }
        end = end.max(first_arrival + span);
        first_arrival += uniform(&mut s, 0.5, 1.0) * span + uniform(&mut s, 0.3, 1.0);
    }
    let gunshots = sources
        .iter()
        .any(|x| matches!(x, SourceSpec::Gunshot { .. }));

    let mut o = rng_for(seed, "scene-site", 0);
    let origin = Geodetic::new(
        round_to(uniform(&mut o, -60.0, 60.0), 1e-4),
        round_to(uniform(&mut o, -170.0, 170.0), 1e-4),
        round_to(uniform(&mut o, 0.0, 1500.0), 1.0),
    );
    let noise = NoiseSpec {
        urban_db: Some(round_to(uniform(&mut o, 40.0, 58.0), 0.1)),
        wind_db: (o.random::<f64>() < 0.5).then(|| round_to(uniform(&mut o, 40.0, 55.0), 0.1)),
        seismic_mps: Some(sig3(uniform(&mut o, 1e-7, 4e-7))),
        real_clips: 0,
    };
    let reported = environment.reported.unwrap_or(Environment {
        temperature_c: environment.temperature_c,
        wind_mps: environment.wind_mps,
        relative_humidity_pct: None,
    });
    ScenarioSpec {
        name: format!("random-scene-{seed}"),
        description: format!(
            "Random evaluation scene {seed}: {n_nodes} nodes ({}, aperture {:.0} m), ground slope {:.1} %, {} walls, {} sources; the manifest's weather is off the truth by {:+.1} °C and [{:+.1}, {:+.1}] m/s.",
            layout.name(),
            shape.aperture_m,
            100.0 * terrain.slope[0].hypot(terrain.slope[1]),
            walls.len(),
            sources.len(),
            reported.temperature_c - environment.temperature_c,
            reported.wind_mps[0] - environment.wind_mps[0],
            reported.wind_mps[1] - environment.wind_mps[1],
        ),
        start_utc: UtcNs::parse("2024-06-01T00:00:00Z").unwrap_or(UtcNs::EPOCH),
        duration_s: round_to(end + 1.0, 0.1),
        origin,
        environment,
        rates: RatesSpec {
            acoustic_hz: if gunshots { 48_000 } else { 16_000 },
            seismic_hz: 500,
        },
        errors: ErrorSpec::default(),
        noise,
        nodes,
        sources,
        distractors: Vec::new(),
        terrain,
        walls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_scene_and_every_scene_is_valid() {
        for seed in 0..40 {
            let a = random_scene(seed);
            assert_eq!(a, random_scene(seed));
            a.validate("random").expect("valid");
            // Its scenario.toml (terrain, walls, reported weather) re-creates it.
            let back = ScenarioSpec::from_toml(&a.to_toml(), std::path::Path::new("scenario.toml"))
                .expect("parses");
            assert_eq!(back, a);
            assert!((6..=14).contains(&a.nodes.len()));
            assert!(
                a.duration_s <= MAX_DURATION_S + 15.0,
                "{seed}: {}",
                a.duration_s
            );
        }
        assert_ne!(random_scene(1), random_scene(2));
    }

    #[test]
    fn the_reported_weather_is_off_the_truth_within_5_degrees_and_3_mps() {
        let mut off = 0;
        for seed in 0..200 {
            let env = random_scene(seed).environment;
            let r = env.reported.expect("a reported weather");
            let dt = r.temperature_c - env.temperature_c;
            let dw = [
                r.wind_mps[0] - env.wind_mps[0],
                r.wind_mps[1] - env.wind_mps[1],
            ];
            // Rounding to 0.1 may add 0.1 to the drawn offset.
            assert!(
                dt.abs() <= 5.1 && dw.iter().all(|d| d.abs() <= 3.1),
                "{seed}: {r:?} vs {env:?}"
            );
            off += usize::from(dt.abs() > 1.0 || dw[0].abs() > 0.5);
        }
        assert!(off > 150, "the offsets should usually matter: {off} of 200");
    }

    #[test]
    fn over_many_seeds_sources_lie_inside_outside_and_beyond_twice_the_aperture() {
        let (mut inside, mut near, mut far, mut air, mut gun, mut walled) = (0, 0, 0, 0, 0, 0);
        for seed in 0..100 {
            let spec = random_scene(seed);
            let pts: Vec<[f64; 2]> = spec.nodes.iter().map(|n| [n.at[0], n.at[1]]).collect();
            let shape = ArrayShape::new(&pts).expect("nodes");
            for src in &spec.sources {
                let a = src.at();
                let d = shape.from_centroid([a[0], a[1]]);
                if shape.contains([a[0], a[1]]) {
                    inside += 1;
                } else if d <= 2.0 * shape.aperture_m {
                    near += 1;
                } else {
                    far += 1;
                    assert!(d <= 3.0 * shape.aperture_m + 1.0);
                }
                match src {
                    SourceSpec::Explosion {
                        burst: BurstSpec::Air,
                        at,
                        ..
                    } => {
                        air += 1;
                        assert!((50.0..=5000.0).contains(&at[2]));
                    }
                    SourceSpec::Explosion { yield_kg_tnt, .. } => {
                        assert!((0.0999..=500.1).contains(yield_kg_tnt));
                    }
                    SourceSpec::Gunshot { .. } => gun += 1,
                    SourceSpec::Launch { .. } => unreachable!("no launches are drawn"),
                }
            }
            assert!(
                spec.nodes
                    .iter()
                    .filter(|n| n.sensor == SensorSpec::mems())
                    .count()
                    >= 2
            );
            assert!(spec.nodes.iter().any(|n| n.seismic));
            walled += usize::from(!spec.walls.is_empty());
            let heights: Vec<f64> = spec
                .nodes
                .iter()
                .map(|n| spec.terrain.place(n.at).u)
                .collect();
            assert!(heights.iter().any(|h| (h - heights[0]).abs() > 0.5));
        }
        assert!(
            inside > 100 && near > 100 && far > 20,
            "{inside} {near} {far}"
        );
        assert!(air > 50 && gun > 50, "{air} {gun}");
        assert!(walled > 50, "scenes with walls: {walled}");
    }
}
