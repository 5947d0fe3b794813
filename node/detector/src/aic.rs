//! Akaike information criterion onset picker (Maeda 1985 form):
//! `AIC(k) = k·ln var(x[0..=k]) + (n-k-1)·ln var(x[k+1..n])`; the onset is the
//! argmin. Two passes over the slice, no allocation.

/// Index `k` (into `x`) minimising the AIC, searched in `lo..hi` (clamped so that
/// both sides hold at least 2 samples). `None` when the slice is too short.
pub fn aic_pick(x: &[f32], lo: usize, hi: usize) -> Option<usize> {
    let n = x.len();
    if n < 6 {
        return None;
    }
    let lo = lo.max(2);
    let hi = hi.min(n - 3);
    if lo >= hi {
        return None;
    }
    // Remove the mean of the whole slice to limit cancellation in the sums.
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let (mut s_tot, mut ss_tot) = (0.0f64, 0.0f64);
    for &v in x {
        let d = f64::from(v) - mean;
        s_tot += d;
        ss_tot += d * d;
    }
    let (mut s1, mut ss1) = (0.0f64, 0.0f64);
    let mut best = None;
    let mut best_val = f64::INFINITY;
    // A floor keeps ln() finite on digital silence.
    let floor = 1e-30 + ss_tot * 1e-18 / n as f64;
    for (k, &v) in x.iter().enumerate().take(hi + 1) {
        let d = f64::from(v) - mean;
        s1 += d;
        ss1 += d * d;
        if k < lo {
            continue;
        }
        let n1 = (k + 1) as f64;
        let n2 = (n - k - 1) as f64;
        let var1 = (ss1 / n1 - (s1 / n1).powi(2)).max(floor);
        let s2 = s_tot - s1;
        let ss2 = ss_tot - ss1;
        let var2 = (ss2 / n2 - (s2 / n2).powi(2)).max(floor);
        let aic = k as f64 * var1.ln() + (n2 - 1.0).max(0.0) * var2.ln();
        if aic < best_val {
            best_val = aic;
            best = Some(k);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slow obvious formula: variances recomputed from scratch at each k.
    fn aic_naive(x: &[f32], lo: usize, hi: usize) -> usize {
        let var = |s: &[f32]| {
            let m = s.iter().map(|&v| f64::from(v)).sum::<f64>() / s.len() as f64;
            s.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / s.len() as f64
        };
        let n = x.len();
        let mut best = (f64::INFINITY, 0);
        for k in lo.max(2)..=hi.min(n - 3) {
            let a = k as f64 * var(&x[..=k]).ln() + (n - k - 2) as f64 * var(&x[k + 1..]).ln();
            if a < best.0 {
                best = (a, k);
            }
        }
        best.1
    }

    #[test]
    fn running_sums_match_the_naive_formula() {
        let mut state = 12345u64;
        let mut x = vec![0f32; 400];
        for (i, v) in x.iter_mut().enumerate() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            *v = if i >= 237 { 8.0 * u + 3.0 } else { u };
        }
        let fast = aic_pick(&x, 0, 400);
        assert_eq!(fast, Some(aic_naive(&x, 0, 400)));
        // The change is at 237: the last noise sample is 236.
        let k = fast.unwrap_or(0);
        assert!((235..=238).contains(&k), "k = {k}");
    }
}
