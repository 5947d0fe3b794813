//! The live map as a person sees it: the aggregator against an embedded
//! broker, five nodes and two located events, then headless Chromium loads
//! `GET /` and the test reads the rendered DOM (nodes, events, 1-sigma
//! ellipses, the metric grid drawn when no tiles are configured) and takes
//! a screenshot. tests/map_browser.rs drives the page further (tiles that
//! fail, the drawer, the filters).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use blastnet_aggregator::config::{StorePath, TimeBase};
use blastnet_aggregator::testkit::{publish_all, Layout};
use blastnet_aggregator::{start, AggregatorConfig, CancellationToken};
use blastnet_broker::EmbeddedBroker;
use blastnet_contract::{Enu, EnuFrame, EventStatus, Geodetic, NodeState, UtcNs};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium(args: &[&str], url: &str, profile: &Path) -> std::process::Output {
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url);
    cmd.output().expect("run chromium")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_map_shows_nodes_events_and_their_uncertainty_ellipses() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "this test requires Chromium, {CHROMIUM} not found: run the tests with `scripts/test`, \
         which installs it when missing (or `apt-get install -y chromium`)"
    );
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let mut cfg = AggregatorConfig::for_broker(&broker.url()).unwrap();
    cfg.mqtt.client_id = "agg-map".into();
    cfg.time.base = TimeBase::Nodes;
    cfg.store.path = StorePath::Memory;
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    let mut h = start(cfg, CancellationToken::new()).await.unwrap();

    // Five nodes on a 600 m ring; one source inside, one 900 m outside (its
    // ellipse is long in range, narrow across). NTP-grade picks (20 ms) so
    // the 1-sigma ellipses are metres, visible at this scale.
    let centre = Geodetic::new(40.4406, -79.9959, 250.0);
    let layout = Layout::ring("city", centre, 5, 600.0);
    let frame = EnuFrame::new(centre);
    let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
    let sources = [
        (
            frame.to_geodetic(Enu::new(150.0, -100.0, 0.0)),
            t0.add_secs_f64(5.0),
        ),
        (
            frame.to_geodetic(Enu::new(-900.0, 300.0, 0.0)),
            t0.add_secs_f64(20.0),
        ),
    ];
    // In stages, as replay nodes publish: statuses, the first source's picks,
    // statuses 15 s later (the watermark passes it), the second source's picks.
    let m = h.metrics();
    let mut accepted = 0;
    for (i, (src, origin)) in sources.iter().enumerate() {
        let mut msgs = layout.statuses(NodeState::Online, t0.add_secs_f64(15.0 * i as f64));
        let mut dets = layout.detections(*src, *origin, i as u64 + 1);
        for d in &mut dets {
            d.onset_uncertainty_s = 0.02;
        }
        accepted += dets.len() as u64;
        msgs.extend(layout.detection_messages(&dets));
        publish_all("127.0.0.1", broker.port(), "map-pub", &msgs, false)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while m
            .detections_accepted
            .load(std::sync::atomic::Ordering::Relaxed)
            < accepted
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "detections not accepted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Nodes stay online; their status time moves past both events.
    let later = layout.statuses(NodeState::Online, t0.add_secs_f64(90.0));
    publish_all("127.0.0.1", broker.port(), "map-pub", &later, false)
        .await
        .unwrap();
    let mut finals = std::collections::BTreeMap::new();
    let mut seen = Vec::new();
    while finals.len() < 2 {
        let ev = match tokio::time::timeout(Duration::from_secs(10), h.events.recv()).await {
            Ok(ev) => ev.unwrap(),
            Err(_) => panic!("expected two final events, got revisions {seen:#?}"),
        };
        seen.push(ev.clone());
        if ev.status == EventStatus::Final {
            finals.insert(ev.event_id.clone(), ev);
        }
    }

    let url = format!("http://{}/", h.http_addr());
    let profile = tempfile::tempdir().unwrap();
    let url2 = url.clone();
    let p = profile.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || chromium(&["--dump-dom"], &url2, &p))
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("leaflet-container"),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for (id, _) in &layout.nodes {
        assert!(
            dom.contains(&format!("class=\"node\" data-node-id=\"{id}\"")),
            "node {id} missing from the map:\n{dom}"
        );
    }
    for id in finals.keys() {
        assert!(
            dom.contains(&format!("class=\"event\" data-event-id=\"{id}\"")),
            "event {id} missing from the map"
        );
        assert!(
            dom.contains(&format!("data-ellipse-of=\"{id}\"")),
            "event {id} has no ellipse"
        );
        // And in the side list.
        assert!(
            dom.contains(&format!("<li data-event-id=\"{id}\"")),
            "event {id} missing from the list"
        );
        // In the server's words (blastnet_contract::text, sent over the websocket).
        let words = blastnet_contract::text::event_text(&finals[id]);
        assert!(
            dom.contains(&words.headline) && dom.contains(&words.picks),
            "event {id} not in the server's words ({:?}, {:?}):\n{dom}",
            words.headline,
            words.picks
        );
    }
    assert!(dom.contains("leaflet-control-scale"), "scale bar missing");
    // No tiles configured: the metric grid, and a note saying so.
    assert!(
        dom.contains("data-background=\"grid\"") && dom.contains("grid-line"),
        "no metric grid:\n{dom}"
    );

    // A screenshot for a person to look at (kept at $BLASTNET_MAP_SCREENSHOT if set).
    let shot = std::env::var("BLASTNET_MAP_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| profile.path().join("map.png"));
    let shot_arg = format!("--screenshot={}", shot.display());
    let p = profile.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        chromium(
            &[&shot_arg, "--window-size=1200,800", "--hide-scrollbars"],
            &url,
            &p,
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot is {} bytes",
        png.len()
    );

    h.shutdown();
    let summary = h.join().await.unwrap();
    assert_eq!(summary.events.len(), 2);
}
