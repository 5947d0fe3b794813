//! `blastnet node --config node.toml`: the field daemon (issue #5).

use std::path::PathBuf;

use anyhow::Context;
use blastnet_node::{
    run_node, CancellationToken, NodeConfig, ReplaySource, SourceConfig, DEFAULT_CONFIG_TOML,
};

/// Arguments of `blastnet node`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Node configuration (TOML); see `--print-config`.
    #[arg(long, short, required_unless_present = "print_config")]
    pub config: Option<PathBuf>,
    /// Print the commented default configuration and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check the configuration, print a summary of what it would do (or
    /// every error, one a line), and exit.
    #[arg(long)]
    pub check: bool,
}

/// Run `blastnet node`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.print_config {
        print!("{DEFAULT_CONFIG_TOML}");
        return Ok(());
    }
    let path = args.config.context("--config is required")?;
    if args.check {
        return check(&path);
    }
    let cfg = NodeConfig::load(&path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone())?;
        let summary = match &cfg.source {
            SourceConfig::Replay { path, scenario_node, pace } => {
                let scenario = blastnet_recording::Scenario::open(path)?;
                let source = ReplaySource::new(&scenario, scenario_node, *pace, cfg.runtime.clock.replay_uncertainty_s)?;
                tracing::info!("node {}: replaying {} ({pace:?})", cfg.runtime.node_id, path.display());
                run_node(cfg.runtime.clone(), source, shutdown).await?
            }
            SourceConfig::Capture(c) => capture(&cfg, c, shutdown).await?,
        };
        tracing::info!(
            "node {}: {} detection(s) spooled, {} acknowledged, {} skipped as already spooled, {} left in the spool",
            cfg.runtime.node_id,
            summary.detections,
            summary.acked,
            summary.skipped_on_resume,
            summary.backlog_at_exit
        );
        Ok(())
    })
}

/// `--check`: every error, one a line on stderr, and a non-zero exit; or a
/// summary on stdout (never the password).
fn check(path: &std::path::Path) -> anyhow::Result<()> {
    super::report_check(path, NodeConfig::load_all(path), summary)
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// What the node would do with `cfg`, for people.
fn summary(path: &std::path::Path, cfg: &NodeConfig) -> String {
    use blastnet_contract::ClockSource;
    use blastnet_node::config::ClockMode;
    use std::fmt::Write as _;
    let r = &cfg.runtime;
    let m = &r.mqtt;
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "  {k:<9} {v}");
    };
    line("node", format!("{} at site {}", r.node_id, r.site));
    line(
        "position",
        match &r.position {
            None => "not set".to_string(),
            Some(p) => format!(
                "{:.6}, {:.6}, {} m{}",
                p.lat,
                p.lon,
                p.alt_m,
                r.position_uncertainty_m
                    .map(|u| format!(" (± {u} m)"))
                    .unwrap_or_default()
            ),
        },
    );
    let tls = match (m.tls, &m.ca_file) {
        (false, _) => "no".to_string(),
        (true, None) => "yes (system roots)".to_string(),
        (true, Some(ca)) => format!("yes (CA {})", ca.display()),
    };
    let user = match (&m.username, &m.password) {
        (None, _) => "none".to_string(),
        (Some(u), None) => format!("{u} (no password)"),
        (Some(u), Some(_)) => format!("{u} (password set)"),
    };
    line(
        "broker",
        format!(
            "{}://{}:{}, TLS {tls}, user {user}",
            if m.tls { "mqtts" } else { "mqtt" },
            m.host,
            m.port
        ),
    );
    line(
        "topics",
        format!(
            "{} and {}, client id {}",
            r.detection_topic(),
            r.status_topic(),
            m.client_id
        ),
    );
    match &cfg.source {
        SourceConfig::Replay {
            path,
            scenario_node,
            pace,
        } => {
            let pace = match pace {
                blastnet_node::Pace::Fast => "as fast as possible".to_string(),
                blastnet_node::Pace::RealTime { speed } => format!("{speed}x real time"),
            };
            line(
                "source",
                format!(
                    "replay of {} (node {scenario_node}), {pace}",
                    path.display()
                ),
            );
        }
        SourceConfig::Capture(c) => {
            line(
                "source",
                format!("capture from {} at {} Hz", c.device, c.sample_rate),
            );
            let sensors: Vec<String> = c
                .channels
                .iter()
                .enumerate()
                .map(|(i, k)| format!("channel {i}: {}", k.map(|k| k.as_str()).unwrap_or("unused")))
                .collect();
            line("sensors", sensors.join(", "));
        }
    }
    let clock = match r.clock.mode {
        ClockMode::Auto => "auto",
        ClockMode::Fixed(ClockSource::GpsPps) => "gps-pps",
        ClockMode::Fixed(ClockSource::Ntp) => "ntp",
        ClockMode::Fixed(_) => "system",
    };
    line("clock", clock.to_string());
    line(
        "state",
        format!(
            "{}, spool up to {} bytes, fsync {}",
            r.state_dir.display(),
            r.spool_max_bytes,
            on_off(r.fsync)
        ),
    );
    line(
        "snippets",
        format!(
            "published {} (1.5 s, <= 8 kHz, 16-bit; up to {} queued)",
            on_off(r.audio.publish_snippets),
            r.audio.snippet_queue
        ),
    );
    line(
        "audio",
        format!(
            "on disk: snippets {}, continuous {}, up to {} bytes in {}",
            on_off(r.audio.snippets),
            on_off(r.audio.continuous),
            r.audio.budget_bytes,
            r.audio.dir.display()
        ),
    );
    line("status", format!("every {} s", r.heartbeat.as_secs_f64()));
    format!("{}: OK\n{s}", path.display())
}

#[cfg(feature = "capture")]
async fn capture(
    cfg: &NodeConfig,
    c: &blastnet_node::config::CaptureSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<blastnet_node::NodeSummary> {
    let source = blastnet_node::capture::CaptureSource::open(c, &cfg.runtime.clock)?;
    tracing::info!(
        "node {}: capturing from {:?} at {} Hz",
        cfg.runtime.node_id,
        c.device,
        c.sample_rate
    );
    Ok(run_node(cfg.runtime.clone(), source, shutdown).await?)
}

#[cfg(not(feature = "capture"))]
async fn capture(
    _cfg: &NodeConfig,
    _c: &blastnet_node::config::CaptureSettings,
    _shutdown: CancellationToken,
) -> anyhow::Result<blastnet_node::NodeSummary> {
    anyhow::bail!("source.kind = \"capture\" needs a blastnet built with `--features capture` (and libasound2-dev)")
}

/// SIGTERM (systemd stop) and Ctrl-C stop the node gracefully.
fn spawn_signal_handler(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: stopping"),
        }
        token.cancel();
    });
    Ok(())
}
