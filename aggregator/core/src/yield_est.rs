//! Yield (kg TNT) from calibrated peak overpressure and range by cube-root
//! scaling, inverting the shared blast laws of `blastnet_contract::blast`
//! (Kingery–Bulmash surface burst, Kinney–Graham free air).

use blastnet_contract::blast::{charge_from_overpressure, peak_overpressure_pa, Burst};
use blastnet_contract::YieldEstimate;

/// The charge (kg TNT) that makes `peak_pa` at `range_m`, with about-1-sigma
/// bounds from a relative 1-sigma error `pressure_rel_sigma` of the peak
/// (calibration, ground reflection, meteorology). Because the far-field peak
/// falls as W^(1/3)/R, a 30 % pressure error is about a factor 2.2 in yield.
/// `None` when the inputs are not positive and finite or the inversion leaves
/// the laws' range (1 µg .. 10 kt).
pub fn estimate_yield(
    peak_pa: f64,
    range_m: f64,
    burst: Burst,
    pressure_rel_sigma: f64,
) -> Option<YieldEstimate> {
    let rel = if pressure_rel_sigma.is_finite() {
        pressure_rel_sigma.max(0.0)
    } else {
        0.0
    };
    let w = charge_from_overpressure(burst, range_m, peak_pa)?;
    let low = charge_from_overpressure(burst, range_m, peak_pa / (1.0 + rel)).unwrap_or(w);
    let high = charge_from_overpressure(burst, range_m, peak_pa * (1.0 + rel)).unwrap_or(w);
    Some(YieldEstimate {
        kg_tnt: w,
        low_kg_tnt: low.min(w),
        high_kg_tnt: high.max(w),
    })
}

/// Combine several stations' (peak Pa, range m) into one estimate: the
/// inverse-variance mean of ln W (each station's σ from its bounds), with a
/// 1-sigma spread that is the larger of the propagated σ and the stations'
/// own scatter (so inconsistent stations widen the bounds).
pub fn estimate_yield_multi(
    obs: &[(f64, f64)],
    burst: Burst,
    pressure_rel_sigma: f64,
) -> Option<YieldEstimate> {
    let rel = if pressure_rel_sigma.is_finite() {
        pressure_rel_sigma.max(0.0)
    } else {
        0.0
    };
    // One inversion per station; its σ(ln W) from the local slope
    // k = d ln P / d ln W (central difference): σ = ln(1 + rel) / k, the first
    // order of `estimate_yield`'s bounds at a third of the cost (each
    // inversion is a root search on the blast law).
    let per: Vec<(f64, f64)> = obs
        .iter()
        .filter_map(|&(p, r)| {
            let w = charge_from_overpressure(burst, r, p)?;
            let h: f64 = 0.01;
            let up = peak_overpressure_pa(burst, r, w * h.exp());
            let down = peak_overpressure_pa(burst, r, w * (-h).exp());
            let k = (up.ln() - down.ln()) / (2.0 * h);
            let s = if k.is_finite() && k > 1e-6 {
                ((1.0 + rel).ln() / k).max(1e-3)
            } else {
                1e-3
            };
            Some((w.ln(), s))
        })
        .collect();
    if per.is_empty() {
        return None;
    }
    let wsum: f64 = per.iter().map(|(_, s)| 1.0 / (s * s)).sum();
    let mean = per.iter().map(|(l, s)| l / (s * s)).sum::<f64>() / wsum;
    let prop_sigma = (1.0 / wsum).sqrt();
    let n = per.len() as f64;
    let scatter = if per.len() >= 2 {
        (per.iter().map(|(l, _)| (l - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt()
    } else {
        0.0
    };
    let s = prop_sigma.max(scatter);
    Some(YieldEstimate {
        kg_tnt: mean.exp(),
        low_kg_tnt: (mean - s).exp(),
        high_kg_tnt: (mean + s).exp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use blastnet_contract::blast::peak_overpressure_pa;

    #[test]
    fn inverts_the_forward_law_and_brackets_the_truth() {
        for burst in [Burst::Surface, Burst::FreeAir] {
            for (w, r) in [(1.0, 50.0), (100.0, 800.0), (1000.0, 3000.0)] {
                let p = peak_overpressure_pa(burst, r, w);
                let y = estimate_yield(p, r, burst, 0.3).expect("in range");
                assert!(
                    (y.kg_tnt / w - 1.0).abs() < 1e-6,
                    "{burst:?} {w} {r}: {y:?}"
                );
                assert!(y.low_kg_tnt < w && w < y.high_kg_tnt);
                let m = estimate_yield_multi(
                    &[(p, r), (peak_overpressure_pa(burst, 2.0 * r, w), 2.0 * r)],
                    burst,
                    0.3,
                )
                .expect("in range");
                assert!((m.kg_tnt / w - 1.0).abs() < 1e-6);
                // The slope-based σ(ln W) agrees with the exact bounds to first order.
                let exact = 0.5 * (y.high_kg_tnt / y.low_kg_tnt).ln();
                let one = estimate_yield_multi(&[(p, r)], burst, 0.3).expect("in range");
                let approx = 0.5 * (one.high_kg_tnt / one.low_kg_tnt).ln();
                assert!((approx / exact - 1.0).abs() < 0.05, "{exact} vs {approx}");
            }
        }
        assert!(estimate_yield(-1.0, 100.0, Burst::Surface, 0.3).is_none());
        assert!(estimate_yield(10.0, f64::NAN, Burst::Surface, 0.3).is_none());
    }
}
