//! Challenging an event before it is finalised (see [`Engine::challenge`]):
//! an event confirmed online on a wrong pick is refitted on the arrivals
//! that came in since, and replaced if the refit passes a new source's
//! tests and explains more.
//!
//! Its own module because it is the one step that undoes a decision: it
//! takes an event's picks back into the pool and republishes the event.

use blastnet_contract::{EventStatus, StreamKind, UtcNs};

use super::search::verdict::SeedVerdict;
use super::search::Found;
use super::{Action, Det, Engine, Member};
use crate::propagation::Phase;

/// Refits of a challenged event judged in full, best screened first (see
/// `challenge`).
const MAX_CHALLENGES_JUDGED: usize = 3;

/// A challenged event's arrivals left out in turn, earliest first (see
/// `challenge`): more than the nodes of the scenes measured (city-salvo 11,
/// ShotSpotter's Pittsburgh release at most 6, the random scenes at most
/// 14), so that there every arrival is.
const MAX_LEFT_OUT: usize = 16;

/// A challenged event's local refit without one of its picks (`skip`; none:
/// with all of them), as screened before it is judged in full.
struct Refit {
    skip: Option<u64>,
    start: [f64; 4],
    tref: UtcNs,
    sites: usize,
    chi2: f64,
}

impl Engine {
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
    pub(super) fn challenge(&mut self, k: usize, out: &mut Vec<Action>) -> bool {
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
                        let pred = self.predict(&ev.sol, q.node, Phase::Acoustic).at;
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
        // Where chance alone explains several nodes (a noise storm), picks
        // near its predictions at sites it does not explain are expected by
        // chance, no sign of a wrong basin; and each refit would gather
        // them all (hundreds), seconds of engine time at a storm's rates.
        let (mut local, mut chance) = (Vec::new(), Vec::new());
        if self.local_chance(usize::MAX, ev.tref, &mut local, &mut chance) {
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
        // Left out in turn: the earliest `MAX_LEFT_OUT` arrivals (an event
        // is confirmed online on its first arrivals, so a wrong pick that
        // set its basin is among them; later ones were gated against that
        // basin). Every arrival in turn costs a refit per arrival: in a
        // network of hundreds of nodes hearing one blast, seconds of engine
        // time during which no other decision is made.
        let mut firsts: Vec<(UtcNs, u64)> = ev
            .members
            .iter()
            .filter(|m| m.used && m.det.stream == StreamKind::Acoustic)
            .map(|m| (m.det.onset, m.det.uid))
            .collect();
        firsts.sort_unstable();
        firsts.truncate(MAX_LEFT_OUT);
        let leave_out = std::iter::once(None).chain(firsts.iter().map(|f| Some(f.1)));
        let without = |skip: Option<u64>| -> Vec<Det> {
            dets.iter()
                .filter(|d| Some(d.uid) != skip)
                .cloned()
                .collect()
        };
        let mut screened: Vec<Refit> = Vec::new();
        for skip in leave_out {
            if let Some(Found {
                members: m,
                sol,
                tref,
            }) = self.gather_fit(&without(skip), h, ev.tref)
            {
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
            if let SeedVerdict::Accept(found) =
                self.evaluate_seed(&without(r.skip), r.start, r.tref, true, false)
            {
                best = Some(found);
                break;
            }
        }
        let Some(Found { members, sol, tref }) = best else {
            return false;
        };
        let n_sites = sites_of(&members).len();
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
}
