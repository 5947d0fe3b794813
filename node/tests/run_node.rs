//! The library entry point as `blastnet replay` uses it: several nodes in
//! one process, each `run_node` with a `ReplaySource`, one embedded broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use blastnet_contract::testing::DetectionBuilder;
use blastnet_contract::{Detection, NodeState, Status, UtcNs};
use blastnet_node::spool::Spool;
use blastnet_node::state::{PersistedState, StateStore};
use blastnet_node::{run_node, CancellationToken, NodeRuntimeConfig, Pace, ReplaySource};
use blastnet_recording::Scenario;
use tokio::sync::mpsc::UnboundedReceiver;

const RATE: u32 = 8000;

/// Two nodes, 12 s each, 20 Pa Friedlander pulses (T+ = 4 ms) in 0.02 Pa noise.
fn scenario(dir: &Path, pulses: &[(&str, Vec<f64>)]) -> UtcNs {
    let start = UtcNs::parse("2024-06-01T00:00:00Z").unwrap();
    let mut nodes = Vec::new();
    for (k, (id, at)) in pulses.iter().enumerate() {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: RATE,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(dir.join(format!("{id}.wav")), spec).unwrap();
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15 ^ k as u64;
        for i in 0..12 * RATE as usize {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let t = i as f64 / RATE as f64;
            let mut x = 0.07 * u; // uniform, 0.02 Pa rms
            for p in at {
                let d = t - p;
                if (0.0..0.05).contains(&d) {
                    x += 20.0 * (1.0 - d / 0.004) * (-1.2 * d / 0.004).exp();
                }
            }
            w.write_sample(x as f32).unwrap();
        }
        w.finalize().unwrap();
        nodes.push(serde_json::json!({
            "id": id, "lat": 10.0 + k as f64 * 0.001, "lon": 20.0, "alt_m": 5.0,
            "streams": [{ "file": format!("{id}.wav"), "channel": 0, "kind": "acoustic",
                          "start_utc": start.to_string(), "sensitivity": 1.0 }]
        }));
    }
    let m = serde_json::json!({ "format": "blastnet-recording/1", "name": "run-node", "description": "test", "nodes": nodes });
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
    start
}

/// A subscriber on `blastnet/#` (subscribed when this returns): every
/// message as (topic, payload), in arrival order.
async fn watch(port: u16) -> UnboundedReceiver<(String, Vec<u8>)> {
    let mut o = rumqttc::MqttOptions::new("watcher", "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 16);
    client
        .subscribe("blastnet/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(ev) = el.poll().await {
            match ev {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    let _ = tx.send(None);
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    let _ = tx.send(Some((p.topic.clone(), p.payload.to_vec())));
                }
                _ => {}
            }
        }
    });
    assert!(rx.recv().await.unwrap().is_none(), "subscribed first");
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if let Some(m) = m {
                let _ = out_tx.send(m);
            }
        }
    });
    out_rx
}

/// Detections per node (parsed, and the bytes received) in arrival order,
/// and the `offline` statuses, until `nodes` nodes said offline.
#[allow(clippy::type_complexity)]
async fn until_offline(
    rx: &mut UnboundedReceiver<(String, Vec<u8>)>,
    nodes: usize,
) -> (
    BTreeMap<String, Vec<(Detection, Vec<u8>)>>,
    BTreeMap<String, Status>,
) {
    let mut dets: BTreeMap<String, Vec<(Detection, Vec<u8>)>> = BTreeMap::new();
    let mut offline = BTreeMap::new();
    while offline.len() < nodes {
        let (topic, payload) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("every node says offline within 10 s")
            .unwrap();
        if topic.ends_with("/detection") {
            let d: Detection = serde_json::from_slice(&payload).unwrap();
            dets.entry(d.node_id.clone())
                .or_default()
                .push((d, payload));
        } else if topic.ends_with("/status") {
            let s: Status = serde_json::from_slice(&payload).unwrap();
            if s.state == NodeState::Offline {
                offline.insert(s.node_id.clone(), s);
            }
        }
    }
    (dets, offline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nodes_in_one_process_publish_everything_in_seq_order() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = [("a", vec![1.0, 3.5, 6.0, 9.0]), ("b", vec![1.2, 4.0, 8.5])];
    let start = scenario(tmp.path(), &layout);
    let broker = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();
    let mut rx = watch(broker.port()).await;

    let sc = Scenario::open(tmp.path()).unwrap();
    let mut runs = Vec::new();
    for (id, _) in &layout {
        let cfg = NodeRuntimeConfig::for_replay(
            id,
            "t",
            &broker.url(),
            &tmp.path().join(format!("state-{id}")),
        )
        .unwrap();
        let src = ReplaySource::new(&sc, id, Pace::Fast, 1e-6).unwrap();
        runs.push(tokio::spawn(run_node(cfg, src, CancellationToken::new())));
    }
    for r in runs {
        let s = r.await.unwrap().unwrap();
        assert!(s.completed && s.drained, "{s:?}");
        assert_eq!(s.backlog_at_exit, 0);
        assert_eq!(s.acked, s.detections);
    }

    let (received, offline) = until_offline(&mut rx, layout.len()).await;
    let dets: BTreeMap<String, Vec<Detection>> = received
        .into_iter()
        .map(|(id, v)| (id, v.into_iter().map(|(d, _)| d).collect()))
        .collect();
    for (id, at) in &layout {
        let got = &dets[*id];
        let seqs: Vec<u64> = got.iter().map(|d| d.seq).collect();
        assert_eq!(
            seqs,
            (1..=at.len() as u64).collect::<Vec<_>>(),
            "node {id}: seqs in order, one per pulse"
        );
        for (d, p) in got.iter().zip(at) {
            // Instantaneous rise: the pick is within a few samples (here 2 ms) of the truth.
            let err = d.onset_utc.secs_since(start.add_secs_f64(*p));
            assert!(err.abs() < 2e-3, "node {id}: onset off by {err} s");
            assert_eq!(d.clock.source, blastnet_contract::ClockSource::Replay);
        }
        // The final status carries the data time of the end of the recording.
        assert_eq!(offline[*id].time_utc, start.add_secs_f64(12.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_evicts_the_oldest_and_counts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pulses: Vec<f64> = (0..10).map(|k| 0.5 + k as f64 * 1.1).collect();
    scenario(tmp.path(), &[("c", pulses.clone())]);
    // Nobody listens on this port: everything stays in the spool.
    let port = blastnet_broker::free_port();
    let mut cfg = NodeRuntimeConfig::for_replay(
        "c",
        "t",
        &format!("mqtt://127.0.0.1:{port}"),
        &tmp.path().join("st"),
    )
    .unwrap();
    cfg.spool_max_bytes = 4096;
    cfg.drain_timeout = Some(Duration::from_millis(500));
    let sc = Scenario::open(tmp.path()).unwrap();
    let src = ReplaySource::new(&sc, "c", Pace::Fast, 1e-6).unwrap();
    let s = run_node(cfg, src, CancellationToken::new()).await.unwrap();
    assert_eq!(s.detections, pulses.len() as u64);
    assert!(!s.drained);
    assert!(s.evictions > 0, "{s:?}");
    assert_eq!(
        s.evictions + s.backlog_at_exit,
        s.detections,
        "every detection is either kept or counted as evicted"
    );
    let bytes: u64 = std::fs::read_dir(tmp.path().join("st/spool"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes <= 4096, "spool holds {bytes} bytes");
}

/// The payload node `node` would have spooled as `seq`.
/// Replay node `id` of the scenario in `dir` (state in `state`) through the
/// broker at `url`, as fast as it goes, to its end.
async fn replay_node(
    dir: &Path,
    id: &str,
    url: &str,
    state: &Path,
) -> Result<blastnet_node::NodeSummary, blastnet_node::NodeError> {
    let cfg = NodeRuntimeConfig::for_replay(id, "t", url, state).unwrap();
    let sc = Scenario::open(dir).unwrap();
    let src = ReplaySource::new(&sc, id, Pace::Fast, 1e-6).unwrap();
    run_node(cfg, src, CancellationToken::new()).await
}

fn spooled_payload(node: &str, seq: u64) -> Vec<u8> {
    let onset = UtcNs::parse("2024-05-31T23:00:00Z")
        .unwrap()
        .add_secs_f64(seq as f64);
    serde_json::to_vec(&DetectionBuilder::new(node, seq, onset).build()).unwrap()
}

fn detection_seqs(dets: &BTreeMap<String, Vec<(Detection, Vec<u8>)>>, node: &str) -> Vec<u64> {
    dets.get(node)
        .map(|v| v.iter().map(|(d, _)| d.seq).collect())
        .unwrap_or_default()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A spool left by an earlier run with a truncated entry (2), random bytes
/// under an old-format name (4) and a 2 MB entry (6, a valid detection
/// padded past the packet limit) among good entries of both formats (1, 3,
/// 5 with a checksum, 7 without). The node quarantines and counts the three,
/// publishes the good ones byte for byte in seq order, then its own
/// detections above them, and drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_spool_entries_are_quarantined_and_the_good_ones_published_in_seq_order() {
    let tmp = tempfile::tempdir().unwrap();
    scenario(tmp.path(), &[("q", vec![2.0, 6.0])]);
    let st = tmp.path().join("st");
    let spool_dir = st.join("spool");
    {
        let (spool, _) = Spool::open(&spool_dir, 64 << 20, true).unwrap();
        for seq in [1, 2, 3, 5] {
            spool.append(seq, &spooled_payload("q", seq)).unwrap();
        }
        let p2 = spool.path_of(2).unwrap();
        std::fs::write(&p2, &spooled_payload("q", 2)[..50]).unwrap();
    }
    let random = blastnet_contract::testing::noise_bytes(600, 0x9E37_79B9_7F4A_7C15);
    std::fs::write(spool_dir.join(format!("{:020}.json", 4)), random).unwrap();
    let mut huge = spooled_payload("q", 6);
    huge.resize(2 << 20, b' ');
    std::fs::write(spool_dir.join(format!("{:020}.json", 6)), huge).unwrap();
    std::fs::write(
        spool_dir.join(format!("{:020}.json", 7)),
        spooled_payload("q", 7),
    )
    .unwrap();

    let broker = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();
    let mut rx = watch(broker.port()).await;
    let s = replay_node(tmp.path(), "q", &broker.url(), &st)
        .await
        .unwrap();
    assert!(s.completed && s.drained, "{s:?}");
    assert_eq!(s.quarantined, 3, "{s:?}");
    assert_eq!((s.recovered, s.detections, s.acked), (4, 2, 6), "{s:?}");

    let (dets, offline) = until_offline(&mut rx, 1).await;
    assert_eq!(detection_seqs(&dets, "q"), [1, 3, 5, 7, 8, 9]);
    for (d, bytes) in &dets["q"][..4] {
        assert_eq!(
            bytes,
            &spooled_payload("q", d.seq),
            "seq {} published as spooled",
            d.seq
        );
    }
    assert_eq!(offline["q"].counters["spool_quarantined"], 3);
    assert_eq!(
        names_in(&st.join("quarantine")).len(),
        3,
        "moved, not deleted"
    );
    assert!(names_in(&spool_dir).is_empty());
}

/// Start-up and publishing on a full disk. Writes are made to fail through
/// the node's own write paths: a directory stands where `state.json.tmp`,
/// `state.json.bak.tmp` and the next spool entry's `.tmp` go, so every
/// state save and every append fails (EISDIR here, ENOSPC on a full disk;
/// `spool::tests` has a real ENOSPC through `/dev/full`), while reads,
/// renames and removes work as they do on a full disk. The node starts,
/// publishes and removes its three spooled entries, counts its two
/// detections as not spooled and exits drained. With room again (the
/// directories gone) the next run spools and publishes them above seq 3,
/// which no state write recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_writes_fail_starts_and_drains_its_spool() {
    let tmp = tempfile::tempdir().unwrap();
    scenario(tmp.path(), &[("w", vec![2.0, 6.0])]);
    let st = tmp.path().join("st");
    let spool_dir = st.join("spool");
    {
        let (spool, _) = Spool::open(&spool_dir, 1 << 20, true).unwrap();
        for seq in 1..=3 {
            spool.append(seq, &spooled_payload("w", seq)).unwrap();
        }
        // The state was saved after seq 1 only: start-up must reconcile (and
        // try to save).
        StateStore::new(&st, true)
            .unwrap()
            .save(&PersistedState {
                seq_next: 2,
                ..Default::default()
            })
            .unwrap();
    }
    let blockers = [
        st.join("state.json.tmp"),
        st.join("state.json.bak.tmp"),
        spool_dir.join(format!("{:020}.tmp", 4)),
    ];
    for b in &blockers {
        std::fs::create_dir(b).unwrap();
    }

    let broker = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();
    let mut rx = watch(broker.port()).await;
    let url = broker.url();
    let run = || replay_node(tmp.path(), "w", &url, &st);
    let s = run().await.unwrap();
    assert!(s.completed && s.drained, "{s:?}");
    assert_eq!((s.recovered, s.acked, s.detections), (3, 3, 0), "{s:?}");
    assert_eq!(s.spool_append_failures, 2, "{s:?}");
    assert!(s.state_write_failures > 0, "{s:?}");
    let (dets, offline) = until_offline(&mut rx, 1).await;
    assert_eq!(detection_seqs(&dets, "w"), [1, 2, 3]);
    assert_eq!(offline["w"].counters["spool_append_failures"], 2);
    // Acknowledged entries are removed, but for the highest: no state
    // save records that seq 3 was used, so its file does.
    let entry3 = format!(
        "{:020}-{:08x}.json",
        3,
        crc32fast::hash(&spooled_payload("w", 3))
    );
    assert_eq!(names_in(&spool_dir), [entry3, format!("{:020}.tmp", 4)]);
    let on_disk: PersistedState =
        serde_json::from_slice(&std::fs::read(st.join("state.json")).unwrap()).unwrap();
    assert_eq!(on_disk.seq_next, 2, "no state write got through");

    for b in &blockers {
        std::fs::remove_dir(b).unwrap();
    }
    let s = run().await.unwrap();
    assert!(s.completed && s.drained, "{s:?}");
    assert_eq!((s.detections, s.acked, s.spool_append_failures), (2, 3, 0));
    assert_eq!(s.state_write_failures, 0);
    let (dets, _) = until_offline(&mut rx, 1).await;
    // 3 again (its acknowledgement was not recorded), then the new ones
    // above it.
    assert_eq!(detection_seqs(&dets, "w"), [3, 4, 5]);
    assert_eq!(dets["w"][0].1, spooled_payload("w", 3));
    let on_disk: PersistedState =
        serde_json::from_slice(&std::fs::read(st.join("state.json")).unwrap()).unwrap();
    assert_eq!(on_disk.seq_next, 6);
}

/// A node whose counter is one below u64::MAX numbers one detection and
/// refuses the next two (logged, counted) instead of numbering them 0 and
/// 1; it keeps running and drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_the_last_seq_refuses_to_spool_instead_of_wrapping() {
    let tmp = tempfile::tempdir().unwrap();
    scenario(tmp.path(), &[("m", vec![2.0, 5.0, 8.0])]);
    let st = tmp.path().join("st");
    StateStore::new(&st, true)
        .unwrap()
        .save(&PersistedState {
            seq_next: u64::MAX - 1,
            ..Default::default()
        })
        .unwrap();
    let broker = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();
    let mut rx = watch(broker.port()).await;
    let s = replay_node(tmp.path(), "m", &broker.url(), &st)
        .await
        .unwrap();
    assert!(s.completed && s.drained, "{s:?}");
    assert_eq!((s.detections, s.spool_append_failures), (1, 2), "{s:?}");
    let (dets, offline) = until_offline(&mut rx, 1).await;
    assert_eq!(detection_seqs(&dets, "m"), [u64::MAX - 1]);
    assert_eq!(offline["m"].counters["spool_append_failures"], 2);
    let on_disk: PersistedState =
        serde_json::from_slice(&std::fs::read(st.join("state.json")).unwrap()).unwrap();
    assert_eq!(on_disk.seq_next, u64::MAX);
}
