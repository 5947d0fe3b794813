//! Absorption: a new pick joining an open event whose prediction it fits
//! (`try_absorb`, seismic picks tried as the ground wave and as the
//! air-coupled wave), the pending picks a new or refitted event explains
//! joining it (`join_pending`), and what an event's direct arrivals imply
//! for the picks that follow them (probable echoes).
//!
//! Kept apart from the search: absorption judges one pick against the few
//! open events (cheap, every detection), the search judges hypotheses over
//! the whole pool (costly, only for picks nothing absorbed).

use blastnet_contract::{StreamKind, UtcNs};

use super::fit::Predicted;
use super::{Action, Det, Engine, Member};
use crate::locate::{Dims, Solution};
use crate::propagation::Phase;
use blastnet_contract::EventStatus;

/// The best open event for a new pick so far (see [`Engine::try_absorb`]).
struct Placement {
    /// Index into `Engine::events`.
    event: usize,
    phase: Phase,
    /// |residual| over the gate (lower is better).
    score: f64,
    /// Part of the fit (false: an air-coupled seismic pick duplicating the
    /// node's acoustic one).
    used: bool,
}

/// A used acoustic arrival of an event: its node's direct arrival.
#[derive(Clone, Copy)]
struct DirectArrival {
    node: usize,
    onset: UtcNs,
    /// Prominence, dB.
    snr: f64,
    /// Peak (see `super::coda_of`).
    peak: f64,
}

impl Engine {
    pub(super) fn try_absorb(&mut self, d: &Det, out: &mut Vec<Action>) -> bool {
        let mut best: Option<Placement> = None;
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
                let Predicted {
                    at: pred,
                    sigma: sp,
                } = self.predict(&ev.sol, d.node, ph);
                let r = Self::rel(d.onset, ev.tref) - pred;
                let gate = self.cfg.gate_sigmas * (d.sigma * d.sigma + sp * sp).sqrt();
                if r.abs() <= gate {
                    let score = r.abs() / gate;
                    if best.as_ref().is_none_or(|b| score < b.score) {
                        // An air-coupled seismic pick duplicates the node's acoustic one.
                        let dup = d.stream == StreamKind::Seismic
                            && ph == Phase::Acoustic
                            && ev.members.iter().any(|m| {
                                m.det.node == d.node && m.phase == Phase::Acoustic && m.used
                            });
                        best = Some(Placement {
                            event: k,
                            phase: ph,
                            score,
                            used: !dup,
                        });
                    }
                }
            }
        }
        let Some(Placement {
            event: k,
            phase,
            used,
            ..
        }) = best
        else {
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
            let pred = self.predict(&ev.sol, d.node, phase).at;
            let r = Self::rel(d.onset, ev.tref) - pred;
            if let Some(m) = self.events[k].members.last_mut() {
                m.residual = r;
            }
        }
        true
    }

    /// Remember `d` as a possible outlier of every open event it nearly fits.
    pub(super) fn note_candidate(&mut self, d: &Det) {
        let w = self.cfg.outlier_window_s;
        let mut hits = Vec::new();
        for (k, ev) in self.events.iter().enumerate() {
            let pred = self.predict(&ev.sol, d.node, Phase::Acoustic).at;
            if (Self::rel(d.onset, ev.tref) - pred).abs() <= w && d.stream == StreamKind::Acoustic {
                hits.push(k);
            }
        }
        for k in hits {
            self.events[k].cands.push(*d);
        }
    }

    /// Move the pending picks that event `k` explains into it (seismic picks
    /// as its ground wave or as a duplicate of the air wave); whether any did.
    pub(super) fn join_pending(&mut self, k: usize) -> bool {
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
    pub(super) fn note_direct_arrivals(&mut self, k: usize) {
        let w = self.cfg.echo_window_s;
        let direct: Vec<DirectArrival> = self.events[k]
            .members
            .iter()
            .filter(|m| m.used && m.det.stream == StreamKind::Acoustic)
            .map(|m| DirectArrival {
                node: m.det.node,
                onset: m.det.onset,
                snr: m.det.snr_db,
                peak: m.det.peak,
            })
            .collect();
        let ev = &self.events[k];
        let pattern = super::Pattern {
            id: ev.id.clone(),
            src: ev.sol.position.to_array(),
            origin: ev.tref.add_secs_f64(ev.sol.origin_s),
            arrivals: ev
                .members
                .iter()
                .filter(|m| m.used && m.det.stream == StreamKind::Acoustic)
                .map(|m| (m.det.node, m.det.onset, m.det.known_var))
                .collect(),
        };
        self.patterns.retain(|p| p.id != pattern.id);
        self.patterns.push_back(pattern);
        while self.patterns.len() > super::MAX_PATTERNS {
            self.patterns.pop_front();
        }
        // A new pattern: later picks may repeat it.
        let first = direct.iter().map(|a| a.onset).min();
        for q in &mut self.pending {
            if first.is_some_and(|f| q.onset > f) {
                q.repeat_checked = false;
            }
        }
        for &DirectArrival {
            node: n,
            onset: t,
            snr,
            peak,
        } in &direct
        {
            let node = &mut self.nodes[n];
            if node.last_direct.is_none_or(|x| t >= x) {
                node.last_direct = Some(t);
                node.last_direct_snr = snr;
                node.last_direct_peak = peak;
            }
        }
        let wide = self.coda_window();
        for q in &mut self.pending {
            if q.stream != StreamKind::Acoustic {
                continue;
            }
            q.coda |= direct
                .iter()
                .any(|a| a.node == q.node && super::coda_of(q, a.onset, a.peak, wide));
            if let Some(&DirectArrival { snr, .. }) = direct.iter().find(|a| {
                let (n, t) = (a.node, a.onset);
                let dt = q.onset.secs_since(t);
                n == q.node && dt > 0.0 && dt <= w
            }) {
                q.echo = true;
                q.quiet_echo |= q.snr_db < snr;
            }
        }
    }

    pub(super) fn seismic_phase(&self, k: usize, q: &Det) -> Phase {
        let ev = &self.events[k];
        let t = Self::rel(q.onset, ev.tref);
        let ps = self.predict(&ev.sol, q.node, Phase::Seismic).at;
        let pa = self.predict(&ev.sol, q.node, Phase::Acoustic).at;
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
    pub(super) fn p_wave_possible(&self, sol: &Solution, tref: UtcNs, q: &Det) -> bool {
        if sol.dims != Dims::Ground {
            return false;
        }
        let Predicted { at: pa, sigma: sa } = self.predict(sol, q.node, Phase::Acoustic);
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

    pub(super) fn fits_event(&self, k: usize, q: &Det) -> bool {
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
            let Predicted {
                at: pred,
                sigma: sp,
            } = self.predict(&ev.sol, q.node, ph);
            let r = Self::rel(q.onset, ev.tref) - pred;
            r.abs() <= self.cfg.gate_sigmas * (q.sigma * q.sigma + sp * sp).sqrt()
        })
    }
}
