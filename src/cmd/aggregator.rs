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
    /// Check the configuration, print a summary of what it would do (or
    /// every error, one a line), and exit.
    #[arg(long)]
    pub check: bool,
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
    if args.check {
        return check(&path);
    }
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

/// `--check`: every error, one a line on stderr, and a non-zero exit; or a
/// summary on stdout (never a secret).
fn check(path: &std::path::Path) -> anyhow::Result<()> {
    super::report_check(path, AggregatorConfig::from_file_all(path), summary)
}

/// What the aggregator would do with `cfg`, for people.
fn summary(path: &std::path::Path, cfg: &AggregatorConfig) -> String {
    use std::fmt::Write as _;
    let m = &cfg.mqtt;
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "  {k:<14} {v}");
    };
    let scheme = if m.tls.is_some() { "mqtts" } else { "mqtt" };
    let tls = match &m.tls {
        None => "no".to_string(),
        Some(None) => "yes (system roots)".to_string(),
        Some(Some(ca)) => format!("yes (CA {})", ca.display()),
    };
    let user = match &m.credentials {
        None => "none".to_string(),
        Some((u, p)) if p.is_empty() => format!("{u} (no password)"),
        Some((u, _)) => format!("{u} (password set)"),
    };
    line(
        "broker",
        format!("{scheme}://{}:{}, TLS {tls}, user {user}", m.host, m.port),
    );
    line(
        "client id",
        format!(
            "{} ({} session), availability topic {}",
            m.client_id,
            if m.clean_session {
                "clean"
            } else {
                "persistent"
            },
            if m.availability { "on" } else { "off" }
        ),
    );
    line(
        "subscribes",
        format!("prefix {}, sites {}", m.prefix, m.sites.join(", ")),
    );
    let store = match &cfg.store.path {
        config::StorePath::Memory => "in memory (nothing kept at exit)".to_string(),
        config::StorePath::File(p) => p.display().to_string(),
    };
    let keep = match cfg.store.keep {
        config::KeepRevisions::All => "every revision",
        config::KeepRevisions::Latest => "latest revision only",
    };
    line("store", format!("{store}, {keep}"));
    line(
        "http",
        format!(
            "listen {}, token {}, up to {} connections",
            cfg.http_listen,
            if cfg.http.token.is_some() {
                "set"
            } else {
                "not set (loopback only)"
            },
            cfg.http.max_connections
        ),
    );
    let time = match cfg.time.base {
        config::TimeBase::Wall => {
            format!("wall clock, {} s lateness", cfg.time.lateness.as_secs_f64())
        }
        config::TimeBase::Nodes => "the nodes' data time (replay)".to_string(),
    };
    line(
        "time base",
        format!("{time}, tick {} ms", cfg.time.tick.as_millis()),
    );
    line(
        "ingest",
        format!(
            "inbox {}, payloads up to {} bytes, {} s retention",
            if cfg.ingest.inbox { "on" } else { "off" },
            cfg.ingest.max_payload_bytes,
            cfg.ingest.retention_s
        ),
    );
    line(
        "home assistant",
        match &cfg.homeassistant {
            None => "off".to_string(),
            Some(h) => format!("on, discovery prefix {}", h.discovery_prefix),
        },
    );
    line(
        "webhooks",
        if cfg.webhooks.is_empty() {
            "none".to_string()
        } else {
            // Host and port only: a path may carry a secret.
            let to: Vec<String> = cfg
                .webhooks
                .iter()
                .map(|w| format!("{}:{}", w.host, w.port))
                .collect();
            format!("{} ({})", cfg.webhooks.len(), to.join(", "))
        },
    );
    format!("{}: OK\n{s}", path.display())
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
