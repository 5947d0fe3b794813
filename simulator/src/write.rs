//! `write_scenario`: plan every arrival, render every stream, write WAV files
//! and the SPEC manifest. Planning and rendering are pure; only this
//! module's last steps touch the file system.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blastnet_contract::blast::{self, Burst};
use blastnet_contract::manifest::MANIFEST_FORMAT;
use blastnet_contract::physics::sound_speed;
use blastnet_contract::{
    Enu, EnuFrame, Environment, Manifest, NodeSpec, SourceKind, StreamKind, StreamSpec,
    TruthSource, UtcNs, NS_PER_S,
};
use rand::Rng;

use crate::absorption::{Air, FirCache};
use crate::clips::{list_clips, read_clip, resample, ClipRef};
use crate::error::SimError;
use crate::noise::{self, normal, rng_for, uniform};
use crate::propagation::{bullet_shock, paths, Reflectors};
use crate::render::{render, Emission, TimeBase, Wave};
use crate::spec::{BurstSpec, DistractorKind, NodeSim, SampleFormat, ScenarioSpec, SourceSpec};

/// How to write a scenario.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOptions {
    /// No GPS position error and no clock offset or drift: the manifest is exact.
    pub ideal: bool,
    /// A folder of real clips (e.g. `$BLASTNET_DATA/sounds-dev`) to mix in
    /// as `noise.real_clips` single-node distractors.
    pub distractor_dir: Option<PathBuf>,
}

/// Friedlander decay constant b used for every blast wave. The waves heard
/// by a network are weak (Ps ≪ 1 atm), where fitted b values approach ~1
/// (W. E. Baker, *Explosions in Air*, 1973, §6; Dewey 2010).
pub const FRIEDLANDER_B: f64 = 1.0;

/// Seismic direct P wave of a surface burst: peak particle velocity from the
/// USBM scaled-distance law PPV = K (R/√W)^(−β), K = 1.14 m/s, β = 1.6
/// (Siskind et al., USBM RI 8507, 1980, for confined blasts; metric form),
/// times this coupling of a surface charge to the ground (an assumption:
/// a surface burst couples a few per cent of a confined shot's energy).
pub const SURFACE_SEISMIC_COUPLING: f64 = 0.05;

/// Reference pressure for dB SPL, Pa.
const P_REF: f64 = 20e-6;

fn db_to_pa(db: f64) -> f64 {
    P_REF * 10f64.powf(db / 20.0)
}

/// The true state of one node (what the manifest would say in ideal mode).
#[derive(Debug, Clone, Copy)]
struct NodeTruth {
    pos: Enu,
    /// True time of the first sample, s after start (a whole number of ns).
    t0: f64,
    t0_ns: i64,
    /// Clock reading minus true time at the first sample, ns.
    offset_ns: i64,
    /// Clock rate error (fraction).
    drift: f64,
    /// True end of recording, s after start.
    end: f64,
    /// Reported position error, ENU m.
    gps_err: Enu,
}

struct Clip {
    node: usize,
    time_s: f64,
    rms_pa: f64,
    data: Vec<f64>,
    rate: u32,
    kind: SourceKind,
    label: String,
}

/// Everything fixed before rendering.
struct Plan<'a> {
    spec: &'a ScenarioSpec,
    seed: u64,
    frame: EnuFrame,
    c: f64,
    air: Air,
    nodes: Vec<NodeTruth>,
    clips: Vec<Clip>,
    /// Source times rounded to whole nanoseconds (truth and rendering agree).
    source_times: Vec<f64>,
}

fn ns_round(s: f64) -> i64 {
    (s * NS_PER_S as f64).round() as i64
}

fn plan<'a>(spec: &'a ScenarioSpec, seed: u64, opts: &WriteOptions) -> Result<Plan<'a>, SimError> {
    spec.validate(&spec.name)?;
    let frame = EnuFrame::new(spec.origin);
    let env = &spec.environment;
    let c = sound_speed(env.temperature_c);
    let air = Air {
        temperature_c: env.temperature_c,
        relative_humidity_pct: env.relative_humidity_pct,
        pressure_pa: env.pressure_pa,
    };
    let e = &spec.errors;
    let nodes = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            // Draw every error even in ideal mode, so that --ideal changes
            // nothing but the errors themselves.
            let mut rng = rng_for(seed, "node-errors", i as u64);
            let t0_ns = (uniform(&mut rng, 0.0, e.start_jitter_s) * NS_PER_S as f64) as i64;
            let sigma = n.clock_offset_sigma_s.unwrap_or(e.clock_offset_sigma_s);
            let offset = sigma * normal(&mut rng);
            let drift = e.clock_drift_sigma_ppm * 1e-6 * normal(&mut rng);
            let gps = Enu::new(
                e.gps_sigma_h_m * normal(&mut rng),
                e.gps_sigma_h_m * normal(&mut rng),
                e.gps_sigma_v_m * normal(&mut rng),
            );
            let (offset, drift, gps) = if opts.ideal {
                (0.0, 0.0, Enu::default())
            } else {
                (offset, drift, gps)
            };
            NodeTruth {
                pos: spec.terrain.place(n.at),
                t0: t0_ns as f64 / NS_PER_S as f64,
                t0_ns,
                offset_ns: ns_round(offset),
                drift,
                end: n
                    .dies_at_s
                    .map_or(spec.duration_s, |d| d.min(spec.duration_s)),
                gps_err: gps,
            }
        })
        .collect();
    let mut clips = Vec::new();
    if let (Some(dir), true) = (&opts.distractor_dir, spec.noise.real_clips > 0) {
        let refs = list_clips(dir)?;
        for k in 0..spec.noise.real_clips {
            let mut rng = rng_for(seed, "clip", k as u64);
            let ClipRef { path, kind } = refs[rng.random_range(0..refs.len())].clone();
            let (mono, rate) = read_clip(&path)?;
            let seg = (4.0 * rate as f64) as usize;
            let start = if mono.len() > seg {
                rng.random_range(0..mono.len() - seg)
            } else {
                0
            };
            let data: Vec<f64> = mono[start..(start + seg).min(mono.len())].to_vec();
            let rms = (data.iter().map(|v| v * v).sum::<f64>() / data.len().max(1) as f64).sqrt();
            if rms <= 0.0 {
                continue;
            }
            let data = data.iter().map(|v| v / rms).collect();
            let node = rng.random_range(0..spec.nodes.len());
            let time_s = uniform(&mut rng, 0.2, (spec.duration_s - 4.0).max(0.3));
            let name = path
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
            clips.push(Clip {
                node,
                time_s,
                rms_pa: db_to_pa(uniform(&mut rng, 60.0, 78.0)),
                data,
                rate,
                kind,
                label: format!("real clip {name} near {}", spec.nodes[node].id),
            });
        }
    }
    let source_times = spec
        .sources
        .iter()
        .map(|s| ns_round(s.time_s()) as f64 / NS_PER_S as f64)
        .collect();
    Ok(Plan {
        spec,
        seed,
        frame,
        c,
        air,
        nodes,
        clips,
        source_times,
    })
}

/// Caches of sampled shapes shared by all nodes at one rate (a launch's roar
/// is the same sound everywhere).
#[derive(Default)]
struct ShapeCache {
    map: HashMap<(String, u64, u32), Arc<Vec<f64>>>,
}

impl ShapeCache {
    fn get(
        &mut self,
        tag: &str,
        idx: u64,
        rate: u32,
        make: impl FnOnce() -> Vec<f64>,
    ) -> Arc<Vec<f64>> {
        self.map
            .entry((tag.to_string(), idx, rate))
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }
}

/// Whitham's (1952) N-wave of a supersonic projectile at miss distance b:
/// peak Δp = 0.53 p0 (M²−1)^(1/8) d / (b^(3/4) l^(1/4)),
/// duration T = 1.82 M b^(1/4) d / (c (M²−1)^(3/8) l^(1/4))
/// (as used by R. C. Maher, "Acoustical characterization of gunshots", IEEE SAFE 2007).
pub fn whitham_n_wave(
    p0: f64,
    c: f64,
    speed: f64,
    calibre: f64,
    length: f64,
    miss: f64,
) -> (f64, f64) {
    let m = speed / c;
    let m21 = m * m - 1.0;
    let peak = 0.53 * p0 * m21.powf(0.125) * calibre / (miss.powf(0.75) * length.powf(0.25));
    let dur = 1.82 * m * miss.powf(0.25) * calibre / (c * m21.powf(0.375) * length.powf(0.25));
    (peak, dur)
}

/// The acoustic arrivals at node `ni`, sampled at `rate` (pressure, Pa).
fn acoustic_emissions(
    p: &Plan,
    ni: usize,
    rate: u32,
    firs: &mut FirCache,
    shapes: &mut ShapeCache,
) -> Vec<Emission> {
    let spec = p.spec;
    let env = &spec.environment;
    let rcv = p.nodes[ni].pos;
    let fs = rate as f64;
    let mut out = Vec::new();
    for (j, s) in spec.sources.iter().enumerate() {
        let t = p.source_times[j];
        let a = s.at();
        let src = spec.terrain.place(a);
        let reflectors = Reflectors {
            terrain: &spec.terrain,
            ground: env.ground_reflection,
            walls: &spec.walls,
        };
        let all = paths(&p.frame, p.c, env.wind_mps, src, rcv, &reflectors);
        match s {
            SourceSpec::Explosion {
                yield_kg_tnt,
                burst,
                ..
            } => {
                let law = match burst {
                    BurstSpec::Ground => Burst::Surface,
                    BurstSpec::Air => Burst::FreeAir,
                };
                for path in all {
                    let r = path.length_m.max(0.1);
                    out.push(Emission {
                        arrival_s: t + path.travel_s,
                        gain: path.reflection * blast::peak_overpressure_pa(law, r, *yield_kg_tnt),
                        wave: Wave::Friedlander {
                            td: blast::positive_duration_s(law, r, *yield_kg_tnt),
                            b: FRIEDLANDER_B,
                        },
                        fir: Some(firs.get(p.air, r, rate)),
                    });
                }
            }
            SourceSpec::Gunshot {
                peak_db_at_1m,
                duration_ms,
                bullet,
                ..
            } => {
                for path in &all {
                    let r = path.length_m.max(1.0);
                    out.push(Emission {
                        arrival_s: t + path.travel_s,
                        gain: path.reflection * db_to_pa(*peak_db_at_1m) / r,
                        wave: Wave::Friedlander {
                            td: duration_ms * 1e-3,
                            b: FRIEDLANDER_B,
                        },
                        fir: Some(firs.get(p.air, r, rate)),
                    });
                }
                if let Some(b) = bullet {
                    if let Some(sh) =
                        bullet_shock(p.c, src, b.direction, b.speed_mps, b.range_m, rcv)
                    {
                        let (peak, dur) = whitham_n_wave(
                            env.pressure_pa,
                            p.c,
                            b.speed_mps,
                            b.calibre_m,
                            b.length_m,
                            sh.miss_m.max(0.5),
                        );
                        out.push(Emission {
                            arrival_s: t + sh.after_shot_s,
                            gain: peak,
                            wave: Wave::Nwave { duration: dur },
                            fir: Some(firs.get(p.air, sh.ray_m, rate)),
                        });
                    }
                }
            }
            SourceSpec::Launch {
                level_db_at_100m,
                duration_s,
                rise_s,
                ..
            } => {
                let seed = p.seed;
                let data = shapes.get("roar", j as u64, rate, || {
                    noise::roar(
                        &mut rng_for(seed, "roar", j as u64),
                        fs,
                        *duration_s,
                        *rise_s,
                    )
                });
                for path in &all {
                    let r = path.length_m.max(1.0);
                    out.push(Emission {
                        arrival_s: t + path.travel_s,
                        gain: path.reflection * db_to_pa(*level_db_at_100m) * 100.0 / r,
                        wave: Wave::Sampled {
                            rate: fs,
                            data: data.clone(),
                        },
                        fir: Some(firs.get(p.air, r, rate)),
                    });
                }
            }
        }
    }
    let id = &spec.nodes[ni].id;
    for (k, d) in spec
        .distractors
        .iter()
        .enumerate()
        .filter(|(_, d)| &d.node == id)
    {
        let src = Enu::new(rcv.e + d.distance_m, rcv.n, rcv.u);
        let arrival =
            d.time_s + paths(&p.frame, p.c, env.wind_mps, src, rcv, &Reflectors::NONE)[0].travel_s;
        let seed = p.seed;
        let mut rng = rng_for(seed, "distractor", k as u64);
        let peak = db_to_pa(d.level_db);
        match d.kind {
            DistractorKind::Hammering => {
                let knocks = rng.random_range(4..9);
                let mut at = arrival;
                for m in 0..knocks {
                    let data = shapes.get("knock", (k * 100 + m) as u64, rate, || {
                        noise::knock(&mut rng_for(seed, "knock", (k * 100 + m) as u64), fs)
                    });
                    out.push(Emission {
                        arrival_s: at,
                        gain: peak * uniform(&mut rng, 0.7, 1.0),
                        wave: Wave::Sampled { rate: fs, data },
                        fir: None,
                    });
                    at += uniform(&mut rng, 0.38, 0.62);
                }
            }
            kind => {
                let data = shapes.get("distractor", k as u64, rate, || {
                    let mut r = rng_for(seed, "distractor-shape", k as u64);
                    match kind {
                        DistractorKind::DoorSlam => noise::door_slam(&mut r, fs),
                        DistractorKind::Clap => noise::clap(&mut r, fs),
                        _ => noise::traffic(&mut r, fs),
                    }
                });
                out.push(Emission {
                    arrival_s: arrival,
                    gain: peak,
                    wave: Wave::Sampled { rate: fs, data },
                    fir: None,
                });
            }
        }
    }
    for (k, clip) in p.clips.iter().enumerate().filter(|(_, c)| c.node == ni) {
        let data = shapes.get("clip", k as u64, rate, || {
            resample(&clip.data, clip.rate, rate)
        });
        out.push(Emission {
            arrival_s: clip.time_s,
            gain: clip.rms_pa,
            wave: Wave::Sampled { rate: fs, data },
            fir: None,
        });
    }
    out
}

/// The seismic arrivals at node `ni` (ground velocity, m/s): air-coupled
/// motion (coupling × pressure) and the direct P wave of ground bursts.
fn seismic_emissions(
    p: &Plan,
    ni: usize,
    rate: u32,
    firs: &mut FirCache,
    shapes: &mut ShapeCache,
) -> Vec<Emission> {
    let node = &p.spec.nodes[ni];
    let k = node.geophone.coupling_mps_per_pa;
    let mut out: Vec<Emission> = acoustic_emissions(p, ni, rate, firs, shapes)
        .into_iter()
        .map(|mut e| {
            e.gain *= k;
            e
        })
        .collect();
    let rcv = p.nodes[ni].pos;
    for (j, s) in p.spec.sources.iter().enumerate() {
        if let SourceSpec::Explosion {
            at,
            yield_kg_tnt,
            burst: BurstSpec::Ground,
            ..
        } = s
        {
            // The geophone sits on the ground below the microphone.
            let terrain = &p.spec.terrain;
            let r = terrain
                .place(*at)
                .distance(terrain.place([rcv.e, rcv.n, 0.0]))
                .max(1.0);
            let sd = r / yield_kg_tnt.sqrt();
            out.push(Emission {
                arrival_s: p.source_times[j] + r / p.spec.environment.p_wave_mps,
                gain: SURFACE_SEISMIC_COUPLING * 1.14 * sd.powf(-1.6),
                wave: Wave::DampedSine {
                    freq: 15.0,
                    decay: 0.08,
                    phase: std::f64::consts::FRAC_PI_4,
                },
                fir: None,
            });
        }
    }
    out
}

fn sample_count(n: &NodeTruth, rate: u32) -> usize {
    (((n.end - n.t0) * rate as f64 * (1.0 + n.drift)).floor()).max(0.0) as usize
}

fn render_acoustic(p: &Plan, ni: usize, firs: &mut FirCache, shapes: &mut ShapeCache) -> Vec<f64> {
    let node = &p.spec.nodes[ni];
    let nt = &p.nodes[ni];
    let rate = p.spec.rates.acoustic_hz;
    let fs = rate as f64;
    let tb = TimeBase {
        t0: nt.t0,
        rate: fs * (1.0 + nt.drift),
        n: sample_count(nt, rate),
    };
    let mut buf = vec![0.0; tb.n];
    let nz = &p.spec.noise;
    if let Some(db) = nz.urban_db {
        add(
            &mut buf,
            &noise::pink(&mut rng_for(p.seed, "urban", ni as u64), tb.n, db_to_pa(db)),
        );
    }
    if let Some(db) = nz.wind_db {
        add(
            &mut buf,
            &noise::wind(
                &mut rng_for(p.seed, "wind", ni as u64),
                tb.n,
                fs,
                db_to_pa(db),
            ),
        );
    }
    if let Some(db) = node.sensor.self_noise_db {
        add(
            &mut buf,
            &noise::white(
                &mut rng_for(p.seed, "self-noise", ni as u64),
                tb.n,
                db_to_pa(db),
            ),
        );
    }
    render(
        &mut buf,
        &tb,
        &acoustic_emissions(p, ni, rate, firs, shapes),
    );
    buf
}

fn render_seismic(p: &Plan, ni: usize, firs: &mut FirCache, shapes: &mut ShapeCache) -> Vec<f64> {
    let node = &p.spec.nodes[ni];
    let nt = &p.nodes[ni];
    let rate = p.spec.rates.seismic_hz;
    let fs = rate as f64;
    let tb = TimeBase {
        t0: nt.t0,
        rate: fs * (1.0 + nt.drift),
        n: sample_count(nt, rate),
    };
    let mut buf = vec![0.0; tb.n];
    if let Some(v) = p.spec.noise.seismic_mps {
        add(
            &mut buf,
            &noise::lowpass_noise(
                &mut rng_for(p.seed, "ground", ni as u64),
                tb.n,
                fs,
                20f64.min(0.4 * fs),
                v,
            ),
        );
    }
    if let Some(v) = node.geophone.self_noise_mps {
        add(
            &mut buf,
            &noise::white(&mut rng_for(p.seed, "geophone-noise", ni as u64), tb.n, v),
        );
    }
    render(&mut buf, &tb, &seismic_emissions(p, ni, rate, firs, shapes));
    buf
}

fn add(buf: &mut [f64], x: &[f64]) {
    for (b, v) in buf.iter_mut().zip(x) {
        *b += v;
    }
}

/// Write `x` (physical units) as a mono WAV with `full_scale` units at
/// sample value 1.0, clipping at full scale as the sensor does.
fn write_wav(
    path: &Path,
    x: &[f64],
    rate: u32,
    full_scale: f64,
    format: SampleFormat,
) -> Result<(), SimError> {
    let wav = |source| SimError::Wav {
        path: path.to_path_buf(),
        source,
    };
    let (bits, fmt) = match format {
        SampleFormat::I16 => (16, hound::SampleFormat::Int),
        SampleFormat::I24 => (24, hound::SampleFormat::Int),
        SampleFormat::F32 => (32, hound::SampleFormat::Float),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: fmt,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(wav)?;
    for v in x {
        let s = (v / full_scale).clamp(-1.0, 1.0);
        match format {
            SampleFormat::I16 => {
                w.write_sample((s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
            }
            SampleFormat::I24 => {
                w.write_sample((s * 8_388_608.0).round().clamp(-8_388_608.0, 8_388_607.0) as i32)
            }
            SampleFormat::F32 => w.write_sample(s as f32),
        }
        .map_err(wav)?;
    }
    w.finalize().map_err(wav)
}

/// Truth entries: sources, then local distractors, then real clips.
fn truth(p: &Plan) -> Vec<TruthSource> {
    let spec = p.spec;
    let at_geo = |e: Enu| p.frame.to_geodetic(e);
    let mut out = Vec::new();
    for (j, s) in spec.sources.iter().enumerate() {
        let g = at_geo(spec.terrain.place(s.at()));
        out.push(TruthSource {
            time_utc: UtcNs(spec.start_utc.0 + ns_round(p.source_times[j])),
            lat: g.lat,
            lon: g.lon,
            alt_m: g.alt_m,
            kind: s.kind(),
            yield_kg_tnt: match s {
                SourceSpec::Explosion { yield_kg_tnt, .. } => Some(*yield_kg_tnt),
                _ => None,
            },
            label: Some(s.label()),
        });
    }
    let node_pos = |id: &str| {
        spec.nodes
            .iter()
            .position(|n| n.id == id)
            .map(|i| p.nodes[i].pos)
    };
    for d in &spec.distractors {
        let n = node_pos(&d.node).unwrap_or_default();
        let g = at_geo(Enu::new(n.e + d.distance_m, n.n, n.u));
        out.push(TruthSource {
            time_utc: spec.start_utc.add_secs_f64(d.time_s),
            lat: g.lat,
            lon: g.lon,
            alt_m: g.alt_m,
            kind: if d.kind == DistractorKind::Traffic {
                SourceKind::Unknown
            } else {
                SourceKind::OtherImpulsive
            },
            yield_kg_tnt: None,
            label: Some(format!(
                "{} near {} (local distractor)",
                d.kind.label(),
                d.node
            )),
        });
    }
    for c in &p.clips {
        let g = at_geo(p.nodes[c.node].pos);
        out.push(TruthSource {
            time_utc: spec.start_utc.add_secs_f64(c.time_s),
            lat: g.lat,
            lon: g.lon,
            alt_m: g.alt_m,
            kind: c.kind,
            yield_kg_tnt: None,
            label: Some(c.label.clone()),
        });
    }
    out
}

fn stream_files(node: &NodeSim) -> (String, String) {
    (
        format!("{}.wav", node.id),
        format!("{}-seismic.wav", node.id),
    )
}

/// Render `spec` with `seed` and write the scenario folder `out_dir`
/// (created if missing): `manifest.json` (SPEC `blastnet-recording/1`, with
/// `environment` and `truth`), one acoustic WAV per node, one seismic WAV
/// per node when `rates.seismic_hz` > 0, and `scenario.toml` (the spec, to
/// re-run it). Deterministic for a given spec, seed and options.
pub fn write_scenario(
    spec: &ScenarioSpec,
    seed: u64,
    opts: &WriteOptions,
    out_dir: &Path,
) -> Result<Manifest, SimError> {
    let p = plan(spec, seed, opts)?;
    std::fs::create_dir_all(out_dir).map_err(|source| SimError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut firs = FirCache::default();
    let mut shapes = ShapeCache::default();
    let mut nodes = Vec::new();
    for (ni, node) in spec.nodes.iter().enumerate() {
        let nt = &p.nodes[ni];
        let (af, sf) = stream_files(node);
        let start = UtcNs(spec.start_utc.0 + nt.t0_ns + nt.offset_ns);
        let x = render_acoustic(&p, ni, &mut firs, &mut shapes);
        let fs_pa = node.sensor.full_scale_pa();
        write_wav(
            &out_dir.join(&af),
            &x,
            spec.rates.acoustic_hz,
            fs_pa,
            node.sensor.format,
        )?;
        let mut streams = vec![StreamSpec {
            file: af,
            channel: 0,
            kind: StreamKind::Acoustic,
            start_utc: start,
            sensitivity: fs_pa,
        }];
        if spec.rates.seismic_hz > 0 && node.seismic {
            let g = &node.geophone;
            let v = render_seismic(&p, ni, &mut firs, &mut shapes);
            write_wav(
                &out_dir.join(&sf),
                &v,
                spec.rates.seismic_hz,
                g.full_scale_mps,
                g.format,
            )?;
            streams.push(StreamSpec {
                file: sf,
                channel: 0,
                kind: StreamKind::Seismic,
                start_utc: start,
                sensitivity: g.full_scale_mps,
            });
        }
        let reported = p.frame.to_geodetic(Enu::new(
            nt.pos.e + nt.gps_err.e,
            nt.pos.n + nt.gps_err.n,
            nt.pos.u + nt.gps_err.u,
        ));
        nodes.push(NodeSpec {
            id: node.id.clone(),
            lat: reported.lat,
            lon: reported.lon,
            alt_m: reported.alt_m,
            // The GPS error's 1-sigma along a ray, averaged over directions.
            position_uncertainty_m: (!opts.ideal).then(|| {
                let (h, v) = (spec.errors.gps_sigma_h_m, spec.errors.gps_sigma_v_m);
                ((2.0 * h * h + v * v) / 3.0).sqrt()
            }),
            streams,
        });
    }
    let manifest = Manifest {
        site: None,
        format: MANIFEST_FORMAT.to_string(),
        name: spec.name.clone(),
        description: format!(
            "{}{}Simulated by `blastnet simulate` (blastnet-simulator {}), seed {seed}, {}. Licence: MIT OR Apache-2.0.",
            spec.description,
            if spec.description.is_empty() { "" } else { " " },
            env!("CARGO_PKG_VERSION"),
            if opts.ideal { "ideal (exact positions and clocks)" } else { "with GPS position and clock errors" },
        ),
        // What the network is told: the reported weather if the spec has one, else the truth.
        environment: Some(spec.environment.reported.unwrap_or(Environment { temperature_c: spec.environment.temperature_c, wind_mps: spec.environment.wind_mps, relative_humidity_pct: Some(spec.environment.relative_humidity_pct) })),
        nodes,
        truth: Some(truth(&p)),
    };
    manifest
        .validate(&out_dir.join("manifest.json").display().to_string())
        .map_err(|e| SimError::spec(&spec.name, "(manifest)", e.to_string()))?;
    let write = |name: &str, text: String| {
        let path = out_dir.join(name);
        std::fs::write(&path, text).map_err(|source| SimError::Io { path, source })
    };
    write("manifest.json", manifest.to_json_pretty() + "\n")?;
    write(
        "scenario.toml",
        format!(
            "# blastnet simulate --spec scenario.toml --seed {seed}{}\n{}",
            if opts.ideal { " --ideal" } else { "" },
            spec.to_toml()
        ),
    )?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitham_n_wave_of_a_5_56_mm_rifle_bullet_at_10_m_is_about_170_pa_and_180_us() {
        // Hand evaluation of Whitham's formulas: M = 890/343 = 2.595.
        let (p, t) = whitham_n_wave(101_325.0, 343.0, 890.0, 0.00556, 0.023, 10.0);
        let m: f64 = 890.0 / 343.0;
        let m21 = m * m - 1.0;
        let p_hand =
            0.53 * 101_325.0 * m21.powf(0.125) * 0.00556 / (10f64.powf(0.75) * 0.023f64.powf(0.25));
        assert!((p - p_hand).abs() < 1e-9);
        // Measured 5.56 mm N-waves at ~10 m: ~100–300 Pa, ~150–250 µs (Maher 2007).
        assert!((100.0..300.0).contains(&p), "{p}");
        assert!((150e-6..250e-6).contains(&t), "{t}");
    }
}
