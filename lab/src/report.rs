//! Human-readable lines for what the pipeline publishes, and the reports a
//! command writes for people on stderr (its summary, the live map's
//! address): plain text, or with `--log-format json` one JSON log record a
//! line like every other line on stderr, so that a log shipper reading
//! stderr never meets a line it cannot parse.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// The tracing target of reports written as log records.
pub const REPORT_TARGET: &str = "blastnet::report";

static AS_LOG_RECORDS: AtomicBool = AtomicBool::new(false);

/// One human-readable line for an event revision: the contract's one
/// formatter ([`blastnet_contract::text`]), which the live map shares.
pub fn event_line(e: &blastnet_contract::Event) -> String {
    blastnet_contract::text::event_line(e)
}

/// Write reports as log records (target [`REPORT_TARGET`], level INFO)
/// instead of plain text: set once at start-up by a JSON log format, whose
/// filter must let that target through.
pub fn reports_as_log_records(on: bool) {
    AS_LOG_RECORDS.store(on, Relaxed);
}

/// Write `text` (one or more lines) for people on stderr.
pub fn note(text: &str) {
    if AS_LOG_RECORDS.load(Relaxed) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(target: REPORT_TARGET, "{line}");
        }
    } else if text.ends_with('\n') {
        eprint!("{text}");
    } else {
        eprintln!("{text}");
    }
}
