//! TDOA location in a local ENU frame: closed-form start, Levenberg–Marquardt
//! refinement, 2D/3D model choice, outlier rejection, covariance and the
//! Cramér–Rao bound.
//!
//! The closed forms (starting points, also used alone by the association
//! search) are in `closed_form`; this module holds the types, the
//! Levenberg–Marquardt fit, the model choice and outlier rejection, and the
//! covariance and Cramér–Rao bound, which share the normal equations.
//!
//! Unknowns are the source position (e, n[, u]) and the origin time t0. The
//! solver works internally with τ0 = c·t0 in metres so that the normal
//! matrix is well scaled (all columns ~1). The LM loop is hand-written on
//! nalgebra fixed-size 4×4 matrices: the problem has at most four unknowns,
//! and it was measured at ~0.6 µs per fix for this shape against ~3.4 µs for
//! the `levenberg-marquardt` crate (whose dynamic storage buys nothing here).

use blastnet_contract::{Crlb, Enu, Uncertainty};
use nalgebra::{Matrix4, Vector4};
use serde::{Deserialize, Serialize};

use crate::propagation::{Phase, Propagation};
use crate::stats::chi2_quantile;

mod closed_form;

pub use closed_form::{closed_form, closed_form_of, default_ground_u, Guesses};

/// One observed arrival.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Sensor position, ENU metres.
    pub position: Enu,
    /// Onset, seconds relative to a reference instant of the caller's choice
    /// (the solution's origin time is relative to the same instant).
    pub time_s: f64,
    /// 1-sigma timing uncertainty (pick, clock and model), seconds; > 0.
    pub sigma_s: f64,
    /// Which wave.
    pub phase: Phase,
}

/// Dimension of a solution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dims {
    /// Source on the ground plane (u fixed): unknowns e, n, t0.
    Ground,
    /// Free 3D: e, n, u, t0.
    Free,
}

impl Dims {
    /// Number of unknowns.
    pub fn unknowns(self) -> usize {
        match self {
            Dims::Ground => 3,
            Dims::Free => 4,
        }
    }
    /// 2 or 3 (the `dims` field of an event).
    pub fn as_u8(self) -> u8 {
        match self {
            Dims::Ground => 2,
            Dims::Free => 3,
        }
    }
}

/// Which model(s) `locate` may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DimsChoice {
    /// Choose from the data (likelihood-ratio test plus vertical significance).
    Auto,
    /// Ground plane only.
    Ground,
    /// 3D only.
    Free,
}

/// Options of [`locate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocateOptions {
    /// Model choice.
    pub dims: DimsChoice,
    /// Height of the ground plane (ENU u, metres); `None`: the median sensor height.
    pub ground_u_m: Option<f64>,
    /// Reject the worst arrival while its |residual| exceeds this many sigmas
    /// (only while at least two degrees of freedom remain).
    pub outlier_sigmas: f64,
    /// At most this many rejections.
    pub max_outliers: usize,
    /// At least this many arrivals before a 3D model is tried.
    pub min_arrivals_3d: usize,
    /// Choose 3D when χ²(2D) − χ²(3D) exceeds this (χ²(1) quantile; 10.83 = p 0.001)
    /// and the height above ground exceeds two sigmas.
    pub altitude_lr_threshold: f64,
    /// Warm start (e, n, u, t0 seconds), e.g. the previous revision.
    pub start: Option<[f64; 4]>,
}

impl Default for LocateOptions {
    fn default() -> Self {
        LocateOptions {
            dims: DimsChoice::Auto,
            ground_u_m: None,
            outlier_sigmas: 4.0,
            max_outliers: usize::MAX,
            min_arrivals_3d: 5,
            altitude_lr_threshold: 10.83,
            start: None,
        }
    }
}

/// A covariance (or bound) over (e, n, u, t0) with its usual summaries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// Covariance over (e m, n m, u m, t0 s), row-major. For a ground solution
    /// the u row and column are zero.
    pub covariance: [[f64; 4]; 4],
    /// 1-sigma horizontal (root of the trace of the EN block), metres.
    pub horizontal_m: f64,
    /// 1-sigma vertical, metres.
    pub vertical_m: f64,
    /// 1-sigma origin time, seconds.
    pub origin_s: f64,
}

impl Bound {
    fn from_cov(c: &Matrix4<f64>) -> Bound {
        let mut cov = [[0.0; 4]; 4];
        for (i, row) in cov.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = c[(i, j)];
            }
        }
        Bound {
            covariance: cov,
            horizontal_m: (c[(0, 0)] + c[(1, 1)]).max(0.0).sqrt(),
            vertical_m: c[(2, 2)].max(0.0).sqrt(),
            origin_s: c[(3, 3)].max(0.0).sqrt(),
        }
    }

    /// This bound plus another covariance over (e, n, u, t0), e.g. what an
    /// uncertain propagation model adds.
    pub fn plus(&self, extra: &[[f64; 4]; 4]) -> Bound {
        let mut c = Matrix4::zeros();
        for i in 0..4 {
            for j in 0..4 {
                c[(i, j)] = self.covariance[i][j] + extra[i][j];
            }
        }
        Bound::from_cov(&c)
    }

    /// This bound with its covariance multiplied by `f`.
    pub fn scaled(&self, f: f64) -> Bound {
        let mut c = Matrix4::zeros();
        for i in 0..4 {
            for j in 0..4 {
                c[(i, j)] = self.covariance[i][j] * f;
            }
        }
        Bound::from_cov(&c)
    }

    /// As the wire's `Crlb`.
    pub fn to_crlb(&self) -> Crlb {
        Crlb {
            horizontal_m: self.horizontal_m,
            vertical_m: self.vertical_m,
            origin_s: self.origin_s,
        }
    }

    /// As the wire's `Uncertainty` (1-sigma and the 3×3 ENU block).
    pub fn to_uncertainty(&self) -> Uncertainty {
        let mut c3 = [[0.0; 3]; 3];
        for (i, row) in c3.iter_mut().enumerate() {
            row.copy_from_slice(&self.covariance[i][..3]);
        }
        Uncertainty {
            horizontal_m: self.horizontal_m,
            vertical_m: self.vertical_m,
            origin_s: self.origin_s,
            covariance_enu: c3,
        }
    }
}

/// A located source.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// Source position, ENU metres.
    pub position: Enu,
    /// Origin time, seconds on the arrivals' time axis.
    pub origin_s: f64,
    /// Model used.
    pub dims: Dims,
    /// 1-sigma covariance: the inverse Fisher matrix at the solution, scaled
    /// up by χ²/dof when that exceeds 1 with at least 2 degrees of freedom.
    pub uncertainty: Bound,
    /// The Cramér–Rao bound at the solution for these sigmas (unscaled).
    pub crlb: Bound,
    /// Observed minus predicted time for every input arrival (outliers too), seconds.
    pub residuals_s: Vec<f64>,
    /// Indexes (into the input) of the arrivals rejected as outliers.
    pub outliers: Vec<usize>,
    /// χ² of the used arrivals.
    pub chi2: f64,
    /// Degrees of freedom: used arrivals − unknowns.
    pub dof: usize,
}

impl Solution {
    /// Whether χ² is consistent with the sigmas at probability `p` (e.g. 0.999).
    /// Exactly determined solutions (dof 0) pass.
    pub fn chi2_ok(&self, p: f64) -> bool {
        self.dof == 0 || self.chi2 <= chi2_quantile(self.dof, p)
    }
}

/// Why a location failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// Not enough usable arrivals for the model. The caller should wait for more.
    #[error("need at least {need} arrivals from distinct positions, got {got}")]
    TooFewArrivals {
        /// Usable arrivals.
        got: usize,
        /// Needed.
        need: usize,
    },
    /// An input value is not usable. The caller should drop that arrival.
    #[error("arrival {index}: {field} must be {expected}, got {value}")]
    InvalidArrival {
        /// Index into the input.
        index: usize,
        /// Field name.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
        /// The value found.
        value: f64,
    },
    /// The geometry does not determine the source (collinear or coincident
    /// sensors, no real root). The caller should wait for more arrivals.
    #[error("the sensor geometry does not determine a source")]
    Degenerate,
}

/// An internal fit: parameters (e, n, u, t0 s), χ² and Fisher matrix in (e, n, u, t0 s).
#[derive(Debug, Clone, Copy)]
struct Fit {
    x: [f64; 4],
    chi2: f64,
    fisher: Matrix4<f64>,
    dims: Dims,
}

fn sigma_total(prop: &Propagation, a: &Arrival, travel: f64) -> f64 {
    let m = prop.model_sigma(a.phase, travel);
    if m == 0.0 {
        // The acoustic model adds nothing (and √(σ²) = |σ| exactly).
        return a.sigma_s.abs();
    }
    (a.sigma_s * a.sigma_s + m * m).sqrt()
}

/// Normal equations in metre units at parameters p = (e, n, u, τ0 = c·t0).
fn normal(
    obs: &[Arrival],
    used: &[bool],
    prop: &Propagation,
    dims: Dims,
    p: &Vector4<f64>,
) -> (f64, Matrix4<f64>, Vector4<f64>) {
    let c = prop.sound_speed_mps;
    // The upper triangle of N, row by row (N is symmetric).
    let mut up = [0.0; 10];
    let mut g = [0.0; 4];
    let mut chi2 = 0.0;
    let src = [p[0], p[1], p[2]];
    for (a, _) in obs.iter().zip(used).filter(|(_, &u)| u) {
        let (t, grad) = prop.travel_and_gradient(a.phase, src, a.position.to_array());
        let r = c * (a.time_s - t) - p[3];
        let s = c * sigma_total(prop, a, t);
        let w = 1.0 / (s * s);
        let h = [
            c * grad[0],
            c * grad[1],
            if dims == Dims::Free { c * grad[2] } else { 0.0 },
            1.0,
        ];
        chi2 += w * r * r;
        let mut k = 0;
        for i in 0..4 {
            let wh = w * h[i];
            g[i] += wh * r;
            for hj in &h[i..] {
                up[k] += wh * hj;
                k += 1;
            }
        }
    }
    let mut n = Matrix4::zeros();
    let mut k = 0;
    for i in 0..4 {
        for j in i..4 {
            n[(i, j)] = up[k];
            n[(j, i)] = up[k];
            k += 1;
        }
    }
    if dims == Dims::Ground {
        n[(2, 2)] = 1.0;
    }
    (chi2, n, Vector4::from(g))
}

/// Levenberg–Marquardt (Marquardt's diagonal scaling) from `start`.
fn lm(
    obs: &[Arrival],
    used: &[bool],
    prop: &Propagation,
    dims: Dims,
    ground_u: f64,
    start: [f64; 4],
) -> Option<Fit> {
    let c = prop.sound_speed_mps;
    let mut p = Vector4::new(
        start[0],
        start[1],
        if dims == Dims::Ground {
            ground_u
        } else {
            start[2].max(ground_u)
        },
        c * start[3],
    );
    let (mut chi2, mut n, mut g) = normal(obs, used, prop, dims, &p);
    let mut lambda = 1e-3;
    // Stop once a step would lower χ² by less than 1e-4 (times the reduced
    // χ² of a fit that does not match its sigmas): the solution is then
    // within 1 % of its own 1-sigma of the minimum (dᵀ·N·d = d·g is the
    // squared Mahalanobis length of a Gauss–Newton step).
    let dof = used
        .iter()
        .filter(|&&u| u)
        .count()
        .saturating_sub(dims.unknowns())
        .max(1);
    let tol_at = |chi2: f64| 1e-4 * (chi2 / dof as f64).max(1.0);
    let mut tol = tol_at(chi2);
    for _ in 0..50 {
        let mut improved = false;
        let mut small_step = false;
        let mut tries = 0;
        while lambda < 1e12 && tries < 8 {
            tries += 1;
            let mut a = n;
            for i in 0..4 {
                a[(i, i)] += lambda * n[(i, i)].max(1e-12);
            }
            let Some(ch) = a.cholesky() else {
                lambda *= 10.0;
                continue;
            };
            let d = ch.solve(&g);
            // Converged: the step is below 0.1 mm (and 0.1 mm of c·t0), or
            // it would lower χ² by less than `tol` (the Gauss–Newton
            // prediction d·g, once the damping is small).
            if d.norm() < 1e-4 || (lambda < 1.0 && d.dot(&g) <= tol) {
                break;
            }
            let mut q = p + d;
            if dims == Dims::Free && q[2] < ground_u {
                // Below ground is unphysical; for a near-planar array the
                // mirror image fits (almost) equally, so reflect.
                q[2] = 2.0 * ground_u - q[2];
            }
            // The normal equations at the trial point also give its χ²:
            // one pass over the arrivals per trial, reused when it is taken.
            let (c2, n2, g2) = normal(obs, used, prop, dims, &q);
            if c2.is_finite() && c2 <= chi2 {
                // Too little gained to go on: converged, or crawling along
                // a narrow valley under heavy damping (a model that does not
                // fit; fifty such steps would not change the verdict).
                let gain = chi2 - c2;
                small_step =
                    d.norm() < 1e-6 || gain <= tol || (lambda >= 1.0 && gain <= 1e-4 * chi2);
                p = q;
                chi2 = c2;
                tol = tol_at(chi2);
                n = n2;
                g = g2;
                lambda = (lambda * 0.1).max(1e-12);
                improved = true;
                break;
            }
            lambda *= 10.0;
        }
        if !improved || small_step {
            break;
        }
    }
    if !p.iter().all(|v| v.is_finite()) {
        return None;
    }
    // Fisher in (e, n, u, t0 s): τ0 = c·t0, so the t0 row/column scale by c.
    let mut f = n;
    for i in 0..4 {
        f[(i, 3)] *= c;
        f[(3, i)] *= c;
    }
    Some(Fit {
        x: [p[0], p[1], p[2], p[3] / c],
        chi2,
        fisher: f,
        dims,
    })
}

/// Inverse Fisher; for a ground fit the u row/column are zeroed.
fn covariance(fit: &Fit) -> Option<Matrix4<f64>> {
    let inv = fit.fisher.try_inverse()?;
    let mut c = inv;
    if fit.dims == Dims::Ground {
        for i in 0..4 {
            c[(i, 2)] = 0.0;
            c[(2, i)] = 0.0;
        }
    }
    if (0..4).any(|i| c[(i, i)] < 0.0 || !c[(i, i)].is_finite()) {
        return None;
    }
    Some(c)
}

/// LM fits of one model from several starts: each distinct start is fitted
/// once, however often the caller offers it (the warm start comes back with
/// the closed-form starts when it fits badly), and the best fit (lowest χ²,
/// the first of equals) is kept.
struct Race<'a> {
    obs: &'a [Arrival],
    used: &'a [bool],
    prop: &'a Propagation,
    dims: Dims,
    ground_u: f64,
    tried: Vec<[f64; 4]>,
    best: Option<Fit>,
}

impl<'a> Race<'a> {
    fn new(
        obs: &'a [Arrival],
        used: &'a [bool],
        prop: &'a Propagation,
        dims: Dims,
        ground_u: f64,
    ) -> Self {
        Race {
            obs,
            used,
            prop,
            dims,
            ground_u,
            tried: Vec::new(),
            best: None,
        }
    }

    /// Fit from each start not yet tried; the best fit so far.
    fn run(&mut self, starts: &[[f64; 4]]) -> Option<Fit> {
        for &s in starts {
            // The start as `lm` uses it (height on or above the ground).
            let mut key = s;
            key[2] = match self.dims {
                Dims::Ground => self.ground_u,
                Dims::Free => s[2].max(self.ground_u),
            };
            if self.tried.contains(&key) {
                continue;
            }
            self.tried.push(key);
            if let Some(f) = lm(self.obs, self.used, self.prop, self.dims, self.ground_u, s) {
                if self.best.is_none_or(|b| f.chi2 < b.chi2) {
                    self.best = Some(f);
                }
            }
        }
        self.best
    }
}

/// Fit with the model choice of `opts` on the `used` subset.
fn fit_model(
    obs: &[Arrival],
    used: &[bool],
    prop: &Propagation,
    opts: &LocateOptions,
    ground_u: f64,
) -> Option<Fit> {
    let n_used = used.iter().filter(|&&u| u).count();
    let c = prop.sound_speed_mps;
    let mut starts: Vec<[f64; 4]> = Vec::with_capacity(6);
    if let Some(s) = opts.start {
        starts.push(s);
    }
    // A warm start (the previous revision) usually suffices: the closed form
    // and the fallback are only added when it fits badly.
    let warm_ok = |f: &Option<Fit>| {
        f.is_some_and(|f| {
            let dof = n_used.saturating_sub(f.dims.unknowns()).max(1);
            f.chi2 <= 4.0 * chi2_quantile(dof, 0.999)
        })
    };
    let want_ground = opts.dims != DimsChoice::Free;
    let want_free = opts.dims == DimsChoice::Free
        || (opts.dims == DimsChoice::Auto && n_used >= opts.min_arrivals_3d.max(5));
    let mut r2 = Race::new(obs, used, prop, Dims::Ground, ground_u);
    let mut r3 = Race::new(obs, used, prop, Dims::Free, ground_u);
    let mut f2 = if want_ground && opts.start.is_some() {
        r2.run(&starts)
    } else {
        None
    };
    if opts.start.is_none() || !warm_ok(&f2) {
        starts.extend(closed_form(obs, used, c, ground_u));
        // Fallback: under the earliest sensor, just before its arrival.
        if let Some(a) = obs
            .iter()
            .zip(used)
            .filter(|(_, &u)| u)
            .map(|(a, _)| a)
            .min_by(|a, b| a.time_s.total_cmp(&b.time_s))
        {
            starts.push([a.position.e, a.position.n, ground_u, a.time_s - 0.01]);
        }
        if want_ground {
            f2 = r2.run(&starts);
        }
    }
    if !want_free {
        return f2;
    }
    // The likelihood ratio χ²(2D) − χ²(3D) cannot exceed χ²(2D) (χ² ≥ 0): when
    // the ground fit is already that good, 3D cannot be chosen, so is not fitted.
    if opts.dims == DimsChoice::Auto && f2.is_some_and(|f| f.chi2 <= opts.altitude_lr_threshold) {
        return f2;
    }
    let mut s3: Vec<[f64; 4]> = Vec::with_capacity(8);
    if let Some(s) = opts.start {
        if s[2] > ground_u + 1.0 {
            s3.push(s);
        }
    }
    let heights: &[f64] = if s3.is_empty() {
        &[300.0, 1500.0, 4000.0]
    } else {
        &[]
    };
    if let Some(f) = f2 {
        for h in heights {
            s3.push([f.x[0], f.x[1], ground_u + h, f.x[3] - h / c]);
        }
    }
    let mut f3 = r3.run(&s3);
    if !warm_ok(&f3) && !heights.is_empty() {
        s3.extend(starts.iter().copied());
        f3 = r3.run(&s3);
    } else if !warm_ok(&f3) {
        s3.extend(starts.iter().copied());
        if let Some(f) = f2 {
            for h in [300.0, 1500.0, 4000.0] {
                s3.push([f.x[0], f.x[1], ground_u + h, f.x[3] - h / c]);
            }
        }
        f3 = r3.run(&s3);
    }
    match (f2, f3) {
        (Some(a), Some(b)) => {
            if opts.dims == DimsChoice::Free {
                return Some(b);
            }
            let lr = a.chi2 - b.chi2;
            let height = b.x[2] - ground_u;
            let su = covariance(&b)
                .map(|c| c[(2, 2)].sqrt())
                .unwrap_or(f64::INFINITY);
            if lr > opts.altitude_lr_threshold && height > 2.0 * su {
                Some(b)
            } else {
                Some(a)
            }
        }
        (a, b) => a.or(b),
    }
}

fn validate(obs: &[Arrival]) -> Result<(), LocateError> {
    for (i, a) in obs.iter().enumerate() {
        let bad = |field, expected, value| LocateError::InvalidArrival {
            index: i,
            field,
            expected,
            value,
        };
        for (f, v) in [
            ("position.e", a.position.e),
            ("position.n", a.position.n),
            ("position.u", a.position.u),
            ("time_s", a.time_s),
        ] {
            if !v.is_finite() {
                return Err(bad(f, "finite", v));
            }
        }
        if !(a.sigma_s > 0.0 && a.sigma_s.is_finite()) {
            return Err(bad("sigma_s", "finite and > 0", a.sigma_s));
        }
    }
    Ok(())
}

/// Locate a source from its arrivals.
///
/// At least three arrivals are needed (ground plane), and
/// `opts.min_arrivals_3d` (≥ 5) before altitude is tried. Outliers are
/// rejected one at a time, worst normalised residual first, while it exceeds
/// `opts.outlier_sigmas` and at least two degrees of freedom remain, so that
/// the remaining fit can still show inconsistency.
pub fn locate(
    obs: &[Arrival],
    prop: &Propagation,
    opts: &LocateOptions,
) -> Result<Solution, LocateError> {
    validate(obs)?;
    if obs.len() < 3 {
        return Err(LocateError::TooFewArrivals {
            got: obs.len(),
            need: 3,
        });
    }
    let ground_u = opts.ground_u_m.unwrap_or_else(|| default_ground_u(obs));
    let mut used = vec![true; obs.len()];
    let mut outliers = Vec::new();
    let mut o = *opts;
    loop {
        let fit = fit_model(obs, &used, prop, &o, ground_u).ok_or(LocateError::Degenerate)?;
        let n_used = used.iter().filter(|&&u| u).count();
        let k = fit.dims.unknowns();
        // Normalised residuals.
        let src = [fit.x[0], fit.x[1], fit.x[2]];
        let mut worst: Option<(usize, f64)> = None;
        for (i, a) in obs.iter().enumerate().filter(|(i, _)| used[*i]) {
            let t = prop.travel_time(a.phase, src, a.position.to_array());
            let z = ((a.time_s - fit.x[3] - t) / sigma_total(prop, a, t)).abs();
            if worst.is_none_or(|(_, w)| z > w) {
                worst = Some((i, z));
            }
        }
        if let Some((i, z)) = worst {
            if z > opts.outlier_sigmas && n_used >= k + 2 && outliers.len() < opts.max_outliers {
                used[i] = false;
                outliers.push(i);
                // The fit without it starts where the fit with it ended
                // (the closed form and the other starts are tried when that
                // fits badly).
                o.start = Some(fit.x);
                continue;
            }
        }
        return finish(obs, &used, prop, fit, outliers, n_used);
    }
}

fn finish(
    obs: &[Arrival],
    _used: &[bool],
    prop: &Propagation,
    fit: Fit,
    outliers: Vec<usize>,
    n_used: usize,
) -> Result<Solution, LocateError> {
    let cov = covariance(&fit).ok_or(LocateError::Degenerate)?;
    let dof = n_used.saturating_sub(fit.dims.unknowns());
    let scale = if dof >= 2 {
        (fit.chi2 / dof as f64).max(1.0)
    } else {
        1.0
    };
    let src = [fit.x[0], fit.x[1], fit.x[2]];
    let residuals_s = obs
        .iter()
        .map(|a| a.time_s - fit.x[3] - prop.travel_time(a.phase, src, a.position.to_array()))
        .collect();
    Ok(Solution {
        position: Enu::new(fit.x[0], fit.x[1], fit.x[2]),
        origin_s: fit.x[3],
        dims: fit.dims,
        uncertainty: Bound::from_cov(&(cov * scale)),
        crlb: Bound::from_cov(&cov),
        residuals_s,
        outliers,
        chi2: fit.chi2,
        dof,
    })
}

/// The Cramér–Rao bound of a source at `source` seen by `sensors`.
///
/// For Gaussian arrival errors σ_i, the Fisher matrix is J = Hᵀ Σ⁻¹ H with H
/// the Jacobian of the arrival times with respect to (e, n, \[u\], t0); the
/// bound is J⁻¹ (position block for the position). Only `position`,
/// `sigma_s` and `phase` of each sensor are read (`time_s` is ignored), so a
/// planner can map coverage without any arrival. `Dims::Ground` fixes u at
/// the source's height.
pub fn crlb(
    sensors: &[Arrival],
    source: Enu,
    prop: &Propagation,
    dims: Dims,
) -> Result<Bound, LocateError> {
    for (i, a) in sensors.iter().enumerate() {
        if !(a.sigma_s > 0.0 && a.sigma_s.is_finite()) {
            return Err(LocateError::InvalidArrival {
                index: i,
                field: "sigma_s",
                expected: "finite and > 0",
                value: a.sigma_s,
            });
        }
    }
    if sensors.len() < dims.unknowns() {
        return Err(LocateError::TooFewArrivals {
            got: sensors.len(),
            need: dims.unknowns(),
        });
    }
    let c = prop.sound_speed_mps;
    let used = vec![true; sensors.len()];
    let p = Vector4::new(source.e, source.n, source.u, 0.0);
    let (_, mut f, _) = normal(sensors, &used, prop, dims, &p);
    for i in 0..4 {
        f[(i, 3)] *= c;
        f[(3, i)] *= c;
    }
    let fit = Fit {
        x: [source.e, source.n, source.u, 0.0],
        chi2: 0.0,
        fisher: f,
        dims,
    };
    covariance(&fit)
        .map(|c| Bound::from_cov(&c))
        .ok_or(LocateError::Degenerate)
}
