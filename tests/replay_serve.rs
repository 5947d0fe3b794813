//! `blastnet replay --serve`: after the replay the aggregator's API stays up
//! with the replay's events until SIGTERM, then the process ends promptly
//! and cleanly; without `--serve` it ends on its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use blastnet_aggregator::testkit::http_get;
use blastnet_contract::{Event, EventStatus};

const BIN: &str = env!("CARGO_BIN_EXE_blastnet");

fn events_out(path: &std::path::Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn replay_serve_keeps_the_api_up_with_the_replays_events_until_sigterm() {
    let work = common::shipped("single-blast");
    let out = work.path().join("events.jsonl");
    let common::Serving {
        mut child,
        addr,
        mut log,
        rx,
        reader,
    } = common::replay_serve(
        work.path(),
        &["--events-out".as_ref(), out.as_os_str()],
        Duration::from_secs(120),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Still up a while after the replay finished.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited without a signal"
    );
    let (status, body) = rt.block_on(http_get(addr, "/api/events")).unwrap();
    assert_eq!(status, 200, "{body}");
    let served: Vec<Event> = serde_json::from_str(&body).unwrap();
    assert!(!served.is_empty(), "no events served");
    assert!(served.iter().all(|e| e.status == EventStatus::Final));
    let (status, _) = rt.block_on(http_get(addr, "/")).unwrap();
    assert_eq!(status, 200, "the map page");

    let t = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    reader.join().unwrap();
    log.extend(rx.try_iter());
    assert!(
        exit.success(),
        "exit {exit} after SIGTERM; stderr:\n{}",
        log.join("\n")
    );
    assert!(took < Duration::from_secs(5), "took {took:?} to stop");
    eprintln!("stopped {took:?} after SIGTERM");

    // What was served is what the replay located (its --events-out).
    let replayed = events_out(&out);
    let ids = |v: &[Event]| {
        let mut ids: Vec<String> = v.iter().map(|e| e.event_id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&served), ids(&replayed));
    assert!(
        log.iter().any(|l| l.contains("SIGTERM")),
        "{}",
        log.join("\n")
    );
}

#[test]
fn replay_without_serve_ends_on_its_own() {
    let work = common::shipped("single-blast");
    let t = Instant::now();
    let out = Command::new(BIN)
        .arg("replay")
        .arg(work.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(60));
}
