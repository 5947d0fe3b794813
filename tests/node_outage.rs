//! The broker is stopped for 11 s in the middle of a replay and restarted:
//! every detection arrives, none under two seqs, first arrivals in seq order.
//!
//! The node reaches the broker through a gated TCP proxy that the test
//! closes while the broker is down and opens once the test's subscriber has
//! re-subscribed; otherwise detections the node re-sends in the first
//! milliseconds after the restart could reach the broker before the
//! subscriber is back, and the test would blame the node for its own absence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use std::time::{Duration, Instant};

use node_common::*;

const OUTAGE: Duration = Duration::from_secs(11);

fn outage(port: u16, tag: &str, stop: &mut dyn FnMut(), start: &mut dyn FnMut()) {
    let tmp = tempfile::tempdir().unwrap();
    // 36 s of data at 2x: the replay runs ~18 s of wall time; the broker is
    // down from ~3 s to ~14 s, while pulses keep coming.
    let sc = write_scenario(
        &tmp.path().join("sc"),
        &format!("o-{tag}"),
        36.0,
        1.0,
        1.5,
        21,
    );
    let expected = expected_onsets(&sc);
    let proxy = Proxy::start(port);
    let sub = Subscriber::start(port, &format!("sub-outage-{tag}"));
    sub.wait_subscribed(1, Duration::from_secs(10));
    let cfg = node_config(tmp.path(), &sc, proxy.port, "realtime", 2.0);
    let log = tmp.path().join("node.log");
    let t0 = Instant::now();
    let mut node = spawn_node(&cfg, &log);
    sub.wait_for("the first detection", Duration::from_secs(20), |m| {
        m.iter().any(|m| m.topic.ends_with("/detection"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let before = sub
        .snapshot()
        .iter()
        .filter(|m| m.topic.ends_with("/detection"))
        .count();
    proxy.set_open(false);
    stop();
    let down_at = Instant::now();
    std::thread::sleep(OUTAGE);
    start();
    sub.wait_subscribed(2, Duration::from_secs(10));
    proxy.set_open(true);
    let down_for = down_at.elapsed();
    let st = wait_exit(&mut node, Duration::from_secs(90), &log);
    assert!(
        st.success(),
        "node failed: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    sub.wait_offline(&sc.node_id, Duration::from_secs(10));
    let msgs = sub.snapshot();
    let during = msgs
        .iter()
        .filter(|m| m.topic.ends_with("/detection"))
        .count()
        - before;
    check_detections(&msgs, &sc.node_id, &expected);
    assert!(down_for >= Duration::from_secs(10));
    assert!(t0.elapsed() < Duration::from_secs(80));
    // The outage really was mid-replay: detections came before it and after it.
    assert!(
        before >= 1 && during >= 5,
        "before {before}, after {during} of {}",
        expected.len()
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("reconnecting") || log.contains("retrying"),
        "the node saw the outage:\n{log}"
    );
}

#[test]
fn broker_outage_loses_no_detection_embedded() {
    let mut b = EmbeddedProcess::start();
    let port = b.port;
    let b = std::cell::RefCell::new(&mut b);
    outage(port, "emb", &mut || b.borrow_mut().stop(), &mut || {
        b.borrow_mut().start_again()
    });
}

#[test]
fn broker_outage_loses_no_detection_mosquitto() {
    let m = blastnet_broker::Mosquitto::start_required();
    let port = m.port();
    let m = std::cell::RefCell::new(m);
    outage(port, "mosq", &mut || m.borrow_mut().stop(), &mut || {
        m.borrow_mut().start_again().unwrap()
    });
}
