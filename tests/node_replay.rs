//! `blastnet node` replaying a scenario publishes every detection the
//! detection core finds, in seq order and in the SPEC schema; its retained
//! status and last will behave as SPEC says. Each runs against the embedded
//! broker and against a Mosquitto process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use std::time::Duration;

use blastnet_contract::NodeState;
use node_common::*;

fn replay_publishes_everything(port: u16, tag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let sc = write_scenario(
        &tmp.path().join("sc"),
        &format!("r-{tag}"),
        26.0,
        1.0,
        2.0,
        11,
    );
    let expected = expected_onsets(&sc);
    let sub = Subscriber::start(port, &format!("sub-replay-{tag}"));
    sub.wait_subscribed(1, Duration::from_secs(10));
    let cfg = node_config(tmp.path(), &sc, port, "fast", 1.0);
    let log = tmp.path().join("node.log");
    let mut node = spawn_node(&cfg, &log);
    let st = wait_exit(&mut node, Duration::from_secs(60), &log);
    assert!(
        st.success(),
        "node failed: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    let last = sub.wait_offline(&sc.node_id, Duration::from_secs(10));
    let dets = check_detections(&sub.snapshot(), &sc.node_id, &expected);
    assert!(dets.iter().all(|d| d.site.as_deref() == Some("test")));
    // Status: data time, every 10 s of data, then at the end; offline last.
    let end = sc.start.add_secs_f64(sc.duration_s);
    assert_eq!(
        last.time_utc, end,
        "the final status carries the end of the data"
    );
    assert_eq!(last.spool_backlog, 0);
    let sts = sub.statuses(&sc.node_id);
    let online: Vec<_> = sts
        .iter()
        .filter(|(s, _)| s.state == NodeState::Online)
        .collect();
    // Heartbeats at data 0, 10, 20 s and at the end: 4 (published, not necessarily all retained).
    assert_eq!(online.len(), 4, "{online:?}");
    assert!(online
        .windows(2)
        .all(|w| w[0].0.time_utc <= w[1].0.time_utc));
    assert!(online
        .iter()
        .all(|(s, _)| s.time_utc >= sc.start && s.time_utc <= end));
    assert!(online
        .last()
        .unwrap()
        .0
        .noise_floor_db
        .contains_key("acoustic"));
    assert_eq!(
        online.last().unwrap().0.counters["detections"],
        expected.len() as u64
    );
}

#[test]
fn replay_publishes_every_detection_in_seq_order_in_the_spec_schema() {
    let embedded = std::thread::spawn(|| {
        let b = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();
        replay_publishes_everything(b.port(), "emb");
    });
    let m = blastnet_broker::Mosquitto::start_required();
    replay_publishes_everything(m.port(), "mosq");
    embedded.join().unwrap();
}

fn retained_status_then_last_will(port: u16, tag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let sc = write_scenario(
        &tmp.path().join("sc"),
        &format!("w-{tag}"),
        40.0,
        1.0,
        5.0,
        12,
    );
    let cfg = node_config(tmp.path(), &sc, port, "realtime", 1.0);
    let log = tmp.path().join("node.log");
    let mut node = spawn_node(&cfg, &log);
    // A subscriber that arrives later still sees the node's status: it is retained.
    let first = Subscriber::start(port, &format!("sub-early-{tag}"));
    first.wait_for("a status", Duration::from_secs(15), |m| {
        m.iter().any(|m| m.topic.ends_with("/status"))
    });
    let late = Subscriber::start(port, &format!("sub-late-{tag}"));
    late.wait_for("the retained status", Duration::from_secs(10), |m| {
        !m.is_empty()
    });
    let (st, retained) = late.statuses(&sc.node_id)[0].clone();
    assert!(
        retained,
        "a late subscriber gets the status as a retained message"
    );
    assert_eq!(st.state, NodeState::Online);
    assert_eq!(st.schema, "blastnet.status/1");
    assert_eq!(st.node_id, sc.node_id);
    // The node dies without a goodbye: the broker publishes its last will.
    node.kill().unwrap();
    node.wait().unwrap();
    let will = late.wait_offline(&sc.node_id, Duration::from_secs(15));
    assert_eq!(will.node_id, sc.node_id);
    assert_eq!(will.schema, "blastnet.status/1");
    // And it is retained: a newcomer sees the node offline.
    let after = Subscriber::start(port, &format!("sub-after-{tag}"));
    after.wait_for("the retained will", Duration::from_secs(10), |m| {
        !m.is_empty()
    });
    let (st, retained) = after.statuses(&sc.node_id).last().unwrap().clone();
    assert!(retained);
    assert_eq!(st.state, NodeState::Offline);
}

#[test]
fn a_subscriber_sees_the_retained_status_and_after_the_node_dies_the_last_will() {
    let embedded = std::thread::spawn(|| {
        let b = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();
        retained_status_then_last_will(b.port(), "emb");
    });
    let m = blastnet_broker::Mosquitto::start_required();
    retained_status_then_last_will(m.port(), "mosq");
    embedded.join().unwrap();
}

#[test]
fn print_config_prints_the_commented_default_and_it_checks() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(["node", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("# blastnet node configuration"));
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("node.toml");
    std::fs::write(&p, &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(["node", "--check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bad field is named, with the file.
    std::fs::write(&p, "[mqtt]\nurl = \"http://x\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(["node", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node.toml") && err.contains("mqtt.url"),
        "{err}"
    );
}
