//! The association engine: a pure state machine. Detections and watermarks
//! go in; event revisions and node flags come out as [`Action`]s.
//!
//! Life of a detection:
//! 1. **Absorb**: if an open event predicts an arrival at this node (and
//!    stream) within `gate_sigmas` of (pick ⊕ prediction) sigma, it joins the
//!    best such event (seismic picks are tried as the ground wave and as the
//!    air-coupled wave).
//! 2. **Seed**: otherwise it waits in the pending pool, and with it as the
//!    pivot the engine looks for a source that explains it and other pending
//!    detections: hypotheses from every consistent triple (ground-plane
//!    spherical intersection) and quadruple (linearised TDOA, free height),
//!    scored by how many nodes they explain (a RANSAC-like consensus), the
//!    best refined by [`locate`] with outlier rejection, then accepted only if
//!    χ² is consistent with the sigmas and the live nodes whose arrival is
//!    already due mostly reported it (negative evidence, the guard against
//!    ghosts made of unrelated picks). Online only a source confirmed by
//!    enough sites is accepted at once.
//! 3. **Sweep**: once the watermark is one array-crossing time past a
//!    pending pick, every arrival of any source it could belong to is in;
//!    such picks are judged earliest first, each as the pivot of a fresh
//!    search over all the evidence, and an accepted source takes its picks
//!    out of the pool before the next pivot.
//! 4. **Finalise**: once the watermark passes origin + travel time to the
//!    farthest live node + margin, the event is published as final, with the
//!    nearby unassociated picks (echoes, clock errors) listed as outliers and
//!    the per-node residual history updated (a node whose residuals agree in
//!    sign and size across events is flagged).

use std::collections::{HashMap, VecDeque};

use blastnet_contract::blast::Burst;
use blastnet_contract::wire::EVENT_SCHEMA;
use blastnet_contract::{
    ArrivalRef, Detection, EnuFrame, Event, EventStatus, Geodetic, SourceKind, StreamKind, UtcNs,
};

use crate::config::EngineConfig;
use crate::locate::{
    closed_form_of, locate, Arrival, Dims, DimsChoice, Guesses, LocateOptions, Solution,
};
use crate::propagation::{Phase, Propagation};
use crate::yield_est::estimate_yield_multi;

mod challenge;
mod search;

/// What the engine knows about a node (from its status messages).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Surveyed or GPS position.
    pub position: Geodetic,
    /// 1-sigma clock uncertainty, seconds.
    pub clock_uncertainty_s: f64,
    /// Whether the node is alive (status `online` or `degraded`).
    pub online: bool,
    /// Air temperature it reports, °C.
    pub temperature_c: Option<f64>,
}

/// One call into the engine, as recorded by the service when
/// `BLASTNET_ENGINE_TRACE` names a file (one JSON object per line). Replaying
/// a trace (`offline_replay --trace`) repeats a live run's decisions exactly,
/// whatever order MQTT delivered the detections in.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceEntry {
    /// [`Engine::new`] (the first line of a trace).
    Config(Box<EngineConfig>),
    /// [`Engine::upsert_node`].
    Node(NodeInfo),
    /// [`Engine::on_detection`].
    Detection(Box<Detection>),
    /// [`Engine::advance`].
    Advance(UtcNs),
    /// [`Engine::flush`].
    Flush,
}

impl Engine {
    /// Apply one recorded call.
    pub fn apply(&mut self, entry: &TraceEntry, out: &mut Vec<Action>) {
        match entry {
            TraceEntry::Config(c) => *self = Engine::new((**c).clone()),
            TraceEntry::Node(n) => self.upsert_node(n.clone()),
            TraceEntry::Detection(d) => self.on_detection(d, out),
            TraceEntry::Advance(w) => self.advance(*w, out),
            TraceEntry::Flush => self.flush(out),
        }
    }
}

/// An output of the engine.
// `Publish(Event)` is the agreed API and actions are few (one per revision):
// boxing would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish this event revision (preliminary or final; see `event.status`).
    /// Same event_id across revisions, revision increments.
    Publish(Event),
    /// A node whose arrivals are consistently inconsistent (e.g. clock error): flag it.
    FlagNode {
        /// The node.
        node_id: String,
        /// Why, with the numbers.
        reason: String,
    },
}

/// The sweep draws hypotheses first from the picks of this many nodes nearest the pivot's.
const NEAR_NODES: usize = 4;

/// At most this many distinct hypotheses of one search are refined and judged
/// (the best supported; a refinement is most of a search's cost). Measured:
/// 3 locates as much as 6 on city-salvo and ShotSpotter; 2 loses sources.
const MAX_REFINED_HYPOTHESES: usize = 3;

/// Height above the ground (and above 3 sigma of the fit's vertical
/// uncertainty) beyond which a source is an airburst, m.
const AIRBURST_MIN_HEIGHT_M: f64 = 100.0;

/// Refits of a challenged event judged in full, best screened first (see
/// `challenge`).
const MAX_CHALLENGES_JUDGED: usize = 3;

/// Earlier-pick swaps tried per judged hypothesis (see `evaluate_seed`).
const MAX_SWAPS: usize = 4;

/// The sweep tries free-height quadruples only when a ground triple already
/// explains this many sites (measured: 4 keeps every city-salvo airburst and
/// saves a quarter of the engine's time on lone false triggers; 5 loses one).
const SWEEP_QUAD_MIN_SUPPORT: usize = 4;

/// Candidates (nearest in time to the pivot) from which quadruples are drawn.
const QUAD_CANDIDATES: usize = 12;

/// Half-width (s) of the window around a predicted arrival over which a
/// node's local pick rate is measured for the coincidence test.
const DENSITY_WINDOW_S: f64 = 2.0;
/// Shortest delivered span (s) over which a node's pick rate is estimated.
const MIN_DENSITY_SPAN_S: f64 = 0.5;
/// Largest chance probability of a fit's support (see `chance_tail`): the
/// seeding tries up to thousands of hypotheses per second of a salvo, so one
/// coincidence in ~10⁴ is tolerated.
const MAX_CHANCE: f64 = 1e-4;

/// Prominence (dB) by which a pick must stand out over another of its node
/// within the echo window for that one to be subordinate: twice the
/// amplitude. On ShotSpotter's recordings the share of the pulses
/// ShotSpotter grouped per shot that this flags is flat from 5 to 10 dB
/// (2.5 % to 1.7 %) while the share of the other picks falls (70 % to
/// 58 %); located within 15 m: 77 % at 4–5 dB, 74 % at 6, 71 % at 8, 68 %
/// at 10 (the round factor of two is kept rather than the best margin).
const SUBORDINATE_DB: f64 = 6.0;

/// Largest meaningful pick prominence, dB: the dynamic range of a 24-bit
/// digitiser (6 dB per bit) and some.
const MAX_SNR_DB: f64 = 150.0;

/// History of a node's residuals kept for clock flagging.
const HISTORY: usize = 8;

#[derive(Debug, Clone)]
struct Node {
    info: NodeInfo,
    enu: [f64; 3],
    /// Latest onset delivered by this node (per-node delivery is in order).
    hw: Option<UtcNs>,
    history: VecDeque<Option<f64>>,
    flagged: bool,
    /// Finalised events in a row this node contributed nothing to while
    /// delivering no pick at all: at 3 it is presumed dead (silently) and no
    /// longer counted as a node that should have heard a source.
    silent_misses: usize,
    /// Latest onset of an acoustic pick of this node used by an event (the
    /// direct arrival): later picks within `echo_window_s` are probable echoes.
    last_direct: Option<UtcNs>,
    /// Prominence of that direct arrival, dB (NaN: unknown).
    last_direct_snr: f64,
    /// Index of the first node of its site: sensors closer together than an
    /// association gate's worth of sound travel (e.g. a high-SPL sensor beside
    /// a MEMS microphone) hear every source, true or coincidental, together,
    /// so they confirm a source once, not twice.
    site: usize,
    /// Data time up to which a node now offline was still listening (its
    /// latest onset or the watermark when it went offline): arrivals due
    /// before then still count as heard or missed.
    offline_at: Option<UtcNs>,
}

/// Consecutive silent misses after which a node is presumed dead.
const PRESUMED_DEAD_AFTER: usize = 3;

impl Node {
    /// Whether the node should have reported an arrival due at `t`.
    fn expected_at(&self, t: UtcNs) -> bool {
        (self.info.online || self.offline_at.is_some_and(|o| t <= o))
            && !self.flagged
            && self.silent_misses < PRESUMED_DEAD_AFTER
    }
}

/// A detection as the engine keeps it: plain data (`Copy`), as a search
/// copies hundreds of them.
#[derive(Debug, Clone, Copy)]
struct Det {
    uid: u64,
    node: usize,
    seq: u64,
    stream: StreamKind,
    onset: UtcNs,
    /// pick ⊕ clock ⊕ model, seconds.
    sigma: f64,
    probs: [f64; 5],
    peak: f64,
    /// The sensor saturated: `peak` is a lower bound.
    clipped: bool,
    /// The deployment site it came with (an index into `Engine::site_names`).
    site: Option<u32>,
    /// Probably an echo: it follows a direct arrival associated at the same
    /// node by less than `echo_window_s`. It may join a source but does not
    /// seed one.
    echo: bool,
    /// A probable echo less prominent than the direct arrival it follows
    /// (a reflection loses energy; a pick as prominent as the direct
    /// arrival is more likely another source's): weak support.
    quiet_echo: bool,
    /// Pick prominence over the noise before it (the detection's `snr_db`).
    snr_db: f64,
    /// Subordinate: a pick of the same node within `echo_window_s` stands
    /// out by `SUBORDINATE_DB` more (see [`Engine::mark_subordinates`]).
    /// Weak support: a search ranks hypotheses by the sites they explain
    /// without weak picks, and a source mostly of subordinate picks and
    /// probable echoes is rejected.
    subordinate: bool,
    /// Outshone: a pick of the same node within the event window (the
    /// longest span of one source's arrivals) stands out by
    /// `SUBORDINATE_DB` more. The sweep judges such picks last (see
    /// [`Engine::sweep`]).
    outshone: bool,
    /// Already tried as the pivot of the sweep (see [`Engine::sweep`]).
    swept: bool,
}

impl Det {
    /// Weak evidence of a source: a subordinate pick, or a probable echo
    /// quieter than the direct arrival it follows. A search ranks
    /// hypotheses by the sites they explain without weak picks, and a
    /// source must be over-determined by its strong picks alone (see
    /// `evaluate_seed`).
    fn weak(&self) -> bool {
        self.subordinate || self.quiet_echo
    }
}

#[derive(Debug, Clone)]
struct Member {
    det: Det,
    phase: Phase,
    /// Part of the fit (false: a located outlier, or an air-coupled seismic
    /// pick duplicating the node's acoustic one).
    used: bool,
    residual: f64,
    reason: Option<String>,
}

#[derive(Debug, Clone)]
struct OpenEvent {
    id: String,
    revision: u32,
    tref: UtcNs,
    members: Vec<Member>,
    /// Unassociated picks near this event's predictions (possible outliers).
    cands: Vec<Det>,
    sol: Solution,
    /// Used-member count at the last location.
    located_with: usize,
    deadline: UtcNs,
}

/// The association engine. See the module documentation.
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: EngineConfig,
    prop: Propagation,
    frame: Option<EnuFrame>,
    nodes: Vec<Node>,
    node_ix: HashMap<String, usize>,
    pending: Vec<Det>,
    events: Vec<OpenEvent>,
    watermark: Option<UtcNs>,
    max_onset: Option<UtcNs>,
    next_uid: u64,
    next_event: u64,
    window_s: f64,
    /// Distances between nodes, m (row-major, `nodes.len()`²).
    node_dist: Vec<f64>,
    /// Longest arrival-time difference of one source between two nodes:
    /// distance over the slowest sound speed, plus the association
    /// tolerance, s (row-major, as `node_dist`).
    pair_window: Vec<f64>,
    /// Deployment site names detections came with.
    site_names: Vec<String>,
    /// Reused buffers of the search.
    scratch: SearchScratch,
    /// The median height of all known nodes (the search's ground plane).
    ground_all: f64,
}

/// The candidate picks of one search, laid out for [`Engine::support`]
/// (one search scores hundreds of hypotheses against all of them): grouped
/// by node, nodes ascending.
#[derive(Debug, Default, Clone)]
struct SupportTable {
    /// Per node: its position and the range of its candidates below.
    pos: Vec<[f64; 3]>,
    range: Vec<std::ops::Range<usize>>,
    /// Per candidate: onset (s on the search's axis), 1/sigma, and the gate
    /// its residual must fall in.
    t: Vec<f64>,
    inv_sigma: Vec<f64>,
    gate: Vec<f64>,
    /// Per candidate: a weak pick (see `Det::weak`).
    weak: Vec<bool>,
}

/// Buffers of the search (see [`Engine::seed`]), kept from one search to the
/// next: a search runs for most detections.
#[derive(Debug, Default, Clone)]
struct SearchScratch {
    lent: Vec<Det>,
    cand: Vec<usize>,
    nodes_in: Vec<usize>,
    dets: Vec<Det>,
    arr: Vec<Arrival>,
    tri: Vec<usize>,
    quad: Vec<usize>,
    with_pivot: Vec<bool>,
    qc: Vec<bool>,
    hyps: Vec<([f64; 4], usize, usize, f64)>,
    tab: SupportTable,
    order: Vec<usize>,
}

/// A source found by a search: its members, the fit, and the fit's time axis.
type Found = (Vec<Member>, Solution, UtcNs);

/// Seconds of data time behind the newest onset that unassociated picks are
/// kept for when the watermark lags (it is `advance` that normally ages them out).
const PENDING_KEEP_S: f64 = 120.0;

fn kind_index(k: SourceKind) -> usize {
    SourceKind::ALL.iter().position(|&x| x == k).unwrap_or(4)
}

fn probs_of(det: &Detection) -> [f64; 5] {
    let mut p = [0.0; 5];
    if !det.class_probs.is_empty() {
        for (name, &v) in &det.class_probs {
            if let Some(i) = SourceKind::ALL.iter().position(|k| k.as_str() == name) {
                if v.is_finite() && v > 0.0 {
                    p[i] += v;
                }
            }
        }
        let s: f64 = p.iter().sum();
        if s > 0.0 {
            p.iter_mut().for_each(|v| *v /= s);
            return p;
        }
    }
    let c = if det.confidence.is_finite() {
        det.confidence.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let k = kind_index(det.kind);
    for (i, v) in p.iter_mut().enumerate() {
        *v = if i == k { c } else { (1.0 - c) / 4.0 };
    }
    p
}

fn finite_or(v: f64, d: f64) -> f64 {
    if v.is_finite() && v >= 0.0 {
        v
    } else {
        d
    }
}

impl Engine {
    /// A new engine. `cfg` should have passed [`EngineConfig::validate`];
    /// out-of-range values are used as given.
    pub fn new(cfg: EngineConfig) -> Engine {
        let mut prop = Propagation::still_air(cfg.temperature_c);
        prop.wind_mps = cfg.wind_mps;
        prop.seismic_speed_mps = cfg.seismic_speed_mps;
        prop.seismic_speed_rel_sigma = cfg.seismic_speed_rel_sigma;
        let frame = cfg.origin.map(EnuFrame::new);
        let window_s = cfg
            .max_event_window_s
            .unwrap_or(1.0 + cfg.association_tolerance_s);
        Engine {
            cfg,
            prop,
            frame,
            nodes: Vec::new(),
            node_ix: HashMap::new(),
            pending: Vec::new(),
            events: Vec::new(),
            watermark: None,
            max_onset: None,
            next_uid: 0,
            next_event: 0,
            window_s,
            node_dist: Vec::new(),
            pair_window: Vec::new(),
            site_names: Vec::new(),
            scratch: SearchScratch::default(),
            ground_all: 0.0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The propagation model in use (sound speed from the nodes' or the configured temperature).
    pub fn propagation(&self) -> Propagation {
        self.prop
    }

    /// The ENU frame's origin, once known.
    pub fn origin(&self) -> Option<Geodetic> {
        self.frame.map(|f| f.origin())
    }

    /// Events not yet final.
    pub fn open_events(&self) -> usize {
        self.events.len()
    }

    /// Detections waiting for an event.
    pub fn pending_detections(&self) -> usize {
        self.pending.len()
    }

    fn frame(&mut self, at: Geodetic) -> EnuFrame {
        *self.frame.get_or_insert_with(|| EnuFrame::new(at))
    }

    /// Add or update a node (position, clock, liveness, temperature).
    pub fn upsert_node(&mut self, node: NodeInfo) {
        let frame = self.frame(node.position);
        let enu = frame.to_enu(node.position).to_array();
        match self.node_ix.get(&node.id) {
            Some(&i) => {
                let n = &mut self.nodes[i];
                if n.info.online && !node.online {
                    n.offline_at = match (n.hw, self.watermark) {
                        (Some(h), Some(w)) => Some(h.max(w)),
                        (h, w) => h.or(w),
                    };
                } else if node.online {
                    n.offline_at = None;
                }
                n.info = node;
                n.enu = enu;
            }
            None => {
                self.node_ix.insert(node.id.clone(), self.nodes.len());
                self.nodes.push(Node {
                    info: node,
                    enu,
                    hw: None,
                    history: VecDeque::new(),
                    flagged: false,
                    silent_misses: 0,
                    last_direct: None,
                    last_direct_snr: f64::NAN,
                    site: self.nodes.len(),
                    offline_at: None,
                });
            }
        }
        self.refresh_derived();
    }

    /// Sound speed from the online nodes' temperatures (mean) or the config;
    /// event window from the array aperture.
    fn refresh_derived(&mut self) {
        let temps: Vec<f64> = self
            .nodes
            .iter()
            .filter(|n| n.info.online)
            .filter_map(|n| n.info.temperature_c)
            .filter(|t| t.is_finite() && (-80.0..=70.0).contains(t))
            .collect();
        let t = if temps.is_empty() {
            self.cfg.temperature_c
        } else {
            temps.iter().sum::<f64>() / temps.len() as f64
        };
        self.prop.sound_speed_mps = blastnet_contract::physics::sound_speed(t);
        let site_m = self.prop.sound_speed_mps
            * (self.cfg.association_tolerance_s + self.cfg.gate_sigmas * self.cfg.model_sigma_s);
        let n = self.nodes.len();
        self.node_dist.clear();
        for a in &self.nodes {
            self.node_dist
                .extend(self.nodes.iter().map(|b| dist(a.enu, b.enu)));
        }
        let (c_min, tol) = (
            self.prop.min_acoustic_speed(),
            self.cfg.association_tolerance_s,
        );
        self.pair_window = self.node_dist.iter().map(|d| d / c_min + tol).collect();
        let mut h: Vec<f64> = self.nodes.iter().map(|n| n.enu[2]).collect();
        h.sort_by(f64::total_cmp);
        self.ground_all = h.get(h.len() / 2).copied().unwrap_or(0.0);
        for i in 0..n {
            let site = (0..i)
                .find(|&j| self.node_dist[i * n + j] < site_m)
                .map_or(i, |j| self.nodes[j].site);
            self.nodes[i].site = site;
        }
        if self.cfg.max_event_window_s.is_none() {
            let mut ap: f64 = 0.0;
            for (i, a) in self.nodes.iter().enumerate() {
                for b in &self.nodes[i + 1..] {
                    ap = ap.max(dist(a.enu, b.enu));
                }
            }
            self.window_s =
                ap / self.prop.min_acoustic_speed() + self.cfg.association_tolerance_s + 1.0;
        }
    }

    /// The index of deployment site `name` (a handful per engine).
    fn site_index(&mut self, name: &str) -> u32 {
        let i = match self.site_names.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                self.site_names.push(name.to_string());
                self.site_names.len() - 1
            }
        };
        u32::try_from(i).unwrap_or(u32::MAX)
    }

    fn node_for(&mut self, det: &Detection) -> usize {
        if let Some(&i) = self.node_ix.get(&det.node_id) {
            return i;
        }
        self.upsert_node(NodeInfo {
            id: det.node_id.clone(),
            position: Geodetic::new(det.lat, det.lon, det.alt_m),
            clock_uncertainty_s: finite_or(det.clock.uncertainty_s, 0.0),
            online: true,
            temperature_c: None,
        });
        self.nodes.len() - 1
    }

    /// A validated, deduplicated detection.
    pub fn on_detection(&mut self, det: &Detection, out: &mut Vec<Action>) {
        let node = self.node_for(det);
        let n = &mut self.nodes[node];
        n.silent_misses = 0;
        n.hw = Some(n.hw.map_or(det.onset_utc, |h| h.max(det.onset_utc)));
        self.max_onset = Some(
            self.max_onset
                .map_or(det.onset_utc, |h| h.max(det.onset_utc)),
        );
        let pick = finite_or(det.onset_uncertainty_s, 1e-3);
        let clock = finite_or(det.clock.uncertainty_s, n.info.clock_uncertainty_s)
            .max(finite_or(n.info.clock_uncertainty_s, 0.0));
        let m = self.cfg.model_sigma_s;
        // The node's position error, as time along the ray.
        let pos = det
            .position_uncertainty_m
            .filter(|u| u.is_finite() && *u >= 0.0)
            .map_or(0.0, |u| u / self.prop.sound_speed_mps);
        let sigma = (pick * pick + clock * clock + m * m + pos * pos)
            .sqrt()
            .max(1e-6);
        let echo = det.stream == StreamKind::Acoustic
            && n.last_direct.is_some_and(|t| {
                let dt = det.onset_utc.secs_since(t);
                dt > 0.0 && dt <= self.cfg.echo_window_s
            });
        let quiet_echo = echo && det.snr_db < n.last_direct_snr;
        let d = Det {
            uid: self.next_uid,
            node,
            seq: det.seq,
            stream: det.stream,
            onset: det.onset_utc,
            sigma,
            probs: probs_of(det),
            peak: det.peak,
            clipped: det.clipped,
            site: det.site.as_deref().map(|name| self.site_index(name)),
            echo,
            quiet_echo,
            // Beyond any digitiser's dynamic range: a noise floor of zero
            // (e.g. a silent stretch of a simulated recording), not a
            // measurement.
            snr_db: if det.snr_db > MAX_SNR_DB {
                f64::NAN
            } else {
                det.snr_db
            },
            subordinate: false,
            outshone: false,
            swept: false,
        };
        self.next_uid += 1;
        let mut d = d;
        if d.stream == StreamKind::Acoustic {
            self.mark_subordinates(&mut d);
        }
        let d_uid = d.uid;
        if self.try_absorb(&d, out) {
            return;
        }
        self.note_candidate(&d);
        self.pending.push(d);
        // Bound the pool even if `advance` is never called. Generously: the
        // watermark may lag the newest onset by a status period (10 s) or
        // more, and a pick dropped before its hypothesis is judged loses the
        // source (regression: two sources 15 s apart, the first lost).
        if let Some(mo) = self.max_onset {
            let keep_s = (2.0 * self.window_s + self.cfg.lateness_s).max(PENDING_KEEP_S);
            let limit = mo.add_secs_f64(-keep_s);
            if self.pending.first().is_some_and(|p| p.onset < limit) {
                self.pending.retain(|p| p.onset >= limit);
            }
        }
        if det.stream == StreamKind::Acoustic {
            // A source confirmed by enough nodes is published at once; weaker
            // evidence waits for the sweep, when all of it is in.
            if let Some(last) = self.pending.len().checked_sub(1) {
                if self.pending[last].uid == d_uid && !self.pending[last].echo {
                    if let Some((members, sol, tref)) = self.search(last, false) {
                        self.create_event(members, sol, tref, out);
                    }
                }
            }
        }
    }

    /// Mark `d` and the pending picks of its node within `echo_window_s` of
    /// it as subordinate when the other stands out by `SUBORDINATE_DB` more
    /// (picks that open events hold count as the other too). A source's
    /// direct arrival starts from the ambient noise and is the most
    /// prominent pulse of its burst at a node (measured on ShotSpotter's
    /// Pittsburgh recordings: 2.5 % of the pulses ShotSpotter grouped per
    /// shot have a pick 6 dB more prominent within 0.5 s, against 67 % of
    /// the other picks); a much weaker pulse beside it rides on its coda (an
    /// echo, reverberation) or precedes it (a noise trigger). Only weak
    /// evidence, not excluded: in a salvo one source's direct arrival may
    /// follow a louder one's by tens of ms (city-salvo's 3.6 km airburst at
    /// n06 is found only from such a pick).
    fn mark_subordinates(&mut self, d: &mut Det) {
        if !d.snr_db.is_finite() {
            return;
        }
        let (echo_w, wide) = (self.cfg.echo_window_s, self.window_s);
        let (node, onset, snr) = (d.node, d.onset, d.snr_db);
        // Picks of the node within the event window: (|dt|, prominence).
        let near = |q: &Det| {
            let dt = onset.secs_since(q.onset).abs();
            (q.node == node
                && q.stream == StreamKind::Acoustic
                && q.snr_db.is_finite()
                && dt <= wide)
                .then_some(dt)
        };
        for q in self.pending.iter_mut() {
            let Some(dt) = near(q) else {
                continue;
            };
            if snr >= q.snr_db + SUBORDINATE_DB {
                q.outshone = true;
                q.subordinate |= dt <= echo_w;
            } else if q.snr_db >= snr + SUBORDINATE_DB {
                d.outshone = true;
                d.subordinate |= dt <= echo_w;
            }
        }
        for m in self.events.iter().flat_map(|ev| ev.members.iter()) {
            if let Some(dt) = near(&m.det) {
                if m.det.snr_db >= snr + SUBORDINATE_DB {
                    d.outshone = true;
                    d.subordinate |= dt <= echo_w;
                }
            }
        }
    }

    /// Advance the watermark: every detection with onset < `watermark` −
    /// `lateness_s` has been delivered. Events that can receive no further
    /// physically possible arrival are finalised.
    pub fn advance(&mut self, watermark: UtcNs, out: &mut Vec<Action>) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
        let horizon = self.horizon();
        let ripe = horizon.add_secs_f64(-self.window_s);
        self.sweep(ripe, out);
        let mut k = 0;
        while k < self.events.len() {
            if self.events[k].deadline <= horizon {
                if self.challenge(k, out) && self.events[k].deadline > horizon {
                    // Relocated on other picks: arrivals may still be due.
                    k += 1;
                    continue;
                }
                let ev = self.events.remove(k);
                self.finalise(ev, out);
            } else {
                k += 1;
            }
        }
        // Swept picks stay a while: they may still support a source whose
        // first arrival they are not, and they are the background rate of
        // the coincidence test.
        let keep = ripe.add_secs_f64(-self.window_s - DENSITY_WINDOW_S);
        self.pending.retain(|p| p.onset >= keep);
    }

    /// Finalise everything (end of a replay): every arrival is treated as delivered.
    pub fn flush(&mut self, out: &mut Vec<Action>) {
        self.watermark = Some(UtcNs(i64::MAX / 2));
        self.sweep(UtcNs(i64::MAX / 2), out);
        for k in 0..self.events.len() {
            self.challenge(k, out);
        }
        let events = std::mem::take(&mut self.events);
        for ev in events {
            self.finalise(ev, out);
        }
        self.pending.clear();
    }

    /// Judge, earliest first, every pending pick older than `ripe` that no
    /// event has claimed: by then every arrival of any source it could
    /// belong to has been delivered (`ripe` is the horizon less the longest
    /// span of one source's arrivals), so each hypothesis is judged on all of
    /// its evidence, once. Each accepted source takes its picks out of the
    /// pool before the next pivot is judged. Earliest first because a
    /// source's direct arrivals precede its echoes: ranking the competing
    /// pivots of a band by support instead was tried and lost sources on
    /// both city-salvo and ShotSpotter (echo-built hypotheses can gather as
    /// many sites as the direct one), and so did ranking them by prominence.
    /// But outshone picks (a pick of their node within the event window is
    /// `SUBORDINATE_DB` more prominent) are judged after the others: a noise
    /// trigger half a second before a shot's direct arrival at its node,
    /// judged first, seeds a source of the other nodes' direct arrivals
    /// that the shot then lacks; judged last, it finds only what the
    /// prominent picks left (ShotSpotter: 74 % → 76 % of shots within
    /// 15 m). A source found from such a deferred pivot may take picks that
    /// later pivots were judged with, so the later picks that could belong
    /// with its arrivals are judged again (city-salvo: the 3.6 km airburst,
    /// found from a pick 30 dB below a louder source's at n06, took picks
    /// the 1.2 km drone intercept's pivot had been judged with; 9 of 500
    /// interleavings lost a source without this).
    fn sweep(&mut self, ripe: UtcNs, out: &mut Vec<Action>) {
        loop {
            let next = (0..self.pending.len())
                .filter(|&i| {
                    let q = &self.pending[i];
                    !q.swept
                        && q.onset < ripe
                        && q.stream == StreamKind::Acoustic
                        && !q.echo
                        && !self.nodes[q.node].flagged
                })
                .min_by_key(|&i| (self.pending[i].outshone, self.pending[i].onset));
            let Some(i) = next else {
                return;
            };
            self.pending[i].swept = true;
            if let Some((members, sol, tref)) = self.search(i, true) {
                if self.pending[i].outshone {
                    self.rejudge_after(i, &members);
                }
                self.create_event(members, sol, tref, out);
            }
        }
    }

    /// The sweep's deferred pivot `p` found a source with `members`: the
    /// picks after it that were already judged, while those members were
    /// still in the pool, and that are consistent with one of them are
    /// judged again.
    fn rejudge_after(&mut self, p: usize, members: &[Member]) {
        let t0 = self.pending[p].onset;
        let redo: Vec<usize> = (0..self.pending.len())
            .filter(|&j| {
                let q = &self.pending[j];
                q.swept && q.onset > t0 && members.iter().any(|m| self.consistent(q, &m.det))
            })
            .collect();
        for j in redo {
            self.pending[j].swept = false;
        }
    }

    fn horizon(&self) -> UtcNs {
        self.watermark
            .map(|w| w.add_secs_f64(-self.cfg.lateness_s))
            .unwrap_or(UtcNs(i64::MIN / 2))
    }

    /// The instant up to which node `n`'s arrivals are known to be delivered.
    fn due_time(&self, n: usize) -> UtcNs {
        let h = self.horizon();
        self.nodes[n].hw.map_or(h, |hw| hw.max(h))
    }

    fn rel(t: UtcNs, tref: UtcNs) -> f64 {
        t.secs_since(tref)
    }

    /// Predicted arrival (s on the event axis) and its 1-sigma at node `n` for `phase`.
    fn predict(&self, sol: &Solution, n: usize, phase: Phase) -> (f64, f64) {
        let src = sol.position.to_array();
        let (t, g) = self.prop.travel_and_gradient(phase, src, self.nodes[n].enu);
        let gv = [g[0], g[1], g[2], 1.0];
        let c = &sol.uncertainty.covariance;
        let mut var = 0.0;
        for i in 0..4 {
            for j in 0..4 {
                var += gv[i] * c[i][j] * gv[j];
            }
        }
        let m = self.prop.model_sigma(phase, t);
        (sol.origin_s + t, (var.max(0.0) + m * m).sqrt())
    }

    fn try_absorb(&mut self, d: &Det, out: &mut Vec<Action>) -> bool {
        let mut best: Option<(usize, Phase, f64, bool)> = None; // event, phase, score, used
        for (k, ev) in self.events.iter().enumerate() {
            if ev
                .members
                .iter()
                .any(|m| m.det.node == d.node && m.det.stream == d.stream)
            {
                continue;
            }
            let phases: &[Phase] = match d.stream {
                StreamKind::Acoustic => &[Phase::Acoustic],
                StreamKind::Seismic if self.p_wave_possible(&ev.sol, ev.tref, d) => {
                    &[Phase::Seismic, Phase::Acoustic]
                }
                StreamKind::Seismic => &[Phase::Acoustic],
            };
            for &ph in phases {
                let (pred, sp) = self.predict(&ev.sol, d.node, ph);
                let r = Self::rel(d.onset, ev.tref) - pred;
                let gate = self.cfg.gate_sigmas * (d.sigma * d.sigma + sp * sp).sqrt();
                if r.abs() <= gate {
                    let score = r.abs() / gate;
                    if best.is_none_or(|b| score < b.2) {
                        // An air-coupled seismic pick duplicates the node's acoustic one.
                        let dup = d.stream == StreamKind::Seismic
                            && ph == Phase::Acoustic
                            && ev.members.iter().any(|m| {
                                m.det.node == d.node && m.phase == Phase::Acoustic && m.used
                            });
                        best = Some((k, ph, score, !dup));
                    }
                }
            }
        }
        let Some((k, phase, _, used)) = best else {
            return false;
        };
        self.events[k].members.push(Member {
            det: *d,
            phase,
            used,
            residual: 0.0,
            reason: if used {
                None
            } else {
                Some("air-coupled seismic pick; the node's acoustic pick is used".into())
            },
        });
        if used && d.stream == StreamKind::Acoustic && phase == Phase::Acoustic {
            // An air-coupled seismic pick that stood in for this node's air
            // wave is now a duplicate of it.
            for m in self.events[k].members.iter_mut().filter(|m| {
                m.det.node == d.node
                    && m.det.stream == StreamKind::Seismic
                    && m.phase == Phase::Acoustic
                    && m.used
            }) {
                m.used = false;
                m.reason =
                    Some("air-coupled seismic pick; the node's acoustic pick is used".into());
            }
            let node = &mut self.nodes[d.node];
            if node.last_direct.is_none_or(|x| d.onset >= x) {
                node.last_direct = Some(d.onset);
                node.last_direct_snr = d.snr_db;
            }
        }
        let n_used = self.events[k].members.iter().filter(|m| m.used).count();
        // Relocate on a geometric schedule (each +50 % of arrivals, at least
        // +2): revisions stay informative and the cost per arrival stays
        // bounded (a relocation is most of an event's cost). Every arrival is
        // gated against the latest solution; the final revision is always
        // located on every arrival.
        let located = self.events[k].located_with;
        if n_used >= (located + 2).max(located * 3 / 2) {
            if self.relocate(k) {
                self.events[k].revision += 1;
                let e = self.to_event(&self.events[k], EventStatus::Preliminary);
                out.push(Action::Publish(e));
            }
        } else {
            let ev = &self.events[k];
            let (pred, _) = self.predict(&ev.sol, d.node, phase);
            let r = Self::rel(d.onset, ev.tref) - pred;
            if let Some(m) = self.events[k].members.last_mut() {
                m.residual = r;
            }
        }
        true
    }

    /// Remember `d` as a possible outlier of every open event it nearly fits.
    fn note_candidate(&mut self, d: &Det) {
        let w = self.cfg.outlier_window_s;
        let mut hits = Vec::new();
        for (k, ev) in self.events.iter().enumerate() {
            let (pred, _) = self.predict(&ev.sol, d.node, Phase::Acoustic);
            if (Self::rel(d.onset, ev.tref) - pred).abs() <= w && d.stream == StreamKind::Acoustic {
                hits.push(k);
            }
        }
        for k in hits {
            self.events[k].cands.push(*d);
        }
    }

    fn arrival_of(&self, m: &Member, tref: UtcNs) -> Arrival {
        Arrival {
            position: enu(self.nodes[m.det.node].enu),
            time_s: Self::rel(m.det.onset, tref),
            sigma_s: m.det.sigma,
            phase: m.phase,
        }
    }

    fn locate_opts(&self, start: Option<[f64; 4]>) -> LocateOptions {
        LocateOptions {
            dims: DimsChoice::Auto,
            ground_u_m: None,
            outlier_sigmas: self.cfg.outlier_sigmas,
            max_outliers: usize::MAX,
            min_arrivals_3d: self.cfg.min_nodes_3d,
            altitude_lr_threshold: self.cfg.altitude_lr_threshold,
            start,
        }
    }

    /// Ground plane: the median height of all known nodes (stable across revisions).
    fn ground_u<'a>(&self, members: impl IntoIterator<Item = &'a Member>) -> f64 {
        let mut h: Vec<f64> = members
            .into_iter()
            .map(|m| self.nodes[m.det.node].enu[2])
            .collect();
        h.sort_by(f64::total_cmp);
        if h.is_empty() {
            0.0
        } else {
            h[h.len() / 2]
        }
    }

    /// Locate `members` (all but air-coupled duplicates), returning the
    /// solution and the per-member used/residual/reason.
    fn solve_members(
        &self,
        members: &mut [Member],
        tref: UtcNs,
        start: Option<[f64; 4]>,
    ) -> Option<Solution> {
        self.solve_members_as(members, tref, start, DimsChoice::Auto)
    }

    /// [`Engine::solve_members`] with the model given.
    fn solve_members_as(
        &self,
        members: &mut [Member],
        tref: UtcNs,
        start: Option<[f64; 4]>,
        dims: DimsChoice,
    ) -> Option<Solution> {
        let idx: Vec<usize> = (0..members.len())
            .filter(|&i| {
                members[i].used
                    || members[i]
                        .reason
                        .as_deref()
                        .is_none_or(|r| !r.starts_with("air-coupled"))
            })
            .collect();
        let arr: Vec<Arrival> = idx
            .iter()
            .map(|&i| self.arrival_of(&members[i], tref))
            .collect();
        let mut opts = self.locate_opts(start);
        opts.dims = dims;
        opts.ground_u_m = Some(self.ground_u(idx.iter().map(|&i| &members[i])));
        let sol = locate(&arr, &self.prop, &opts).ok()?;
        for (j, &i) in idx.iter().enumerate() {
            let m = &mut members[i];
            m.residual = sol.residuals_s[j];
            if sol.outliers.contains(&j) {
                m.used = false;
                m.reason = Some(format!(
                    "residual {:+.1} ms is {:.1} sigma from the fit of the other arrivals",
                    m.residual * 1e3,
                    (m.residual / m.det.sigma).abs()
                ));
            } else {
                m.used = true;
                m.reason = None;
            }
        }
        // Air-coupled duplicates: residual against the final fit.
        for m in members.iter_mut().filter(|m| {
            !m.used
                && m.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("air-coupled"))
        }) {
            let a = self.arrival_of(m, tref);
            m.residual = a.time_s
                - sol.origin_s
                - self
                    .prop
                    .travel_time(m.phase, sol.position.to_array(), a.position.to_array());
        }
        Some(sol)
    }

    fn relocate(&mut self, k: usize) -> bool {
        let ev = &self.events[k];
        let s = &ev.sol;
        let start = Some([s.position.e, s.position.n, s.position.u, s.origin_s]);
        let mut members = ev.members.clone();
        let tref = ev.tref;
        let Some(sol) = self.solve_members(&mut members, tref, start) else {
            return false;
        };
        let deadline = self.deadline(&sol, tref);
        let ev = &mut self.events[k];
        ev.members = members;
        ev.located_with = ev.members.iter().filter(|m| m.used).count();
        ev.sol = sol;
        ev.deadline = deadline;
        true
    }

    /// When no further arrival is physically possible at any live node.
    fn deadline(&self, sol: &Solution, tref: UtcNs) -> UtcNs {
        let mut latest = 0.0f64;
        for n in 0..self.nodes.len() {
            if !self.nodes[n].info.online {
                continue;
            }
            for ph in [Phase::Acoustic, Phase::Seismic] {
                let (t, s) = self.predict(sol, n, ph);
                latest = latest.max(t + self.cfg.gate_sigmas * s);
            }
        }
        tref.add_secs_f64(latest.max(sol.origin_s) + self.cfg.association_tolerance_s)
    }

    fn create_event(
        &mut self,
        members: Vec<Member>,
        sol: Solution,
        tref: UtcNs,
        out: &mut Vec<Action>,
    ) {
        let uids: Vec<u64> = members.iter().map(|m| m.det.uid).collect();
        self.pending.retain(|q| !uids.contains(&q.uid));
        // Outliers of other events it took (see `seed`) leave them.
        for ev in &mut self.events {
            ev.members.retain(|m| m.used || !uids.contains(&m.det.uid));
        }
        let deadline = self.deadline(&sol, tref);
        let id = format!("ev-{}-{}", tref.0.div_euclid(1_000_000), self.next_event);
        self.next_event += 1;
        let located_with = members.iter().filter(|m| m.used).count();
        self.events.push(OpenEvent {
            id,
            revision: 0,
            tref,
            members,
            cands: Vec::new(),
            sol,
            located_with,
            deadline,
        });
        let k = self.events.len() - 1;
        // Pending picks that this event explains join it now.
        if self.join_pending(k) {
            self.relocate(k);
        }
        self.note_direct_arrivals(k);
        for q in self.pending.clone() {
            let (pred, _) = self.predict(&self.events[k].sol, q.node, Phase::Acoustic);
            if q.stream == StreamKind::Acoustic
                && (Self::rel(q.onset, tref) - pred).abs() <= self.cfg.outlier_window_s
            {
                self.events[k].cands.push(q);
            }
        }
        self.events[k].revision = 1;
        let e = self.to_event(&self.events[k], EventStatus::Preliminary);
        out.push(Action::Publish(e));
    }

    /// Move the pending picks that event `k` explains into it (seismic picks
    /// as its ground wave or as a duplicate of the air wave); whether any did.
    fn join_pending(&mut self, k: usize) -> bool {
        let pend = std::mem::take(&mut self.pending);
        let mut keep = Vec::with_capacity(pend.len());
        let mut joined = false;
        for q in pend {
            if self.fits_event(k, &q) {
                let phase = if q.stream == StreamKind::Seismic {
                    self.seismic_phase(k, &q)
                } else {
                    Phase::Acoustic
                };
                let dup = q.stream == StreamKind::Seismic
                    && phase == Phase::Acoustic
                    && self.events[k]
                        .members
                        .iter()
                        .any(|m| m.det.node == q.node && m.phase == Phase::Acoustic);
                self.events[k].members.push(Member {
                    det: q,
                    phase,
                    used: !dup,
                    residual: 0.0,
                    reason: dup.then(|| {
                        "air-coupled seismic pick; the node's acoustic pick is used".to_string()
                    }),
                });
                joined = true;
            } else {
                keep.push(q);
            }
        }
        self.pending = keep;
        joined
    }

    /// Record event `k`'s used acoustic arrivals as their nodes' direct
    /// arrivals and mark the pending picks that follow them within
    /// `echo_window_s` as probable echoes (they no longer seed sources).
    fn note_direct_arrivals(&mut self, k: usize) {
        let w = self.cfg.echo_window_s;
        let direct: Vec<(usize, UtcNs, f64)> = self.events[k]
            .members
            .iter()
            .filter(|m| m.used && m.det.stream == StreamKind::Acoustic)
            .map(|m| (m.det.node, m.det.onset, m.det.snr_db))
            .collect();
        for &(n, t, snr) in &direct {
            let node = &mut self.nodes[n];
            if node.last_direct.is_none_or(|x| t >= x) {
                node.last_direct = Some(t);
                node.last_direct_snr = snr;
            }
        }
        for q in &mut self.pending {
            if q.stream != StreamKind::Acoustic {
                continue;
            }
            if let Some(&(_, _, snr)) = direct.iter().find(|&&(n, t, _)| {
                let dt = q.onset.secs_since(t);
                n == q.node && dt > 0.0 && dt <= w
            }) {
                q.echo = true;
                q.quiet_echo |= q.snr_db < snr;
            }
        }
    }

    fn seismic_phase(&self, k: usize, q: &Det) -> Phase {
        let ev = &self.events[k];
        let t = Self::rel(q.onset, ev.tref);
        let (ps, _) = self.predict(&ev.sol, q.node, Phase::Seismic);
        let (pa, _) = self.predict(&ev.sol, q.node, Phase::Acoustic);
        if self.p_wave_possible(&ev.sol, ev.tref, q) && (t - ps).abs() <= (t - pa).abs() {
            Phase::Seismic
        } else {
            Phase::Acoustic
        }
    }

    /// Whether seismic pick `q` can be the direct ground wave (P) of a source
    /// at `sol`: only a source on the ground launches one, and it must precede
    /// the node's air wave by more than the acoustic gate. A seismic pick at
    /// the acoustic time is the air-coupled ground motion (the air wave
    /// shaking the ground under the sensor), and so is one within the gate of
    /// an acoustic pick of the same node; with the seismic speed's wide
    /// uncertainty (± 15 % of the travel time) such picks would otherwise fit
    /// any nearby source as a "P wave".
    fn p_wave_possible(&self, sol: &Solution, tref: UtcNs, q: &Det) -> bool {
        if sol.dims != Dims::Ground {
            return false;
        }
        let (pa, sa) = self.predict(sol, q.node, Phase::Acoustic);
        let gate = self.cfg.gate_sigmas * (q.sigma * q.sigma + sa * sa).sqrt()
            + self.cfg.association_tolerance_s;
        if Self::rel(q.onset, tref) >= pa - gate {
            return false;
        }
        let near_acoustic = |d: &Det| {
            d.node == q.node
                && d.stream == StreamKind::Acoustic
                && d.onset.secs_since(q.onset).abs()
                    <= self.cfg.gate_sigmas * (q.sigma * q.sigma + d.sigma * d.sigma).sqrt()
        };
        !(self.pending.iter().any(near_acoustic)
            || self
                .events
                .iter()
                .any(|e| e.members.iter().any(|m| near_acoustic(&m.det))))
    }

    fn fits_event(&self, k: usize, q: &Det) -> bool {
        let ev = &self.events[k];
        if ev
            .members
            .iter()
            .any(|m| m.det.node == q.node && m.det.stream == q.stream)
        {
            return false;
        }
        let phases: &[Phase] = match q.stream {
            StreamKind::Acoustic => &[Phase::Acoustic],
            StreamKind::Seismic if self.p_wave_possible(&ev.sol, ev.tref, q) => {
                &[Phase::Seismic, Phase::Acoustic]
            }
            StreamKind::Seismic => &[Phase::Acoustic],
        };
        phases.iter().any(|&ph| {
            let (pred, sp) = self.predict(&ev.sol, q.node, ph);
            let r = Self::rel(q.onset, ev.tref) - pred;
            r.abs() <= self.cfg.gate_sigmas * (q.sigma * q.sigma + sp * sp).sqrt()
        })
    }

    fn finalise(&mut self, mut ev: OpenEvent, out: &mut Vec<Action>) {
        // Always locate the final set of arrivals.
        if ev.members.iter().filter(|m| m.used).count() != ev.located_with {
            let s = &ev.sol;
            let start = Some([s.position.e, s.position.n, s.position.u, s.origin_s]);
            let mut members = ev.members.clone();
            if let Some(sol) = self.solve_members(&mut members, ev.tref, start) {
                ev.members = members;
                ev.sol = sol;
            }
        }
        // Unassociated picks near the prediction: echoes and inconsistent nodes.
        let claimed = |uid: u64, evs: &[OpenEvent]| {
            evs.iter()
                .any(|e| e.members.iter().any(|m| m.det.uid == uid))
        };
        let mut extra: Vec<(Det, f64, String, bool)> = Vec::new(); // det, residual, reason, echo
        for q in &ev.cands {
            if claimed(q.uid, &self.events) || ev.members.iter().any(|m| m.det.uid == q.uid) {
                continue;
            }
            let (pred, _) = self.predict(&ev.sol, q.node, Phase::Acoustic);
            let r = Self::rel(q.onset, ev.tref) - pred;
            if r.abs() > self.cfg.outlier_window_s {
                continue;
            }
            let direct = ev
                .members
                .iter()
                .find(|m| m.det.node == q.node && m.det.stream == StreamKind::Acoustic && m.used);
            let (reason, echo) = match direct {
                Some(m) if q.onset > m.det.onset => (
                    format!(
                        "later arrival at a node already associated (+{:.1} ms after it): echo or re-trigger",
                        q.onset.secs_since(m.det.onset) * 1e3
                    ),
                    true,
                ),
                _ => (
                    format!(
                        "residual {:+.1} ms is {:.0} sigma: inconsistent with the location (clock error or false pick)",
                        r * 1e3,
                        (r / q.sigma).abs()
                    ),
                    false,
                ),
            };
            match extra
                .iter_mut()
                .find(|e| e.0.node == q.node && !e.3 && !echo)
            {
                Some(e) => {
                    if r.abs() < e.1.abs() {
                        *e = (*q, r, reason, echo);
                    }
                }
                None => extra.push((*q, r, reason, echo)),
            }
        }
        // Residual history per live node, for clock flags.
        for n in 0..self.nodes.len() {
            if !self.nodes[n].info.online {
                continue;
            }
            let used = ev.members.iter().find(|m| {
                m.det.node == n
                    && m.phase == Phase::Acoustic
                    && m.det.stream == StreamKind::Acoustic
            });
            let r = match used {
                Some(m) => Some(m.residual),
                None => extra.iter().find(|e| e.0.node == n && !e.3).map(|e| e.1),
            };
            let node = &mut self.nodes[n];
            if r.is_none() && ev.members.iter().all(|m| m.det.node != n) {
                node.silent_misses += 1;
            }
            node.history.push_back(r);
            while node.history.len() > HISTORY {
                node.history.pop_front();
            }
            if let Some(reason) = clock_verdict(
                &node.history,
                self.cfg.clock_flag_threshold_s,
                self.cfg.clock_flag_min_events,
            ) {
                if !node.flagged {
                    node.flagged = true;
                    out.push(Action::FlagNode {
                        node_id: node.info.id.clone(),
                        reason,
                    });
                }
            }
        }
        let mut e = self.to_event(&ev, EventStatus::Final);
        e.revision = ev.revision + 1;
        for (q, r, reason, _) in extra {
            e.outliers.push(ArrivalRef {
                node_id: self.nodes[q.node].info.id.clone(),
                seq: q.seq,
                stream: q.stream,
                onset_utc: q.onset,
                residual_s: r,
                reason: Some(reason),
            });
        }
        out.push(Action::Publish(e));
    }

    fn to_event(&self, ev: &OpenEvent, status: EventStatus) -> Event {
        let frame = self
            .frame
            .unwrap_or_else(|| EnuFrame::new(Geodetic::default()));
        let g = frame.to_geodetic(ev.sol.position);
        let used: Vec<&Member> = ev.members.iter().filter(|m| m.used).collect();
        let mut probs = [0.0; 5];
        for m in &used {
            for (p, q) in probs.iter_mut().zip(m.det.probs) {
                *p += q / used.len().max(1) as f64;
            }
        }
        // A source well above the ground is neither a firearm nor a launch:
        // an airburst (an intercept) is an explosion, whatever its pulse
        // looks like after kilometres of air and a ground reflection (the
        // nodes' classifiers call most airbursts gunshots).
        let airburst = ev.sol.dims == Dims::Free && {
            let height = ev.sol.position.u - self.ground_u(used.iter().copied());
            let sigma_u = ev.sol.uncertainty.covariance[2][2].max(0.0).sqrt();
            height > AIRBURST_MIN_HEIGHT_M.max(3.0 * sigma_u)
        };
        if airburst {
            probs[kind_index(SourceKind::Gunshot)] = 0.0;
            probs[kind_index(SourceKind::Launch)] = 0.0;
            let sum: f64 = probs.iter().sum();
            if sum > 0.0 {
                probs.iter_mut().for_each(|p| *p /= sum);
            } else {
                probs[kind_index(SourceKind::Explosion)] = 1.0;
            }
        }
        let (ki, conf) =
            probs.iter().enumerate().fold(
                (4, f64::MIN),
                |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc },
            );
        let kind = SourceKind::ALL[ki];
        // An exactly determined fit (zero residual degrees of freedom) has
        // nothing to check it: it is published with half the confidence.
        let conf = if ev.sol.dof == 0 { 0.5 * conf } else { conf };
        let aref = |m: &Member| ArrivalRef {
            node_id: self.nodes[m.det.node].info.id.clone(),
            seq: m.det.seq,
            stream: m.det.stream,
            onset_utc: m.det.onset,
            residual_s: m.residual,
            reason: m.reason.clone(),
        };
        let detections: Vec<ArrivalRef> = ev.members.iter().filter(|m| m.used).map(aref).collect();
        let outliers: Vec<ArrivalRef> = ev.members.iter().filter(|m| !m.used).map(aref).collect();
        // Yield once, for the final revision (the inversion is a root search per station).
        let yield_estimate = if kind == SourceKind::Explosion && status == EventStatus::Final {
            let burst = if ev.sol.dims == Dims::Ground {
                Burst::Surface
            } else {
                Burst::FreeAir
            };
            // A saturated sensor's peak is only a lower bound (a MEMS
            // microphone clips near 100 Pa; a 250 kg blast 2 km away brings
            // ~300 Pa): yield from unsaturated sensors only, none if all clipped.
            let obs: Vec<(f64, f64)> = used
                .iter()
                .filter(|m| {
                    m.det.stream == StreamKind::Acoustic && m.det.peak > 0.0 && !m.det.clipped
                })
                .map(|m| {
                    (
                        m.det.peak,
                        dist(ev.sol.position.to_array(), self.nodes[m.det.node].enu),
                    )
                })
                .collect();
            estimate_yield_multi(&obs, burst, self.cfg.yield_pressure_rel_sigma)
        } else {
            None
        };
        Event {
            schema: EVENT_SCHEMA.to_string(),
            event_id: ev.id.clone(),
            revision: ev.revision,
            origin_utc: ev.tref.add_secs_f64(ev.sol.origin_s),
            lat: g.lat,
            lon: g.lon,
            alt_m: g.alt_m,
            uncertainty: ev.sol.uncertainty.to_uncertainty(),
            kind,
            confidence: conf.clamp(0.0, 1.0),
            detections,
            outliers,
            sound_speed_mps: self.prop.sound_speed_mps,
            status,
            dims: ev.sol.dims.as_u8(),
            crlb: Some(ev.sol.crlb.to_crlb()),
            yield_estimate,
            site: ev
                .members
                .iter()
                .find_map(|m| m.det.site)
                .and_then(|i| self.site_names.get(i as usize).cloned()),
        }
    }
}

// Transient, returned once per evaluated hypothesis.
#[allow(clippy::large_enum_variant)]
enum SeedVerdict {
    Accept(Vec<Member>, Solution, UtcNs),
    /// Not confirmed yet, and other live nodes' arrivals are not yet due:
    /// the sweep judges it once they are.
    Wait,
    Reject,
}

/// A node is flagged when its last `min_events` residuals (events where it
/// had one) all exceed `threshold` with one sign and scatter (max − min) by
/// less than a quarter of their median: a constant offset, i.e. a clock error,
/// not random mis-picks or echoes.
fn clock_verdict(
    history: &VecDeque<Option<f64>>,
    threshold: f64,
    min_events: usize,
) -> Option<String> {
    let recent: Vec<f64> = history
        .iter()
        .rev()
        .flatten()
        .take(min_events)
        .copied()
        .collect();
    if recent.len() < min_events {
        return None;
    }
    let mut s = recent.clone();
    s.sort_by(f64::total_cmp);
    let med = s[s.len() / 2];
    let spread = s[s.len() - 1] - s[0];
    let same_sign = recent.iter().all(|r| r.signum() == med.signum());
    if same_sign && med.abs() >= threshold && spread <= 0.25 * med.abs() {
        Some(format!(
            "arrivals {} by {:.1} ms in each of the last {} events (spread {:.1} ms): clock error?",
            if med > 0.0 { "late" } else { "early" },
            med.abs() * 1e3,
            recent.len(),
            spread * 1e3
        ))
    } else {
        None
    }
}

/// P(at least `k` successes) among independent trials with probabilities `ps`.
fn poisson_binomial_tail(ps: &[f64], k: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    // dist[j] = P(exactly j successes so far), j < k; the mass reaching k is absorbed.
    let mut dist = vec![0.0; k];
    dist[0] = 1.0;
    let mut tail = 0.0;
    for &p in ps {
        let p = p.clamp(0.0, 1.0);
        tail += dist[k - 1] * p;
        for j in (1..k).rev() {
            dist[j] = dist[j] * (1.0 - p) + dist[j - 1] * p;
        }
        dist[0] *= 1.0 - p;
    }
    tail
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn enu(a: [f64; 3]) -> blastnet_contract::Enu {
    blastnet_contract::Enu::new(a[0], a[1], a[2])
}
