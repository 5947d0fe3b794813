//! `blastnet aggregator --config aggregator.toml` (issue #6): subscribe,
//! associate, locate, publish, store, serve.

use std::path::PathBuf;

use anyhow::Context as _;
use blastnet_aggregator::{config, AggregatorConfig, CancellationToken};
use blastnet_lab::report::note;

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
        // Listen for the signal before anything else: a SIGTERM during
        // start-up stops the process cleanly too.
        let signals = signal_listener();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            signals.await;
            tracing::info!(
                "stopping: finishing the current step, flushing the engine and the store"
            );
            stop.cancel();
        });
        let handle = match blastnet_aggregator::start(cfg, shutdown.clone()).await {
            Ok(h) => h,
            Err(_) if shutdown.is_cancelled() => {
                note("blastnet aggregator: stopped during start-up");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        note(&format!(
            "blastnet aggregator: live map at http://{}/",
            handle.http_addr()
        ));
        let summary = handle.join().await?;
        note(&format!(
            "blastnet aggregator: stopped after {} events",
            summary.events.len()
        ));
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM on Unix (systemd's stop). On Unix the handlers are
/// installed when this is called, not when the future is first polled.
fn signal_listener() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate())
            .and_then(|t| Ok((t, signal(SignalKind::interrupt())?)))
            .ok()
    };
    async move {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = handlers {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
