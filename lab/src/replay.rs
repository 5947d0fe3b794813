//! Replay orchestration shared by `blastnet replay` and `blastnet demo`: every
//! node of a scenario through the node runtime, over a real MQTT broker, into
//! the aggregator; detections and events collected from MQTT as a subscriber
//! would see them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use blastnet_aggregator::{AggregatorConfig, TimeBase};
use blastnet_contract::broker::BrokerUrl;
use blastnet_contract::topic::{self, NodeMessage, DEFAULT_PREFIX as PREFIX};
use blastnet_contract::{Detection, Event, Manifest, Status, UtcNs};
use blastnet_node::{CancellationToken, NodeRuntimeConfig, NodeSummary, Pace, ReplaySource};
use blastnet_recording::{BareWavOptions, Scenario};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Scenario folder, manifest, or bare WAV.
    pub path: PathBuf,
    /// Broker URL; `None` starts an embedded broker.
    pub broker: Option<String>,
    /// Replay pace.
    pub pace: Pace,
    /// Aggregator HTTP address (port 0: any free port).
    pub http_listen: SocketAddr,
    /// Bare WAV: UTC of its first sample.
    pub start_utc: Option<UtcNs>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Keep the aggregator (HTTP API, live map) up this long after the replay
    /// ends, or until Ctrl-C/SIGTERM if sooner ([`LINGER_UNTIL_SIGNAL`]: until
    /// then, however long).
    pub linger: Duration,
    /// Aggregator configuration whose `[engine]` and `[ingest]` sections apply
    /// (broker, sites, time base, store and HTTP are set by the replay).
    pub aggregator_config: Option<PathBuf>,
    /// The aggregator's store file (`None`: in memory). Events and what the
    /// engine learns (station terms, error scales) persist there, so a
    /// later replay on the same file starts from what earlier ones taught.
    pub store: Option<PathBuf>,
}

/// A [`ReplayOptions::linger`] that keeps the aggregator (HTTP API, live
/// map) up after the replay until Ctrl-C or SIGTERM (`replay --serve`).
pub const LINGER_UNTIL_SIGNAL: Duration = Duration::MAX;

/// The first of Ctrl-C (SIGINT) and, on Unix, SIGTERM (what `systemctl
/// stop`, `docker stop` and `kill` send): its name.
async fn stop_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

/// What a replay produced.
pub struct ReplayOutcome {
    /// The scenario (with its manifest; truth is read only by evaluation).
    pub scenario: Scenario,
    /// Every detection seen on MQTT, deduplicated by (node_id, seq), by node then seq.
    pub detections: Vec<Detection>,
    /// The final revision of every event, by origin time.
    pub events: Vec<Event>,
    /// Per event, wall time from the last of its first revision's
    /// detections to reach the subscriber to that revision's publication,
    /// s, sorted. Meaningful in a real-time replay (as fast as the CPU
    /// allows, detections arrive in bursts ahead of the decision).
    pub decision_latency_s: Vec<f64>,
    /// Per node: what its runtime reported.
    pub nodes: Vec<(String, NodeSummary)>,
    /// The broker used.
    pub broker_url: String,
    /// Wall time of the replay.
    pub elapsed: Duration,
    /// Seconds of recording replayed (longest node stream).
    pub data_seconds: f64,
    /// Detections the aggregator accepted (each (node_id, seq) once).
    pub accepted: u64,
    /// Copies it dropped as already seen (a node re-sending after a lost PUBACK).
    pub duplicates: u64,
}

/// MQTT topic segment for a scenario: its site, else its name.
fn site_of(m: &Manifest) -> String {
    let s: String = m
        .site
        .as_deref()
        .unwrap_or(&m.name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "replay".into()
    } else {
        s
    }
}

/// Host and port of a plain-TCP broker URL (replay does not speak TLS).
fn parse_url(url: &str) -> anyhow::Result<(String, u16)> {
    let b = BrokerUrl::parse(url).map_err(|e| anyhow::anyhow!("--broker: {e}"))?;
    if b.tls {
        anyhow::bail!("--broker {url:?}: replay connects without TLS; expected mqtt://host:port");
    }
    Ok((b.host, b.port))
}

/// Open the scenario named by `opts.path`, with a clear message if it is missing.
pub fn open_scenario(opts: &ReplayOptions) -> anyhow::Result<Scenario> {
    let is_wav = opts
        .path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
    let sc = if is_wav {
        Scenario::from_bare_wav(
            &opts.path,
            &BareWavOptions {
                start_utc: opts.start_utc,
                ..Default::default()
            },
        )
    } else {
        Scenario::open(&opts.path)
    };
    sc.map_err(|e| anyhow::anyhow!("{e}"))
}

/// The data span of each node (seconds), from the WAV headers.
fn data_seconds(sc: &Scenario) -> f64 {
    let mut longest: f64 = 0.0;
    for n in &sc.manifest.nodes {
        for k in sc.stream_kinds(n) {
            if let Ok(Some(r)) = sc.open_stream(&n.id, k) {
                if let Ok(total) = r.total_samples() {
                    longest = longest.max(total as f64 / r.sample_rate() as f64);
                }
            }
        }
    }
    longest
}

struct Collector {
    detections: BTreeMap<(String, u64), Detection>,
    progress: BTreeMap<String, UtcNs>,
    /// When each detection first reached the subscriber.
    arrived: std::collections::HashMap<(String, u64), Instant>,
}

/// Run the replay. `on_event` sees every event revision as it is published.
pub async fn run(
    opts: &ReplayOptions,
    mut on_event: impl FnMut(&Event) + Send + 'static,
) -> anyhow::Result<ReplayOutcome> {
    let started = Instant::now();
    let scenario = open_scenario(opts)?;
    let site = site_of(&scenario.manifest);
    let span = data_seconds(&scenario);

    // 1. The broker.
    let broker_url = match &opts.broker {
        Some(u) => u.clone(),
        None => blastnet_broker::EmbeddedBroker::start_on_free_port()
            .context("starting the embedded MQTT broker")?
            .url(),
    };
    let (host, port) = parse_url(&broker_url)?;
    let tag = format!(
        "{}-{}",
        std::process::id(),
        started.elapsed().as_nanos() % 1_000_000
    );

    // 2. A subscriber that sees what any outside subscriber would.
    let collected = Arc::new(Mutex::new(Collector {
        detections: BTreeMap::new(),
        progress: BTreeMap::new(),
        arrived: std::collections::HashMap::new(),
    }));
    let mut mo = MqttOptions::new(format!("blastnet-replay-collect-{tag}"), host.clone(), port);
    mo.set_keep_alive(Duration::from_secs(30));
    let max_packet = blastnet_contract::broker::MAX_PACKET_BYTES;
    mo.set_max_packet_size(max_packet, max_packet);
    // A persistent session: what the nodes publish while this subscriber
    // reconnects (a broker restart) is queued for it, not lost.
    mo.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(mo, 1024);
    no_delay(&mut eventloop);
    let det_filter = topic::node_kind_filter(PREFIX, &site, NodeMessage::Detection);
    let status_filter = topic::node_kind_filter(PREFIX, &site, NodeMessage::Status);
    // One SUBSCRIBE, one SUBACK to wait for (the broker's second SUBACK
    // waited for the first's delayed ACK: 40 ms, now and then).
    client
        .subscribe_many([
            rumqttc::SubscribeFilter::new(det_filter.clone(), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new(status_filter.clone(), QoS::AtLeastOnce),
        ])
        .await
        .context("subscribing")?;
    let (suback_tx, suback_rx) = tokio::sync::oneshot::channel();
    let coll = collected.clone();
    let pubacks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pubacks2 = pubacks.clone();
    let resubscribe = client.clone();
    let filters = [det_filter.clone(), status_filter.clone()];
    let collect_task = tokio::spawn(async move {
        let mut suback_tx = Some(suback_tx);
        let mut first = true;
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                    // The broker lost the session (no persistence): subscribe again.
                    if !first && !ack.session_present {
                        for f in &filters {
                            let _ = resubscribe.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    first = false;
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = suback_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                    pubacks2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let mut c = coll.lock().unwrap_or_else(|e| e.into_inner());
                    let kind = topic::parse_node(PREFIX, &p.topic).ok().map(|t| t.kind);
                    if kind == Some(NodeMessage::Detection) {
                        match serde_json::from_slice::<Detection>(&p.payload) {
                            Ok(d) => {
                                let at = c.progress.entry(d.node_id.clone()).or_default();
                                *at = (*at).max(d.onset_utc);
                                c.arrived
                                    .entry((d.node_id.clone(), d.seq))
                                    .or_insert_with(Instant::now);
                                c.detections.insert((d.node_id.clone(), d.seq), d);
                            }
                            Err(e) => tracing::warn!("{}: not a SPEC detection: {e}", p.topic),
                        }
                    } else if kind != Some(NodeMessage::Status) {
                        tracing::warn!("{}: not a node topic", p.topic);
                    } else if let Ok(s) = serde_json::from_slice::<Status>(&p.payload) {
                        let at = c.progress.entry(s.node_id.clone()).or_default();
                        *at = (*at).max(s.time_utc);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("replay collector: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), suback_rx)
        .await
        .with_context(|| {
            format!("the broker at {broker_url} did not acknowledge subscriptions within 10 s")
        })?
        .ok();

    // 3. The aggregator, driven by the nodes' data time.
    let mut acfg = AggregatorConfig::for_broker(&format!("mqtt://{host}:{port}"))?;
    // A scenario may carry its own aggregator settings (`aggregator.toml`
    // beside the manifest, e.g. written by an importer); --config wins.
    let scenario_config = opts.aggregator_config.clone().or_else(|| {
        let dir = if opts.path.is_dir() {
            opts.path.clone()
        } else if opts.path.extension().is_some_and(|e| e == "json") {
            opts.path.parent()?.to_path_buf()
        } else {
            return None;
        };
        let p = dir.join("aggregator.toml");
        p.is_file().then_some(p)
    });
    if let Some(path) = &scenario_config {
        let file = AggregatorConfig::from_file(path)?;
        acfg.engine = file.engine;
        acfg.ingest = file.ingest;
        acfg.map = file.map;
    }
    acfg.time.base = TimeBase::Nodes;
    acfg.time.expect_nodes = scenario
        .manifest
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .collect();
    acfg.http_listen = opts.http_listen;
    acfg.store.path = match &opts.store {
        Some(p) => blastnet_aggregator::config::StorePath::File(p.clone()),
        None => blastnet_aggregator::config::StorePath::Memory,
    };
    acfg.mqtt.sites = vec![site.clone()];
    acfg.mqtt.client_id = format!("blastnet-replay-aggregator-{tag}");
    // A persistent session, as a live aggregator has (a broker restart mid-
    // replay loses nothing); removed at the end (`forget_sessions`). No
    // inbox: a replay's inputs are files, read again by running it again.
    acfg.mqtt.clean_session = false;
    acfg.ingest.inbox = false;
    if let Some(env) = &scenario.manifest.environment {
        // Measured weather (not truth): the sound speed every node experienced.
        acfg.engine.temperature_c = env.temperature_c;
        acfg.engine.wind_mps = env.wind_mps;
    }
    acfg.engine
        .validate()
        .map_err(|e| anyhow::anyhow!("engine configuration: {e}"))?;
    let agg_stop = CancellationToken::new();
    let mut agg = blastnet_aggregator::start(acfg, agg_stop.clone())
        .await
        .context("starting the aggregator")?;
    let http = agg.http_addr();
    if opts.progress || !opts.linger.is_zero() {
        crate::report::note(&format!("live map: http://{http}/"));
    }
    let mut events_rx = agg.subscribe();
    // Decision latency: from the last of an event's detections to reach the
    // subscriber to the event's first revision.
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let (lat, coll2) = (latencies.clone(), collected.clone());
    let printer = tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        loop {
            match events_rx.recv().await {
                Ok(e) => {
                    if seen.insert(e.event_id.clone()) {
                        let now = Instant::now();
                        let c = coll2.lock().unwrap_or_else(|x| x.into_inner());
                        let last = e
                            .detections
                            .iter()
                            .filter_map(|d| c.arrived.get(&(d.node_id.clone(), d.seq)))
                            .max();
                        if let Some(t) = last {
                            lat.lock()
                                .unwrap_or_else(|x| x.into_inner())
                                .push(now.saturating_duration_since(*t).as_secs_f64());
                        }
                    }
                    on_event(&e)
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("event printer lagged by {n} revisions")
                }
                Err(_) => break,
            }
        }
    });

    // 4. Every node through the node runtime.
    let state = tempfile::tempdir().context("creating a state dir for replay nodes")?;
    let node_stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for node in &scenario.manifest.nodes {
        let mut cfg = NodeRuntimeConfig::for_replay(
            &node.id,
            &site,
            &format!("mqtt://{host}:{port}"),
            &state.path().join(&node.id),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        cfg.mqtt.client_id = format!("blastnet-replay-{}-{tag}", node.id);
        // A replay needs no fsync per detection: its state dir is thrown away.
        cfg.fsync = false;
        // The aggregator hands picks to its engine in data-time order once
        // every node's status has passed them: a status every data second
        // keeps a real-time replay's events within about a second of live.
        cfg.heartbeat = Duration::from_secs(1);
        // The measured air, for the absorption the onset picks allow for.
        if let Some(env) = &scenario.manifest.environment {
            cfg.detector.air_temperature_c = env.temperature_c;
            if let Some(rh) = env.relative_humidity_pct {
                cfg.detector.air_humidity_pct = rh;
            }
        }
        let source = ReplaySource::new(&scenario, &node.id, opts.pace, 1e-6)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = node.id.clone();
        let stop = node_stop.clone();
        tasks.spawn(async move {
            let r = blastnet_node::run_node(cfg, source, stop).await;
            (id, r)
        });
    }

    let bar = if opts.progress && span > 0.0 {
        let b = indicatif::ProgressBar::new((span * 1000.0) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} replay [{bar:40}] {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let start_utc = scenario
        .manifest
        .nodes
        .iter()
        .flat_map(|n| n.streams.iter().map(|s| s.start_utc))
        .min()
        .unwrap_or_default();
    let mut nodes = Vec::new();
    while !tasks.is_empty() {
        if let Some(b) = &bar {
            let c = collected.lock().unwrap_or_else(|e| e.into_inner());
            let slowest = c.progress.values().min().copied().unwrap_or(start_utc);
            let done = slowest.secs_since(start_utc).clamp(0.0, span);
            b.set_position((done * 1000.0) as u64);
            b.set_message(format!(
                "{done:.0}/{span:.0} s of recording, {} detections",
                c.detections.len()
            ));
        }
        // Each node as it ends (no polling period added to the replay's
        // time), waking every 50 ms for the progress bar.
        let Ok(Some(finished)) =
            tokio::time::timeout(Duration::from_millis(50), tasks.join_next()).await
        else {
            continue;
        };
        let (id, r) = finished.context("a replay node task panicked")?;
        let summary = r.map_err(|e| anyhow::anyhow!("node {id}: {e}"))?;
        nodes.push((id, summary));
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }

    // 5. Every spooled detection reaches the subscriber; the aggregator finishes.
    let expected: u64 = nodes.iter().map(|(_, s)| s.detections + s.recovered).sum();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let n = collected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .detections
            .len() as u64;
        if n >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if tokio::time::timeout(Duration::from_secs(30), agg.completed())
        .await
        .is_err()
    {
        tracing::warn!("the aggregator did not see every node go offline within 30 s; flushing");
    }
    if !opts.linger.is_zero() {
        if opts.linger == LINGER_UNTIL_SIGNAL {
            crate::report::note(&format!(
                "replay done; serving the API and live map at http://{http}/ until Ctrl-C or SIGTERM"
            ));
        } else {
            crate::report::note(&format!(
                "replay done; the live map stays up for {} s at http://{http}/ (Ctrl-C ends it)",
                opts.linger.as_secs()
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.linger) => {}
            r = stop_signal() => match r {
                Ok(name) => crate::report::note(&format!("{name}: stopping the aggregator")),
                Err(e) => {
                    // Without a handler, a signal would end the process
                    // uncleanly: say so and stop now rather than serve on.
                    crate::report::note(&format!("cannot listen for Ctrl-C/SIGTERM ({e}); stopping the aggregator"));
                }
            },
        }
    }
    agg.shutdown();
    let summary = agg.join().await.context("aggregator")?;
    printer.abort();
    // Leave no retained status behind: the next replay at the same site
    // (a release's tests share one) must not hear these nodes' last words.
    let ours = &scenario.manifest.nodes;
    for n in ours {
        let _ = client
            .publish(
                topic::status(PREFIX, &site, &n.id),
                QoS::AtLeastOnce,
                true,
                Vec::new(),
            )
            .await;
    }
    let cleared = tokio::time::timeout(Duration::from_secs(5), async {
        while pubacks.load(std::sync::atomic::Ordering::Relaxed) < ours.len() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    if cleared.is_err() {
        tracing::warn!("the broker did not acknowledge clearing the nodes' retained statuses");
    }
    collect_task.abort();
    let _ = client.disconnect().await;
    // The run's persistent sessions would otherwise stay on the broker
    // (Mosquitto keeps them, and queues for them, until they expire).
    forget_sessions(
        &host,
        port,
        &[
            format!("blastnet-replay-collect-{tag}"),
            format!("blastnet-replay-aggregator-{tag}"),
        ],
    )
    .await;

    let detections: Vec<Detection> = {
        let c = collected.lock().unwrap_or_else(|e| e.into_inner());
        c.detections.values().cloned().collect()
    };
    if (detections.len() as u64) < expected {
        bail!(
            "only {} of {} published detections reached the subscriber on {broker_url}",
            detections.len(),
            expected
        );
    }
    let mut events = summary.events;
    events.sort_by_key(|e| e.origin_utc);
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut decision_latency_s = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    decision_latency_s.sort_by(f64::total_cmp);
    Ok(ReplayOutcome {
        scenario,
        detections,
        events,
        decision_latency_s,
        nodes,
        broker_url,
        elapsed: started.elapsed(),
        data_seconds: span,
        accepted: summary.metrics.detections_accepted.load(Relaxed),
        duplicates: summary.metrics.detections_duplicate.load(Relaxed),
    })
}

/// Send small packets at once (`TCP_NODELAY`): with Nagle's algorithm, a
/// packet written while an earlier one is unacknowledged waits for the
/// peer's delayed ACK, 40 ms on Linux (measured: clearing the retained
/// statuses at the end of every replay took 40 ms for one small publish).
fn no_delay(el: &mut rumqttc::EventLoop) {
    let mut net = el.network_options();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
}

/// End the persistent sessions of `ids`: connect once with a clean session
/// under each id (which discards the stored one) and disconnect.
async fn forget_sessions(host: &str, port: u16, ids: &[String]) {
    for id in ids {
        let mut mo = MqttOptions::new(id.clone(), host.to_string(), port);
        mo.set_clean_session(true);
        let (c, mut el) = AsyncClient::new(mo, 8);
        no_delay(&mut el);
        let done = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match el.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_disconnect();
                    }
                    Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if done.is_err() {
            tracing::debug!("clearing the session of {id}: no answer within 2 s");
        }
    }
}

/// A folder with no manifest of its own but scenario folders inside (an
/// imported release): those folders, sorted.
pub fn scenario_folders(path: &Path) -> Option<Vec<PathBuf>> {
    if !path.is_dir() || path.join(blastnet_recording::MANIFEST_FILE).exists() {
        return None;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(path)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(blastnet_recording::MANIFEST_FILE).is_file())
        .collect();
    dirs.sort();
    (!dirs.is_empty()).then_some(dirs)
}

/// Replay every scenario of a folder through one broker and print the
/// aggregate evaluation (for an imported release such as ShotSpotter's),
/// one line per scenario, then an `all:` line, a `rounds:` line (first and
/// later rounds of bursts) and a `coverage:` line (true errors within the
/// reported 1σ and 2σ ellipses), each handed to `line`. With a store file
/// the scenarios are replayed in time order (earliest recording first), each
/// starting from what the earlier ones taught the engine.
pub fn replay_many(
    rt: &tokio::runtime::Runtime,
    opts: ReplayOptions,
    mut dirs: Vec<PathBuf>,
    mut line: impl FnMut(&str),
) -> anyhow::Result<()> {
    if opts.store.is_some() {
        let start = |d: &PathBuf| {
            Scenario::open(d)
                .ok()
                .and_then(|s| {
                    s.manifest
                        .nodes
                        .iter()
                        .flat_map(|n| n.streams.iter().map(|st| st.start_utc))
                        .min()
                })
                .unwrap_or(UtcNs(i64::MAX))
        };
        dirs.sort_by_cached_key(|d| (start(d), d.clone()));
    }
    let (mut first, mut later) = ((0usize, 0usize), (0usize, 0usize));
    let mut maha = Vec::new();
    let mut ceiling = (0usize, 0usize);
    let broker = match &opts.broker {
        Some(b) => b.clone(),
        None => blastnet_broker::EmbeddedBroker::start_on_free_port()?.url(),
    };
    let (mut blasts, mut located, mut ghosts) = (0usize, 0usize, 0usize);
    let mut horizontal = Vec::new();
    let mut ratio = Vec::new();
    line(&format!(
        "{:<28} {:>6} {:>7} {:>6} {:>10}",
        "scenario", "blasts", "located", "ghosts", "median err"
    ));
    let last = dirs.len().saturating_sub(1);
    for (i, dir) in dirs.into_iter().enumerate() {
        let one = ReplayOptions {
            path: dir.clone(),
            broker: Some(broker.clone()),
            progress: false,
            // Only the last scenario's aggregator stays up (`--serve`); with
            // `--store` it holds every scenario's events.
            linger: if i == last {
                opts.linger
            } else {
                Duration::ZERO
            },
            ..opts.clone()
        };
        let o = rt.block_on(run(&one, |_| {}))?;
        let c = ceiling_of(&o.scenario.manifest, &o.detections);
        ceiling = (ceiling.0 + c.0, ceiling.1 + c.1);
        // Rounds of a burst lie at one place: their origin times tell them apart.
        let ev =
            blastnet_recording::truth::evaluate_timed(&o.scenario.manifest, &o.events, 2.0, 340.0);
        blasts += ev.matches.len();
        located += ev.located();
        ghosts += ev.ghosts.len();
        for x in ev.matches.iter() {
            let r = if x.later_round {
                &mut later
            } else {
                &mut first
            };
            r.0 += 1;
            r.1 += usize::from(x.event.is_some() && x.horizontal_m <= 15.0);
            if x.mahalanobis_h.is_finite() {
                maha.push(x.mahalanobis_h);
            }
            if let Some(i) = x.event {
                horizontal.push(x.horizontal_m);
                if let Some(c) = o.events[i].crlb.as_ref().filter(|c| c.horizontal_m > 0.0) {
                    ratio.push(x.horizontal_m / c.horizontal_m);
                }
            } else {
                horizontal.push(f64::INFINITY);
            }
        }
        line(&format!(
            "{:<28} {:>6} {:>7} {:>6} {:>9.1}m",
            o.scenario.manifest.name,
            ev.matches.len(),
            ev.located(),
            ev.ghosts.len(),
            ev.median(|x| x.horizontal_m).unwrap_or(f64::NAN)
        ));
    }
    horizontal.sort_by(f64::total_cmp);
    ratio.sort_by(f64::total_cmp);
    let share = |m: f64| {
        100.0 * horizontal.iter().filter(|&&h| h <= m).count() as f64
            / horizontal.len().max(1) as f64
    };
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    line(&format!(
        "all: {blasts} blasts, {located} located, {ghosts} ghost events; horizontal error median {:.1} m (unlocated counted as infinite); within 15 m {:.1}%, within 25 m {:.1}%; median error/CRLB {:.2}",
        median(&horizontal),
        share(15.0),
        share(25.0),
        median(&ratio)
    ));
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    line(&format!(
        "rounds: first rounds {} of {} within 15 m ({:.1}%), later rounds of bursts {} of {} ({:.1}%)",
        first.1,
        first.0,
        pct(first.1, first.0),
        later.1,
        later.0,
        pct(later.1, later.0)
    ));
    let within = |k: f64| maha.iter().filter(|&&m| m <= k).count();
    line(&format!(
        "coverage: of {} located, {:.1}% within the reported 1σ ellipse (39% expected), {:.1}% within 2σ (86% expected)",
        maha.len(),
        pct(within(1.0), maha.len()),
        pct(within(2.0), maha.len())
    ));
    line(&format!(
        "ceiling: the same picks grouped by truth and solved alone (no association, no station terms): {} of {} within 15 m ({:.1}%)",
        ceiling.0,
        ceiling.1,
        pct(ceiling.0, ceiling.1)
    ));
    Ok(())
}

/// The kinds of located blasts against the truth: "kinds: 9 of 10 located
/// blasts reported as their kind (explosion 9/9, launch 0/1)". `None`
/// when nothing was located.
fn kind_score(
    m: &Manifest,
    events: &[Event],
    ev: &blastnet_recording::truth::Evaluation,
) -> Option<String> {
    let truth = m.truth.as_deref()?;
    let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for x in &ev.matches {
        let (Some(e), Some(t)) = (x.event.and_then(|i| events.get(i)), truth.get(x.truth)) else {
            continue;
        };
        let c = per.entry(t.kind.as_str()).or_default();
        c.1 += 1;
        if e.kind == t.kind {
            c.0 += 1;
        }
    }
    let (right, all) = per.values().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    if all == 0 {
        return None;
    }
    let each: Vec<String> = per
        .iter()
        .map(|(k, (r, n))| format!("{k} {r}/{n}"))
        .collect();
    Some(format!(
        "kinds: {right} of {all} located blasts reported as their kind ({})",
        each.join(", ")
    ))
}

/// The ceiling of association on one scenario (evaluation only: it reads
/// the truth): per true source, each node's acoustic pick nearest its true
/// arrival (straight ray at the manifest's temperature) within
/// [`CEILING_WINDOW_S`] is taken, as a person grouping picks with the
/// answer at hand would, and the picks of three or more nodes are solved by
/// the engine's solver with its default options and prior timing scale,
/// without station terms. Returns (within 15 m, true sources).
fn ceiling_of(m: &Manifest, dets: &[Detection]) -> (usize, usize) {
    use blastnet_aggregator_core::{
        locate, Arrival, EngineConfig, LocateOptions, Phase, Propagation,
    };
    use blastnet_contract::{EnuFrame, Geodetic, StreamKind};
    let Some(truth) = m.truth.as_ref().filter(|t| !t.is_empty()) else {
        return (0, 0);
    };
    let Some(first) = m.nodes.first() else {
        return (0, 0);
    };
    let frame = EnuFrame::new(Geodetic::new(first.lat, first.lon, first.alt_m));
    let prop = Propagation::still_air(m.environment.as_ref().map_or(15.0, |e| e.temperature_c));
    let model = EngineConfig::default().model_sigma_s;
    let mut hits = 0;
    for t in truth {
        let src = frame.to_enu(Geodetic::new(t.lat, t.lon, t.alt_m));
        let mut obs = Vec::new();
        for n in &m.nodes {
            let at = frame.to_enu(Geodetic::new(n.lat, n.lon, n.alt_m));
            let due = t.time_utc.add_secs_f64(prop.travel_time(
                Phase::Acoustic,
                src.to_array(),
                at.to_array(),
            ));
            let best = dets
                .iter()
                .filter(|d| d.node_id == n.id && d.stream == StreamKind::Acoustic)
                .map(|d| (d.onset_utc.secs_since(due).abs(), d))
                .filter(|(dt, _)| *dt <= CEILING_WINDOW_S)
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((_, d)) = best {
                let pick = d.onset_uncertainty_s;
                obs.push(Arrival {
                    position: at,
                    time_s: d.onset_utc.secs_since(t.time_utc),
                    sigma_s: (pick * pick + model * model).sqrt(),
                    phase: Phase::Acoustic,
                });
            }
        }
        if obs.len() < 3 {
            continue;
        }
        if let Ok(sol) = locate(&obs, &prop, &LocateOptions::default()) {
            let (e, n) = (sol.position.e - src.e, sol.position.n - src.n);
            hits += usize::from(e.hypot(n) <= 15.0);
        }
    }
    (hits, truth.len())
}

/// Half-width of the window around a true arrival in which [`ceiling_of`]
/// takes a node's nearest pick, s: wider than urban path delays (5–30 ms)
/// and the truth's own time error, narrower than half the shortest interval
/// between rounds of a burst (0.32 s).
const CEILING_WINDOW_S: f64 = 0.15;

/// Write each item as one JSON line (SPEC payloads: `--events-out`, `--detections-out`).
pub fn write_json_lines<T: serde::Serialize>(
    path: &Path,
    items: impl Iterator<Item = T>,
) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for it in items {
        serde_json::to_writer(&mut w, &it)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The closing table: detections per node, events, and (with truth) recall and errors.
pub fn summary(o: &ReplayOutcome) -> String {
    let mut s = String::new();
    let m = &o.scenario.manifest;
    s.push('\n');
    let _ = writeln!(
        s,
        "replayed {} ({} nodes, {:.1} s of recording) in {:.2} s via {}",
        m.name,
        m.nodes.len(),
        o.data_seconds,
        o.elapsed.as_secs_f64(),
        o.broker_url
    );
    let _ = writeln!(
        s,
        "{:<18} {:>10} {:>10} {:>9}",
        "node", "acoustic", "seismic", "spooled"
    );
    for (id, node) in &o.nodes {
        let count = |k| {
            o.detections
                .iter()
                .filter(|d| &d.node_id == id && d.stream == k)
                .count()
        };
        let _ = writeln!(
            s,
            "{:<18} {:>10} {:>10} {:>9}",
            id,
            count(blastnet_contract::StreamKind::Acoustic),
            count(blastnet_contract::StreamKind::Seismic),
            node.detections
        );
    }
    let _ = writeln!(
        s,
        "aggregator: {} detections accepted, {} duplicates dropped",
        o.accepted, o.duplicates
    );
    let _ = writeln!(s, "{} events located", o.events.len());
    if let Some(&worst) = o.decision_latency_s.last() {
        let q = |p: f64| {
            let v = &o.decision_latency_s;
            v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
        };
        let _ = writeln!(
            s,
            "decision latency (last deciding detection at a subscriber to the event's first revision) over {} events: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            o.decision_latency_s.len(),
            1e3 * q(0.50),
            1e3 * q(0.99),
            1e3 * worst
        );
    }
    for e in &o.events {
        let _ = writeln!(s, "  {}", crate::report::event_line(e));
    }
    if m.truth.as_ref().is_some_and(|t| !t.is_empty()) {
        let ev = blastnet_recording::truth::evaluate_timed(m, &o.events, 2.0, 340.0);
        let n = ev.matches.len();
        let _ = writeln!(
            s,
            "truth: {} blasts, {} located ({:.0}%), {} ghost events, {} events on distractors",
            n,
            ev.located(),
            100.0 * ev.located() as f64 / n.max(1) as f64,
            ev.ghosts.len(),
            ev.distractor_events.len()
        );
        if let (Some(h), Some(d3)) = (ev.median(|x| x.horizontal_m), ev.median(|x| x.error_3d_m)) {
            let _ = writeln!(
                s,
                "location error: median horizontal {h:.1} m, median 3-D {d3:.1} m; within 15 m {:.0}%, within 25 m {:.0}%",
                100.0 * ev.share_within(15.0),
                100.0 * ev.share_within(25.0)
            );
        }
        if let Some(dt) = ev.median(|x| x.origin_s.abs()) {
            let _ = writeln!(s, "origin time error: median {:.2} ms", dt * 1e3);
        }
        if let Some(kinds) = kind_score(m, &o.events, &ev) {
            let _ = writeln!(s, "{kinds}");
        }
        for x in ev.matches.iter().filter(|x| x.event.is_none()) {
            if let Some(t) = m.truth.as_ref().and_then(|t| t.get(x.truth)) {
                let _ = writeln!(
                    s,
                    "  missed: truth[{}] {} at {} ({})",
                    x.truth,
                    t.kind.as_str(),
                    t.time_utc,
                    t.label.as_deref().unwrap_or("")
                );
            }
        }
        let ratio = ev.median(|x| {
            let e = &o.events[x.event.unwrap_or_default()];
            match &e.crlb {
                Some(c) if c.horizontal_m > 0.0 => x.horizontal_m / c.horizontal_m,
                _ => f64::NAN,
            }
        });
        if let Some(r) = ratio.filter(|r| r.is_finite()) {
            let _ = writeln!(s, "median horizontal error / CRLB: {r:.2}");
        }
    }
    s
}
