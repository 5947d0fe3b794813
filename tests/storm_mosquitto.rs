//! A noise storm through Mosquitto (issue #17): 200 nodes on a 2 km grid,
//! each sending random picks at 5 a second for 60 s (a fireworks night,
//! hail on the microphones), with a real blast every 10 s among them (the
//! last an airburst 1 km up), published live (data time is the wall clock) into the aggregator
//! process, in wall mode as deployed. Every blast is located, no other
//! event is published, the aggregator keeps up (every event final within
//! 10 s of the storm's last message: a backlog would grow without bound),
//! the process's memory stays bounded, and the decision latency (from the
//! deciding message, or the start of the deciding tick, to the event
//! handed to the MQTT client) is at most 1 s for 99 % of the decisions.
//!
//! Alone in its test binary: it runs the engine at 1,000 picks a second for
//! a minute, and other tests beside it would measure their load, not its.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use blastnet_aggregator::testkit::{Layout, Rng};
use blastnet_broker::Mosquitto;
use blastnet_contract::topic::NodeMessage;
use blastnet_contract::{EnuFrame, Event, EventStatus, Geodetic, NodeState, UtcNs};
use common::{get_ok as get, spawn_aggregator as spawn, wait_up};

const SITE: &str = "storm";
const NODES: usize = 200;
const RATE_HZ: f64 = 5.0;
const SECONDS: f64 = 60.0;
const BLASTS: usize = 6;

fn centre() -> Geodetic {
    Geodetic::new(40.4406, -79.9959, 250.0)
}

/// A message and when (s of data time after the start) it is published.
type Timed = (f64, String, Vec<u8>);

/// The storm: every node's picks (the blasts' arrivals and Poisson random
/// picks), each node's status every second, offline statuses at the end;
/// in time order. Returns the messages, the blasts (place, origin) and the
/// number of detections.
fn storm(t0: UtcNs) -> (Vec<Timed>, Vec<(Geodetic, UtcNs)>, usize) {
    let layout = Layout::grid(SITE, centre(), NODES, 2000.0);
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    // (onset, node index): every pick, seqs assigned in time order below.
    let (mut picks, blasts) = layout.storm_picks(centre(), t0, BLASTS, RATE_HZ, SECONDS, &mut rng);
    picks.sort();
    let detections = picks.len();
    let mut seq = vec![0u64; NODES];
    let mut msgs: Vec<Timed> = picks
        .iter()
        .map(|&(onset, k)| {
            seq[k] += 1;
            let d = layout.pick(k, seq[k], onset);
            (
                onset.secs_since(t0),
                layout.topic(&d.node_id, NodeMessage::Detection),
                serde_json::to_vec(&d).unwrap(),
            )
        })
        .collect();
    let end = SECONDS + 10.0;
    let mut st = 0.0;
    while st <= end {
        for (topic, payload) in layout.statuses(NodeState::Online, t0.add_secs_f64(st)) {
            msgs.push((st, topic, payload));
        }
        st += 1.0;
    }
    for (topic, payload) in layout.statuses(NodeState::Offline, t0.add_secs_f64(end + 1.0)) {
        msgs.push((end + 1.0, topic, payload));
    }
    msgs.sort_by(|a, b| a.0.total_cmp(&b.0));
    (msgs, blasts, detections)
}

/// Publish `msgs` (QoS 1) each at its time after `t0` (wall clock: the
/// data are live), from a thread of its own; returns how far behind
/// schedule it fell at worst, s.
fn publish_in_real_time(port: u16, t0: UtcNs, msgs: Vec<Timed>) -> std::thread::JoinHandle<f64> {
    use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet};
    std::thread::spawn(move || {
        let mut opts = MqttOptions::new("storm-nodes", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(10));
        opts.set_inflight(1000);
        let max = blastnet_contract::broker::MAX_PACKET_BYTES;
        opts.set_max_packet_size(max, max);
        let n = msgs.len();
        let (client, mut conn) = Client::new(opts, 4096);
        let acks = std::thread::spawn(move || {
            let mut acked = 0;
            for ev in conn.iter() {
                match ev {
                    Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                        acked += 1;
                        if acked == n {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("storm publisher: {e}"),
                }
            }
        });
        let lead = t0.secs_since(UtcNs::now()).max(0.0);
        let start = Instant::now() + Duration::from_secs_f64(lead);
        let mut behind: f64 = 0.0;
        for (at, topic, payload) in msgs {
            let now = Instant::now()
                .saturating_duration_since(start)
                .as_secs_f64();
            if now < at {
                std::thread::sleep(Duration::from_secs_f64(at - now));
            } else {
                behind = behind.max(now - at);
            }
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .unwrap();
        }
        acks.join().unwrap();
        let _ = client.disconnect();
        behind
    })
}

/// The text of `/metrics`, parsed as `name{labels} value` lines.
fn metrics(rt: &tokio::runtime::Runtime, http: u16) -> BTreeMap<String, f64> {
    get(rt, http, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The least bucket bound of the decision-latency histogram that holds
/// 99 % of its decisions (+∞ if only the last does), and their number.
fn latency_p99(m: &BTreeMap<String, f64>) -> (f64, f64) {
    let name = "blastnet_aggregator_decision_latency_seconds";
    let count = m.get(&format!("{name}_count")).copied().unwrap_or(0.0);
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&format!("{name}_bucket{{le=\""))?;
            let le = le.strip_suffix("\"}")?;
            Some((le.parse().unwrap_or(f64::INFINITY), *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let p99 = buckets
        .iter()
        .find(|(_, c)| *c >= 0.99 * count)
        .map_or(f64::INFINITY, |b| b.0);
    (p99, count)
}

/// Peak resident memory of process `pid`, MB (`VmHWM`).
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn write_config(dir: &Path, port: u16, http: u16) -> std::path::PathBuf {
    let p = dir.join("aggregator.toml");
    std::fs::write(
        &p,
        format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"storm-aggregator\"\nsites = [\"{SITE}\"]\n\
             [store]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[time]\nbase = \"wall\"\n",
            dir.join("events.sqlite").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_noise_storm_through_mosquitto_locates_every_blast_with_no_ghost_and_keeps_up() {
    let broker = Mosquitto::start_required();
    let port = broker.port();
    let dir = tempfile::tempdir().unwrap();
    let http = blastnet_broker::free_port();
    let config = write_config(dir.path(), port, http);
    let log = dir.path().join("aggregator.log");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut agg = spawn(&config, &log);
    wait_up(&rt, http, &mut agg, &log);

    // Live: the data time is the wall clock (the aggregator runs in wall
    // mode, as a deployed one does), from a moment after the messages are
    // made.
    let t0 = UtcNs::now().add_secs_f64(3.0);
    let (msgs, blasts, detections) = storm(t0);
    let publisher = publish_in_real_time(port, t0, msgs);
    let behind = publisher.join().unwrap();
    let published = Instant::now();
    // Every detection through the engine and every event final: the wall
    // clock moves the watermark past them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    let finals: Vec<Event> = loop {
        let m = metrics(&rt, http);
        let accepted = m
            .get("blastnet_aggregator_detections_accepted_total")
            .copied()
            .unwrap_or(0.0);
        let watermark = m
            .get("blastnet_aggregator_watermark_seconds")
            .copied()
            .unwrap_or(0.0);
        let done = accepted as usize >= detections
            && watermark >= t0.add_secs_f64(SECONDS + 10.0).0 as f64 / 1e9;
        if done {
            let body = get(&rt, http, "/api/events?limit=1000").unwrap_or_default();
            let events: Vec<Event> = serde_json::from_str(&body).unwrap_or_default();
            let finals: Vec<Event> = events
                .into_iter()
                .filter(|e| e.status == EventStatus::Final)
                .collect();
            if finals.len() >= BLASTS || Instant::now() > deadline {
                break finals;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the aggregator did not take in the storm within 60 s of its end: {accepted} of {detections} detections accepted; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let caught_up = published.elapsed().as_secs_f64();
    let m = metrics(&rt, http);
    let (p99, decisions) = latency_p99(&m);
    let histogram: Vec<String> = m
        .iter()
        .filter(|(k, _)| k.starts_with("blastnet_aggregator_decision_latency_seconds_bucket"))
        .map(|(k, v)| format!("{}: {v}", k.split('"').nth(1).unwrap_or(k)))
        .collect();
    println!("decision latency histogram: {histogram:?}");
    let rss = peak_rss_mb(agg.id());
    let _ = agg.kill();
    let _ = agg.wait();

    let near = |e: &Event, (s, at): &(Geodetic, UtcNs)| {
        let d = EnuFrame::new(*s).to_enu(Geodetic::new(e.lat, e.lon, s.alt_m));
        // The picks are exact to the microsecond: a located blast is within
        // metres; 50 m and 0.5 s tell it from any other source.
        d.e.hypot(d.n) < 50.0 && e.origin_utc.secs_since(*at).abs() < 0.5
    };
    let located = blasts
        .iter()
        .filter(|b| finals.iter().any(|e| near(e, b)))
        .count();
    let ghosts: Vec<String> = finals
        .iter()
        .filter(|e| !blasts.iter().any(|b| near(e, b)))
        .map(|e| {
            format!(
                "{} at {:.5},{:.5} with {} picks",
                e.event_id,
                e.lat,
                e.lon,
                e.detections.len()
            )
        })
        .collect();
    println!(
        "storm: {detections} detections from {NODES} nodes over {SECONDS} s ({} random), publisher at most {behind:.3} s behind; every event final {caught_up:.1} s after the last message; {located}/{BLASTS} blasts located, {} other events; {decisions} decisions, p99 latency <= {p99} s; aggregator peak RSS {rss:.1} MB",
        detections - BLASTS * NODES,
        ghosts.len()
    );
    assert_eq!(located, BLASTS, "every blast located");
    assert!(ghosts.is_empty(), "events of no blast: {ghosts:?}");
    assert!(decisions >= BLASTS as f64, "{decisions} decisions timed");
    // The bound (measured: at most 0.5 s, 13–16 of 16–17 within 0.25 s;
    // before the network's seed budget, the searches of every node's burst
    // at the storm's onset held the first blast's decisions 2.5 s and
    // more).
    assert!(
        p99 <= 1.0,
        "p99 decision latency above 1 s (bucket {p99} s): {histogram:?}"
    );
    // Kept up: a backlog would still be draining when the storm ended.
    assert!(
        caught_up <= 10.0,
        "every event final only {caught_up:.1} s after the storm ended: a backlog"
    );
    // Bounded: the engine keeps picks for a window of data time, whatever
    // the rate; 256 MB is an eighth of a 2 GB Raspberry Pi 4.
    assert!(rss <= 256.0, "aggregator peak RSS {rss:.1} MB");
}
