//! The aggregator service against a real broker (embedded rumqttd or a
//! Mosquitto process) on 127.0.0.1: ingest validation, dedupe, publish on
//! MQTT, store + HTTP API round trip, persistent session across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use blastnet_aggregator::config::{StorePath, TimeBase};
use blastnet_aggregator::ingest::Reason;
use blastnet_aggregator::metrics::Kind;
use blastnet_aggregator::testkit::{http_get, publish_all, Layout};
use blastnet_aggregator::{start, AggregatorConfig, AggregatorHandle, CancellationToken};
use blastnet_broker::{EmbeddedBroker, Mosquitto};
use blastnet_contract::topic::NodeMessage;
use blastnet_contract::{EnuFrame, Event, EventStatus, Geodetic, NodeState, UtcNs};
use std::sync::atomic::Ordering::Relaxed;

fn centre() -> Geodetic {
    Geodetic::new(40.4406, -79.9959, 250.0)
}

fn config(port: u16, client_id: &str, store: StorePath) -> AggregatorConfig {
    let mut cfg = AggregatorConfig::for_broker(&format!("mqtt://127.0.0.1:{port}")).unwrap();
    cfg.mqtt.client_id = client_id.into();
    cfg.time.base = TimeBase::Nodes;
    cfg.store.path = store;
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    cfg
}

/// Wait until `f` holds, polling every 20 ms, at most `secs`.
async fn wait_until(secs: f64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scenario: 5 nodes on a 600 m ring, a source 150 m east and 100 m south of the centre.
struct Scene {
    layout: Layout,
    source: Geodetic,
    t0: UtcNs,
    origin: UtcNs,
}

fn scene() -> Scene {
    let layout = Layout::ring("hill", centre(), 5, 600.0);
    let source =
        EnuFrame::new(centre()).to_geodetic(blastnet_contract::Enu::new(150.0, -100.0, 0.0));
    let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
    Scene {
        layout,
        source,
        t0,
        origin: t0.add_secs_f64(5.0),
    }
}

/// Publish online statuses and the event's detections (stage 1), wait until
/// the aggregator accepted them, then statuses 60 s later so the watermark
/// passes the event (stage 2), then offline statuses (stage 3), and wait for
/// completion.
async fn play(
    h: &mut AggregatorHandle,
    port: u16,
    s: &Scene,
    seq: u64,
    extra: &[(String, Vec<u8>)],
) {
    let accepted0 = h.metrics().detections_accepted.load(Relaxed);
    let mut msgs = s.layout.statuses(NodeState::Online, s.t0);
    msgs.extend_from_slice(extra);
    let dets = s.layout.detections(s.source, s.origin, seq);
    msgs.extend(s.layout.detection_messages(&dets));
    publish_all("127.0.0.1", port, "test-pub", &msgs, false)
        .await
        .unwrap();
    let m = h.metrics();
    wait_until(10.0, "detections accepted", || {
        m.detections_accepted.load(Relaxed) >= accepted0 + dets.len() as u64
    })
    .await;
    let later = s
        .layout
        .statuses(NodeState::Online, s.t0.add_secs_f64(60.0));
    publish_all("127.0.0.1", port, "test-pub", &later, false)
        .await
        .unwrap();
    let off = s
        .layout
        .statuses(NodeState::Offline, s.t0.add_secs_f64(61.0));
    publish_all("127.0.0.1", port, "test-pub", &off, false)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), h.completed())
        .await
        .expect("all nodes offline: completed");
}

/// Horizontal distance between an event and the true source, m.
fn miss_m(ev: &Event, source: Geodetic) -> f64 {
    let p = EnuFrame::new(source).to_enu(Geodetic::new(ev.lat, ev.lon, source.alt_m));
    p.e.hypot(p.n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_payloads_are_counted_by_reason_and_the_service_keeps_going() {
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let mut h = start(
        config(broker.port(), "agg-invalid", StorePath::Memory),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let s = scene();
    let good = serde_json::to_value(&s.layout.detections(s.source, s.origin, 99)[0]).unwrap();
    let node = good["node_id"].as_str().unwrap().to_string();
    let topic = s.layout.topic(&node, NodeMessage::Detection);
    let mut bad = Vec::new();
    bad.push((topic.clone(), b"{not json".to_vec()));
    let mut v = good.clone();
    v["schema"] = "blastnet.detection/9".into();
    bad.push((topic.clone(), v.to_string().into_bytes()));
    let mut v = good.clone();
    v["node_id"] = "impostor".into();
    bad.push((topic.clone(), v.to_string().into_bytes()));
    let text = good
        .to_string()
        .replace("\"snr_db\":30.0", "\"snr_db\":NaN");
    assert!(text.contains("NaN"));
    bad.push((topic.clone(), text.into_bytes()));
    let mut v = good.clone();
    v["confidence"] = 1.5.into();
    bad.push((topic.clone(), v.to_string().into_bytes()));
    bad.push((
        s.layout.topic(&node, NodeMessage::Status),
        br#"{"schema":"blastnet.status/1","node_id":"n01"}"#.to_vec(),
    ));
    play(&mut h, broker.port(), &s, 1, &bad).await;

    let m = h.metrics();
    assert_eq!(m.invalid_count(Kind::Detection, Reason::Json), 1);
    assert_eq!(m.invalid_count(Kind::Detection, Reason::Schema), 1);
    assert_eq!(m.invalid_count(Kind::Detection, Reason::NodeMismatch), 1);
    assert_eq!(m.invalid_count(Kind::Detection, Reason::NonFinite), 1);
    assert_eq!(m.invalid_count(Kind::Detection, Reason::Range), 1);
    assert_eq!(m.invalid_count(Kind::Status, Reason::Field), 1);
    assert_eq!(m.detections_received.load(Relaxed), 10);
    assert_eq!(m.detections_accepted.load(Relaxed), 5);
    let metrics_text = http_get(h.http_addr(), "/metrics").await.unwrap().1;
    assert!(metrics_text.contains(
        "blastnet_aggregator_invalid_messages_total{kind=\"detection\",reason=\"node_mismatch\"} 1"
    ));
    h.shutdown();
    let summary = h.join().await.unwrap();
    // The valid traffic after the bad messages still made an event.
    assert_eq!(summary.events.len(), 1, "{:?}", summary.events);
    assert_eq!(summary.events[0].detections.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_detections_are_dropped_by_node_and_seq() {
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let mut h = start(
        config(broker.port(), "agg-dedupe", StorePath::Memory),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let s = scene();
    // The same five detections again (a node re-sending from its spool after a reconnect).
    let dup = s
        .layout
        .detection_messages(&s.layout.detections(s.source, s.origin, 7));
    play(&mut h, broker.port(), &s, 7, &dup).await;
    let m = h.metrics();
    assert_eq!(m.detections_received.load(Relaxed), 10);
    assert_eq!(m.detections_accepted.load(Relaxed), 5);
    assert_eq!(m.detections_duplicate.load(Relaxed), 5);
    h.shutdown();
    let summary = h.join().await.unwrap();
    assert_eq!(summary.events.len(), 1);
    let ev = &summary.events[0];
    assert_eq!(
        ev.detections.len(),
        5,
        "each node once: {:?}",
        ev.detections
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_on_mqtt_stored_and_served_over_http() {
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let mut h = start(
        config(broker.port(), "agg-api", StorePath::File(db.clone())),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    // An outside subscriber to the event topic.
    let mut opts = rumqttc::MqttOptions::new("event-watcher", "127.0.0.1", broker.port());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (sub, mut sub_loop) = rumqttc::AsyncClient::new(opts, 16);
    sub.subscribe("blastnet/+/event", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let (subacked_tx, subacked_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subacked = Some(subacked_tx);
        while let Ok(ev) = sub_loop.poll().await {
            match ev {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    if let Some(tx) = subacked.take() {
                        let _ = tx.send(());
                    }
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    let _ = seen_tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                _ => {}
            }
        }
    });
    subacked_rx.await.unwrap();

    let s = scene();
    play(&mut h, broker.port(), &s, 1, &[]).await;

    // Every revision the aggregator announced arrives on MQTT, in order, same id.
    let mut announced = Vec::new();
    while let Ok(ev) = h.events.try_recv() {
        announced.push(ev);
    }
    assert!(!announced.is_empty());
    let mut on_mqtt = Vec::new();
    while on_mqtt.len() < announced.len() {
        let (topic, payload) = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
            .await
            .expect("event on MQTT")
            .unwrap();
        assert_eq!(topic, "blastnet/hill/event");
        let ev: Event = serde_json::from_slice(&payload).unwrap();
        assert_eq!(ev.schema, "blastnet.event/1");
        on_mqtt.push(ev);
    }
    assert_eq!(on_mqtt, announced);
    let last = announced.last().unwrap();
    assert_eq!(last.status, EventStatus::Final);
    assert!(announced.iter().all(|e| e.event_id == last.event_id));
    assert_eq!(
        announced.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (1..=announced.len() as u32).collect::<Vec<_>>()
    );
    // Location: within 4 sigma of the truth (1e-4 s picks over 600 m: decimetres).
    let miss = miss_m(last, s.source);
    assert!(
        miss <= 4.0 * last.uncertainty.horizontal_m + 0.05,
        "missed by {miss} m, 1-sigma {} m",
        last.uncertainty.horizontal_m
    );

    // Store + API. The store thread writes just after publishing: wait for it.
    let addr = h.http_addr();
    let id = last.event_id.clone();
    let mut record = serde_json::Value::Null;
    for _ in 0..250 {
        let (code, body) = http_get(addr, &format!("/api/events/{id}")).await.unwrap();
        if code == 200 {
            record = serde_json::from_str(&body).unwrap();
            if record["event"]["revision"] == last.revision {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(record["event"]["revision"], last.revision);
    assert_eq!(
        record["revisions"].as_array().unwrap().len(),
        announced.len()
    );
    assert_eq!(record["detections"].as_array().unwrap().len(), 5);

    let (from, to) = (s.origin.add_secs_f64(-1.0), s.origin.add_secs_f64(1.0));
    let (code, body) = http_get(addr, &format!("/api/events?from={from}&to={to}"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let list: Vec<Event> = serde_json::from_str(&body).unwrap();
    assert_eq!(list, vec![last.clone()]);
    let (code, body) = http_get(addr, &format!("/api/events?from={to}"))
        .await
        .unwrap();
    assert_eq!((code, body.as_str()), (200, "[]"));
    let (code, body) = http_get(addr, "/api/events?from=yesterday").await.unwrap();
    assert!(code == 400 && body.contains("from"), "{code} {body}");
    let (code, _) = http_get(addr, "/api/events/no-such-event").await.unwrap();
    assert_eq!(code, 404);

    let (code, body) = http_get(addr, &format!("/api/events.geojson?from={from}&to={to}"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let gj: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(gj["type"], "FeatureCollection");
    let feats = gj["features"].as_array().unwrap();
    assert_eq!(feats.len(), 2, "a point and its ellipse");
    assert_eq!(feats[0]["geometry"]["type"], "Point");
    assert_eq!(feats[0]["geometry"]["coordinates"][0], last.lon);
    assert_eq!(feats[0]["geometry"]["coordinates"][1], last.lat);
    assert_eq!(feats[1]["geometry"]["type"], "Polygon");
    let ring = feats[1]["geometry"]["coordinates"][0].as_array().unwrap();
    assert_eq!(ring.first(), ring.last());
    assert!(ring.len() >= 5);

    let (code, body) = http_get(addr, "/api/nodes").await.unwrap();
    assert_eq!(code, 200);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(nodes.len(), 5);
    assert!(nodes.iter().all(|n| n["state"] == "offline"));
    let (code, body) = http_get(addr, "/healthz").await.unwrap();
    assert!(code == 200 && body.contains("\"ok\""), "{body}");
    let (code, body) = http_get(addr, "/").await.unwrap();
    assert!(
        code == 200
            && body.contains("<div id=\"map\"")
            && body.contains("/vendor/leaflet/leaflet.js"),
        "the map page: {code}"
    );

    h.shutdown();
    h.join().await.unwrap();
    // The file outlives the service and reopens at the same schema.
    let store = blastnet_aggregator::store::Store::open_file(&db).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        blastnet_aggregator::store::SCHEMA_VERSION
    );
    assert_eq!(
        store.events_between(None, None, 10).unwrap(),
        vec![last.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detections_published_while_the_aggregator_is_down_are_delivered_after_restart() {
    let broker = Mosquitto::start_required();
    let port = broker.port();
    // First run: subscribe (creates the persistent session), then stop.
    let h = start(
        config(port, "agg-persist", StorePath::Memory),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    h.shutdown();
    h.join().await.unwrap();

    // While it is down, the nodes publish.
    let s = scene();
    let mut msgs = s.layout.statuses(NodeState::Online, s.t0);
    msgs.extend(
        s.layout
            .detection_messages(&s.layout.detections(s.source, s.origin, 3)),
    );
    publish_all("127.0.0.1", port, "test-pub", &msgs, false)
        .await
        .unwrap();

    // Second run with the same client id: the broker hands over what it queued.
    let h = start(
        config(port, "agg-persist", StorePath::Memory),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let m = h.metrics();
    wait_until(10.0, "queued detections", || {
        m.detections_accepted.load(Relaxed) == 5
    })
    .await;
    assert_eq!(m.statuses_received.load(Relaxed), 5);
    h.shutdown();
    let summary = h.join().await.unwrap();
    assert_eq!(
        summary.events.len(),
        1,
        "the flush at shutdown locates the event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_clear_error() {
    let port = blastnet_broker::free_port();
    let mut cfg = config(port, "agg-nobroker", StorePath::Memory);
    cfg.mqtt.connect_timeout = Duration::from_millis(800);
    let e = match start(cfg, CancellationToken::new()).await {
        Ok(_) => panic!("started without a broker"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

/// Publish one payload of `bytes` bytes on `topic` from a client of its own
/// (allowed to send packets of any size): whether the broker then closed
/// that client's connection (it refuses packets over its `max_packet_size`).
async fn oversized_publish(
    port: u16,
    id: &str,
    topic: &str,
    bytes: usize,
    qos: rumqttc::QoS,
) -> bool {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 256 << 20);
    let (c, mut el) = rumqttc::AsyncClient::new(opts, 4);
    c.publish(topic, qos, false, vec![b'x'; bytes])
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match el.poll().await {
                Err(_) => return true,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => return false,
                Ok(_) => {}
            }
        }
    })
    .await;
    // No answer in 5 s (QoS 0 and the connection still up): not refused.
    closed.unwrap_or(false)
}

/// Oversized payloads on a detection topic, QoS 0 and 1: the broker (with
/// the shipped limits) refuses those over the packet limit and drops their
/// sender; one under it but over `ingest.max_payload_bytes` reaches the
/// aggregator, which counts it as too large and acknowledges it. The
/// aggregator's own connection is never touched, and valid detections sent
/// afterwards are located within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_are_refused_and_valid_traffic_after_them_is_located_at_once() {
    for mosquitto in [true, false] {
        let (_m, _e, port) = if mosquitto {
            let m = Mosquitto::start_required();
            let p = m.port();
            (Some(m), None, p)
        } else {
            let e = EmbeddedBroker::start_on_free_port().unwrap();
            let p = e.port();
            (None, Some(e), p)
        };
        let mut h = start(
            config(port, "agg-oversize", StorePath::Memory),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let s = scene();
        let topic = s.layout.topic("n01", NodeMessage::Detection);
        for (i, (bytes, qos)) in [
            (1 << 20, rumqttc::QoS::AtMostOnce),
            (1 << 20, rumqttc::QoS::AtLeastOnce),
            (100 << 20, rumqttc::QoS::AtMostOnce),
            (100 << 20, rumqttc::QoS::AtLeastOnce),
        ]
        .into_iter()
        .enumerate()
        {
            let refused =
                oversized_publish(port, &format!("hostile-{i}"), &topic, bytes, qos).await;
            assert!(
                refused,
                "mosquitto {mosquitto}: a {bytes}-byte payload at {qos:?} was not refused by the broker"
            );
        }
        // Under the packet limit, over the payload limit: the aggregator's refusal.
        let big = vec![(topic.clone(), vec![b'x'; 100 << 10])];
        publish_all("127.0.0.1", port, "big-but-allowed", &big, false)
            .await
            .unwrap();
        let m = h.metrics();
        wait_until(5.0, "the too-large payload counted", || {
            m.invalid_count(Kind::Detection, Reason::TooLarge) == 1
        })
        .await;

        let t = std::time::Instant::now();
        play(&mut h, port, &s, 1, &[]).await;
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "mosquitto {mosquitto}: the event took {took:?}"
        );
        assert_eq!(
            m.mqtt_connects.load(Relaxed),
            1,
            "the aggregator never reconnected"
        );
        assert_eq!(m.mqtt_errors.load(Relaxed), 0);
        h.shutdown();
        let summary = h.join().await.unwrap();
        assert_eq!(summary.events.len(), 1, "mosquitto {mosquitto}");
        assert_eq!(summary.events[0].detections.len(), 5);
    }
}

/// A node whose first status (heard before any other) puts it on the other
/// side of the world is refused, with its reason in `/api/nodes`, once the
/// site's other nodes show where the site is; the engine's frame follows
/// them, and a blast is published final as soon as its own arrivals allow
/// (live, wall-clock watermark), not when a window spanning the bad
/// position's 16,000 km would close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_off_first_status_is_refused_and_events_come_on_time() {
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let mut cfg = config(broker.port(), "agg-faroff", StorePath::Memory);
    cfg.time.base = TimeBase::Wall;
    let mut h = start(cfg, CancellationToken::new()).await.unwrap();
    let s = scene();
    let now = UtcNs::now();
    let bad = blastnet_contract::Status::new(
        "n99",
        NodeState::Online,
        now,
        Geodetic::new(-33.86, 151.21, 20.0),
    );
    let mut msgs = vec![(
        s.layout.topic("n99", NodeMessage::Status),
        serde_json::to_vec(&bad).unwrap(),
    )];
    msgs.extend(s.layout.statuses(NodeState::Online, now));
    publish_all("127.0.0.1", broker.port(), "faroff-status", &msgs, false)
        .await
        .unwrap();
    let origin = UtcNs::now();
    let dets = s.layout.detections(s.source, origin, 1);
    let sent = std::time::Instant::now();
    publish_all(
        "127.0.0.1",
        broker.port(),
        "faroff-dets",
        &s.layout.detection_messages(&dets),
        false,
    )
    .await
    .unwrap();
    // Final once the wall-clock watermark (now - 2 s) passes the event's
    // deadline (its last arrival, under 3.5 s across the 1.2 km ring, plus
    // the engine's wait for stragglers): about 9 s without the bad node.
    // 30 s allows for a slow machine; a window sized by the bad node's
    // 11,900 km from the others would be 35,000 s.
    let ev = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let e = h.events.recv().await.unwrap();
            if e.status == EventStatus::Final {
                return e;
            }
        }
    })
    .await;
    let ev = match ev {
        Ok(e) => e,
        Err(_) => {
            let (_, nodes) = http_get(h.http_addr(), "/api/nodes").await.unwrap();
            let (_, metrics) = http_get(h.http_addr(), "/metrics").await.unwrap();
            panic!("no final event within 30 s; nodes {nodes}\n{metrics}");
        }
    };
    eprintln!("final after {:?}", sent.elapsed());
    assert_eq!(ev.detections.len(), 5);
    let miss = miss_m(&ev, s.source);
    assert!(
        miss <= 4.0 * ev.uncertainty.horizontal_m + 0.05,
        "missed by {miss} m, 1-sigma {} m",
        ev.uncertainty.horizontal_m
    );
    let (code, body) = http_get(h.http_addr(), "/api/nodes").await.unwrap();
    assert_eq!(code, 200);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let n99 = nodes.iter().find(|n| n["node_id"] == "n99").unwrap();
    let why = n99["refused"].as_str().unwrap_or_default();
    assert!(why.contains("km from the median of site hill"), "{n99}");
    assert!(nodes
        .iter()
        .filter(|n| n["node_id"] != "n99")
        .all(|n| n["refused"].is_null()));
    h.shutdown();
    h.join().await.unwrap();
}

/// A store that refuses writes for a while (another connection holds the
/// file's write lock, as a full disk would refuse them) gets every event
/// revision once it takes writes again: the final event is served by the
/// API, with all its revisions, and nothing was lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_the_store_refused_are_written_once_it_takes_writes_again() {
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let mut h = start(
        config(broker.port(), "agg-retry", StorePath::File(db.clone())),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let s = scene();
    play(&mut h, broker.port(), &s, 1, &[]).await;
    let mut announced = Vec::new();
    while let Ok(ev) = h.events.try_recv() {
        announced.push(ev);
    }
    let last = announced.last().expect("an event").clone();
    assert_eq!(last.status, EventStatus::Final);
    let m = h.metrics();
    wait_until(20.0, "a refused store write", || {
        m.store_errors.load(Relaxed) >= 1
    })
    .await;
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let record = loop {
        let (code, body) = http_get(h.http_addr(), &format!("/api/events/{}", last.event_id))
            .await
            .unwrap();
        if code == 200 {
            let r: serde_json::Value = serde_json::from_str(&body).unwrap();
            if r["event"]["revision"] == last.revision {
                break r;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the event was not stored after the lock was released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        record["revisions"].as_array().unwrap().len(),
        announced.len(),
        "every revision stored"
    );
    h.shutdown();
    h.join().await.unwrap();
}
