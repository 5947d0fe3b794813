//! The aggregator process under faults, against a real Mosquitto:
//! `kill -9` at a random moment of ingest, SIGTERM with a backlog waiting at
//! the broker, restarts on the same store, a store on a full file system. Nothing acknowledged is lost,
//! nothing is stored twice, and the events equal those of a fault-free run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod small_fs;
use small_fs::SmallFs;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use blastnet_aggregator::config::{StorePath, TimeBase};
use blastnet_aggregator::testkit::{publish_all, Layout};
use blastnet_aggregator::{AggregatorConfig, CancellationToken};
use blastnet_broker::Mosquitto;
use blastnet_contract::{Enu, EnuFrame, Event, EventStatus, Geodetic, NodeState, UtcNs};

const SITE: &str = "crash";
const SOURCES: usize = 1000;
const NODES: usize = 5;

fn centre() -> Geodetic {
    Geodetic::new(40.4406, -79.9959, 250.0)
}

/// 1000 sources 4 s apart (longer than the 1.2 km ring's crossing time)
/// inside a ring of 5 nodes: 5,000 detections, with online statuses every
/// 10 s of data time and offline statuses at the end, in data-time order.
fn traffic() -> Vec<(String, Vec<u8>)> {
    let layout = Layout::ring(SITE, centre(), NODES, 600.0);
    let frame = EnuFrame::new(centre());
    let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut uniform = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut msgs = layout.statuses(NodeState::Online, t0);
    let mut next_status = 10.0;
    for i in 0..SOURCES {
        let at = 5.0 + 4.0 * i as f64;
        while next_status < at {
            msgs.extend(layout.statuses(NodeState::Online, t0.add_secs_f64(next_status)));
            next_status += 10.0;
        }
        let (r, a) = (400.0 * uniform().sqrt(), std::f64::consts::TAU * uniform());
        let src = frame.to_geodetic(Enu::new(r * a.cos(), r * a.sin(), 0.0));
        let dets = layout.detections(src, t0.add_secs_f64(at), i as u64 + 1);
        msgs.extend(layout.detection_messages(&dets));
    }
    let end = 5.0 + 4.0 * SOURCES as f64 + 30.0;
    msgs.extend(layout.statuses(NodeState::Online, t0.add_secs_f64(end)));
    msgs.extend(layout.statuses(NodeState::Offline, t0.add_secs_f64(end + 1.0)));
    msgs
}

fn write_config(dir: &Path, port: u16, http: u16, db: &Path) -> PathBuf {
    let p = dir.join("aggregator.toml");
    std::fs::write(
        &p,
        format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"crash-aggregator\"\nsites = [\"{SITE}\"]\n\
             [store]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[time]\nbase = \"nodes\"\n",
            db.display()
        ),
    )
    .unwrap();
    p
}

use common::{get_ok as get, spawn_aggregator as spawn, wait_up};

/// A counter from `/metrics`.
fn metric(rt: &tokio::runtime::Runtime, http: u16, name: &str) -> Option<u64> {
    let text = get(rt, http, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// SIGTERM; the exit must come within 5 s. Returns how long it took.
fn terminate(child: &mut Child, log: &Path) -> Duration {
    let t = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(
                st.success(),
                "exit after SIGTERM: {st}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no exit within 5 s of SIGTERM: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The fault-free reference: `msgs` (on `blastnet/...` topics) moved under
/// `prefix` and published through an in-process aggregator with no store
/// (client ids `{name}-reference` and `{name}-pub-ref`); its events.
fn fault_free(
    rt: &tokio::runtime::Runtime,
    port: u16,
    name: &str,
    prefix: &str,
    site: &str,
    msgs: &[(String, Vec<u8>)],
) -> Vec<Event> {
    rt.block_on(async {
        let mut cfg = AggregatorConfig::for_broker(&format!("mqtt://127.0.0.1:{port}")).unwrap();
        cfg.mqtt.client_id = format!("{name}-reference");
        cfg.mqtt.sites = vec![site.into()];
        cfg.mqtt.prefix = prefix.into();
        cfg.time.base = TimeBase::Nodes;
        cfg.store.path = StorePath::Memory;
        cfg.http_listen = "127.0.0.1:0".parse().unwrap();
        let mut h = blastnet_aggregator::start(cfg, CancellationToken::new())
            .await
            .unwrap();
        let moved: Vec<(String, Vec<u8>)> = msgs
            .iter()
            .map(|(t, p)| (t.replacen("blastnet/", &format!("{prefix}/"), 1), p.clone()))
            .collect();
        publish_all("127.0.0.1", port, &format!("{name}-pub-ref"), &moved, false)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(120), h.completed())
            .await
            .expect("reference run completes");
        h.shutdown();
        h.join().await.unwrap().events
    })
}

/// The tests' runtime (HTTP polls, publishing, the reference run).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A final event as compared: (used picks, lat, lon).
type Final = (BTreeSet<(String, u64)>, f64, f64);

/// Final events by id.
fn finals(events: &[Event]) -> BTreeMap<String, Final> {
    events
        .iter()
        .filter(|e| e.status == EventStatus::Final)
        .map(|e| {
            let picks = e
                .detections
                .iter()
                .map(|d| (d.node_id.clone(), d.seq))
                .collect();
            (e.event_id.clone(), (picks, e.lat, e.lon))
        })
        .collect()
}

/// `msgs` published by client `client` from a thread of its own.
fn publish_in_background(
    port: u16,
    client: &str,
    msgs: &[(String, Vec<u8>)],
) -> std::thread::JoinHandle<Result<(), String>> {
    let (client, msgs) = (client.to_string(), msgs.to_vec());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(publish_all("127.0.0.1", port, &client, &msgs, false))
    })
}

/// Wait (up to `timeout`) until the API lists `n` final events.
fn wait_for_finals(rt: &tokio::runtime::Runtime, http: u16, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = get(rt, http, &format!("/api/events?limit={}", 2 * SOURCES))
            .map(|body| finals(&serde_json::from_str::<Vec<Event>>(&body).unwrap()).len());
        if got.is_some_and(|g| g >= n) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The store at `db` holds exactly the final events `want` (same ids, same
/// picks, the same place to a millimetre), each once, and every pick in one
/// event only.
fn assert_store_holds(db: &Path, want: &BTreeMap<String, Final>) {
    let store = blastnet_aggregator::store::Store::open_file(db).unwrap();
    let all = store.events_between(None, None, 10 * SOURCES).unwrap();
    let stored = finals(&all);
    assert_eq!(
        stored.len(),
        all.len(),
        "every stored event is final: {} of {}",
        stored.len(),
        all.len()
    );
    let mut seen = BTreeSet::new();
    for (id, (picks, _, _)) in &stored {
        for p in picks {
            assert!(seen.insert(p.clone()), "{p:?} used twice (again in {id})");
        }
    }
    let want_picks: BTreeSet<_> = want.values().flat_map(|v| v.0.iter().cloned()).collect();
    let missing: Vec<_> = want_picks.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "picks of the reference's events not stored: {missing:?}"
    );
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the same events as the fault-free run"
    );
    for (id, (picks, lat, lon)) in &stored {
        let (wp, wlat, wlon) = &want[id];
        assert_eq!(picks, wp, "{id}: the same picks");
        let d =
            EnuFrame::new(Geodetic::new(*wlat, *wlon, 0.0)).to_enu(Geodetic::new(*lat, *lon, 0.0));
        // Synthetic picks with microsecond clocks: any difference is the
        // engine's, not the data's; a millimetre is far below the CRLB.
        assert!(d.e.hypot(d.n) < 1e-3, "{id} moved {} m", d.e.hypot(d.n));
    }
}

#[test]
fn kill_9_and_sigterm_mid_ingest_lose_nothing_and_store_nothing_twice() {
    let broker = Mosquitto::start_required();
    let port = broker.port();
    let rt = runtime();
    let msgs = traffic();
    let detections = msgs.iter().filter(|m| m.0.ends_with("/detection")).count();
    assert_eq!(detections, SOURCES * NODES);

    // The fault-free reference: the same traffic through an in-process
    // aggregator with no store.
    let reference = fault_free(&rt, port, "crash", "blastnet", SITE, &msgs);
    let want = finals(&reference);
    assert!(
        want.len() >= SOURCES * 99 / 100,
        "the reference locates {} of {SOURCES}",
        want.len()
    );
    // The reference's run left retained-free traffic only; drop its session.
    drop(reference);

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let http = blastnet_broker::free_port();
    let config = write_config(dir.path(), port, http, &db);

    // A random moment: after k accepted detections, k drawn from the clock.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    let k = 500 + seed % (detections - 1000);
    eprintln!("kill -9 after {k} accepted detections (seed {seed})");

    let log1 = dir.path().join("run1.log");
    let mut p1 = spawn(&config, &log1);
    wait_up(&rt, http, &mut p1, &log1);
    let publisher = publish_in_background(port, "crash-pub", &msgs);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = metric(&rt, http, "blastnet_aggregator_detections_accepted_total").unwrap_or(0);
        if n as usize >= k {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} accepted within 30 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    p1.kill().unwrap();
    p1.wait().unwrap();
    publisher.join().unwrap().unwrap();

    // Restart with the rest waiting at the broker; SIGTERM at once.
    let log2 = dir.path().join("run2.log");
    let mut p2 = spawn(&config, &log2);
    wait_up(&rt, http, &mut p2, &log2);
    let before_term = metric(&rt, http, "blastnet_aggregator_detections_accepted_total");
    let took = terminate(&mut p2, &log2);
    eprintln!(
        "SIGTERM with {:?} of {detections} accepted in that run: exit after {took:?}",
        before_term
    );

    // Restart again: it finishes the job.
    let log3 = dir.path().join("run3.log");
    let mut p3 = spawn(&config, &log3);
    wait_up(&rt, http, &mut p3, &log3);
    wait_for_finals(&rt, http, want.len(), Duration::from_secs(60));
    terminate(&mut p3, &log3);

    // The store: every detection in an event once, every event once.
    assert_store_holds(&db, &want);
    let _ = std::fs::remove_file(&db);
    drop(broker);
}

/// The shipped systemd unit gives the aggregator at least the 5 s its
/// SIGTERM handling promises (and `kill_9_and_sigterm_…` measures) before it
/// would be killed.
/// Full disk (#17), on a real file system: the store on a 64 MiB tmpfs
/// filled to its last byte while 5,000 detections arrive. The aggregator
/// counts the failed writes (`store_errors`), acknowledges nothing it could
/// not write and keeps running; once space returns it stores every event of
/// the fault-free run, each once. Skipped, saying why, where no tmpfs can
/// be mounted.
#[test]
fn a_full_disk_holds_everything_until_space_returns_then_stores_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the run's own data once the filler goes (the inbox of 5,000
    // messages and the events, with the write-ahead log grown while the API
    // is read: at 16 MiB the store filled the disk again on its own, and
    // under the test command's load its last writes never went through).
    let Some(small) = SmallFs::mount_or_skip(
        "a_full_disk_holds_everything_until_space_returns_then_stores_each_event_once",
        &dir.path().join("small"),
        "64m",
    ) else {
        return;
    };
    let broker = Mosquitto::start_required();
    let port = broker.port();
    let rt = runtime();
    let msgs = traffic();
    let want = finals(&fault_free(&rt, port, "full", "blastnet", SITE, &msgs));
    assert!(
        want.len() >= SOURCES * 99 / 100,
        "the reference locates {}",
        want.len()
    );

    let db = small.0.join("events.db");
    let http = blastnet_broker::free_port();
    let config = write_config(dir.path(), port, http, &db);
    let log = dir.path().join("full.log");
    let mut p = spawn(&config, &log);
    wait_up(&rt, http, &mut p, &log);
    let filler = small.fill("filler");
    let publisher = publish_in_background(port, "full-pub", &msgs);
    // The disk is full: writes fail and are counted; the process stays up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let errors = loop {
        let n = metric(&rt, http, "blastnet_aggregator_store_errors_total").unwrap_or(0);
        if n >= 3 {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "{n} store errors within 30 s on a full disk: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            p.try_wait().unwrap().is_none(),
            "the aggregator exited on a full disk"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("disk full: {errors} store errors counted; freeing the space");
    std::fs::remove_file(&filler).unwrap();
    publisher.join().unwrap().unwrap();
    wait_for_finals(&rt, http, want.len(), Duration::from_secs(120));
    terminate(&mut p, &log);
    // The aggregator's errors and warnings, to tell a failure's cause.
    for l in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        if l.contains("ERROR") || l.contains("WARN") {
            eprintln!("aggregator: {l}");
        }
    }
    assert_store_holds(&db, &want);
    drop(broker);
}

#[test]
fn the_shipped_unit_waits_longer_than_the_shutdown_takes() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware/systemd/blastnet-aggregator.service"),
    )
    .unwrap();
    let secs: f64 = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec in the unit")
        .parse()
        .unwrap();
    assert!(secs >= 5.0, "TimeoutStopSec={secs}");
    assert!(blastnet_aggregator::SHUTDOWN_BUDGET < Duration::from_secs(5));
}

const SOAK_SITE: &str = "soak";
/// Sources per soak round (4 s apart: one round is 200 s of data).
const ROUND_SOURCES: usize = 50;

/// Round `k` of the soak: `ROUND_SOURCES` sources inside the ring, 4 s
/// apart, after the earlier rounds' (seq continues), with online statuses
/// every 10 s of data time.
fn soak_round(layout: &Layout, k: usize) -> Vec<(String, Vec<u8>)> {
    let frame = EnuFrame::new(centre());
    let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
    let span = 4.0 * ROUND_SOURCES as f64;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut uniform = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut msgs = Vec::new();
    let from = 5.0 + span * k as f64;
    let mut next_status = from;
    for j in 0..ROUND_SOURCES {
        let at = from + 4.0 * j as f64;
        while next_status <= at {
            msgs.extend(layout.statuses(NodeState::Online, t0.add_secs_f64(next_status)));
            next_status += 10.0;
        }
        let (r, a) = (400.0 * uniform().sqrt(), std::f64::consts::TAU * uniform());
        let src = frame.to_geodetic(Enu::new(r * a.cos(), r * a.sin(), 0.0));
        let i = k * ROUND_SOURCES + j;
        let dets = layout.detections(src, t0.add_secs_f64(at), i as u64 + 1);
        msgs.extend(layout.detection_messages(&dets));
    }
    msgs
}

/// Final event ids published on the site's event topic, collected by a
/// persistent subscriber (it outlives broker restarts) until `stop`.
fn event_listener(
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<BTreeSet<String>> {
    use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS};
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut opts = MqttOptions::new("soak-listener", "127.0.0.1", port);
        opts.set_clean_session(false);
        // Acknowledged once recorded: one the client read but did not hand
        // over before a broker restart comes again.
        opts.set_manual_acks(true);
        opts.set_keep_alive(Duration::from_secs(5));
        let max = blastnet_contract::broker::MAX_PACKET_BYTES;
        opts.set_max_packet_size(max, max);
        let (client, mut conn) = Client::new(opts, 1024);
        let topic = blastnet_contract::topic::event("blastnet", SOAK_SITE);
        let mut finals = BTreeSet::new();
        let mut ready = Some(tx);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                    // (Again after a broker restart: the session may be gone.)
                    let _ = client.subscribe(topic.clone(), QoS::AtLeastOnce);
                }
                Ok(Ok(MqttEvent::Incoming(Packet::SubAck(_)))) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => {
                    if let Ok(e) = serde_json::from_slice::<Event>(&p.payload) {
                        if e.status == EventStatus::Final {
                            finals.insert(e.event_id);
                        }
                    }
                    let _ = client.try_ack(&p);
                }
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
                _ => {}
            }
        }
        finals
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the soak's event listener subscribed");
    handle
}

/// The soak (issue #17): rounds of 250 detections through Mosquitto into
/// the aggregator process on one store, each round followed at a random
/// moment of its ingest by one fault of the mix, in turn: `kill -9` and a
/// restart, SIGTERM and a restart, Mosquitto stopped for 3 s, a 200 kB
/// payload on a node's detection topic. Then the counts against a
/// fault-free run of everything sent: detections sent, in stored events,
/// lost, stored twice; events expected, published (a persistent
/// subscriber), stored. `BLASTNET_SOAK_S` sets how long the rounds go on
/// (default 20 s, with fewer broker stops; `scripts/soak` runs 10 minutes
/// of the whole mix). Asserted: nothing lost,
/// nothing twice, every event of the fault-free run stored and no other,
/// published to the subscriber, and every stored revision acknowledged by
/// the broker (a final revision not acknowledged before a `kill -9` goes
/// out again at the restart: the event outbox).
#[test]
fn soak_under_a_fault_mix_loses_nothing_and_stores_nothing_twice() {
    let long: Option<u64> = std::env::var("BLASTNET_SOAK_S")
        .ok()
        .and_then(|v| v.parse().ok());
    let secs = long.unwrap_or(20);
    // A broker stop takes 3 s: in the test command's 20 s one round in ten
    // (the third first), so that the kill -9 and SIGTERM rounds stay many.
    let mix: &[usize] = if long.is_some() {
        &[0, 1, 2, 3]
    } else {
        &[0, 1, 2, 3, 0, 1, 3, 0, 1, 3]
    };
    let mut broker = Mosquitto::start_required();
    let port = broker.port();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let http = blastnet_broker::free_port();
    let config = write_config(dir.path(), port, http, &db);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("crash", SOAK_SITE);
    std::fs::write(&config, text).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = event_listener(port, stop.clone());

    let layout = Layout::ring(SOAK_SITE, centre(), NODES, 600.0);
    let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
    let mut sent = layout.statuses(NodeState::Online, t0);
    let publish = |msgs: &[(String, Vec<u8>)], id: &str| {
        rt.block_on(publish_all("127.0.0.1", port, id, msgs, false))
            .unwrap()
    };
    publish(&sent, "soak-pub");
    let mut run = 0;
    let log = |run: usize| dir.path().join(format!("run{run}.log"));
    let mut agg = spawn(&config, &log(run));
    wait_up(&rt, http, &mut agg, &log(run));

    let start = Instant::now();
    let mut faults = [0usize; 4];
    let mut round = 0;
    let mut clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let msgs = soak_round(&layout, round);
        publish(&msgs, "soak-pub");
        sent.extend(msgs);
        clock = clock
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        std::thread::sleep(Duration::from_millis((clock >> 33) % 200));
        let fault = mix[round % mix.len()];
        faults[fault] += 1;
        match fault {
            0 => {
                agg.kill().unwrap();
                agg.wait().unwrap();
                run += 1;
                agg = spawn(&config, &log(run));
                wait_up(&rt, http, &mut agg, &log(run));
            }
            1 => {
                terminate(&mut agg, &log(run));
                run += 1;
                agg = spawn(&config, &log(run));
                wait_up(&rt, http, &mut agg, &log(run));
            }
            2 => {
                broker.stop();
                std::thread::sleep(Duration::from_secs(3));
                broker.start_again().unwrap();
                wait_up(&rt, http, &mut agg, &log(run));
            }
            _ => {
                let topic = blastnet_contract::topic::detection("blastnet", SOAK_SITE, "n01");
                publish(&[(topic, vec![b'x'; 200_000])], "soak-poison");
            }
        }
        round += 1;
    }
    // The end of the data: statuses past the last arrival, then offline.
    let end = 5.0 + 4.0 * (round * ROUND_SOURCES) as f64 + 30.0;
    let mut tail = layout.statuses(NodeState::Online, t0.add_secs_f64(end));
    tail.extend(layout.statuses(NodeState::Offline, t0.add_secs_f64(end + 1.0)));
    publish(&tail, "soak-pub");
    sent.extend(tail);

    // The fault-free reference: everything sent, through an in-process
    // aggregator with no store (its own client id: the soak's aggregator
    // keeps its session).
    let reference = fault_free(&rt, port, "soak", "soak-reference", SOAK_SITE, &sent);
    let want = finals(&reference);

    // Wait for the soak's aggregator to store them all, then stop it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = get(
            &rt,
            http,
            &format!("/api/events?limit={}", 4 * want.len() + 10),
        )
        .map(|body| finals(&serde_json::from_str::<Vec<Event>>(&body).unwrap()).len());
        if got.is_some_and(|n| n >= want.len()) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    terminate(&mut agg, &log(run));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = listener.join().unwrap();

    let store = blastnet_aggregator::store::Store::open_file(&db).unwrap();
    let all = store
        .events_between(None, None, 4 * want.len() + 10)
        .unwrap();
    let stored = finals(&all);
    let detections: BTreeSet<(String, u64)> = sent
        .iter()
        .filter(|(t, _)| t.ends_with("/detection"))
        .filter_map(|(_, p)| serde_json::from_slice::<blastnet_contract::Detection>(p).ok())
        .map(|d| (d.node_id, d.seq))
        .collect();
    let mut seen = BTreeSet::new();
    let mut twice = 0;
    for (picks, _, _) in stored.values() {
        for p in picks {
            twice += usize::from(!seen.insert(p.clone()));
        }
    }
    let want_picks: BTreeSet<_> = want.values().flat_map(|v| v.0.iter().cloned()).collect();
    let lost = want_picks.difference(&seen).count();
    let expected: BTreeSet<&String> = want.keys().collect();
    let got_published = expected
        .iter()
        .filter(|id| published.contains(**id))
        .count();
    let got_stored = expected
        .iter()
        .filter(|id| stored.contains_key(**id))
        .count();
    println!(
        "soak: {:.0} s, {round} rounds, faults kill -9 {} / SIGTERM {} / broker stop {} / 200 kB payload {}; \
         detections sent {}, in stored events {}, lost {lost}, stored twice {twice}; \
         events expected {}, published {got_published}, stored {got_stored} ({} stored in all)",
        start.elapsed().as_secs_f64(),
        faults[0],
        faults[1],
        faults[2],
        faults[3],
        detections.len(),
        seen.len(),
        want.len(),
        stored.len(),
    );
    // Events stored beyond the fault-free run's, then those missing.
    let odd: Vec<&String> = (stored.keys().filter(|id| !want.contains_key(*id)))
        .chain(
            expected
                .iter()
                .filter(|id| !stored.contains_key(**id))
                .copied(),
        )
        .collect();
    if !odd.is_empty() {
        // Where each shows in the runs' logs, and what the store holds of
        // it: the evidence for a failure.
        for id in odd.iter().take(5) {
            eprintln!(
                "missing or extra {id}: stored {:?}, fault-free {:?}",
                stored.get(*id),
                want.get(*id)
            );
            for r in 0..=run {
                let text = std::fs::read_to_string(log(r)).unwrap_or_default();
                for l in text.lines().filter(|l| l.contains(id.as_str())) {
                    eprintln!("  run{r}: {l}");
                }
            }
        }
        for r in 0..=run {
            let text = std::fs::read_to_string(log(r)).unwrap_or_default();
            for l in text
                .lines()
                .filter(|l| l.contains("resuming") || l.contains("WARN") || l.contains("ERROR"))
            {
                eprintln!("  run{r}: {l}");
            }
        }
    }
    assert!(
        want.len() >= round * ROUND_SOURCES * 99 / 100,
        "the reference locates {} of {}",
        want.len(),
        round * ROUND_SOURCES
    );
    assert_eq!(lost, 0, "detections of the reference's events not stored");
    assert_eq!(twice, 0, "detections stored in two events");
    assert_eq!(
        got_stored,
        want.len(),
        "events of the fault-free run stored"
    );
    assert_eq!(
        stored.len(),
        want.len(),
        "no event stored beyond the fault-free run's"
    );
    // Every final event reached the persistent subscriber, across the
    // broker's restarts too (issue #17: a test Mosquitto started as root
    // had saved nothing, and each restart lost the queues of both the
    // aggregator and the subscriber).
    assert_eq!(
        got_published,
        want.len(),
        "events of the fault-free run received by the subscriber"
    );
    // The event outbox: every revision stored was acknowledged by the
    // broker (what a killed run had not got acknowledged went out again at
    // the restart).
    let unpublished = store.unpublished().unwrap();
    assert!(
        unpublished.is_empty(),
        "{} stored revisions the broker never acknowledged, e.g. {}",
        unpublished.len(),
        unpublished[0].event_id
    );
    drop(broker);
}
