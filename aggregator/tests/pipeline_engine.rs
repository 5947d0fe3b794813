//! The pipeline with the real engine, no broker: what the service would do
//! with traffic in a given order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use blastnet_aggregator::metrics::Metrics;
use blastnet_aggregator::pipeline::{Output, Pipeline};
use blastnet_aggregator::testkit::nodes_mode_config;
use blastnet_aggregator::testkit::Layout;
use blastnet_contract::{Enu, EnuFrame, Event, EventStatus, Geodetic, NodeState, UtcNs};

fn pipeline() -> Pipeline {
    pipeline_expecting(Vec::new())
}

/// The final revisions among the pipeline's outputs.
fn finals(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) if e.event.status == EventStatus::Final => Some(e.event.clone()),
            _ => None,
        })
        .collect()
}

/// Nodes mode, waiting for `expect_nodes` (as a replay does for its manifest's).
fn pipeline_expecting(expect_nodes: Vec<String>) -> Pipeline {
    Pipeline::new(
        nodes_mode_config(expect_nodes),
        Arc::new(Metrics::default()),
    )
}

/// Two sources 15 s apart, all picks delivered in onset order, then a status
/// that moves the watermark past both: both must come out final.
///
/// Regression: the engine dropped unassociated picks 2 windows behind the
/// newest onset, before a lagging watermark let their hypothesis be judged,
/// and lost the first source.
#[test]
fn two_sources_fifteen_seconds_apart_are_both_located() {
    let centre = Geodetic::new(40.4406, -79.9959, 250.0);
    let layout = Layout::ring("city", centre, 5, 600.0);
    let frame = EnuFrame::new(centre);
    let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
    let mut p = pipeline();
    let mut out = Vec::new();
    for (t, pl) in layout.statuses(NodeState::Online, t0) {
        p.on_message(&t, &pl, &mut out);
    }
    let mut all = Vec::new();
    for (i, (e, n, dt)) in [(150.0, -100.0, 5.0), (-900.0, 300.0, 20.0)]
        .into_iter()
        .enumerate()
    {
        let src = frame.to_geodetic(Enu::new(e, n, 0.0));
        let mut dets = layout.detections(src, t0.add_secs_f64(dt), i as u64 + 1);
        for d in &mut dets {
            d.onset_uncertainty_s = 0.02;
        }
        all.extend(dets);
    }
    for (t, pl) in layout.detection_messages(&all) {
        p.on_message(&t, &pl, &mut out);
    }
    for (t, pl) in layout.statuses(NodeState::Online, t0.add_secs_f64(90.0)) {
        p.on_message(&t, &pl, &mut out);
    }
    let finals = finals(&out);
    assert_eq!(finals.len(), 2, "{finals:#?}");
}

/// Replay race: two of five nodes replay their whole recording (online,
/// picks, offline) before the other three have even said they are online.
/// With the manifest's nodes expected, nothing is judged until all five
/// have reported, and the source is located from all five.
///
/// Regression: the aggregator judged and completed on the two nodes it had
/// heard of, and the three late nodes' picks arrived after the end (most
/// ShotSpotter tests were located from two or three sensors, or not at all).
#[test]
fn a_node_whose_replay_starts_late_is_still_heard() {
    let centre = Geodetic::new(40.4406, -79.9959, 250.0);
    let layout = Layout::ring("city", centre, 5, 600.0);
    let frame = EnuFrame::new(centre);
    let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
    let ids: Vec<String> = layout.nodes.iter().map(|(id, _)| id.clone()).collect();
    let mut p = pipeline_expecting(ids.clone());
    let src = frame.to_geodetic(Enu::new(150.0, -100.0, 0.0));
    let dets = layout.detections(src, t0.add_secs_f64(5.0), 1);
    let mut out = Vec::new();
    let online = layout.statuses(NodeState::Online, t0);
    let done = layout.statuses(NodeState::Offline, t0.add_secs_f64(30.0));
    let msgs = layout.detection_messages(&dets);
    // Node by node, each one's whole replay; the first two finish first.
    for (k, id) in ids.iter().enumerate() {
        let mine = |t: &String| t.contains(&format!("/node/{id}/"));
        for (t, pl) in online.iter().filter(|(t, _)| mine(t)) {
            p.on_message(t, pl, &mut out);
        }
        for (t, pl) in msgs.iter().filter(|(t, _)| mine(t)) {
            p.on_message(t, pl, &mut out);
        }
        for (t, pl) in done.iter().filter(|(t, _)| mine(t)) {
            p.on_message(t, pl, &mut out);
        }
        let completed = out.iter().any(|o| matches!(o, Output::Completed));
        assert_eq!(
            completed,
            k + 1 == ids.len(),
            "after node {k}: completed {completed}"
        );
    }
    let finals = finals(&out);
    assert_eq!(finals.len(), 1, "{finals:#?}");
    assert_eq!(finals[0].detections.len(), 5, "{:#?}", finals[0]);
}
