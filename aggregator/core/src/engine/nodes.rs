//! The node registry: what the engine knows about each node ([`NodeInfo`]
//! from its status messages, plus its data-time high water, residual
//! history and site), the pairwise data derived from the positions (distances,
//! the longest arrival-time difference of one source between two nodes, the
//! site each node belongs to, the ground plane), and clock flagging.
//!
//! Kept apart from the search because it changes on a different clock: a
//! node's entry changes on status messages and finalised events, while the
//! search only reads it, hundreds of times per detection.

use std::collections::VecDeque;

use blastnet_contract::{Detection, Enu, EnuFrame, Geodetic, UtcNs};

use super::publish::Outlier;
use super::{dist, finite_or, Action, Engine, Member};
use crate::calibration::{Calibration, ErrorScale, NodeCalibration, SiteCalibration, StationTerm};
use crate::locate::{Dims, Solution};

use crate::propagation::Phase;
use blastnet_contract::StreamKind;

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
    /// Its position is not believed (far outside its site, see the
    /// aggregator's site check): it is neither expected to hear anything
    /// nor part of the array's geometry, and its picks are not used.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

/// History of a node's residuals kept for clock flagging.
const HISTORY: usize = 8;

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) info: NodeInfo,
    pub(super) enu: [f64; 3],
    /// Latest onset delivered by this node (per-node delivery is in order).
    pub(super) hw: Option<UtcNs>,
    pub(super) history: VecDeque<Option<f64>>,
    pub(super) flagged: bool,
    /// Finalised events in a row this node contributed nothing to while
    /// delivering no pick at all: at 3 it is presumed dead (silently) and no
    /// longer counted as a node that should have heard a source.
    pub(super) silent_misses: usize,
    /// Latest onset of an acoustic pick of this node used by an event (the
    /// direct arrival): later picks within `echo_window_s` are probable echoes.
    pub(super) last_direct: Option<UtcNs>,
    /// Prominence of that direct arrival, dB (NaN: unknown).
    pub(super) last_direct_snr: f64,
    /// That direct arrival's peak (see `coda_of`).
    pub(super) last_direct_peak: f64,
    /// Index of the first node of its site: sensors closer together than an
    /// association gate's worth of sound travel (e.g. a high-SPL sensor beside
    /// a MEMS microphone) hear every source, true or coincidental, together,
    /// so they confirm a source once, not twice.
    pub(super) site: usize,
    /// Data time up to which a node now offline was still listening (its
    /// latest onset or the watermark when it went offline): arrivals due
    /// before then still count as heard or missed.
    pub(super) offline_at: Option<UtcNs>,
    /// Its station term (see [`crate::calibration`]).
    pub(super) term: StationTerm,
    /// Its seed budget (see `EngineConfig::seed_rate_hz`, `take_token`):
    /// tokens, and the onset they were counted at (tokens accrue in data
    /// time: a node delivers in order).
    pub(super) seeds: (f64, Option<UtcNs>),
}

/// How far the frame's origin may lie from the median node before the
/// frame is moved there, m: the ground model and "up" are the frame's, and
/// 10 km off tilts them by 0.09°.
const REANCHOR_M: f64 = 10_000.0;

/// A token bucket in data time, `(tokens, onset they were counted at)`:
/// whether it holds a token at `onset` (full at first; `rate_hz` a second,
/// to `cap`), taking it if so and `take`. Rate 0 lifts the limit.
pub(super) fn take_token(
    bucket: &mut (f64, Option<UtcNs>),
    onset: UtcNs,
    rate_hz: f64,
    cap: f64,
    take: bool,
) -> bool {
    if rate_hz <= 0.0 {
        return true;
    }
    let (tokens, at) = *bucket;
    let tokens = match at {
        None => cap,
        Some(t) => (tokens + rate_hz * onset.secs_since(t).max(0.0)).min(cap),
    };
    let has = tokens >= 1.0;
    *bucket = (
        if has && take { tokens - 1.0 } else { tokens },
        Some(onset.max(at.unwrap_or(onset))),
    );
    has
}

/// Consecutive silent misses after which a node is presumed dead.
const PRESUMED_DEAD_AFTER: usize = 3;

impl Node {
    /// Whether the node should have reported an arrival due at `t`.
    pub(super) fn expected_at(&self, t: UtcNs) -> bool {
        (self.info.online || self.offline_at.is_some_and(|o| t <= o))
            && !self.info.refused
            && !self.flagged
            && self.silent_misses < PRESUMED_DEAD_AFTER
    }
}

impl Engine {
    pub(super) fn frame(&mut self, at: Geodetic) -> EnuFrame {
        *self.frame.get_or_insert_with(|| EnuFrame::new(at))
    }

    /// Add or update a node (position, clock, liveness, temperature). O(n)
    /// in the number of nodes (a node re-sending the same position costs no
    /// geometry at all); see [`Geometry`].
    pub fn upsert_node(&mut self, node: NodeInfo) {
        let frame = self.frame(node.position);
        let enu = frame.to_enu(node.position).to_array();
        let (i, change) = match self.node_ix.get(&node.id) {
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
                let change = if n.enu != enu {
                    Change::Moved
                } else if n.info.refused != node.refused {
                    Change::Refusal
                } else {
                    Change::Info
                };
                n.info = node;
                n.enu = enu;
                (i, change)
            }
            None => {
                let id = node.id.clone();
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
                    last_direct_peak: f64::NAN,
                    site: self.nodes.len(),
                    offline_at: None,
                    term: self.restored_terms.get(&id).cloned().unwrap_or_default(),
                    seeds: (0.0, None),
                });
                (self.nodes.len() - 1, Change::Added)
            }
        };
        self.refresh_derived(i, change);
    }

    /// Move the ENU frame to the median position of the nodes not refused
    /// when it lies more than [`REANCHOR_M`] from it (the first node heard
    /// fixed it, and that one was far off): node coordinates, open events
    /// and recent sources are carried over through geodetic coordinates.
    /// A configured `origin` is never moved.
    fn reanchor_frame(&mut self) {
        let (Some(old), None) = (self.frame, self.cfg.origin) else {
            return;
        };
        let mut lat: Vec<f64> = Vec::new();
        let mut lon: Vec<f64> = Vec::new();
        let mut alt: Vec<f64> = Vec::new();
        for n in self.nodes.iter().filter(|n| !n.info.refused) {
            lat.push(n.info.position.lat);
            lon.push(n.info.position.lon);
            alt.push(n.info.position.alt_m);
        }
        let Some(mid) = crate::stats::median_of(&mut lat)
            .zip(crate::stats::median_of(&mut lon))
            .zip(crate::stats::median_of(&mut alt))
            .map(|((la, lo), al)| Geodetic::new(la, lo, al))
        else {
            return;
        };
        let here = old.to_enu(mid);
        if here.e.hypot(here.n).hypot(here.u) <= REANCHOR_M {
            return;
        }
        let new = EnuFrame::new(mid);
        let carry = |p: Enu| new.to_enu(old.to_geodetic(p));
        for n in &mut self.nodes {
            n.enu = new.to_enu(n.info.position).to_array();
        }
        for ev in &mut self.events {
            ev.sol.position = carry(ev.sol.position);
        }
        for p in &mut self.patterns {
            let e = carry(Enu::new(p.src[0], p.src[1], p.src[2]));
            p.src = e.to_array();
        }
        self.geometry.aperture_from_scratch(&self.nodes);
        let site_m = self.geometry.site_m;
        self.geometry.sites_from_scratch(&mut self.nodes, site_m);
        self.frame = Some(new);
    }

    /// Sound speed from the online nodes' temperatures (mean) or the config;
    /// the event window from the array's aperture; co-located nodes'
    /// shared site; after node `i` changed as `change`. The ground and the
    /// frame wait for [`Engine::settle_geometry`].
    fn refresh_derived(&mut self, i: usize, change: Change) {
        let (mut sum, mut k) = (0.0, 0usize);
        for t in self
            .nodes
            .iter()
            .filter(|n| n.info.online && !n.info.refused)
            .filter_map(|n| n.info.temperature_c)
            .filter(|t| t.is_finite() && (-80.0..=70.0).contains(t))
        {
            sum += t;
            k += 1;
        }
        let t = if k == 0 {
            self.cfg.temperature_c
        } else {
            sum / k as f64
        };
        self.prop.sound_speed_mps = blastnet_contract::physics::sound_speed(t);
        let site_m = self.prop.sound_speed_mps
            * (self.cfg.association_tolerance_s + self.cfg.gate_sigmas * self.cfg.model_sigma_s);
        let g = &mut self.geometry;
        match change {
            Change::Info => {}
            Change::Added => {
                g.unsettled = true;
                g.widen(&self.nodes, i);
            }
            Change::Refusal | Change::Moved => {
                g.unsettled = true;
                if g.aperture_pair.is_some_and(|(a, b)| a == i || b == i) {
                    g.aperture_from_scratch(&self.nodes);
                } else {
                    g.widen(&self.nodes, i);
                }
            }
        }
        if site_m != g.site_m || change == Change::Moved {
            g.sites_from_scratch(&mut self.nodes, site_m);
        } else if change == Change::Added {
            g.add_site(&mut self.nodes, i);
        }
        if self.cfg.max_event_window_s.is_none() {
            self.window_s = self.geometry.aperture / self.prop.min_acoustic_speed()
                + self.cfg.association_tolerance_s
                + 1.0;
        }
    }

    /// Longest arrival-time difference of one source between nodes `a` and
    /// `b`: their distance over the slowest sound speed, plus the
    /// association tolerance, s.
    pub(super) fn pair_window(&self, a: usize, b: usize) -> f64 {
        dist(self.nodes[a].enu, self.nodes[b].enu) / self.prop.min_acoustic_speed()
            + self.cfg.association_tolerance_s
    }

    /// What waits for the next detection or watermark after nodes were
    /// added, moved or refused: the frame (see `reanchor_frame`) and the
    /// ground, each O(n).
    pub(super) fn settle_geometry(&mut self) {
        if !self.geometry.unsettled {
            return;
        }
        self.geometry.unsettled = false;
        self.reanchor_frame();
        let pts: Vec<[f64; 3]> = self
            .nodes
            .iter()
            .filter(|n| !n.info.refused)
            .map(|n| n.enu)
            .collect();
        self.ground = match (self.cfg.ground_height_m, self.frame) {
            (Some(h), Some(f)) => Ground::level(h - f.origin().alt_m, &pts),
            _ => Ground::under(&pts),
        };
        self.ground_all = self.ground.at(self.ground.centre);
    }

    /// The timing-error scale of `site` (created with the prior on first use).
    pub(super) fn scale(&mut self, site: Option<u32>) -> &mut ErrorScale {
        let i = site.map_or(0, |s| s as usize + 1);
        while self.scales.len() <= i {
            self.scales.push(ErrorScale::new(self.cfg.model_sigma_s));
        }
        &mut self.scales[i]
    }

    /// Correct a final event's picks by their nodes' station terms for a
    /// source where it is (see [`StationTerm::at`]) and locate it again;
    /// kept when the corrected fit explains at least as many arrivals.
    /// Returns whether it was.
    ///
    /// Only terms beyond [`TERM_SIGNIFICANCE`] times the site's timing scale
    /// apply: a systematic delay the scale does not already describe (a
    /// sensor behind a building, a clock offset). Smaller ones are part of
    /// the scatter the scale covers, and learned from sources at one place
    /// they are not what they seem: a fit absorbs the part of the nodes'
    /// delays that looks like a move of the source, so the residuals show
    /// only the rest, and the terms made of them move the next source from
    /// that place by the part absorbed (ShotSpotter FP1–FP3 warm, all
    /// terms: 83.3 % within 15 m and 18 / 61 % within the 1σ / 2σ ellipse;
    /// significant ones only: 84.3 % and 35 / 68 %; none: 82.4 % and
    /// 47 / 72 %).
    pub(super) fn apply_terms(&self, ev: &mut super::OpenEvent) -> bool {
        let Some(frame) = self.frame else {
            return false;
        };
        let at = frame.to_geodetic(ev.sol.position);
        let site = ev.members.iter().find(|m| m.used).and_then(|m| m.det.site);
        let scale = self
            .scales
            .get(site.map_or(0, |s| s as usize + 1))
            .map_or(self.cfg.model_sigma_s, ErrorScale::scale_s);
        let mut members = ev.members.clone();
        let mut any = false;
        for m in members.iter_mut() {
            if m.det.stream != StreamKind::Acoustic || m.phase != Phase::Acoustic {
                continue;
            }
            if let Some((term, sigma)) = self.nodes[m.det.node]
                .term
                .at(at.lat, at.lon, scale)
                .filter(|(t, _)| t.abs() > TERM_SIGNIFICANCE * scale)
            {
                m.det.onset = m.det.raw_onset.add_secs_f64(-term);
                m.det.term_s = term;
                m.det.known_var += sigma * sigma;
                m.det.sigma = (m.det.sigma * m.det.sigma + sigma * sigma).sqrt();
                any = true;
            }
        }
        if !any {
            return false;
        }
        let s = &ev.sol;
        let start = Some([s.position.e, s.position.n, s.position.u, s.origin_s]);
        let before = ev.members.iter().filter(|m| m.used).count();
        match self.solve_members(&mut members, ev.tref, start) {
            Some(sol) if members.iter().filter(|m| m.used).count() >= before => {
                ev.located_with = members.iter().filter(|m| m.used).count();
                ev.members = members;
                ev.sol = sol;
                true
            }
            _ => false,
        }
    }

    /// What the engine has learned about the sites and the nodes `ids`
    /// (what one final event changed: the store keeps the rest).
    pub fn calibration_of<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Calibration {
        let mut c = Calibration {
            sites: self.calibration_sites(),
            nodes: Vec::new(),
        };
        for id in ids {
            if let Some(&i) = self.node_ix.get(id) {
                let n = &self.nodes[i];
                if n.term.events > 0 && !c.nodes.iter().any(|x| x.node_id == id) {
                    c.nodes.push(NodeCalibration {
                        node_id: n.info.id.clone(),
                        term: n.term.clone(),
                    });
                }
            }
        }
        c
    }

    fn calibration_sites(&self) -> Vec<SiteCalibration> {
        self.scales
            .iter()
            .enumerate()
            .map(|(i, s)| SiteCalibration {
                site: i.checked_sub(1).map(|j| self.site_names[j].clone()),
                scale: s.clone(),
            })
            .collect()
    }

    /// Resume from what an earlier run learned (before the first detection).
    /// Nodes not yet known are registered when their status or first
    /// detection arrives and take their term then.
    pub fn restore_calibration(&mut self, c: &Calibration) {
        for s in &c.sites {
            let site = s.site.as_deref().map(|name| self.site_index(name));
            let prior = self.cfg.model_sigma_s;
            *self.scale(site) = ErrorScale {
                prior_s: prior,
                ..s.scale.clone()
            };
        }
        for n in &c.nodes {
            self.restored_terms
                .insert(n.node_id.clone(), n.term.clone());
            if let Some(&i) = self.node_ix.get(&n.node_id) {
                self.nodes[i].term = n.term.clone();
            }
        }
    }

    /// Every node's station term and its 1-sigma, s, with the events it
    /// was learned from (terms not yet applied read 0).
    pub fn station_terms(&self) -> Vec<(String, f64, f64, u64)> {
        self.nodes
            .iter()
            .map(|n| {
                let (d, s) = n.term.applied();
                (n.info.id.clone(), d, s, n.term.events)
            })
            .collect()
    }

    /// Each used acoustic arrival's deleted residual (its residual against
    /// the fit of the other arrivals, r / (1 − h) with h its leverage; none
    /// where h > 0.75), by detection uid: what station terms learn from. A
    /// fit that used a delayed arrival is pulled towards it and biases every other
    /// residual (the others would learn terms that merely compensate), so
    /// when one deleted residual stands out (beyond 3× the others' robust
    /// spread) the event is solved again without it, and the residuals come
    /// from that fit.
    fn deleted_residuals(
        &self,
        sol: &Solution,
        members: &[Member],
        tref: UtcNs,
    ) -> Vec<(u64, f64)> {
        // `left_out`: the arrival the fit `sol` did not use (its plain
        // residual is already a deleted one).
        let of = |sol: &Solution, ms: &[&Member], left_out: Option<u64>| -> Vec<(u64, f64)> {
            ms.iter()
                .filter(|m| m.phase == Phase::Acoustic && m.det.stream == StreamKind::Acoustic)
                .filter_map(|m| {
                    let a = self.arrival_of(m, tref);
                    let r = a.time_s
                        - sol.origin_s
                        - self.prop.travel_time(
                            m.phase,
                            sol.position.to_array(),
                            a.position.to_array(),
                        );
                    if left_out == Some(m.det.uid) {
                        return Some((m.det.uid, r));
                    }
                    let h = self.leverage(sol, m.det.node, m.det.sigma);
                    // A high-leverage arrival (a node the fit bends to
                    // follow, e.g. the nearest to a source outside the
                    // array) says little about its own delay.
                    (h <= 0.75).then_some((m.det.uid, r / (1.0 - h)))
                })
                .collect()
        };
        let used: Vec<&Member> = members.iter().filter(|m| m.used).collect();
        let first = of(sol, &used, None);
        let Some(k) =
            (0..first.len()).max_by(|&a, &b| first[a].1.abs().total_cmp(&first[b].1.abs()))
        else {
            return first;
        };
        let mut rest: Vec<f64> = (0..first.len())
            .filter(|&j| j != k)
            .map(|j| first[j].1.abs())
            .collect();
        rest.sort_by(f64::total_cmp);
        let spread = 1.4826 * rest.get(rest.len() / 2).copied().unwrap_or(f64::INFINITY);
        if used.len() <= sol.dims.unknowns() + 1 || first[k].1.abs() <= 3.0 * spread {
            return first;
        }
        let others: Vec<&Member> = used
            .iter()
            .copied()
            .filter(|m| m.det.uid != first[k].0)
            .collect();
        let arr: Vec<_> = others.iter().map(|m| self.arrival_of(m, tref)).collect();
        let mut opts = self.locate_opts(Some([
            sol.position.e,
            sol.position.n,
            sol.position.u,
            sol.origin_s,
        ]));
        opts.dims = match sol.dims {
            Dims::Ground => crate::locate::DimsChoice::Ground,
            Dims::Free => crate::locate::DimsChoice::Free,
        };
        opts.ground_u_m = Some(sol.position.u);
        opts.max_outliers = 0;
        match crate::locate::locate(&arr, &self.prop, &opts) {
            Ok(clean) => of(&clean, &used, Some(first[k].0)),
            Err(_) => first,
        }
    }

    /// The index of deployment site `name` (a handful per engine).
    pub(super) fn site_index(&mut self, name: &str) -> u32 {
        let i = match self.site_names.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                self.site_names.push(name.to_string());
                self.site_names.len() - 1
            }
        };
        u32::try_from(i).unwrap_or(u32::MAX)
    }

    pub(super) fn node_for(&mut self, det: &Detection) -> usize {
        if let Some(&i) = self.node_ix.get(&det.node_id) {
            return i;
        }
        self.upsert_node(NodeInfo {
            id: det.node_id.clone(),
            position: Geodetic::new(det.lat, det.lon, det.alt_m),
            clock_uncertainty_s: finite_or(det.clock.uncertainty_s, 0.0),
            online: true,
            temperature_c: None,
            refused: false,
        });
        self.nodes.len() - 1
    }

    /// Append a final event's residual at each live node to the node's
    /// history (its used acoustic arrival, else its inconsistent pick among
    /// the event's `outliers`, else none, a silent miss if the node gave the
    /// event nothing at all) and flag the nodes whose history now shows a
    /// clock error (see [`clock_verdict`]).
    pub(super) fn record_residuals(
        &mut self,
        sol: &Solution,
        tref: UtcNs,
        members: &[Member],
        outliers: &[Outlier],
        out: &mut Vec<Action>,
    ) {
        let deleted = self.deleted_residuals(sol, members, tref);
        let at = self.frame.map(|f| f.to_geodetic(sol.position));
        // The site's timing-error scale learns from events with at least two
        // residual degrees of freedom: their used acoustic residuals, scaled
        // up by √(n/dof) for what the fit absorbed.
        let used = members.iter().filter(|m| m.used).count();
        if used >= sol.dims.unknowns() + 2 {
            let inflate = (used as f64 / (used - sol.dims.unknowns()) as f64).sqrt();
            let ac: Vec<&Member> = members
                .iter()
                .filter(|m| {
                    m.used && m.phase == Phase::Acoustic && m.det.stream == StreamKind::Acoustic
                })
                .collect();
            let known: Vec<f64> = ac.iter().map(|m| m.det.known_var).collect();
            let r: Vec<f64> = ac.iter().map(|m| m.residual * inflate).collect();
            if let Some(s) = crate::calibration::event_scale(&r, &known) {
                let site = members.iter().find(|m| m.used).and_then(|m| m.det.site);
                self.scale(site).learn(s);
            }
        }
        let scale = self
            .scale(members.iter().find(|m| m.used).and_then(|m| m.det.site))
            .scale_s();
        for n in 0..self.nodes.len() {
            if !self.nodes[n].info.online || self.nodes[n].info.refused {
                continue;
            }
            let used = members.iter().find(|m| {
                m.det.node == n
                    && m.phase == Phase::Acoustic
                    && m.det.stream == StreamKind::Acoustic
            });
            // The raw residual: the residual plus the term its pick carried.
            let raw = match used {
                Some(m) => deleted
                    .iter()
                    .find(|d| d.0 == m.det.uid)
                    .map(|d| d.1 + m.det.term_s),
                None => outliers
                    .iter()
                    .find(|o| o.det.node == n && !o.echo)
                    .map(|o| o.residual + o.det.term_s),
            };
            let node = &mut self.nodes[n];
            if raw.is_none() && members.iter().all(|m| m.det.node != n) {
                node.silent_misses += 1;
            }
            // A constant offset is what the station term absorbs; the clock
            // verdict judges only what is left once a term was learned (a
            // node whose delay changes after its term settled: a clock jump,
            // a moved sensor).
            let term_here = raw.and(at).and_then(|a| node.term.at(a.lat, a.lon, scale));
            node.history
                .push_back(raw.zip(term_here).map(|(r, (t, _))| r - t));
            if let (Some(r), Some(at)) = (raw, at) {
                node.term.learn(at.lat, at.lon, r);
            }
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
    }
}

/// The ground sources stand on: the configured site ground height
/// (`ground_height_m`), else level at the median node's height.
///
/// Microphones are mounted at or above the ground, so the median node puts
/// ground sources on a roof-mounted array 15–20 m up; but the lower
/// envelope of the nodes (a least-squares plane through them lowered under
/// every node) and the lowest node, tried instead, lose real gunfire in
/// hilly Pittsburgh (ShotSpotter FP1–FP3 within 15 m: 85.2 % at the median,
/// 82.4 % on the plane, 79.6 % on the envelope, 69.4 % at the lowest node;
/// city-salvo's 3-D error: 15.7, 20.1, 8.7, 2.6 m). Until a terrain model
/// (or a height solved with a prior) replaces it, the median stays the
/// default and a deployer who knows the ground height sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Ground {
    /// Height, m (ENU).
    u0: f64,
    /// The nodes' centroid (e, n): where the search takes the ground.
    pub(super) centre: [f64; 2],
}

/// How a node changed in [`Engine::upsert_node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// New.
    Added,
    /// Another position.
    Moved,
    /// Refused, or no longer.
    Refusal,
    /// Liveness, clock or temperature only.
    Info,
}

/// A station term applies when it exceeds this many times the site's
/// timing scale (see [`Engine::apply_terms`]): outside the two-sided 95 %
/// band of the scatter the scale describes.
const TERM_SIGNIFICANCE: f64 = 2.0;

/// The registry's geometry, kept up to date per node without any n×n
/// table (a site of 10,000 nodes registers in O(n) per node, in a few MB):
/// - the aperture (largest distance between two nodes not refused) and
///   the pair that spans it: a new node can only widen it (O(n)); a moved
///   or refused node not of that pair likewise; one of that pair: measured
///   again (O(n²), rare);
/// - co-located nodes share a site: node i joins the site of the first
///   earlier node within `site_m`, found through a grid of `site_m` cells
///   (O(1) per node; every node again when `site_m` (the sound speed) or a
///   position changes, O(n));
/// - whether the ground and frame need another look ([`Engine::settle_geometry`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Geometry {
    aperture: f64,
    aperture_pair: Option<(usize, usize)>,
    site_m: f64,
    grid: std::collections::HashMap<[i64; 3], Vec<usize>>,
    unsettled: bool,
}

impl Geometry {
    /// The largest distance between two nodes not refused, m.
    pub(super) fn aperture(&self) -> f64 {
        self.aperture
    }

    fn widen(&mut self, nodes: &[Node], i: usize) {
        if nodes[i].info.refused {
            return;
        }
        for (j, b) in nodes.iter().enumerate() {
            if j != i && !b.info.refused {
                let d = dist(nodes[i].enu, b.enu);
                if d > self.aperture {
                    self.aperture = d;
                    self.aperture_pair = Some((j.min(i), j.max(i)));
                }
            }
        }
    }

    fn aperture_from_scratch(&mut self, nodes: &[Node]) {
        self.aperture = 0.0;
        self.aperture_pair = None;
        for (i, a) in nodes.iter().enumerate() {
            for (j, b) in nodes.iter().enumerate().skip(i + 1) {
                if !a.info.refused && !b.info.refused {
                    let d = dist(a.enu, b.enu);
                    if d > self.aperture {
                        self.aperture = d;
                        self.aperture_pair = Some((i, j));
                    }
                }
            }
        }
    }

    fn cell(&self, p: [f64; 3]) -> [i64; 3] {
        let s = self.site_m.max(1e-3);
        [
            (p[0] / s).floor() as i64,
            (p[1] / s).floor() as i64,
            (p[2] / s).floor() as i64,
        ]
    }

    /// Node i's site: that of the earliest node before it within `site_m`.
    fn add_site(&mut self, nodes: &mut [Node], i: usize) {
        let c = self.cell(nodes[i].enu);
        let mut first: Option<usize> = None;
        for dx in -1..=1 {
            for dy in -1..=1 {
                for dz in -1..=1 {
                    if let Some(v) = self.grid.get(&[c[0] + dx, c[1] + dy, c[2] + dz]) {
                        for &j in v {
                            if j < i
                                && first.is_none_or(|f| j < f)
                                && dist(nodes[i].enu, nodes[j].enu) < self.site_m
                            {
                                first = Some(j);
                            }
                        }
                    }
                }
            }
        }
        nodes[i].site = first.map_or(i, |j| nodes[j].site);
        self.grid.entry(c).or_default().push(i);
    }

    fn sites_from_scratch(&mut self, nodes: &mut [Node], site_m: f64) {
        self.site_m = site_m;
        self.grid.clear();
        for i in 0..nodes.len() {
            self.add_site(nodes, i);
        }
    }
}

impl Ground {
    /// The ground's height at (e, n).
    pub(super) fn at(&self, _p: [f64; 2]) -> f64 {
        self.u0
    }

    fn centroid(pts: &[[f64; 3]]) -> [f64; 2] {
        let k = pts.len().max(1) as f64;
        [
            pts.iter().map(|p| p[0]).sum::<f64>() / k,
            pts.iter().map(|p| p[1]).sum::<f64>() / k,
        ]
    }

    /// Level at height `u`.
    fn level(u: f64, pts: &[[f64; 3]]) -> Ground {
        Ground {
            u0: u,
            centre: Self::centroid(pts),
        }
    }

    /// Level at the median node's height (see the type).
    fn under(pts: &[[f64; 3]]) -> Ground {
        let mut h: Vec<f64> = pts.iter().map(|p| p[2]).collect();
        let m = h.len() / 2;
        let u = if h.is_empty() {
            0.0
        } else {
            *h.select_nth_unstable_by(m, f64::total_cmp).1
        };
        Ground::level(u, pts)
    }
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
