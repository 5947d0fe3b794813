//! Small statistics helpers.

/// Standard normal quantile, Abramowitz & Stegun 26.2.23 (|error| < 4.5e-4).
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let (q, sign) = if p < 0.5 { (p, -1.0) } else { (1.0 - p, 1.0) };
    let t = (-2.0 * q.ln()).sqrt();
    let z = t
        - (2.515517 + 0.802853 * t + 0.010328 * t * t)
            / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t);
    sign * z
}

/// Quantile of χ² with `dof` degrees of freedom at probability `p`, by the
/// Wilson–Hilferty cube-root approximation (within ~1% for dof ≥ 3 in the
/// upper tail); exact for dof 1 (z²) and 2 (−2 ln(1 − p)).
pub fn chi2_quantile(dof: usize, p: f64) -> f64 {
    let z = normal_quantile(p);
    if dof == 0 {
        return 0.0;
    }
    if dof == 1 {
        let z2 = normal_quantile(0.5 + p / 2.0);
        return z2 * z2;
    }
    if dof == 2 {
        return -2.0 * (1.0 - p).max(1e-300).ln();
    }
    let k = dof as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Median of `v` (reordered in place); the mean of the middle two for an
/// even count; `None` when empty.
pub fn median_of(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi2_quantiles_match_tables() {
        // Tables (e.g. NIST/SEMATECH 1.3.6.7.4): χ²(0.999; k).
        for (k, q) in [
            (1, 10.828),
            (2, 13.816),
            (5, 20.515),
            (10, 29.588),
            (30, 59.703),
        ] {
            let got = chi2_quantile(k, 0.999);
            assert!((got / q - 1.0).abs() < 0.02, "k {k}: {got} vs {q}");
        }
        assert!((normal_quantile(0.975) - 1.95996).abs() < 1e-3);
    }
}
