//! The broker (Mosquitto, persistence on, the shipped limits) is stopped for
//! 15 s in the middle of a real-time replay of the shipped city-salvo: the
//! replay completes, every detection reaches the aggregator exactly once,
//! and the events are byte for byte those of a replay without the outage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::shipped;

fn replay_args(dir: &Path, port: u16, out: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blastnet"));
    cmd.arg("replay")
        .arg(dir)
        .args(["--broker", &format!("mqtt://127.0.0.1:{port}")])
        .arg("--events-out")
        .arg(dir.join(format!("{out}-events.jsonl")))
        .arg("--detections-out")
        .arg(dir.join(format!("{out}-detections.jsonl")));
    cmd
}

/// "aggregator: N detections accepted, M duplicates dropped" from the summary.
fn accepted(log: &str) -> (usize, usize) {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("aggregator: "))
        .unwrap_or_else(|| panic!("no aggregator line in:\n{log}"));
    let n: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

#[test]
fn a_broker_restart_mid_replay_loses_and_repeats_nothing() {
    let mut broker = blastnet_broker::Mosquitto::start_required();
    let port = broker.port();
    let work = shipped("city-salvo");
    let dir = work.path();

    let out = replay_args(dir, port, "clean").output().unwrap();
    let clean_log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{clean_log}");
    let clean = std::fs::read(dir.join("clean-events.jsonl")).unwrap();
    let clean_dets = std::fs::read_to_string(dir.join("clean-detections.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(!clean.is_empty() && clean_dets > 0);
    assert_eq!(accepted(&clean_log), (clean_dets, 0));

    // 36 s of recording at its own pace; the broker goes away at 8 s.
    let log_path = dir.join("outage.log");
    let mut child = replay_args(dir, port, "outage")
        .arg("--realtime")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    assert!(child.try_wait().unwrap().is_none(), "replay ended early");
    broker.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(15));
    broker.start_again().unwrap();
    let down_for = down.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "replay still running after the outage"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "replay failed:\n{log}");
    assert!(down_for >= Duration::from_secs(15));

    let dets = std::fs::read_to_string(dir.join("outage-detections.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(dets, clean_dets, "the same detections\n{log}");
    let (acc, _dups) = accepted(&log);
    assert_eq!(acc, dets, "every detection accepted once\n{log}");
    let events = std::fs::read(dir.join("outage-events.jsonl")).unwrap();
    assert!(
        events == clean,
        "other events than without the outage:\n{}\nvs\n{}",
        String::from_utf8_lossy(&events),
        String::from_utf8_lossy(&clean)
    );
}
