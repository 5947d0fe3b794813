//! Counters and gauges, rendered as Prometheus text exposition format 0.0.4.
//!
//! Hand-written rather than the `prometheus` crate: a dozen atomics and one
//! fixed-bucket histogram are all the service needs, the text format is a few
//! lines, and it keeps the aggregator's dependency tree (already axum,
//! rumqttc, rusqlite) from growing a registry with its own locking.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use blastnet_contract::SourceKind;

use crate::ingest::Reason;
use crate::pipeline::NodeView;

/// Which kind of node message a counter is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.../detection`.
    Detection = 0,
    /// `.../status`.
    Status = 1,
    /// `.../snippet` (extension).
    Snippet = 2,
}

/// Upper bounds (seconds) of the decision-latency histogram buckets.
pub const LATENCY_BUCKETS_S: [f64; 15] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 250e-3, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Service metrics, shared between the ingest task and the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Detection messages received (valid or not).
    pub detections_received: AtomicU64,
    /// Detections accepted and passed to the engine.
    pub detections_accepted: AtomicU64,
    /// Detections dropped as already seen (same node_id and seq).
    pub detections_duplicate: AtomicU64,
    /// Detections dropped for arriving after the retention horizon.
    pub detections_late: AtomicU64,
    /// Status messages received.
    pub statuses_received: AtomicU64,
    /// Snippet messages received (valid or not).
    pub snippets_received: AtomicU64,
    /// Snippets stored (valid, their node known).
    pub snippets_stored: AtomicU64,
    /// Messages refused, by kind and reason (index [`Reason::index`]).
    pub invalid: [[AtomicU64; Reason::ALL.len()]; 3],
    /// Messages on a topic that is not a node topic.
    pub invalid_topic: AtomicU64,
    /// Event revisions published.
    pub events_published: AtomicU64,
    /// Event publishes that the MQTT client refused.
    pub publish_errors: AtomicU64,
    /// Store writes that failed.
    pub store_errors: AtomicU64,
    /// Nodes flagged by the engine (e.g. clock offset).
    pub nodes_flagged: AtomicU64,
    /// Detections beyond their node's or the network's seed budget (`engine.seed_rate_hz`):
    /// they support sources but seed no search.
    pub detections_unseeded: AtomicU64,
    /// Nodes currently online (gauge).
    pub nodes_online: AtomicI64,
    /// Nodes known (gauge).
    pub nodes_known: AtomicI64,
    /// Connections to the broker made (1 + reconnects).
    pub mqtt_connects: AtomicU64,
    /// Broker connection errors.
    pub mqtt_errors: AtomicU64,
    /// HTTP connections closed at once for `http.max_connections`.
    pub http_refused: AtomicU64,
    /// Final event revisions, by kind (index in [`SourceKind::ALL`]).
    pub events_final: [AtomicU64; SourceKind::ALL.len()],
    /// Latest watermark, ns since the epoch (gauge; 0 before the first).
    pub watermark_ns: AtomicI64,
    /// Decision latency histogram: receipt of the deciding message (or, in
    /// wall mode, the start of the deciding tick) to the event handed to
    /// the MQTT client, cumulative counts per bucket.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    /// Histogram count.
    pub latency_count: AtomicU64,
    /// Histogram sum, nanoseconds.
    pub latency_sum_ns: AtomicU64,
}

impl Metrics {
    /// Count a refused message.
    pub fn count_invalid(&self, kind: Kind, reason: Reason) {
        if reason == Reason::Topic {
            self.invalid_topic.fetch_add(1, Relaxed);
        } else {
            self.invalid[kind as usize][reason.index()].fetch_add(1, Relaxed);
        }
    }

    /// Refused messages of `kind` for `reason`.
    pub fn invalid_count(&self, kind: Kind, reason: Reason) -> u64 {
        if reason == Reason::Topic {
            self.invalid_topic.load(Relaxed)
        } else {
            self.invalid[kind as usize][reason.index()].load(Relaxed)
        }
    }

    /// Count a final event revision of `kind`.
    pub fn count_final(&self, kind: SourceKind) {
        if let Some(i) = SourceKind::ALL.iter().position(|k| *k == kind) {
            self.events_final[i].fetch_add(1, Relaxed);
        }
    }

    /// Final event revisions of `kind` so far.
    pub fn final_count(&self, kind: SourceKind) -> u64 {
        SourceKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.events_final[i].load(Relaxed))
    }

    /// Record one decision latency.
    pub fn observe_latency(&self, seconds: f64) {
        for (b, le) in self.latency_buckets.iter().zip(LATENCY_BUCKETS_S) {
            if seconds <= le {
                b.fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add((seconds * 1e9).max(0.0) as u64, Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "blastnet_aggregator_detections_received_total",
            "Detection messages received, valid or not.",
            self.detections_received.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_detections_accepted_total",
            "Detections validated and passed to the engine.",
            self.detections_accepted.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_detections_duplicate_total",
            "Detections dropped as already seen (node_id, seq).",
            self.detections_duplicate.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_detections_late_total",
            "Detections dropped for arriving behind the retention horizon.",
            self.detections_late.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_statuses_received_total",
            "Status messages received, valid or not.",
            self.statuses_received.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_snippets_received_total",
            "Snippet messages (waveform evidence) received, valid or not.",
            self.snippets_received.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_snippets_stored_total",
            "Snippets validated and written to the store.",
            self.snippets_stored.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_events_published_total",
            "Event revisions published on MQTT.",
            self.events_published.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_publish_errors_total",
            "Event publishes refused by the MQTT client.",
            self.publish_errors.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_store_errors_total",
            "Store writes that failed (each attempt; a failed write is retried every second).",
            self.store_errors.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_nodes_flagged_total",
            "Nodes flagged by the engine.",
            self.nodes_flagged.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_detections_unseeded_total",
            "Detections beyond their node's or the network's seed budget (engine.seed_rate_hz): they support sources but seed no search.",
            self.detections_unseeded.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_mqtt_connects_total",
            "Connections made to the broker.",
            self.mqtt_connects.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_mqtt_errors_total",
            "Broker connection errors.",
            self.mqtt_errors.load(Relaxed),
        );
        counter(
            "blastnet_aggregator_http_refused_total",
            "HTTP connections closed at once because http.max_connections were open.",
            self.http_refused.load(Relaxed),
        );

        let name = "blastnet_aggregator_invalid_messages_total";
        let _ = writeln!(
            o,
            "# HELP {name} Messages refused, by kind and reason.\n# TYPE {name} counter"
        );
        let _ = writeln!(
            o,
            "{name}{{kind=\"any\",reason=\"topic\"}} {}",
            self.invalid_topic.load(Relaxed)
        );
        for (kind, label) in [
            (Kind::Detection, "detection"),
            (Kind::Status, "status"),
            (Kind::Snippet, "snippet"),
        ] {
            for r in Reason::ALL.iter().filter(|r| **r != Reason::Topic) {
                let _ = writeln!(
                    o,
                    "{name}{{kind=\"{label}\",reason=\"{}\"}} {}",
                    r.as_str(),
                    self.invalid_count(kind, *r)
                );
            }
        }

        let name = "blastnet_aggregator_events_total";
        let _ = writeln!(
            o,
            "# HELP {name} Final event revisions published, by source kind.\n# TYPE {name} counter"
        );
        for kind in SourceKind::ALL {
            let _ = writeln!(
                o,
                "{name}{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.final_count(kind)
            );
        }

        let name = "blastnet_build_info";
        let _ = writeln!(
            o,
            "# HELP {name} The running build: always 1, its version (and git commit when built with BLASTNET_GIT_COMMIT set) in labels.\n# TYPE {name} gauge"
        );
        let _ = write!(o, "{name}{{version=\"{}\"", label_value(VERSION));
        if let Some(git) = GIT_COMMIT.filter(|g| !g.is_empty()) {
            let _ = write!(o, ",git=\"{}\"", label_value(git));
        }
        let _ = writeln!(o, "}} 1");

        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "blastnet_aggregator_nodes_online",
            "Nodes whose latest status is online or degraded.",
            self.nodes_online.load(Relaxed) as f64,
        );
        gauge(
            "blastnet_aggregator_nodes_known",
            "Nodes seen by status or detection.",
            self.nodes_known.load(Relaxed) as f64,
        );
        gauge(
            "blastnet_aggregator_watermark_seconds",
            "Latest watermark passed to the engine, seconds since the epoch.",
            self.watermark_ns.load(Relaxed) as f64 / 1e9,
        );

        let name = "blastnet_aggregator_decision_latency_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} From receipt of the deciding message (wall mode: the start of the deciding tick) to the event handed to the MQTT client.\n# TYPE {name} histogram"
        );
        for (b, le) in self.latency_buckets.iter().zip(LATENCY_BUCKETS_S) {
            let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {}", b.load(Relaxed));
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "{name}_sum {}",
            self.latency_sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(o, "{name}_count {count}");
        o
    }
}

/// This build's version.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Its git commit, when the build was given one in `BLASTNET_GIT_COMMIT`
/// (e.g. `BLASTNET_GIT_COMMIT=$(git rev-parse --short HEAD) cargo build`).
/// No build script runs git: a source tarball has none, and a build script
/// would rebuild the crate on every commit.
const GIT_COMMIT: Option<&str> = option_env!("BLASTNET_GIT_COMMIT");

/// Nodes given their own series. The registry is already bounded
/// (`ingest.max_nodes_per_site` per site, 10 000 by default); this keeps one
/// scrape's per-node series to about 9 000 (9 families) even so. Beyond it,
/// nodes in id order past the cap are left out and
/// `blastnet_aggregator_node_series_omitted` says how many.
pub const MAX_NODE_SERIES: usize = 1000;

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
pub fn label_value(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// Per-node families from the node registry (as the API shows it), in the
/// text exposition format, appended to `o`. Every family is written, with
/// its HELP and TYPE once, even when no node has a value for it yet.
pub fn render_nodes(nodes: &[NodeView], o: &mut String) {
    let shown = &nodes[..nodes.len().min(MAX_NODE_SERIES)];
    let labels: Vec<String> = shown
        .iter()
        .map(|n| {
            format!(
                "node=\"{}\",site=\"{}\"",
                label_value(&n.node_id),
                label_value(&n.site)
            )
        })
        .collect();
    type Value = fn(&NodeView) -> Option<f64>;
    fn secs(t: Option<blastnet_contract::UtcNs>) -> Option<f64> {
        t.map(|t| t.0 as f64 / 1e9)
    }
    let families: [(&str, &str, &str, Value); 9] = [
        (
            "blastnet_node_detections_total",
            "counter",
            "Detections accepted from the node.",
            |n| Some(n.detections as f64),
        ),
        (
            "blastnet_node_online",
            "gauge",
            "1 while the node is online, degraded, or heard from by detections only; 0 once offline.",
            |n| Some(f64::from(u8::from(matches!(n.state.as_str(), "online" | "degraded" | "unknown")))),
        ),
        (
            "blastnet_node_degraded",
            "gauge",
            "1 while the node's latest status says degraded.",
            |n| Some(f64::from(u8::from(n.state == "degraded"))),
        ),
        (
            "blastnet_node_flagged",
            "gauge",
            "1 if the engine flagged the node (e.g. a clock offset).",
            |n| Some(f64::from(u8::from(n.flagged.is_some()))),
        ),
        (
            "blastnet_node_last_status_seconds",
            "gauge",
            "time_utc of the node's latest status, seconds since the epoch.",
            |n| secs(n.last_status_utc),
        ),
        (
            "blastnet_node_last_detection_seconds",
            "gauge",
            "Onset of the node's latest accepted detection, seconds since the epoch.",
            |n| secs(n.last_detection_utc),
        ),
        (
            "blastnet_node_clock_uncertainty_seconds",
            "gauge",
            "The node's reported clock 1-sigma, seconds.",
            |n| Some(n.clock_uncertainty_s),
        ),
        (
            "blastnet_node_spool_backlog",
            "gauge",
            "Detections spooled on the node, not yet acknowledged by the broker (from its status).",
            |n| Some(n.spool_backlog as f64),
        ),
        (
            "blastnet_node_station_term_seconds",
            "gauge",
            "The station term the engine learned for the node (a delay subtracted from its onsets), seconds; absent until learned.",
            |n| n.station_term_s,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (n, l) in shown.iter().zip(&labels) {
            if let Some(v) = value(n).filter(|v| v.is_finite()) {
                let _ = writeln!(o, "{name}{{{l}}} {v}");
            }
        }
    }
    let name = "blastnet_aggregator_node_series_omitted";
    let _ = writeln!(
        o,
        "# HELP {name} Nodes left out of the per-node families (beyond {MAX_NODE_SERIES}, in id order).\n# TYPE {name} gauge\n{name} {}",
        nodes.len() - shown.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_labelled_invalid_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.count_invalid(Kind::Detection, Reason::NodeMismatch);
        m.count_invalid(Kind::Detection, Reason::NodeMismatch);
        m.observe_latency(0.0003);
        m.observe_latency(0.02);
        let t = m.render();
        assert!(t.contains(
            "blastnet_aggregator_invalid_messages_total{kind=\"detection\",reason=\"node_mismatch\"} 2"
        ));
        assert!(t.contains("blastnet_aggregator_decision_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(t.contains("blastnet_aggregator_decision_latency_seconds_bucket{le=\"0.05\"} 2"));
        assert!(t.contains("blastnet_aggregator_decision_latency_seconds_count 2"));
    }

    fn node(id: &str, detections: u64) -> NodeView {
        let mut n = NodeView::first_heard(id, "s", 0.0, 0.0, 0.0, "online");
        n.clock_uncertainty_s = 1e-6;
        n.detections = detections;
        n
    }

    #[test]
    fn node_label_values_are_escaped() {
        let mut t = String::new();
        render_nodes(&[node("a\"b\\c\nd", 3)], &mut t);
        assert!(
            t.contains("blastnet_node_detections_total{node=\"a\\\"b\\\\c\\nd\",site=\"s\"} 3\n"),
            "{t}"
        );
    }

    #[test]
    fn per_node_series_stop_at_the_cap_and_say_how_many_were_left_out() {
        let nodes: Vec<NodeView> = (0..MAX_NODE_SERIES + 7)
            .map(|i| node(&format!("n{i:05}"), 1))
            .collect();
        let mut t = String::new();
        render_nodes(&nodes, &mut t);
        let series = t
            .lines()
            .filter(|l| l.starts_with("blastnet_node_online{"))
            .count();
        assert_eq!(series, MAX_NODE_SERIES);
        assert!(t.contains("\nblastnet_aggregator_node_series_omitted 7\n"));
        // Families without a value (no station term learned) keep HELP and TYPE.
        assert!(t.contains("# TYPE blastnet_node_station_term_seconds gauge\n"));
        assert!(!t.contains("blastnet_node_station_term_seconds{"));
    }

    #[test]
    fn final_events_are_counted_by_kind_and_build_info_is_one() {
        let m = Metrics::default();
        m.count_final(SourceKind::Gunshot);
        m.count_final(SourceKind::Gunshot);
        m.count_final(SourceKind::Launch);
        let t = m.render();
        assert!(t.contains("blastnet_aggregator_events_total{kind=\"gunshot\"} 2\n"));
        assert!(t.contains("blastnet_aggregator_events_total{kind=\"launch\"} 1\n"));
        assert!(t.contains("blastnet_aggregator_events_total{kind=\"explosion\"} 0\n"));
        assert!(t.contains(&format!("blastnet_build_info{{version=\"{VERSION}\"")));
    }
}
