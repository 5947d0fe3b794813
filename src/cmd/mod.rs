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
pub fn init_tracing(service: bool) {
    let level = if service { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},rumqttd=off,rumqttc=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// One human-readable line for an event revision.
pub fn event_line(e: &blastnet_contract::Event) -> String {
    let crlb = e
        .crlb
        .as_ref()
        .map(|c| format!(" crlb {:.1} m", c.horizontal_m))
        .unwrap_or_default();
    let yld = e
        .yield_estimate
        .as_ref()
        .map(|y| {
            format!(
                " yield {:.2} kg TNT [{:.2}, {:.2}]",
                y.kg_tnt, y.low_kg_tnt, y.high_kg_tnt
            )
        })
        .unwrap_or_default();
    format!(
        "event {} r{} {:?} {} at {:.5},{:.5} alt {:.0} m ±{:.1} m{} {} {:.2} ({} nodes, {} outliers){}",
        e.event_id,
        e.revision,
        e.status,
        e.origin_utc,
        e.lat,
        e.lon,
        e.alt_m,
        e.uncertainty.horizontal_m,
        crlb,
        e.kind.as_str(),
        e.confidence,
        e.detections.len(),
        e.outliers.len(),
        yld
    )
}
