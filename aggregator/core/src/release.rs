//! Data-time order for replays: detections are held back and handed to the
//! engine sorted by onset, with the engine's watermark stepped on a fixed
//! grid of data time, so that a replay gives the same events whatever order
//! the broker interleaved the nodes in.
//!
//! Why it is enough: in nodes mode the watermark `W` (see
//! [`crate::NodesWatermark`]) promises that every detection with an onset at
//! or before `W` has been delivered (each node's status time is its data
//! position minus its detector's worst-case latency, and a node's messages
//! arrive in order). So when `W` passes a grid point `g`, the set of
//! detections with onset ≤ `g` is complete, and the engine can be given them
//! (in onset order, ties by node id and seq) and then `advance(g)`. The
//! engine's calls are then a function of the data alone: which grid points
//! `W` jumped over in one message or in several no longer matters.
//!
//! The grid starts at the cell of the first detection (before it the engine
//! has nothing to decide) and steps every [`STEP`], also through quiet
//! stretches (an open event's deadline is checked at every step, as a live
//! watermark would). At the end ([`DataTimeOrder::drain`]) what is left is
//! released up to the last onset, before the engine is flushed.
//!
//! Live (wall-clock watermark) the service does not use this: there arrival
//! order is data order to within the network's delay, and latency matters.

use std::collections::BTreeMap;

use blastnet_contract::{Detection, UtcNs};

use crate::NodeInfo;

/// Grid of data time on which the engine's watermark is stepped, ns: 0.1 s,
/// a twentieth of the shortest association window a source within an
/// array of a few hundred metres needs, so the engine sees a replay much as
/// it would see the night live.
pub const STEP: i64 = 100_000_000;

/// Data time after the last release beyond which the grid is not stepped
/// cell by cell, ns: 600 s, longer than any event stays open (an event's
/// deadline is its largest travel time plus lateness), so nothing is left
/// for the steps in between to decide. The grid then jumps to the cell of
/// the next data (or the watermark): a long quiet night, or a status whose
/// time is years ahead, costs one step instead of one per 0.1 s.
pub const MAX_QUIET: i64 = 600_000_000_000;

/// One call for the engine, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// `Engine::upsert_node` (a node's status changed at this data time).
    Node(NodeInfo),
    /// `Engine::on_detection`.
    Detection(Box<Detection>),
    /// `Engine::advance` to this data time.
    Advance(UtcNs),
}

/// What waits: at one data time, a node's status change goes before
/// detections (the engine must know the node, and whether it listens);
/// then by node id, then per node in the order it sent them.
type Key = (UtcNs, u8, String, u64);

/// Node updates and detections waiting for the watermark, in data-time order.
#[derive(Debug, Clone, Default)]
pub struct DataTimeOrder {
    queue: BTreeMap<Key, Release>,
    /// Per node: status changes held so far (their order within the node).
    node_updates: BTreeMap<String, u64>,
    /// First statuses not yet handed on, by node id.
    registrations: BTreeMap<String, NodeInfo>,
    /// The next grid point to step to (none before the first detection).
    next: Option<UtcNs>,
    /// Data time of the latest call released (the grid's start before any).
    last_release: Option<UtcNs>,
}

fn grid_floor(t: UtcNs) -> UtcNs {
    UtcNs(t.0.div_euclid(STEP) * STEP)
}

impl DataTimeOrder {
    /// An empty queue.
    pub fn new() -> DataTimeOrder {
        DataTimeOrder::default()
    }

    /// Hold a detection until the watermark passes its onset.
    pub fn push(&mut self, d: Detection) {
        self.queue.insert(
            (d.onset_utc, 1, d.node_id.clone(), d.seq),
            Release::Detection(Box::new(d)),
        );
    }

    /// A node's first status: the engine learns of it before any data (by
    /// node id), as a node that listened from the start. (Not at that
    /// status's own time: a node's statuses are latest-wins on the way, so
    /// which one arrives first is not part of the data.)
    pub fn register_node(&mut self, info: NodeInfo) {
        self.registrations.insert(info.id.clone(), info);
    }

    /// A later change of a node's status (liveness, position, clock): held
    /// until the watermark passes `time`, the data time of the status.
    pub fn push_node(&mut self, info: NodeInfo, time: UtcNs) {
        let n = self.node_updates.entry(info.id.clone()).or_default();
        *n += 1;
        self.queue
            .insert((time, 0, info.id.clone(), *n), Release::Node(info));
    }

    /// Calls held.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.registrations.len()
    }

    /// The watermark is now `wm`: the calls for every grid point up to it.
    pub fn advance(&mut self, wm: UtcNs, out: &mut Vec<Release>) {
        self.step_until(wm, out);
    }

    /// The end of the data (every node offline): release what is left, up
    /// to the grid point at or after the last onset.
    pub fn drain(&mut self, out: &mut Vec<Release>) {
        if let Some(((last, ..), _)) = self.queue.last_key_value() {
            let end = UtcNs(grid_floor(*last).0 + STEP);
            self.step_until(end, out);
        }
    }

    fn step_until(&mut self, wm: UtcNs, out: &mut Vec<Release>) {
        out.extend(
            std::mem::take(&mut self.registrations)
                .into_values()
                .map(Release::Node),
        );
        if self.next.is_none() {
            match self.queue.first_key_value() {
                Some(((first, ..), _)) if *first <= wm => self.next = Some(grid_floor(*first)),
                _ => return,
            }
        }
        while let Some(g) = self.next.filter(|g| *g <= wm) {
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > g {
                    break;
                }
                self.last_release = Some(entry.key().0);
                out.push(entry.remove());
            }
            out.push(Release::Advance(g));
            let mut next = UtcNs(g.0 + STEP);
            let quiet_since = *self.last_release.get_or_insert(g);
            if g.0.saturating_sub(quiet_since.0) > MAX_QUIET {
                let data = self
                    .queue
                    .first_key_value()
                    .map_or(wm, |(k, _)| k.0.min(wm));
                next = next.max(grid_floor(data));
            }
            self.next = Some(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blastnet_contract::testing::DetectionBuilder;

    fn det(node: &str, seq: u64, ms: i64) -> Detection {
        DetectionBuilder::new(node, seq, UtcNs(1_000_000_000_000 + ms * 1_000_000)).build()
    }

    fn calls(o: &mut DataTimeOrder, wms: &[i64], dets: &[Detection]) -> Vec<Release> {
        for d in dets {
            o.push(d.clone());
        }
        let mut out = Vec::new();
        for &w in wms {
            o.advance(UtcNs(1_000_000_000_000 + w * 1_000_000), &mut out);
        }
        o.drain(&mut out);
        out
    }

    #[test]
    fn the_calls_depend_on_the_data_not_on_how_the_watermark_moved() {
        let dets = [
            det("b", 1, 120),
            det("a", 7, 120),
            det("a", 8, 480),
            det("c", 2, 30),
        ];
        let mut reversed = dets.to_vec();
        reversed.reverse();
        let one_jump = calls(&mut DataTimeOrder::new(), &[1000], &dets);
        let many = calls(
            &mut DataTimeOrder::new(),
            &[10, 130, 140, 700, 1000],
            &reversed,
        );
        assert_eq!(one_jump, many);
        // In onset order, ties by node id, each just before the first grid point
        // at or after it; the grid starts at the first onset's cell.
        let order: Vec<String> = one_jump
            .iter()
            .map(|c| match c {
                Release::Detection(d) => format!("{}{}", d.node_id, d.seq),
                Release::Advance(t) => format!("@{}", (t.0 - 1_000_000_000_000) / 1_000_000),
                Release::Node(n) => n.id.clone(),
            })
            .collect();
        assert_eq!(
            order,
            [
                "@0", "c2", "@100", "a7", "b1", "@200", "@300", "@400", "a8", "@500", "@600",
                "@700", "@800", "@900", "@1000"
            ]
        );
    }

    #[test]
    fn a_long_quiet_stretch_is_stepped_over_in_one_jump() {
        let day = 86_400_000;
        let mut o = DataTimeOrder::new();
        let out = calls(
            &mut o,
            &[1000, 2 * day, 2 * day + 5000],
            &[det("a", 1, 0), det("a", 2, 2 * day)],
        );
        // 0.1 s steps for the first 600 s after the last data, then one jump.
        let steps = (MAX_QUIET / STEP) as usize;
        assert!(out.len() < steps + 100, "{} calls", out.len());
        let second = out
            .iter()
            .position(|c| matches!(c, Release::Detection(d) if d.seq == 2))
            .unwrap();
        let at = |ms: i64| Release::Advance(UtcNs(1_000_000_000_000 + ms * 1_000_000));
        assert_eq!(
            (&out[second - 1], &out[second + 1]),
            (&at(MAX_QUIET / 1_000_000 + 100), &at(2 * day)),
            "the last quiet step, then the jump to the next data's cell"
        );
    }

    #[test]
    fn nothing_is_released_before_the_watermark_passes_it() {
        let mut o = DataTimeOrder::new();
        o.push(det("a", 1, 250));
        let mut out = Vec::new();
        o.advance(UtcNs(1_000_000_000_000 + 200_000_000), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(o.pending(), 1);
        o.drain(&mut out);
        assert_eq!(o.pending(), 0);
        let grid = |ms: i64| Release::Advance(UtcNs(1_000_000_000_000 + ms * 1_000_000));
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!((&out[0], &out[2]), (&grid(200), &grid(300)));
        assert!(matches!(out[1], Release::Detection(_)));
    }
}
