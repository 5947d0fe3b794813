//! Locating an event's members: the arrivals of a set of members, the
//! options of [`locate`], the ground plane, the fit itself (with the
//! per-member residuals and outlier reasons it sets) and what follows from a
//! solution (the predicted arrival at a node, the deadline after which no
//! further arrival is possible).
//!
//! Shared by the search (a hypothesis' local fit), absorption (relocation
//! on a geometric schedule), the challenge and finalisation: one place
//! decides how members become arrivals and a fit becomes residuals.

use blastnet_contract::UtcNs;

use super::{enu, Engine, Member};
use crate::locate::{locate, Arrival, DimsChoice, LocateOptions, Solution};
use crate::propagation::Phase;

/// A predicted arrival at a node (see [`Engine::predict`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Predicted {
    /// Arrival time, s on the event's axis.
    pub(super) at: f64,
    /// Its 1-sigma: the solution's uncertainty along the ray ⊕ the
    /// propagation model's.
    pub(super) sigma: f64,
}

/// gᵀ·C·g: the variance a covariance `c` over (e, n, u, t0) gives a
/// quantity with gradient `g`.
pub(super) fn quad_form(c: &[[f64; 4]; 4], g: [f64; 4]) -> f64 {
    let mut var = 0.0;
    for i in 0..4 {
        for j in 0..4 {
            var += g[i] * c[i][j] * g[j];
        }
    }
    var
}

impl Engine {
    /// Predicted arrival (s on the event axis) and its 1-sigma at node `n` for `phase`.
    pub(super) fn predict(&self, sol: &Solution, n: usize, phase: Phase) -> Predicted {
        let src = sol.position.to_array();
        let (t, g) = self.prop.travel_and_gradient(phase, src, self.nodes[n].enu);
        let var = quad_form(&sol.uncertainty.covariance, [g[0], g[1], g[2], 1.0]);
        let m = self.prop.model_sigma(phase, t);
        Predicted {
            at: sol.origin_s + t,
            sigma: (var.max(0.0) + m * m).sqrt(),
        }
    }

    /// The leverage of an acoustic arrival of 1-sigma `sigma` at node `n`
    /// in the fit `sol`: its predicted variance under the unscaled
    /// covariance (the Cramér–Rao bound) over its own variance.
    pub(super) fn leverage(&self, sol: &Solution, n: usize, sigma: f64) -> f64 {
        let src = sol.position.to_array();
        let (_, g) = self
            .prop
            .travel_and_gradient(Phase::Acoustic, src, self.nodes[n].enu);
        let var = quad_form(&sol.crlb.covariance, [g[0], g[1], g[2], 1.0]);
        var.max(0.0) / (sigma * sigma)
    }

    pub(super) fn arrival_of(&self, m: &Member, tref: UtcNs) -> Arrival {
        Arrival {
            position: enu(self.nodes[m.det.node].enu),
            time_s: Self::rel(m.det.onset, tref),
            sigma_s: m.det.sigma,
            phase: m.phase,
        }
    }

    pub(super) fn locate_opts(&self, start: Option<[f64; 4]>) -> LocateOptions {
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

    /// The ground's height under a source at `p` (ENU, see [`Ground`]).
    pub(super) fn ground_at(&self, p: [f64; 3]) -> f64 {
        self.ground.at([p[0], p[1]])
    }

    /// Locate `members` (all but air-coupled duplicates), returning the
    /// solution and the per-member used/residual/reason.
    pub(super) fn solve_members(
        &self,
        members: &mut [Member],
        tref: UtcNs,
        start: Option<[f64; 4]>,
    ) -> Option<Solution> {
        self.solve_members_as(members, tref, start, DimsChoice::Auto)
    }

    /// [`Engine::solve_members`] with the model given.
    pub(super) fn solve_members_as(
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
        // The ground under the start (the array's middle without one), then
        // under the solution if that is elsewhere (the ground may slope).
        let at = start.map_or(self.ground.centre, |s| [s[0], s[1]]);
        opts.ground_u_m = Some(self.ground.at(at));
        let mut sol = locate(&arr, &self.prop, &opts).ok()?;
        let under = self.ground.at([sol.position.e, sol.position.n]);
        if sol.dims == crate::locate::Dims::Ground && (under - sol.position.u).abs() > 0.5 {
            opts.ground_u_m = Some(under);
            opts.start = Some([sol.position.e, sol.position.n, under, sol.origin_s]);
            if let Ok(again) = locate(&arr, &self.prop, &opts) {
                sol = again;
            }
        }
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

    pub(super) fn relocate(&mut self, k: usize) -> bool {
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
    pub(super) fn deadline(&self, sol: &Solution, tref: UtcNs) -> UtcNs {
        let mut latest = 0.0f64;
        for n in 0..self.nodes.len() {
            if !self.nodes[n].info.online || self.nodes[n].info.refused {
                continue;
            }
            for ph in [Phase::Acoustic, Phase::Seismic] {
                let Predicted { at: t, sigma: s } = self.predict(sol, n, ph);
                latest = latest.max(t + self.cfg.gate_sigmas * s);
            }
        }
        tref.add_secs_f64(latest.max(sol.origin_s) + self.cfg.association_tolerance_s)
    }
}
