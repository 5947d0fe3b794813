//! Shared helpers of the `node_*` integration tests: a scenario with known
//! Friedlander pulses, the expected picks, a recording MQTT subscriber, a
//! gated TCP proxy, broker handles and the `blastnet node` process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blastnet_contract::{Detection, NodeState, Status, StreamKind, UtcNs};

pub const RATE: u32 = 16_000;

/// Friedlander blast wave: p(t) = P (1 − t/T) e^(−b t/T), t ≥ 0.
fn friedlander(t: f64, peak_pa: f64, t_pos: f64) -> f64 {
    if t < 0.0 {
        0.0
    } else {
        peak_pa * (1.0 - t / t_pos) * (-1.2 * t / t_pos).exp()
    }
}

/// Deterministic white Gaussian noise (xorshift + Box–Muller).
struct Noise(u64);
impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

pub struct TestScenario {
    pub dir: PathBuf,
    pub node_id: String,
    pub start: UtcNs,
    pub duration_s: f64,
    /// Onsets of the injected pulses.
    pub pulses: Vec<UtcNs>,
}

/// A one-node scenario: `duration_s` of 16 kHz float WAV, 0.02 Pa rms
/// white noise, a 20 Pa Friedlander pulse (T+ = 4 ms) every `every_s` seconds
/// from `first_s` on, each at a fractional sample offset.
pub fn write_scenario(
    dir: &Path,
    node_id: &str,
    duration_s: f64,
    first_s: f64,
    every_s: f64,
    seed: u64,
) -> TestScenario {
    std::fs::create_dir_all(dir).unwrap();
    let start = UtcNs::parse("2024-05-01T21:00:00Z").unwrap();
    let n = (duration_s * RATE as f64) as usize;
    let mut pulse_s = Vec::new();
    let mut t = first_s;
    while t < duration_s - 1.5 {
        pulse_s.push(t + 0.37 / RATE as f64);
        t += every_s;
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let wav = dir.join(format!("{node_id}.wav"));
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    let mut noise = Noise(seed | 1);
    for i in 0..n {
        let ti = i as f64 / RATE as f64;
        let mut x = 0.02 * noise.gauss();
        for &p in &pulse_s {
            if ti >= p && ti < p + 0.05 {
                x += friedlander(ti - p, 20.0, 0.004);
            }
        }
        w.write_sample(x as f32).unwrap();
    }
    w.finalize().unwrap();
    let manifest = serde_json::json!({
        "format": "blastnet-recording/1",
        "name": "node-test",
        "description": "synthetic Friedlander pulses in white noise (node integration tests)",
        "nodes": [{
            "id": node_id, "lat": 40.4406, "lon": -79.9959, "alt_m": 250.0,
            "streams": [{ "file": format!("{node_id}.wav"), "channel": 0, "kind": "acoustic",
                          "start_utc": start.to_string(), "sensitivity": 1.0 }]
        }]
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    TestScenario {
        dir: dir.to_path_buf(),
        node_id: node_id.into(),
        start,
        duration_s,
        pulses: pulse_s.iter().map(|s| start.add_secs_f64(*s)).collect(),
    }
}

/// What the detection core finds in the scenario, run directly on the
/// samples (no node): the onsets every replay must publish.
pub fn expected_onsets(sc: &TestScenario) -> Vec<UtcNs> {
    let scenario = blastnet_recording::Scenario::open(&sc.dir).unwrap();
    let mut r = scenario
        .open_stream(&sc.node_id, StreamKind::Acoustic)
        .unwrap()
        .unwrap();
    let cfg = blastnet_detector::DetectorConfig::default();
    let mut det = blastnet_detector::Detector::new(StreamKind::Acoustic, RATE, &cfg).unwrap();
    let mut picks = Vec::new();
    let mut buf = Vec::new();
    loop {
        match r.next_chunk(&mut buf, 4096).unwrap() {
            blastnet_recording::Chunk::Samples { .. } => det.process(&buf, &mut picks),
            blastnet_recording::Chunk::Discontinuity { .. } => panic!("test scenario has no gap"),
            blastnet_recording::Chunk::End => break,
        }
    }
    det.flush(&mut picks);
    let onsets: Vec<UtcNs> = picks
        .iter()
        .map(|p| sc.start.add_secs_f64(p.onset_index / RATE as f64))
        .collect();
    // The scenario is only a fair test if the core finds exactly the pulses
    // put in (each within 2 ms: the pulse's rise is instantaneous).
    assert_eq!(
        onsets.len(),
        sc.pulses.len(),
        "detector found {onsets:?} for pulses {:?}",
        sc.pulses
    );
    for (o, p) in onsets.iter().zip(&sc.pulses) {
        assert!(o.secs_since(*p).abs() < 2e-3, "pick {o} for pulse {p}");
    }
    onsets
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// An MQTT subscriber on `blastnet/#` that records everything, reconnecting
/// (and re-subscribing) within ~20 ms whenever the broker comes back.
pub struct Subscriber {
    pub msgs: Arc<Mutex<Vec<Msg>>>,
    pub subacks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    pub fn start(port: u16, id: &str) -> Subscriber {
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let subacks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s, st) = (msgs.clone(), subacks.clone(), stop.clone());
        let id = id.to_string();
        std::thread::spawn(move || {
            let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
            o.set_keep_alive(Duration::from_secs(5));
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut conn) = rumqttc::Client::new(o, 64);
            for ev in conn.iter() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        client
                            .try_subscribe("blastnet/#", rumqttc::QoS::AtLeastOnce)
                            .unwrap();
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        m.lock().unwrap().push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Subscriber {
            msgs,
            subacks,
            stop,
        }
    }

    /// Wait until subscribed (at least `n` SUBACKs so far).
    pub fn wait_subscribed(&self, n: u64, timeout: Duration) {
        let t = Instant::now();
        while self.subacks.load(Ordering::SeqCst) < n {
            assert!(
                t.elapsed() < timeout,
                "subscriber not subscribed within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn snapshot(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    pub fn statuses(&self, node_id: &str) -> Vec<(Status, bool)> {
        self.snapshot()
            .iter()
            .filter(|m| m.topic.ends_with(&format!("/node/{node_id}/status")))
            .map(|m| {
                (
                    serde_json::from_slice::<Status>(&m.payload).unwrap(),
                    m.retain,
                )
            })
            .collect()
    }

    /// Wait until `pred` holds on the messages so far.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Msg]) -> bool) {
        let t = Instant::now();
        loop {
            if pred(&self.snapshot()) {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the node's `offline` status.
    pub fn wait_offline(&self, node_id: &str, timeout: Duration) -> Status {
        self.wait_for("the offline status", timeout, |_| {
            self.statuses(node_id)
                .iter()
                .any(|(s, _)| s.state == NodeState::Offline)
        });
        self.statuses(node_id)
            .into_iter()
            .rev()
            .find(|(s, _)| s.state == NodeState::Offline)
            .unwrap()
            .0
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Check the detections received: SPEC schema, seq 1..=n without holes, no
/// detection under two seqs, every copy of a seq identical, first arrivals
/// in seq order, and the onsets exactly those the detection core finds.
pub fn check_detections(msgs: &[Msg], node_id: &str, expected: &[UtcNs]) -> Vec<Detection> {
    let mut by_seq: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut first_order = Vec::new();
    for m in msgs
        .iter()
        .filter(|m| m.topic == format!("blastnet/test/node/{node_id}/detection"))
    {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        for key in [
            "schema",
            "node_id",
            "seq",
            "onset_utc",
            "onset_uncertainty_s",
            "stream",
            "kind",
            "confidence",
            "peak",
            "snr_db",
            "duration_s",
            "lat",
            "lon",
            "alt_m",
            "clock",
        ] {
            assert!(
                v.get(key).is_some(),
                "detection lacks SPEC field `{key}`: {v}"
            );
        }
        assert_eq!(v["schema"], "blastnet.detection/1");
        assert_eq!(v["clock"]["source"], "replay");
        assert!(!m.retain, "detections are not retained");
        let d: Detection = serde_json::from_value(v).unwrap();
        assert_eq!(d.node_id, node_id);
        match by_seq.get(&d.seq) {
            Some(prev) => assert_eq!(
                prev, &m.payload,
                "seq {} published with two different payloads",
                d.seq
            ),
            None => {
                by_seq.insert(d.seq, m.payload.clone());
                first_order.push(d.seq);
            }
        }
    }
    let seqs: Vec<u64> = by_seq.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=expected.len() as u64).collect::<Vec<_>>(),
        "seqs received"
    );
    let mut sorted = first_order.clone();
    sorted.sort();
    assert_eq!(
        first_order, sorted,
        "detections must first arrive in seq order"
    );
    let dets: Vec<Detection> = by_seq
        .values()
        .map(|p| serde_json::from_slice(p).unwrap())
        .collect();
    for (d, e) in dets.iter().zip(expected) {
        // Same samples, same core: the onset is the same to within rounding to 1 ns.
        assert!(
            d.onset_utc.secs_since(*e).abs() <= 2e-9,
            "seq {}: onset {} expected {e}",
            d.seq,
            d.onset_utc
        );
        assert!((d.lat - 40.4406).abs() < 1e-9, "position from the manifest");
    }
    dets
}

/// A TCP proxy whose gate the test opens and closes: closed, it refuses
/// (accepts and drops) every connection. It lets a test decide that the
/// node reconnects only after the test's subscriber has re-subscribed.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let gate = open.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(down) = c else { continue };
                if !gate.load(Ordering::SeqCst) {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
                pipe(up, down);
            }
        });
        Proxy { port, open }
    }

    pub fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16_384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// `blastnet broker --port N` as a child process (an embedded rumqttd that can be killed).
pub struct EmbeddedProcess {
    pub port: u16,
    child: Option<Child>,
}

impl EmbeddedProcess {
    pub fn start() -> EmbeddedProcess {
        let port = blastnet_broker::free_port();
        let mut b = EmbeddedProcess { port, child: None };
        b.start_again();
        b
    }
    pub fn start_again(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_blastnet"))
            .args(["broker", "--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        assert!(
            blastnet_broker::wait_for_port(self.port, Duration::from_secs(10)),
            "blastnet broker did not listen"
        );
    }
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EmbeddedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Write a node.toml for replaying `sc` to `port`.
pub fn node_config(dir: &Path, sc: &TestScenario, port: u16, pace: &str, speed: f64) -> PathBuf {
    let text = format!(
        r#"node_id = "{node}"
site = "test"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
keep_alive_s = 5
backoff_initial_s = 0.5
backoff_max_s = 4
[status]
heartbeat_s = 10
[state]
dir = "{state}"
[source]
kind = "replay"
path = "{scenario}"
pace = "{pace}"
speed = {speed}
"#,
        node = sc.node_id,
        state = dir.join("state").display(),
        scenario = sc.dir.display(),
    );
    let p = dir.join("node.toml");
    std::fs::write(&p, text).unwrap();
    p
}

pub fn spawn_node(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(["node", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Wait for a child to exit; panics (after killing it) past `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration, log: &Path) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            panic!(
                "node did not finish within {timeout:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
