//! `blastnet node` is killed with SIGKILL in the middle of a replay and
//! started again with the same config: no detection is lost, none is
//! published under two seqs, seqs continue without a hole.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use std::time::Duration;

use blastnet_contract::NodeState;
use node_common::*;

fn sigkill(port: u16, tag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let sc = write_scenario(
        &tmp.path().join("sc"),
        &format!("k-{tag}"),
        30.0,
        0.7,
        1.3,
        31,
    );
    let expected = expected_onsets(&sc);
    let sub = Subscriber::start(port, &format!("sub-kill-{tag}"));
    sub.wait_subscribed(1, Duration::from_secs(10));
    let cfg = node_config(tmp.path(), &sc, port, "realtime", 3.0);
    let log1 = tmp.path().join("node1.log");
    let mut node = spawn_node(&cfg, &log1);
    // Let a few detections through, then kill it mid-replay.
    sub.wait_for("four detections", Duration::from_secs(20), |m| {
        m.iter().filter(|m| m.topic.ends_with("/detection")).count() >= 4
    });
    std::thread::sleep(Duration::from_millis(300));
    node.kill().unwrap(); // SIGKILL
    node.wait().unwrap();
    let before = sub
        .snapshot()
        .iter()
        .filter(|m| m.topic.ends_with("/detection"))
        .count();
    assert!(
        before < expected.len(),
        "killed too late: {before} of {} already out",
        expected.len()
    );
    // The last will says it is gone.
    sub.wait_offline(&sc.node_id, Duration::from_secs(15));
    let log2 = tmp.path().join("node2.log");
    let mut node = spawn_node(&cfg, &log2);
    let st = wait_exit(&mut node, Duration::from_secs(60), &log2);
    assert!(
        st.success(),
        "restarted node failed: {}",
        std::fs::read_to_string(&log2).unwrap()
    );
    sub.wait_for(
        "the final offline status after the restart",
        Duration::from_secs(10),
        |_| {
            sub.statuses(&sc.node_id)
                .iter()
                .filter(|(s, _)| s.state == NodeState::Offline)
                .count()
                >= 2
        },
    );
    check_detections(&sub.snapshot(), &sc.node_id, &expected);
    // The restart resumed: it re-found the picks already spooled and skipped them
    // (rather than publishing them again under new seqs).
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(log.contains("resuming replay"), "{log}");
    let skipped: usize = log
        .split(" skipped as already spooled")
        .next()
        .and_then(|head| head.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no summary line in:\n{log}"));
    assert!(
        skipped >= before,
        "skipped {skipped}, but {before} were already published"
    );
}

#[test]
fn sigkill_mid_replay_loses_no_detection_embedded() {
    let b = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();
    sigkill(b.port(), "emb");
}

#[test]
fn sigkill_mid_replay_loses_no_detection_mosquitto() {
    let m = blastnet_broker::Mosquitto::start_required();
    sigkill(m.port(), "mosq");
}
