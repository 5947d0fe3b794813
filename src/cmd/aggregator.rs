//! `blastnet aggregator --config aggregator.toml` (issue #6): subscribe,
//! associate, locate, publish, store, serve.

use std::path::PathBuf;

use anyhow::Context as _;
use blastnet_aggregator::{config, AggregatorConfig, CancellationToken};

/// Arguments of `blastnet aggregator`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file (TOML); `--print-config` shows every key with its default.
    #[arg(
        long,
        short,
        value_name = "FILE",
        required_unless_present = "print_config"
    )]
    pub config: Option<PathBuf>,
    /// Print the commented default configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Run `blastnet aggregator`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.print_config {
        print!("{}", config::print_config());
        return Ok(());
    }
    let path = args
        .config
        .context("--config FILE is required (see --print-config)")?;
    let cfg = AggregatorConfig::from_file(&path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let handle = blastnet_aggregator::start(cfg, shutdown.clone()).await?;
        eprintln!(
            "blastnet aggregator: live map at http://{}/",
            handle.http_addr()
        );
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: flushing the engine and the store");
            shutdown.cancel();
        });
        let summary = handle.join().await?;
        eprintln!(
            "blastnet aggregator: stopped after {} events",
            summary.events.len()
        );
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM on Unix (systemd's stop).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
