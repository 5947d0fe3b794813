//! TDOA location in a local ENU frame: closed-form start, Levenberg–Marquardt
//! refinement, 2D/3D model choice, outlier rejection, covariance and the
//! Cramér–Rao bound.
//!
//! Unknowns are the source position (e, n[, u]) and the origin time t0. The
//! solver works internally with τ0 = c·t0 in metres so that the normal
//! matrix is well scaled (all columns ~1). The LM loop is hand-written on
//! nalgebra fixed-size 4×4 matrices: the problem has at most four unknowns,
//! and CRATES.md measured ~0.6 µs per fix for this shape against ~3.4 µs for
//! the `levenberg-marquardt` crate (whose dynamic storage buys nothing here).

use blastnet_contract::{Crlb, Enu, Uncertainty};
use nalgebra::{Matrix3, Matrix4, Vector3, Vector4};
use serde::{Deserialize, Serialize};

use crate::propagation::{Phase, Propagation};
use crate::stats::chi2_quantile;

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
    let mut n = Matrix4::zeros();
    let mut g = Vector4::zeros();
    let mut chi2 = 0.0;
    let src = [p[0], p[1], p[2]];
    for (a, _) in obs.iter().zip(used).filter(|(_, &u)| u) {
        let (t, grad) = prop.travel_and_gradient(a.phase, src, a.position.to_array());
        let r = c * (a.time_s - t) - p[3];
        let s = c * sigma_total(prop, a, t);
        let w = 1.0 / (s * s);
        let h = Vector4::new(
            c * grad[0],
            c * grad[1],
            if dims == Dims::Free { c * grad[2] } else { 0.0 },
            1.0,
        );
        chi2 += w * r * r;
        n += h * h.transpose() * w;
        g += h * (w * r);
    }
    if dims == Dims::Ground {
        n[(2, 2)] = 1.0;
    }
    (chi2, n, g)
}

/// χ² only.
fn chi2_at(obs: &[Arrival], used: &[bool], prop: &Propagation, p: &Vector4<f64>) -> f64 {
    let c = prop.sound_speed_mps;
    let src = [p[0], p[1], p[2]];
    let mut chi2 = 0.0;
    for (a, _) in obs.iter().zip(used).filter(|(_, &u)| u) {
        let t = prop.travel_time(a.phase, src, a.position.to_array());
        let r = a.time_s - t - p[3] / c;
        let s = sigma_total(prop, a, t);
        chi2 += (r / s) * (r / s);
    }
    chi2
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
            if d.norm() < 1e-4 {
                // Converged: the step is below 0.1 mm (and 0.1 mm of c·t0).
                break;
            }
            let mut q = p + d;
            if dims == Dims::Free && q[2] < ground_u {
                // Below ground is unphysical; for a near-planar array the
                // mirror image fits (almost) equally, so reflect.
                q[2] = 2.0 * ground_u - q[2];
            }
            let c2 = chi2_at(obs, used, prop, &q);
            if c2.is_finite() && c2 <= chi2 {
                small_step = d.norm() < 1e-6 || (chi2 - c2) <= 1e-12 * chi2.max(1e-300);
                p = q;
                lambda = (lambda * 0.1).max(1e-12);
                improved = true;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
        let (c2, n2, g2) = normal(obs, used, prop, dims, &p);
        chi2 = c2;
        n = n2;
        g = g2;
        if small_step {
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

/// Closed-form starting points from the acoustic arrivals (still air).
///
/// Linearised TDOA (spherical interpolation, Smith & Abel 1987; the
/// unknown-origin-time form of Bancroft 1985): with q_i = P_i − P_0 and
/// d_i = c·t_i, subtracting the sphere of the reference sensor gives
/// 2 q_i·X' − 2(d_i − d_0)·τ0 = |q_i|² − d_i² + d_0², linear in (x, y, τ0)
/// once the height is fixed. Four or more sensors: least squares, then the
/// height from the reference sphere (a 3D candidate when real). Three
/// sensors: x, y affine in τ0, substituted into the reference sphere gives a
/// quadratic (spherical intersection, Schau & Robinson 1987): 0–2 roots.
pub fn closed_form(obs: &[Arrival], used: &[bool], c: f64, ground_u: f64) -> Vec<[f64; 4]> {
    let idx: Vec<usize> = (0..obs.len())
        .filter(|&i| used.get(i).copied().unwrap_or(true) && obs[i].phase == Phase::Acoustic)
        .collect();
    let mut out = Vec::new();
    if idx.len() < 3 {
        return out;
    }
    // Reference: earliest arrival.
    let r0 = *idx
        .iter()
        .min_by(|&&a, &&b| obs[a].time_s.total_cmp(&obs[b].time_s))
        .unwrap_or(&idx[0]);
    let p0 = obs[r0].position.to_array();
    let tref = obs[r0].time_s;
    let d0 = 0.0;
    let zp = ground_u - p0[2];
    let rows: Vec<([f64; 3], f64)> = idx
        .iter()
        .filter(|&&i| i != r0)
        .map(|&i| {
            let q = [
                obs[i].position.e - p0[0],
                obs[i].position.n - p0[1],
                obs[i].position.u - p0[2],
            ];
            let di = c * (obs[i].time_s - tref);
            (q, di)
        })
        .collect();
    let finish =
        |x: f64, y: f64, z: f64, tau: f64| [x + p0[0], y + p0[1], z + p0[2], tref + tau / c];
    if rows.len() >= 3 {
        // Least squares on (x, y, τ0), height fixed at zp, then re-solve once with the
        // height implied by the sphere (non-planar arrays).
        let solve = |z: f64| -> Option<Vector3<f64>> {
            let mut ata = Matrix3::zeros();
            let mut atb = Vector3::zeros();
            for (q, di) in &rows {
                let a = Vector3::new(2.0 * q[0], 2.0 * q[1], -2.0 * (di - d0));
                let b =
                    q[0] * q[0] + q[1] * q[1] + q[2] * q[2] - di * di + d0 * d0 - 2.0 * q[2] * z;
                ata += a * a.transpose();
                atb += a * b;
            }
            ata.cholesky().map(|ch| ch.solve(&atb))
        };
        if let Some(s) = solve(zp) {
            out.push(finish(s[0], s[1], zp, s[2]));
            let z2 = (d0 - s[2]).powi(2) - s[0] * s[0] - s[1] * s[1];
            if z2 > 0.0 {
                let z = z2.sqrt();
                if let Some(s2) = solve(z) {
                    out.push(finish(s2[0], s2[1], z.max(zp), s2[2]));
                }
            }
        }
    } else {
        let (q1, d1) = rows[0];
        let (q2, d2) = rows[1];
        let det = 4.0 * (q1[0] * q2[1] - q1[1] * q2[0]);
        if det.abs() < 1e-6 {
            return out;
        }
        let b1 =
            q1[0] * q1[0] + q1[1] * q1[1] + q1[2] * q1[2] - d1 * d1 + d0 * d0 - 2.0 * q1[2] * zp;
        let b2 =
            q2[0] * q2[0] + q2[1] * q2[1] + q2[2] * q2[2] - d2 * d2 + d0 * d0 - 2.0 * q2[2] * zp;
        let (a1, a2) = (2.0 * (d1 - d0), 2.0 * (d2 - d0));
        // [2q1x 2q1y; 2q2x 2q2y]^-1
        let inv = |v1: f64, v2: f64| {
            (
                (2.0 * q2[1] * v1 - 2.0 * q1[1] * v2) / det,
                (-2.0 * q2[0] * v1 + 2.0 * q1[0] * v2) / det,
            )
        };
        let u = inv(b1, b2);
        let v = inv(a1, a2);
        let qa = v.0 * v.0 + v.1 * v.1 - 1.0;
        let qb = 2.0 * (u.0 * v.0 + u.1 * v.1) + 2.0 * d0;
        let qc = u.0 * u.0 + u.1 * u.1 + zp * zp - d0 * d0;
        let mut roots = Vec::new();
        if qa.abs() < 1e-12 {
            if qb.abs() > 1e-12 {
                roots.push(-qc / qb);
            }
        } else {
            let disc = qb * qb - 4.0 * qa * qc;
            if disc >= 0.0 {
                let sq = disc.sqrt();
                roots.push((-qb + sq) / (2.0 * qa));
                roots.push((-qb - sq) / (2.0 * qa));
            }
        }
        for tau in roots {
            if tau <= d0 + 1e-9 && tau.is_finite() {
                out.push(finish(u.0 + v.0 * tau, u.1 + v.1 * tau, zp, tau));
            }
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Ground height used when the caller gives none: the median sensor height.
pub fn default_ground_u(obs: &[Arrival]) -> f64 {
    let mut h: Vec<f64> = obs.iter().map(|a| a.position.u).collect();
    median(&mut h)
}

fn best_fit(
    obs: &[Arrival],
    used: &[bool],
    prop: &Propagation,
    dims: Dims,
    ground_u: f64,
    starts: &[[f64; 4]],
) -> Option<Fit> {
    let mut best: Option<Fit> = None;
    for s in starts {
        if let Some(f) = lm(obs, used, prop, dims, ground_u, *s) {
            if best.is_none_or(|b| f.chi2 < b.chi2) {
                best = Some(f);
            }
        }
    }
    best
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
    let mut f2 = if want_ground && opts.start.is_some() {
        best_fit(obs, used, prop, Dims::Ground, ground_u, &starts)
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
            f2 = best_fit(obs, used, prop, Dims::Ground, ground_u, &starts);
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
    let mut f3 = best_fit(obs, used, prop, Dims::Free, ground_u, &s3);
    if !warm_ok(&f3) && !heights.is_empty() {
        s3.extend(starts.iter().copied());
        f3 = best_fit(obs, used, prop, Dims::Free, ground_u, &s3);
    } else if !warm_ok(&f3) {
        s3.extend(starts.iter().copied());
        if let Some(f) = f2 {
            for h in [300.0, 1500.0, 4000.0] {
                s3.push([f.x[0], f.x[1], ground_u + h, f.x[3] - h / c]);
            }
        }
        f3 = best_fit(obs, used, prop, Dims::Free, ground_u, &s3);
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
    loop {
        let fit = fit_model(obs, &used, prop, opts, ground_u).ok_or(LocateError::Degenerate)?;
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
