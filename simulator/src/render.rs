//! Rendering: waveforms evaluated analytically at each sample's exact time
//! relative to the (sub-sample) arrival time, then filtered causally.
//!
//! A stream's sample k is taken at true time t_k = t0 + k / (fs (1 + drift)).
//! An emission arriving at `t_a` contributes `gain · w(t_k − t_a)` (zero for
//! t_k < t_a) convolved with its causal absorption FIR, so its first
//! non-zero sample is the first sample at or after `t_a`.

use std::sync::Arc;

use blastnet_contract::blast;

use realfft::num_complex::Complex;
use realfft::RealFftPlanner;

/// A unit-amplitude waveform, zero before τ = 0.
#[derive(Debug, Clone)]
pub(crate) enum Wave {
    /// Friedlander: (1 − τ/td) e^(−b τ/td).
    Friedlander { td: f64, b: f64 },
    /// N-wave of a supersonic projectile: 1 − 2τ/T for 0 ≤ τ < T.
    Nwave { duration: f64 },
    /// Damped sinusoid e^(−τ/decay) sin(2π f τ + φ) (seismic P wave).
    DampedSine { freq: f64, decay: f64, phase: f64 },
    /// A sampled signal at `rate`, linearly interpolated.
    Sampled { rate: f64, data: Arc<Vec<f64>> },
}

impl Wave {
    fn eval(&self, tau: f64) -> f64 {
        if tau < 0.0 {
            return 0.0;
        }
        match self {
            Wave::Friedlander { td, b } => blast::friedlander(1.0, *td, *b, tau),
            Wave::Nwave { duration } => blast::n_wave(*duration, tau),
            Wave::DampedSine { freq, decay, phase } => {
                (-tau / decay).exp() * (2.0 * std::f64::consts::PI * freq * tau + phase).sin()
            }
            Wave::Sampled { rate, data } => {
                let x = tau * rate;
                let i = x.floor() as usize;
                let f = x - i as f64;
                match (data.get(i), data.get(i + 1)) {
                    (Some(a), Some(b)) => a + (b - a) * f,
                    (Some(a), None) => a * (1.0 - f),
                    _ => 0.0,
                }
            }
        }
    }

    /// Length after which the waveform is negligible (< 1e-6 of its peak).
    fn support_s(&self) -> f64 {
        match self {
            // (1 − x) e^(−b x) < 1e-6 for x > 20/b (b >= 0.5).
            Wave::Friedlander { td, b } => td * (20.0 / b.max(0.5)),
            Wave::Nwave { duration } => *duration,
            Wave::DampedSine { decay, .. } => decay * 14.0,
            Wave::Sampled { rate, data } => data.len() as f64 / rate,
        }
    }
}

/// One arrival at one stream.
#[derive(Debug, Clone)]
pub(crate) struct Emission {
    /// True arrival time, s after scenario start.
    pub arrival_s: f64,
    /// Peak (or rms, for sampled noise) amplitude in physical units.
    pub gain: f64,
    /// Shape.
    pub wave: Wave,
    /// Causal absorption filter, if any.
    pub fir: Option<Arc<Vec<f64>>>,
}

/// The sample clock of one stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeBase {
    /// True time of sample 0, s after scenario start.
    pub t0: f64,
    /// True samples per true second: fs (1 + drift).
    pub rate: f64,
    /// Number of samples.
    pub n: usize,
}

impl TimeBase {
    /// True time of sample `k`.
    pub fn t(&self, k: i64) -> f64 {
        self.t0 + k as f64 / self.rate
    }

    /// The first sample index whose time is at or after `t`.
    pub fn first_at_or_after(&self, t: f64) -> i64 {
        let mut k = ((t - self.t0) * self.rate).ceil() as i64;
        // Guard the float rounding of the product both ways.
        while self.t(k) < t {
            k += 1;
        }
        while self.t(k - 1) >= t {
            k -= 1;
        }
        k
    }
}

/// Add every emission into `buf` (physical units).
pub(crate) fn render(buf: &mut [f64], tb: &TimeBase, emissions: &[Emission]) {
    let n = buf.len() as i64;
    for em in emissions {
        let k0 = tb.first_at_or_after(em.arrival_s);
        let len = (em.wave.support_s() * tb.rate).ceil() as i64 + 1;
        let fir_len = em.fir.as_ref().map_or(1, |h| h.len()) as i64;
        if k0 >= n || k0 + len + fir_len <= 0 {
            continue;
        }
        let raw: Vec<f64> = (0..len)
            .map(|j| em.gain * em.wave.eval(tb.t(k0 + j) - em.arrival_s))
            .collect();
        let y = match &em.fir {
            Some(h) => convolve(&raw, h),
            None => raw,
        };
        for (j, v) in y.iter().enumerate() {
            let k = k0 + j as i64;
            if k >= n {
                break;
            }
            if k >= 0 {
                buf[k as usize] += v;
            }
        }
    }
}

/// Full linear convolution; direct for short products, FFT otherwise.
pub(crate) fn convolve(x: &[f64], h: &[f64]) -> Vec<f64> {
    let out_len = x.len() + h.len() - 1;
    if x.len().min(h.len()) <= 32 || x.len() * h.len() <= 250_000 {
        let mut y = vec![0.0; out_len];
        for (i, xv) in x.iter().enumerate() {
            if *xv == 0.0 {
                continue;
            }
            for (j, hv) in h.iter().enumerate() {
                y[i + j] += xv * hv;
            }
        }
        return y;
    }
    let n = out_len.next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut a = vec![0.0; n];
    a[..x.len()].copy_from_slice(x);
    let mut b = vec![0.0; n];
    b[..h.len()].copy_from_slice(h);
    let mut fa = fwd.make_output_vec();
    let mut fb = fwd.make_output_vec();
    // Lengths match the plan, so the transforms cannot fail.
    fwd.process(&mut a, &mut fa).ok();
    fwd.process(&mut b, &mut fb).ok();
    let mut prod: Vec<Complex<f64>> = fa.iter().zip(&fb).map(|(p, q)| p * q).collect();
    prod[0].im = 0.0;
    let last = prod.len() - 1;
    prod[last].im = 0.0;
    let mut y = vec![0.0; n];
    inv.process(&mut prod, &mut y).ok();
    y.truncate(out_len);
    for v in y.iter_mut() {
        *v /= n as f64;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_convolution_matches_the_direct_sum() {
        let x: Vec<f64> = (0..3000)
            .map(|i| ((i * 7919) % 101) as f64 - 50.0)
            .collect();
        let h: Vec<f64> = (0..300).map(|i| (-(i as f64) / 40.0).exp()).collect();
        let fast = convolve(&x, &h);
        let mut slow = vec![0.0; x.len() + h.len() - 1];
        for (i, a) in x.iter().enumerate() {
            for (j, b) in h.iter().enumerate() {
                slow[i + j] += a * b;
            }
        }
        let scale = slow.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() < 1e-9 * scale);
        }
    }

    #[test]
    fn first_nonzero_sample_is_the_first_at_or_after_the_arrival() {
        let tb = TimeBase {
            t0: 0.123_456_789,
            rate: 16_000.0 * (1.0 + 3e-6),
            n: 16_000,
        };
        for &ta in &[0.2, 0.5 + 1.0 / 32_000.0, 0.123_456_789 + 100.0 / tb.rate] {
            let mut buf = vec![0.0; tb.n];
            let em = Emission {
                arrival_s: ta,
                gain: 10.0,
                wave: Wave::Friedlander { td: 0.01, b: 1.0 },
                fir: Some(Arc::new(vec![0.3, 0.5, 0.2])),
            };
            render(&mut buf, &tb, &[em]);
            let k = buf.iter().position(|v| *v != 0.0).expect("rendered") as i64;
            assert!(
                tb.t(k) >= ta && tb.t(k - 1) < ta,
                "k={k} t={} ta={ta}",
                tb.t(k)
            );
        }
    }
}
