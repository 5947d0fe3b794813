//! Home Assistant's view of the aggregator process, against a real
//! Mosquitto: the retained MQTT discovery configs (checked against the keys
//! HA's discovery needs), the state topics they name (carrying what their
//! templates read), and the aggregator's availability: `online` while it
//! runs, `offline` after a SIGTERM and, by its last will, after a `kill -9`.
//!
//! Requires mosquitto (`scripts/test` installs it): fails, saying so, when
//! it is absent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blastnet_aggregator::testkit::{publish_all, Layout};
use blastnet_broker::Mosquitto;
use blastnet_contract::{topic, Enu, EnuFrame, Event, EventStatus, Geodetic, NodeState, UtcNs};
use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde_json::Value;

const SITE: &str = "ha";
const CLIENT_ID: &str = "ha-aggregator";

/// (topic, payload) as received, in order.
type Log = Arc<Mutex<Vec<(String, String)>>>;

/// A subscriber like Home Assistant's: `homeassistant/#` and the
/// aggregator's availability topic, recording what arrives live.
fn home_assistant(port: u16) -> Log {
    let log: Log = Arc::default();
    let subacks = Arc::new(AtomicU64::new(0));
    let (l, s) = (log.clone(), subacks.clone());
    std::thread::spawn(move || {
        let mut o = MqttOptions::new("home-assistant", "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(o, 64);
        client
            .subscribe("homeassistant/#", QoS::AtLeastOnce)
            .unwrap();
        client
            .subscribe(
                topic::aggregator_availability("blastnet", CLIENT_ID),
                QoS::AtLeastOnce,
            )
            .unwrap();
        for ev in conn.iter() {
            match ev {
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    s.fetch_add(1, Ordering::SeqCst);
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let text = String::from_utf8_lossy(&p.payload).into_owned();
                    l.lock().unwrap().push((p.topic.clone(), text));
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while subacks.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "Home Assistant not subscribed");
        std::thread::sleep(Duration::from_millis(10));
    }
    log
}

/// The retained messages a new subscriber to `filter` gets (what arrives
/// with the retain flag until 500 ms pass without one).
fn retained(port: u16, filter: &str) -> Vec<(String, Vec<u8>)> {
    static N: AtomicU64 = AtomicU64::new(0);
    let id = format!("look-{}", N.fetch_add(1, Ordering::SeqCst));
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(o, 16);
    client.subscribe(filter, QoS::AtLeastOnce).unwrap();
    let (mut out, mut subacked) = (Vec::new(), false);
    loop {
        let wait = Duration::from_millis(if subacked { 500 } else { 10_000 });
        match conn.recv_timeout(wait) {
            Ok(Ok(MqttEvent::Incoming(Packet::SubAck(_)))) => subacked = true,
            Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) if p.retain => {
                out.push((p.topic.clone(), p.payload.to_vec()));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber to {filter}: {e}"),
            Err(_) => {
                assert!(subacked, "subscriber to {filter}: no SUBACK within 10 s");
                break;
            }
        }
    }
    let _ = client.disconnect();
    out
}

/// The availability messages Home Assistant received so far.
fn availability_seen(log: &Log) -> Vec<String> {
    let t = topic::aggregator_availability("blastnet", CLIENT_ID);
    log.lock()
        .unwrap()
        .iter()
        .filter(|(topic, _)| *topic == t)
        .map(|(_, p)| p.clone())
        .collect()
}

/// Wait until Home Assistant has seen `n` availability messages, the last
/// being `want`, and the retained one is `want` too.
fn wait_availability(log: &Log, port: u16, n: usize, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = availability_seen(log);
        if seen.len() >= n && seen.last().map(String::as_str) == Some(want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "availability {want:?} not seen within {secs} s: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = topic::aggregator_availability("blastnet", CLIENT_ID);
    let r = retained(port, &t);
    assert_eq!(r.len(), 1, "one retained availability");
    assert_eq!(
        String::from_utf8_lossy(&r[0].1),
        want,
        "retained availability"
    );
}

use common::{get_ok as get, spawn_aggregator as spawn, wait_up};

/// The `value_json` paths a template reads (`value_json.a.b` -> `[a, b]`).
fn template_paths(template: &str) -> Vec<Vec<String>> {
    template
        .match_indices("value_json.")
        .map(|(i, m)| {
            template[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect::<String>()
                .split('.')
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// `payload` at `path`, if present and not null.
fn at<'a>(payload: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(payload, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

/// What a `{{ value_json.x }}` state template renders from `payload`.
fn render_state(template: &str, payload: &Value) -> String {
    let paths = template_paths(template);
    assert_eq!(
        (
            paths.len(),
            template.trim().starts_with("{{"),
            template.trim().ends_with("}}")
        ),
        (1, true, true),
        "a state template reading one field: {template}"
    );
    match at(payload, &paths[0]) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => panic!("{template}: no {:?} in {payload}", paths[0]),
    }
}

#[test]
fn home_assistant_discovers_the_sensors_and_sees_the_aggregator_go_offline_on_stop_and_kill() {
    let broker = Mosquitto::start_required();
    let port = broker.port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ha = home_assistant(port);

    let dir = tempfile::tempdir().unwrap();
    let http = blastnet_broker::free_port();
    let config = dir.path().join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"{CLIENT_ID}\"\nsites = [\"{SITE}\"]\n\
             [store]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[time]\nbase = \"nodes\"\n\
             [homeassistant]\nenabled = true\n",
            dir.path().join("events.db").display()
        ),
    )
    .unwrap();
    let log1 = dir.path().join("run1.log");
    let mut p = spawn(&config, &log1);
    wait_up(&rt, http, &mut p, &log1);
    wait_availability(&ha, port, 1, "online", 10);

    // Nodes: retained statuses (as nodes publish them), one source's
    // detections, then statuses 60 s later so the event is final.
    let centre = Geodetic::new(40.4406, -79.9959, 250.0);
    let layout = Layout::ring(SITE, centre, 5, 600.0);
    let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
    let source = EnuFrame::new(centre).to_geodetic(Enu::new(150.0, -100.0, 0.0));
    let dets = layout.detections(source, t0.add_secs_f64(5.0), 1);
    rt.block_on(async {
        let online = layout.statuses(NodeState::Online, t0);
        publish_all("127.0.0.1", port, "nodes", &online, true).await?;
        publish_all(
            "127.0.0.1",
            port,
            "nodes",
            &layout.detection_messages(&dets),
            false,
        )
        .await?;
        let later = layout.statuses(NodeState::Online, t0.add_secs_f64(60.0));
        publish_all("127.0.0.1", port, "nodes", &later, true).await
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let event = loop {
        let events: Vec<Event> = get(&rt, http, "/api/events")
            .map(|b| serde_json::from_str(&b).unwrap())
            .unwrap_or_default();
        if let Some(e) = events.into_iter().find(|e| e.status == EventStatus::Final) {
            break e;
        }
        assert!(Instant::now() < deadline, "no final event within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    };

    // Home Assistant restarted now would get these retained configs: one
    // per node, two for the site's last event.
    let deadline = Instant::now() + Duration::from_secs(10);
    let configs = loop {
        let c = retained(port, "homeassistant/#");
        if c.len() >= layout.nodes.len() + 2 || Instant::now() > deadline {
            break c;
        }
    };
    assert_eq!(
        configs.len(),
        layout.nodes.len() + 2,
        "{:?}",
        configs.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    let availability = topic::aggregator_availability("blastnet", CLIENT_ID);
    let mut unique_ids = BTreeSet::new();
    let mut node_states = BTreeSet::new();
    let mut event_states = BTreeSet::new();
    for (t, payload) in &configs {
        let c: Value = serde_json::from_slice(payload).unwrap_or_else(|e| {
            panic!("{t}: not JSON ({e}): {}", String::from_utf8_lossy(payload))
        });
        // <discovery_prefix>/<component>/<object_id>/config, object_id in [a-zA-Z0-9_-].
        let levels: Vec<&str> = t.split('/').collect();
        assert_eq!(levels.len(), 4, "{t}");
        assert_eq!(
            (levels[0], levels[1], levels[3]),
            ("homeassistant", "sensor", "config"),
            "{t}"
        );
        assert!(
            !levels[2].is_empty()
                && levels[2]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{t}: object id"
        );
        for key in ["name", "unique_id", "state_topic", "value_template"] {
            assert!(
                c[key].as_str().is_some_and(|s| !s.is_empty()),
                "{t}: {key} in {c}"
            );
        }
        assert!(
            unique_ids.insert(c["unique_id"].as_str().unwrap().to_string()),
            "{t}: unique_id twice"
        );
        let ids = c["device"]["identifiers"]
            .as_array()
            .unwrap_or_else(|| panic!("{t}: device.identifiers"));
        assert!(
            !ids.is_empty() && ids.iter().all(Value::is_string),
            "{t}: {ids:?}"
        );
        assert!(c["device"]["name"].is_string(), "{t}: device.name");
        assert_eq!(c["availability_topic"], availability.as_str(), "{t}");
        assert_eq!(c["origin"]["name"], "blastnet", "{t}: origin");
        assert!(
            c["default_entity_id"]
                .as_str()
                .is_some_and(|s| s.starts_with("sensor.")),
            "{t}: default_entity_id"
        );

        // What HA reads: the state topic's retained message, through the
        // templates.
        let state_topic = c["state_topic"].as_str().unwrap();
        let mut state = retained(port, state_topic);
        assert_eq!(
            state.len(),
            1,
            "{t}: state topic {state_topic} has one retained message"
        );
        let state: Value = serde_json::from_slice(&state.pop().unwrap().1).unwrap();
        let value = render_state(c["value_template"].as_str().unwrap(), &state);
        if let Some(attrs) = c.get("json_attributes_template") {
            assert_eq!(c["json_attributes_topic"], state_topic, "{t}");
            let paths = template_paths(attrs.as_str().unwrap());
            assert!(paths.len() >= 3, "{t}: {attrs}");
            for p in paths {
                assert!(
                    at(&state, &p).is_some(),
                    "{t}: attribute {p:?} not in {state}"
                );
            }
        }
        if state_topic.ends_with("/status") {
            node_states.insert((state["node_id"].as_str().unwrap().to_string(), value));
        } else {
            assert_eq!(state_topic, topic::event_latest("blastnet", SITE));
            assert_eq!(
                serde_json::from_value::<Event>(state.clone()).unwrap(),
                event,
                "the latest-event topic carries the event"
            );
            event_states.insert(value);
        }
    }
    let want_nodes: BTreeSet<_> = layout
        .nodes
        .iter()
        .map(|(id, _)| (id.clone(), "online".to_string()))
        .collect();
    assert_eq!(node_states, want_nodes);
    let want_event: BTreeSet<String> = [
        event.kind.as_str().to_string(),
        event.origin_utc.to_string(),
    ]
    .into();
    assert_eq!(event_states, want_event, "the event's kind and origin time");
    assert!(
        UtcNs::parse(&event.origin_utc.to_string()).is_ok(),
        "a timestamp HA can parse (RFC 3339)"
    );

    // A clean stop: `offline` (the will is discarded on DISCONNECT, so this
    // is the aggregator's own publish).
    let stopped = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &p.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let st = p.wait().unwrap();
    assert!(
        st.success(),
        "exit after SIGTERM: {st}: {}",
        std::fs::read_to_string(&log1).unwrap_or_default()
    );
    wait_availability(&ha, port, 2, "offline", 5);
    eprintln!("SIGTERM to `offline` seen: {:?}", stopped.elapsed());

    // Back, then killed without a DISCONNECT: the broker publishes the will.
    let log2 = dir.path().join("run2.log");
    let mut p = spawn(&config, &log2);
    wait_up(&rt, http, &mut p, &log2);
    wait_availability(&ha, port, 3, "online", 10);
    let killed = Instant::now();
    p.kill().unwrap();
    p.wait().unwrap();
    wait_availability(&ha, port, 4, "offline", 10);
    eprintln!("kill -9 to the will `offline` seen: {:?}", killed.elapsed());
    assert_eq!(
        availability_seen(&ha),
        ["online", "offline", "online", "offline"]
    );
}
