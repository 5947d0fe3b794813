//! `/metrics` as Prometheus reads it, and the shipped alert rules and Grafana
//! dashboard against it: `promtool check metrics` (Debian's `prometheus`
//! package, installed by scripts/test) on a live aggregator's `/metrics`
//! after traffic, `promtool check rules` on hardware/prometheus/, and every
//! `blastnet_*` name the rules and the dashboard use present in that output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use blastnet_aggregator::testkit::http_get;

const PROMTOOL: &str = "promtool";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn promtool(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(PROMTOOL);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "this test requires promtool ({e}): run the tests with `scripts/test`, which \
             installs it when missing (or `apt-get install -y prometheus`)"
        )
    });
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Metric names in exposition text: sample names and `# TYPE` family names.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        };
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            names.insert(n.to_string());
        }
    }
    names
}

/// Identifiers starting with `blastnet_` anywhere in `text` (PromQL in YAML
/// or JSON, read loosely).
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while let Some(at) = text[i..].find("blastnet_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !ident(bytes[start - 1]) {
            // A colon ends prose ("blastnet_build_info: the ..."), not a name.
            out.insert(text[start..end].trim_end_matches(':').to_string());
        }
        i = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_live_metrics_and_they_count_per_node_and_per_kind() {
    let scene = common::located_events("agg-metrics").await;
    let (status, text) = http_get(scene.agg.http_addr(), "/metrics").await.unwrap();
    assert_eq!(status, 200);

    let out = promtool(&["check", "metrics"], Some(&text));
    assert!(
        out.status.success(),
        "promtool check metrics refused /metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // HELP and TYPE once per family.
    let mut types = BTreeSet::new();
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(types.insert(l.to_string()), "{l} twice");
    }
    // Per node: the detections it sent, and online.
    for (node, n) in &scene.published {
        let labels = format!("{{node=\"{node}\",site=\"lab-site\"}}");
        assert!(
            text.contains(&format!("blastnet_node_detections_total{labels} {n}\n")),
            "node {node}: {n} detections expected in\n{text}"
        );
        assert!(
            text.contains(&format!("blastnet_node_online{labels} 1\n")),
            "{node} online"
        );
        assert!(text.contains(&format!("blastnet_node_last_status_seconds{labels} ")));
    }
    // Final events by kind add up to the events located.
    let mut by_kind = std::collections::BTreeMap::<String, usize>::new();
    for ev in scene.finals.values() {
        *by_kind.entry(ev.kind.as_str().to_string()).or_default() += 1;
    }
    let prefix = "blastnet_aggregator_events_total{kind=\"";
    let mut total = 0;
    for l in text.lines().filter(|l| l.starts_with(prefix)) {
        let (kind, v) = l[prefix.len()..].split_once("\"} ").unwrap();
        let v: usize = v.parse().unwrap();
        assert_eq!(v, by_kind.get(kind).copied().unwrap_or(0), "{l}");
        total += v;
    }
    assert_eq!(total, scene.finals.len());
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.lines().any(
            |l| l.starts_with(&format!("blastnet_build_info{{version=\"{version}\""))
                && l.ends_with("} 1")
        ),
        "no build_info for {version}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rules_pass_promtool_and_use_only_metrics_that_exist() {
    let rules = repo().join("hardware/prometheus/blastnet-rules.yml");
    let dashboard = repo().join("hardware/grafana/blastnet.json");
    // `promtool <verb> rules <file>` succeeds, or the test fails with its output.
    let rules_ok = |verb: &str, file: &std::path::Path| {
        let out = promtool(&[verb, "rules", file.to_str().unwrap()], None);
        assert!(
            out.status.success(),
            "promtool {verb} rules {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rules_ok("check", &rules);
    // The rules' own unit tests (promtool test rules), if they fire as meant.
    rules_ok(
        "test",
        &repo().join("hardware/prometheus/blastnet-rules.test.yml"),
    );

    let dash_text = std::fs::read_to_string(&dashboard).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash_text)
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", dashboard.display()));
    assert!(dash["panels"].as_array().is_some_and(|p| !p.is_empty()));

    let scene = common::located_events("agg-rules").await;
    let (_, text) = http_get(scene.agg.http_addr(), "/metrics").await.unwrap();
    let exposed = exposed_names(&text);
    for (file, body) in [
        (&rules, std::fs::read_to_string(&rules).unwrap()),
        (&dashboard, dash_text.clone()),
    ] {
        let used = referenced_names(&body);
        assert!(used.len() >= 5, "{}: only {used:?}", file.display());
        let missing: Vec<_> = used.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{} uses metrics /metrics does not have: {missing:?}",
            file.display()
        );
    }
}
