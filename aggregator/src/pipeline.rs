//! The synchronous heart of the service: one MQTT message or one tick in,
//! [`Output`]s out. No sockets, no files, no clock reads: the async shell in
//! `service.rs` feeds it and carries out what it returns, so it is tested and
//! benchmarked without a broker (benches/ingest.rs). The engine trace, when
//! asked for, is a writer the caller hands in ([`Pipeline::with_trace`]).
//!
//! Per message: topic parse, payload validation ([`crate::ingest`]), dedupe
//! by (node_id, seq), the node registry (status -> [`NodeInfo`] for the
//! engine; the nodes' data time and liveness in the core's
//! [`NodesWatermark`], the rule the tests drive the engine by too), the
//! watermark (wall or nodes), and the engine's actions. In nodes mode
//! (replays) detections and node changes reach the engine through a
//! [`DataTimeOrder`], sorted by data time behind the watermark, so a replay's
//! events do not depend on how the broker interleaved the nodes; live (wall
//! mode) they reach it as they arrive.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use blastnet_aggregator_core::{
    Action, Calibration, DataTimeOrder, Engine, EngineConfig, NodeInfo, NodesWatermark, Release,
    TraceEntry,
};
use blastnet_contract::{
    ClockSource, Detection, Event, EventStatus, Geodetic, NodeState, Status, UtcNs, NS_PER_S,
};
use serde::Serialize;

use crate::config::TimeBase;
use crate::ingest::{self, Invalid, MessageKind, NodeTopic, Reason};
use crate::metrics::{Kind, Metrics};

/// At most this many accepted detections are remembered (dedupe + store),
/// whatever the retention: a bound on memory (~300 B each) under floods.
pub const MAX_REMEMBERED: usize = 200_000;

/// Clock uncertainty registered for a node whose status reports none: 0, so
/// that the engine uses each detection's own `clock.uncertainty_s`.
const DEFAULT_CLOCK_UNCERTAINTY_S: f64 = 0.0;

/// What the shell must do after a call.
#[derive(Debug, Clone)]
pub enum Output {
    /// Publish (MQTT), store and broadcast this event revision.
    Event(Box<EventOut>),
    /// A node's registry entry changed (for the live map), also when the
    /// engine flagged it (`NodeView::flagged`).
    Node(Box<NodeView>),
    /// Nodes mode: every node that came online is offline and the engine is flushed.
    Completed,
    /// What the engine has learned changed (a final event): store it.
    Calibration(Box<Calibration>),
    /// A valid snippet (waveform evidence, extension) of a known node: store it.
    Snippet(Box<blastnet_contract::Snippet>),
}

/// An event revision with the detections it refers to (those still remembered).
#[derive(Debug, Clone)]
pub struct EventOut {
    /// The revision; `site` filled in from the detections' topics if the engine left it empty.
    pub event: Event,
    /// Detections referenced by `event.detections` and `event.outliers`.
    pub detections: Vec<Detection>,
}

/// A node as the API and the map show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeView {
    /// Node id.
    pub node_id: String,
    /// Site (topic segment).
    pub site: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Altitude.
    pub alt_m: f64,
    /// `online`, `offline`, `degraded`, or `unknown` (detections but no status yet).
    pub state: String,
    /// Clock source, if reported.
    pub clock_source: Option<ClockSource>,
    /// Clock 1-sigma, s.
    pub clock_uncertainty_s: f64,
    /// Air temperature, °C, if reported.
    pub temperature_c: Option<f64>,
    /// `time_utc` of the latest status.
    pub last_status_utc: Option<UtcNs>,
    /// Onset of the latest accepted detection.
    pub last_detection_utc: Option<UtcNs>,
    /// Accepted detections.
    pub detections: u64,
    /// Software version from status.
    pub software_version: String,
    /// Spool backlog from status.
    pub spool_backlog: u64,
    /// Why the engine flagged it, if it did.
    pub flagged: Option<String>,
    /// Its station term (a systematic delay the engine learned from its
    /// residuals and subtracts from its onsets), s; `None` until learned.
    pub station_term_s: Option<f64>,
    /// 1-sigma of `station_term_s`, s.
    pub station_term_sigma_s: Option<f64>,
    /// Events the term was learned from.
    pub station_term_events: u64,
    /// Why its position is not believed (far outside its site): then the
    /// engine does not use it or its detections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl NodeView {
    /// A node first heard of now, at a position, with nothing else known yet.
    pub(crate) fn first_heard(
        node_id: &str,
        site: &str,
        lat: f64,
        lon: f64,
        alt_m: f64,
        state: &str,
    ) -> NodeView {
        NodeView {
            node_id: node_id.to_string(),
            site: site.to_string(),
            lat,
            lon,
            alt_m,
            state: state.into(),
            clock_source: None,
            clock_uncertainty_s: DEFAULT_CLOCK_UNCERTAINTY_S,
            temperature_c: None,
            last_status_utc: None,
            last_detection_utc: None,
            detections: 0,
            software_version: String::new(),
            spool_backlog: 0,
            flagged: None,
            station_term_s: None,
            station_term_sigma_s: None,
            station_term_events: 0,
            refused: None,
        }
    }

    fn online(&self) -> bool {
        matches!(self.state.as_str(), "online" | "degraded" | "unknown")
    }
    fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.node_id.clone(),
            position: Geodetic::new(self.lat, self.lon, self.alt_m),
            clock_uncertainty_s: self.clock_uncertainty_s,
            online: self.online(),
            temperature_c: self.temperature_c,
            refused: self.refused.is_some(),
        }
    }
}

/// Pipeline settings (from [`crate::AggregatorConfig`]).
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Topic prefix.
    pub prefix: String,
    /// Watermark source.
    pub time_base: TimeBase,
    /// Wall mode: watermark = now - this, ns.
    pub lateness_ns: i64,
    /// Detections this far behind the watermark are forgotten / refused as late, ns.
    pub retention_ns: i64,
    /// Largest payload, bytes.
    pub max_payload_bytes: usize,
    /// Engine configuration.
    pub engine: EngineConfig,
    /// Nodes mode: nodes whose status the watermark waits for (see
    /// `TimeConfig::expect_nodes`).
    pub expect_nodes: Vec<String>,
    /// Nodes a site may have; messages from further new node ids are refused.
    pub max_nodes_per_site: usize,
}

/// Accepted detections remembered for dedupe and for storing with events.
#[derive(Default)]
struct Recent {
    node_index: HashMap<String, u32>,
    by_node: Vec<HashMap<u64, (Detection, u32)>>,
    sites: Vec<String>,
    site_index: HashMap<String, u32>,
    /// Arrival order: (onset ns, node index, seq).
    order: VecDeque<(i64, u32, u64)>,
}

impl Recent {
    fn node(&mut self, id: &str) -> u32 {
        if let Some(i) = self.node_index.get(id) {
            return *i;
        }
        let i = self.by_node.len() as u32;
        self.node_index.insert(id.to_string(), i);
        self.by_node.push(HashMap::new());
        i
    }
    fn site(&mut self, site: &str) -> u32 {
        if let Some(i) = self.site_index.get(site) {
            return *i;
        }
        let i = self.sites.len() as u32;
        self.site_index.insert(site.to_string(), i);
        self.sites.push(site.to_string());
        i
    }
    fn contains(&self, node: u32, seq: u64) -> bool {
        self.by_node[node as usize].contains_key(&seq)
    }
    fn insert(&mut self, node: u32, site: u32, det: Detection) {
        self.order.push_back((det.onset_utc.0, node, det.seq));
        self.by_node[node as usize].insert(det.seq, (det, site));
        while self.order.len() > MAX_REMEMBERED {
            self.pop_front();
        }
    }
    fn pop_front(&mut self) {
        if let Some((_, n, s)) = self.order.pop_front() {
            self.by_node[n as usize].remove(&s);
        }
    }
    /// Forget detections whose onset is before `horizon` (arrival order is
    /// nearly onset order; a straggler stays until those before it go).
    fn evict_before(&mut self, horizon: i64) {
        while self.order.front().is_some_and(|(t, _, _)| *t < horizon) {
            self.pop_front();
        }
    }
    fn get(&self, node_id: &str, seq: u64) -> Option<&(Detection, u32)> {
        let i = *self.node_index.get(node_id)?;
        self.by_node[i as usize].get(&seq)
    }
}

struct NodeEntry {
    view: NodeView,
}

/// The pipeline state machine.
pub struct Pipeline {
    cfg: PipelineConfig,
    engine: Engine,
    actions: Vec<Action>,
    recent: Recent,
    nodes: BTreeMap<String, NodeEntry>,
    /// The nodes' data time and liveness (fed in both modes; the nodes-mode
    /// watermark).
    clocks: NodesWatermark,
    /// Nodes mode: detections and node changes held for the engine in
    /// data-time order.
    order: DataTimeOrder,
    /// Nodes mode: each node's info as last handed to `order`.
    ordered_nodes: HashMap<String, NodeInfo>,
    watermark: Option<UtcNs>,
    metrics: Arc<Metrics>,
    logged: HashSet<(String, Reason, Option<String>)>,
    trace: Option<Trace>,
    /// The data time of the last message [`Pipeline::on_message`] accepted
    /// (none if it refused or dropped it).
    accepted: Option<UtcNs>,
    /// Node positions by site, for the site check.
    site_geo: HashMap<String, SiteGeo>,
    /// Nodes registered per site.
    site_nodes: HashMap<String, usize>,
}

/// The positions of a site's nodes and their median: a node further than
/// `engine.max_site_radius_m` from it is refused. The median is taken again
/// when the site has grown by an eighth since the last time (amortised
/// O(log n) per new node); with fewer than 3 nodes nothing is refused (two
/// disagreeing positions do not say which one is wrong).
#[derive(Default)]
struct SiteGeo {
    pos: BTreeMap<String, Geodetic>,
    median: Option<blastnet_contract::EnuFrame>,
    median_of: usize,
}

impl SiteGeo {
    /// Record `node` at `p`; whether the median was taken again.
    fn update(&mut self, node: &str, p: Geodetic) -> bool {
        self.pos.insert(node.to_string(), p);
        let n = self.pos.len();
        if n < 3 || (self.median.is_some() && n < self.median_of + self.median_of / 8 + 1) {
            return false;
        }
        let mut lat: Vec<f64> = self.pos.values().map(|g| g.lat).collect();
        let mut lon: Vec<f64> = self.pos.values().map(|g| g.lon).collect();
        let mut alt: Vec<f64> = self.pos.values().map(|g| g.alt_m).collect();
        let med = |v: &mut Vec<f64>| blastnet_aggregator_core::stats::median_of(v).unwrap_or(0.0);
        self.median = Some(blastnet_contract::EnuFrame::new(Geodetic::new(
            med(&mut lat),
            med(&mut lon),
            med(&mut alt),
        )));
        self.median_of = n;
        true
    }

    /// Why `p` is not believed, if it is not.
    fn judge(&self, p: Geodetic, site: &str, radius_m: f64) -> Option<String> {
        let frame = self.median?;
        let d = frame.to_enu(p);
        let d = d.e.hypot(d.n).hypot(d.u);
        (d > radius_m).then(|| {
            let m = frame.origin();
            format!(
                "position {:.5},{:.5} is {:.1} km from the median of site {site}'s {} nodes ({:.5},{:.5}); limit {:.1} km (engine.max_site_radius_m)",
                p.lat,
                p.lon,
                d / 1000.0,
                self.median_of,
                m.lat,
                m.lon,
                radius_m / 1000.0
            )
        })
    }
}

/// Where the engine trace goes: any writer (the service opens
/// `BLASTNET_ENGINE_TRACE`'s file; a test may pass a buffer).
pub type TraceWriter = Box<dyn Write + Send>;

/// The engine's inputs, one JSON line per call, for `offline_replay --trace`
/// (a debugging aid: `BLASTNET_ENGINE_TRACE=<file>` for the service).
struct Trace {
    out: TraceWriter,
}

impl Trace {
    fn record(t: &mut Option<Trace>, e: &TraceEntry) {
        if let Some(tr) = t {
            let ok = serde_json::to_writer(&mut tr.out, e).is_ok()
                && tr.out.write_all(b"\n").is_ok()
                && (!matches!(e, TraceEntry::Flush) || tr.out.flush().is_ok());
            if !ok {
                tracing::warn!("engine trace: write failed; not tracing");
                *t = None;
            }
        }
    }
}

/// Distinct (topic, reason, field) refusals logged before going quiet.
const MAX_LOGGED: usize = 10_000;

impl Pipeline {
    /// A new pipeline counting into `metrics`.
    pub fn new(cfg: PipelineConfig, metrics: Arc<Metrics>) -> Pipeline {
        Pipeline::with_trace(cfg, metrics, None)
    }

    /// A new pipeline counting into `metrics` and recording every engine
    /// call to `trace` (one JSON line each, flushed at each flush of the
    /// engine; see `offline_replay --trace`). Tracing stops, with a warning,
    /// at the first failed write.
    pub fn with_trace(
        cfg: PipelineConfig,
        metrics: Arc<Metrics>,
        trace: Option<TraceWriter>,
    ) -> Pipeline {
        let engine = Engine::new(cfg.engine.clone());
        let mut trace = trace.map(|out| Trace { out });
        Trace::record(
            &mut trace,
            &TraceEntry::Config(Box::new(cfg.engine.clone())),
        );
        Pipeline {
            engine,
            actions: Vec::new(),
            recent: Recent::default(),
            nodes: BTreeMap::new(),
            clocks: NodesWatermark::new(cfg.expect_nodes.clone()),
            order: DataTimeOrder::new(),
            ordered_nodes: HashMap::new(),
            watermark: None,
            metrics,
            logged: HashSet::new(),
            trace,
            accepted: None,
            site_geo: HashMap::new(),
            site_nodes: HashMap::new(),
            cfg,
        }
    }

    /// The node registry, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.values().map(|n| &n.view)
    }

    /// The engine's work so far (searches, refinements).
    pub fn work(&self) -> blastnet_aggregator_core::Work {
        self.engine.work()
    }

    /// The latest watermark passed to the engine.
    pub fn watermark(&self) -> Option<UtcNs> {
        self.watermark
    }

    /// Whether nodes mode has completed (all nodes offline, flushed).
    pub fn completed(&self) -> bool {
        self.clocks.completed()
    }

    fn refuse(&mut self, kind: Kind, topic: &str, e: Invalid) {
        self.metrics.count_invalid(kind, e.reason);
        if self.logged.len() < MAX_LOGGED
            && self
                .logged
                .insert((topic.to_string(), e.reason, e.field.clone()))
        {
            tracing::warn!(topic, "refused message: {e} (further refusals of this kind on this topic are only counted)");
        }
    }

    /// Whether the last message given to [`Pipeline::on_message`] was
    /// accepted (a new detection, or a valid status), and its data time:
    /// what the service's inbox keeps.
    pub fn last_accepted(&self) -> Option<UtcNs> {
        self.accepted
    }

    /// Handle one MQTT message.
    pub fn on_message(&mut self, topic: &str, payload: &[u8], out: &mut Vec<Output>) {
        self.accepted = None;
        let t = match ingest::parse_topic(&self.cfg.prefix, topic) {
            Ok(t) => t,
            Err(e) => {
                let kind = if topic.ends_with("/status") {
                    Kind::Status
                } else if topic.ends_with("/snippet") {
                    Kind::Snippet
                } else {
                    Kind::Detection
                };
                self.refuse(kind, topic, e);
                return;
            }
        };
        let kind = match t.kind {
            MessageKind::Detection => Kind::Detection,
            MessageKind::Status => Kind::Status,
            MessageKind::Snippet => Kind::Snippet,
        };
        match kind {
            Kind::Detection => self.metrics.detections_received.fetch_add(1, Relaxed),
            Kind::Status => self.metrics.statuses_received.fetch_add(1, Relaxed),
            Kind::Snippet => self.metrics.snippets_received.fetch_add(1, Relaxed),
        };
        if payload.len() > self.cfg.max_payload_bytes {
            let e = Invalid {
                reason: Reason::TooLarge,
                field: None,
                detail: format!(
                    "{} bytes, limit {}",
                    payload.len(),
                    self.cfg.max_payload_bytes
                ),
            };
            self.refuse(kind, topic, e);
            return;
        }
        match t.kind {
            MessageKind::Detection => match ingest::validate_detection(&t, payload) {
                Ok(d) => self.on_detection(&t, d, out),
                Err(e) => self.refuse(kind, topic, e),
            },
            MessageKind::Status => match ingest::validate_status(&t, payload) {
                Ok(s) => self.on_status(&t, s, out),
                Err(e) => self.refuse(kind, topic, e),
            },
            MessageKind::Snippet => match ingest::validate_snippet(&t, payload) {
                Ok(s) => self.on_snippet(topic, s, out),
                Err(e) => self.refuse(kind, topic, e),
            },
        }
    }

    /// A valid snippet: kept (the store, by node and seq) if its node is
    /// registered. Not data time for the engine, nor for the inbox: a
    /// snippet lost in a crash is evidence lost, never an event.
    fn on_snippet(&mut self, topic: &str, s: ingest::CheckedSnippet, out: &mut Vec<Output>) {
        if !self.nodes.contains_key(&s.snippet.node_id) {
            let e = Invalid {
                reason: Reason::NodeLimit,
                field: Some("node_id".into()),
                detail: format!(
                    "node {} is not registered (no detection or status from it yet): snippet not kept",
                    s.snippet.node_id
                ),
            };
            self.refuse(Kind::Snippet, topic, e);
            return;
        }
        out.push(Output::Snippet(Box::new(s.snippet)));
    }

    fn on_detection(&mut self, t: &NodeTopic<'_>, mut d: Detection, out: &mut Vec<Output>) {
        if !self.admit(Kind::Detection, t.site, &d.node_id) {
            return;
        }
        let node = self.recent.node(&d.node_id);
        if self.recent.contains(node, d.seq) {
            self.metrics.detections_duplicate.fetch_add(1, Relaxed);
            return;
        }
        if let Some(wm) = self.watermark {
            if d.onset_utc.0 < wm.0.saturating_sub(self.cfg.retention_ns) {
                self.metrics.detections_late.fetch_add(1, Relaxed);
                return;
            }
        }
        if let Some(why) = self
            .nodes
            .get(&d.node_id)
            .and_then(|e| e.view.refused.clone())
        {
            let topic = blastnet_contract::topic::node(
                &self.cfg.prefix,
                t.site,
                &d.node_id,
                blastnet_contract::topic::NodeMessage::Detection,
            );
            self.refuse(
                Kind::Detection,
                &topic,
                Invalid {
                    reason: Reason::FarFromSite,
                    field: Some("lat".into()),
                    detail: why,
                },
            );
            return;
        }
        self.metrics.detections_accepted.fetch_add(1, Relaxed);
        self.accepted = Some(d.onset_utc);
        if d.site.is_none() {
            d.site = Some(t.site.to_string());
        }
        // Register a node heard before its first status, from the detection itself.
        let entry = self.nodes.entry(d.node_id.clone()).or_insert_with(|| {
            self.metrics.nodes_known.fetch_add(1, Relaxed);
            self.metrics.nodes_online.fetch_add(1, Relaxed);
            NodeEntry {
                view: NodeView {
                    clock_source: Some(d.clock.source),
                    clock_uncertainty_s: d.clock.uncertainty_s,
                    ..NodeView::first_heard(&d.node_id, t.site, d.lat, d.lon, d.alt_m, "unknown")
                },
            }
        });
        let fresh = entry.view.detections == 0 && !self.clocks.has_status(&d.node_id);
        self.clocks.on_detection(&d.node_id);
        entry.view.detections += 1;
        entry.view.last_detection_utc = Some(
            entry
                .view
                .last_detection_utc
                .map_or(d.onset_utc, |l| l.max(d.onset_utc)),
        );
        if fresh {
            // The engine registers a node it has not heard of from the detection itself.
            out.push(Output::Node(Box::new(entry.view.clone())));
        }
        let site = self.recent.site(t.site);
        match self.cfg.time_base {
            // Replays: to the engine in data-time order, behind the watermark.
            TimeBase::Nodes => self.order.push(d.clone()),
            TimeBase::Wall => self.engine_detection(&d, out),
        }
        self.recent.insert(node, site, d);
    }

    fn engine_detection(&mut self, d: &Detection, out: &mut Vec<Output>) {
        if self.trace.is_some() {
            Trace::record(&mut self.trace, &TraceEntry::Detection(Box::new(d.clone())));
        }
        self.engine.on_detection(d, &mut self.actions);
        self.metrics
            .detections_unseeded
            .store(self.engine.unseeded(), Relaxed);
        self.drain_actions(out);
    }

    fn engine_node(&mut self, info: NodeInfo) {
        if self.trace.is_some() {
            Trace::record(&mut self.trace, &TraceEntry::Node(info.clone()));
        }
        self.engine.upsert_node(info);
    }

    /// Hand the engine what the data-time order released.
    fn release(&mut self, calls: Vec<Release>, out: &mut Vec<Output>) {
        for c in calls {
            match c {
                Release::Node(info) => self.engine_node(info),
                Release::Detection(d) => self.engine_detection(&d, out),
                Release::Advance(g) => self.advance_to(g, out),
            }
        }
    }

    fn on_status(&mut self, t: &NodeTopic<'_>, s: Status, out: &mut Vec<Output>) {
        let state = match s.state {
            NodeState::Online => "online",
            NodeState::Offline => "offline",
            NodeState::Degraded => "degraded",
        };
        if !self.admit(Kind::Status, t.site, &s.node_id) {
            return;
        }
        // Nodes mode: a node's will (the broker lost its connection, e.g. a
        // broker restart) is not the end of its data: the node comes back
        // and goes on where its data left off, and the watermark keeps
        // waiting for it. Its own last status comes at the end of its data.
        if self.cfg.time_base == TimeBase::Nodes
            && s.state == NodeState::Offline
            && s.counters.get(blastnet_contract::WILL_COUNTER) == Some(&1)
        {
            tracing::debug!(node = %s.node_id, "connection lost (its will): waiting for it to come back");
            return;
        }
        self.accepted = Some(s.time_utc);
        let has_position = !(s.lat == 0.0 && s.lon == 0.0);
        let metrics = &self.metrics;
        let entry = self.nodes.entry(s.node_id.clone()).or_insert_with(|| {
            metrics.nodes_known.fetch_add(1, Relaxed);
            NodeEntry {
                view: NodeView::first_heard(&s.node_id, t.site, s.lat, s.lon, s.alt_m, "offline"),
            }
        });
        let was_online = entry.view.online();
        let before = entry.view.info();
        let v = &mut entry.view;
        v.site = t.site.to_string();
        v.state = state.to_string();
        if has_position {
            (v.lat, v.lon, v.alt_m) = (s.lat, s.lon, s.alt_m);
        }
        if let Some(c) = s.clock {
            v.clock_source = Some(c.source);
            v.clock_uncertainty_s = c.uncertainty_s;
        }
        if s.temperature_c.is_some() {
            v.temperature_c = s.temperature_c;
        }
        v.last_status_utc = Some(s.time_utc);
        v.software_version = s.software_version;
        v.spool_backlog = s.spool_backlog;
        let now_online = entry.view.online();
        self.clocks.on_status(&s.node_id, s.time_utc, now_online);
        match (was_online, now_online) {
            (false, true) => {
                self.metrics.nodes_online.fetch_add(1, Relaxed);
            }
            (true, false) => {
                self.metrics.nodes_online.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
        let position = Geodetic::new(entry.view.lat, entry.view.lon, entry.view.alt_m);
        if has_position {
            self.check_site(t.site, &s.node_id, position, s.time_utc, out);
        }
        let Some(entry) = self.nodes.get(&s.node_id) else {
            return;
        };
        let info = entry.view.info();
        out.push(Output::Node(Box::new(entry.view.clone())));
        match self.cfg.time_base {
            // What the engine knows of a node follows that node's own
            // statuses only (not whether one of its detections came first),
            // at their data time.
            TimeBase::Nodes => {
                match self.ordered_nodes.get(&s.node_id) {
                    None => self.order.register_node(info.clone()),
                    Some(i) if *i != info => self.order.push_node(info.clone(), s.time_utc),
                    Some(_) => {}
                }
                self.ordered_nodes.insert(s.node_id.clone(), info);
            }
            TimeBase::Wall => {
                if info != before {
                    self.engine_node(info);
                }
            }
        }
        if self.cfg.time_base == TimeBase::Nodes {
            self.advance_nodes(out);
        }
    }

    /// Whether a message of node `id` at `site` may be taken: a known node,
    /// or a new one while the site has fewer than `max_nodes_per_site`
    /// (counted then). A refusal is counted, and logged once per site.
    fn admit(&mut self, kind: Kind, site: &str, id: &str) -> bool {
        if self.nodes.contains_key(id) {
            return true;
        }
        let n = self.site_nodes.entry(site.to_string()).or_default();
        if *n < self.cfg.max_nodes_per_site {
            *n += 1;
            return true;
        }
        let limit = self.cfg.max_nodes_per_site;
        self.refuse(
            kind,
            &format!("{}/{site}/node/+", self.cfg.prefix),
            Invalid {
                reason: Reason::NodeLimit,
                field: Some("node_id".into()),
                detail: format!(
                    "site {site} has {limit} nodes (ingest.max_nodes_per_site); node {id} is not registered"
                ),
            },
        );
        false
    }

    /// The site check for `node`, whose position was just given: judge it,
    /// or every node of the site when the site's median was taken again.
    /// Nodes whose verdict changed, other than `node` (its caller hands it
    /// on), are published and handed to the engine (nodes mode: at data
    /// time `time`).
    fn check_site(
        &mut self,
        site: &str,
        node: &str,
        p: Geodetic,
        time: UtcNs,
        out: &mut Vec<Output>,
    ) {
        let radius = self.cfg.engine.max_site_radius_m;
        let g = self.site_geo.entry(site.to_string()).or_default();
        let verdicts: Vec<(String, Option<String>)> = if g.update(node, p) {
            g.pos
                .iter()
                .map(|(id, q)| (id.clone(), g.judge(*q, site, radius)))
                .collect()
        } else {
            vec![(node.to_string(), g.judge(p, site, radius))]
        };
        for (id, verdict) in verdicts {
            let Some(e) = self.nodes.get_mut(&id) else {
                continue;
            };
            if e.view.refused == verdict {
                continue;
            }
            match &verdict {
                Some(r) => tracing::warn!(node = %id, "node refused: {r}"),
                None => {
                    tracing::info!(node = %id, "node no longer refused: its position agrees with site {site}")
                }
            }
            e.view.refused = verdict;
            if id == node {
                continue;
            }
            let info = e.view.info();
            out.push(Output::Node(Box::new(e.view.clone())));
            match self.cfg.time_base {
                TimeBase::Nodes => {
                    if self.ordered_nodes.contains_key(&id) {
                        self.order.push_node(info.clone(), time);
                    } else {
                        self.order.register_node(info.clone());
                    }
                    self.ordered_nodes.insert(id, info);
                }
                TimeBase::Wall => self.engine_node(info),
            }
        }
    }

    /// Advance the watermark: wall mode from `now`, nodes mode from the
    /// nodes' status times (and flush once every node has gone offline).
    pub fn on_tick(&mut self, now: UtcNs, out: &mut Vec<Output>) {
        match self.cfg.time_base {
            TimeBase::Wall => {
                let wm = UtcNs(now.0.saturating_sub(self.cfg.lateness_ns));
                self.advance_to(wm, out);
            }
            TimeBase::Nodes => self.advance_nodes(out),
        }
    }

    fn advance_nodes(&mut self, out: &mut Vec<Output>) {
        let step = self.clocks.step();
        let mut calls = Vec::new();
        if let Some(wm) = step.advance {
            self.order.advance(wm, &mut calls);
        }
        if step.flush {
            self.order.drain(&mut calls);
        }
        self.release(calls, out);
        if step.flush {
            Trace::record(&mut self.trace, &TraceEntry::Flush);
            self.engine.flush(&mut self.actions);
            self.drain_actions(out);
            out.push(Output::Completed);
        }
    }

    fn advance_to(&mut self, wm: UtcNs, out: &mut Vec<Output>) {
        if self.watermark.is_some_and(|w| wm <= w) {
            return;
        }
        self.watermark = Some(wm);
        self.metrics.watermark_ns.store(wm.0, Relaxed);
        Trace::record(&mut self.trace, &TraceEntry::Advance(wm));
        self.engine.advance(wm, &mut self.actions);
        self.drain_actions(out);
        // Keep what events finalised at this watermark still refer to.
        self.recent
            .evict_before(wm.0.saturating_sub(self.cfg.retention_ns));
    }

    /// Finalise everything now (shutdown).
    pub fn flush(&mut self, out: &mut Vec<Output>) {
        let mut calls = Vec::new();
        self.order.drain(&mut calls);
        self.release(calls, out);
        Trace::record(&mut self.trace, &TraceEntry::Flush);
        self.engine.flush(&mut self.actions);
        self.drain_actions(out);
    }

    /// Resume from what an earlier run learned (the service reads it from
    /// its store at start).
    pub fn restore_calibration(&mut self, c: &Calibration) {
        Trace::record(
            &mut self.trace,
            &TraceEntry::Calibration(Box::new(c.clone())),
        );
        self.engine.restore_calibration(c);
        self.refresh_terms(&mut Vec::new());
    }

    /// Copy the engine's station terms into the node views; a view that
    /// changed goes out.
    fn refresh_terms(&mut self, out: &mut Vec<Output>) {
        for (id, d, s, events) in self.engine.station_terms() {
            if let Some(n) = self.nodes.get_mut(&id) {
                let set = s > 0.0 || d != 0.0;
                let (term, sigma) = if set {
                    (Some(d), Some(s))
                } else {
                    (None, None)
                };
                if n.view.station_term_s != term || n.view.station_term_events != events {
                    n.view.station_term_s = term;
                    n.view.station_term_sigma_s = sigma;
                    n.view.station_term_events = events;
                    out.push(Output::Node(Box::new(n.view.clone())));
                }
            }
        }
    }

    fn drain_actions(&mut self, out: &mut Vec<Output>) {
        // Nodes of the final events (what the engine learned from).
        let mut finals: Vec<String> = Vec::new();
        for a in std::mem::take(&mut self.actions) {
            match a {
                Action::Publish(mut event) => {
                    if event.status == EventStatus::Final {
                        self.metrics.count_final(event.kind);
                        finals.extend(
                            event
                                .detections
                                .iter()
                                .chain(event.outliers.iter())
                                .map(|r| r.node_id.clone()),
                        );
                    }
                    let mut detections = Vec::new();
                    for r in event.detections.iter().chain(event.outliers.iter()) {
                        if let Some((d, site)) = self.recent.get(&r.node_id, r.seq) {
                            if event.site.is_none() {
                                event.site = self.recent.sites.get(*site as usize).cloned();
                            }
                            detections.push(d.clone());
                        }
                    }
                    if event.site.is_none() {
                        event.site = event
                            .detections
                            .first()
                            .and_then(|r| self.nodes.get(&r.node_id))
                            .map(|n| n.view.site.clone());
                    }
                    self.metrics.events_published.fetch_add(1, Relaxed);
                    out.push(Output::Event(Box::new(EventOut { event, detections })));
                }
                Action::FlagNode { node_id, reason } => {
                    self.metrics.nodes_flagged.fetch_add(1, Relaxed);
                    tracing::warn!(node = %node_id, "engine flagged node: {reason}");
                    if let Some(n) = self.nodes.get_mut(&node_id) {
                        n.view.flagged = Some(reason);
                        out.push(Output::Node(Box::new(n.view.clone())));
                    }
                }
            }
        }
        if !finals.is_empty() {
            self.refresh_terms(out);
            let c = self
                .engine
                .calibration_of(finals.iter().map(String::as_str));
            out.push(Output::Calibration(Box::new(c)));
        }
    }
}

/// Seconds as integer nanoseconds.
pub fn secs_to_ns(s: f64) -> i64 {
    (s * NS_PER_S as f64).round() as i64
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use blastnet_contract::{Enu, EnuFrame, EventStatus, NodeState};

    use super::*;
    use crate::testkit::Layout;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn finals(events: impl IntoIterator<Item = Event>) -> Vec<Event> {
        events
            .into_iter()
            .filter(|e| e.status == EventStatus::Final)
            .collect()
    }

    #[test]
    fn the_engine_trace_given_replays_to_the_same_events() {
        let centre = Geodetic::new(40.4406, -79.9959, 250.0);
        let layout = Layout::ring("city", centre, 5, 600.0);
        let t0 = UtcNs(1_714_564_800_000_000_000);
        let trace = Shared::default();
        let mut p = Pipeline::with_trace(
            crate::testkit::nodes_mode_config(Vec::new()),
            Arc::new(Metrics::default()),
            Some(Box::new(trace.clone())),
        );
        let mut out = Vec::new();
        for (t, pl) in layout.statuses(NodeState::Online, t0) {
            p.on_message(&t, &pl, &mut out);
        }
        let src = EnuFrame::new(centre).to_geodetic(Enu::new(150.0, -100.0, 0.0));
        let dets = layout.detections(src, t0.add_secs_f64(5.0), 1);
        for (t, pl) in layout.detection_messages(&dets) {
            p.on_message(&t, &pl, &mut out);
        }
        for (t, pl) in layout.statuses(NodeState::Offline, t0.add_secs_f64(60.0)) {
            p.on_message(&t, &pl, &mut out);
        }
        assert!(p.completed());
        let live = finals(out.into_iter().filter_map(|o| match o {
            Output::Event(e) => Some(e.event),
            _ => None,
        }));
        assert_eq!(live.len(), 1, "{live:#?}");

        let text = String::from_utf8(trace.0.lock().unwrap().clone()).unwrap();
        let entries: Vec<TraceEntry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(matches!(entries.first(), Some(TraceEntry::Config(_))));
        let mut engine = Engine::new(EngineConfig::default());
        let mut actions = Vec::new();
        for e in &entries {
            engine.apply(e, &mut actions);
        }
        let replayed = finals(actions.into_iter().filter_map(|a| match a {
            Action::Publish(e) => Some(e),
            _ => None,
        }));
        // The pipeline fills in the site from the detections' topics.
        let strip = |v: Vec<Event>| -> Vec<Event> {
            v.into_iter()
                .map(|mut e| {
                    e.site = None;
                    e
                })
                .collect()
        };
        assert_eq!(strip(live), strip(replayed));
    }

    #[test]
    fn a_full_site_refuses_new_node_ids_and_keeps_its_nodes() {
        let metrics = Arc::new(Metrics::default());
        let mut cfg = crate::testkit::nodes_mode_config(Vec::new());
        cfg.max_nodes_per_site = 3;
        let mut p = Pipeline::new(cfg, metrics.clone());
        let centre = blastnet_contract::Geodetic::new(40.44, -79.99, 250.0);
        let layout = Layout::ring("hill", centre, 5, 300.0);
        let t0 = UtcNs::parse("2024-05-01T12:00:00Z").unwrap();
        let mut out = Vec::new();
        for (topic, payload) in layout.statuses(NodeState::Online, t0) {
            p.on_message(&topic, &payload, &mut out);
        }
        assert_eq!(p.nodes().count(), 3);
        assert_eq!(metrics.invalid_count(Kind::Status, Reason::NodeLimit), 2);
        // A detection of a node refused, and of a node registered.
        let dets = layout.detections(centre, t0.add_secs_f64(1.0), 1);
        for (topic, payload) in layout.detection_messages(&dets) {
            p.on_message(&topic, &payload, &mut out);
        }
        assert_eq!(metrics.detections_accepted.load(Relaxed), 3);
        assert_eq!(metrics.invalid_count(Kind::Detection, Reason::NodeLimit), 2);
        assert_eq!(p.nodes().count(), 3);
    }
}
