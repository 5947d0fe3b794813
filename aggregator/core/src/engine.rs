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

/// A challenged event's local refit without one of its picks (`skip`; none:
/// with all of them), as screened before it is judged in full.
struct Refit {
    skip: Option<u64>,
    start: [f64; 4],
    tref: UtcNs,
    sites: usize,
    chi2: f64,
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

    /// Before an event is finalised, once all its arrivals are in: if picks
    /// no event has claimed lie near its predictions at sites it does not
    /// explain, the search's local fit is run again from its solution over
    /// its own picks and those. An event confirmed online on a wrong pick
    /// (in a salvo, another source's or a distractor's arrival at one node
    /// standing in for the direct one) can settle in a wrong basin that
    /// rejects the later arrivals of the far nodes; their picks pull the
    /// refit right. The refit replaces the event only if it passes the same
    /// tests as a new source and explains more sites (or as many, with a χ²
    /// lower by more than one); the picks it drops go back to the pool.
    /// Returns whether the event changed.
    fn challenge(&mut self, k: usize, out: &mut Vec<Action>) -> bool {
        // Judged on a fit of every arrival it has (as the final revision is).
        let ev = &self.events[k];
        if ev.members.iter().filter(|m| m.used).count() != ev.located_with {
            self.relocate(k);
        }
        let ev = &self.events[k];
        let w = self.cfg.outlier_window_s;
        // Sites explained by acoustic arrivals (the refit uses only those).
        let sites_of = |members: &[Member]| {
            let mut v: Vec<usize> = members
                .iter()
                .filter(|m| m.used && m.det.stream == StreamKind::Acoustic)
                .map(|m| self.nodes[m.det.node].site)
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let explained = sites_of(&ev.members);
        let free: Vec<usize> = (0..self.pending.len())
            .filter(|&i| {
                let q = &self.pending[i];
                q.stream == StreamKind::Acoustic
                    && !self.nodes[q.node].flagged
                    && !ev.members.iter().any(|m| m.det.uid == q.uid)
                    && {
                        let (pred, _) = self.predict(&ev.sol, q.node, Phase::Acoustic);
                        (Self::rel(q.onset, ev.tref) - pred).abs() <= w
                    }
            })
            .collect();
        // Picks at sites the event does not explain: free ones, and its own
        // rejected outliers.
        let unexplained = |n: usize| !explained.contains(&self.nodes[n].site);
        let outlier_sites = ev
            .members
            .iter()
            .any(|m| !m.used && m.det.stream == StreamKind::Acoustic && unexplained(m.det.node));
        if !outlier_sites && !free.iter().any(|&i| unexplained(self.pending[i].node)) {
            return false;
        }
        let mut dets: Vec<Det> = ev
            .members
            .iter()
            .filter(|m| m.det.stream == StreamKind::Acoustic)
            .map(|m| m.det)
            .collect();
        dets.extend(free.iter().map(|&i| self.pending[i]));
        // The local fit from the event's solution, and again without each of
        // its picks in turn (the wrong pick fits the wrong basin well, so
        // only its absence lets the fit leave it). The local fits are
        // compared by the sites they explain (then χ²); only the best few
        // are judged in full (swaps, negative evidence, chance), as a new
        // source's would be.
        let s = &ev.sol;
        let h = [s.position.e, s.position.n, s.position.u, s.origin_s];
        let leave_out = std::iter::once(None).chain(
            ev.members
                .iter()
                .filter(|m| m.used && m.det.stream == StreamKind::Acoustic)
                .map(|m| Some(m.det.uid)),
        );
        let without = |skip: Option<u64>| -> Vec<Det> {
            dets.iter()
                .filter(|d| Some(d.uid) != skip)
                .cloned()
                .collect()
        };
        let mut screened: Vec<Refit> = Vec::new();
        for skip in leave_out {
            if let Some((m, sol, tref)) = self.gather_fit(&without(skip), h, ev.tref) {
                let sites = sites_of(&m).len();
                // Fewer sites than the event explains cannot replace it.
                if sites >= explained.len() {
                    screened.push(Refit {
                        skip,
                        start: [sol.position.e, sol.position.n, sol.position.u, sol.origin_s],
                        tref,
                        sites,
                        chi2: sol.chi2,
                    });
                }
            }
        }
        screened.sort_by(|a, b| b.sites.cmp(&a.sites).then(a.chi2.total_cmp(&b.chi2)));
        let mut best = None;
        for r in screened.into_iter().take(MAX_CHALLENGES_JUDGED) {
            if let SeedVerdict::Accept(m, sol, t) =
                self.evaluate_seed(&without(r.skip), r.start, r.tref, true)
            {
                let score = (sites_of(&m).len(), sol.chi2);
                best = Some(((m, sol, t), score));
                break;
            }
        }
        let Some(((members, sol, tref), (n_sites, _))) = best else {
            return false;
        };
        // As many sites: only a clearly better fit of the same number of
        // acoustic arrivals replaces it (χ² lower by more than one).
        if n_sites < explained.len() {
            return false;
        }
        if n_sites == explained.len() {
            let mut own: Vec<Member> = ev
                .members
                .iter()
                .filter(|m| m.used && m.det.stream == StreamKind::Acoustic)
                .cloned()
                .collect();
            let start = Some(h);
            let own_chi2 = self
                .solve_members(&mut own, ev.tref, start)
                .map_or(f64::INFINITY, |s| s.chi2);
            if sol.chi2 + 1.0 >= own_chi2 {
                return false;
            }
        }
        // Adopt: the new members leave the pool, the old ones not kept return
        // to it (free to seed or join another source).
        let old = std::mem::take(&mut self.events[k].members);
        let uids: Vec<u64> = members.iter().map(|m| m.det.uid).collect();
        self.pending.retain(|q| !uids.contains(&q.uid));
        let deadline = self.deadline(&sol, tref);
        let ev = &mut self.events[k];
        ev.located_with = members.iter().filter(|m| m.used).count();
        ev.members = members;
        ev.sol = sol;
        ev.tref = tref;
        ev.deadline = deadline;
        ev.revision += 1;
        // The old picks it did not keep return to the pool; those the
        // relocated event explains (its seismic picks) rejoin at once.
        for m in old.into_iter().filter(|m| !uids.contains(&m.det.uid)) {
            let mut d = m.det;
            d.swept = false;
            d.echo = false;
            d.quiet_echo = false;
            self.pending.push(d);
        }
        self.join_pending(k);
        self.relocate(k);
        self.note_direct_arrivals(k);
        let e = self.to_event(&self.events[k], EventStatus::Preliminary);
        out.push(Action::Publish(e));
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

    fn consistent(&self, a: &Det, b: &Det) -> bool {
        let dt = a.onset.secs_since(b.onset).abs();
        let s = (a.sigma * a.sigma + b.sigma * b.sigma).sqrt();
        dt <= self.pair_window[a.node * self.nodes.len() + b.node] + self.cfg.gate_sigmas * s
    }

    /// Look for a source that explains pending[p] (the pivot) and other
    /// pending picks: hypotheses from every consistent triple (ground plane)
    /// and quadruple (free height) of the picks nearest in time, each scored
    /// by the sites it explains among all consistent picks (a far node's
    /// arrival may come seconds after the pivot), the best refined and
    /// judged. Online (`sweep` false) only a confirmed source is accepted;
    /// in the sweep everything is due and the verdict is final. Returns the
    /// accepted source, if any (the caller creates the event).
    // The loops index a consistency matrix by pairs/triples of candidates.
    #[allow(clippy::needless_range_loop)]
    fn search(&mut self, p: usize, sweep: bool) -> Option<Found> {
        let mut sc = std::mem::take(&mut self.scratch);
        let found = self.seed(p, sweep, &mut sc);
        self.scratch = sc;
        found
    }

    fn seed(&self, p: usize, sweep: bool, sc: &mut SearchScratch) -> Option<Found> {
        let pivot = self.pending[p];
        if pivot.stream != StreamKind::Acoustic || self.nodes[pivot.node].flagged {
            return None;
        }
        let tref = pivot.onset;
        // Candidates: consistent acoustic picks from other nodes, nearest in
        // time first: pending picks, and the picks open events rejected as
        // outliers (in a salvo, another source's arrival is often an outlier
        // of its neighbour in time; it must stay free to support its own).
        let lent = &mut sc.lent;
        lent.clear();
        lent.extend(
            self.events
                .iter()
                .flat_map(|ev| ev.members.iter())
                .filter(|m| !m.used && m.det.stream == StreamKind::Acoustic)
                .map(|m| m.det),
        );
        let np = self.pending.len();
        let get = |i: usize| -> &Det {
            if i < np {
                &self.pending[i]
            } else {
                &lent[i - np]
            }
        };
        // The pivot first, then the candidates.
        let cand = &mut sc.cand;
        cand.clear();
        cand.push(p);
        cand.extend((0..np + lent.len()).filter(|&i| {
            let q = get(i);
            i != p
                && q.stream == StreamKind::Acoustic
                && q.node != pivot.node
                && !self.nodes[q.node].flagged
                && self.consistent(q, &pivot)
        }));
        // The sweep draws hypotheses first from the picks of the nodes
        // nearest the pivot's: for a source outside the array the other
        // nodes' arrivals come seconds after the pivot, behind dozens of
        // picks of other sources, but a neighbour's within d/c of it.
        let near: Vec<usize> = if sweep {
            let here = self.nodes[pivot.node].enu;
            let mut by_d: Vec<(f64, usize)> = (0..self.nodes.len())
                .filter(|&n| n != pivot.node && self.nodes[n].site != self.nodes[pivot.node].site)
                .map(|n| (dist(here, self.nodes[n].enu), n))
                .collect();
            by_d.sort_by(|a, b| a.0.total_cmp(&b.0));
            // The nearest sites (a second sensor at a site adds no geometry).
            let mut seen: Vec<usize> = Vec::new();
            by_d.retain(|&(_, n)| {
                let s = self.nodes[n].site;
                !seen.contains(&s) && {
                    seen.push(s);
                    true
                }
            });
            by_d.iter().take(NEAR_NODES).map(|x| x.1).collect()
        } else {
            Vec::new()
        };
        // Nearest in time first (ties in pool order).
        cand[1..].sort_unstable_by_key(|&i| ((get(i).onset.0 - tref.0).unsigned_abs(), i));
        let set = &cand[..];
        let nodes_in = &mut sc.nodes_in;
        nodes_in.clear();
        nodes_in.extend(set.iter().map(|&i| get(i).node));
        nodes_in.sort_unstable();
        nodes_in.dedup();
        if nodes_in.len() < self.cfg.min_nodes_ground {
            return None;
        }
        let confirm_2d = self
            .cfg
            .min_nodes_preliminary
            .max(3 + self.cfg.confirm_extra_arrivals);
        if !sweep {
            // Online only a confirmed source is accepted: too few sites
            // have reported yet for any hypothesis to be.
            let mut sites: Vec<usize> = nodes_in.iter().map(|&n| self.nodes[n].site).collect();
            sites.sort_unstable();
            sites.dedup();
            if sites.len() < confirm_2d {
                return None;
            }
        }
        let m = set.len();
        let dets = &mut sc.dets;
        dets.clear();
        dets.extend(set.iter().map(|&i| *get(i)));
        let dets = &dets[..];
        let arr = &mut sc.arr;
        arr.clear();
        arr.extend(dets.iter().map(|d| Arrival {
            position: enu(self.nodes[d.node].enu),
            time_s: d.onset.secs_since(tref),
            sigma_s: d.sigma,
            phase: Phase::Acoustic,
        }));
        let arr = &arr[..];
        // Hypotheses are drawn from the candidates nearest in time.
        // Triples: the nearest in time (and, in the sweep, the neighbours'
        // picks too); quadruples: the nearest in time.
        let mg = m.min(self.cfg.max_seed_candidates.max(2));
        let mq = m.min(QUAD_CANDIDATES);
        let tri = &mut sc.tri;
        tri.clear();
        tri.extend(1..mg);
        tri.extend((mg..m).filter(|&i| near.contains(&dets[i].node)));
        let quad = &mut sc.quad;
        quad.clear();
        quad.extend(1..mq);
        quad.extend(
            (mq..m)
                .filter(|&i| near.contains(&dets[i].node))
                .take(QUAD_CANDIDATES),
        );
        // Two picks of one hypothesis: distinct sites (sensors side by side
        // make a degenerate triple or quadruple) and consistent in time.
        let cons = |i: usize, j: usize| {
            self.nodes[dets[i].node].site != self.nodes[dets[j].node].site
                && self.consistent(&dets[i], &dets[j])
        };
        let ground_u = self.ground_all;
        let c = self.prop.sound_speed_mps;
        // The closed form assumes one speed. Wind makes the effective speed
        // depend on the direction: for a source outside the array (arrival
        // differences near the baseline's d/c) a few m/s of wind leave the
        // still-air hyperbolas without an intersection. Then the extremes of
        // the effective speed are tried; refinement uses the full model.
        let wind = self.prop.wind_mps[0].hypot(self.prop.wind_mps[1]);
        let guesses = |idx: &[usize]| -> [Guesses; 3] {
            let v = closed_form_of(arr, idx, c, ground_u);
            if v.is_empty() && wind > 0.0 {
                [
                    v,
                    closed_form_of(arr, idx, c - wind, ground_u),
                    closed_form_of(arr, idx, c + wind, ground_u),
                ]
            } else {
                [v, Guesses::default(), Guesses::default()]
            }
        };
        // Hypotheses with their consensus (support count, χ²): ground-plane
        // triples and free-height quadruples (an airburst's arrivals are the
        // most compact in time, so quadruples come from the nearest few).
        let hyps = &mut sc.hyps;
        hyps.clear();
        self.support_table(arr, dets, &mut sc.tab, &mut sc.order);
        let tab = &sc.tab;
        let full = nodes_in.len();
        // Candidates consistent with the pivot (computed once per search).
        let with_pivot = &mut sc.with_pivot;
        with_pivot.clear();
        with_pivot.extend((0..m).map(|i| i > 0 && cons(0, i)));
        tri.retain(|&i| with_pivot[i]);
        quad.retain(|&i| with_pivot[i]);
        'pairs: for (a, &i) in tri.iter().enumerate() {
            for &j in &tri[a + 1..] {
                if !cons(i, j) {
                    continue;
                }
                let mut idx = [0, i, j];
                idx.sort_unstable();
                for h in guesses(&idx).iter().flat_map(Guesses::iter) {
                    let (s, weak, x2) = self.support(tab, h);
                    hyps.push((h, s, weak, x2));
                    // Every site explained, by strong picks: none can do
                    // better (one with weak picks may be bettered).
                    if s == full && weak == 0 {
                        break 'pairs;
                    }
                }
            }
        }
        // Online, free height is tried only when no ground hypothesis could be
        // confirmed (many more quadruples than triples, so more chance fits);
        // the sweep tries both (an airburst's ground fits are partial).
        let best2 = hyps.iter().map(|h| h.1).max().unwrap_or(0);
        // The sweep tries free height only where the ground triples found
        // something coherent beyond a triple (an airburst's ground fits
        // explain several sites; a lone false trigger's do not).
        if !(sweep || best2 < confirm_2d) || (sweep && best2 < SWEEP_QUAD_MIN_SUPPORT) {
            quad.clear();
        }
        // Pairwise consistency of the quadruple candidates (each pair is
        // looked at by many quadruples).
        let nq = quad.len();
        let qc = &mut sc.qc;
        qc.clear();
        qc.resize(nq * nq, false);
        for a in 0..nq {
            for b in a + 1..nq {
                qc[a * nq + b] = cons(quad[a], quad[b]);
            }
        }
        'quads: for a in 0..nq {
            for b in a + 1..nq {
                if !qc[a * nq + b] {
                    continue;
                }
                for l in b + 1..nq {
                    if !qc[a * nq + l] || !qc[b * nq + l] {
                        continue;
                    }
                    let mut idx = [0, quad[a], quad[b], quad[l]];
                    idx.sort_unstable();
                    // Both of a quadruple's points: the free-height one, and
                    // its least-squares ground point (with model errors of
                    // several ms, as in cities, four arrivals place a ground
                    // source better than any exact triple: measured on
                    // ShotSpotter, 3 points more shots within 15 m).
                    // The ground point is a least-squares fit: one that
                    // misses one of its own four arrivals (beyond the gate
                    // the support counts in) is no better than the triples
                    // already tried, and is not scored. (The free-height
                    // point fits all four by construction; under wind the
                    // still-air closed form need not, and every point is
                    // scored.)
                    let fits_own = |h: &[f64; 4]| {
                        wind > 0.0
                            || (h[2] - ground_u).abs() > 1e-6
                            || idx.iter().all(|&i| {
                                let t = self.prop.travel_time(
                                    Phase::Acoustic,
                                    [h[0], h[1], h[2]],
                                    self.nodes[dets[i].node].enu,
                                );
                                (arr[i].time_s - h[3] - t).abs()
                                    <= self.cfg.gate_sigmas * arr[i].sigma_s
                                        + self.cfg.association_tolerance_s
                            })
                    };
                    for h in guesses(&idx).iter().flat_map(Guesses::iter) {
                        if !fits_own(&h) {
                            continue;
                        }
                        let (s, weak, x2) = self.support(tab, h);
                        hyps.push((h, s, weak, x2));
                        if s == full && weak == 0 {
                            break 'quads;
                        }
                    }
                }
            }
        }
        // A hypothesis that explains fewer than half the sites the detection
        // fraction asks for is hopeless even if refinement doubles its
        // support: not refined (in a large network most false triggers'
        // hypotheses end here, before any least-squares fit). Online only a
        // confirmable one is.
        let live = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].expected_at(tref))
            .count();
        let hopeless = |s: usize| 2.0 * (s as f64) < self.cfg.min_detect_fraction * live as f64;
        hyps.retain(|&(_, s, _, _)| {
            s >= self.cfg.min_nodes_ground && (sweep || s >= confirm_2d) && !hopeless(s)
        });
        // Best supported first, then the fewest sites explained only by
        // weak picks (subordinate picks, and probable echoes quieter than
        // the direct arrival they follow: with urban model errors of
        // ~10 ms, a hypothesis mixing a shot's direct arrivals with echoes
        // and another shot's arrivals often explains as many sites as the
        // direct arrivals alone), then the best fit (ties in the order
        // found).
        hyps.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.3.total_cmp(&b.3)));
        let mut tried: Vec<[f64; 4]> = Vec::new();
        for &(h, _, _, _) in hyps.iter() {
            if tried.len() >= MAX_REFINED_HYPOTHESES {
                break;
            }
            if tried.iter().any(|t| {
                (t[0] - h[0]).hypot(t[1] - h[1]) < 50.0
                    && (t[2] - h[2]).abs() < 100.0
                    && (t[3] - h[3]).abs() < 0.05
            }) {
                continue;
            }
            tried.push(h);
            if let SeedVerdict::Accept(members, sol, tref_ev) =
                self.evaluate_seed(dets, h, tref, sweep)
            {
                return Some((members, sol, tref_ev));
            }
        }
        None
    }

    /// Fill `tab` with the support table of a search's candidates.
    fn support_table(
        &self,
        arr: &[Arrival],
        dets: &[Det],
        tab: &mut SupportTable,
        order: &mut Vec<usize>,
    ) {
        order.clear();
        order.extend(0..dets.len());
        order.sort_by_key(|&i| dets[i].node);
        let tol = self.cfg.association_tolerance_s;
        tab.pos.clear();
        tab.range.clear();
        tab.t.clear();
        tab.inv_sigma.clear();
        tab.gate.clear();
        tab.weak.clear();
        for (k, &i) in order.iter().enumerate() {
            let n = dets[i].node;
            if k == 0 || dets[order[k - 1]].node != n {
                tab.pos.push(self.nodes[n].enu);
                tab.range.push(k..k);
            }
            if let Some(r) = tab.range.last_mut() {
                r.end = k + 1;
            }
            tab.t.push(arr[i].time_s);
            tab.inv_sigma.push(1.0 / arr[i].sigma_s);
            tab.gate.push(self.cfg.gate_sigmas * arr[i].sigma_s + tol);
            tab.weak.push(dets[i].weak());
        }
    }

    /// Nodes explained by hypothesis `h` (best pick per node within the seed
    /// gate, strong picks before weak ones, see `Det::weak`), how many of
    /// them only by weak picks, and their χ².
    fn support(&self, tab: &SupportTable, h: [f64; 4]) -> (usize, usize, f64) {
        let src = [h[0], h[1], h[2]];
        let (mut count, mut weak, mut chi2) = (0, 0, 0.0);
        let (t, gate, inv, wk) = (&tab.t[..], &tab.gate[..], &tab.inv_sigma[..], &tab.weak[..]);
        for (p, r) in tab.pos.iter().zip(&tab.range) {
            let at = h[3] + self.prop.travel_time(Phase::Acoustic, src, *p);
            // The best fit among strong picks, else among weak ones.
            let (mut strong, mut weakest) = (f64::INFINITY, f64::INFINITY);
            let end = r
                .end
                .min(t.len())
                .min(gate.len())
                .min(inv.len())
                .min(wk.len());
            for i in r.start..end {
                let res = t[i] - at;
                if res.abs() <= gate[i] {
                    let z2 = (res * inv[i]).powi(2);
                    if wk[i] {
                        weakest = weakest.min(z2);
                    } else {
                        strong = strong.min(z2);
                    }
                }
            }
            if strong.is_finite() {
                count += 1;
                chi2 += strong;
            } else if weakest.is_finite() {
                count += 1;
                weak += 1;
                chi2 += weakest;
            }
        }
        (count, weak, chi2)
    }

    /// Local optimisation of hypothesis `h` (LO-RANSAC): gather the picks it
    /// explains (the earliest per node), fit, gather again around the fit,
    /// refit; then drop the worst pick while χ² is too large.
    fn gather_fit(
        &self,
        dets: &[Det],
        h: [f64; 4],
        tref: UtcNs,
    ) -> Option<(Vec<Member>, Solution, UtcNs)> {
        let mut hyp = h;
        let mut htref = tref;
        let mut sol_opt: Option<(Vec<Member>, Solution, UtcNs)> = None;
        // Two rounds: gate on the hypothesis, then on the refined solution.
        for _round in 0..2 {
            let mut pick: Vec<(usize, f64)> = Vec::new(); // det index, |z|
            for (i, d) in dets.iter().enumerate() {
                let (t, g) = self.prop.travel_and_gradient(
                    Phase::Acoustic,
                    [hyp[0], hyp[1], hyp[2]],
                    self.nodes[d.node].enu,
                );
                let r = d.onset.secs_since(htref) - hyp[3] - t;
                let gate = match &sol_opt {
                    None => self.cfg.gate_sigmas * d.sigma + self.cfg.association_tolerance_s,
                    Some((_, s, _)) => {
                        let gv = [g[0], g[1], g[2], 1.0];
                        let c = &s.uncertainty.covariance;
                        let mut var = 0.0;
                        for a in 0..4 {
                            for b in 0..4 {
                                var += gv[a] * c[a][b] * gv[b];
                            }
                        }
                        // Plus the tolerance, as the first gate: a fit of a
                        // few picks can be confident and wrong; the picks it
                        // nearly explains must be seen to pull it right.
                        self.cfg.gate_sigmas * (d.sigma * d.sigma + var.max(0.0)).sqrt()
                            + self.cfg.association_tolerance_s
                    }
                };
                if r.abs() <= gate {
                    let z = (r / d.sigma).abs();
                    // Several consistent picks at one node: the earliest is
                    // the direct path (echoes only come later).
                    match pick.iter_mut().find(|p| dets[p.0].node == d.node) {
                        Some(p) => {
                            if d.onset < dets[p.0].onset {
                                *p = (i, z);
                            }
                        }
                        None => pick.push((i, z)),
                    }
                }
            }
            if pick.len() < self.cfg.min_nodes_ground {
                return None;
            }
            // The refined solution gathers the same picks: it stands (a fit
            // of the same arrivals from its own solution would return it).
            if sol_opt.as_ref().is_some_and(|(m0, _, _)| {
                m0.len() == pick.len()
                    && m0
                        .iter()
                        .zip(&pick)
                        .all(|(a, b)| a.det.uid == dets[b.0].uid)
            }) {
                break;
            }
            let mut members: Vec<Member> = pick
                .iter()
                .map(|&(i, _)| Member {
                    det: dets[i],
                    phase: Phase::Acoustic,
                    used: true,
                    residual: 0.0,
                    reason: None,
                })
                .collect();
            let t_ev = members.iter().map(|m| m.det.onset).min().unwrap_or(tref);
            let start = [hyp[0], hyp[1], hyp[2], hyp[3] + htref.secs_since(t_ev)];
            let sol = self.solve_members(&mut members, t_ev, Some(start))?;
            hyp = [sol.position.e, sol.position.n, sol.position.u, sol.origin_s];
            htref = t_ev;
            sol_opt = Some((members, sol, t_ev));
        }
        let (mut members, mut sol, t_ev) = sol_opt?;
        // χ² too large with redundancy to spare: the worst-fitting pick (a
        // wrong pick below the outlier threshold, e.g. an emergent onset) is
        // returned to the pool and the rest refitted, at most twice.
        for _ in 0..2 {
            let used: Vec<usize> = (0..members.len()).filter(|&i| members[i].used).collect();
            if sol.chi2_ok(0.999) || used.len() <= self.cfg.min_nodes_preliminary {
                break;
            }
            let z = |i: usize| (members[i].residual / members[i].det.sigma).abs();
            let Some(&w) = used.iter().max_by(|&&a, &&b| z(a).total_cmp(&z(b))) else {
                break;
            };
            members.remove(w);
            let s = &sol;
            let start = [s.position.e, s.position.n, s.position.u, s.origin_s];
            sol = self.solve_members(&mut members, t_ev, Some(start))?;
        }
        Some((members, sol, t_ev))
    }

    /// Sites a fit uses, and its χ² (to compare fits of one source).
    fn fit_score(&self, members: &[Member], sol: &Solution) -> (usize, f64) {
        let mut sites: Vec<usize> = members
            .iter()
            .filter(|m| m.used)
            .map(|m| self.nodes[m.det.node].site)
            .collect();
        sites.sort_unstable();
        sites.dedup();
        (sites.len(), sol.chi2)
    }

    /// Refine hypothesis `h` on the picks it explains and decide: at once
    /// (`sweep` false: a search online, as arrivals come in) only a
    /// confirmed source is accepted.
    fn evaluate_seed(&self, dets: &[Det], h: [f64; 4], tref: UtcNs, sweep: bool) -> SeedVerdict {
        let Some((mut members, mut sol, t_ev)) = self.gather_fit(dets, h, tref) else {
            return SeedVerdict::Reject;
        };
        // A later pick may have stood in for a node's direct arrival (the
        // direct path is the first; in a salvo another source's arrival may
        // follow it by tens of ms), pulling the fit into a wrong basin that
        // the local gates cannot leave. For each node whose used pick has an
        // earlier candidate within the outlier window, the fit with the
        // earlier pick is tried and kept if it explains more sites (or as
        // many with a lower χ²); not tried once every site that has a
        // candidate is explained (the common case, and the costly one).
        let mut avail: Vec<usize> = dets.iter().map(|d| self.nodes[d.node].site).collect();
        avail.sort_unstable();
        avail.dedup();
        let mut swaps = 0;
        'swap: while swaps < MAX_SWAPS {
            let score = self.fit_score(&members, &sol);
            if score.0 >= avail.len() {
                // Every site with a candidate is explained: nothing to gain.
                break;
            }
            for mi in 0..members.len() {
                let m = &members[mi];
                if !m.used || m.det.stream != StreamKind::Acoustic {
                    continue;
                }
                let alt = dets
                    .iter()
                    .filter(|q| {
                        q.node == m.det.node
                            && q.onset < m.det.onset
                            && m.det.onset.secs_since(q.onset) <= self.cfg.outlier_window_s
                            && !members.iter().any(|x| x.used && x.det.uid == q.uid)
                    })
                    .max_by_key(|q| q.onset);
                let Some(q) = alt else {
                    continue;
                };
                swaps += 1;
                let mut trial: Vec<Member> = members.iter().filter(|x| x.used).cloned().collect();
                if let Some(x) = trial.iter_mut().find(|x| x.det.uid == m.det.uid) {
                    x.det = *q;
                }
                let s0 = &sol;
                let start = [s0.position.e, s0.position.n, s0.position.u, s0.origin_s];
                // The trial only proposes a start for the local fit: in the
                // current solution's model (a wrong pick makes any fit bad,
                // and 3D starts at three heights would not mend it).
                let dims = match sol.dims {
                    Dims::Ground => DimsChoice::Ground,
                    Dims::Free => DimsChoice::Free,
                };
                let better = self
                    .solve_members_as(&mut trial, t_ev, Some(start), dims)
                    .map(|s| [s.position.e, s.position.n, s.position.u, s.origin_s])
                    .and_then(|h2| self.gather_fit(dets, h2, t_ev))
                    .filter(|(m2, s2, _)| {
                        let sc = self.fit_score(m2, s2);
                        s2.chi2_ok(0.999) && (sc.0 > score.0 || (sc.0 == score.0 && sc.1 < score.1))
                    });
                if let Some((m2, s2, _)) = better {
                    members = m2;
                    sol = s2;
                    continue 'swap;
                }
                if swaps >= MAX_SWAPS {
                    break 'swap;
                }
            }
            break;
        }
        let n_used = members.iter().filter(|m| m.used).count();
        if !sol.chi2_ok(0.999) || n_used < self.cfg.min_nodes_ground {
            return SeedVerdict::Reject;
        }
        // Mostly probable echoes (picks that follow an associated direct
        // arrival at their node by < echo_window_s) or subordinate picks:
        // reverberation of a located source or noise beside a louder
        // pulse, not a new source.
        let echoes = members
            .iter()
            .filter(|m| m.used && (m.det.echo || m.det.subordinate))
            .count();
        if 2 * echoes > n_used {
            return SeedVerdict::Reject;
        }
        // Weak picks (see `Det::weak`) support a source but do not check
        // it: the sites that over-determine it (its unknowns and one more,
        // or all of an exactly determined fit's) must be explained by
        // strong picks. With urban model errors of ~10 ms, the one check a
        // four-site fit has is passed by most mixes of a shot's direct
        // arrivals with echoes, noise triggers and another shot's picks
        // (ShotSpotter: 175 ghost events for 324 shots before this rule,
        // 89 after, and 64 % → 68 % of the shots within 15 m).
        let site_count = |strong_only: bool| {
            let mut v: Vec<usize> = members
                .iter()
                .filter(|m| m.used && !(strong_only && m.det.weak()))
                .map(|m| self.nodes[m.det.node].site)
                .collect();
            v.sort_unstable();
            v.dedup();
            v.len()
        };
        if site_count(true) < site_count(false).min(sol.dims.unknowns() + 1) {
            return SeedVerdict::Reject;
        }
        let used_nodes: Vec<usize> = members
            .iter()
            .filter(|m| m.used)
            .map(|m| m.det.node)
            .collect();
        let (missing, not_due) = self.negative_evidence(&sol, t_ev, &used_nodes);
        let frac = n_used as f64 / (n_used + missing) as f64;
        if frac < self.cfg.min_detect_fraction {
            return SeedVerdict::Reject;
        }
        let k = sol.dims.unknowns();
        let floor = match sol.dims {
            Dims::Ground => self.cfg.min_nodes_ground,
            Dims::Free => self.cfg.min_nodes_3d,
        };
        let mut sites: Vec<usize> = used_nodes.iter().map(|&n| self.nodes[n].site).collect();
        sites.sort_unstable();
        sites.dedup();
        let confirmed = sites.len()
            >= self
                .cfg
                .min_nodes_preliminary
                .max(floor)
                .max(k + self.cfg.confirm_extra_arrivals);
        // Support no better than chance (dense picks: salvos, crowds of
        // local triggers) is no evidence: wait for more, or reject.
        let chance = self.chance_tail(&sol, t_ev, &members);
        if chance > MAX_CHANCE {
            if not_due > 0 {
                return SeedVerdict::Wait;
            }
            return SeedVerdict::Reject;
        }
        if confirmed {
            return SeedVerdict::Accept(members, sol, t_ev);
        }
        // Online, an unconfirmed source waits for the sweep even when every
        // arrival it predicts is due: its own evidence is in, but not that
        // of the sources competing for its picks (a later shot's arrivals,
        // its echoes), which the sweep weighs earliest first once all of it
        // is in. (Accepted at once, ShotSpotter's six-sensor tests lost
        // shots to five-site fits of echoes and a later shot's picks, in 3D
        // or with an outlier left out.)
        if not_due > 0 || !sweep {
            return SeedVerdict::Wait;
        }
        // Every live node's arrival is due: judged on the full negative evidence.
        // An exactly determined fit (three on the ground plane) has nothing to
        // check it, so it needs every live node accounted for. A 3D fit (one
        // more unknown, and ten times more hypotheses from quadruples) must
        // still be confirmed unless too few nodes could ever confirm it.
        let could_confirm = n_used + missing >= k + self.cfg.confirm_extra_arrivals;
        // Redundancy counts sites: two sensors side by side (n01 and its
        // high-SPL twin) check nothing about where the source is.
        if n_used >= floor
            && (sites.len() > k || missing == 0)
            && (sol.dims == Dims::Ground || !could_confirm)
        {
            return SeedVerdict::Accept(members, sol, t_ev);
        }
        SeedVerdict::Reject
    }

    /// A contrario significance of a fit's support (Desolneux, Moisan &
    /// Morel 2000; the coincidence test of seismic associators): the
    /// probability that picks unrelated to any source fall by chance inside
    /// the arrival gates of at least as many sites as support `sol`, given
    /// each node's local pick density. The `k` unknowns are fitted to `k`
    /// sites (those least likely to be hit by chance, conservatively) that
    /// therefore test nothing; the other supporting sites are the evidence.
    fn chance_tail(&self, sol: &Solution, tref: UtcNs, members: &[Member]) -> f64 {
        // Per site: hit probability (max over its sensors) and whether used.
        let mut sites: Vec<(usize, f64, bool)> = Vec::new();
        for n in 0..self.nodes.len() {
            let node = &self.nodes[n];
            let used = members.iter().any(|m| m.used && m.det.node == n);
            let (t, s) = self.predict(sol, n, Phase::Acoustic);
            let centre = tref.add_secs_f64(t);
            if !used && !node.expected_at(centre) {
                continue;
            }
            let mut count = 0usize;
            let mut sigs: Vec<f64> = Vec::new();
            for q in &self.pending {
                // The background rate: the fit's own picks are not part of it.
                if q.node == n
                    && q.stream == StreamKind::Acoustic
                    && q.onset.secs_since(centre).abs() <= DENSITY_WINDOW_S
                    && !members.iter().any(|m| m.det.uid == q.uid)
                {
                    count += 1;
                    sigs.push(q.sigma);
                }
            }
            // The gate a chance pick must fall in: its own sigma (this
            // source's pick at a used node, else the local median).
            let sig = match members.iter().find(|m| m.used && m.det.node == n) {
                Some(m) => m.det.sigma,
                None if sigs.is_empty() => 0.0,
                None => {
                    sigs.sort_by(f64::total_cmp);
                    sigs[sigs.len() / 2]
                }
            };
            // Over the part of the window this node has delivered: online,
            // a far node's window may reach past its newest pick, and
            // counting the undelivered part as empty would understate the
            // rate (and make a coincidence look significant).
            let delivered = self.due_time(n).secs_since(centre);
            let span = DENSITY_WINDOW_S + delivered.clamp(-DENSITY_WINDOW_S, DENSITY_WINDOW_S);
            let rate = count as f64 / span.max(MIN_DENSITY_SPAN_S);
            let gate = self.cfg.gate_sigmas * (s * s + sig * sig).sqrt();
            let p = 1.0 - (-rate * 2.0 * gate).exp();
            match sites.iter_mut().find(|x| x.0 == node.site) {
                Some(x) => {
                    x.1 = x.1.max(p);
                    x.2 |= used;
                }
                None => sites.push((node.site, p, used)),
            }
        }
        let k = sol.dims.unknowns();
        // Drop the k used sites least likely to be hit by chance.
        let mut used_p: Vec<f64> = sites.iter().filter(|x| x.2).map(|x| x.1).collect();
        used_p.sort_by(f64::total_cmp);
        let n_used = used_p.len();
        if n_used <= k {
            // Nothing beyond the unknowns to test: the zero-dof rules apply.
            return 0.0;
        }
        // A test no source could pass (few sites, dense picks: e.g. six
        // sensors in a noisy street) cannot discriminate: not applied.
        let mut all_p: Vec<f64> = sites.iter().map(|x| x.1).collect();
        all_p.sort_by(f64::total_cmp);
        let best: f64 = all_p.iter().skip(k).product();
        if best > MAX_CHANCE {
            return 0.0;
        }
        let mut ps: Vec<f64> = used_p[k..].to_vec();
        ps.extend(sites.iter().filter(|x| !x.2).map(|x| x.1));
        poisson_binomial_tail(&ps, n_used - k)
    }

    /// Live nodes outside `used_nodes` whose predicted arrival is already due
    /// (and that have no pending pick near it), and those not yet due.
    fn negative_evidence(
        &self,
        sol: &Solution,
        tref: UtcNs,
        used_nodes: &[usize],
    ) -> (usize, usize) {
        let (mut missing, mut not_due) = (0, 0);
        for n in 0..self.nodes.len() {
            let node = &self.nodes[n];
            let (t, s) = self.predict(sol, n, Phase::Acoustic);
            if !node.expected_at(tref.add_secs_f64(t)) || used_nodes.contains(&n) {
                continue;
            }
            let gate = self.cfg.gate_sigmas * s + self.cfg.association_tolerance_s;
            let due_at = tref.add_secs_f64(t + gate);
            let has_pick = self.pending.iter().any(|q| {
                q.node == n
                    && q.stream == StreamKind::Acoustic
                    && (q.onset.secs_since(tref) - t).abs() <= gate + self.cfg.gate_sigmas * q.sigma
            });
            if has_pick {
                continue;
            }
            if due_at < self.due_time(n) {
                missing += 1;
            } else {
                not_due += 1;
            }
        }
        (missing, not_due)
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
        // Yield once, for the final revision (the inversion is a bisection per station).
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
