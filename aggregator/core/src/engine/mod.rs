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
//!    best refined by [`locate`](crate::locate::locate) with outlier rejection, then accepted only if
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
//!
//! Modules, by what they own:
//! - this one: the state machine (the pool of pending picks, the open
//!   events, the watermark; `on_detection`, `advance`, `flush`, the sweep)
//!   and the types every step shares (`Det`, `Member`, `OpenEvent`);
//! - `nodes`: the node registry, the pairwise data derived from positions,
//!   and clock flagging;
//! - `absorb`: picks joining open events;
//! - `fit`: locating a set of members, predictions and deadlines;
//! - `search`: the search for new sources (its types, constants, scratch
//!   buffers, and the verdict on a hypothesis);
//! - `challenge`: the pre-final challenge of an event;
//! - `publish`: events as published (`to_event`) and finalisation.

use std::collections::HashMap;

use blastnet_contract::{
    Detection, EnuFrame, Event, EventStatus, Geodetic, SourceKind, StreamKind, UtcNs,
};

use crate::calibration::ErrorScale;
use crate::config::EngineConfig;
use crate::locate::{Arrival, Solution};
use crate::propagation::{Phase, Propagation};

mod absorb;
mod challenge;
mod fit;
mod nodes;
mod publish;
mod search;

use nodes::Node;
pub use nodes::NodeInfo;
use search::verdict::{DENSITY_WINDOW_S, MIN_DENSITY_SPAN_S};
use search::{Found, SearchScratch};

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
    /// [`Engine::restore_calibration`].
    Calibration(Box<crate::calibration::Calibration>),
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
            TraceEntry::Calibration(c) => self.restore_calibration(c),
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

/// Prominence (dB) by which a pick must stand out over another of its node
/// within the echo window for that one to be subordinate: twice the
/// amplitude. On ShotSpotter's recordings the share of the pulses
/// ShotSpotter grouped per shot that this flags is flat from 5 to 10 dB
/// (2.5 % to 1.7 %) while the share of the other picks falls (70 % to
/// 58 %); located within 15 m: 77 % at 4–5 dB, 74 % at 6, 71 % at 8, 68 %
/// at 10 (the round factor of two is kept rather than the best margin).
const SUBORDINATE_DB: f64 = 6.0;
/// A pick this much below a direct arrival's peak at its node is in that
/// source's coda (see [`coda_of`]): a quarter of its pressure, beyond a
/// burst's round-to-round spread (ShotSpotter FP1–FP3: within 1.5 dB in
/// the median over the nodes, single picks down to −12 dB where the first
/// round's onset was not its loudest pulse).
const CODA_DB: f64 = 12.0;

/// Largest meaningful pick prominence, dB: the dynamic range of a 24-bit
/// digitiser (6 dB per bit) and some.
const MAX_SNR_DB: f64 = 150.0;

/// A detection as the engine keeps it: plain data (`Copy`), as a search
/// copies hundreds of them.
#[derive(Debug, Clone, Copy)]
struct Det {
    uid: u64,
    node: usize,
    seq: u64,
    stream: StreamKind,
    /// The onset less the node's station term (the raw onset is
    /// `onset + term_s`).
    onset: UtcNs,
    /// pick ⊕ clock ⊕ position ⊕ station term ⊕ model, seconds.
    sigma: f64,
    /// The variance in `sigma` other than the model's (pick, clock,
    /// position, station term), s²: what the error-scale estimate subtracts.
    known_var: f64,
    /// The station term applied, s.
    term_s: f64,
    /// The onset as the node reported it.
    raw_onset: UtcNs,
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
    /// In a located source's coda: it follows that source's direct arrival
    /// at its node within `Engine::coda_window`, with a peak `CODA_DB`
    /// lower (see [`coda_of`]). A one-check fit of half such picks is
    /// rejected (see `judge_fit` in `search::verdict`).
    coda: bool,
    /// Already tried as the pivot of the sweep (see [`Engine::sweep`]).
    swept: bool,
    /// Within its node's seed budget (see `EngineConfig::seed_rate_hz`): it
    /// may be the pivot of a search (unless a probable echo) and of a
    /// repeat (see [`Engine::find_repeats`]).
    seeds: bool,
    /// Already tried as a repeat of the recent sources (see
    /// [`Engine::find_repeats`]); cleared when a new source is found.
    repeat_checked: bool,
}

impl Det {
    /// The onset as the node reported it.
    fn raw_onset(&self) -> UtcNs {
        self.raw_onset
    }

    /// Weak evidence of a source: a subordinate pick, or a probable echo
    /// quieter than the direct arrival it follows. A search ranks
    /// hypotheses by the sites they explain without weak picks, and a
    /// source must be over-determined by its strong picks alone (see
    /// `judge_fit` in `search::verdict`).
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

/// The pending pool's acoustic picks by node, in onset order (indexes
/// into the pool): what the burst search looks picks up in.
struct PoolIndex {
    by_node: Vec<Vec<(UtcNs, usize)>>,
}

impl PoolIndex {
    fn new(pending: &[Det], nodes: usize) -> PoolIndex {
        let mut by_node = vec![Vec::new(); nodes];
        for (j, p) in pending.iter().enumerate() {
            if p.stream == StreamKind::Acoustic && p.node < nodes {
                by_node[p.node].push((p.onset, j));
            }
        }
        for v in &mut by_node {
            v.sort_unstable();
        }
        PoolIndex { by_node }
    }

    /// Node `n`'s picks with onset in (`from`, `to`], earliest first.
    fn between(&self, n: usize, from: UtcNs, to: UtcNs) -> impl Iterator<Item = usize> + '_ {
        let v = self.by_node.get(n).map_or(&[][..], |v| &v[..]);
        let lo = v.partition_point(|e| e.0 <= from);
        let hi = v.partition_point(|e| e.0 <= to);
        v[lo..hi.max(lo)].iter().map(|e| e.1)
    }

    /// Node `n`'s pick nearest to `want` within `gate_s` (the earlier in
    /// the pool on a tie), other than `not`.
    fn nearest(&self, n: usize, want: UtcNs, gate_s: f64, not: Option<usize>) -> Option<usize> {
        let from = want.add_secs_f64(-gate_s - 1e-9);
        let to = want.add_secs_f64(gate_s);
        let v = self.by_node.get(n)?;
        let lo = v.partition_point(|e| e.0 <= from);
        let hi = v.partition_point(|e| e.0 <= to);
        v[lo..hi.max(lo)]
            .iter()
            .filter(|e| Some(e.1) != not && e.0.secs_since(want).abs() <= gate_s)
            .min_by(|a, b| {
                a.0.secs_since(want)
                    .abs()
                    .total_cmp(&b.0.secs_since(want).abs())
                    .then(a.1.cmp(&b.1))
            })
            .map(|e| e.1)
    }
}

/// A source's arrival pattern (see [`Engine::find_repeats`]).
#[derive(Debug, Clone)]
struct Pattern {
    /// The event it is of.
    id: String,
    /// Source position, ENU m.
    src: [f64; 3],
    /// Origin time.
    origin: UtcNs,
    /// Its used acoustic arrivals: (node, onset, known variance).
    arrivals: Vec<(usize, UtcNs, f64)>,
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

/// Counts of the association's work (see [`Engine::work`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Searches for a source, each with one pick as the pivot.
    pub searches: u64,
    /// Hypotheses of those searches refined by a least-squares fit.
    pub refined: u64,
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
    /// The onset from which the pool holds every pick delivered: the
    /// earliest onset seen, raised as old picks leave the pool (the
    /// coincidence test's background rate is counted over it only).
    pool_from: Option<UtcNs>,
    next_uid: u64,
    /// Picks beyond their node's or the network's seed budget (see `Engine::take_seed`).
    unseeded: u64,
    /// The network's seed budget, and its acoustic picks' onsets of the
    /// last `DENSITY_WINDOW_S` (see `Engine::take_seed`).
    seeds: (f64, Option<UtcNs>),
    recent_onsets: std::collections::VecDeque<UtcNs>,
    /// Searches run, and hypotheses they refined (see [`Engine::work`]).
    work: Work,
    next_event: u64,
    window_s: f64,
    /// The array's geometry as far as the registry keeps it up to date per
    /// node (see [`nodes::Geometry`]).
    geometry: nodes::Geometry,
    /// Deployment site names detections came with.
    site_names: Vec<String>,
    /// Reused buffers of the search.
    scratch: SearchScratch,
    /// The ground sources stand on (see [`nodes::Ground`]).
    ground: nodes::Ground,
    /// Its height under the nodes' centroid (the search's ground plane).
    ground_all: f64,
    /// The timing-error scale per deployment site: index 0 for picks
    /// without a site, `1 + i` for `site_names[i]`.
    scales: Vec<ErrorScale>,
    /// The latest sources, newest last: the patterns a later round of a
    /// burst repeats (see [`Engine::find_repeats`]).
    patterns: std::collections::VecDeque<Pattern>,
    /// Station terms of an earlier run, for nodes not yet registered.
    restored_terms: HashMap<String, crate::calibration::StationTerm>,
}

/// How far a shooter may move between the rounds of a burst, m (a step):
/// it changes an arrival-time difference by up to twice this over the
/// speed of sound.
const REPEAT_MOVE_M: f64 = 1.0;

/// Recent sources whose arrival patterns a later round may repeat.
const MAX_PATTERNS: usize = 32;

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
            if let Some(i) = SourceKind::from_name(name).map(kind_index) {
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
            pool_from: None,
            next_uid: 0,
            unseeded: 0,
            work: Work::default(),
            next_event: 0,
            window_s,
            geometry: nodes::Geometry::default(),
            site_names: Vec::new(),
            seeds: (0.0, None),
            recent_onsets: std::collections::VecDeque::new(),
            scratch: SearchScratch::default(),
            ground: nodes::Ground::default(),
            ground_all: 0.0,
            scales: Vec::new(),
            restored_terms: HashMap::new(),
            patterns: std::collections::VecDeque::new(),
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

    /// Picks that did not seed a search: beyond their node's or the
    /// network's seed budget (see `EngineConfig::seed_rate_hz`).
    pub fn unseeded(&self) -> u64 {
        self.unseeded
    }

    /// The association's work so far: searches run and hypotheses refined
    /// (a least-squares fit each; most of a search's cost).
    pub fn work(&self) -> Work {
        self.work
    }

    /// Detections waiting for an event.
    pub fn pending_detections(&self) -> usize {
        self.pending.len()
    }

    /// A validated, deduplicated detection.
    pub fn on_detection(&mut self, det: &Detection, out: &mut Vec<Action>) {
        let node = self.node_for(det);
        self.settle_geometry();
        if self.nodes[node].info.refused {
            return;
        }
        let n = &mut self.nodes[node];
        n.silent_misses = 0;
        n.hw = Some(n.hw.map_or(det.onset_utc, |h| h.max(det.onset_utc)));
        self.pool_from = Some(
            self.pool_from
                .map_or(det.onset_utc, |f| f.min(det.onset_utc)),
        );
        self.max_onset = Some(
            self.max_onset
                .map_or(det.onset_utc, |h| h.max(det.onset_utc)),
        );
        let pick = finite_or(det.onset_uncertainty_s, 1e-3);
        let clock = finite_or(det.clock.uncertainty_s, n.info.clock_uncertainty_s)
            .max(finite_or(n.info.clock_uncertainty_s, 0.0));
        // The node's position error, as time along the ray.
        let pos = det
            .position_uncertainty_m
            .filter(|u| u.is_finite() && *u >= 0.0)
            .map_or(0.0, |u| u / self.prop.sound_speed_mps);
        let site = det.site.as_deref().map(|name| self.site_index(name));
        let m = self.scale(site).scale_s();
        let known_var = pick * pick + clock * clock + pos * pos;
        let sigma = (known_var + m * m).sqrt().max(1e-6);
        let onset = det.onset_utc;
        let n = &self.nodes[node];
        let echo = det.stream == StreamKind::Acoustic
            && n.last_direct.is_some_and(|t| {
                let dt = onset.secs_since(t);
                dt > 0.0 && dt <= self.cfg.echo_window_s
            });
        let quiet_echo = echo && det.snr_db < n.last_direct_snr;
        let d = Det {
            uid: self.next_uid,
            node,
            seq: det.seq,
            stream: det.stream,
            onset,
            raw_onset: det.onset_utc,
            sigma,
            known_var,
            // Station terms apply when an event is finalised (they depend
            // on where its source is; see `Engine::apply_terms`).
            term_s: 0.0,
            probs: probs_of(det),
            peak: det.peak,
            clipped: det.clipped,
            site,
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
            coda: false,
            swept: false,
            seeds: false,
            repeat_checked: false,
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
        if d.stream == StreamKind::Acoustic {
            d.seeds = self.take_seed(&d);
            self.unseeded += u64::from(!d.seeds);
        }
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
                self.pool_from = self.pool_from.map(|f| f.max(limit));
            }
        }
        if det.stream == StreamKind::Acoustic {
            // A source confirmed by enough nodes is published at once; weaker
            // evidence waits for the sweep, when all of it is in.
            if let Some(last) = self.pending.len().checked_sub(1) {
                let d = &self.pending[last];
                if d.uid == d_uid && d.seeds && !d.echo {
                    if let Some(found) = self.search(last, false) {
                        self.create_event(found, out);
                    }
                }
            }
        }
    }

    /// Whether pick `d` seeds a search: its node's seed budget holds a
    /// token (see `EngineConfig::seed_rate_hz`), and, where the network's
    /// pick rate alone explains a source's confirming arrivals by chance
    /// (dense: a noise storm), so does the network's. The network's accrues
    /// at the nodes' rates together (it never limits the steady picking
    /// the nodes' budgets allow) but holds a burst for only as many nodes
    /// as confirm a source. At the onset of a storm every node's burst at
    /// once was 4,000 searches at 200 nodes, each of all the storm's picks
    /// in its window: seconds of work the first blast waited behind. Not
    /// where the picks are sparse: a salvo makes every node burst at once
    /// too, and there the searches are cheap (on held-back random scenes,
    /// a network budget that applied everywhere lost a 12-node salvo's
    /// airburst).
    fn take_seed(&mut self, d: &Det) -> bool {
        let (rate, burst) = (self.cfg.seed_rate_hz, self.cfg.seed_burst);
        // The network's acoustic picks of the last DENSITY_WINDOW_S (those
        // no open event took; over the part of it delivered, at least
        // MIN_DENSITY_SPAN_S, as the search's local rates), and the chance
        // that one lands in this pick's gate at a given node.
        self.recent_onsets.push_back(d.onset);
        let newest = self.max_onset.unwrap_or(d.onset);
        let from = newest.add_secs_f64(-DENSITY_WINDOW_S);
        while self.recent_onsets.front().is_some_and(|&t| t < from) {
            self.recent_onsets.pop_front();
        }
        let span = self
            .pool_from
            .map_or(0.0, |f| newest.secs_since(f))
            .clamp(MIN_DENSITY_SPAN_S, DENSITY_WINDOW_S);
        let nodes = self.nodes.len().max(1);
        let per_node = self.recent_onsets.len() as f64 / (span * nodes as f64);
        let gate = self.cfg.gate_sigmas * d.sigma + self.cfg.association_tolerance_s;
        let chance = search::verdict::chance_in_gate(per_node, gate);
        let dense = chance * (nodes - 1) as f64 >= self.cfg.confirm_extra_arrivals as f64;
        let confirm = self
            .cfg
            .min_nodes_preliminary
            .max(3 + self.cfg.confirm_extra_arrivals);
        let net_rate = rate * nodes as f64;
        let net_cap = (burst * confirm) as f64;
        let mut net = self.seeds;
        let net_has = !dense || nodes::take_token(&mut net, d.onset, net_rate, net_cap, false);
        let node_has = nodes::take_token(
            &mut self.nodes[d.node].seeds,
            d.onset,
            rate,
            burst as f64,
            net_has,
        );
        let seeds = net_has && node_has;
        // Every seed spends the network's budget (so a storm right after a
        // salvo finds it spent); only a dense network is refused by it.
        nodes::take_token(&mut self.seeds, d.onset, net_rate, net_cap, seeds);
        seeds
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
        self.mark_coda(d);
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

    /// Mark `d` as in the coda of its node's latest direct arrival (see
    /// [`Det::coda`]; the pending picks are marked when a source is
    /// located, in `note_direct_arrivals`).
    fn mark_coda(&mut self, d: &mut Det) {
        let wide = self.coda_window();
        let node = &self.nodes[d.node];
        // The node's latest direct arrival (its source may be final by now).
        d.coda |= node
            .last_direct
            .is_some_and(|t| coda_of(d, t, node.last_direct_peak, wide));
    }

    /// How long after a direct arrival a pick may be its coda, s: the event
    /// window (the longest span of one source's arrivals) plus a crossing
    /// of the array, the extra path of a reflector on its far side.
    fn coda_window(&self) -> f64 {
        self.window_s + self.geometry.aperture() / self.prop.min_acoustic_speed()
    }

    /// Advance the watermark: every detection with onset < `watermark` −
    /// `lateness_s` has been delivered. Events that can receive no further
    /// physically possible arrival are finalised.
    pub fn advance(&mut self, watermark: UtcNs, out: &mut Vec<Action>) {
        self.settle_geometry();
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
        self.pool_from = self.pool_from.map(|f| f.max(keep));
    }

    /// Finalise everything (end of a replay): every arrival is treated as delivered.
    pub fn flush(&mut self, out: &mut Vec<Action>) {
        self.settle_geometry();
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
        self.find_repeats(ripe, out);
        // The pivots in order, until a source is found (it changes the
        // pool); then again. A search without a source changes nothing
        // else, so the order stands until then.
        let mut order: Vec<usize> = Vec::new();
        loop {
            order.clear();
            order.extend((0..self.pending.len()).filter(|&i| {
                let q = &self.pending[i];
                !q.swept
                    && q.seeds
                    && q.onset < ripe
                    && q.stream == StreamKind::Acoustic
                    && !q.echo
                    && !self.nodes[q.node].flagged
            }));
            order.sort_by_key(|&i| (self.pending[i].outshone, self.pending[i].onset, i));
            let mut found_one = false;
            for &i in &order {
                self.pending[i].swept = true;
                if let Some(found) = self.search(i, true) {
                    if self.pending[i].outshone {
                        self.rejudge_after(i, &found.members);
                    }
                    self.create_event(found, out);
                    found_one = true;
                    break;
                }
            }
            if !found_one {
                return;
            }
        }
    }

    /// Rapid fire: a burst's later rounds follow its first by 0.3–1 s,
    /// within the echo window and within one another's association gates,
    /// and judged pick by pick they mix (round k at one node with round
    /// k + 1 at the others). But a source fired again from the same place
    /// repeats its arrival pattern exactly, whatever the propagation errors
    /// (non-line-of-sight delays and station terms repeat too): every node
    /// hears it the same Δ after its earlier arrival, within the pick errors
    /// and the shooter's step ([`REPEAT_MOVE_M`]). Echoes off different
    /// reflectors have different delays at each node. So before the sweep
    /// judges picks one by one, each ripe pick is tried as a repeat of the
    /// recent sources its node heard: the picks of the other nodes at their
    /// earlier arrival + Δ, when at least `min_nodes_preliminary` nodes
    /// repeat, are fitted from the earlier source's position and judged like
    /// any hypothesis; an accepted repeat takes its picks first, so that the
    /// rounds of a burst are assigned together, each pick used once.
    fn find_repeats(&mut self, ripe: UtcNs, out: &mut Vec<Action>) {
        let need = self.cfg.min_nodes_preliminary;
        let move_s = 2.0 * REPEAT_MOVE_M / self.prop.sound_speed_mps;
        if !self
            .pending
            .iter()
            .any(|q| !q.repeat_checked && q.onset < ripe && q.stream == StreamKind::Acoustic)
        {
            return;
        }
        let mut ix = PoolIndex::new(&self.pending, self.nodes.len());
        let (mut local, mut chance) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < self.pending.len() {
            let q = self.pending[i];
            i += 1;
            if q.repeat_checked
                || !q.seeds
                || q.onset >= ripe
                || q.stream != StreamKind::Acoustic
                || self.nodes[q.node].flagged
            {
                continue;
            }
            self.pending[i - 1].repeat_checked = true;
            // Where chance alone explains several nodes (a noise storm),
            // most nodes repeat any Δ by chance: neither a pattern's count
            // nor a doublet's tells anything (and each costs a fit per
            // pick); the rounds are left to the sweep, which tests its
            // counts against chance.
            let mut dense: Option<bool> = None;
            let mut best: Option<(Vec<usize>, [f64; 4])> = None;
            for pat in self.patterns.iter().rev() {
                let Some(&(_, t0, v0)) = pat.arrivals.iter().find(|p| p.0 == q.node) else {
                    continue;
                };
                let dt = q.onset.secs_since(t0);
                if !(dt > 0.0 && dt <= self.window_s) {
                    continue;
                }
                if *dense.get_or_insert_with(|| {
                    self.local_chance(q.node, q.onset, &mut local, &mut chance)
                }) {
                    break;
                }
                let mut set = vec![i - 1];
                for &(n, t, v) in pat.arrivals.iter().filter(|p| p.0 != q.node) {
                    let want = t.add_secs_f64(dt);
                    let gate = self.cfg.gate_sigmas * (v + v0.max(q.known_var)).sqrt() + move_s;
                    set.extend(ix.nearest(n, want, gate, None));
                }
                if set.len() >= need && best.as_ref().is_none_or(|b| set.len() > b.0.len()) {
                    let origin = pat.origin.add_secs_f64(dt).secs_since(q.onset);
                    best = Some((set, [pat.src[0], pat.src[1], pat.src[2], origin]));
                }
            }
            // A repeat of a located source: its picks are no echoes of it
            // (full support), unless much less prominent than a pick near
            // them (`subordinate`: a re-trigger on the pulse's own coda
            // repeats its pattern too). A doublet's picks keep their flags:
            // a burst's echoes repeat too.
            let unflag = |mut d: Det| {
                d.echo = false;
                d.quiet_echo = false;
                d
            };
            let found = match best {
                Some((set, h)) => {
                    let dets: Vec<Det> = set.iter().map(|&j| unflag(self.pending[j])).collect();
                    // A repeat comes from where its source was (a step
                    // away): a fit that wandered off is something else
                    // (reverberation that happens to repeat).
                    self.evaluate_repeat(&dets, h, q.onset).filter(|f| {
                        let p = f.sol.position;
                        let d = (p.e - h[0]).hypot(p.n - h[1]);
                        d <= 3.0 * f.sol.uncertainty.horizontal_m + 2.0 * REPEAT_MOVE_M
                    })
                }
                None if *dense.get_or_insert_with(|| {
                    self.local_chance(q.node, q.onset, &mut local, &mut chance)
                }) =>
                {
                    None
                }
                None => self.doublet(i - 1, &ix).and_then(|set| {
                    // The earlier round of a burst whose first source no
                    // pattern holds yet: located from its own picks.
                    let dets: Vec<Det> = set.iter().map(|&j| self.pending[j]).collect();
                    let arr: Vec<Arrival> = dets
                        .iter()
                        .map(|d| Arrival {
                            position: enu(self.nodes[d.node].enu),
                            time_s: d.onset.secs_since(q.onset),
                            sigma_s: d.sigma,
                            phase: Phase::Acoustic,
                        })
                        .collect();
                    let idx: Vec<usize> = (0..arr.len()).collect();
                    let guesses = crate::locate::closed_form_of(
                        &arr,
                        &idx,
                        self.prop.sound_speed_mps,
                        self.ground_all,
                    );
                    let found = guesses
                        .iter()
                        .find_map(|h| self.evaluate_repeat(&dets, h, q.onset));
                    found
                }),
            };
            if let Some(found) = found {
                self.create_event(found, out);
                // The pool changed: start again (checked picks stay checked).
                ix = PoolIndex::new(&self.pending, self.nodes.len());
                i = 0;
            }
        }
    }

    /// A burst seen in the pool before any of its rounds is located: with
    /// `pending[i]` as one round's pick at its node and a later pick of that
    /// node as the next round's (Δ after it), the other nodes whose picks
    /// repeat Δ later too (within the pick errors and the shooter's step),
    /// each its earliest such pick consistent with `pending[i]`. Returns
    /// the round's picks (`i` first) for the Δ repeated at the most nodes,
    /// when at least `min_nodes_preliminary`.
    fn doublet(&self, i: usize, ix: &PoolIndex) -> Option<Vec<usize>> {
        let q = self.pending[i];
        let move_s = 2.0 * REPEAT_MOVE_M / self.prop.sound_speed_mps;
        let gate = |a: &Det, b: &Det| {
            self.cfg.gate_sigmas * (a.known_var + b.known_var + q.known_var).sqrt() + move_s
        };
        // Picks consistent with q at other nodes, per node, earliest first.
        let nn = self.nodes.len();
        let near: Vec<Vec<usize>> = (0..nn)
            .map(|n| {
                if n == q.node || self.nodes[n].flagged {
                    return Vec::new();
                }
                let w = self.pair_window(n, q.node) + 1.0;
                ix.between(n, q.onset.add_secs_f64(-w), q.onset.add_secs_f64(w))
                    .filter(|&j| self.consistent(&self.pending[j], &q))
                    .collect()
            })
            .collect();
        let mut best: Option<(usize, f64, Vec<usize>)> = None;
        for k in ix.between(q.node, q.onset, q.onset.add_secs_f64(self.window_s)) {
            let q2 = self.pending[k];
            let dt = q2.onset.secs_since(q.onset);
            if dt <= 0.0 {
                continue;
            }
            let mut set = vec![i];
            let mut mismatch = 0.0;
            for picks in &near {
                for &j in picks {
                    let p = self.pending[j];
                    let want = p.onset.add_secs_f64(dt);
                    if let Some(m) = ix.nearest(p.node, want, gate(&p, &q2), Some(j)) {
                        set.push(j);
                        mismatch += self.pending[m].onset.secs_since(want).abs();
                        break;
                    }
                }
            }
            if set.len() >= self.cfg.min_nodes_preliminary
                && best
                    .as_ref()
                    .is_none_or(|b| set.len() > b.0 || (set.len() == b.0 && mismatch < b.1))
            {
                best = Some((set.len(), mismatch, set));
            }
        }
        best.map(|b| b.2)
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

    /// A new event's id: its reference time (ms) and a hash of the picks it
    /// was opened with, so that the same data gives the same id in any run
    /// (an aggregator that reads its inbox again after a crash re-opens the
    /// events it had published under the ids it had given them).
    fn event_id(&mut self, tref: UtcNs, members: &[Member]) -> String {
        let mut keys: Vec<(&str, u64, u8)> = members
            .iter()
            .map(|m| {
                (
                    self.nodes[m.det.node].info.id.as_str(),
                    m.det.seq,
                    m.det.stream as u8,
                )
            })
            .collect();
        keys.sort_unstable();
        // FNV-1a, 64 bit: stable across builds and platforms (std's hasher is not).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (node, seq, stream) in keys {
            for b in node
                .bytes()
                .chain([0xff])
                .chain(seq.to_le_bytes())
                .chain([stream])
            {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        let ms = tref.0.div_euclid(1_000_000);
        let id = format!("ev-{ms}-{:08x}", (h >> 32) as u32 ^ h as u32);
        if self.events.iter().any(|e| e.id == id) {
            // The same picks cannot open two events at once; but never reuse a live id.
            self.next_event += 1;
            return format!("{id}-{}", self.next_event);
        }
        id
    }

    /// Open an event for source `found` (taking its picks out of the pool
    /// and out of other events' outliers) and publish its first revision.
    fn create_event(&mut self, found: Found, out: &mut Vec<Action>) {
        let Found { members, sol, tref } = found;
        let uids: Vec<u64> = members.iter().map(|m| m.det.uid).collect();
        self.pending.retain(|q| !uids.contains(&q.uid));
        // Outliers of other events it took (see the search's `gather_candidates`) leave them.
        for ev in &mut self.events {
            ev.members.retain(|m| m.used || !uids.contains(&m.det.uid));
        }
        let deadline = self.deadline(&sol, tref);
        let id = self.event_id(tref, &members);
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
            let pred = self
                .predict(&self.events[k].sol, q.node, Phase::Acoustic)
                .at;
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
}

/// Whether pick `q` lies in the coda of a located source's direct arrival
/// at its node, at `onset` with `peak`: it follows it within `wide` s
/// (`Engine::coda_window`)
/// with a peak lower by `CODA_DB` or more. Peaks, not prominence: a burst's
/// later round rides on the first round's coda, so it stands out less over
/// the noise before it, but the same weapon reaches the node by the same
/// path with about the same peak (ShotSpotter FP1–FP3: later rounds within
/// 1.5 dB of the first, in the median over the nodes; single picks down to
/// −12 dB where the first round's pick was not its loudest pulse), while a
/// reflection or reverberation has spread over a longer path and lost
/// energy at the reflector (the echo-built ghosts there: 12–20 dB below).
/// A clipped peak is a lower bound: a clipped pick is never in a coda; a
/// clipped direct arrival still outshines.
fn coda_of(q: &Det, onset: UtcNs, peak: f64, wide: f64) -> bool {
    let ratio = 10f64.powf(CODA_DB / 20.0);
    q.stream == StreamKind::Acoustic
        && !q.clipped
        && q.peak.is_finite()
        && peak.is_finite()
        && q.peak >= 0.0
        && q.onset > onset
        && q.onset.secs_since(onset) <= wide
        && peak >= ratio * q.peak
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn enu(a: [f64; 3]) -> blastnet_contract::Enu {
    blastnet_contract::Enu::new(a[0], a[1], a[2])
}
