//! The library entry point as `blastnet replay` uses it: several nodes in
//! one process, each `run_node` with a `ReplaySource`, one embedded broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use blastnet_contract::{Detection, NodeState, Status, UtcNs};
use blastnet_node::{run_node, CancellationToken, NodeRuntimeConfig, Pace, ReplaySource};
use blastnet_recording::Scenario;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nodes_in_one_process_publish_everything_in_seq_order() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = [("a", vec![1.0, 3.5, 6.0, 9.0]), ("b", vec![1.2, 4.0, 8.5])];
    let start = scenario(tmp.path(), &layout);
    let broker = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();

    let mut o = rumqttc::MqttOptions::new("watcher", "127.0.0.1", broker.port());
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 16);
    client
        .subscribe("blastnet/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
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

    // Collect until both nodes said offline.
    let mut dets: BTreeMap<String, Vec<Detection>> = BTreeMap::new();
    let mut offline = BTreeMap::new();
    while offline.len() < layout.len() {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let Some((topic, payload)) = msg else {
            continue;
        };
        if topic.ends_with("/detection") {
            let d: Detection = serde_json::from_slice(&payload).unwrap();
            dets.entry(d.node_id.clone()).or_default().push(d);
        } else if topic.ends_with("/status") {
            let s: Status = serde_json::from_slice(&payload).unwrap();
            if s.state == NodeState::Offline {
                offline.insert(s.node_id.clone(), s);
            }
        }
    }
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
