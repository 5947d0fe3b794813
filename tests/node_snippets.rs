//! Waveform evidence from the node: with the default configuration every
//! detection is followed by its snippet on `.../snippet` (the extension
//! `blastnet.snippet/1`), holding the onset; turning snippets off changes
//! nothing in the detections (same payloads, byte for byte).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use blastnet_contract::{Detection, Snippet};
use node_common::*;

/// Run `blastnet node` on `sc` (its own state dir under `dir`), `extra`
/// appended to the test config; what a subscriber on `blastnet/#` saw.
fn run(dir: &Path, sc: &TestScenario, port: u16, tag: &str, extra: &str) -> Vec<Msg> {
    std::fs::create_dir_all(dir).unwrap();
    let sub = Subscriber::start(port, &format!("sub-snip-{tag}"));
    sub.wait_subscribed(1, Duration::from_secs(10));
    let cfg = node_config(dir, sc, port, "fast", 1.0);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(extra);
    std::fs::write(&cfg, text).unwrap();
    let log = dir.join("node.log");
    let mut node = spawn_node(&cfg, &log);
    let st = wait_exit(&mut node, Duration::from_secs(60), &log);
    assert!(
        st.success(),
        "node failed: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    sub.wait_offline(&sc.node_id, Duration::from_secs(10));
    sub.snapshot()
}

#[test]
fn snippets_follow_every_detection_by_default_and_leave_the_detections_unchanged() {
    let broker = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let sc = write_scenario(&tmp.path().join("sc"), "snip", 16.0, 1.0, 2.0, 23);
    let expected = expected_onsets(&sc);
    assert!(expected.len() >= 5, "{} pulses", expected.len());

    let on = run(&tmp.path().join("on"), &sc, broker.port(), "on", "");
    let off = run(
        &tmp.path().join("off"),
        &sc,
        broker.port(),
        "off",
        "[audio]\npublish_snippets = false\n",
    );

    let det_topic = format!("blastnet/test/node/{}/detection", sc.node_id);
    let snip_topic = format!("blastnet/test/node/{}/snippet", sc.node_id);
    let dets_on = check_detections(&on, &sc.node_id, &expected);
    let dets_off = check_detections(&off, &sc.node_id, &expected);
    assert_eq!(dets_on, dets_off, "snippets changed the detections");
    // Byte for byte: the first copy of each seq's payload.
    let payloads = |msgs: &[Msg]| -> BTreeMap<u64, Vec<u8>> {
        let mut m = BTreeMap::new();
        for msg in msgs.iter().filter(|m| m.topic == det_topic) {
            let d: Detection = serde_json::from_slice(&msg.payload).unwrap();
            m.entry(d.seq).or_insert_with(|| msg.payload.clone());
        }
        m
    };
    assert_eq!(payloads(&on), payloads(&off));
    assert!(
        off.iter().all(|m| !m.topic.ends_with("/snippet")),
        "publish_snippets = false still published snippets"
    );

    // One snippet per detection, after it, holding its onset.
    let by_seq: BTreeMap<u64, &Detection> = dets_on.iter().map(|d| (d.seq, d)).collect();
    let mut seen = BTreeMap::new();
    for (i, m) in on.iter().enumerate() {
        if m.topic != snip_topic {
            continue;
        }
        assert!(!m.retain, "snippets are not retained");
        let s: Snippet = serde_json::from_slice(&m.payload).unwrap();
        let counts = s
            .check()
            .unwrap_or_else(|e| panic!("snippet {}: {e}", s.seq));
        let d = by_seq
            .get(&s.seq)
            .unwrap_or_else(|| panic!("snippet of unknown seq {}", s.seq));
        let det_at = on
            .iter()
            .position(|m| {
                m.topic == det_topic
                    && serde_json::from_slice::<Detection>(&m.payload).unwrap().seq == s.seq
            })
            .unwrap();
        assert!(det_at < i, "snippet {} before its detection", s.seq);
        assert_eq!(s.node_id, sc.node_id);
        assert_eq!(s.stream, d.stream);
        // 16 kHz is decimated by 2 (the largest rate <= 8 kHz that divides it).
        assert_eq!(s.sample_rate_hz, RATE / 2);
        let end = s.time_of(counts.len());
        assert!(
            s.start_utc <= d.onset_utc && d.onset_utc < end,
            "seq {}: onset {} outside {}..{}",
            s.seq,
            d.onset_utc,
            s.start_utc,
            end
        );
        // 0.5 s before and 1.0 s after the onset, to a sample.
        let before = d.onset_utc.secs_since(s.start_utc);
        let after = end.secs_since(d.onset_utc);
        let dt = 1.0 / f64::from(s.sample_rate_hz);
        assert!((before - 0.5).abs() <= dt, "{before} s before the onset");
        assert!((after - 1.0).abs() <= 2.0 * dt, "{after} s after the onset");
        assert!(seen.insert(s.seq, ()).is_none(), "seq {} twice", s.seq);
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        by_seq.keys().copied().collect::<Vec<_>>(),
        "one snippet per detection"
    );
    // The final status counts them.
    let sub_status = on
        .iter()
        .rev()
        .find(|m| m.topic.ends_with("/status"))
        .map(|m| serde_json::from_slice::<blastnet_contract::Status>(&m.payload).unwrap())
        .unwrap();
    assert_eq!(sub_status.counters["snippets_dropped"], 0);
    assert_eq!(
        sub_status.counters["snippets_published"],
        by_seq.len() as u64
    );
}
