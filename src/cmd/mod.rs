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

/// What `--check` prints for a configuration file: its summary on stdout;
/// or every error, one a line on stderr, and an error that counts them
/// (a non-zero exit).
fn report_check<C, E: std::fmt::Display>(
    path: &std::path::Path,
    checked: Result<C, Vec<E>>,
    summary: impl Fn(&std::path::Path, &C) -> String,
) -> anyhow::Result<()> {
    match checked {
        Ok(cfg) => {
            print!("{}", summary(path, &cfg));
            Ok(())
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            anyhow::bail!(
                "{}: configuration refused ({})",
                path.display(),
                match errors.len() {
                    1 => "1 error".to_string(),
                    n => format!("{n} errors"),
                }
            )
        }
    }
}

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event; colour codes only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format), for
    /// journald and log shippers.
    Json,
}

/// What is quiet unless `RUST_LOG` names it: the embedded broker's own logs
/// (every client disconnect is an `ERROR ... connection closed by peer` or
/// `no-connection id N is already gone` from rumqttd, at the end of every
/// replay) and the MQTT client's reconnect chatter.
const QUIET: &str = "rumqttd=off,rumqttc=warn";

/// The log filter: `RUST_LOG` if set, else `default_level` (`info` for
/// the services, `warn` for batch commands whose output is their summary);
/// the embedded broker stays off unless `RUST_LOG` names `rumqttd` (so
/// `RUST_LOG=debug` debugs blastnet, `RUST_LOG=info,rumqttd=info` the
/// broker too).
pub fn log_filter(default_level: &str, rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => format!("{default_level},{QUIET}"),
        Some(s) if s.contains("rumqttd") => s.to_string(),
        Some(s) => format!("{s},rumqttd=off"),
    }
}

/// Log to stderr in `format`, filtered by [`log_filter`]. A `RUST_LOG`
/// that does not parse is reported once and the default used. In JSON a
/// command's reports for people (its summary, the map's address, a fatal
/// error) are log records too (`blastnet_lab::report::note`), whatever the
/// level: every line on stderr is then one JSON object.
pub fn init_tracing(service: bool, format: LogFormat) {
    use blastnet_lab::report::REPORT_TARGET;
    let level = if service { "info" } else { "warn" };
    let rust_log = std::env::var("RUST_LOG").ok();
    let directives = |rust_log: Option<&str>| match format {
        LogFormat::Text => log_filter(level, rust_log),
        LogFormat::Json => format!("{},{REPORT_TARGET}=info", log_filter(level, rust_log)),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(directives(rust_log.as_deref()))
        .unwrap_or_else(|e| {
            eprintln!(
                "blastnet: RUST_LOG={:?}: {e}; logging at the default level ({level})",
                rust_log.unwrap_or_default()
            );
            tracing_subscriber::EnvFilter::new(directives(None))
        });
    blastnet_lab::report::reports_as_log_records(format == LogFormat::Json);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => logs.json().with_ansi(false).try_init(),
    };
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

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn the_embedded_broker_is_quiet_unless_rust_log_names_it() {
        assert_eq!(log_filter("warn", None), "warn,rumqttd=off,rumqttc=warn");
        assert_eq!(
            log_filter("info", Some(" ")),
            "info,rumqttd=off,rumqttc=warn"
        );
        assert_eq!(log_filter("warn", Some("debug")), "debug,rumqttd=off");
        assert_eq!(
            log_filter("warn", Some("info,rumqttd=info")),
            "info,rumqttd=info"
        );
        for s in ["warn", "debug", "info,rumqttd=info"] {
            tracing_subscriber::EnvFilter::try_new(log_filter("warn", Some(s)))
                .expect("a valid filter");
        }
    }
}
