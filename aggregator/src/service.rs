//! The async shell: MQTT in, [`Pipeline`] in the middle, MQTT/SQLite/HTTP out.
//!
//! Tasks (all on the caller's tokio runtime, plus one store thread):
//! - **mqtt**: polls the rumqttc event loop, forwards publishes to the
//!   processor (bounded channel), re-subscribes after a reconnect without a
//!   session.
//! - **processor**: owns the [`Pipeline`]; messages and watermark ticks in,
//!   outputs out. It never waits on the network: events go to
//! - **publisher**: an unbounded queue to `AsyncClient::publish` (so the
//!   processor cannot deadlock against the event loop it shares a client with),
//!   also of the retained extensions: each site's latest event and, with
//!   `[homeassistant]`, the discovery configs ([`RetainedState`]),
//! - **store thread**: SQLite writes, off the async runtime,
//! - **http**: axum.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use blastnet_contract::{topic, Detection, Event, UtcNs};
use rumqttc::{AsyncClient, LastWill, MqttOptions, Packet, QoS, SubscribeFilter};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{AggregatorConfig, ConfigError};
use crate::discovery::{Discovery, DiscoveryMessage};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::pipeline::{secs_to_ns, NodeView, Output, Pipeline, PipelineConfig, TraceWriter};
use crate::store::{InboxMessage, Store, StoreError};

/// Why the aggregator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AggregatorError {
    /// The configuration is invalid: fix it and restart.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The event store could not be opened: fix `store.path`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP address could not be bound: change `http.listen` or stop the other server.
    #[error("http.listen {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The broker did not accept the subscriptions within `mqtt.connect_timeout_s`:
    /// check `mqtt.broker`, the credentials, and that the broker is running; retry.
    #[error(
        "broker mqtt://{host}:{port} did not accept the subscriptions within {secs} s: {detail}"
    )]
    Broker {
        /// Broker host.
        host: String,
        /// Broker port.
        port: u16,
        /// Timeout, seconds.
        secs: f64,
        /// Last connection error seen.
        detail: String,
    },
    /// An internal task panicked (a bug): report it.
    #[error("aggregator task failed: {0}")]
    Task(String),
}

/// What a finished run leaves behind.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Latest revision of every event published during the run, by origin time.
    pub events: Vec<Event>,
    /// Final counters.
    pub metrics: Arc<Metrics>,
}

/// A running aggregator.
pub struct AggregatorHandle {
    /// Every event revision published since start (subscribed before any
    /// message was processed). Lags (and says so) if not read for 4096 revisions.
    pub events: broadcast::Receiver<Event>,
    events_tx: broadcast::Sender<Event>,
    http_addr: SocketAddr,
    completed: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<Summary, AggregatorError>>,
}

impl AggregatorHandle {
    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// A further receiver of event revisions, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events_tx.subscribe()
    }

    /// Live counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Nodes mode: whether every node that came online has gone offline and the engine was flushed.
    pub fn is_completed(&self) -> bool {
        *self.completed.borrow()
    }

    /// Nodes mode: wait until [`Self::is_completed`]. Returns at once if the aggregator stopped.
    pub async fn completed(&mut self) {
        let _ = self.completed.wait_for(|c| *c).await;
    }

    /// Ask the aggregator to stop (flush the engine, publish and store what it
    /// returns, disconnect). [`Self::join`] waits for it.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Wait for the aggregator to stop.
    pub async fn join(self) -> Result<Summary, AggregatorError> {
        self.task
            .await
            .map_err(|e| AggregatorError::Task(e.to_string()))?
    }
}

/// Start, serve until `shutdown` is cancelled, then return the summary.
pub async fn run(
    cfg: AggregatorConfig,
    shutdown: CancellationToken,
) -> Result<Summary, AggregatorError> {
    start(cfg, shutdown).await?.join().await
}

fn topic_filters(cfg: &AggregatorConfig) -> Vec<SubscribeFilter> {
    let mut v = Vec::new();
    // One filter per site for both detections and statuses: brokers keep
    // order per subscription filter (rumqttd keeps one log per filter and
    // reads several filters round-robin), so with a single filter a node's
    // status can never overtake the detections it published before it, which
    // the `nodes` watermark relies on.
    for site in &cfg.mqtt.sites {
        v.push(SubscribeFilter::new(
            topic::node_filter(&cfg.mqtt.prefix, site),
            QoS::AtLeastOnce,
        ));
    }
    v
}

/// A publish from the broker, when it came, and the [`Connection`] it came on.
struct Incoming {
    publish: rumqttc::Publish,
    at: Instant,
    connection: u64,
}

/// Which broker connection is current: counted up at each CONNACK and at
/// each connection error, so that a value read when a publish arrived names
/// the connection it came on, and is current only while that connection
/// is up. A PUBACK belongs to its connection: the inbox thread acknowledges
/// a publish only on the connection it came on (see
/// [`InboxWriter::acknowledge`]).
type Connection = Arc<AtomicU64>;

/// TLS to the broker (rustls), trusting `ca` if given, else the system's
/// web roots (rumqttc's default).
#[cfg(feature = "tls")]
fn set_tls(opts: &mut MqttOptions, ca: Option<&std::path::Path>) -> Result<(), AggregatorError> {
    use rumqttc::{TlsConfiguration, Transport};
    let tls = match ca {
        Some(f) => TlsConfiguration::Simple {
            ca: std::fs::read(f).map_err(|e| {
                AggregatorError::Task(format!("{}: cannot read mqtt.ca_file: {e}", f.display()))
            })?,
            alpn: None,
            client_auth: None,
        },
        None => TlsConfiguration::default(),
    };
    opts.set_transport(Transport::Tls(tls));
    Ok(())
}

/// Refused at configuration already (`mqtt.broker`); here for completeness.
#[cfg(not(feature = "tls"))]
fn set_tls(_: &mut MqttOptions, _: Option<&std::path::Path>) -> Result<(), AggregatorError> {
    Err(AggregatorError::Task(
        "mqtts:// needs a build with the `tls` cargo feature".into(),
    ))
}

/// The engine trace's file when `BLASTNET_ENGINE_TRACE` names one (read
/// here, at start-up: the pipeline only writes to what it is given). A file
/// that cannot be created is reported and the run goes on untraced.
fn engine_trace_from_env() -> Option<TraceWriter> {
    let path = std::env::var_os("BLASTNET_ENGINE_TRACE")?;
    match std::fs::File::create(&path) {
        Ok(f) => Some(Box::new(std::io::BufWriter::new(f))),
        Err(e) => {
            tracing::warn!(
                "BLASTNET_ENGINE_TRACE {}: {e}; not tracing",
                path.to_string_lossy()
            );
            None
        }
    }
}

/// Start the aggregator: open the store, bind HTTP, connect to the broker
/// and wait until the subscriptions are acknowledged, then return. Stops when
/// `shutdown` is cancelled (or [`AggregatorHandle::shutdown`] is called).
pub async fn start(
    cfg: AggregatorConfig,
    shutdown: CancellationToken,
) -> Result<AggregatorHandle, AggregatorError> {
    let metrics = Arc::new(Metrics::default());
    // Also for addresses set in code (replay --http, demo): never an open
    // API on the network.
    cfg.http
        .check_listen(cfg.http_listen)
        .map_err(|e| ConfigError::Field {
            origin: "aggregator configuration".into(),
            field: "http.listen".into(),
            message: e,
        })?;
    let store = Store::open(&cfg.store.path, cfg.store.keep)?;
    store.set_snippet_budget(cfg.store.snippet_budget_bytes);

    let (events_tx, events_rx) = broadcast::channel::<Event>(4096);
    let (live_tx, _) = broadcast::channel::<Arc<str>>(1024);
    let nodes: Arc<RwLock<BTreeMap<String, NodeView>>> = Arc::default();
    let mqtt_connected = Arc::new(AtomicBool::new(false));

    // HTTP first, so the bound address is known and reported even if the broker is slow.
    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|source| AggregatorError::Http {
            addr: cfg.http_listen,
            source,
        })?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| AggregatorError::Http {
            addr: cfg.http_listen,
            source,
        })?;
    let app = http::router(AppState {
        store: store.clone(),
        metrics: metrics.clone(),
        nodes: nodes.clone(),
        live: live_tx.clone(),
        mqtt_connected: mqtt_connected.clone(),
        token: cfg.http.token.as_deref().map(Arc::from),
        allowed_origins: cfg.http.allowed_origins.clone().into(),
        map: Arc::new(cfg.map.clone()),
    });
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(
        listener,
        app,
        cfg.http.clone(),
        metrics.clone(),
        http_stop.clone(),
    ));
    tracing::info!("aggregator http listening on http://{http_addr}/");

    // MQTT.
    let m = &cfg.mqtt;
    let mut opts = MqttOptions::new(m.client_id.clone(), m.host.clone(), m.port);
    opts.set_keep_alive(m.keep_alive);
    opts.set_clean_session(m.clean_session);
    // The broker's limit (blastnet_contract::broker::MAX_PACKET_BYTES) both
    // ways: a packet the broker let through is never refused here (a refused
    // packet is redelivered forever).
    let max_packet = blastnet_contract::broker::MAX_PACKET_BYTES;
    opts.set_max_packet_size(max_packet, max_packet);
    opts.set_inflight(256);
    // With an inbox, the broker gets each PUBACK only once the message is on
    // disk (the inbox thread acknowledges); otherwise on receipt.
    let inbox = cfg.ingest.inbox && store.is_durable();
    opts.set_manual_acks(inbox);
    // The store thread's queue (made here: the MQTT loop marks what the
    // broker acknowledged), and with an inbox the event outbox.
    let (store_tx, store_rx) = std::sync::mpsc::channel::<StoreReq>();
    // Every QoS 1 publish is tracked by packet id, so that a shutdown waits
    // for the broker's acknowledgements before it disconnects (without, a
    // retained latest event published just before the disconnect was
    // lost once under load); with an inbox, event revisions the broker
    // acknowledged are also marked published in the store (the outbox).
    if inbox {
        store.track_publishing();
    }
    let tracker = Tracker::default();
    if let Some((u, p)) = &m.credentials {
        opts.set_credentials(u.clone(), p.clone());
    }
    if let Some(ca) = &m.tls {
        set_tls(&mut opts, ca.as_deref())?;
    }
    // Availability: the broker publishes the will (retained `offline`) when
    // the connection is lost without a DISCONNECT; `online` is published at
    // each CONNACK (the mqtt task), `offline` before a clean DISCONNECT.
    let availability = m
        .availability
        .then(|| topic::aggregator_availability(&m.prefix, &m.client_id));
    if let Some(t) = &availability {
        opts.set_last_will(LastWill::new(
            t.clone(),
            topic::UNAVAILABLE,
            QoS::AtLeastOnce,
            true,
        ));
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    // Events and acknowledgements go out at once: with Nagle's algorithm a
    // small packet written while an earlier one is unacknowledged waits for
    // the broker's delayed ACK (40 ms on Linux).
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let filters = topic_filters(&cfg);
    client
        .subscribe_many(filters.clone())
        .await
        .map_err(|e| AggregatorError::Task(format!("queueing the subscriptions: {e}")))?;

    // Small: what waits here is acknowledged only with an inbox; without
    // one, the broker keeps the backlog (the event loop stops reading when
    // this is full).
    let (in_tx, in_rx) = mpsc::channel::<Incoming>(1024);
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let last_error = Arc::new(std::sync::Mutex::new(String::from("no answer yet")));
    let mqtt_stop = CancellationToken::new();
    let (connects_tx, connects_rx) = watch::channel(0u64);
    let connection = Connection::default();
    let mqtt_task = tokio::spawn(mqtt_loop(MqttLoop {
        eventloop,
        client: client.clone(),
        filters,
        in_tx,
        connection: connection.clone(),
        ready: Some(ready_tx),
        stop: mqtt_stop.clone(),
        metrics: metrics.clone(),
        connected: mqtt_connected.clone(),
        last_error: last_error.clone(),
        tracker: (tracker.clone(), store_tx.clone()),
        availability: availability.clone(),
        connects: connects_tx,
    }));

    let timeout = cfg.mqtt.connect_timeout;
    let ok = tokio::select! {
        r = tokio::time::timeout(timeout, ready_rx) => matches!(r, Ok(Ok(()))),
        _ = shutdown.cancelled() => false,
    };
    if !ok {
        mqtt_stop.cancel();
        http_stop.cancel();
        let _ = mqtt_task.await;
        let _ = http_task.await;
        let detail = last_error
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        return Err(AggregatorError::Broker {
            host: cfg.mqtt.host.clone(),
            port: cfg.mqtt.port,
            secs: timeout.as_secs_f64(),
            detail,
        });
    }
    tracing::info!(
        "aggregator subscribed at mqtt://{}:{} as {:?} to {:?}",
        cfg.mqtt.host,
        cfg.mqtt.port,
        cfg.mqtt.client_id,
        cfg.mqtt
            .sites
            .iter()
            .map(|site| topic::node_filter(&cfg.mqtt.prefix, site))
            .collect::<Vec<_>>()
    );

    let (completed_tx, completed_rx) = watch::channel(false);
    let mut proc = Processor {
        pipeline: Pipeline::with_trace(
            PipelineConfig {
                prefix: cfg.mqtt.prefix.clone(),
                time_base: cfg.time.base,
                lateness_ns: secs_to_ns(cfg.time.lateness.as_secs_f64()),
                retention_ns: secs_to_ns(cfg.ingest.retention_s),
                max_payload_bytes: cfg.ingest.max_payload_bytes,
                max_nodes_per_site: cfg.ingest.max_nodes_per_site,
                engine: cfg.engine.clone(),
                expect_nodes: cfg.time.expect_nodes.clone(),
            },
            metrics.clone(),
            engine_trace_from_env(),
        ),
        prefix: cfg.mqtt.prefix.clone(),
        metrics: metrics.clone(),
        events_tx: events_tx.clone(),
        live_tx,
        nodes,
        completed_tx,
        latest: HashMap::new(),
        restored: HashMap::new(),
        restored_picks: HashMap::new(),
        renamed: HashMap::new(),
        offsets: HashMap::new(),
        retained: RetainedState {
            prefix: cfg.mqtt.prefix.clone(),
            latest: HashMap::new(),
            discovery: cfg.homeassistant.as_ref().map(|ha| {
                Discovery::new(
                    &ha.discovery_prefix,
                    &cfg.mqtt.prefix,
                    &cfg.mqtt.client_id,
                    cfg.mqtt.availability,
                )
            }),
            sites: std::collections::BTreeSet::new(),
            nodes: HashMap::new(),
        },
        webhooks: crate::webhook::spawn(cfg.webhooks.clone()),
    };
    // What earlier runs on this store learned (station terms, error scales).
    let learned = store.calibration()?;
    if !learned.nodes.is_empty() || !learned.sites.is_empty() {
        tracing::info!(
            "resuming with {} station terms and {} error scales from the store",
            learned.nodes.len(),
            learned.sites.len()
        );
    }
    proc.pipeline.restore_calibration(&learned);
    let task = tokio::spawn(supervise(Supervisor {
        proc,
        cfg,
        store,
        store_tx,
        store_rx,
        tracker,
        inbox,
        client,
        in_rx,
        connection,
        shutdown: shutdown.clone(),
        availability,
        connects: connects_rx,
        mqtt_stop,
        mqtt_task,
        http_stop,
        http_task,
    }));
    Ok(AggregatorHandle {
        events: events_rx,
        events_tx,
        http_addr,
        completed: completed_rx,
        metrics,
        shutdown,
        task,
    })
}

struct MqttLoop {
    eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
    in_tx: mpsc::Sender<Incoming>,
    /// Counted up at each CONNACK and each error.
    connection: Connection,
    ready: Option<oneshot::Sender<()>>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    /// `/healthz`'s `mqtt_connected`: connected, and subscribed. After a
    /// reconnect without a session (a broker restarted without its
    /// persistence), not before the new SUBACK: until then the broker
    /// drops what the nodes publish, as nobody subscribes to it.
    connected: Arc<AtomicBool>,
    last_error: Arc<std::sync::Mutex<String>>,
    /// Every QoS 1 publish by packet id until the broker acknowledges it,
    /// and where acknowledged revisions are marked (with an inbox: the
    /// outbox's bookkeeping).
    tracker: (Tracker, std::sync::mpsc::Sender<StoreReq>),
    /// The availability topic, if published.
    availability: Option<String>,
    /// Counts CONNACKs after the first: the supervisor publishes the
    /// retained state again (a broker restarted without persistence has
    /// lost it).
    connects: watch::Sender<u64>,
}

async fn mqtt_loop(mut s: MqttLoop) {
    let mut first_connack = true;
    let mut logged_down = false;
    loop {
        let ev = tokio::select! {
            _ = s.stop.cancelled() => break,
            ev = s.eventloop.poll() => ev,
        };
        match ev {
            Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                // The processor has stopped (shutting down): keep polling so
                // that acknowledgements, events and the disconnect still go
                // out; what arrives now is not acknowledged (with an inbox)
                // and comes again to the next run.
                let r = Incoming {
                    publish: p,
                    at: Instant::now(),
                    connection: s.connection.load(Relaxed),
                };
                tokio::select! {
                    _ = s.stop.cancelled() => break,
                    _ = s.in_tx.send(r) => {}
                }
            }
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack))) => {
                s.connection.fetch_add(1, Relaxed);
                s.connected.store(ack.session_present, Relaxed);
                s.metrics.mqtt_connects.fetch_add(1, Relaxed);
                if logged_down {
                    tracing::info!(
                        "broker connection restored (session present: {})",
                        ack.session_present
                    );
                    logged_down = false;
                }
                // The first subscription was queued before connecting; after a
                // reconnect without a session, subscribe again.
                if !first_connack && !ack.session_present {
                    if let Err(e) = s.client.try_subscribe_many(s.filters.clone()) {
                        tracing::error!("re-subscribing after reconnect: {e}");
                    }
                }
                // QoS 0: the publish carries no packet id, so the outbox's
                // bookkeeping (which matches QoS 1 packet ids to the
                // publisher's queue) is untouched; a connection lost before
                // it reaches the broker brings another CONNACK, and this again.
                if let Some(t) = &s.availability {
                    if let Err(e) =
                        s.client
                            .try_publish(t.clone(), QoS::AtMostOnce, true, topic::AVAILABLE)
                    {
                        tracing::warn!(topic = %t, "publishing availability: {e}");
                    }
                }
                if !first_connack {
                    s.connects.send_modify(|n| *n += 1);
                }
                first_connack = false;
                // The broker kept our session: its subscriptions hold, and
                // it may already be sending the queued backlog, which fills
                // the channel to the processor before our new SUBACK comes.
                if ack.session_present {
                    if let Some(tx) = s.ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
            Ok(rumqttc::Event::Incoming(Packet::SubAck(_))) => {
                s.connected.store(true, Relaxed);
                if let Some(tx) = s.ready.take() {
                    let _ = tx.send(());
                }
            }
            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) if pkid != 0 => {
                let mut t = s.tracker.0.lock().unwrap_or_else(|p| p.into_inner());
                if !t.by_pkid.contains_key(&pkid) {
                    let key = t.queued.pop_front().flatten();
                    t.by_pkid.insert(pkid, key);
                }
            }
            Ok(rumqttc::Event::Incoming(Packet::PubAck(ack))) => {
                let (t, store_tx) = &s.tracker;
                let key = t
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .by_pkid
                    .remove(&ack.pkid)
                    .flatten();
                if let Some((id, revision)) = key {
                    let _ = store_tx.send(StoreReq::Published(id, revision));
                }
            }
            Ok(_) => {}
            Err(e) => {
                s.connection.fetch_add(1, Relaxed);
                s.connected.store(false, Relaxed);
                s.metrics.mqtt_errors.fetch_add(1, Relaxed);
                let msg = e.to_string();
                if !logged_down {
                    tracing::warn!("broker connection: {msg}; retrying");
                    logged_down = true;
                }
                if let Ok(mut l) = s.last_error.lock() {
                    *l = msg;
                }
                tokio::select! {
                    _ = s.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
    }
    s.connected.store(false, Relaxed);
}

struct Processor {
    pipeline: Pipeline,
    prefix: String,
    metrics: Arc<Metrics>,
    events_tx: broadcast::Sender<Event>,
    live_tx: broadcast::Sender<Arc<str>>,
    nodes: Arc<RwLock<BTreeMap<String, NodeView>>>,
    completed_tx: watch::Sender<bool>,
    latest: HashMap<String, Event>,
    /// After a restart: the stored latest revision of each event the inbox
    /// may open again (see [`Processor::resumed`]).
    restored: HashMap<String, Event>,
    /// The stored event each pick of a restored event belongs to.
    restored_picks: HashMap<(String, u64), String>,
    /// An event the engine re-opened under another id (the inbox it read
    /// again began inside the event, so it was opened with other picks)
    /// and the stored event it is: the same picks are the same event.
    renamed: HashMap<String, String>,
    /// After a restart: what to add to the engine's revision numbers of an
    /// event published before it, so that revisions keep increasing.
    offsets: HashMap<String, u32>,
    /// The retained extensions.
    retained: RetainedState,
    /// Each `[[webhook]]`'s queue (final revisions; the hook filters).
    webhooks: Vec<mpsc::UnboundedSender<(Event, crate::webhook::Body)>>,
}

/// What the aggregator keeps retained at the broker besides its
/// availability: each site's latest event, and the Home Assistant
/// discovery configs of the sites and nodes seen so far. Published through
/// the publisher at QoS 1 with no outbox key (the PUBACK marks nothing).
struct RetainedState {
    prefix: String,
    /// Per site, the newest event (by origin time) published in this run.
    latest: HashMap<String, Event>,
    discovery: Option<Discovery>,
    /// Sites whose discovery configs were published.
    sites: std::collections::BTreeSet<String>,
    /// Nodes (site, node) whose config was published, with the software
    /// version it names.
    nodes: HashMap<(String, String), String>,
}

impl RetainedState {
    fn send(pub_tx: &mpsc::UnboundedSender<PublishReq>, m: DiscoveryMessage) {
        let _ = pub_tx.send(PublishReq {
            topic: m.topic,
            payload: m.payload,
            key: None,
            retain: true,
        });
    }

    /// The discovery configs of `site`, once.
    fn site(&mut self, site: &str, pub_tx: &mpsc::UnboundedSender<PublishReq>) {
        let Some(d) = &self.discovery else { return };
        if self.sites.insert(site.to_string()) {
            for m in d.site(site) {
                Self::send(pub_tx, m);
            }
        }
    }

    /// The discovery config of a node, once (again if its version changes).
    fn node(&mut self, n: &NodeView, pub_tx: &mpsc::UnboundedSender<PublishReq>) {
        if self.discovery.is_none() {
            return;
        }
        self.site(&n.site, pub_tx);
        let key = (n.site.clone(), n.node_id.clone());
        if self.nodes.get(&key) == Some(&n.software_version) {
            return;
        }
        if let Some(d) = &self.discovery {
            Self::send(pub_tx, d.node(&n.site, &n.node_id, &n.software_version));
        }
        self.nodes.insert(key, n.software_version.clone());
    }

    /// `ev` (published on the event topic as `payload`) on its site's
    /// latest-event topic, if it is newer by origin time than the latest
    /// there, or a revision of it.
    fn event(
        &mut self,
        site: &str,
        ev: &Event,
        payload: &[u8],
        pub_tx: &mpsc::UnboundedSender<PublishReq>,
    ) {
        self.site(site, pub_tx);
        let newer = self.latest.get(site).is_none_or(|l| {
            if l.event_id == ev.event_id {
                ev.revision >= l.revision
            } else {
                ev.origin_utc >= l.origin_utc
            }
        });
        if newer {
            self.latest.insert(site.to_string(), ev.clone());
            let _ = pub_tx.send(PublishReq {
                topic: topic::event_latest(&self.prefix, site),
                payload: payload.to_vec(),
                key: None,
                retain: true,
            });
        }
    }

    /// Everything again (after a reconnect).
    fn republish(&self, pub_tx: &mpsc::UnboundedSender<PublishReq>) {
        if let Some(d) = &self.discovery {
            for site in &self.sites {
                for m in d.site(site) {
                    Self::send(pub_tx, m);
                }
            }
            for ((site, node), sw) in &self.nodes {
                Self::send(pub_tx, d.node(site, node, sw));
            }
        }
        for (site, ev) in &self.latest {
            if let Ok(payload) = serde_json::to_vec(ev) {
                let _ = pub_tx.send(PublishReq {
                    topic: topic::event_latest(&self.prefix, site),
                    payload,
                    key: None,
                    retain: true,
                });
            }
        }
    }
}

/// One message to publish, at QoS 1: an event revision, or a retained
/// extension (latest event, discovery config).
struct PublishReq {
    topic: String,
    payload: Vec<u8>,
    /// An event revision's id and revision, marked published in the store
    /// once the broker acknowledges it (with an inbox; see [`PubTracker`]);
    /// `None` for the rest, which still take their place in its queue.
    key: Option<(String, u32)>,
    retain: bool,
}

/// Which publish the broker acknowledged (a shutdown waits for every one),
/// and the event outbox's bookkeeping. The publisher queues each
/// revision's key (with an inbox; `None` for the rest) before handing it to the
/// client; the client sends publishes in that order, each under a new
/// packet id (a resend after a reconnect keeps its id); a PUBACK names the
/// id. A revision acknowledged is marked published in the store; one not
/// acknowledged (the process killed, the broker gone) is published again
/// at the next start ([`Store::unpublished`]).
#[derive(Default)]
struct PubTracker {
    queued: std::collections::VecDeque<Option<(String, u32)>>,
    by_pkid: HashMap<u16, Option<(String, u32)>>,
}

type Tracker = Arc<std::sync::Mutex<PubTracker>>;

/// The (node, seq) of the detections an event uses, sorted.
fn used_picks(ev: &Event) -> Vec<(&str, u64)> {
    let mut v: Vec<(&str, u64)> = ev
        .detections
        .iter()
        .map(|d| (d.node_id.as_str(), d.seq))
        .collect();
    v.sort_unstable();
    v
}

impl Processor {
    /// An event revision made again from the inbox after a restart: `None`
    /// if the store already holds it (a final revision with the same picks
    /// or part of them, or a preliminary one of an event already final),
    /// else the revision renumbered after the stored ones. An event that
    /// shares a pick with a stored one is that event, whatever id the
    /// engine gave it this time.
    fn resumed(&mut self, mut ev: Event) -> Option<Event> {
        if let Some(id) = self.renamed.get(&ev.event_id) {
            ev.event_id = id.clone();
        } else if !self.restored.is_empty() && !self.restored.contains_key(&ev.event_id) {
            let stored = ev.detections.iter().find_map(|d| {
                self.restored_picks
                    .get(&(d.node_id.clone(), d.seq))
                    .filter(|id| self.restored.contains_key(*id))
            });
            if let Some(id) = stored.cloned() {
                self.renamed.insert(ev.event_id.clone(), id.clone());
                ev.event_id = id;
            }
        }
        if let Some(prev) = self.restored.get(&ev.event_id) {
            // A final event is not revised with what it already had: a
            // revision made again from part of its picks says less.
            let prev_picks = used_picks(prev);
            if prev.status == blastnet_contract::EventStatus::Final
                && (ev.status != blastnet_contract::EventStatus::Final
                    || used_picks(&ev)
                        .iter()
                        .all(|p| prev_picks.binary_search(p).is_ok()))
            {
                return None;
            }
            let offset = prev.revision;
            self.restored.remove(&ev.event_id);
            self.offsets.insert(ev.event_id.clone(), offset);
        }
        if let Some(o) = self.offsets.get(&ev.event_id) {
            ev.revision += o;
        }
        Some(ev)
    }

    fn handle(
        &mut self,
        outs: &mut Vec<Output>,
        since: Option<Instant>,
        pub_tx: &mpsc::UnboundedSender<PublishReq>,
        store_tx: &std::sync::mpsc::Sender<StoreReq>,
    ) {
        for o in outs.drain(..) {
            match o {
                Output::Event(e) => {
                    let Some(ev) = self.resumed(e.event) else {
                        continue;
                    };
                    let site = ev.site.clone().unwrap_or_else(|| "default".to_string());
                    match serde_json::to_vec(&ev) {
                        Ok(payload) => {
                            let _ = pub_tx.send(PublishReq {
                                topic: topic::event(&self.prefix, &site),
                                payload: payload.clone(),
                                key: Some((ev.event_id.clone(), ev.revision)),
                                retain: false,
                            });
                            self.retained.event(&site, &ev, &payload, pub_tx);
                            if ev.status == blastnet_contract::EventStatus::Final
                                && !self.webhooks.is_empty()
                            {
                                let body: crate::webhook::Body = payload.into();
                                for w in &self.webhooks {
                                    let _ = w.send((ev.clone(), body.clone()));
                                }
                            }
                        }
                        Err(err) => {
                            self.metrics.publish_errors.fetch_add(1, Relaxed);
                            tracing::error!(event = %ev.event_id, "event does not serialise: {err}");
                        }
                    }
                    if let Some(t) = since {
                        self.metrics.observe_latency(t.elapsed().as_secs_f64());
                    }
                    tracing::info!(
                        event = %ev.event_id, revision = ev.revision, status = ?ev.status,
                        "event {} at {:.6},{:.6} ±{:.1} m, {} arrivals, {}",
                        ev.origin_utc, ev.lat, ev.lon, ev.uncertainty.horizontal_m,
                        ev.detections.len(), ev.kind.as_str()
                    );
                    let _ = self.live_tx.send(http::live_event(&ev));
                    let _ = self.events_tx.send(ev.clone());
                    let newer = self
                        .latest
                        .get(&ev.event_id)
                        .is_none_or(|p| p.revision <= ev.revision);
                    if newer {
                        self.latest.insert(ev.event_id.clone(), ev.clone());
                    }
                    let _ = store_tx.send(StoreReq::Event(Box::new(ev), e.detections));
                }
                Output::Node(n) => {
                    self.retained.node(&n, pub_tx);
                    let _ = self.live_tx.send(http::live_node(&n));
                    let mut map = self.nodes.write().unwrap_or_else(|p| p.into_inner());
                    map.insert(n.node_id.clone(), *n);
                }
                Output::Calibration(c) => {
                    let _ = store_tx.send(StoreReq::Calibration(c));
                }
                Output::Snippet(s) => {
                    let _ = store_tx.send(StoreReq::Snippet(s));
                }
                Output::Completed => {
                    tracing::info!("every node is offline: engine flushed");
                    let _ = self.completed_tx.send(true);
                }
            }
        }
        if !self.pipeline.completed() && *self.completed_tx.borrow() {
            let _ = self.completed_tx.send(false);
        }
    }
}

/// How long a shutdown may take, from the signal to the process exit
/// (the shipped systemd unit allows more: `TimeoutStopSec`).
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(4);

/// A received message for the inbox thread: written there if the pipeline
/// accepted it (`data_ns`), then acknowledged, in the order received.
struct InboxReq {
    publish: rumqttc::Publish,
    data_ns: Option<i64>,
    /// The [`Connection`] it came on.
    connection: u64,
}

/// The inbox thread: batches what arrives, writes it in one transaction,
/// then sends the PUBACKs. A failed write (a full disk) is retried every
/// second and nothing is acknowledged meanwhile, so the broker holds the
/// rest (its in-flight window is full).
struct InboxWriter {
    store: Store,
    client: AsyncClient,
    metrics: Arc<Metrics>,
    retention_ns: i64,
    stopping: Arc<AtomicBool>,
    /// The data time through which the store holds everything the pipeline
    /// made of what it had received ([`StoreReq::Through`]): the inbox
    /// keeps the retention window behind it, not behind the newest message,
    /// so a store thread that lags (a slow disk, a loaded machine) never
    /// has the picks of events it has not written pruned from under it.
    stored_through: Arc<AtomicI64>,
    /// The current broker connection.
    connection: Connection,
}

impl InboxWriter {
    /// Send the PUBACK of `r`, written (or refused by the pipeline), if
    /// the connection it came on is still up; else send none.
    ///
    /// A packet id names a message only on its connection. rumqttc drops
    /// the PUBACKs queued when a connection fails, but not those queued
    /// after it (this thread goes on writing while the client reconnects):
    /// they would go out on the next connection, and name whatever the
    /// broker sends there under those ids. Measured with Mosquitto keeping
    /// the session, that is the same message resent under the same id
    /// (harmless); after a session lost, the new session's ids start again,
    /// and a message could be acknowledged before it is ever sent to us.
    /// Not acknowledged here, a message comes again with its session, the
    /// pipeline finds it a duplicate (by node and seq) of what the inbox
    /// holds, and it is acknowledged without a second write; with the
    /// session lost it is in the inbox already. (Left: a PUBACK queued in
    /// the instant between the failure inside rumqttc and the count here
    /// still goes out late.)
    fn acknowledge(&self, r: &InboxReq) -> bool {
        if r.connection != self.connection.load(Relaxed) {
            return false;
        }
        // The request queue may be full for a moment: wait for room.
        while let Err(e) = self.client.try_ack(&r.publish) {
            if self.stopping.load(Relaxed) {
                tracing::debug!("acknowledging: {e}");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    fn run(self, rx: std::sync::mpsc::Receiver<InboxReq>) {
        let mut newest = i64::MIN;
        let mut since_prune = 0usize;
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let msgs: Vec<InboxMessage> = batch
                .iter()
                .filter_map(|r| {
                    r.data_ns.map(|data_ns| InboxMessage {
                        topic: r.publish.topic.clone(),
                        payload: r.publish.payload.to_vec(),
                        data_ns,
                    })
                })
                .collect();
            let mut logged = false;
            while !msgs.is_empty() {
                match self.store.inbox_append(&msgs) {
                    Ok(()) => break,
                    Err(e) => {
                        self.metrics.store_errors.fetch_add(1, Relaxed);
                        if !logged {
                            tracing::error!(
                                "writing {} messages to the inbox: {e}; not acknowledging them, retrying every second",
                                msgs.len()
                            );
                            logged = true;
                        }
                        if self.stopping.load(Relaxed) {
                            // Shutting down: the broker hands them over again.
                            return;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            if logged {
                tracing::info!("inbox writes succeed again");
            }
            let mut unacknowledged = 0usize;
            for r in batch.drain(..) {
                if let Some(t) = r.data_ns {
                    newest = newest.max(t);
                }
                unacknowledged += usize::from(!self.acknowledge(&r));
            }
            if unacknowledged > 0 {
                tracing::debug!(
                    "{unacknowledged} messages written but not acknowledged: their connection is gone (the broker sends them again)"
                );
            }
            since_prune += msgs.len();
            if since_prune >= 1000 && newest > i64::MIN {
                since_prune = 0;
                // Not past the wall clock: one status stamped years ahead
                // must not empty the inbox.
                let newest = newest
                    .min(UtcNs::now().0)
                    .min(self.stored_through.load(Relaxed));
                if let Err(e) = self
                    .store
                    .inbox_prune(newest.saturating_sub(self.retention_ns))
                {
                    tracing::warn!("pruning the inbox: {e}");
                }
            }
        }
    }
}

/// Feed what the inbox holds (acknowledged by an earlier run, maybe not yet
/// in an event) through the pipeline again. Events it re-opens keep their
/// ids (they come from the data); what the store already has is not
/// published again ([`Processor::resumed`]).
fn resume_from_inbox(
    proc: &mut Processor,
    store: &Store,
    outs: &mut Vec<Output>,
    pub_tx: &mpsc::UnboundedSender<PublishReq>,
    store_tx: &std::sync::mpsc::Sender<StoreReq>,
) -> Result<(), AggregatorError> {
    let msgs = store.inbox()?;
    if msgs.is_empty() {
        return Ok(());
    }
    let oldest = msgs.iter().map(|m| m.data_ns).min().unwrap_or(0);
    // Events whose origin could precede their earliest pick by the longest
    // travel time the engine allows.
    let from = UtcNs(oldest.saturating_sub(secs_to_ns(600.0)));
    for ev in store.events_between(Some(from), None, usize::MAX)? {
        for d in &ev.detections {
            proc.restored_picks
                .insert((d.node_id.clone(), d.seq), ev.event_id.clone());
        }
        proc.restored.insert(ev.event_id.clone(), ev);
    }
    tracing::info!(
        "resuming: {} messages from the inbox, {} stored events they may re-open",
        msgs.len(),
        proc.restored.len()
    );
    for m in &msgs {
        proc.pipeline.on_message(&m.topic, &m.payload, outs);
        if !outs.is_empty() {
            proc.handle(outs, None, pub_tx, store_tx);
        }
    }
    Ok(())
}

/// The store thread: writes in order; a write that fails (a full disk, a
/// locked file) is retried every second, with everything after it waiting
/// behind it, until it succeeds (or the shutdown budget gives up on it:
/// with an inbox, the next start makes those events again).
fn store_writer(
    store: &Store,
    rx: &std::sync::mpsc::Receiver<StoreReq>,
    metrics: &Metrics,
    through: &AtomicI64,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut backlog: std::collections::VecDeque<StoreReq> = std::collections::VecDeque::new();
    let mut closed = false;
    let mut failing = false;
    loop {
        if backlog.is_empty() {
            match rx.recv() {
                Ok(r) => backlog.push_back(r),
                Err(_) => return,
            }
        } else if closed {
            std::thread::sleep(Duration::from_secs(1));
        } else {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(r) => backlog.push_back(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
        }
        backlog.extend(rx.try_iter());
        while let Some(req) = backlog.front() {
            let written = match req {
                StoreReq::Event(ev, dets) => store
                    .put_event(ev, dets)
                    .map_err(|e| format!("storing event {}: {e}", ev.event_id)),
                StoreReq::Snippet(s) => store
                    .put_snippet(s)
                    .map(|()| {
                        metrics.snippets_stored.fetch_add(1, Relaxed);
                    })
                    .map_err(|e| format!("storing the snippet of {}/{}: {e}", s.node_id, s.seq)),
                StoreReq::Calibration(c) => store
                    .put_calibration(c)
                    .map_err(|e| format!("storing the station terms and error scales: {e}")),
                StoreReq::Published(id, revision) => store
                    .mark_published(id, *revision)
                    .map_err(|e| format!("marking event {id} revision {revision} published: {e}")),
                StoreReq::Through(t) => {
                    through.fetch_max(*t, Relaxed);
                    Ok(())
                }
            };
            match written {
                Ok(()) => {
                    backlog.pop_front();
                    if failing {
                        tracing::info!("store writes succeed again");
                        failing = false;
                    }
                }
                Err(e) => {
                    metrics.store_errors.fetch_add(1, Relaxed);
                    if !failing {
                        tracing::error!(
                            "{e}; retrying every second ({} writes waiting)",
                            backlog.len()
                        );
                        failing = true;
                    }
                    break;
                }
            }
        }
        if closed && backlog.is_empty() {
            return;
        }
    }
}

/// A write for the store thread.
enum StoreReq {
    /// An event revision and the detections it refers to.
    Event(Box<Event>, Vec<Detection>),
    /// What the engine learned.
    Calibration(Box<blastnet_aggregator_core::Calibration>),
    /// A snippet (waveform evidence) to keep.
    Snippet(Box<blastnet_contract::Snippet>),
    /// The broker acknowledged this revision of this event.
    Published(String, u32),
    /// Everything the pipeline made of the messages received up to this
    /// data time was sent before this: once written, the inbox may prune
    /// behind it (see `InboxWriter::stored_through`).
    Through(i64),
}

struct Supervisor {
    proc: Processor,
    cfg: AggregatorConfig,
    store: Store,
    store_tx: std::sync::mpsc::Sender<StoreReq>,
    store_rx: std::sync::mpsc::Receiver<StoreReq>,
    tracker: Tracker,
    /// Messages go through the store's inbox before they are acknowledged.
    inbox: bool,
    client: AsyncClient,
    in_rx: mpsc::Receiver<Incoming>,
    /// The current broker connection (for the inbox thread).
    connection: Connection,
    shutdown: CancellationToken,
    /// The availability topic, if published.
    availability: Option<String>,
    /// CONNACKs after the first (see [`MqttLoop::connects`]).
    connects: watch::Receiver<u64>,
    mqtt_stop: CancellationToken,
    mqtt_task: JoinHandle<()>,
    http_stop: CancellationToken,
    http_task: JoinHandle<()>,
}

async fn supervise(s: Supervisor) -> Result<Summary, AggregatorError> {
    let Supervisor {
        mut proc,
        cfg,
        store,
        store_tx,
        store_rx,
        tracker,
        inbox,
        client,
        mut in_rx,
        connection,
        shutdown,
        availability,
        mut connects,
        mqtt_stop,
        mqtt_task,
        http_stop,
        http_task,
    } = s;

    // Inbox thread: writes accepted messages, then acknowledges them.
    let inbox_store = store.clone();
    let stored_through = Arc::new(AtomicI64::new(i64::MIN));
    let (inbox_tx, inbox_thread) = if inbox {
        let (tx, rx) = std::sync::mpsc::channel::<InboxReq>();
        let w = InboxWriter {
            store: store.clone(),
            client: client.clone(),
            metrics: proc.metrics.clone(),
            retention_ns: secs_to_ns(cfg.ingest.retention_s),
            stopping: Arc::new(AtomicBool::new(false)),
            stored_through: stored_through.clone(),
            connection,
        };
        let stopping = w.stopping.clone();
        let t = std::thread::Builder::new()
            .name("aggregator-inbox".into())
            .spawn(move || w.run(rx))
            .map_err(|e| AggregatorError::Task(format!("spawning the inbox thread: {e}")))?;
        (Some(tx), Some((t, stopping)))
    } else {
        (None, None)
    };

    // Store thread.
    let unpublished = if inbox {
        store.unpublished()?
    } else {
        Vec::new()
    };
    let store_metrics = proc.metrics.clone();
    let store_thread = std::thread::Builder::new()
        .name("aggregator-store".into())
        .spawn(move || store_writer(&store, &store_rx, &store_metrics, &stored_through))
        .map_err(|e| AggregatorError::Task(format!("spawning the store thread: {e}")))?;

    // Publisher.
    let awaiting = tracker.clone();
    let (pub_tx, mut pub_rx) = mpsc::unbounded_channel::<PublishReq>();
    let pub_client = client.clone();
    let pub_metrics = proc.metrics.clone();
    let publisher = tokio::spawn(async move {
        while let Some(r) = pub_rx.recv().await {
            // The store marks revisions published only with an inbox.
            tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .queued
                .push_back(r.key.clone().filter(|_| inbox));
            if let Err(e) = pub_client
                .publish(r.topic.clone(), QoS::AtLeastOnce, r.retain, r.payload)
                .await
            {
                pub_metrics.publish_errors.fetch_add(1, Relaxed);
                tracing::error!(topic = %r.topic, "publishing: {e}");
            }
        }
    });

    // The outbox: what an earlier run stored but the broker never
    // acknowledged (killed before, or the broker gone), published again.
    if !unpublished.is_empty() {
        tracing::info!(
            "publishing {} event revisions again that the broker did not acknowledge",
            unpublished.len()
        );
    }
    for ev in unpublished {
        let site = ev.site.clone().unwrap_or_else(|| "default".to_string());
        if let Ok(payload) = serde_json::to_vec(&ev) {
            let _ = pub_tx.send(PublishReq {
                topic: topic::event(&proc.prefix, &site),
                payload,
                key: Some((ev.event_id.clone(), ev.revision)),
                retain: false,
            });
        }
    }
    // Configured sites are known now: their last-event sensors appear
    // before any event does.
    for site in cfg.mqtt.sites.iter().filter(|s| *s != "+") {
        proc.retained.site(site, &pub_tx);
    }

    let mut outs = Vec::new();
    if inbox {
        // What an earlier run acknowledged: through the engine again, before
        // anything new (the broker's redeliveries wait in `in_rx`).
        resume_from_inbox(&mut proc, &inbox_store, &mut outs, &pub_tx, &store_tx)?;
    }

    // The newest data time received, and the newest sent to the store
    // thread as `StoreReq::Through` (with an inbox).
    let (mut received_through, mut marked_through) = (i64::MIN, i64::MIN);
    let mut tick = tokio::time::interval(cfg.time.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Ok(()) = connects.changed() => {
                proc.retained.republish(&pub_tx);
            }
            msg = in_rx.recv() => match msg {
                Some(Incoming { publish: p, at, connection }) => {
                    proc.pipeline.on_message(&p.topic, &p.payload, &mut outs);
                    if let Some(tx) = &inbox_tx {
                        let data_ns = proc.pipeline.last_accepted().map(|t| t.0);
                        if let Some(t) = data_ns {
                            received_through = received_through.max(t);
                        }
                        let _ = tx.send(InboxReq { publish: p, data_ns, connection });
                    }
                    if !outs.is_empty() {
                        proc.handle(&mut outs, Some(at), &pub_tx, &store_tx);
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                // Wall mode: the tick decides what the watermark passing
                // makes due (the sweep, final revisions); its latency runs
                // from here.
                let at = Instant::now();
                proc.pipeline.on_tick(UtcNs::now(), &mut outs);
                if !outs.is_empty() {
                    proc.handle(&mut outs, Some(at), &pub_tx, &store_tx);
                }
                if received_through > marked_through {
                    marked_through = received_through;
                    let _ = store_tx.send(StoreReq::Through(received_through));
                }
            }
        }
    }

    // Shutdown, within SHUTDOWN_BUDGET. With an inbox, what waits in
    // `in_rx` is not acknowledged: the broker hands it over again to the
    // next run. Without one it was acknowledged on receipt: take it (what
    // the budget allows; the channel holds at most 1024).
    let started = Instant::now();
    if !inbox {
        while started.elapsed() < SHUTDOWN_BUDGET / 2 {
            let Ok(Incoming { publish: p, at, .. }) = in_rx.try_recv() else {
                break;
            };
            proc.pipeline.on_message(&p.topic, &p.payload, &mut outs);
            proc.handle(&mut outs, Some(at), &pub_tx, &store_tx);
        }
    }
    in_rx.close();
    // Finish the inbox: what was handed to it is written and acknowledged
    // (a disk that stays full is given up on: those messages come again).
    drop(inbox_tx);
    if let Some((t, stopping)) = inbox_thread {
        let budget = SHUTDOWN_BUDGET.saturating_sub(started.elapsed()) / 2;
        let joined = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + budget;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            stopping.store(true, Relaxed);
            t.join()
        });
        let _ = joined.await;
    }
    // Without an inbox, the events so far are finalised as they stand
    // (nothing could re-open them). With one, open events stay open: the
    // next run reads their picks from the inbox and finishes them with what
    // arrives later, instead of a premature final revision now.
    if !inbox {
        proc.pipeline.flush(&mut outs);
        proc.handle(&mut outs, None, &pub_tx, &store_tx);
    }
    drop(pub_tx);
    drop(store_tx);
    let _ =
        tokio::time::timeout(SHUTDOWN_BUDGET.saturating_sub(started.elapsed()), publisher).await;
    // Wait (within half the budget left) for the broker's acknowledgements
    // of everything published: what the disconnect overtakes is lost, and
    // with an inbox the next start would publish it again (the outbox).
    let until = Instant::now() + SHUTDOWN_BUDGET.saturating_sub(started.elapsed()) / 2;
    loop {
        let open = {
            let t = awaiting.lock().unwrap_or_else(|p| p.into_inner());
            !t.queued.is_empty() || !t.by_pkid.is_empty()
        };
        if !open || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // `offline` and the disconnect are queued behind the publishes, so they
    // reach the broker first. QoS 0, as `online` (see `mqtt_loop`): if the
    // connection is down now, the broker has published the will instead.
    let left = SHUTDOWN_BUDGET.saturating_sub(started.elapsed());
    if let Some(t) = availability {
        let _ = tokio::time::timeout(
            left,
            client.publish(t, QoS::AtMostOnce, true, topic::UNAVAILABLE),
        )
        .await;
    }
    let left = SHUTDOWN_BUDGET.saturating_sub(started.elapsed());
    let _ = tokio::time::timeout(left, client.disconnect()).await;
    let left = SHUTDOWN_BUDGET
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(100));
    let _ = tokio::time::timeout(left, mqtt_task).await;
    mqtt_stop.cancel();
    http_stop.cancel();
    // Open websockets would hold a graceful HTTP shutdown forever.
    let _ = tokio::time::timeout(Duration::from_millis(300), http_task).await;
    let store_budget = SHUTDOWN_BUDGET.saturating_sub(started.elapsed());
    let _ = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + store_budget;
        while !store_thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if store_thread.is_finished() {
            let _ = store_thread.join();
        } else {
            tracing::warn!("the store did not finish its writes within the shutdown budget");
        }
    })
    .await;
    let _ = proc.completed_tx.send(true);

    let mut events: Vec<Event> = proc.latest.into_values().collect();
    events.sort_by(|a, b| {
        a.origin_utc
            .cmp(&b.origin_utc)
            .then(a.event_id.cmp(&b.event_id))
    });
    tracing::info!("aggregator stopped: {} events", events.len());
    Ok(Summary {
        events,
        metrics: proc.metrics,
    })
}
