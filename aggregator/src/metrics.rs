//! Counters and gauges, rendered as Prometheus text exposition format 0.0.4.
//!
//! Hand-written rather than the `prometheus` crate: a dozen atomics and one
//! fixed-bucket histogram are all the service needs, the text format is a few
//! lines, and it keeps the aggregator's dependency tree (already axum,
//! rumqttc, rusqlite) from growing a registry with its own locking.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::ingest::Reason;

/// Which kind of node message a counter is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.../detection`.
    Detection = 0,
    /// `.../status`.
    Status = 1,
}

/// Upper bounds (seconds) of the decision-latency histogram buckets.
pub const LATENCY_BUCKETS_S: [f64; 10] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 250e-3,
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
    /// Messages refused, by kind and reason (index [`Reason::index`]).
    pub invalid: [[AtomicU64; Reason::ALL.len()]; 2],
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
    /// Detections beyond their node's seed budget (`engine.seed_rate_hz`):
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
    /// Latest watermark, ns since the epoch (gauge; 0 before the first).
    pub watermark_ns: AtomicI64,
    /// Decision latency histogram: receipt of the deciding message to the
    /// event handed to the MQTT client, cumulative counts per bucket.
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
            "Detections beyond their node's seed budget (engine.seed_rate_hz): they support sources but seed no search.",
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
        for (kind, label) in [(Kind::Detection, "detection"), (Kind::Status, "status")] {
            for r in Reason::ALL.iter().filter(|r| **r != Reason::Topic) {
                let _ = writeln!(
                    o,
                    "{name}{{kind=\"{label}\",reason=\"{}\"}} {}",
                    r.as_str(),
                    self.invalid_count(kind, *r)
                );
            }
        }

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
            "# HELP {name} From receipt of the deciding message to the event handed to the MQTT client.\n# TYPE {name} histogram"
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
}
