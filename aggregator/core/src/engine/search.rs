//! The search for sources (see the module documentation of [`super`]):
//! hypotheses from the closed forms of triples and quadruples, scored by
//! the sites they explain, refined locally and judged (χ², echoes, weak
//! picks, negative evidence, the a-contrario chance test).

use super::*;

impl Engine {
    pub(super) fn consistent(&self, a: &Det, b: &Det) -> bool {
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
    pub(super) fn search(&mut self, p: usize, sweep: bool) -> Option<Found> {
        let mut sc = std::mem::take(&mut self.scratch);
        let found = self.seed(p, sweep, &mut sc);
        self.scratch = sc;
        found
    }

    pub(super) fn seed(&self, p: usize, sweep: bool, sc: &mut SearchScratch) -> Option<Found> {
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
    pub(super) fn support_table(
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
    pub(super) fn support(&self, tab: &SupportTable, h: [f64; 4]) -> (usize, usize, f64) {
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
    pub(super) fn gather_fit(
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
    pub(super) fn fit_score(&self, members: &[Member], sol: &Solution) -> (usize, f64) {
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
    pub(super) fn evaluate_seed(
        &self,
        dets: &[Det],
        h: [f64; 4],
        tref: UtcNs,
        sweep: bool,
    ) -> SeedVerdict {
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
    pub(super) fn chance_tail(&self, sol: &Solution, tref: UtcNs, members: &[Member]) -> f64 {
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
    pub(super) fn negative_evidence(
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
}
