//! One module per subcommand; each has `Args` (clap) and `run`.

pub mod aggregator;
pub mod bench;
pub mod broker;
pub mod demo;
pub mod eval;
pub mod import;
pub mod node;
pub mod plan;
pub mod replay;
pub mod simulate;

/// Log to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
