//! The aggregator's retained extension topics against a real broker (the
//! embedded rumqttd on 127.0.0.1): the latest event of a site, seen at once
//! by a subscriber that connects after it, and the aggregator's
//! availability, `online` while it runs and `offline` after it stops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use blastnet_aggregator::config::{StorePath, TimeBase};
use blastnet_aggregator::testkit::{publish_all, Layout};
use blastnet_aggregator::{start, AggregatorConfig, CancellationToken};
use blastnet_broker::EmbeddedBroker;
use blastnet_contract::{topic, Enu, EnuFrame, Event, EventStatus, Geodetic, NodeState, UtcNs};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

/// The retained messages a new subscriber to `filter` gets: what the broker
/// sends with the retain flag before 500 ms pass without one.
async fn retained(port: u16, id: &str, filter: &str) -> Vec<(String, Vec<u8>)> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 16);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let mut out = Vec::new();
    let mut subacked = false;
    loop {
        let wait = if subacked { 500 } else { 10_000 };
        match tokio::time::timeout(Duration::from_millis(wait), el.poll()).await {
            Ok(Ok(MqttEvent::Incoming(Packet::SubAck(_)))) => subacked = true,
            Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) if p.retain => {
                out.push((p.topic.clone(), p.payload.to_vec()));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber {id}: {e}"),
            Err(_) => {
                assert!(subacked, "subscriber {id}: no SUBACK within 10 s");
                break;
            }
        }
    }
    let _ = client.disconnect().await;
    out
}

/// The one retained message on `topic`, if any.
async fn retained_one(port: u16, id: &str, topic: &str) -> Option<Vec<u8>> {
    let mut v = retained(port, id, topic).await;
    assert!(v.len() <= 1, "{topic}: {} retained messages", v.len());
    v.pop().map(|(_, p)| p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_event_is_retained_for_a_subscriber_that_connects_after_it() {
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let port = broker.port();
    let mut cfg = AggregatorConfig::for_broker(&format!("mqtt://127.0.0.1:{port}")).unwrap();
    cfg.mqtt.client_id = "agg-retained".into();
    cfg.time.base = TimeBase::Nodes;
    cfg.store.path = StorePath::Memory;
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    let mut h = start(cfg, CancellationToken::new()).await.unwrap();
    let availability = topic::aggregator_availability("blastnet", "agg-retained");
    assert_eq!(
        retained_one(port, "look-1", &availability).await.as_deref(),
        Some(topic::AVAILABLE.as_bytes()),
        "online while running"
    );

    // Two sources 20 s apart, then statuses that pass the watermark beyond
    // both, then offline statuses: both events final.
    let centre = Geodetic::new(40.4406, -79.9959, 250.0);
    let layout = Layout::ring("hill", centre, 5, 600.0);
    let frame = EnuFrame::new(centre);
    let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
    let mut msgs = layout.statuses(NodeState::Online, t0);
    for (i, (e, n)) in [(150.0, -100.0), (-120.0, 80.0)].into_iter().enumerate() {
        let src = frame.to_geodetic(Enu::new(e, n, 0.0));
        let dets = layout.detections(src, t0.add_secs_f64(5.0 + 20.0 * i as f64), i as u64 + 1);
        msgs.extend(layout.detection_messages(&dets));
    }
    msgs.extend(layout.statuses(NodeState::Online, t0.add_secs_f64(90.0)));
    msgs.extend(layout.statuses(NodeState::Offline, t0.add_secs_f64(91.0)));
    let sent = msgs.len() as u64;
    publish_all("127.0.0.1", port, "pub", &msgs, false)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), h.completed())
        .await
        .expect("every node offline: completed");
    let m = h.metrics();
    h.shutdown();
    let summary = h.join().await.unwrap();

    let finals: Vec<&Event> = summary
        .events
        .iter()
        .filter(|e| e.status == EventStatus::Final)
        .collect();
    assert_eq!(finals.len(), 2, "two events: {:?}", summary.events);
    let newest = finals.iter().max_by_key(|e| e.origin_utc).unwrap();

    // A subscriber connecting after the aggregator has gone gets the newer
    // event's final revision, as published on the event topic.
    let got = retained_one(port, "look-2", &topic::event_latest("blastnet", "hill"))
        .await
        .expect("the latest event is retained");
    let got: Event = serde_json::from_slice(&got).expect("a blastnet.event/1 payload");
    assert_eq!(got, **newest);
    // No other retained event topic (the SPEC event topic is not retained),
    // and the aggregator did not take its own outputs in as node messages.
    let all = retained(port, "look-3", "blastnet/hill/event/#").await;
    assert_eq!(
        all.len(),
        1,
        "{:?}",
        all.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    assert_eq!(m.invalid_topic.load(Relaxed), 0);
    assert_eq!(
        m.detections_received.load(Relaxed) + m.statuses_received.load(Relaxed),
        sent,
        "the aggregator received exactly what the nodes sent"
    );
    assert_eq!(
        retained_one(port, "look-4", &availability).await.as_deref(),
        Some(topic::UNAVAILABLE.as_bytes()),
        "offline after a clean stop"
    );
}
