//! `blastnet replay`: a scenario folder or a bare WAV through the node
//! runtime, over MQTT, into the aggregator (SPEC "Commands"). The
//! orchestration is `blastnet_lab::replay`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use blastnet_contract::UtcNs;
use blastnet_lab::replay::{self, ReplayOptions};
use blastnet_lab::report::{event_line, note};
use blastnet_node::Pace;

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
    /// After the replay, keep the aggregator's HTTP API and live map up (at
    /// --http) until Ctrl-C or SIGTERM, for looking at the events; the
    /// summary follows when it stops.
    #[arg(long)]
    pub serve: bool,
    /// Print each event revision as it is published.
    #[arg(long)]
    pub print_events: bool,
    /// Aggregator configuration (TOML) whose [engine], [ingest] and [map]
    /// sections apply, e.g. a larger `model_sigma_s` for urban multipath, or
    /// map tiles.
    #[arg(long, value_name = "aggregator.toml")]
    pub config: Option<PathBuf>,
    /// Keep the aggregator's store in this SQLite file: the events, and the
    /// station terms and error scales the engine learns, carry over to the
    /// next replay on the same file (a folder of scenarios is then replayed
    /// in time order, each starting from what the earlier ones taught).
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,
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
        linger: if args.serve {
            replay::LINGER_UNTIL_SIGNAL
        } else {
            std::time::Duration::ZERO
        },
        aggregator_config: args.config.clone(),
        store: args.store.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(dirs) = replay::scenario_folders(&args.path) {
        return replay::replay_many(&rt, opts, dirs, note);
    }
    // Fail early, naming the path, before any broker or runtime starts.
    replay::open_scenario(&opts)?;
    let print = args.print_events;
    let outcome = rt.block_on(replay::run(&opts, move |e| {
        if print {
            println!("{}", event_line(e));
        }
    }))?;
    if let Some(p) = &args.detections_out {
        replay::write_json_lines(p, outcome.detections.iter())?;
    }
    if let Some(p) = &args.events_out {
        replay::write_json_lines(p, outcome.events.iter())?;
    }
    note(&replay::summary(&outcome));
    Ok(())
}
