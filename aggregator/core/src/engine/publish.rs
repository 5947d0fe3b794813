//! Publishing: an open event as a contract [`Event`] (`to_event`: location,
//! kind and confidence by a linear opinion pool, the airburst rule, yield on
//! the final revision) and finalisation (`finalise`: the last location, the
//! nearby unassociated picks listed as outliers, the residuals handed to the
//! node registry for clock flagging).
//!
//! Kept apart because it is the engine's only output path: every revision,
//! preliminary or final, leaves through `to_event`, and nothing here feeds
//! back into association.

use blastnet_contract::blast::Burst;
use blastnet_contract::wire::EVENT_SCHEMA;
use blastnet_contract::{
    ArrivalRef, EnuFrame, Event, EventStatus, Geodetic, Quality, SourceKind, StreamKind,
};

use super::{dist, kind_index, Action, Det, Engine, Member, OpenEvent};
use crate::calibration::{t_inflation, ErrorScale, EVENT_DOF};
use crate::locate::{Dims, DimsChoice};
use crate::propagation::Phase;
use crate::yield_est::estimate_yield_multi;

/// Height above the ground (and above 3 sigma of the fit's vertical
/// uncertainty) beyond which a source is an airburst, m.
const AIRBURST_MIN_HEIGHT_M: f64 = 100.0;

/// An unassociated pick listed with a final event.
pub(super) struct Outlier {
    pub(super) det: Det,
    /// Onset less the predicted acoustic arrival, s.
    pub(super) residual: f64,
    pub(super) reason: String,
    /// A later arrival at a node the event already uses (an echo or a
    /// re-trigger), not evidence against the node's clock.
    pub(super) echo: bool,
}

/// The covariance an equally good alternative `offset` (east, north, m)
/// away adds: the event is one of two locations, equally likely, so its
/// spread grows by that of a two-point mixture, (offset/2)(offset/2)ᵀ.
fn aliasing_covariance(offset: Option<[f64; 2]>) -> [[f64; 4]; 4] {
    let mut c = [[0.0; 4]; 4];
    if let Some([e, n]) = offset {
        let (e, n) = (e / 2.0, n / 2.0);
        c[0][0] = e * e;
        c[0][1] = e * n;
        c[1][0] = e * n;
        c[1][1] = n * n;
    }
    c
}

/// Above this chance probability of its support an event is marginal.
const MARGINAL_CHANCE: f64 = 0.01;
/// An alternative fits as well when its χ² exceeds the event's by at most
/// this: inside the event's 2σ likelihood region (Δχ² = 4).
const ALIAS_DCHI2: f64 = 4.0;
/// Refits the aliasing check makes per final event at most.
const MAX_ALIAS_TRIALS: usize = 16;
/// Events with more checks than this are not checked for chance support
/// or aliasing.
const MAX_ALIAS_CHECKS: u32 = 2;

impl Engine {
    /// Publish `ev` (taken out of the open events) as final: located on
    /// every arrival it has, with the unassociated picks near its
    /// predictions listed as outliers, and its residuals recorded per node
    /// (clock flags).
    pub(super) fn finalise(&mut self, mut ev: OpenEvent, out: &mut Vec<Action>) {
        let corrected = self.apply_terms(&mut ev);
        // Always locate the final set of arrivals.
        if !corrected && ev.members.iter().filter(|m| m.used).count() != ev.located_with {
            let s = &ev.sol;
            let start = Some([s.position.e, s.position.n, s.position.u, s.origin_s]);
            let mut members = ev.members.clone();
            if let Some(sol) = self.solve_members(&mut members, ev.tref, start) {
                ev.members = members;
                ev.sol = sol;
            }
        }
        let extra = self.outliers_near(&ev);
        // Residual history per live node, for clock flags.
        self.record_residuals(&ev.sol, ev.tref, &ev.members, &extra, out);
        let mut e = self.to_event(&ev, EventStatus::Final);
        e.revision = ev.revision + 1;
        for o in extra {
            e.outliers.push(ArrivalRef {
                node_id: self.nodes[o.det.node].info.id.clone(),
                seq: o.det.seq,
                stream: o.det.stream,
                onset_utc: o.det.raw_onset(),
                residual_s: o.residual,
                reason: Some(o.reason),
            });
        }
        out.push(Action::Publish(e));
    }

    /// Unassociated picks near `ev`'s predictions (echoes and inconsistent
    /// nodes): at most one inconsistent pick per node (the nearest to the
    /// prediction), every probable echo.
    fn outliers_near(&self, ev: &OpenEvent) -> Vec<Outlier> {
        let claimed = |uid: u64, evs: &[OpenEvent]| {
            evs.iter()
                .any(|e| e.members.iter().any(|m| m.det.uid == uid))
        };
        let mut extra: Vec<Outlier> = Vec::new();
        for q in &ev.cands {
            if claimed(q.uid, &self.events) || ev.members.iter().any(|m| m.det.uid == q.uid) {
                continue;
            }
            let pred = self.predict(&ev.sol, q.node, Phase::Acoustic).at;
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
                .find(|e| e.det.node == q.node && !e.echo && !echo)
            {
                Some(e) => {
                    if r.abs() < e.residual.abs() {
                        *e = Outlier {
                            det: *q,
                            residual: r,
                            reason,
                            echo,
                        };
                    }
                }
                None => extra.push(Outlier {
                    det: *q,
                    residual: r,
                    reason,
                    echo,
                }),
            }
        }
        extra
    }

    /// The factor the Cramér–Rao covariance of `ev`'s fit (for the sigmas
    /// its picks came with) is reported multiplied by. The sigmas rest on
    /// the site's timing scale, an estimate with ν degrees of freedom (see
    /// [`ErrorScale::dof`]: few at a fresh site); the event's own residuals
    /// are `dof` more. The variance factor's posterior mean given both is
    /// (ν + χ²)/(ν + dof) (the site's scale as a prior worth ν, the
    /// event's χ² over its dof as the measurement), and the estimate's own
    /// uncertainty widens the ellipses by [`t_inflation`] of ν + dof.
    /// Events whose residuals are larger than the scale (urban paths at a
    /// fresh site) widen; those whose residuals are smaller narrow, down to
    /// what the scale's prior weight allows.
    fn variance_factor(&self, ev: &OpenEvent) -> f64 {
        let site = ev.members.iter().find_map(|m| m.det.site);
        let i = site.map_or(0, |s| s as usize + 1);
        let nu = self.scales.get(i).map_or(EVENT_DOF, ErrorScale::dof);
        let (chi2, dof) = (ev.sol.chi2, ev.sol.dof as f64);
        let f = if chi2.is_finite() {
            (nu + chi2) / (nu + dof)
        } else {
            1.0
        };
        f * t_inflation(nu + dof)
    }

    /// `ev` as a contract event revision with `status` (the caller sets
    /// the revision number).
    ///
    /// The reported uncertainty is the fit's covariance, scaled by what
    /// its residuals and the timing scale's own uncertainty say (see
    /// [`Engine::variance_factor`]),
    /// plus what the weather adds (see [`Engine::weather_covariance`]).
    /// The covariance (e, n, u, t0) the weather's uncertainty adds to a
    /// solution: the sound speed (from `temperature_uncertainty_c`) and
    /// each wind component (`wind_uncertainty_mps`) are off by one sigma
    /// along every path at once, so their errors do not average out over
    /// the arrivals as independent pick errors do. To first order the
    /// solution moves by δx = C·Jᵀ·W·δt for a change δt of the predicted
    /// arrival times (C the fit's unscaled covariance, the Cramér–Rao bound;
    /// J the arrivals' gradients in (e, n, u, t0); W their inverse
    /// variances), δt from each parameter one sigma up and down.
    pub(super) fn weather_covariance(&self, ev: &OpenEvent) -> [[f64; 4]; 4] {
        let mut cov = [[0.0; 4]; 4];
        let s = &ev.sol;
        let src = s.position.to_array();
        let c = &s.crlb.covariance;
        let t_k = self.cfg.temperature_c + 273.15;
        let sigma_c =
            self.prop.sound_speed_mps * self.cfg.temperature_uncertainty_c / (2.0 * t_k.max(1.0));
        let sigma_w = self.cfg.wind_uncertainty_mps;
        for (k, sigma) in [(0, sigma_c), (1, sigma_w), (2, sigma_w)] {
            if sigma.is_nan() || sigma <= 0.0 {
                continue;
            }
            let shifted = |d: f64| {
                let mut p = self.prop;
                match k {
                    0 => p.sound_speed_mps += d,
                    1 => p.wind_mps[0] += d,
                    _ => p.wind_mps[1] += d,
                }
                p
            };
            let (up, down) = (shifted(sigma), shifted(-sigma));
            // Jᵀ·W·δt.
            let mut v = [0.0; 4];
            for m in ev.members.iter().filter(|m| m.used) {
                let rcv = self.nodes[m.det.node].enu;
                let (_, g) = self.prop.travel_and_gradient(m.phase, src, rcv);
                let dt =
                    0.5 * (up.travel_time(m.phase, src, rcv) - down.travel_time(m.phase, src, rcv));
                let w = dt / (m.det.sigma * m.det.sigma);
                for (vi, gi) in v.iter_mut().zip([g[0], g[1], g[2], 1.0]) {
                    *vi += gi * w;
                }
            }
            let mut d = [0.0; 4];
            for (i, di) in d.iter_mut().enumerate() {
                *di = (0..4).map(|j| c[i][j] * v[j]).sum();
            }
            if d.iter().all(|x| x.is_finite()) {
                for i in 0..4 {
                    for j in 0..4 {
                        cov[i][j] += d[i] * d[j];
                    }
                }
            }
        }
        cov
    }

    pub(super) fn to_event(&self, ev: &OpenEvent, status: EventStatus) -> Event {
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
            let height = ev.sol.position.u - self.ground_at(ev.sol.position.to_array());
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
            onset_utc: m.det.raw_onset(),
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
        let (quality, offset) = self.quality(ev, status);
        Event {
            schema: EVENT_SCHEMA.to_string(),
            event_id: ev.id.clone(),
            revision: ev.revision,
            origin_utc: ev.tref.add_secs_f64(ev.sol.origin_s),
            lat: g.lat,
            lon: g.lon,
            alt_m: g.alt_m,
            uncertainty: ev
                .sol
                .crlb
                .scaled(self.variance_factor(ev))
                .plus(&self.weather_covariance(ev))
                .plus(&aliasing_covariance(offset))
                .to_uncertainty(),
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
            quality: Some(quality),
        }
    }

    /// How firmly `ev`'s support pins it down (see [`Quality`]); the
    /// chance and the aliasing check for a final revision only.
    /// With it, the offset (east, north, m) of the alternative when aliased.
    fn quality(&self, ev: &OpenEvent, status: EventStatus) -> (Quality, Option<[f64; 2]>) {
        let checks = self
            .used_sites(&ev.members)
            .saturating_sub(ev.sol.dims.unknowns()) as u32;
        // Measured for a final revision with at most `MAX_ALIAS_CHECKS`
        // checks only: a preliminary one is revised within seconds, and the
        // engine's per-detection budget is microseconds; with three checks
        // or more the search's own a-contrario test has passed with room,
        // and one exchanged arrival is an outlier to the others, not an
        // alternative. 0: a test no source could pass (see `chance_tail`):
        // not measured.
        let (chance, offset) = if status == EventStatus::Final && checks <= MAX_ALIAS_CHECKS {
            let chance = Some(self.chance_tail(&ev.sol, ev.tref, &ev.members)).filter(|p| *p > 0.0);
            (chance, self.alternative(ev))
        } else {
            (None, None)
        };
        let quality = Quality {
            checks,
            chance,
            marginal: checks <= 1 || chance.is_some_and(|p| p > MARGINAL_CHANCE),
            aliased: offset.is_some(),
            alternative_m: offset.map(|[e, n]| e.hypot(n)),
        };
        (quality, offset)
    }

    /// The offset (east, north, m) of the farthest equally good alternative
    /// to `ev`'s location: one used arrival exchanged for another pick of
    /// its node within `outlier_window_s` (a burst's neighbouring round, an
    /// echo), refitted
    /// in the same model from the event's solution. Equally good: every
    /// arrival still used, χ² acceptable and within [`ALIAS_DCHI2`] of the
    /// event's; elsewhere: more than twice the event's horizontal 1σ away.
    /// At most [`MAX_ALIAS_TRIALS`] refits, in a fixed order.
    fn alternative(&self, ev: &OpenEvent) -> Option<[f64; 2]> {
        let w = self.cfg.outlier_window_s;
        let sol = &ev.sol;
        let start = [sol.position.e, sol.position.n, sol.position.u, sol.origin_s];
        let dims = match sol.dims {
            Dims::Ground => DimsChoice::Ground,
            Dims::Free => DimsChoice::Free,
        };
        let used: Vec<Member> = ev.members.iter().filter(|m| m.used).cloned().collect();
        let near = 2.0 * sol.uncertainty.horizontal_m;
        let others: Vec<&Det> = self
            .pending
            .iter()
            .chain(
                self.events
                    .iter()
                    .filter(|e| e.id != ev.id)
                    .flat_map(|e| e.members.iter().filter(|x| x.used).map(|x| &x.det)),
            )
            .filter(|q| q.stream == StreamKind::Acoustic)
            .collect();
        let mut trials = 0;
        let mut best: Option<[f64; 2]> = None;
        for (i, m) in used.iter().enumerate() {
            if m.det.stream != StreamKind::Acoustic {
                continue;
            }
            for q in others.iter().filter(|q| {
                q.node == m.det.node
                    && q.uid != m.det.uid
                    && q.onset.secs_since(m.det.onset).abs() <= w
            }) {
                if trials >= MAX_ALIAS_TRIALS {
                    return best;
                }
                trials += 1;
                let mut trial = used.clone();
                trial[i].det = **q;
                let Some(s) = self.solve_members_as(&mut trial, ev.tref, Some(start), dims) else {
                    continue;
                };
                if trial.iter().any(|x| !x.used)
                    || !s.chi2_ok(0.999)
                    || s.chi2 > sol.chi2 + ALIAS_DCHI2
                {
                    continue;
                }
                let o = [s.position.e - sol.position.e, s.position.n - sol.position.n];
                let d = o[0].hypot(o[1]);
                if d > near && best.is_none_or(|b| d > b[0].hypot(b[1])) {
                    best = Some(o);
                }
            }
        }
        best
    }
}
