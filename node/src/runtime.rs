//! [`run_node`]: the library entry point that `blastnet node` and
//! `blastnet replay` share.

use std::sync::Arc;

use blastnet_contract::UtcNs;
use tokio_util::sync::CancellationToken;

use crate::config::NodeRuntimeConfig;
use crate::error::NodeError;
use crate::pipeline::Pipeline;
use crate::publisher::Publisher;
use crate::source::SampleSource;
use crate::spool::Spool;
use crate::state::{self, StateStore};

/// What one run of a node did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSummary {
    /// Detections spooled in this run.
    pub detections: u64,
    /// Detections acknowledged by the broker in this run (including any left over from an earlier run).
    pub acked: u64,
    /// Detections recovered from the spool at start (left by an earlier run).
    pub recovered: u64,
    /// Picks skipped because an earlier, interrupted run had already spooled them.
    pub skipped_on_resume: u64,
    /// Spool entries evicted to stay within the bound.
    pub evictions: u64,
    /// Damaged spool entries moved to the quarantine (at start and before publishing).
    pub quarantined: u64,
    /// Detections that could not be spooled (disk full, seq exhausted).
    pub spool_append_failures: u64,
    /// State saves that failed (disk full).
    pub state_write_failures: u64,
    /// Capture overruns.
    pub overruns: u64,
    /// Source read errors.
    pub source_errors: u64,
    /// Broker connections accepted.
    pub connections: u64,
    /// Detections still spooled at exit (sent on the next start).
    pub backlog_at_exit: u64,
    /// The source was played to its end (not stopped).
    pub completed: bool,
    /// Everything was delivered and the `offline` status acknowledged.
    pub drained: bool,
    /// Data time reached (replay).
    pub data_end: Option<UtcNs>,
}

/// Run one node: read `source`, detect, spool, publish, until the source
/// ends (then drain: every spooled detection acknowledged, a final status
/// with state `offline`) or `shutdown` is cancelled (then a short grace).
///
/// The spool, the seq counter and the replay checkpoint live in
/// `cfg.state_dir`; a restart with the same state dir resends what was not
/// acknowledged and, for a replay of the same scenario, resumes without
/// spooling any detection twice.
pub async fn run_node<S: SampleSource>(
    mut cfg: NodeRuntimeConfig,
    source: S,
    shutdown: CancellationToken,
) -> Result<NodeSummary, NodeError> {
    let store = StateStore::new(&cfg.state_dir, cfg.fsync)?;
    let (spool, rec) = Spool::open(&cfg.state_dir.join("spool"), cfg.spool_max_bytes, cfg.fsync)?;
    let spool = Arc::new(spool);
    // Nothing here writes unless it has to, and a failed write is logged,
    // not fatal: a node on a full disk starts and drains its spool.
    let state = state::recover(&store, &spool);
    if rec.quarantined > 0 {
        tracing::warn!(
            "damaged spool entries at start: {} moved to {}",
            rec.quarantined,
            spool.quarantine_dir().display()
        );
    }
    if rec.entries > 0 {
        tracing::info!(
            "{} unacknowledged detection(s) in the spool from an earlier run",
            rec.entries
        );
    }
    let position = match cfg.position.or_else(|| source.position()) {
        Some(p) => p,
        None => {
            return Err(NodeError::Config {
                file: "<config>".into(),
                field: "position".into(),
                msg: "the node's position is not configured and the source does not know it".into(),
            })
        }
    };
    cfg.position = Some(position);
    if cfg.position_uncertainty_m.is_none() {
        cfg.position_uncertainty_m = source.position_uncertainty_m();
    }
    // Live: the wall clock; a replay: where its data starts.
    let start = source.data_time().unwrap_or_else(UtcNs::now);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let pipe_cancel = shutdown.child_token();
    let pipeline = Pipeline::new(
        cfg.clone(),
        source,
        spool.clone(),
        store,
        state,
        position,
        tx,
        pipe_cancel.clone(),
    )?;
    let pipe = tokio::task::spawn_blocking(move || pipeline.run());
    let published = Publisher::new(cfg, spool.clone(), rx, shutdown, start)
        .run()
        .await;
    let spool_quarantined = spool.quarantined();
    if published.is_err() {
        pipe_cancel.cancel();
    }
    let piped = pipe
        .await
        .map_err(|e| NodeError::Internal(format!("pipeline thread: {e}")))?;
    let p = published?;
    let r = piped?;
    Ok(NodeSummary {
        detections: r.detections,
        acked: p.acked,
        recovered: rec.entries,
        skipped_on_resume: r.skipped_on_resume,
        evictions: r.evictions,
        quarantined: spool_quarantined,
        spool_append_failures: r.spool_append_failures,
        state_write_failures: r.state_write_failures,
        overruns: r.overruns,
        source_errors: r.source_errors,
        connections: p.connections,
        backlog_at_exit: p.backlog_at_exit,
        completed: r.completed,
        drained: p.drained,
        data_end: r.data_end,
    })
}
