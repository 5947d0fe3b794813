//! What a person reads from `blastnet replay`: event lines that count
//! arrivals and nodes apart and print yields without exponents or zeros,
//! no colour codes in a pipe, JSON log lines with `--log-format json`, and
//! the embedded broker quiet unless asked (issue #19, items 3 and 4).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use blastnet_contract::{Event, EventStatus, Manifest, SourceKind};
use common::shipped;

fn blastnet(args: &[&str], dir: &Path, rust_log: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blastnet"));
    cmd.args(args).arg(dir).env_remove("NO_COLOR");
    match rust_log {
        Some(l) => cmd.env("RUST_LOG", l),
        None => cmd.env_remove("RUST_LOG"),
    };
    let out = cmd.output().expect("run blastnet");
    assert!(
        out.status.success(),
        "blastnet {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The number before `word` in `line` (`13 arrivals from 11 nodes`).
fn count_before(line: &str, word: &str) -> Option<usize> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches([',', ';']) == word)
        .and_then(|w| w[0].parse().ok())
}

/// The shipped city-salvo (11 nodes with microphones and geophones, nine
/// explosions of 10-500 kg TNT, one launch, airbursts): every printed event
/// line counts arrivals and distinct nodes as the event JSON has them
/// (never more nodes than the manifest has), says `1 arrival`/`1 node` in
/// the singular, prints no `e+`, no `0.00 kg` and no nanoseconds, gives a
/// yield below a gram as `< 1 g`, and none for a launch (which is reported
/// as a launch); and nothing on
/// stdout or stderr carries an ANSI escape, though RUST_LOG=info gives log
/// lines to colour.
#[test]
fn replay_prints_honest_event_lines_without_escape_codes() {
    let work = shipped("city-salvo");
    let events_path = work.path().join("events.jsonl");
    let out = blastnet(
        &[
            "replay",
            "--print-events",
            "--events-out",
            events_path.to_str().expect("utf-8 path"),
        ],
        work.path(),
        Some("info"),
    );
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !bytes.contains(&0x1b),
            "ESC in the piped {name}:\n{}",
            String::from_utf8_lossy(bytes).replace('\x1b', "^[")
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" INFO "), "no log line to check:\n{stderr}");

    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(work.path().join("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    let finals: BTreeMap<String, Event> = std::fs::read_to_string(&events_path)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str::<Event>(l).expect("SPEC event"))
        .filter(|e| e.status == EventStatus::Final)
        .map(|e| (e.event_id.clone(), e))
        .collect();
    assert!(finals.len() >= 9, "{} final events", finals.len());

    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("event ")).collect();
    assert!(
        lines.len() >= finals.len(),
        "too few event lines:\n{stdout}"
    );
    let mut checked = BTreeSet::new();
    for line in &lines {
        for bad in ["e+", "e-0", "0.00 kg", "NaN", "inf"] {
            assert!(!line.contains(bad), "{bad:?} in {line}");
        }
        assert!(
            line.contains(", confidence "),
            "confidence unlabelled: {line}"
        );
        // Milliseconds: `2022-03-01T01:30:01.002Z:`.
        let time = line
            .split_whitespace()
            .find(|w| w.ends_with("Z:"))
            .unwrap_or_else(|| panic!("no origin time in {line}"));
        let frac = time
            .rsplit_once('.')
            .map(|(_, f)| f.trim_end_matches("Z:"))
            .unwrap_or_default();
        assert!(
            frac.len() == 3 && frac.bytes().all(|b| b.is_ascii_digit()),
            "origin time not to the millisecond: {line}"
        );
        let arrivals = count_before(line, "arrivals")
            .or_else(|| count_before(line, "arrival"))
            .unwrap_or_else(|| panic!("no arrival count in {line}"));
        let nodes = count_before(line, "nodes")
            .or_else(|| count_before(line, "node"))
            .unwrap_or_else(|| panic!("no node count in {line}"));
        assert!(
            nodes <= manifest.nodes.len(),
            "{nodes} nodes where {} exist: {line}",
            manifest.nodes.len()
        );
        assert!(nodes <= arrivals, "{line}");
        assert!(!line.contains(" 1 arrivals"), "{line}");
        assert!(!line.contains(" 1 nodes"), "{line}");
        assert!(!line.contains(" 1 outliers"), "{line}");
        // The final revision against its JSON.
        let id = line.split_whitespace().nth(1).expect("event id");
        let Some(e) = finals.get(id).filter(|_| line.contains(", final ")) else {
            continue;
        };
        let distinct: BTreeSet<&str> = e.detections.iter().map(|d| d.node_id.as_str()).collect();
        assert_eq!(arrivals, e.detections.len(), "{line}");
        assert_eq!(nodes, distinct.len(), "{line}");
        if e.kind == SourceKind::Launch {
            assert!(
                !line.contains("yield") && !line.contains("TNT"),
                "a launch with a yield: {line}"
            );
        }
        match &e.yield_estimate {
            Some(y) if e.kind != SourceKind::Launch => {
                assert!(line.contains("; yield "), "yield missing: {line}");
                if y.high_kg_tnt < 1e-3 {
                    assert!(line.ends_with("yield < 1 g TNT"), "{line}");
                }
            }
            _ => assert!(!line.contains("yield"), "{line}"),
        }
        checked.insert(id.to_string());
    }
    assert_eq!(
        checked.len(),
        finals.len(),
        "a final event without its line:\n{stdout}"
    );
    // The summary (on stderr) scores kinds as well as locations: "kinds: R
    // of N located blasts reported as their kind (explosion r/n, ...)", N
    // the located count of the truth line and the per-kind counts adding
    // up to R and N.
    let summary = String::from_utf8_lossy(&out.stderr);
    let located = summary
        .lines()
        .find_map(|l| l.strip_prefix("truth: "))
        .and_then(|l| count_before(l, "located"))
        .unwrap_or_else(|| panic!("no truth line:\n{summary}"));
    let kinds = summary
        .lines()
        .find_map(|l| l.strip_prefix("kinds: "))
        .unwrap_or_else(|| panic!("no kinds line:\n{summary}"));
    let right = kinds
        .split_whitespace()
        .next()
        .and_then(|w| w.parse::<usize>().ok());
    assert_eq!(count_before(kinds, "located"), Some(located), "{kinds}");
    let (mut r_sum, mut n_sum) = (0, 0);
    let inner = kinds
        .split_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or("");
    for part in inner.split(", ") {
        let (r, n) = part
            .rsplit_once(' ')
            .and_then(|(_, c)| c.split_once('/'))
            .unwrap_or_else(|| panic!("bad kind count {part:?} in {kinds}"));
        r_sum += r.parse::<usize>().unwrap();
        n_sum += n.parse::<usize>().unwrap();
    }
    assert_eq!((Some(r_sum), n_sum), (right, located), "{kinds}");
    // The missile launch (heard from 0.3-4 km: a low-passed roar with an
    // ignition step) is reported as a launch, so it prints no yield.
    assert!(
        inner.split(", ").any(|p| p == "launch 1/1"),
        "the launch not reported as a launch: {kinds}"
    );
}

/// `--log-format json`: every line on stderr is one JSON object with a
/// level and a message, the summary included; the embedded broker's logs
/// (rumqttd logs every client disconnect as an ERROR) stay off at
/// RUST_LOG=info and come back when RUST_LOG names rumqttd.
#[test]
fn json_logs_parse_line_by_line_and_the_broker_is_quiet_unless_asked() {
    let work = shipped("single-blast");
    let out = blastnet(
        &["--log-format", "json", "replay"],
        work.path(),
        Some("info"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let records: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{stderr}"))
        })
        .collect();
    assert!(records.len() > 5, "too few log lines:\n{stderr}");
    for r in &records {
        assert!(
            r["level"].is_string() && r["fields"]["message"].is_string(),
            "{r}"
        );
    }
    let target = |r: &serde_json::Value| r["target"].as_str().unwrap_or_default().to_string();
    assert!(
        records
            .iter()
            .any(|r| r["level"] == "INFO" && !target(r).starts_with("blastnet::report")),
        "no INFO log record at RUST_LOG=info:\n{stderr}"
    );
    assert!(
        records.iter().any(|r| r["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("truth: "))),
        "the summary is not in the log records:\n{stderr}"
    );
    assert!(
        !records.iter().any(|r| target(r).starts_with("rumqttd")),
        "broker logs at RUST_LOG=info:\n{stderr}"
    );

    // Asked for, the broker speaks (it logs every accepted connection).
    let out = blastnet(&["replay"], work.path(), Some("warn,rumqttd=info"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.contains("rumqttd")),
        "RUST_LOG=warn,rumqttd=info gave no broker log:\n{stderr}"
    );
}
