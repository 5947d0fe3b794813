//! Closed-form starting points for the location solver: linearised TDOA /
//! spherical interpolation for four or more sensors, spherical intersection
//! for three (0–2 roots), and the default ground plane.
//!
//! Kept apart from the iterative fit ([`super`]) because the association
//! search calls it alone, for thousands of triples and quadruples per
//! detection, where the fit runs a few times: it must not allocate, and it
//! is read and tested on its own (tests/closed_form.rs).

use nalgebra::{Matrix3, Vector3};

use super::Arrival;
use crate::propagation::Phase;

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
        .filter(|&i| used.get(i).copied().unwrap_or(true))
        .collect();
    closed_form_of(obs, &idx, c, ground_u).iter().collect()
}

/// At most two closed-form starting points (see [`closed_form_of`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Guesses {
    v: [[f64; 4]; 2],
    n: usize,
}

impl Guesses {
    fn push(&mut self, g: [f64; 4]) {
        if self.n < 2 {
            self.v[self.n] = g;
            self.n += 1;
        }
    }
    /// The starting points (e, n, u, t0).
    pub fn iter(&self) -> impl Iterator<Item = [f64; 4]> + '_ {
        self.v[..self.n].iter().copied()
    }
    /// No starting point.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// [`closed_form`] on the acoustic arrivals `idx` of `obs`, without
/// allocating when they are all acoustic (the association search calls it
/// for thousands of triples and quadruples).
pub fn closed_form_of(obs: &[Arrival], idx: &[usize], c: f64, ground_u: f64) -> Guesses {
    if idx.iter().all(|&i| obs[i].phase == Phase::Acoustic) {
        return spherical(obs, idx, c, ground_u);
    }
    let ac: Vec<usize> = idx
        .iter()
        .copied()
        .filter(|&i| obs[i].phase == Phase::Acoustic)
        .collect();
    spherical(obs, &ac, c, ground_u)
}

/// The closed form of [`closed_form`] on arrivals `idx` (all acoustic).
fn spherical(obs: &[Arrival], idx: &[usize], c: f64, ground_u: f64) -> Guesses {
    let mut out = Guesses::default();
    if idx.len() < 3 {
        return out;
    }
    // Reference: earliest arrival (the first of equals).
    let mut r0 = idx[0];
    for &i in &idx[1..] {
        if obs[i].time_s < obs[r0].time_s {
            r0 = i;
        }
    }
    let p0 = obs[r0].position.to_array();
    let tref = obs[r0].time_s;
    let d0 = 0.0;
    let zp = ground_u - p0[2];
    let row = |i: usize| -> ([f64; 3], f64) {
        let q = [
            obs[i].position.e - p0[0],
            obs[i].position.n - p0[1],
            obs[i].position.u - p0[2],
        ];
        (q, c * (obs[i].time_s - tref))
    };
    let finish =
        |x: f64, y: f64, z: f64, tau: f64| [x + p0[0], y + p0[1], z + p0[2], tref + tau / c];
    if idx.len() >= 4 {
        // One linear equation in (x, y, τ0) per other sensor, a·s = u − z·v
        // (the right-hand side affine in the source height z).
        let lin = |i: usize| -> ([f64; 3], f64, f64) {
            let (q, di) = row(i);
            (
                [2.0 * q[0], 2.0 * q[1], -2.0 * (di - d0)],
                q[0] * q[0] + q[1] * q[1] + q[2] * q[2] - di * di + d0 * d0,
                2.0 * q[2],
            )
        };
        let others = idx.iter().copied().filter(|&i| i != r0);
        // s(z) = su − z·sv: at the ground plane, then (non-planar arrays) at
        // the height the reference sphere implies.
        let (su, sv) = if idx.len() == 4 {
            // Three equations: solved exactly (a quadruple is the association
            // search's free-height hypothesis, tried thousands of times).
            let mut a = [[0.0; 3]; 3];
            let (mut bu, mut bv) = ([0.0; 3], [0.0; 3]);
            for (k, i) in others.enumerate() {
                (a[k], bu[k], bv[k]) = lin(i);
            }
            let Some(inv) = inverse3(&a) else {
                return out;
            };
            let apply = |b: &[f64; 3]| -> Vector3<f64> {
                Vector3::from_fn(|r, _| inv[r][0] * b[0] + inv[r][1] * b[1] + inv[r][2] * b[2])
            };
            (apply(&bu), apply(&bv))
        } else {
            // Least squares: the normal matrix factored once.
            let mut ata = Matrix3::zeros();
            let (mut atu, mut atv) = (Vector3::zeros(), Vector3::zeros());
            for i in others {
                let (a, u, v) = lin(i);
                let a = Vector3::from(a);
                ata += a * a.transpose();
                atu += a * u;
                atv += a * v;
            }
            let Some(ch) = ata.cholesky() else {
                return out;
            };
            (ch.solve(&atu), ch.solve(&atv))
        };
        let s = su - sv * zp;
        out.push(finish(s[0], s[1], zp, s[2]));
        let z2 = (d0 - s[2]).powi(2) - s[0] * s[0] - s[1] * s[1];
        if z2 > 0.0 {
            let z = z2.sqrt();
            let s2 = su - sv * z;
            out.push(finish(s2[0], s2[1], z.max(zp), s2[2]));
        }
        return out;
    }
    let (a, b) = match (idx[0] == r0, idx[1] == r0) {
        (true, _) => (idx[1], idx[2]),
        (_, true) => (idx[0], idx[2]),
        _ => (idx[0], idx[1]),
    };
    let (q1, d1) = row(a);
    let (q2, d2) = row(b);
    let det = 4.0 * (q1[0] * q2[1] - q1[1] * q2[0]);
    if det.abs() < 1e-6 {
        return out;
    }
    let b1 = q1[0] * q1[0] + q1[1] * q1[1] + q1[2] * q1[2] - d1 * d1 + d0 * d0 - 2.0 * q1[2] * zp;
    let b2 = q2[0] * q2[0] + q2[1] * q2[1] + q2[2] * q2[2] - d2 * d2 + d0 * d0 - 2.0 * q2[2] * zp;
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
    let mut roots = [f64::NAN; 2];
    if qa.abs() < 1e-12 {
        if qb.abs() > 1e-12 {
            roots[0] = -qc / qb;
        }
    } else {
        let disc = qb * qb - 4.0 * qa * qc;
        if disc >= 0.0 {
            let sq = disc.sqrt();
            roots = [(-qb + sq) / (2.0 * qa), (-qb - sq) / (2.0 * qa)];
        }
    }
    for tau in roots {
        if tau <= d0 + 1e-9 && tau.is_finite() {
            out.push(finish(u.0 + v.0 * tau, u.1 + v.1 * tau, zp, tau));
        }
    }
    out
}

/// The inverse of a 3×3 matrix (adjugate over determinant); `None` when it
/// is singular within rounding (|det| at most 1e-12 of Hadamard's bound,
/// the product of the row lengths).
fn inverse3(a: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let cof = |r: usize, c: usize| {
        let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
        let (c1, c2) = ((c + 1) % 3, (c + 2) % 3);
        a[r1][c1] * a[r2][c2] - a[r1][c2] * a[r2][c1]
    };
    let det = a[0][0] * cof(0, 0) + a[0][1] * cof(0, 1) + a[0][2] * cof(0, 2);
    let norm = |r: &[f64; 3]| (r[0] * r[0] + r[1] * r[1] + r[2] * r[2]).sqrt();
    let bound = 1e-12 * norm(&a[0]) * norm(&a[1]) * norm(&a[2]);
    if det.abs().partial_cmp(&bound) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    // (A⁻¹)[r][c] = cofactor(c, r) / det.
    let mut inv = [[0.0; 3]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = cof(c, r) / det;
        }
    }
    Some(inv)
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
