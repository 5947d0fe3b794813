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
//! site, so the scale is estimated online, per site, from the site's own
//! events: each event with at least two residual degrees of freedom gives a
//! robust scale ([`event_scale`]: from the median absolute residual), and
//! the site's scale is the median of the latest [`SCALE_MEMORY_EVENTS`]
//! such scales and the prior (`model_sigma_s`, counted as one event). A
//! median, so that events made of mixed-up picks (whose residuals are large)
//! cannot inflate the scale, widen the gates and mix up more picks; a
//! window, so that a change of season or weather is followed. The prior is
//! deliberately wide: a scale too small breaks a source's arrivals into
//! outliers and loses it (measured on ShotSpotter: 24 % of shots within
//! 15 m at 1 ms), one too wide costs a little precision and ghost
//! protection until the first events have narrowed it.
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

/// Events whose scales the site's scale is the median of (with the prior).
pub const SCALE_MEMORY_EVENTS: usize = 50;
/// Latest events a node's direction-independent term is the trimmed mean of.
pub const TERM_RECENT: usize = 8;
/// Raw residuals a node keeps (with their sources' positions).
pub const TERM_MEMORY: usize = 64;
/// Sources closer than this share a direction-dependent delay at a node, m:
/// a city block, the scale over which a path around buildings stays the
/// same.
pub const TERM_RADIUS_M: f64 = 50.0;
/// Events with a residual at a node before its term is applied.
pub const TERM_MIN_EVENTS: usize = 3;
/// Smallest scale the estimate may reach, s: below any digitiser's timing.
const MIN_SCALE_S: f64 = 1e-5;

/// The timing-error scale of one site: a prior and what events taught.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorScale {
    /// Prior scale, s.
    pub prior_s: f64,
    /// The scales of the latest events (robust, per event), s, oldest first.
    pub recent: VecDeque<f64>,
}

impl ErrorScale {
    /// A fresh site: only the prior.
    pub fn new(prior_s: f64) -> Self {
        ErrorScale {
            prior_s,
            recent: VecDeque::new(),
        }
    }

    /// The current estimate, s: the median of the latest events' scales and
    /// the prior (counted as one event).
    pub fn scale_s(&self) -> f64 {
        let mut v: Vec<f64> = self.recent.iter().copied().collect();
        v.push(self.prior_s);
        v.sort_by(f64::total_cmp);
        median_sorted(&v).max(MIN_SCALE_S)
    }

    /// Degrees of freedom of the estimate: [`EVENT_DOF`] for the prior and
    /// for each event it learned from.
    pub fn dof(&self) -> f64 {
        EVENT_DOF * (1 + self.recent.len()) as f64
    }

    /// The factor a covariance from this scale is multiplied by to be
    /// honest about the scale's own uncertainty (see [`t_inflation`]).
    pub fn inflation(&self) -> f64 {
        t_inflation(self.dof())
    }

    /// Learn one event's scale, s (see [`event_scale`]).
    pub fn learn(&mut self, event_scale_s: f64) {
        if !event_scale_s.is_finite() {
            return;
        }
        self.recent.push_back(event_scale_s.max(MIN_SCALE_S));
        while self.recent.len() > SCALE_MEMORY_EVENTS {
            self.recent.pop_front();
        }
    }
}

/// Residual degrees of freedom an event's scale stands for (an event
/// teaches the scale from at least four arrivals, so at least one
/// degree of freedom over a 3-D fit and two over a ground fit; the
/// prior counts as one such event).
pub const EVENT_DOF: f64 = 2.0;

/// The factor that makes a covariance computed with an estimated timing
/// scale cover the true horizontal error as often as its ellipses promise
/// (86.5 % within Mahalanobis distance 2) when the scale rests on only `nu`
/// degrees of freedom. With an estimated scale the squared Mahalanobis
/// distance over two is F(2, ν)-distributed rather than χ²₂/2, with
/// P(F ≤ x) = 1 − (1 + 2x/ν)^(−ν/2); solving for the χ²₂ level
/// 1 − e^(−2) gives x = ν/2·(e^(4/ν) − 1), and the factor is x/2:
/// 3.2 at ν = 2 (a fresh site), 1.7 at 4, 1.2 at 20, → 1 as the site's
/// events accumulate. Heavier tails than a Gaussian: the 1σ ellipse of the
/// inflated covariance covers somewhat more than its 39 %.
pub fn t_inflation(nu: f64) -> f64 {
    if !(nu.is_finite() && nu > 0.0) {
        return 1.0;
    }
    (nu / 4.0 * ((4.0 / nu).exp() - 1.0)).max(1.0)
}

/// One event's timing-error scale, s, from its arrivals' residuals (scaled
/// up for the parameters the fit absorbed) and their known variances (pick,
/// clock, position, station term): the residuals' robust spread
/// (1.4826 × their median absolute value) less what the known variances
/// explain. Robust: a few mixed-up or delayed arrivals do not move it.
pub fn event_scale(residuals_s: &[f64], known_var_s2: &[f64]) -> Option<f64> {
    if residuals_s.len() < 4 {
        return None;
    }
    let mut a: Vec<f64> = residuals_s.iter().map(|r| r.abs()).collect();
    a.sort_by(f64::total_cmp);
    let mut k: Vec<f64> = known_var_s2.to_vec();
    k.sort_by(f64::total_cmp);
    let spread = 1.4826 * median_sorted(&a);
    Some((spread * spread - median_sorted(&k)).max(0.0).sqrt())
}

/// One raw residual of a node and where its source was.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TermSample {
    /// Source latitude, degrees.
    pub lat: f64,
    /// Source longitude, degrees.
    pub lon: f64,
    /// The node's residual plus the term applied to its pick, s.
    pub residual_s: f64,
}

/// A node's systematic delay, learned from its residuals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StationTerm {
    /// Recent raw residuals (oldest first), with their sources' positions.
    pub recent: VecDeque<TermSample>,
    /// Events it had a residual in (ever).
    pub events: u64,
}

impl StationTerm {
    /// The node's term over its latest [`TERM_RECENT`] events, whatever
    /// their direction, and its standard error, s: (0, 0) until
    /// [`TERM_MIN_EVENTS`] events. What `/api/nodes` reports.
    pub fn applied(&self) -> (f64, f64) {
        let mut last = [0.0; TERM_RECENT];
        let k = self.latest(&mut last);
        stats(&mut last[..k]).map_or((0.0, 0.0), |(mean, spread, k)| {
            (mean, spread / (k as f64).sqrt())
        })
    }

    /// The latest [`TERM_RECENT`] raw residuals into `out`; how many.
    fn latest(&self, out: &mut [f64; TERM_RECENT]) -> usize {
        let mut k = 0;
        for s in self.recent.iter().rev().take(TERM_RECENT) {
            out[k] = s.residual_s;
            k += 1;
        }
        k
    }

    /// The term for a source at (`lat`, `lon`) and the 1-sigma of the node's
    /// delay given it, s. A delay that depends on the source's direction (a
    /// non-line-of-sight path around a building) repeats for sources within
    /// [`TERM_RADIUS_M`] of one another: from [`TERM_MIN_EVENTS`] earlier
    /// sources there the term is theirs (source-specific station terms, as
    /// seismic networks use); otherwise the node's latest
    /// [`TERM_RECENT`] events, whatever their direction. The 1-sigma is the
    /// term's standard error plus the scatter of its residuals beyond the
    /// site's timing-error scale `scale_s` (a delay that changes from source
    /// to source is only partly a constant). `None` until learned.
    pub fn at(&self, lat: f64, lon: f64, scale_s: f64) -> Option<(f64, f64)> {
        if self.recent.len() < TERM_MIN_EVENTS {
            return None;
        }
        // Degrees² within the radius (equirectangular: exact enough within
        // kilometres), without a trigonometric call per sample.
        let deg = TERM_RADIUS_M / (EARTH_RADIUS_M * std::f64::consts::PI / 180.0);
        let coslat = lat.to_radians().cos();
        let mut near = [0.0; TERM_MEMORY];
        let mut k = 0;
        for s in self.recent.iter().take(TERM_MEMORY) {
            let (dx, dy) = ((s.lon - lon) * coslat, s.lat - lat);
            if dx * dx + dy * dy <= deg * deg {
                near[k] = s.residual_s;
                k += 1;
            }
        }
        let (mean, spread, k) = match stats(&mut near[..k]) {
            Some(v) => v,
            None => {
                let mut last = [0.0; TERM_RECENT];
                let m = self.latest(&mut last);
                stats(&mut last[..m])?
            }
        };
        let var = spread * spread / k as f64 + (spread * spread - scale_s * scale_s).max(0.0);
        Some((mean, var.sqrt()))
    }

    /// Learn one raw residual of a source at (`lat`, `lon`).
    pub fn learn(&mut self, lat: f64, lon: f64, raw_residual_s: f64) {
        if !(raw_residual_s.is_finite() && lat.is_finite() && lon.is_finite()) {
            return;
        }
        self.recent.push_back(TermSample {
            lat,
            lon,
            residual_s: raw_residual_s,
        });
        while self.recent.len() > TERM_MEMORY {
            self.recent.pop_front();
        }
        self.events += 1;
    }
}

const EARTH_RADIUS_M: f64 = 6_371_000.0;

/// (trimmed mean, robust spread, count) of `v` once it holds
/// [`TERM_MIN_EVENTS`]: the mean of the values within 3 robust spreads of
/// the median (an echo taken for an arrival does not move it).
fn stats(v: &mut [f64]) -> Option<(f64, f64, usize)> {
    if v.len() < TERM_MIN_EVENTS {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let med = median_sorted(v);
    let mut dev = [0.0; TERM_MEMORY];
    let n = v.len().min(TERM_MEMORY);
    for (d, x) in dev.iter_mut().zip(v.iter()) {
        *d = (x - med).abs();
    }
    dev[..n].sort_unstable_by(f64::total_cmp);
    let spread = 1.4826 * median_sorted(&dev[..n]);
    let (mut sum, mut k) = (0.0, 0);
    for &x in v.iter() {
        if (x - med).abs() <= 3.0 * spread.max(1e-4) {
            sum += x;
            k += 1;
        }
    }
    Some((sum / k as f64, spread, k))
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

    /// The inflation makes ellipses drawn with an estimated scale cover
    /// 1 − e⁻² of true errors at Mahalanobis distance 2: Gaussian errors
    /// (true σ = 1) judged with a scale estimated from ν squared Gaussian
    /// residuals. 20,000 draws: the binomial standard error is 0.24 points,
    /// so 1 point is a 4σ tolerance.
    #[test]
    fn inflated_ellipses_cover_as_promised_with_an_estimated_scale() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        let target = 1.0 - (-2.0f64).exp();
        for nu in [2usize, 4, 10, 40] {
            let f = t_inflation(nu as f64);
            let n = 20_000;
            let mut inside = 0;
            for _ in 0..n {
                let mut g = || -> f64 { StandardNormal.sample(&mut rng) };
                let (x, y) = (g(), g());
                let s2 = (0..nu).map(|_| g().powi(2)).sum::<f64>() / nu as f64;
                if (x * x + y * y) / (s2 * f) <= 4.0 {
                    inside += 1;
                }
            }
            let cover = inside as f64 / n as f64;
            assert!(
                (cover - target).abs() <= 0.01,
                "nu {nu}: factor {f:.3} covers {cover:.4}, expected {target:.4}"
            );
        }
        assert_eq!(t_inflation(f64::INFINITY), 1.0);
        assert!((t_inflation(1e6) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn the_scale_leaves_its_prior_for_what_events_show() {
        let mut s = ErrorScale::new(0.010);
        assert!((s.scale_s() - 0.010).abs() < 1e-12);
        // Two clean events with 0.3 ms errors: the median leaves the prior.
        s.learn(0.0003);
        s.learn(0.0003);
        assert!((s.scale_s() - 0.0003).abs() < 1e-12, "{}", s.scale_s());
        // A noisy site (12 ms), and one event of mixed-up picks (200 ms).
        let mut s = ErrorScale::new(0.001);
        for v in [0.012, 0.011, 0.200, 0.013] {
            s.learn(v);
        }
        assert!((s.scale_s() - 0.012).abs() < 1e-12, "{}", s.scale_s());
    }

    #[test]
    fn an_event_scale_is_robust_to_one_delayed_arrival() {
        let r = [0.001, -0.0012, 0.0008, -0.0009, 0.0011, 0.030];
        let k = [1e-8; 6];
        let s = event_scale(&r, &k).expect("six arrivals");
        assert!(s > 0.001 && s < 0.002, "{s}");
        assert_eq!(event_scale(&r[..3], &k[..3]), None);
    }

    #[test]
    fn a_term_is_the_trimmed_mean_delay_once_enough_events_agree() {
        let mut t = StationTerm::default();
        t.learn(40.0, -80.0, 0.020);
        t.learn(40.0, -80.0, 0.021);
        assert_eq!(t.applied(), (0.0, 0.0));
        assert_eq!(t.at(40.0, -80.0, 0.001), None);
        t.learn(40.0, -80.0, 0.35); // an echo mistaken for the arrival
        t.learn(40.0, -80.0, 0.019);
        let (d, s) = t.applied();
        assert!((d - 0.020).abs() < 1e-9, "{d}");
        assert!(s > 0.0 && s < 0.01, "{s}");
    }

    #[test]
    fn a_term_depends_on_where_the_source_is_once_sources_there_taught_it() {
        let mut t = StationTerm::default();
        // Three sources from one place (delay 20 ms), three from another
        // 1 km away (none).
        for _ in 0..3 {
            t.learn(40.0, -80.0, 0.020);
        }
        for _ in 0..3 {
            t.learn(40.009, -80.0, 0.0);
        }
        let (here, _) = t.at(40.0, -80.0, 0.001).expect("learned");
        let (there, _) = t.at(40.009, -80.0, 0.001).expect("learned");
        assert!(
            (here - 0.020).abs() < 1e-9 && there.abs() < 1e-9,
            "{here} {there}"
        );
        // Elsewhere: the node's latest events, with their scatter as sigma.
        let (d, s) = t.at(40.1, -80.0, 0.001).expect("global");
        assert!(s > 0.005, "{d} {s}");
    }
}
