//! The nodes-mode watermark: data time driven by the nodes themselves
//! rather than the wall clock, for replays (see ARCHITECTURE.md, "Replay").
//! Each node's status messages carry its data time; per-node delivery is in
//! order, so once a node has said "I am at t", everything it detected before
//! t has been delivered. The watermark is the slowest online node's latest
//! status time, once every expected node has been heard; when every node
//! that came online has gone offline, the engine is flushed.
//!
//! A pure type (no clock, no I/O) so that the service and the tests that
//! stand in for it (tests/salvo_traces.rs) drive the engine by one rule: the
//! same messages in the same order give the same engine calls.

use std::collections::BTreeMap;

use blastnet_contract::UtcNs;

/// What a node has said of its data time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NodeClock {
    /// Latest status time (none: heard only through detections so far).
    status_time: Option<UtcNs>,
    /// Alive (status online or degraded, or heard only through detections).
    online: bool,
}

/// What the engine must be told after a message (see
/// [`NodesWatermark::step`]), in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatermarkStep {
    /// Advance the engine's watermark to this time (later than any before).
    pub advance: Option<UtcNs>,
    /// Every node that came online has gone offline: flush the engine (once).
    pub flush: bool,
}

/// The nodes-mode watermark over a registry of nodes' liveness and data
/// time. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct NodesWatermark {
    /// Nodes whose first status the watermark waits for.
    expect: Vec<String>,
    nodes: BTreeMap<String, NodeClock>,
    watermark: Option<UtcNs>,
    seen_online: bool,
    completed: bool,
}

impl NodesWatermark {
    /// A watermark that waits for the first status of every node in
    /// `expect` (an expected node not heard yet has delivered nothing).
    pub fn new(expect: Vec<String>) -> NodesWatermark {
        NodesWatermark {
            expect,
            ..NodesWatermark::default()
        }
    }

    /// A detection from node `id`: a node heard of first through a
    /// detection is registered as alive, with no data time yet.
    pub fn on_detection(&mut self, id: &str) {
        if !self.nodes.contains_key(id) {
            self.nodes.insert(
                id.to_string(),
                NodeClock {
                    status_time: None,
                    online: true,
                },
            );
        }
    }

    /// A status of node `id` at data time `time`, alive or not.
    pub fn on_status(&mut self, id: &str, time: UtcNs, online: bool) {
        let clock = self.nodes.entry(id.to_string()).or_insert(NodeClock {
            status_time: None,
            online,
        });
        clock.status_time = Some(clock.status_time.map_or(time, |p| p.max(time)));
        clock.online = online;
        if online {
            self.seen_online = true;
            self.completed = false;
        }
    }

    /// What the engine must be told now: a later watermark, and whether to
    /// flush (once every node that came online has gone offline).
    pub fn step(&mut self) -> WatermarkStep {
        let mut step = WatermarkStep::default();
        if self
            .expect
            .iter()
            .any(|id| self.nodes.get(id).is_none_or(|n| n.status_time.is_none()))
        {
            return step;
        }
        let wm = self
            .nodes
            .values()
            .filter(|n| n.online)
            .filter_map(|n| n.status_time)
            .min();
        if let Some(wm) = wm {
            if self.watermark.is_none_or(|w| wm > w) {
                self.watermark = Some(wm);
                step.advance = Some(wm);
            }
        }
        let any_online = self.nodes.values().any(|n| n.online);
        if self.seen_online && !any_online && !self.completed {
            self.completed = true;
            step.flush = true;
        }
        step
    }

    /// Whether node `id` has sent a status (so has a data time).
    pub fn has_status(&self, id: &str) -> bool {
        self.nodes.get(id).is_some_and(|n| n.status_time.is_some())
    }

    /// The latest watermark returned by [`NodesWatermark::step`].
    pub fn watermark(&self) -> Option<UtcNs> {
        self.watermark
    }

    /// Whether every node that came online has gone offline (and the
    /// flush was asked for).
    pub fn completed(&self) -> bool {
        self.completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> UtcNs {
        UtcNs(s * 1_000_000_000)
    }

    #[test]
    fn the_watermark_waits_for_every_expected_node_then_follows_the_slowest() {
        let mut w = NodesWatermark::new(vec!["a".into(), "b".into()]);
        w.on_status("a", t(10), true);
        assert_eq!(w.step(), WatermarkStep::default());
        w.on_status("b", t(4), true);
        assert_eq!(w.step().advance, Some(t(4)));
        w.on_status("a", t(12), true);
        assert_eq!(w.step().advance, None, "the slowest node has not moved");
        w.on_status("b", t(11), true);
        assert_eq!(w.step().advance, Some(t(11)));
    }

    #[test]
    fn a_node_gone_offline_no_longer_holds_the_watermark_back() {
        let mut w = NodesWatermark::new(Vec::new());
        w.on_status("a", t(5), true);
        w.on_status("b", t(2), true);
        assert_eq!(w.step().advance, Some(t(2)));
        w.on_status("b", t(3), false);
        assert_eq!(w.step().advance, Some(t(5)));
    }

    #[test]
    fn the_engine_is_flushed_once_when_every_node_has_gone_offline() {
        let mut w = NodesWatermark::new(Vec::new());
        w.on_detection("c");
        w.on_status("a", t(1), true);
        w.on_status("a", t(2), false);
        assert!(!w.step().flush, "c, heard through a detection, is alive");
        w.on_status("c", t(2), false);
        assert!(w.step().flush);
        assert!(w.completed());
        assert!(!w.step().flush, "only once");
    }
}
