//! Per-candidate features, measured on the high-passed waveform from the onset.

use realfft::num_complex::Complex;
use realfft::RealToComplex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Features measured on one candidate pulse. Times in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Peak |x| (first excursion polarity), physical units.
    pub peak: f64,
    /// Peak over the pre-onset noise RMS, dB.
    pub snr_db: f64,
    /// 10–90 % rise time of the first excursion, s.
    pub rise_time_s: f64,
    /// Onset to the first zero crossing after the peak (positive phase), s.
    pub positive_phase_s: f64,
    /// Peak to the last sample at or above peak/e, s.
    pub decay_s: f64,
    /// Onset to 90 % of the (noise-corrected) energy in the window, s.
    pub duration_s: f64,
    /// Spectral centroid of the first ~40 ms, Hz.
    pub spectral_centroid_hz: f64,
    /// Fraction of that energy below 250 Hz.
    pub low_freq_ratio: f64,
    /// Fraction of that energy above 2 kHz.
    pub high_freq_ratio: f64,
    /// Peak / RMS over the pulse duration.
    pub crest_factor: f64,
    /// Kurtosis (non-excess) over the pulse duration.
    pub kurtosis: f64,
    /// |most negative| / peak within the pulse.
    pub negative_phase_ratio: f64,
    /// Negative impulse / positive impulse within the pulse.
    pub negative_impulse_ratio: f64,
    /// Zero crossings per second within the pulse.
    pub zero_crossing_rate_hz: f64,
    /// 1 when the pulse is saturated (flat top at the peak).
    pub clipped: f64,
    /// Trigger rate in the 2 s before the candidate, per second (context:
    /// applause, typing and rain are dense trains of impulses).
    pub impulse_rate_before_hz: f64,
    /// Triggers in the feature window after the candidate, per second.
    pub impulse_rate_after_hz: f64,
    /// Peak frame energy over the median frame energy of the 2 s before,
    /// dB (capped at 60): prominence over the local, not long-term, background.
    pub local_prominence_db: f64,
    /// Other onsets within `comparable_db` of this one in the 2 s before and
    /// 0.15–0.25 s after (impulse trains have many; a blast has none).
    pub comparable_onsets: f64,
    /// Median frame energy from 40 ms after the trigger to the window's end
    /// over the median of the 2 s before, dB: a sound that switched on (a
    /// crowd, an engine, rain, a launch's roar) stays up; a blast falls back.
    pub level_after_db: f64,
    /// The same median over the candidate's peak frame energy, dB: how far
    /// the candidate has decayed.
    pub tail_db: f64,
}

/// Number of values in [`Features::vector`].
pub const N_FEATURES: usize = 19;

/// Names of [`Features::vector`], in order (the model file lists them too).
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "log10_rise_time_s",
    "log10_positive_phase_s",
    "log10_decay_s",
    "log10_duration_s",
    "log10_spectral_centroid_hz",
    "low_freq_ratio",
    "high_freq_ratio",
    "log10_crest_factor",
    "log10_kurtosis",
    "negative_phase_ratio",
    "negative_impulse_ratio",
    "log10_zero_crossing_rate_hz",
    "clipped",
    "log10_impulse_rate_before_hz",
    "log10_impulse_rate_after_hz",
    "local_prominence_db",
    "log10_1p_comparable_onsets",
    "level_after_db",
    "tail_db",
];

impl Features {
    /// The classifier's input: level-independent transforms of the features
    /// (peak and SNR are left out on purpose: they say how far, not what).
    pub fn vector(&self) -> [f64; N_FEATURES] {
        let lg = |v: f64, floor: f64| v.max(floor).log10();
        [
            lg(self.rise_time_s, 1e-5),
            lg(self.positive_phase_s, 1e-5),
            lg(self.decay_s, 1e-5),
            lg(self.duration_s, 1e-4),
            lg(self.spectral_centroid_hz, 1.0),
            self.low_freq_ratio,
            self.high_freq_ratio,
            lg(self.crest_factor, 1.0),
            lg(self.kurtosis, 1.0),
            self.negative_phase_ratio.min(3.0),
            self.negative_impulse_ratio.min(5.0),
            lg(self.zero_crossing_rate_hz, 1.0),
            self.clipped,
            lg(self.impulse_rate_before_hz + 0.25, 0.25),
            lg(self.impulse_rate_after_hz + 0.25, 0.25),
            self.local_prominence_db.clamp(-10.0, 60.0),
            (1.0 + self.comparable_onsets.max(0.0)).log10(),
            self.level_after_db.clamp(-20.0, 60.0),
            self.tail_db.clamp(-60.0, 10.0),
        ]
    }
}

/// A planned FFT and its buffers for the spectral features.
pub(crate) struct SpectralScratch {
    fft: Arc<dyn RealToComplex<f32>>,
    input: Vec<f32>,
    output: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

impl std::fmt::Debug for SpectralScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpectralScratch(n={})", self.input.len())
    }
}

impl SpectralScratch {
    pub(crate) fn new(planner: &mut realfft::RealFftPlanner<f32>, n: usize) -> Self {
        let fft = planner.plan_fft_forward(n);
        SpectralScratch {
            input: fft.make_input_vec(),
            output: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
        }
    }
}

/// What the picker found, needed by the feature extractor.
pub(crate) struct PulseGeometry {
    /// Index of the (integer) onset in `z`.
    pub onset: usize,
    /// Index of the first peak in `z`.
    pub peak: usize,
    /// 10–90 % rise time, samples.
    pub rise_samples: f64,
    /// Pre-onset noise RMS.
    pub noise_rms: f64,
    /// Saturated.
    pub clipped: bool,
}

/// Measure the features of the pulse in `z` (polarity-corrected so that the
/// first excursion is positive) starting at `g.onset`.
pub(crate) fn measure(
    z: &[f32],
    fs: f64,
    g: &PulseGeometry,
    spec: &mut SpectralScratch,
) -> Features {
    let n = z.len();
    let on = g.onset.min(n.saturating_sub(1));
    let pk = g.peak.clamp(on, n.saturating_sub(1));
    let peak = f64::from(z[pk]).max(0.0);
    let noise = g.noise_rms.max(1e-30);
    let snr_db = 20.0 * (peak / noise).max(1e-12).log10();

    // Positive phase: onset to the first crossing below zero after the peak.
    let mut zc = n;
    for (i, &v) in z.iter().enumerate().skip(pk) {
        if v <= 0.0 {
            zc = i;
            break;
        }
    }
    let positive_phase_s = (zc - on) as f64 / fs;

    // Duration: onset to 90 % of the noise-corrected energy in the window.
    let noise_e = noise * noise;
    let mut total = 0.0f64;
    for &v in &z[on..] {
        total += (f64::from(v).powi(2) - noise_e).max(0.0);
    }
    let mut acc = 0.0f64;
    let mut end = n;
    for (i, &v) in z.iter().enumerate().skip(on) {
        acc += (f64::from(v).powi(2) - noise_e).max(0.0);
        if acc >= 0.9 * total {
            end = i + 1;
            break;
        }
    }
    let end = end.max((on + 8).min(n)).max(zc.min(n));
    let duration_s = (end - on) as f64 / fs;

    // Decay: peak to the last sample at or above peak/e (before `end` ×2).
    let lim = (on + 2 * (end - on)).min(n);
    let thr = (peak / std::f64::consts::E) as f32;
    let mut last = pk;
    for i in (pk..lim).rev() {
        if z[i].abs() >= thr {
            last = i;
            break;
        }
    }
    let decay_s = (last - pk) as f64 / fs + 0.5 / fs;

    // Moments, crest factor, negative phase and zero crossings over [on, end).
    let seg = &z[on..end];
    let m = seg.len().max(1) as f64;
    let mean = seg.iter().map(|&v| f64::from(v)).sum::<f64>() / m;
    let (mut m2, mut m4) = (0.0f64, 0.0f64);
    let (mut pos, mut neg, mut minv) = (0.0f64, 0.0f64, 0.0f64);
    let mut crossings = 0usize;
    let mut prev = 0.0f32;
    for (j, &v) in seg.iter().enumerate() {
        let d = f64::from(v) - mean;
        m2 += d * d;
        m4 += d * d * d * d;
        let fv = f64::from(v);
        if fv > 0.0 {
            pos += fv;
        } else {
            neg -= fv;
        }
        minv = minv.min(fv);
        if j > 0 && (v > 0.0) != (prev > 0.0) {
            crossings += 1;
        }
        prev = v;
    }
    m2 /= m;
    m4 /= m;
    let rms = (seg.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / m).sqrt();
    let crest_factor = if rms > 0.0 { peak / rms } else { 1.0 };
    let kurtosis = if m2 > 0.0 { m4 / (m2 * m2) } else { 1.0 };
    let negative_phase_ratio = if peak > 0.0 { -minv / peak } else { 0.0 };
    let negative_impulse_ratio = if pos > 0.0 { neg / pos } else { 0.0 };
    let zero_crossing_rate_hz = crossings as f64 / (m / fs);

    // Spectrum of the window starting a little before the onset (rectangular).
    let nf = spec.input.len();
    let start = on.saturating_sub(2);
    for (i, slot) in spec.input.iter_mut().enumerate() {
        *slot = z.get(start + i).copied().unwrap_or(0.0);
    }
    let (mut e_tot, mut e_lo, mut e_hi, mut e_f) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    if spec
        .fft
        .process_with_scratch(&mut spec.input, &mut spec.output, &mut spec.scratch)
        .is_ok()
    {
        let df = fs / nf as f64;
        for (k, c) in spec.output.iter().enumerate().skip(1) {
            let p = f64::from(c.norm_sqr());
            let f = k as f64 * df;
            e_tot += p;
            e_f += p * f;
            if f < 250.0 {
                e_lo += p;
            }
            if f > 2000.0 {
                e_hi += p;
            }
        }
    }
    let (spectral_centroid_hz, low_freq_ratio, high_freq_ratio) = if e_tot > 0.0 {
        (e_f / e_tot, e_lo / e_tot, e_hi / e_tot)
    } else {
        (0.0, 0.0, 0.0)
    };

    Features {
        peak,
        snr_db,
        rise_time_s: g.rise_samples / fs,
        positive_phase_s,
        decay_s,
        duration_s,
        spectral_centroid_hz,
        low_freq_ratio,
        high_freq_ratio,
        crest_factor,
        kurtosis,
        negative_phase_ratio,
        negative_impulse_ratio,
        zero_crossing_rate_hz,
        clipped: if g.clipped { 1.0 } else { 0.0 },
        impulse_rate_before_hz: 0.0,
        impulse_rate_after_hz: 0.0,
        local_prominence_db: 0.0,
        comparable_onsets: 0.0,
        level_after_db: 0.0,
        tail_db: 0.0,
    }
}
