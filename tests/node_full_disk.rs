//! `blastnet node` on a real full file system (#17): its state directory
//! (spool, seq, replay checkpoint) on a small tmpfs that fills up while
//! detections wait for an unreachable broker. The node starts again on the
//! full disk, drains its spool to the broker once it is back, and loses
//! nothing: every detection arrives once, under one seq (the restart of a
//! finished replay whose detections still wait does not replay it again).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;
mod small_fs;

use std::time::Duration;

use node_common::*;
use small_fs::SmallFs;

#[test]
fn a_node_on_a_full_disk_starts_and_drains_its_spool() {
    let tmp = tempfile::tempdir().unwrap();
    // The node's state directory is `<dir>/state` (node_config).
    let Some(small) = SmallFs::mount_or_skip(
        "a_node_on_a_full_disk_starts_and_drains_its_spool",
        &tmp.path().join("state"),
        "4m",
    ) else {
        return;
    };
    let sc = write_scenario(&tmp.path().join("sc"), "fd", 20.0, 1.0, 1.5, 41);
    let expected = expected_onsets(&sc);
    let broker = blastnet_broker::Mosquitto::start_required();
    let proxy = Proxy::start(broker.port());
    proxy.set_open(false);
    let sub = Subscriber::start(broker.port(), "sub-full-disk");
    sub.wait_subscribed(1, Duration::from_secs(10));
    // Run 1: the broker out of reach; every detection is spooled, and the
    // node gives up draining after 2 s.
    let cfg = node_config(tmp.path(), &sc, proxy.port, "fast", 1.0);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("[state]\n", "[state]\ndrain_timeout_s = 2\n"),
    )
    .unwrap();
    let log1 = tmp.path().join("node1.log");
    let mut node = spawn_node(&cfg, &log1);
    wait_exit(&mut node, Duration::from_secs(60), &log1);
    let spool = small.0.join("spool");
    let spooled = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().is_file())
                    .count()
            })
            .unwrap_or(0)
    };
    let waiting = spooled(&spool);
    assert!(
        waiting >= expected.len(),
        "{waiting} spooled of {} detections: {}",
        expected.len(),
        std::fs::read_to_string(&log1).unwrap()
    );
    assert!(
        !sub.snapshot()
            .iter()
            .any(|m| m.topic.ends_with("/detection")),
        "a detection got through the closed proxy"
    );
    // The disk fills up; the broker comes back.
    let filler = small.fill("filler");
    // Full: not one more byte.
    let probe = std::fs::write(small.0.join("probe"), b"x").map_err(|e| e.raw_os_error());
    assert_eq!(probe, Err(Some(28)), "the state's file system is not full");
    proxy.set_open(true);
    // Run 2, on the full disk: it starts, publishes what waited, removes it
    // from the spool, and exits drained.
    let log2 = tmp.path().join("node2.log");
    let mut node = spawn_node(&cfg, &log2);
    let st = wait_exit(&mut node, Duration::from_secs(60), &log2);
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(st.success(), "the node on a full disk failed: {log}");
    sub.wait_offline(&sc.node_id, Duration::from_secs(10));
    check_detections(&sub.snapshot(), &sc.node_id, &expected);
    assert_eq!(spooled(&spool), 0, "spool not drained: {log}");
    // The replay had finished: the restart re-read it but spooled nothing
    // again (it used to run it afresh and publish every detection twice).
    assert!(
        log.contains(&format!("{} skipped as already spooled", expected.len())),
        "{log}"
    );
    std::fs::remove_file(filler).unwrap();
}
