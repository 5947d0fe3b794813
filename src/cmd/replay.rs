//! `blastnet replay`: a scenario folder or a bare WAV through the node
//! runtime, over MQTT, into the aggregator (SPEC "Commands").

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use blastnet_contract::UtcNs;
use blastnet_node::Pace;

use crate::replay::{ReplayOptions, ReplayOutcome};
use crate::truth_eval;

/// Arguments of `blastnet replay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scenario folder (with manifest.json), a manifest file, or a bare WAV.
    pub path: PathBuf,
    /// MQTT broker, e.g. mqtt://127.0.0.1:1883; default: an embedded broker.
    #[arg(long)]
    pub broker: Option<String>,
    /// Write each event's final revision as one JSON line (SPEC event schema).
    #[arg(long)]
    pub events_out: Option<PathBuf>,
    /// Write each detection as one JSON line (SPEC detection schema).
    #[arg(long)]
    pub detections_out: Option<PathBuf>,
    /// Replay at the recording's pace instead of as fast as the CPU allows.
    #[arg(long)]
    pub realtime: bool,
    /// With --realtime: data seconds per wall second (e.g. 10 for ten times real time).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Bare WAV: UTC of its first sample (RFC 3339); default: file time minus duration.
    #[arg(long)]
    pub start_utc: Option<String>,
    /// Aggregator HTTP API and live map address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http: SocketAddr,
    /// Print each event revision as it is published.
    #[arg(long)]
    pub print_events: bool,
    /// Aggregator configuration (TOML) whose [engine] and [ingest] sections
    /// apply, e.g. a larger `model_sigma_s` for urban multipath.
    #[arg(long, value_name = "aggregator.toml")]
    pub config: Option<PathBuf>,
}

/// Run `blastnet replay`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let start_utc = args
        .start_utc
        .as_deref()
        .map(|s| UtcNs::parse(s).with_context(|| format!("--start-utc {s:?}")))
        .transpose()?;
    if !(args.speed.is_finite() && args.speed > 0.0) {
        anyhow::bail!("--speed {}: expected a positive number", args.speed);
    }
    let opts = ReplayOptions {
        path: args.path.clone(),
        broker: args.broker.clone(),
        pace: if args.realtime {
            Pace::RealTime { speed: args.speed }
        } else {
            Pace::Fast
        },
        http_listen: args.http,
        start_utc,
        progress: true,
        linger: std::time::Duration::ZERO,
        aggregator_config: args.config.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(dirs) = scenario_folders(&args.path) {
        return run_many(&rt, opts, dirs);
    }
    // Fail early, naming the path, before any broker or runtime starts.
    crate::replay::open_scenario(&opts)?;
    let print = args.print_events;
    let outcome = rt.block_on(crate::replay::run(&opts, move |e| {
        if print {
            println!("{}", crate::cmd::event_line(e));
        }
    }))?;
    if let Some(p) = &args.detections_out {
        write_lines(p, outcome.detections.iter())?;
    }
    if let Some(p) = &args.events_out {
        write_lines(p, outcome.events.iter())?;
    }
    print_summary(&outcome);
    Ok(())
}

/// A folder with no manifest of its own but scenario folders inside (an
/// imported release): those folders, sorted.
fn scenario_folders(path: &Path) -> Option<Vec<PathBuf>> {
    if !path.is_dir() || path.join(blastnet_recording::MANIFEST_FILE).exists() {
        return None;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(path)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(blastnet_recording::MANIFEST_FILE).is_file())
        .collect();
    dirs.sort();
    (!dirs.is_empty()).then_some(dirs)
}

/// Replay every scenario of a folder through one broker and print the
/// aggregate evaluation (for an imported release such as ShotSpotter's).
fn run_many(
    rt: &tokio::runtime::Runtime,
    opts: ReplayOptions,
    dirs: Vec<PathBuf>,
) -> anyhow::Result<()> {
    let broker = match &opts.broker {
        Some(b) => b.clone(),
        None => blastnet_broker::EmbeddedBroker::start_on_free_port()?.url(),
    };
    let (mut blasts, mut located, mut ghosts) = (0usize, 0usize, 0usize);
    let mut horizontal = Vec::new();
    let mut ratio = Vec::new();
    eprintln!(
        "{:<28} {:>6} {:>7} {:>6} {:>10}",
        "scenario", "blasts", "located", "ghosts", "median err"
    );
    for dir in dirs {
        let one = ReplayOptions {
            path: dir.clone(),
            broker: Some(broker.clone()),
            progress: false,
            ..opts.clone()
        };
        let o = rt.block_on(crate::replay::run(&one, |_| {}))?;
        let ev = truth_eval::evaluate(&o.scenario.manifest, &o.events, 2.0);
        blasts += ev.matches.len();
        located += ev.located();
        ghosts += ev.ghosts.len();
        for x in ev.matches.iter() {
            if let Some(i) = x.event {
                horizontal.push(x.horizontal_m);
                if let Some(c) = o.events[i].crlb.as_ref().filter(|c| c.horizontal_m > 0.0) {
                    ratio.push(x.horizontal_m / c.horizontal_m);
                }
            } else {
                horizontal.push(f64::INFINITY);
            }
        }
        eprintln!(
            "{:<28} {:>6} {:>7} {:>6} {:>9.1}m",
            o.scenario.manifest.name,
            ev.matches.len(),
            ev.located(),
            ev.ghosts.len(),
            ev.median(|x| x.horizontal_m).unwrap_or(f64::NAN)
        );
    }
    horizontal.sort_by(f64::total_cmp);
    ratio.sort_by(f64::total_cmp);
    let share = |m: f64| {
        100.0 * horizontal.iter().filter(|&&h| h <= m).count() as f64
            / horizontal.len().max(1) as f64
    };
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    eprintln!(
        "all: {blasts} blasts, {located} located, {ghosts} ghost events; horizontal error median {:.1} m (unlocated counted as infinite); within 15 m {:.1}%, within 25 m {:.1}%; median error/CRLB {:.2}",
        median(&horizontal),
        share(15.0),
        share(25.0),
        median(&ratio)
    );
    Ok(())
}

fn write_lines<T: serde::Serialize>(
    path: &Path,
    items: impl Iterator<Item = T>,
) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for it in items {
        serde_json::to_writer(&mut w, &it)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The closing table: detections per node, events, and (with truth) recall and errors.
pub fn print_summary(o: &ReplayOutcome) {
    let m = &o.scenario.manifest;
    eprintln!();
    eprintln!(
        "replayed {} ({} nodes, {:.1} s of recording) in {:.2} s via {}",
        m.name,
        m.nodes.len(),
        o.data_seconds,
        o.elapsed.as_secs_f64(),
        o.broker_url
    );
    eprintln!(
        "{:<18} {:>10} {:>10} {:>9}",
        "node", "acoustic", "seismic", "spooled"
    );
    for (id, s) in &o.nodes {
        let count = |k| {
            o.detections
                .iter()
                .filter(|d| &d.node_id == id && d.stream == k)
                .count()
        };
        eprintln!(
            "{:<18} {:>10} {:>10} {:>9}",
            id,
            count(blastnet_contract::StreamKind::Acoustic),
            count(blastnet_contract::StreamKind::Seismic),
            s.detections
        );
    }
    eprintln!("{} events located", o.events.len());
    for e in &o.events {
        eprintln!("  {}", crate::cmd::event_line(e));
    }
    if m.truth.as_ref().is_some_and(|t| !t.is_empty()) {
        let ev = truth_eval::evaluate(m, &o.events, 2.0);
        let n = ev.matches.len();
        eprintln!(
            "truth: {} blasts, {} located ({:.0}%), {} ghost events, {} events on distractors",
            n,
            ev.located(),
            100.0 * ev.located() as f64 / n.max(1) as f64,
            ev.ghosts.len(),
            ev.distractor_events.len()
        );
        if let (Some(h), Some(d3)) = (ev.median(|x| x.horizontal_m), ev.median(|x| x.error_3d_m)) {
            eprintln!(
                "location error: median horizontal {h:.1} m, median 3-D {d3:.1} m; within 15 m {:.0}%, within 25 m {:.0}%",
                100.0 * ev.share_within(15.0),
                100.0 * ev.share_within(25.0)
            );
        }
        if let Some(dt) = ev.median(|x| x.origin_s.abs()) {
            eprintln!("origin time error: median {:.2} ms", dt * 1e3);
        }
        for x in ev.matches.iter().filter(|x| x.event.is_none()) {
            if let Some(t) = m.truth.as_ref().and_then(|t| t.get(x.truth)) {
                eprintln!(
                    "  missed: truth[{}] {} at {} ({})",
                    x.truth,
                    t.kind.as_str(),
                    t.time_utc,
                    t.label.as_deref().unwrap_or("")
                );
            }
        }
        let ratio = ev.median(|x| {
            let e = &o.events[x.event.unwrap_or_default()];
            match &e.crlb {
                Some(c) if c.horizontal_m > 0.0 => x.horizontal_m / c.horizontal_m,
                _ => f64::NAN,
            }
        });
        if let Some(r) = ratio.filter(|r| r.is_finite()) {
            eprintln!("median horizontal error / CRLB: {r:.2}");
        }
    }
}
