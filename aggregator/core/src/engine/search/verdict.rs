//! The verdict on a hypothesis: its local fit (LO-RANSAC gathering, the
//! earlier-pick swaps), then the tests a source must pass (χ², mostly
//! echoes, weak picks, the detection fraction of the live nodes due,
//! confirmation by sites, the a-contrario chance of its support).
//!
//! `impl Engine` rather than on [`super::Search`]: the pre-final challenge
//! (`super::super::challenge`) judges an event's refits by the same rules as
//! a new source.

use blastnet_contract::{StreamKind, UtcNs};

use super::super::fit::Predicted;
use super::super::{Det, Engine, Member};
use super::Found;
use crate::locate::{Dims, DimsChoice, Solution};
use crate::propagation::Phase;

/// Earlier-pick swaps tried per judged hypothesis (see `try_earlier_picks`).
const MAX_SWAPS: usize = 4;

/// Half-width (s) of the window around a predicted arrival over which a
/// node's local pick rate is measured for the coincidence test.
pub(in crate::engine) const DENSITY_WINDOW_S: f64 = 2.0;
/// Shortest delivered span (s) over which a node's pick rate is estimated.
pub(in crate::engine) const MIN_DENSITY_SPAN_S: f64 = 0.5;

/// The chance that picks at random, `rate_hz` a second (Poisson), put one
/// within `gate_s` either side of a given time.
pub(in crate::engine) fn chance_in_gate(rate_hz: f64, gate_s: f64) -> f64 {
    1.0 - (-rate_hz * 2.0 * gate_s).exp()
}
/// Largest chance probability of a fit's support (see `chance_tail`): the
/// seeding tries up to thousands of hypotheses per second of a salvo, so one
/// coincidence in ~10⁴ is tolerated.
const MAX_CHANCE: f64 = 1e-4;

/// Sites a fit uses, and its χ² (to compare fits of one source).
#[derive(Debug, Clone, Copy)]
struct FitScore {
    sites: usize,
    chi2: f64,
}

/// The live nodes a fit does not use that have no pick near its predicted
/// arrival (see [`Engine::negative_evidence`]).
struct Unheard {
    /// Those whose arrival is already due: missed.
    missing: usize,
    /// Those whose arrival is not yet due: they may still report it.
    not_due: usize,
}

/// A site's chance of a pick inside a fit's arrival gate (see
/// [`Engine::chance_tail`]).
struct SiteChance {
    site: usize,
    /// Probability of a chance pick in the gate (the largest over its sensors).
    p: f64,
    /// The fit uses a pick of the site.
    used: bool,
}

/// The verdict on a hypothesis. Transient, returned once per evaluated hypothesis.
#[allow(clippy::large_enum_variant)]
pub(in crate::engine) enum SeedVerdict {
    /// A source: the caller creates the event (or replaces the challenged one).
    Accept(Found),
    /// Not confirmed yet, and other live nodes' arrivals are not yet due:
    /// the sweep judges it once they are.
    Wait,
    Reject,
}

/// P(at least `k` successes) among independent trials with probabilities `ps`.
pub(in crate::engine) fn poisson_binomial_tail(ps: &[f64], k: usize) -> f64 {
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

/// `tails[k]` = P(at least `k` successes) among independent trials with
/// probabilities `ps`, for every k in 0..=ps.len() (as
/// [`poisson_binomial_tail`] for each k, from one pass over the
/// distribution: O(n²) for all of them rather than each).
pub(in crate::engine) fn poisson_binomial_tails(ps: &[f64], tails: &mut Vec<f64>) {
    // dist[j] = P(exactly j successes so far).
    tails.clear();
    tails.resize(ps.len() + 1, 0.0);
    tails[0] = 1.0;
    for (i, &p) in ps.iter().enumerate() {
        let p = p.clamp(0.0, 1.0);
        for j in (1..=i + 1).rev() {
            tails[j] = tails[j] * (1.0 - p) + tails[j - 1] * p;
        }
        tails[0] *= 1.0 - p;
    }
    // Suffix sums, smallest terms first.
    let mut acc = 0.0;
    for t in tails.iter_mut().rev() {
        acc += *t;
        *t = acc;
    }
}

impl Engine {
    /// Local optimisation of hypothesis `h` (LO-RANSAC): gather the picks it
    /// explains (the earliest per node), fit, gather again around the fit,
    /// refit; then drop the worst pick while χ² is too large.
    pub(in crate::engine) fn gather_fit(
        &self,
        dets: &[Det],
        h: [f64; 4],
        tref: UtcNs,
    ) -> Option<Found> {
        let mut hyp = h;
        let mut htref = tref;
        let mut sol_opt: Option<Found> = None;
        // Two rounds: gate on the hypothesis, then on the refined solution.
        for _round in 0..2 {
            let mut pick: Vec<usize> = Vec::new(); // det indices
            for (i, d) in dets.iter().enumerate() {
                let (t, g) = self.prop.travel_and_gradient(
                    Phase::Acoustic,
                    [hyp[0], hyp[1], hyp[2]],
                    self.nodes[d.node].enu,
                );
                let r = d.onset.secs_since(htref) - hyp[3] - t;
                let gate = match &sol_opt {
                    None => self.cfg.gate_sigmas * d.sigma + self.cfg.association_tolerance_s,
                    Some(Found { sol: s, .. }) => {
                        let var = crate::engine::fit::quad_form(
                            &s.uncertainty.covariance,
                            [g[0], g[1], g[2], 1.0],
                        );
                        // Plus the tolerance, as the first gate: a fit of a
                        // few picks can be confident and wrong; the picks it
                        // nearly explains must be seen to pull it right.
                        self.cfg.gate_sigmas * (d.sigma * d.sigma + var.max(0.0)).sqrt()
                            + self.cfg.association_tolerance_s
                    }
                };
                if r.abs() <= gate {
                    // Several consistent picks at one node: the earliest is
                    // the direct path (echoes only come later).
                    match pick.iter_mut().find(|p| dets[**p].node == d.node) {
                        Some(p) => {
                            if d.onset < dets[*p].onset {
                                *p = i;
                            }
                        }
                        None => pick.push(i),
                    }
                }
            }
            if pick.len() < self.cfg.min_nodes_ground {
                return None;
            }
            // The refined solution gathers the same picks: it stands (a fit
            // of the same arrivals from its own solution would return it).
            if sol_opt.as_ref().is_some_and(|f| {
                f.members.len() == pick.len()
                    && f.members
                        .iter()
                        .zip(&pick)
                        .all(|(a, &b)| a.det.uid == dets[b].uid)
            }) {
                break;
            }
            let mut members: Vec<Member> = pick
                .iter()
                .map(|&i| Member {
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
            sol_opt = Some(Found {
                members,
                sol,
                tref: t_ev,
            });
        }
        let Found {
            mut members,
            mut sol,
            tref: t_ev,
        } = sol_opt?;
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
        Some(Found {
            members,
            sol,
            tref: t_ev,
        })
    }

    /// Whether a fit says where its source is: its horizontal 1σ is within
    /// the aperture of the nodes it uses (their largest distance apart).
    /// Time differences across an aperture `a` resolve a source's bearing
    /// at any range but its range only out to a few `a` (the range error
    /// grows as R²/a); a fit whose 1σ exceeds `a` itself is a bearing with
    /// an arbitrary range, typically picks of echoes and codas that agree
    /// with a source tens of kilometres away (ShotSpotter: σ_h of 0.9 to
    /// 2,000 km; random scenes: origin times up to two hours before the
    /// recording). Not a location, so not an event.
    pub(in crate::engine) fn localised(&self, members: &[Member], sol: &Solution) -> bool {
        let used: Vec<[f64; 3]> = members
            .iter()
            .filter(|m| m.used)
            .map(|m| self.nodes[m.det.node].enu)
            .collect();
        let mut aperture: f64 = 0.0;
        for (i, a) in used.iter().enumerate() {
            for b in &used[i + 1..] {
                aperture = aperture.max(super::super::dist(*a, *b));
            }
        }
        sol.uncertainty.horizontal_m.is_finite() && sol.uncertainty.horizontal_m <= aperture
    }

    /// The sites (co-located sensors count once) of the used `members`.
    pub(in crate::engine) fn used_sites(&self, members: &[Member]) -> usize {
        let mut sites: Vec<usize> = members
            .iter()
            .filter(|m| m.used)
            .map(|m| self.nodes[m.det.node].site)
            .collect();
        sites.sort_unstable();
        sites.dedup();
        sites.len()
    }

    /// Sites a fit uses, and its χ² (to compare fits of one source).
    fn fit_score(&self, members: &[Member], sol: &Solution) -> FitScore {
        FitScore {
            sites: self.used_sites(members),
            chi2: sol.chi2,
        }
    }

    /// Refine hypothesis `h` on the picks it explains and decide: at once
    /// (`sweep` false: a search online, as arrivals come in) only a
    /// confirmed source is accepted. Where chance alone explains several
    /// nodes (`dense`, see `Engine::local_chance`), earlier picks are not
    /// tried in place of the fit's own: nearly every node then has a
    /// chance pick within the outlier window before its used one, each
    /// try is a refit (a fifth of the engine's time under a storm of 200
    /// nodes at 5 picks/s), and a swap a chance pick wins is no evidence.
    pub(in crate::engine) fn evaluate_seed(
        &self,
        dets: &[Det],
        h: [f64; 4],
        tref: UtcNs,
        sweep: bool,
        dense: bool,
    ) -> SeedVerdict {
        let Some(found) = self.gather_fit(dets, h, tref) else {
            return SeedVerdict::Reject;
        };
        let found = if dense {
            found
        } else {
            self.try_earlier_picks(dets, found)
        };
        self.judge_fit(found, sweep)
    }

    /// A repeat of an earlier source (see `Engine::find_repeats`): `dets`
    /// (one pick per node) fitted from `h` (the earlier source, origin
    /// shifted) and judged as the sweep judges any hypothesis.
    pub(in crate::engine) fn evaluate_repeat(
        &self,
        dets: &[Det],
        h: [f64; 4],
        tref: UtcNs,
    ) -> Option<Found> {
        let found = self.gather_fit(dets, h, tref)?;
        match self.judge_fit(found, true) {
            SeedVerdict::Accept(f) => Some(f),
            _ => None,
        }
    }

    /// The local fit `found` of candidates `dets`, or a better one with an
    /// earlier pick in place of one of its own.
    fn try_earlier_picks(&self, dets: &[Det], found: Found) -> Found {
        let Found {
            mut members,
            mut sol,
            tref: t_ev,
        } = found;
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
            if score.sites >= avail.len() {
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
                    .filter(|f| {
                        let sc = self.fit_score(&f.members, &f.sol);
                        f.sol.chi2_ok(0.999)
                            && (sc.sites > score.sites
                                || (sc.sites == score.sites && sc.chi2 < score.chi2))
                    });
                if let Some(Found {
                    members: m2,
                    sol: s2,
                    ..
                }) = better
                {
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
        Found {
            members,
            sol,
            tref: t_ev,
        }
    }

    /// The verdict on a local fit: rejected (χ², mostly echoes, too few
    /// strong picks, too few of the due live nodes, support no better than
    /// chance), waiting (for arrivals not yet due, or online for the
    /// sweep), or accepted (confirmed by enough sites, or in the sweep on
    /// the full negative evidence).
    fn judge_fit(&self, found: Found, sweep: bool) -> SeedVerdict {
        let Found {
            members,
            sol,
            tref: t_ev,
        } = found;
        let n_used = members.iter().filter(|m| m.used).count();
        if !sol.chi2_ok(0.999) || n_used < self.cfg.min_nodes_ground {
            return SeedVerdict::Reject;
        }
        // Mostly probable echoes (picks that follow an associated direct
        // arrival at their node by < echo_window_s) or subordinate picks:
        // reverberation of a located source or noise beside a louder
        // pulse, not a new source. With one check beyond its unknowns, half
        // such picks, or picks in located sources' codas (see `Det::coda`),
        // are enough: that one check is passed by most mixes of echoes
        // (the weak-pick rule below), and reverberation lasts seconds
        // (ShotSpotter FP1–FP3: 15 → 5 ghost events, no shot lost; random
        // tuning scenes: 31 → 29 ghosts, recall unchanged). With more
        // checks a fit of quiet picks is a quiet source: in a salvo a small
        // intercept follows a large blast by seconds, 12 dB or more below
        // it at most nodes (counted as echoes at any support, the random
        // tuning scenes lost 11 % of their sources inside the array).
        let one_check = n_used <= sol.dims.unknowns() + 1;
        let echoes = members
            .iter()
            .filter(|m| m.used && (m.det.echo || m.det.subordinate || (one_check && m.det.coda)))
            .count();
        if 2 * echoes > n_used || (one_check && 2 * echoes >= n_used) {
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
        let Unheard { missing, not_due } = self.negative_evidence(&sol, t_ev, &used_nodes);
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
        if !self.localised(&members, &sol) {
            return SeedVerdict::Reject;
        }
        if confirmed {
            return SeedVerdict::Accept(Found {
                members,
                sol,
                tref: t_ev,
            });
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
            return SeedVerdict::Accept(Found {
                members,
                sol,
                tref: t_ev,
            });
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
    pub(in crate::engine) fn chance_tail(
        &self,
        sol: &Solution,
        tref: UtcNs,
        members: &[Member],
    ) -> f64 {
        // Per site: hit probability (max over its sensors) and whether used.
        let mut sites: Vec<SiteChance> = Vec::new();
        for n in 0..self.nodes.len() {
            let node = &self.nodes[n];
            let used = members.iter().any(|m| m.used && m.det.node == n);
            let Predicted { at: t, sigma: s } = self.predict(sol, n, Phase::Acoustic);
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
            let rate = count as f64 / self.density_span(n, centre);
            let gate = self.cfg.gate_sigmas * (s * s + sig * sig).sqrt();
            let p = chance_in_gate(rate, gate);
            match sites.iter_mut().find(|x| x.site == node.site) {
                Some(x) => {
                    x.p = x.p.max(p);
                    x.used |= used;
                }
                None => sites.push(SiteChance {
                    site: node.site,
                    p,
                    used,
                }),
            }
        }
        let k = sol.dims.unknowns();
        // Drop the k used sites least likely to be hit by chance.
        let mut used_p: Vec<f64> = sites.iter().filter(|x| x.used).map(|x| x.p).collect();
        used_p.sort_by(f64::total_cmp);
        let n_used = used_p.len();
        if n_used <= k {
            // Nothing beyond the unknowns to test: the zero-dof rules apply.
            return 0.0;
        }
        // A test no source could pass (few sites, dense picks: e.g. six
        // sensors in a noisy street) cannot discriminate: not applied.
        let mut all_p: Vec<f64> = sites.iter().map(|x| x.p).collect();
        all_p.sort_by(f64::total_cmp);
        let best: f64 = all_p.iter().skip(k).product();
        if best > MAX_CHANCE {
            return 0.0;
        }
        let mut ps: Vec<f64> = used_p[k..].to_vec();
        ps.extend(sites.iter().filter(|x| !x.used).map(|x| x.p));
        poisson_binomial_tail(&ps, n_used - k)
    }

    /// The part of the window of `DENSITY_WINDOW_S` around `centre` over
    /// which the pool holds node `n`'s picks, s (at least
    /// `MIN_DENSITY_SPAN_S`): online, a far node's window may reach past
    /// its newest pick, and the sweep judges picks near the pool's oldest;
    /// counting the part not held as empty would understate the rate (and
    /// make a coincidence look significant: in a storm of 5 random picks a
    /// second, the sweep's first hypotheses explained twice the nodes the
    /// rate over the whole window predicted).
    pub(in crate::engine) fn density_span(&self, n: usize, centre: UtcNs) -> f64 {
        let w = DENSITY_WINDOW_S;
        let from = self.pool_from.map_or(-w, |f| f.secs_since(centre)).max(-w);
        let to = self.due_time(n).secs_since(centre).min(w);
        (to - from).max(MIN_DENSITY_SPAN_S)
    }

    /// Live nodes outside `used_nodes` whose predicted arrival is already due
    /// (and that have no pending pick near it), and those not yet due.
    fn negative_evidence(&self, sol: &Solution, tref: UtcNs, used_nodes: &[usize]) -> Unheard {
        // Per node asked about: its predicted arrival (s on `tref`) and gate.
        let asked: Vec<Option<(f64, f64)>> = (0..self.nodes.len())
            .map(|n| {
                let Predicted { at: t, sigma: s } = self.predict(sol, n, Phase::Acoustic);
                let asked =
                    self.nodes[n].expected_at(tref.add_secs_f64(t)) && !used_nodes.contains(&n);
                let gate = self.cfg.gate_sigmas * s + self.cfg.association_tolerance_s;
                asked.then_some((t, gate))
            })
            .collect();
        // One pass over the pool (not one per node: a storm's pool holds
        // thousands of picks).
        let mut has_pick = vec![false; self.nodes.len()];
        for q in &self.pending {
            if let Some(Some((t, gate))) = asked.get(q.node) {
                if q.stream == StreamKind::Acoustic
                    && (q.onset.secs_since(tref) - t).abs() <= gate + self.cfg.gate_sigmas * q.sigma
                {
                    has_pick[q.node] = true;
                }
            }
        }
        let (mut missing, mut not_due) = (0, 0);
        for (n, a) in asked.iter().enumerate() {
            let Some((t, gate)) = a else {
                continue;
            };
            if has_pick[n] {
                continue;
            }
            if tref.add_secs_f64(t + gate) < self.due_time(n) {
                missing += 1;
            } else {
                not_due += 1;
            }
        }
        Unheard { missing, not_due }
    }
}

#[cfg(test)]
mod tests {
    use super::{poisson_binomial_tail, poisson_binomial_tails};

    #[test]
    fn all_tails_at_once_are_each_tail() {
        let ps: Vec<f64> = (0..40).map(|i| ((i * 37) % 100) as f64 / 100.0).collect();
        let mut tails = Vec::new();
        poisson_binomial_tails(&ps, &mut tails);
        assert_eq!(tails.len(), ps.len() + 1);
        for (k, t) in tails.iter().enumerate() {
            let one = poisson_binomial_tail(&ps, k);
            // Sums of the same terms in another order: a few ulps apart.
            assert!(
                (t - one).abs() <= 1e-12 * one.max(1e-300) + 1e-300,
                "k {k}: {t} vs {one}"
            );
        }
        // Binomial check: 10 fair coins, at least 8 heads = 56/1024.
        poisson_binomial_tails(&[0.5; 10], &mut tails);
        assert!((tails[8] - 56.0 / 1024.0).abs() < 1e-15);
    }
}
