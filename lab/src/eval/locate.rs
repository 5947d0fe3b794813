//! Location quality over randomised scenes (`blastnet eval --locate N`,
//! issue #16): each seed's scene (`blastnet_simulator::random_scene`) is
//! rendered into a temporary folder, replayed through the same pipeline as
//! `blastnet replay` (node runtime, embedded broker, aggregator with the
//! default engine configuration and the manifest's deliberately wrong
//! weather), and its events are scored against the truth.
//!
//! Seeds: [`TUNING_SEEDS`] may be looked at while tuning the engine; the
//! report seeds start at [`HELD_BACK_SEED_BASE`] and are run only to
//! report, never to tune. A failure seen in the report is repeated with
//! `blastnet simulate --preset random --seed N --out DIR` and `blastnet
//! replay DIR` (the same files, the same events).
//!
//! What is scored, per true source (truth matched to events one to one by
//! [`blastnet_recording::truth::evaluate_timed`], origin times within
//! [`MATCH_WINDOW_S`]):
//! - regions from the manifest's node positions: *inside* the convex hull of
//!   the nodes; *near*: outside it but within 2 apertures (largest node
//!   distance) of the nodes' centroid; *far*: beyond;
//! - *picked by every node*: every node has an acoustic detection within
//!   [`PICK_WINDOW_S`] of the true direct arrival (true weather);
//! - ghosts: events matched to no true source;
//! - horizontal error over the event's horizontal CRLB;
//! - airbursts: |origin-time error| within 3 × the event's origin-time sigma;
//! - coverage: the Mahalanobis distance of the true horizontal error under
//!   the event's east-north covariance (1 and 2 hold 39.3 % and 86.5 % of a
//!   Gaussian's mass).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use blastnet_contract::{Detection, Environment, Event, Geodetic, Manifest, StreamKind};
use blastnet_node::Pace;
use blastnet_recording::truth;
use blastnet_simulator::array::ArrayShape;
use blastnet_simulator::{
    random_scene, write_scenario, BurstSpec, ScenarioSpec, SourceSpec, WriteOptions,
};

use crate::replay::{self, ReplayOptions};

/// Seeds that may be looked at while tuning (0..=99).
pub const TUNING_SEEDS: Range<u64> = 0..100;
/// The first held-back seed: seeds from here on are for the report only.
pub const HELD_BACK_SEED_BASE: u64 = 10_000;
/// Largest origin-time difference of an event and the source it stands for, s.
pub const MATCH_WINDOW_S: f64 = 2.0;
/// A node picked a source when it has an acoustic pick this close to the
/// true arrival, s (GPS position errors move predictions by ~6 ms at most).
pub const PICK_WINDOW_S: f64 = 0.05;
/// Weight of an origin-time difference in the matching, m/s (a sound speed).
const TIME_WEIGHT_MPS: f64 = 340.0;

/// Which set a seed range belongs to, for the report's first line.
pub fn seed_set(seeds: &Range<u64>) -> &'static str {
    if seeds.start >= HELD_BACK_SEED_BASE {
        "held-back"
    } else if seeds.end <= TUNING_SEEDS.end {
        "tuning"
    } else if seeds.end > HELD_BACK_SEED_BASE {
        "mixed tuning and held-back"
    } else {
        "neither tuning nor held-back"
    }
}

/// What a true source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceClass {
    /// An explosion on the ground.
    GroundBurst,
    /// An explosion in the air.
    Airburst,
    /// One muzzle blast of a burst of rounds.
    Gunshot,
    /// Anything else (no random scene draws it).
    Other,
}

impl SourceClass {
    fn of(s: &SourceSpec) -> SourceClass {
        match s {
            SourceSpec::Explosion {
                burst: BurstSpec::Ground,
                ..
            } => SourceClass::GroundBurst,
            SourceSpec::Explosion { .. } => SourceClass::Airburst,
            SourceSpec::Gunshot { .. } => SourceClass::Gunshot,
            SourceSpec::Launch { .. } => SourceClass::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SourceClass::GroundBurst => "ground burst",
            SourceClass::Airburst => "airburst",
            SourceClass::Gunshot => "gunshot",
            SourceClass::Other => "other",
        }
    }
}

/// Where a true source lies relative to the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// Inside the convex hull of the nodes.
    Inside,
    /// Outside the hull, within 2 apertures of the centroid.
    Near,
    /// Beyond 2 apertures.
    Far,
}

/// The event that stands for a true source, as judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Located {
    /// Horizontal error, m.
    pub horizontal_m: f64,
    /// The event's horizontal CRLB, m (when positive).
    pub crlb_m: Option<f64>,
    /// Mahalanobis distance of the true horizontal error under the event's
    /// east-north covariance (when that is positive definite).
    pub mahalanobis: Option<f64>,
    /// Event origin time minus true time, s.
    pub origin_s: f64,
    /// The event's origin-time 1-sigma, s.
    pub origin_sigma_s: f64,
    /// 2 (ground plane) or 3 (altitude solved).
    pub dims: u8,
}

/// One true source and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOutcome {
    /// Index in the scene's truth list.
    pub truth: usize,
    /// What it is.
    pub class: SourceClass,
    /// Where it lies.
    pub region: Region,
    /// Horizontal distance from the nodes' centroid over the aperture.
    pub range_apertures: f64,
    /// Height above the ground, m.
    pub height_m: f64,
    /// Yield, kg TNT (explosions).
    pub yield_kg: Option<f64>,
    /// Nodes with an acoustic pick at its arrival.
    pub picked_by: usize,
    /// The event that stands for it.
    pub located: Option<Located>,
}

/// One scene's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneOutcome {
    /// The scene's seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Aperture (largest horizontal node distance), m.
    pub aperture_m: f64,
    /// One per true source.
    pub sources: Vec<SourceOutcome>,
    /// Origin times (s after the scene's start) of events matched to no source.
    pub ghosts: Vec<f64>,
    /// Events published.
    pub events: usize,
}

/// Horizontal position [east, north] of `g` in `frame`.
fn horizontal(frame: &blastnet_contract::EnuFrame, g: Geodetic) -> [f64; 2] {
    let p = frame.to_enu(g);
    [p.e, p.n]
}

/// Mahalanobis distance of `x` [east, north] under the event's EN covariance.
fn mahalanobis(e: &Event, x: [f64; 2]) -> Option<f64> {
    let c = &e.uncertainty.covariance_enu;
    let (a, b, d) = (c[0][0], 0.5 * (c[0][1] + c[1][0]), c[1][1]);
    let det = a * d - b * b;
    if !(det.is_finite() && det > 0.0 && a > 0.0) {
        return None;
    }
    let q = (d * x[0] * x[0] - 2.0 * b * x[0] * x[1] + a * x[1] * x[1]) / det;
    Some(q.max(0.0).sqrt())
}

/// Score one replayed scene: `spec` is the scene (its true weather and
/// source kinds), `manifest` what the pipeline was given (its truth list
/// starts with `spec.sources` in order), `detections` and `events` what it
/// published.
pub fn score_scene(
    seed: u64,
    spec: &ScenarioSpec,
    manifest: &Manifest,
    detections: &[Detection],
    events: &[Event],
) -> SceneOutcome {
    let Some(frame) = truth::frame(manifest) else {
        return SceneOutcome {
            seed,
            nodes: 0,
            aperture_m: 0.0,
            sources: Vec::new(),
            ghosts: Vec::new(),
            events: events.len(),
        };
    };
    let pts: Vec<[f64; 2]> = manifest
        .nodes
        .iter()
        .map(|n| horizontal(&frame, n.position()))
        .collect();
    let shape = ArrayShape::new(&pts).unwrap_or(ArrayShape {
        hull: Vec::new(),
        centroid: [0.0, 0.0],
        aperture_m: 0.0,
    });
    let true_env = Environment {
        temperature_c: spec.environment.temperature_c,
        wind_mps: spec.environment.wind_mps,
        relative_humidity_pct: None,
    };
    let ev = truth::evaluate_timed(manifest, events, MATCH_WINDOW_S, TIME_WEIGHT_MPS);
    let truths = manifest.truth.as_deref().unwrap_or_default();
    let mut sources = Vec::new();
    for m in &ev.matches {
        let (Some(t), Some(s)) = (truths.get(m.truth), spec.sources.get(m.truth)) else {
            continue;
        };
        let p = horizontal(&frame, Geodetic::new(t.lat, t.lon, t.alt_m));
        let d = shape.from_centroid(p);
        let region = if shape.contains(p) {
            Region::Inside
        } else if d <= 2.0 * shape.aperture_m {
            Region::Near
        } else {
            Region::Far
        };
        let picked_by = manifest
            .nodes
            .iter()
            .filter(|n| {
                let at = blastnet_simulator::arrival_utc(t, n.position(), &true_env);
                detections.iter().any(|x| {
                    x.node_id == n.id
                        && x.stream == StreamKind::Acoustic
                        && x.onset_utc.secs_since(at).abs() <= PICK_WINDOW_S
                })
            })
            .count();
        let located = m.event.map(|i| {
            let e = &events[i];
            let ep = horizontal(&frame, Geodetic::new(e.lat, e.lon, e.alt_m));
            Located {
                horizontal_m: m.horizontal_m,
                crlb_m: e
                    .crlb
                    .as_ref()
                    .map(|c| c.horizontal_m)
                    .filter(|c| *c > 0.0 && c.is_finite()),
                mahalanobis: mahalanobis(e, [p[0] - ep[0], p[1] - ep[1]]),
                origin_s: m.origin_s,
                origin_sigma_s: e.uncertainty.origin_s,
                dims: e.dims,
            }
        });
        sources.push(SourceOutcome {
            truth: m.truth,
            class: SourceClass::of(s),
            region,
            range_apertures: d / shape.aperture_m.max(1.0),
            height_m: s.at()[2],
            yield_kg: t.yield_kg_tnt,
            picked_by,
            located,
        });
    }
    let start = spec.start_utc;
    SceneOutcome {
        seed,
        nodes: manifest.nodes.len(),
        aperture_m: shape.aperture_m,
        sources,
        ghosts: ev
            .ghosts
            .iter()
            .map(|&i| events[i].origin_utc.secs_since(start))
            .collect(),
        events: events.len(),
    }
}

/// How to run the evaluation.
#[derive(Debug, Clone)]
pub struct LocateOptions {
    /// The scenes' seeds.
    pub seeds: Range<u64>,
    /// Scenes replayed at once (each with its own broker).
    pub threads: usize,
    /// A line on stderr per finished scene.
    pub progress: bool,
}

/// The evaluation over a range of seeds.
#[derive(Debug, Clone)]
pub struct LocateReport {
    /// The seeds run.
    pub seeds: Range<u64>,
    /// One per seed, in seed order.
    pub scenes: Vec<SceneOutcome>,
    /// Seeds whose scene could not be rendered or replayed, with the error.
    pub failed: Vec<(u64, String)>,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Scenes replayed at once.
    pub threads: usize,
}

/// (hits, total) as a percentage string.
fn share(hit: usize, n: usize) -> String {
    format!("{hit}/{n} = {:.1} %", 100.0 * hit as f64 / n.max(1) as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl LocateReport {
    /// Every scored source with its scene.
    pub fn sources(&self) -> impl Iterator<Item = (&SceneOutcome, &SourceOutcome)> {
        self.scenes
            .iter()
            .flat_map(|s| s.sources.iter().map(move |x| (s, x)))
    }

    /// (located, total) over the sources that pass `f`.
    pub fn recall(&self, f: impl Fn(&SceneOutcome, &SourceOutcome) -> bool) -> (usize, usize) {
        self.sources()
            .filter(|(s, x)| f(s, x))
            .fold((0, 0), |(hit, n), (_, x)| {
                (hit + usize::from(x.located.is_some()), n + 1)
            })
    }

    /// Ghost events per 100 true sources.
    pub fn ghosts_per_100(&self) -> f64 {
        let ghosts: usize = self.scenes.iter().map(|s| s.ghosts.len()).sum();
        100.0 * ghosts as f64 / self.sources().count().max(1) as f64
    }

    /// Median of horizontal error over CRLB (located sources with a CRLB).
    pub fn median_error_over_crlb(&self) -> f64 {
        median(
            self.sources()
                .filter_map(|(_, x)| x.located)
                .filter_map(|l| l.crlb_m.map(|c| l.horizontal_m / c))
                .collect(),
        )
    }

    /// (within 3 sigma, located) over airbursts' origin times.
    pub fn airburst_origin_within_3_sigma(&self) -> (usize, usize) {
        self.sources()
            .filter(|(_, x)| x.class == SourceClass::Airburst)
            .filter_map(|(_, x)| x.located)
            .fold((0, 0), |(hit, n), l| {
                let ok = l.origin_sigma_s > 0.0 && l.origin_s.abs() <= 3.0 * l.origin_sigma_s;
                (hit + usize::from(ok), n + 1)
            })
    }

    /// (Mahalanobis <= 1, <= 2, scored) over located sources.
    pub fn coverage(&self) -> (usize, usize, usize) {
        self.sources()
            .filter_map(|(_, x)| x.located)
            .fold((0, 0, 0), |(a, b, n), l| match l.mahalanobis {
                Some(d) => (a + usize::from(d <= 1.0), b + usize::from(d <= 2.0), n + 1),
                None => (a, b, n + 1),
            })
    }
}

impl fmt::Display for LocateReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n_src = self.sources().count();
        writeln!(
            out,
            "## Location over random scenes: {} seeds {}..{} ({} scenes, {} true sources, {} at once, {:.0} s)",
            seed_set(&self.seeds),
            self.seeds.start,
            self.seeds.end,
            self.scenes.len(),
            n_src,
            self.threads,
            self.wall.as_secs_f64()
        )?;
        writeln!(
            out,
            "(tuning seeds {}..{}; held-back seeds from {HELD_BACK_SEED_BASE}; regions by the manifest's node positions: inside = in the nodes' convex hull, near = outside it within 2 apertures of their centroid, far = beyond; aperture = largest node distance)",
            TUNING_SEEDS.start, TUNING_SEEDS.end
        )?;
        let r = |f: &dyn Fn(&SceneOutcome, &SourceOutcome) -> bool| {
            let (h, n) = self.recall(f);
            share(h, n)
        };
        writeln!(
            out,
            "recall inside the hull:              {}   (target >= 98 %)",
            r(&|_, x| x.region == Region::Inside)
        )?;
        writeln!(
            out,
            "recall within 2 apertures:           {}   (target >= 90 %)",
            r(&|_, x| x.region != Region::Far)
        )?;
        writeln!(
            out,
            "  of which outside the hull:         {}",
            r(&|_, x| x.region == Region::Near)
        )?;
        writeln!(
            out,
            "recall beyond 2 apertures:           {}   (no target)",
            r(&|_, x| x.region == Region::Far)
        )?;
        writeln!(
            out,
            "recall of sources every node picked: {}   (target 100 %)",
            r(&|s, x| x.picked_by == s.nodes)
        )?;
        writeln!(
            out,
            "  of those inside the hull:          {}",
            r(&|s, x| x.picked_by == s.nodes && x.region == Region::Inside)
        )?;
        let ghosts: usize = self.scenes.iter().map(|s| s.ghosts.len()).sum();
        writeln!(
            out,
            "ghost events: {ghosts} = {:.2} per 100 sources   (target <= 1)",
            self.ghosts_per_100()
        )?;
        let with_crlb = self
            .sources()
            .filter(|(_, x)| x.located.is_some_and(|l| l.crlb_m.is_some()))
            .count();
        writeln!(
            out,
            "median horizontal error / CRLB: {:.2} (n = {with_crlb})   (target <= 1.3)",
            self.median_error_over_crlb()
        )?;
        let med = |f: &dyn Fn(&SourceOutcome) -> bool| {
            median(
                self.sources()
                    .filter(|(_, x)| f(x))
                    .filter_map(|(_, x)| x.located.map(|l| l.horizontal_m))
                    .collect(),
            )
        };
        writeln!(
            out,
            "median horizontal error: inside {:.1} m, near {:.1} m, far {:.1} m",
            med(&|x| x.region == Region::Inside),
            med(&|x| x.region == Region::Near),
            med(&|x| x.region == Region::Far)
        )?;
        let (a3, an) = self.airburst_origin_within_3_sigma();
        writeln!(
            out,
            "airburst origin time within 3 sigma: {}   (target >= 95 %)",
            share(a3, an)
        )?;
        let (c1, c2, cn) = self.coverage();
        writeln!(
            out,
            "coverage: Mahalanobis <= 1: {}, <= 2: {}   (targets 39 % and 86 %, +-10 points)",
            share(c1, cn),
            share(c2, cn)
        )?;
        writeln!(
            out,
            "by kind and region: located/true, median error, median error/CRLB, Mahalanobis <= 1 / <= 2"
        )?;
        for class in [
            SourceClass::GroundBurst,
            SourceClass::Airburst,
            SourceClass::Gunshot,
        ] {
            for region in [Region::Inside, Region::Near, Region::Far] {
                let pick = |x: &SourceOutcome| x.class == class && x.region == region;
                let (hit, n) = self.recall(|_, x| pick(x));
                if n == 0 {
                    continue;
                }
                let located: Vec<Located> = self
                    .sources()
                    .filter(|(_, x)| pick(x))
                    .filter_map(|(_, x)| x.located)
                    .collect();
                let within = |k: f64| {
                    located
                        .iter()
                        .filter(|l| l.mahalanobis.is_some_and(|d| d <= k))
                        .count()
                };
                writeln!(
                    out,
                    "  {:<13} {:<7} {hit:>4}/{n:<4} {:>8.1} m {:>6.2} {:>5.0} % {:>5.0} %",
                    class.name(),
                    format!("{region:?}"),
                    median(located.iter().map(|l| l.horizontal_m).collect()),
                    median(
                        located
                            .iter()
                            .filter_map(|l| l.crlb_m.map(|c| l.horizontal_m / c))
                            .collect()
                    ),
                    100.0 * within(1.0) as f64 / located.len().max(1) as f64,
                    100.0 * within(2.0) as f64 / located.len().max(1) as f64,
                )?;
            }
        }
        for (seed, e) in &self.failed {
            writeln!(out, "FAILED seed {seed}: {e}")?;
        }
        writeln!(out, "misses (seed truth-index: kind, region, range/aperture, height, yield, nodes that picked it):")?;
        for (s, x) in self.sources().filter(|(_, x)| x.located.is_none()) {
            writeln!(
                out,
                "  {} {}: {}, {:?}, {:.2} A ({:.0} m), {:.0} m up, {}, picked by {}/{}",
                s.seed,
                x.truth,
                x.class.name(),
                x.region,
                x.range_apertures,
                x.range_apertures * s.aperture_m,
                x.height_m,
                x.yield_kg.map_or("-".into(), |y| format!("{y} kg")),
                x.picked_by,
                s.nodes
            )?;
        }
        writeln!(out, "ghosts (seed: origin time s after start):")?;
        for s in self.scenes.iter().filter(|s| !s.ghosts.is_empty()) {
            let t: Vec<String> = s.ghosts.iter().map(|t| format!("{t:.2}")).collect();
            writeln!(out, "  {}: {}", s.seed, t.join(", "))?;
        }
        writeln!(out, "located outside their 5-sigma ellipse (seed truth-index: kind, region, error, Mahalanobis, error/CRLB, dims):")?;
        for (s, x) in self.sources() {
            let Some(l) = x.located.filter(|l| l.mahalanobis.is_none_or(|d| d > 5.0)) else {
                continue;
            };
            writeln!(
                out,
                "  {} {}: {}, {:?}, {:.1} m, {}, {}, {}D",
                s.seed,
                x.truth,
                x.class.name(),
                x.region,
                l.horizontal_m,
                l.mahalanobis.map_or("-".into(), |d| format!("{d:.1}")),
                l.crlb_m
                    .map_or("-".into(), |c| format!("{:.1}", l.horizontal_m / c)),
                l.dims
            )?;
        }
        write!(
            out,
            "repeat a seed: blastnet simulate --preset random --seed N --out DIR && blastnet replay DIR"
        )
    }
}

/// Render seed `seed`'s scene into `dir` (blocking: rendering is CPU work).
fn render(seed: u64, dir: PathBuf) -> anyhow::Result<(ScenarioSpec, PathBuf)> {
    let spec = random_scene(seed);
    write_scenario(&spec, seed, &WriteOptions::default(), &dir)
        .with_context(|| format!("rendering random scene {seed}"))?;
    Ok((spec, dir))
}

/// One scene: render, replay through `broker`, score.
async fn run_scene(seed: u64, broker: &str, progress: bool) -> anyhow::Result<SceneOutcome> {
    let started = Instant::now();
    let tmp = tempfile::tempdir().context("creating a scene folder")?;
    let dir = tmp.path().join(format!("random-scene-{seed}"));
    let (spec, path) = tokio::task::spawn_blocking(move || render(seed, dir))
        .await
        .context("the scene renderer panicked")??;
    let opts = ReplayOptions {
        path,
        broker: Some(broker.to_string()),
        pace: Pace::Fast,
        http_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        start_utc: None,
        progress: false,
        linger: Duration::ZERO,
        aggregator_config: None,
        store: None,
    };
    let o = replay::run(&opts, |_| {})
        .await
        .with_context(|| format!("replaying random scene {seed}"))?;
    let scene = score_scene(seed, &spec, &o.scenario.manifest, &o.detections, &o.events);
    if progress {
        let located = scene.sources.iter().filter(|x| x.located.is_some()).count();
        eprintln!(
                "seed {seed}: {} nodes, {:.0} m, {located}/{} located, {} ghosts, {:.1} s of recording in {:.1} s",
                scene.nodes,
                scene.aperture_m,
                scene.sources.len(),
                scene.ghosts.len(),
                spec.duration_s,
                started.elapsed().as_secs_f64()
            );
    }
    Ok(scene)
}

/// Scenes taken from `next` until `end`, one at a time, through one broker;
/// a scene that fails is reported, not fatal.
async fn worker(
    next: Arc<AtomicU64>,
    end: u64,
    progress: bool,
) -> anyhow::Result<Vec<Result<SceneOutcome, (u64, String)>>> {
    let broker = blastnet_broker::EmbeddedBroker::start_on_free_port()
        .context("starting the embedded MQTT broker")?
        .url();
    let mut out = Vec::new();
    loop {
        let seed = next.fetch_add(1, Ordering::Relaxed);
        if seed >= end {
            return Ok(out);
        }
        out.push(
            run_scene(seed, &broker, progress)
                .await
                .map_err(|e| (seed, format!("{e:#}"))),
        );
    }
}

/// Run the evaluation over `opts.seeds`, `opts.threads` scenes at a time.
/// The outcome of each scene does not depend on the others or on the order
/// they ran in (replays are deterministic); the report lists them by seed.
pub fn locate(opts: &LocateOptions) -> anyhow::Result<LocateReport> {
    let started = Instant::now();
    let threads = opts.threads.max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let next = Arc::new(AtomicU64::new(opts.seeds.start));
    let end = opts.seeds.end;
    let progress = opts.progress;
    let results = rt.block_on(async move {
        let workers: Vec<_> = (0..threads)
            .map(|_| tokio::spawn(worker(next.clone(), end, progress)))
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.context("an evaluation worker panicked")??);
        }
        anyhow::Ok(all)
    })?;
    let (mut scenes, mut failed) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(s) => scenes.push(s),
            Err(f) => failed.push(f),
        }
    }
    scenes.sort_by_key(|s| s.seed);
    failed.sort();
    Ok(LocateReport {
        seeds: opts.seeds.clone(),
        scenes,
        failed,
        wall: started.elapsed(),
        threads,
    })
}
