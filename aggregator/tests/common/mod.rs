//! A running aggregator with located events, for the export and metrics tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use blastnet_aggregator::config::{StorePath, TimeBase};
use blastnet_aggregator::testkit::{publish_all, Layout};
use blastnet_aggregator::{start, AggregatorConfig, AggregatorHandle, CancellationToken};
use blastnet_broker::EmbeddedBroker;
use blastnet_contract::{Enu, EnuFrame, Event, EventStatus, Geodetic, NodeState, UtcNs};

/// The aggregator, its broker, the nodes and the final events (by id).
pub struct Scene {
    pub agg: AggregatorHandle,
    pub broker: EmbeddedBroker,
    pub layout: Layout,
    pub finals: BTreeMap<String, Event>,
    /// Detections published per node.
    pub published: BTreeMap<String, u64>,
    pub t0: UtcNs,
}

/// Six nodes on a 600 m ring and three sources 20 s apart (two inside the
/// ring, one 950 m outside), published as replay nodes would: statuses,
/// picks, statuses past them; returns once all three events are final and
/// stored.
pub async fn located_events(client_id: &str) -> Scene {
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let mut cfg = AggregatorConfig::for_broker(&broker.url()).unwrap();
    cfg.mqtt.client_id = client_id.into();
    cfg.time.base = TimeBase::Nodes;
    cfg.store.path = StorePath::Memory;
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    let mut agg = start(cfg, CancellationToken::new()).await.unwrap();

    let centre = Geodetic::new(46.5197, 6.6323, 400.0);
    let layout = Layout::ring("lab-site", centre, 6, 600.0);
    let frame = EnuFrame::new(centre);
    let t0 = UtcNs::parse("2025-03-01T08:00:00Z").unwrap();
    let sources = [
        (Enu::new(150.0, -100.0, 0.0), 5.0),
        (Enu::new(-900.0, 300.0, 0.0), 25.0),
        (Enu::new(100.0, 250.0, 0.0), 45.0),
    ];
    let m = agg.metrics();
    let mut accepted = 0;
    let mut published = BTreeMap::new();
    for (i, (src, at)) in sources.iter().enumerate() {
        let origin = t0.add_secs_f64(*at);
        let mut msgs = layout.statuses(NodeState::Online, t0.add_secs_f64(20.0 * i as f64));
        let mut dets = layout.detections(frame.to_geodetic(*src), origin, i as u64 + 1);
        for d in &mut dets {
            d.onset_uncertainty_s = 0.002;
            *published.entry(d.node_id.clone()).or_insert(0) += 1;
        }
        accepted += dets.len() as u64;
        msgs.extend(layout.detection_messages(&dets));
        publish_all("127.0.0.1", broker.port(), "scene-pub", &msgs, false)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while m.detections_accepted.load(Relaxed) < accepted {
            assert!(
                tokio::time::Instant::now() < deadline,
                "detections not accepted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let later = layout.statuses(NodeState::Online, t0.add_secs_f64(120.0));
    publish_all("127.0.0.1", broker.port(), "scene-pub", &later, false)
        .await
        .unwrap();
    let mut finals = BTreeMap::new();
    let mut seen = Vec::new();
    while finals.len() < sources.len() {
        let ev = match tokio::time::timeout(Duration::from_secs(10), agg.events.recv()).await {
            Ok(ev) => ev.unwrap(),
            Err(_) => panic!("expected {} final events, got {seen:#?}", sources.len()),
        };
        seen.push(ev.event_id.clone());
        if ev.status == EventStatus::Final {
            finals.insert(ev.event_id.clone(), ev);
        }
    }
    // The store writes behind the publish: wait until it holds them all.
    let addr = agg.http_addr();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = blastnet_aggregator::testkit::http_get(addr, "/api/events")
            .await
            .unwrap();
        let stored: Vec<Event> = serde_json::from_str(&body).unwrap();
        if stored.len() == finals.len() && stored.iter().all(|e| e.status == EventStatus::Final) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store holds {} events, not the {} final ones",
            stored.len(),
            finals.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Scene {
        agg,
        broker,
        layout,
        finals,
        published,
        t0,
    }
}
