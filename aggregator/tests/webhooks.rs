//! Webhooks against a real local HTTP server (axum on 127.0.0.1) and a real
//! broker (the embedded rumqttd): a final event is POSTed to the hooks
//! whose kind, confidence and area filters it passes, retried after the
//! server's first 503, and not to the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use blastnet_aggregator::config::{StorePath, TimeBase};
use blastnet_aggregator::testkit::{publish_all, Layout};
use blastnet_aggregator::webhook::FIRST_BACKOFF;
use blastnet_aggregator::{start, AggregatorConfig, CancellationToken};
use blastnet_broker::EmbeddedBroker;
use blastnet_contract::{
    Enu, EnuFrame, Event, EventStatus, Geodetic, NodeState, SourceKind, UtcNs,
};

/// Every request: (hook name, when, body, status answered).
type Seen = Arc<Mutex<Vec<(String, Instant, Vec<u8>, u16)>>>;

async fn hook(
    State(seen): State<Seen>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut s = seen.lock().unwrap();
    // The first request of each hook fails, as a server that is restarting.
    let first = !s.iter().any(|r| r.0 == name);
    let status = if first {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    s.push((name, Instant::now(), body.to_vec(), status.as_u16()));
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_events_are_posted_to_the_hooks_that_want_them_and_retried_after_a_503() {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook/{name}", axum::routing::post(hook))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let centre = Geodetic::new(40.4406, -79.9959, 250.0);
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let port = broker.port();
    let text = format!(
        "[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"agg-hooks\"\n\
         [store]\npath = \":memory:\"\n[http]\nlisten = \"127.0.0.1:0\"\n[time]\nbase = \"nodes\"\n\
         [[webhook]]\nurl = \"http://{http}/hook/near\"\nkinds = [\"explosion\"]\narea = [40.43, -80.01, 40.45, -79.98]\n\
         [[webhook]]\nurl = \"http://{http}/hook/elsewhere\"\narea = [41.0, -80.01, 41.1, -79.98]\n\
         [[webhook]]\nurl = \"http://{http}/hook/gunshots\"\nkinds = [\"gunshot\"]\n\
         [[webhook]]\nurl = \"http://{http}/hook/sure\"\nmin_confidence = 1.0\n"
    );
    let mut cfg = AggregatorConfig::from_toml_str(&text, "webhook test").unwrap();
    cfg.time.base = TimeBase::Nodes;
    cfg.store.path = StorePath::Memory;
    let mut h = start(cfg, CancellationToken::new()).await.unwrap();

    let layout = Layout::ring("hill", centre, 5, 600.0);
    let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
    let source = EnuFrame::new(centre).to_geodetic(Enu::new(150.0, -100.0, 0.0));
    let mut msgs = layout.statuses(NodeState::Online, t0);
    msgs.extend(layout.detection_messages(&layout.detections(source, t0.add_secs_f64(5.0), 1)));
    msgs.extend(layout.statuses(NodeState::Online, t0.add_secs_f64(60.0)));
    msgs.extend(layout.statuses(NodeState::Offline, t0.add_secs_f64(61.0)));
    publish_all("127.0.0.1", port, "pub", &msgs, false)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), h.completed())
        .await
        .expect("completed");

    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.0 == "near" && r.3 == 200)
    {
        assert!(
            Instant::now() < deadline,
            "no delivery to \"near\" within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.shutdown();
    let summary = h.join().await.unwrap();
    // The event the hooks filter: an explosion near the centre, less than
    // certain.
    let event = summary
        .events
        .iter()
        .find(|e| e.status == EventStatus::Final)
        .expect("a final event");
    assert_eq!(event.kind, SourceKind::Explosion);
    assert!(event.confidence < 1.0, "{}", event.confidence);

    let seen = seen.lock().unwrap();
    let near: Vec<_> = seen.iter().filter(|r| r.0 == "near").collect();
    assert_eq!(
        near.iter().map(|r| r.3).collect::<Vec<_>>(),
        [503, 200],
        "one failure, then the retry delivered"
    );
    assert!(
        near[1].1 - near[0].1 >= FIRST_BACKOFF,
        "the retry waited the backoff"
    );
    for r in &near {
        let got: Event = serde_json::from_slice(&r.2).expect("the event's JSON");
        assert_eq!(&got, event);
    }
    let others: Vec<_> = seen
        .iter()
        .filter(|r| r.0 != "near")
        .map(|r| &r.0)
        .collect();
    assert!(
        others.is_empty(),
        "outside the area, another kind, less confident: nothing sent, got {others:?}"
    );
}
