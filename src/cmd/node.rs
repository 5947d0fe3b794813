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
    /// Check the configuration, print what it resolves to, and exit.
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
    let cfg = NodeConfig::load(&path)?;
    if args.check {
        println!("{cfg:#?}");
        return Ok(());
    }
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
