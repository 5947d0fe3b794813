//! The search for sources (see the module documentation of [`super`]): with
//! one pending pick as the pivot, hypotheses from the closed forms of
//! triples (ground plane) and quadruples (free height), scored by the sites
//! they explain, the best refined locally and judged ([`verdict`]: χ²,
//! echoes, weak picks, negative evidence, the a-contrario chance test).
//!
//! Owns its types, constants and scratch buffers. The shape: a [`Search`]
//! borrows the engine read-only for one pivot, and its steps, each named
//! for what it decides, fill the [`SearchScratch`] the engine lends it
//! (taken out of the engine for the search and put back after: the buffers
//! are kept from one search to the next, as a search runs for most
//! detections, while the rest of the engine stays borrowed shared). The
//! judging of a hypothesis is `impl Engine` in [`verdict`] rather than on
//! `Search` because the pre-final challenge judges refits with it too.

use blastnet_contract::{StreamKind, UtcNs};

use super::{dist, enu, Det, Engine, Member};
use crate::locate::{closed_form_of, Arrival, Guesses, Solution};
use crate::propagation::Phase;

pub(super) mod verdict;

use verdict::SeedVerdict;

/// The sweep draws hypotheses first from the picks of this many nodes nearest the pivot's.
const NEAR_NODES: usize = 4;

/// At most this many distinct hypotheses of one search are refined and judged
/// (the best supported; a refinement is most of a search's cost). Measured:
/// 3 locates as much as 6 on city-salvo and ShotSpotter; 2 loses sources.
const MAX_REFINED_HYPOTHESES: usize = 3;

/// The sweep tries free-height quadruples only when a ground triple already
/// explains this many sites (measured: 4 keeps every city-salvo airburst and
/// saves a quarter of the engine's time on lone false triggers; 5 loses one).
const SWEEP_QUAD_MIN_SUPPORT: usize = 4;

/// Candidates (nearest in time to the pivot) from which quadruples are drawn.
const QUAD_CANDIDATES: usize = 12;

/// A source found by a search (or a local fit): its members, the fit, and
/// the fit's time axis.
pub(super) struct Found {
    pub(super) members: Vec<Member>,
    pub(super) sol: Solution,
    /// The fit's time axis (its earliest member's onset).
    pub(super) tref: UtcNs,
}

/// How well a hypothesis explains a search's candidates (see
/// [`Search::support`]).
#[derive(Debug, Clone, Copy)]
struct Support {
    /// Nodes explained (the best pick per node within the seed gate).
    nodes: usize,
    /// Of them, those explained only by weak picks (see `Det::weak`).
    weak: usize,
    /// χ² of the best picks.
    chi2: f64,
}

/// A hypothesis: a source position (e, n, u, m) and origin time (s on the
/// search's axis) from a closed form, with its support.
#[derive(Debug, Clone, Copy)]
struct Hypothesis {
    at: [f64; 4],
    support: Support,
}

/// The candidate picks of one search, laid out for [`Search::support`]
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

/// Buffers of the search (see [`Search`]), kept from one search to the
/// next: a search runs for most detections.
#[derive(Debug, Default, Clone)]
pub(super) struct SearchScratch {
    /// Outliers of open events lent to the search as candidates.
    lent: Vec<Det>,
    /// Candidates: indices into the pending pool, then into `lent`; the
    /// pivot first, the others nearest in time first.
    cand: Vec<usize>,
    /// The nodes of the candidates, ascending.
    nodes_in: Vec<usize>,
    /// The candidates (as `cand`) and their arrivals on the search's axis.
    dets: Vec<Det>,
    arr: Vec<Arrival>,
    /// Indices into `dets` from which triples and quadruples are drawn.
    tri: Vec<usize>,
    quad: Vec<usize>,
    /// Per candidate: consistent with the pivot.
    with_pivot: Vec<bool>,
    /// Pairwise consistency of the quadruple candidates (`quad.len()`²).
    qc: Vec<bool>,
    hyps: Vec<Hypothesis>,
    tab: SupportTable,
    order: Vec<usize>,
}

impl Engine {
    /// Whether `a` and `b` can be arrivals of one source: their onsets lie
    /// no further apart than their nodes' pair window (plus the gate).
    pub(super) fn consistent(&self, a: &Det, b: &Det) -> bool {
        let dt = a.onset.secs_since(b.onset).abs();
        let s = (a.sigma * a.sigma + b.sigma * b.sigma).sqrt();
        dt <= self.pair_window(a.node, b.node) + self.cfg.gate_sigmas * s
    }

    /// Look for a source that explains pending[p] (the pivot) and other
    /// pending picks: hypotheses from every consistent triple (ground plane)
    /// and quadruple (free height) of the picks nearest in time, each scored
    /// by the sites it explains among all consistent picks (a far node's
    /// arrival may come seconds after the pivot), the best refined and
    /// judged. Online (`sweep` false) only a confirmed source is accepted;
    /// in the sweep everything is due and the verdict is final. Returns the
    /// accepted source, if any (the caller creates the event).
    pub(super) fn search(&mut self, p: usize, sweep: bool) -> Option<Found> {
        let mut sc = std::mem::take(&mut self.scratch);
        let found = Search::new(self, p, sweep).run(&mut sc);
        self.scratch = sc;
        found
    }
}

/// One search, with `pending[p]` as the pivot, over the engine's state.
struct Search<'e> {
    eng: &'e Engine,
    /// The pivot's index in the pending pool.
    p: usize,
    pivot: Det,
    /// The search's time axis: the pivot's onset.
    tref: UtcNs,
    /// In the sweep (every arrival due, the verdict final) rather than online.
    sweep: bool,
    /// Sites that confirm a ground source at once.
    confirm_2d: usize,
}

impl<'e> Search<'e> {
    fn new(eng: &'e Engine, p: usize, sweep: bool) -> Search<'e> {
        let pivot = eng.pending[p];
        let confirm_2d = eng
            .cfg
            .min_nodes_preliminary
            .max(3 + eng.cfg.confirm_extra_arrivals);
        Search {
            eng,
            p,
            pivot,
            tref: pivot.onset,
            sweep,
            confirm_2d,
        }
    }

    /// The steps of a search, in order.
    fn run(&self, sc: &mut SearchScratch) -> Option<Found> {
        if !self.pivot_can_seed() {
            return None;
        }
        self.gather_candidates(sc);
        if !self.enough_nodes_reported(sc) {
            return None;
        }
        self.lay_out(sc);
        self.draw_index_sets(sc);
        sc.hyps.clear();
        self.score_triples(sc);
        // Online, free height is tried only when no ground hypothesis could be
        // confirmed (many more quadruples than triples, so more chance fits);
        // the sweep tries both (an airburst's ground fits are partial).
        let best2 = sc.hyps.iter().map(|h| h.support.nodes).max().unwrap_or(0);
        if !self.tries_free_height(best2) {
            sc.quad.clear();
        }
        self.score_quadruples(sc);
        self.drop_hopeless(sc);
        self.refine_best(sc)
    }

    /// Only an acoustic pick of a node not flagged seeds a source.
    fn pivot_can_seed(&self) -> bool {
        self.pivot.stream == StreamKind::Acoustic && !self.eng.nodes[self.pivot.node].flagged
    }

    /// Candidate `i` (see `SearchScratch::cand`).
    fn get<'a>(&'a self, lent: &'a [Det], i: usize) -> &'a Det {
        let np = self.eng.pending.len();
        if i < np {
            &self.eng.pending[i]
        } else {
            &lent[i - np]
        }
    }

    /// Candidates: consistent acoustic picks from other nodes, nearest in
    /// time first: pending picks, and the picks open events rejected as
    /// outliers (in a salvo, another source's arrival is often an outlier
    /// of its neighbour in time; it must stay free to support its own).
    fn gather_candidates(&self, sc: &mut SearchScratch) {
        let eng = self.eng;
        let (p, pivot, tref) = (self.p, self.pivot, self.tref);
        let SearchScratch { lent, cand, .. } = sc;
        lent.clear();
        lent.extend(
            eng.events
                .iter()
                .flat_map(|ev| ev.members.iter())
                .filter(|m| !m.used && m.det.stream == StreamKind::Acoustic)
                .map(|m| m.det),
        );
        let lent: &[Det] = lent;
        let np = eng.pending.len();
        // The pivot first, then the candidates.
        cand.clear();
        cand.push(p);
        cand.extend((0..np + lent.len()).filter(|&i| {
            let q = self.get(lent, i);
            i != p
                && q.stream == StreamKind::Acoustic
                && q.node != pivot.node
                && !eng.nodes[q.node].flagged
                && eng.consistent(q, &pivot)
        }));
        // Nearest in time first (ties in pool order).
        cand[1..]
            .sort_unstable_by_key(|&i| ((self.get(lent, i).onset.0 - tref.0).unsigned_abs(), i));
    }

    /// Whether the candidates come from enough nodes for a source (and,
    /// online, where only a confirmed source is accepted, from enough sites
    /// to confirm one).
    fn enough_nodes_reported(&self, sc: &mut SearchScratch) -> bool {
        let eng = self.eng;
        let SearchScratch {
            lent,
            cand,
            nodes_in,
            ..
        } = sc;
        nodes_in.clear();
        nodes_in.extend(cand.iter().map(|&i| self.get(lent, i).node));
        nodes_in.sort_unstable();
        nodes_in.dedup();
        if nodes_in.len() < eng.cfg.min_nodes_ground {
            return false;
        }
        if !self.sweep {
            // Online only a confirmed source is accepted: too few sites
            // have reported yet for any hypothesis to be.
            let mut sites: Vec<usize> = nodes_in.iter().map(|&n| eng.nodes[n].site).collect();
            sites.sort_unstable();
            sites.dedup();
            if sites.len() < self.confirm_2d {
                return false;
            }
        }
        true
    }

    /// The candidates as picks and arrivals on the search's axis, their
    /// support table, and which are consistent with the pivot.
    fn lay_out(&self, sc: &mut SearchScratch) {
        let eng = self.eng;
        let tref = self.tref;
        let SearchScratch {
            lent,
            cand,
            dets,
            arr,
            tab,
            order,
            with_pivot,
            ..
        } = sc;
        dets.clear();
        dets.extend(cand.iter().map(|&i| *self.get(lent, i)));
        arr.clear();
        arr.extend(dets.iter().map(|d| Arrival {
            position: enu(eng.nodes[d.node].enu),
            time_s: d.onset.secs_since(tref),
            sigma_s: d.sigma,
            phase: Phase::Acoustic,
        }));
        self.support_table(arr, dets, tab, order);
        // Candidates consistent with the pivot (computed once per search).
        with_pivot.clear();
        with_pivot.extend((0..dets.len()).map(|i| i > 0 && self.cons(dets, 0, i)));
    }

    /// Two picks of one hypothesis: distinct sites (sensors side by side
    /// make a degenerate triple or quadruple) and consistent in time.
    fn cons(&self, dets: &[Det], i: usize, j: usize) -> bool {
        let eng = self.eng;
        eng.nodes[dets[i].node].site != eng.nodes[dets[j].node].site
            && eng.consistent(&dets[i], &dets[j])
    }

    /// The sweep draws hypotheses first from the picks of the nodes
    /// nearest the pivot's: for a source outside the array the other
    /// nodes' arrivals come seconds after the pivot, behind dozens of
    /// picks of other sources, but a neighbour's within d/c of it. The
    /// nearest `NEAR_NODES` sites (a second sensor at a site adds no
    /// geometry); none online.
    fn nearest_sites(&self) -> Vec<usize> {
        if !self.sweep {
            return Vec::new();
        }
        let nodes = &self.eng.nodes;
        let pivot = self.pivot;
        let here = nodes[pivot.node].enu;
        let mut by_d: Vec<(f64, usize)> = (0..nodes.len())
            .filter(|&n| n != pivot.node && nodes[n].site != nodes[pivot.node].site)
            .map(|n| (dist(here, nodes[n].enu), n))
            .collect();
        by_d.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut seen: Vec<usize> = Vec::new();
        by_d.retain(|&(_, n)| {
            let s = nodes[n].site;
            !seen.contains(&s) && {
                seen.push(s);
                true
            }
        });
        by_d.iter().take(NEAR_NODES).map(|x| x.1).collect()
    }

    /// The candidates hypotheses are drawn from, nearest in time: triples
    /// from the nearest `max_seed_candidates` (and, in the sweep, the
    /// neighbours' picks too); quadruples from the nearest
    /// `QUAD_CANDIDATES` (and as many of the neighbours'). Only those
    /// consistent with the pivot.
    fn draw_index_sets(&self, sc: &mut SearchScratch) {
        let near = self.nearest_sites();
        let SearchScratch {
            dets,
            tri,
            quad,
            with_pivot,
            ..
        } = sc;
        let m = dets.len();
        let mg = m.min(self.eng.cfg.max_seed_candidates.max(2));
        let mq = m.min(QUAD_CANDIDATES);
        tri.clear();
        tri.extend(1..mg);
        tri.extend((mg..m).filter(|&i| near.contains(&dets[i].node)));
        quad.clear();
        quad.extend(1..mq);
        quad.extend(
            (mq..m)
                .filter(|&i| near.contains(&dets[i].node))
                .take(QUAD_CANDIDATES),
        );
        tri.retain(|&i| with_pivot[i]);
        quad.retain(|&i| with_pivot[i]);
    }

    /// The closed-form sources of arrivals `idx`. The closed form assumes
    /// one speed. Wind makes the effective speed depend on the direction:
    /// for a source outside the array (arrival differences near the
    /// baseline's d/c) a few m/s of wind leave the still-air hyperbolas
    /// without an intersection. Then the extremes of the effective speed
    /// are tried; refinement uses the full model.
    fn guesses(&self, arr: &[Arrival], idx: &[usize]) -> [Guesses; 3] {
        let prop = &self.eng.prop;
        let ground_u = self.eng.ground_all;
        let c = prop.sound_speed_mps;
        let wind = prop.wind_mps[0].hypot(prop.wind_mps[1]);
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
    }

    /// Ground-plane hypotheses from every consistent triple of the pivot
    /// and two candidates, with their support; stops at one that explains
    /// every node by strong picks (none can do better; one with weak picks
    /// may be bettered).
    fn score_triples(&self, sc: &mut SearchScratch) {
        let SearchScratch {
            nodes_in,
            dets,
            arr,
            tri,
            hyps,
            tab,
            ..
        } = sc;
        let full = nodes_in.len();
        for (a, &i) in tri.iter().enumerate() {
            for &j in &tri[a + 1..] {
                if !self.cons(dets, i, j) {
                    continue;
                }
                let mut idx = [0, i, j];
                idx.sort_unstable();
                for h in self.guesses(arr, &idx).iter().flat_map(Guesses::iter) {
                    let support = self.support(tab, h);
                    hyps.push(Hypothesis { at: h, support });
                    if support.nodes == full && support.weak == 0 {
                        return;
                    }
                }
            }
        }
    }

    /// Whether free-height quadruples are tried, given the best support of
    /// a ground hypothesis. Online, only when no ground hypothesis could be
    /// confirmed; the sweep tries them only where the ground triples found
    /// something coherent beyond a triple (an airburst's ground fits
    /// explain several sites; a lone false trigger's do not).
    fn tries_free_height(&self, best_ground: usize) -> bool {
        let sweep = self.sweep;
        (sweep || best_ground < self.confirm_2d) && !(sweep && best_ground < SWEEP_QUAD_MIN_SUPPORT)
    }

    /// Free-height hypotheses (and their least-squares ground points) from
    /// every consistent quadruple of the pivot and three candidates, with
    /// their support; stops, as the triples, at one that explains every
    /// node by strong picks. (An airburst's arrivals are the most compact
    /// in time, so quadruples come from the nearest few.)
    fn score_quadruples(&self, sc: &mut SearchScratch) {
        let SearchScratch {
            nodes_in,
            dets,
            arr,
            quad,
            qc,
            hyps,
            tab,
            ..
        } = sc;
        let full = nodes_in.len();
        // Pairwise consistency of the quadruple candidates (each pair is
        // looked at by many quadruples).
        let nq = quad.len();
        qc.clear();
        qc.resize(nq * nq, false);
        for a in 0..nq {
            for b in a + 1..nq {
                qc[a * nq + b] = self.cons(dets, quad[a], quad[b]);
            }
        }
        for a in 0..nq {
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
                    for h in self.guesses(arr, &idx).iter().flat_map(Guesses::iter) {
                        if !self.quad_point_fits_own(&h, &idx, dets, arr) {
                            continue;
                        }
                        let support = self.support(tab, h);
                        hyps.push(Hypothesis { at: h, support });
                        if support.nodes == full && support.weak == 0 {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Whether point `h` of quadruple `idx` is worth scoring. Both of a
    /// quadruple's points are: the free-height one, and its least-squares
    /// ground point (with model errors of several ms, as in cities, four
    /// arrivals place a ground source better than any exact triple:
    /// measured on ShotSpotter, 3 points more shots within 15 m). The
    /// ground point is a least-squares fit: one that misses one of its own
    /// four arrivals (beyond the gate the support counts in) is no better
    /// than the triples already tried, and is not scored. (The free-height
    /// point fits all four by construction; under wind the still-air closed
    /// form need not, and every point is scored.)
    fn quad_point_fits_own(
        &self,
        h: &[f64; 4],
        idx: &[usize],
        dets: &[Det],
        arr: &[Arrival],
    ) -> bool {
        let eng = self.eng;
        let wind = eng.prop.wind_mps[0].hypot(eng.prop.wind_mps[1]);
        wind > 0.0
            || (h[2] - eng.ground_all).abs() > 1e-6
            || idx.iter().all(|&i| {
                let t = eng.prop.travel_time(
                    Phase::Acoustic,
                    [h[0], h[1], h[2]],
                    eng.nodes[dets[i].node].enu,
                );
                (arr[i].time_s - h[3] - t).abs()
                    <= eng.cfg.gate_sigmas * arr[i].sigma_s + eng.cfg.association_tolerance_s
            })
    }

    /// Drop the hypotheses that cannot become a source: fewer nodes than a
    /// ground fit needs, online fewer sites than confirm one, or hopeless.
    /// A hypothesis that explains fewer than half the sites the detection
    /// fraction asks for is hopeless even if refinement doubles its
    /// support: not refined (in a large network most false triggers'
    /// hypotheses end here, before any least-squares fit).
    fn drop_hopeless(&self, sc: &mut SearchScratch) {
        let eng = self.eng;
        let live = (0..eng.nodes.len())
            .filter(|&n| eng.nodes[n].expected_at(self.tref))
            .count();
        let hopeless = |s: usize| 2.0 * (s as f64) < eng.cfg.min_detect_fraction * live as f64;
        let (sweep, confirm_2d) = (self.sweep, self.confirm_2d);
        sc.hyps.retain(|h| {
            let s = h.support.nodes;
            s >= eng.cfg.min_nodes_ground && (sweep || s >= confirm_2d) && !hopeless(s)
        });
    }

    /// Refine and judge the best hypotheses, at most
    /// `MAX_REFINED_HYPOTHESES` distinct ones; the first accepted is the
    /// search's source. Best supported first, then the fewest sites
    /// explained only by weak picks (subordinate picks, and probable echoes
    /// quieter than the direct arrival they follow: with urban model errors
    /// of ~10 ms, a hypothesis mixing a shot's direct arrivals with echoes
    /// and another shot's arrivals often explains as many sites as the
    /// direct arrivals alone), then the best fit (ties in the order found).
    fn refine_best(&self, sc: &mut SearchScratch) -> Option<Found> {
        let SearchScratch { dets, hyps, .. } = sc;
        hyps.sort_by(|a, b| {
            let (a, b) = (a.support, b.support);
            b.nodes
                .cmp(&a.nodes)
                .then(a.weak.cmp(&b.weak))
                .then(a.chi2.total_cmp(&b.chi2))
        });
        let mut tried: Vec<[f64; 4]> = Vec::new();
        for hyp in hyps.iter() {
            let h = hyp.at;
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
            if let SeedVerdict::Accept(found) =
                self.eng.evaluate_seed(dets, h, self.tref, self.sweep)
            {
                return Some(found);
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
        let eng = self.eng;
        let tol = eng.cfg.association_tolerance_s;
        tab.pos.clear();
        tab.range.clear();
        tab.t.clear();
        tab.inv_sigma.clear();
        tab.gate.clear();
        tab.weak.clear();
        for (k, &i) in order.iter().enumerate() {
            let n = dets[i].node;
            if k == 0 || dets[order[k - 1]].node != n {
                tab.pos.push(eng.nodes[n].enu);
                tab.range.push(k..k);
            }
            if let Some(r) = tab.range.last_mut() {
                r.end = k + 1;
            }
            tab.t.push(arr[i].time_s);
            tab.inv_sigma.push(1.0 / arr[i].sigma_s);
            tab.gate.push(eng.cfg.gate_sigmas * arr[i].sigma_s + tol);
            tab.weak.push(dets[i].weak());
        }
    }

    /// Nodes explained by hypothesis `h` (best pick per node within the seed
    /// gate, strong picks before weak ones, see `Det::weak`), how many of
    /// them only by weak picks, and their χ².
    fn support(&self, tab: &SupportTable, h: [f64; 4]) -> Support {
        let src = [h[0], h[1], h[2]];
        let (mut count, mut weak, mut chi2) = (0, 0, 0.0);
        let (t, gate, inv, wk) = (&tab.t[..], &tab.gate[..], &tab.inv_sigma[..], &tab.weak[..]);
        for (p, r) in tab.pos.iter().zip(&tab.range) {
            let at = h[3] + self.eng.prop.travel_time(Phase::Acoustic, src, *p);
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
        Support {
            nodes: count,
            weak,
            chi2,
        }
    }
}
