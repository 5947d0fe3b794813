//! What the engine learns about a deployment from its own events: the
//! timing-error scale of the straight-ray model at each site, and a station
//! term (a systematic delay) per node. Pure data and arithmetic: the engine
//! feeds it finalised events; the service persists [`Calibration`]
//! snapshots in its store so that what one night taught is there the next.
//!
//! **Timing-error scale.** Straight rays in a uniform atmosphere are not the
//! real paths: diffraction around buildings, temperature and wind gradients
//! and sensor survey errors make real arrivals depart from them by ~0.3 ms
//! in open, well-surveyed terrain to ~10 ms in a city (fits of ShotSpotter's
//! own pulse times in Pittsburgh scatter by 11 ms). No number suits every
//! site, so the scale is estimated online, per site, from the residuals of
//! the site's own over-determined events: s² = (ν₀·s₀² + Σ e²) / (ν₀ + n),
//! where each arrival contributes its squared residual, inflated by n/dof
//! for the parameters the fit absorbed, less its known pick, clock and
//! position variance, and older arrivals are forgotten exponentially
//! (memory [`SCALE_MEMORY_ARRIVALS`]) so that a change of season or weather
//! is followed. The prior s₀ (`model_sigma_s`) is deliberately wide and
//! weighs as half an event ([`PRIOR_WEIGHT_ARRIVALS`]): a scale too small breaks
//! a source's arrivals into outliers and loses it (measured on ShotSpotter:
//! 24 % of shots within 15 m at 1 ms, 75 % at 10 ms), one too wide costs a
//! little precision and ghost protection until the first events have
//! narrowed it.
//!
//! **Station terms.** Part of the error repeats shot after shot at one
//! sensor (a non-line-of-sight path, a survey error, a constant clock
//! offset): seismic networks remove it with station corrections. A node's
//! term is the trimmed mean (within 3 robust spreads of the median) of its
//! last [`TERM_RECENT`] raw residuals (residual
//! plus the term applied when the pick came in), applied from
//! [`TERM_MIN_EVENTS`] events on; its uncertainty (from their spread) is
//! added to the node's pick variance. A residual is the node's used
//! arrival's or, when the fit rejected it, its inconsistent pick's, so that
//! a delay larger than the gate is still learned.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Weight of the prior scale, in arrivals (about half an event).
pub const PRIOR_WEIGHT_ARRIVALS: f64 = 4.0;
/// Memory of the scale estimate, in arrivals (about fifty events).
pub const SCALE_MEMORY_ARRIVALS: f64 = 400.0;
/// Raw residuals a station term is the trimmed mean of.
pub const TERM_RECENT: usize = 8;
/// Events with a residual at a node before its term is applied.
pub const TERM_MIN_EVENTS: usize = 3;
/// Smallest scale the estimate may reach, s: below any digitiser's timing.
const MIN_SCALE_S: f64 = 1e-5;

/// The timing-error scale of one site: a prior and what events taught.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorScale {
    /// Prior scale, s.
    pub prior_s: f64,
    /// Σ e² of the remembered arrivals, s².
    pub sum_sq: f64,
    /// Remembered arrivals (decayed count).
    pub weight: f64,
}

impl ErrorScale {
    /// A fresh site: only the prior.
    pub fn new(prior_s: f64) -> Self {
        ErrorScale {
            prior_s,
            sum_sq: 0.0,
            weight: 0.0,
        }
    }

    /// The current estimate, s.
    pub fn scale_s(&self) -> f64 {
        let p = PRIOR_WEIGHT_ARRIVALS;
        ((p * self.prior_s * self.prior_s + self.sum_sq) / (p + self.weight))
            .sqrt()
            .max(MIN_SCALE_S)
    }

    /// Learn from one event: `excess_sq` is Σ (r²·n/dof − known variance)
    /// over its `n` used arrivals.
    pub fn learn(&mut self, excess_sq: f64, n: usize) {
        if !(excess_sq.is_finite() && n > 0) {
            return;
        }
        let keep = (1.0 - 1.0 / SCALE_MEMORY_ARRIVALS).powi(n as i32);
        self.sum_sq = self.sum_sq * keep + excess_sq.max(0.0);
        self.weight = self.weight * keep + n as f64;
    }
}

/// A node's systematic delay, learned from its residuals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StationTerm {
    /// Raw residuals of its recent events (oldest first), s.
    pub recent: VecDeque<f64>,
    /// Events it had a residual in (ever).
    pub events: u64,
}

impl StationTerm {
    /// The term applied to the node's onsets and its 1-sigma, s: (0, 0)
    /// until [`TERM_MIN_EVENTS`] events.
    pub fn applied(&self) -> (f64, f64) {
        let k = self.recent.len();
        if k < TERM_MIN_EVENTS {
            return (0.0, 0.0);
        }
        let mut s: Vec<f64> = self.recent.iter().copied().collect();
        s.sort_by(f64::total_cmp);
        let med = median_sorted(&s);
        let mut dev: Vec<f64> = s.iter().map(|v| (v - med).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let spread = 1.4826 * median_sorted(&dev);
        // The mean of the values within 3 spreads of the median (a trimmed
        // mean: it follows a changing delay faster than the median, and an
        // echo taken for the arrival does not move it).
        let near: Vec<f64> = s
            .iter()
            .copied()
            .filter(|v| (v - med).abs() <= 3.0 * spread.max(1e-4))
            .collect();
        let mean = near.iter().sum::<f64>() / near.len() as f64;
        (mean, spread / (near.len() as f64).sqrt())
    }

    /// Learn one raw residual (the residual plus the term applied to the pick).
    pub fn learn(&mut self, raw_residual_s: f64) {
        if !raw_residual_s.is_finite() {
            return;
        }
        self.recent.push_back(raw_residual_s);
        while self.recent.len() > TERM_RECENT {
            self.recent.pop_front();
        }
        self.events += 1;
    }
}

fn median_sorted(s: &[f64]) -> f64 {
    match s.len() {
        0 => 0.0,
        k if k % 2 == 1 => s[k / 2],
        k => 0.5 * (s[k / 2 - 1] + s[k / 2]),
    }
}

/// What an engine has learned, as the service stores it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Per deployment site (`None`: detections without a site).
    pub sites: Vec<SiteCalibration>,
    /// Per node id.
    pub nodes: Vec<NodeCalibration>,
}

/// A site's timing-error scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteCalibration {
    /// Site name.
    pub site: Option<String>,
    /// The scale.
    pub scale: ErrorScale,
}

/// A node's station term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCalibration {
    /// Node id.
    pub node_id: String,
    /// The term.
    pub term: StationTerm,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_leaves_its_prior_for_what_events_show() {
        let mut s = ErrorScale::new(0.010);
        assert!((s.scale_s() - 0.010).abs() < 1e-12);
        // Ten clean events of 12 arrivals with 0.3 ms errors.
        for _ in 0..10 {
            s.learn(12.0 * 0.0003f64.powi(2), 12);
        }
        let v = s.scale_s();
        assert!(v < 0.002, "{v}");
        // A noisy site: 12 ms errors.
        let mut s = ErrorScale::new(0.001);
        for _ in 0..10 {
            s.learn(8.0 * 0.012f64.powi(2), 8);
        }
        assert!((s.scale_s() - 0.012).abs() < 0.0015, "{}", s.scale_s());
    }

    #[test]
    fn a_term_is_the_trimmed_mean_delay_once_enough_events_agree() {
        let mut t = StationTerm::default();
        t.learn(0.020);
        t.learn(0.021);
        assert_eq!(t.applied(), (0.0, 0.0));
        t.learn(0.35); // an echo mistaken for the arrival
        t.learn(0.019);
        let (d, s) = t.applied();
        assert!((d - 0.020).abs() < 1e-9, "{d}");
        assert!(s > 0.0 && s < 0.01, "{s}");
    }
}
