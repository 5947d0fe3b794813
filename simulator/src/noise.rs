//! Seeded noise and synthetic distractor shapes.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A deterministic RNG for one named purpose: the scenario seed mixed with
/// a tag and an index by SplitMix64 (Steele, Lea, Flood 2014), so that adding
/// a node does not change the noise of the others.
pub(crate) fn rng_for(seed: u64, tag: &str, index: u64) -> ChaCha8Rng {
    use rand::SeedableRng;
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for b in tag.bytes().chain(index.to_le_bytes()) {
        h = splitmix(h ^ b as u64);
    }
    ChaCha8Rng::seed_from_u64(h)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal draw.
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// Uniform in [lo, hi).
pub(crate) fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

fn scale_to_rms(mut x: Vec<f64>, rms: f64) -> Vec<f64> {
    let cur = (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt();
    if cur > 0.0 {
        let g = rms / cur;
        for v in x.iter_mut() {
            *v *= g;
        }
    }
    x
}

/// White Gaussian noise with standard deviation `sigma`.
pub(crate) fn white(rng: &mut ChaCha8Rng, n: usize, sigma: f64) -> Vec<f64> {
    (0..n).map(|_| sigma * normal(rng)).collect()
}

/// Pink (1/f) noise scaled to `rms`: Paul Kellet's refined filter of white
/// noise (musicdsp.org "Pink noise filter", 1999), accurate to ±0.05 dB above
/// ~9 Hz at 44.1 kHz and a fair 1/f spectrum at other audio rates. Urban
/// background is close to pink with a low-frequency excess.
pub(crate) fn pink(rng: &mut ChaCha8Rng, n: usize, rms: f64) -> Vec<f64> {
    let mut b = [0.0f64; 7];
    let x: Vec<f64> = (0..n)
        .map(|_| {
            let w = normal(rng);
            b[0] = 0.99886 * b[0] + w * 0.0555179;
            b[1] = 0.99332 * b[1] + w * 0.0750759;
            b[2] = 0.96900 * b[2] + w * 0.1538520;
            b[3] = 0.86650 * b[3] + w * 0.3104856;
            b[4] = 0.55000 * b[4] + w * 0.5329522;
            b[5] = -0.7616 * b[5] - w * 0.0168980;
            let out = b.iter().sum::<f64>() + w * 0.5362;
            b[6] = w * 0.115926;
            out
        })
        .collect();
    scale_to_rms(x, rms)
}

/// White noise through two one-pole low-passes at `fc_hz`, scaled to `rms`.
pub(crate) fn lowpass_noise(
    rng: &mut ChaCha8Rng,
    n: usize,
    fs: f64,
    fc_hz: f64,
    rms: f64,
) -> Vec<f64> {
    let a = (-2.0 * std::f64::consts::PI * fc_hz / fs).exp();
    let (mut y1, mut y2) = (0.0, 0.0);
    // Warm up so the start is stationary.
    let warm = (5.0 * fs / fc_hz).min(1e6) as usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n + warm {
        let w = normal(rng);
        y1 = a * y1 + (1.0 - a) * w;
        y2 = a * y2 + (1.0 - a) * y1;
        if i >= warm {
            out.push(y2);
        }
    }
    scale_to_rms(out, rms)
}

/// Wind noise on a microphone: turbulence below ~20 Hz (low-pass at 8 Hz),
/// modulated by gusts (a 0.15 Hz low-passed envelope), scaled to `rms`.
pub(crate) fn wind(rng: &mut ChaCha8Rng, n: usize, fs: f64, rms: f64) -> Vec<f64> {
    let base = lowpass_noise(rng, n, fs, 8.0, 1.0);
    let gust = lowpass_noise(rng, n, fs, 0.15, 0.5);
    let x = base
        .iter()
        .zip(&gust)
        .map(|(b, g)| b * (1.0 + g).max(0.1))
        .collect();
    scale_to_rms(x, rms)
}

/// Peak-normalise.
fn peak_one(mut x: Vec<f64>) -> Vec<f64> {
    let p = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if p > 0.0 {
        for v in x.iter_mut() {
            *v /= p;
        }
    }
    x
}

fn tone(f: f64, fs: f64) -> f64 {
    // Keep synthetic partials below Nyquist at low rates.
    2.0 * std::f64::consts::PI * f.min(0.45 * fs)
}

/// A door slam: a low thud (55 Hz, 60 ms decay) with a short rattle; unit peak.
pub(crate) fn door_slam(rng: &mut ChaCha8Rng, fs: f64) -> Vec<f64> {
    let n = (0.5 * fs) as usize;
    let (w1, w2) = (tone(55.0, fs), tone(140.0, fs));
    peak_one(
        (0..n)
            .map(|i| {
                let t = i as f64 / fs;
                (w1 * t + 0.3).sin() * (-t / 0.06).exp()
                    + 0.4 * (w2 * t).sin() * (-t / 0.03).exp()
                    + 0.5 * normal(rng) * (-t / 0.008).exp()
            })
            .collect(),
    )
}

/// A hand clap: ~5 ms of bright noise; unit peak.
pub(crate) fn clap(rng: &mut ChaCha8Rng, fs: f64) -> Vec<f64> {
    let n = (0.06 * fs) as usize;
    let mut prev = 0.0;
    peak_one(
        (0..n)
            .map(|i| {
                let t = i as f64 / fs;
                let w = normal(rng);
                let d = w - 0.7 * prev; // first-order high-pass: the clap is bright
                prev = w;
                d * (-t / 0.005).exp()
            })
            .collect(),
    )
}

/// One hammer knock on metal: two ringing partials and a click; unit peak.
pub(crate) fn knock(rng: &mut ChaCha8Rng, fs: f64) -> Vec<f64> {
    let n = (0.12 * fs) as usize;
    let (w1, w2) = (tone(1800.0, fs), tone(4300.0, fs));
    peak_one(
        (0..n)
            .map(|i| {
                let t = i as f64 / fs;
                (w1 * t + 0.5).sin() * (-t / 0.015).exp()
                    + 0.6 * (w2 * t + 0.2).sin() * (-t / 0.008).exp()
                    + 0.8 * normal(rng) * (-t / 0.002).exp()
            })
            .collect(),
    )
}

/// A vehicle passing: 4 s of low-passed noise under a bell envelope; unit rms at its maximum.
pub(crate) fn traffic(rng: &mut ChaCha8Rng, fs: f64) -> Vec<f64> {
    let d = 4.0;
    let n = (d * fs) as usize;
    let x = lowpass_noise(rng, n, fs, 250.0, 1.0);
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let t = i as f64 / fs;
            v * (-((t - d / 2.0) / (d / 6.0)).powi(2)).exp()
        })
        .collect()
}

/// Rocket roar: low-passed noise (300 Hz) plus a broadband part, rising as
/// 0.15 + 0.85 (1 − e^(−t/rise)) from an ignition transient, fading over the
/// last 0.3 s; unit rms once developed.
pub(crate) fn roar(rng: &mut ChaCha8Rng, fs: f64, duration: f64, rise: f64) -> Vec<f64> {
    let n = (duration * fs) as usize;
    let low = lowpass_noise(rng, n, fs, 300.0, 0.9);
    let broad = lowpass_noise(rng, n, fs, (0.3 * fs).min(4000.0), 0.43);
    (0..n)
        .map(|i| {
            let t = i as f64 / fs;
            let env =
                (0.15 + 0.85 * (1.0 - (-t / rise).exp())) * ((duration - t) / 0.3).clamp(0.0, 1.0);
            (low[i] + broad[i]) * env
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pink_noise_falls_3_db_per_octave() {
        use realfft::RealFftPlanner;
        let mut rng = rng_for(7, "pink", 0);
        let fs = 16_000.0;
        let x = pink(&mut rng, 1 << 18, 1.0);
        // Averaged periodogram (256 segments of 1024, Hann window).
        let n = 1024;
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(n);
        let mut psd = vec![0.0; n / 2 + 1];
        for seg in x.chunks_exact(n) {
            let mut buf: Vec<f64> = seg
                .iter()
                .enumerate()
                .map(|(i, v)| v * (0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n as f64).cos()))
                .collect();
            let mut out = fft.make_output_vec();
            fft.process(&mut buf, &mut out).expect("fft");
            for (p, z) in psd.iter_mut().zip(&out) {
                *p += z.norm_sqr();
            }
        }
        let band = |f0: f64| -> f64 {
            let (a, b) = (
                (f0 / fs * n as f64) as usize,
                (2.0 * f0 / fs * n as f64) as usize,
            );
            psd[a..b].iter().sum::<f64>()
        };
        // 1/f: equal power per octave; per-bin density halves per octave.
        for f0 in [125.0, 250.0, 500.0, 1000.0, 2000.0] {
            let db = 10.0 * (band(2.0 * f0) / band(f0)).log10();
            assert!(db.abs() < 0.5, "octave {f0}->{}: {db} dB", 2.0 * f0);
        }
        let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt();
        assert!((rms - 1.0).abs() < 1e-9);
    }

    #[test]
    fn rngs_for_different_tags_differ_and_repeat() {
        let a: f64 = normal(&mut rng_for(1, "node", 0));
        let b: f64 = normal(&mut rng_for(1, "node", 0));
        let c: f64 = normal(&mut rng_for(1, "node", 1));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
