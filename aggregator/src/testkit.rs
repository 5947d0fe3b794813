//! Synthetic node traffic for tests, benches and demos: a ring of nodes,
//! SPEC status and detection payloads for a source at a known place and time
//! (arrival times from `blastnet_contract::physics`), and a small MQTT
//! publisher that waits for every PUBACK.

use std::time::Duration;

use blastnet_contract::testing::DetectionBuilder;
use blastnet_contract::topic::{self, NodeMessage};
use blastnet_contract::{
    physics, ClockInfo, ClockSource, Detection, EnuFrame, Geodetic, NodeState, Status, UtcNs,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS};

/// xorshift64*: a fixed-seed generator, enough for test and bench traffic.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A source of a test scene: its place and origin time.
pub type Blast = (Geodetic, UtcNs);

/// A set of nodes around a centre.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Topic prefix.
    pub prefix: String,
    /// Site.
    pub site: String,
    /// (node id, position).
    pub nodes: Vec<(String, Geodetic)>,
    /// Air temperature for arrival times, °C.
    pub temperature_c: f64,
}

impl Layout {
    /// `nodes` of `site` on the default prefix, at 15 °C.
    fn of(site: &str, nodes: Vec<(String, Geodetic)>) -> Layout {
        Layout {
            prefix: "blastnet".into(),
            site: site.into(),
            nodes,
            temperature_c: 15.0,
        }
    }

    /// `n` nodes on a circle of `radius_m` around `centre` (ids n01, n02, ...).
    pub fn ring(site: &str, centre: Geodetic, n: usize, radius_m: f64) -> Layout {
        let frame = EnuFrame::new(centre);
        let nodes = (0..n)
            .map(|i| {
                let a = std::f64::consts::TAU * i as f64 / n as f64 + 0.3;
                // Alternate heights a little so the geometry is not degenerate.
                let up = if i % 2 == 0 { 0.0 } else { 8.0 };
                let p = frame.to_geodetic(blastnet_contract::Enu::new(
                    radius_m * a.cos(),
                    radius_m * a.sin(),
                    up,
                ));
                (format!("n{:02}", i + 1), p)
            })
            .collect();
        Layout::of(site, nodes)
    }

    /// `n` nodes on a square grid `side_m` wide centred on `centre` (ids
    /// s000, s001, ...; heights 0, 3, 6, 9 m in turn), as in a dense city
    /// deployment: the noise-storm test and bench.
    pub fn grid(site: &str, centre: Geodetic, n: usize, side_m: f64) -> Layout {
        let frame = EnuFrame::new(centre);
        let cols = (n as f64).sqrt().ceil().max(2.0) as usize;
        let step = side_m / cols as f64;
        let nodes = (0..n)
            .map(|i| {
                let (e, north) = (
                    (i % cols) as f64 * step - side_m / 2.0,
                    (i / cols) as f64 * step - side_m / 2.0,
                );
                let p =
                    frame.to_geodetic(blastnet_contract::Enu::new(e, north, 3.0 * (i % 4) as f64));
                (format!("s{i:03}"), p)
            })
            .collect();
        Layout::of(site, nodes)
    }

    /// The topic of `node`'s `msg` ([`topic::node`]).
    pub fn topic(&self, node: &str, msg: NodeMessage) -> String {
        topic::node(&self.prefix, &self.site, node, msg)
    }

    /// A status of every node.
    pub fn statuses(&self, state: NodeState, time: UtcNs) -> Vec<(String, Vec<u8>)> {
        self.nodes
            .iter()
            .map(|(id, p)| {
                let s = Status {
                    clock: Some(ClockInfo {
                        source: ClockSource::GpsPps,
                        uncertainty_s: 1e-6,
                    }),
                    temperature_c: Some(self.temperature_c),
                    ..Status::new(id.clone(), state, time, *p)
                };
                (
                    self.topic(id, NodeMessage::Status),
                    serde_json::to_vec(&s).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The detection every node makes of a source at `source` at `origin`,
    /// in arrival order, with `seq` as the seq of each.
    pub fn detections(&self, source: Geodetic, origin: UtcNs, seq: u64) -> Vec<Detection> {
        let frame = EnuFrame::new(self.nodes.first().map_or(source, |n| n.1));
        let src = frame.to_enu(source);
        let c = physics::sound_speed(self.temperature_c);
        let mut v: Vec<Detection> = self
            .nodes
            .iter()
            .map(|(id, p)| {
                let t = physics::travel_time(c, [0.0, 0.0], src, frame.to_enu(*p));
                DetectionBuilder::new(id.clone(), seq, origin.add_secs_f64(t))
                    .at(*p)
                    .build()
            })
            .collect();
        v.sort_by_key(|d| d.onset_utc);
        v
    }

    /// Node `k`'s detection with onset `onset` and seq `seq`.
    pub fn pick(&self, k: usize, seq: u64, onset: UtcNs) -> Detection {
        let (id, p) = &self.nodes[k];
        DetectionBuilder::new(id.clone(), seq, onset).at(*p).build()
    }

    /// A noise storm (a fireworks night, hail on the microphones):
    /// `blasts` sources 10 s apart (the first 5 s after `t0`), each within
    /// 800 m east and north of `centre` and heard by every node, on the
    /// ground but the last (of two or more), an airburst 1 km up,
    /// then each node's Poisson random picks at `rate_hz` for `seconds`.
    /// Returns every pick as (onset, node index), in the order drawn, and
    /// the blasts (place, origin).
    pub fn storm_picks(
        &self,
        centre: Geodetic,
        t0: UtcNs,
        blasts: usize,
        rate_hz: f64,
        seconds: f64,
        rng: &mut Rng,
    ) -> (Vec<(UtcNs, usize)>, Vec<Blast>) {
        let frame = EnuFrame::new(centre);
        let mut picks = Vec::new();
        let mut sources = Vec::new();
        for b in 0..blasts {
            let src = frame.to_geodetic(blastnet_contract::Enu::new(
                -800.0 + 1600.0 * rng.next_f64(),
                -800.0 + 1600.0 * rng.next_f64(),
                if b > 0 && b + 1 == blasts {
                    1000.0
                } else {
                    0.0
                },
            ));
            let at = t0.add_secs_f64(5.0 + 10.0 * b as f64);
            sources.push((src, at));
            for d in self.detections(src, at, 0) {
                if let Some(k) = self.nodes.iter().position(|n| n.0 == d.node_id) {
                    picks.push((d.onset_utc, k));
                }
            }
        }
        for k in 0..self.nodes.len() {
            let mut t = 0.0;
            loop {
                t += -(1.0 - rng.next_f64()).ln() / rate_hz;
                if t >= seconds {
                    break;
                }
                picks.push((t0.add_secs_f64(t), k));
            }
        }
        (picks, sources)
    }

    /// Detections as (topic, JSON payload).
    pub fn detection_messages(&self, dets: &[Detection]) -> Vec<(String, Vec<u8>)> {
        dets.iter()
            .map(|d| {
                (
                    self.topic(&d.node_id, NodeMessage::Detection),
                    serde_json::to_vec(d).unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// Publish `msgs` in order with QoS 1 (`retain` as given) from client
/// `client_id` to `host:port`, and return once the broker acknowledged them all.
pub async fn publish_all(
    host: &str,
    port: u16,
    client_id: &str,
    msgs: &[(String, Vec<u8>)],
    retain: bool,
) -> Result<(), String> {
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    let max_packet = blastnet_contract::broker::MAX_PACKET_BYTES;
    opts.set_max_packet_size(max_packet, max_packet);
    let (client, mut el) = AsyncClient::new(opts, msgs.len().max(1) + 8);
    for (t, p) in msgs {
        client
            .publish(t.clone(), QoS::AtLeastOnce, retain, p.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked < msgs.len() {
        let ev = tokio::time::timeout_at(deadline, el.poll())
            .await
            .map_err(|_| format!("only {acked} of {} publishes acknowledged", msgs.len()))?;
        match ev {
            Ok(MqttEvent::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    client.disconnect().await.map_err(|e| e.to_string())?;
    // Let the DISCONNECT go out.
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(500), el.poll()).await {
        if matches!(ev, MqttEvent::Outgoing(Outgoing::Disconnect)) {
            break;
        }
    }
    Ok(())
}

/// `GET path` from `addr` over HTTP/1.1 (Connection: close): (status, body).
/// A few lines instead of an HTTP client crate, for tests and tools.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String), String> {
    http_get_with_head(addr, path)
        .await
        .map(|(status, _, body)| (status, body))
}

/// As [`http_get`], with the response head (status line and headers) too:
/// (status, head, body).
pub async fn http_get_with_head(
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<(u16, String, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .map_err(|_| format!("GET {path}: timed out"))?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no header end in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {path}: bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    if !chunked {
        return Ok((status, head.to_string(), body.to_string()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| format!("GET {path}: bad chunk"))?;
        let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        let chunk = after
            .get(..n)
            .ok_or_else(|| format!("GET {path}: short chunk"))?;
        out.push_str(chunk);
        rest = after.get(n + 2..).unwrap_or("");
    }
    Ok((status, head.to_string(), out))
}

/// Pipeline settings as a replay runs them: the nodes-mode watermark (waiting
/// for `expect_nodes`), 600 s retention, 64 KiB payloads, the default engine.
pub fn nodes_mode_config(expect_nodes: Vec<String>) -> crate::pipeline::PipelineConfig {
    crate::pipeline::PipelineConfig {
        prefix: topic::DEFAULT_PREFIX.into(),
        time_base: crate::TimeBase::Nodes,
        lateness_ns: 0,
        retention_ns: 600_000_000_000,
        max_payload_bytes: 65536,
        max_nodes_per_site: 10_000,
        engine: Default::default(),
        expect_nodes,
    }
}
