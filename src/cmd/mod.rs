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

/// Log to stderr; `RUST_LOG` overrides the default level (`info` for the
/// services, `warn` for batch commands whose output is their summary).
/// The embedded broker's own logs (client disconnects) are off by default.
/// Colour codes only when stderr is a terminal (not in a file or a pipe).
pub fn init_tracing(service: bool) {
    let level = if service { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},rumqttd=off,rumqttc=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Print to stdout; a closed pipe (`| head`) is not an error.
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("writing to stdout: {e}"))
        }
        _ => Ok(()),
    }
}
