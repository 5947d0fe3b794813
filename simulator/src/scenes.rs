//! Synthetic scenes for tests, training and evaluation: Friedlander blasts,
//! gunshots (muzzle blast, optional supersonic N-wave, echoes), launches and
//! other impulsive sounds in coloured Gaussian noise, with exact sub-sample
//! truth. Pure and deterministic.
//!
//! The generator has its own SplitMix64 PRNG rather than `rand`: `rand`'s
//! value streams may change between versions, and the classifier's training
//! must be bit-reproducible from its seeds.

use blastnet_contract::{absorption, blast, SourceKind};

/// SplitMix64 (Steele et al. 2014): tiny, fast, good enough for noise.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [a, b).
    pub fn range(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.uniform()
    }
    /// Log-uniform in [a, b).
    pub fn log_range(&mut self, a: f64, b: f64) -> f64 {
        (a.ln() + (b.ln() - a.ln()) * self.uniform()).exp()
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Integer in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// One rendered source with its truth.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthEvent {
    /// Class.
    pub kind: SourceKind,
    /// Exact onset (first arrival), in samples from the buffer start.
    pub onset_index: f64,
    /// Peak |p| of the rendered pulse (before noise), physical units.
    pub peak: f64,
}

/// The Friedlander wave of the blast laws ([`blast::friedlander`], as the
/// scenario renderer uses it) with a linear rise over `rise` seconds
/// (0 = ideal shock).
pub fn friedlander(t: f64, ps: f64, td: f64, b: f64, rise: f64) -> f64 {
    if t < 0.0 {
        return 0.0;
    }
    let r = if rise > 0.0 { (t / rise).min(1.0) } else { 1.0 };
    r * blast::friedlander(ps, td, b, t)
}

/// Add `f(t)` (t in seconds since `t0_s`) to `out`, each sample the mean of
/// 8 points across its sampling interval (a crude anti-alias filter, so a
/// step's sub-sample position shows in the samples).
fn add_fn(out: &mut [f32], fs: f64, t0_s: f64, t_end_s: f64, f: &dyn Fn(f64) -> f64) {
    let i0 = ((t0_s * fs).floor() as i64 - 1).max(0) as usize;
    let i1 = (((t0_s + t_end_s) * fs).ceil() as usize + 1).min(out.len());
    for (i, slot) in out.iter_mut().enumerate().take(i1).skip(i0) {
        let mut acc = 0.0;
        for s in 0..8 {
            let t = (i as f64 + (s as f64 + 0.5) / 8.0 - 0.5) / fs - t0_s;
            acc += f(t);
        }
        *slot += (acc / 8.0) as f32;
    }
}

fn damped_sine(t: f64, a: f64, f: f64, tau: f64, phase: f64) -> f64 {
    if t < 0.0 {
        0.0
    } else {
        a * (2.0 * std::f64::consts::PI * f * t + phase).sin() * (-t / tau).exp()
    }
}

/// Deterministic "noise" for bursts: a hash of the sample instant, so the
/// waveform is a pure function of t (needed by the 8-point averaging).
fn hash_noise(t: f64, salt: u64) -> f64 {
    let k = (t * 96_000.0).floor() as i64 as u64;
    let mut r = Rng::new(k.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ salt);
    r.normal()
}

/// Render one source of `kind` with first arrival at `onset_s` and nominal
/// peak `peak` into `out` (added). Returns the truth (measured peak).
pub fn render(
    kind: SourceKind,
    rng: &mut Rng,
    fs: f64,
    onset_s: f64,
    peak: f64,
    out: &mut [f32],
) -> TruthEvent {
    let i0 = ((onset_s * fs) as usize).saturating_sub(2);
    let before: Vec<f32> = out
        .iter()
        .skip(i0)
        .take((3.0 * fs) as usize)
        .copied()
        .collect();
    let salt = rng.next_u64();
    match kind {
        SourceKind::Explosion => {
            let td = rng.log_range(0.004, 0.08);
            let b = rng.range(0.5, 2.5);
            let rise = if rng.uniform() < 0.5 {
                0.0
            } else {
                rng.log_range(2e-5, 5e-4)
            };
            let refl_dt = rng.log_range(5e-4, 0.02);
            let refl_a = rng.range(0.2, 0.9);
            let tail = rng.range(0.02, 0.15);
            let tail_tau = rng.log_range(0.05, 0.5);
            let f = move |t: f64| {
                let mut v = friedlander(t, peak, td, b, rise)
                    + friedlander(t - refl_dt, refl_a * peak, td, b, rise * 2.0);
                if t > td {
                    v += tail * peak * hash_noise(t, salt) * (-(t - td) / tail_tau).exp() * 0.3;
                }
                v
            };
            add_fn(out, fs, onset_s, 3.0 * td + 3.0 * tail_tau + 0.05, &f);
        }
        SourceKind::Gunshot => {
            let td = rng.log_range(3e-4, 2e-3);
            let b = rng.range(1.0, 3.0);
            let rise = if rng.uniform() < 0.6 {
                0.0
            } else {
                rng.log_range(1e-5, 1e-4)
            };
            let nwave = rng.uniform() < 0.3;
            let n_len = rng.range(1.5e-4, 4e-4);
            let n_amp = rng.range(0.3, 1.5);
            let n_lead = if nwave {
                rng.log_range(0.002, 0.03)
            } else {
                0.0
            };
            let n_echo = rng.below(4);
            let mut echoes = [(0.0f64, 0.0f64); 4];
            for e in echoes.iter_mut().take(n_echo) {
                *e = (rng.log_range(0.004, 0.12), rng.range(0.1, 0.6));
            }
            let refl_dt = rng.log_range(2e-4, 3e-3);
            let refl_a = rng.range(0.3, 0.9);
            let f = move |t: f64| {
                let muzzle = |u: f64| {
                    friedlander(u, peak, td, b, rise)
                        + friedlander(u - refl_dt, refl_a * peak, td, b, rise)
                };
                let mut v = 0.0;
                if nwave {
                    v += n_amp * peak * blast::n_wave(n_len, t);
                }
                let tm = t - n_lead;
                v += muzzle(tm);
                for &(dt, a) in echoes.iter().take(n_echo) {
                    v += a * muzzle(tm - dt);
                }
                v
            };
            add_fn(out, fs, onset_s, n_lead + 0.2, &f);
        }
        SourceKind::Launch => {
            let rise_env = rng.log_range(0.01, 0.15);
            let dur = rng.range(0.4, 2.0);
            let pop = if rng.uniform() < 0.4 {
                rng.range(0.3, 1.0)
            } else {
                0.0
            };
            let pop_td = rng.log_range(1e-3, 8e-3);
            let lp = rng.range(0.3, 0.9);
            // Half the launches are heard from afar (a separate stream of
            // draws, so the scene's other sources stay as they were).
            if salt & 1 == 1 {
                distant_launch(&mut Rng::new(salt ^ 0x1A0C_4C4E), fs, onset_s, peak, out);
                return truth(kind, onset_s, fs, i0, &before, out);
            }
            let f = move |t: f64| {
                if t < 0.0 {
                    return 0.0;
                }
                let env = (t / rise_env).min(1.0)
                    * if t > dur {
                        (-(t - dur) / 0.2).exp()
                    } else {
                        1.0
                    };
                // Low-passed roar: mix of the hashed noise at two time scales.
                let roar = lp * hash_noise(t * 0.125, salt) + (1.0 - lp) * hash_noise(t, salt ^ 1);
                0.35 * peak * env * roar + friedlander(t, pop * peak, pop_td, 1.0, 0.0)
            };
            add_fn(out, fs, onset_s, dur + 1.0, &f);
        }
        _ => {
            // Other impulsive: clap, door slam, metal hit, or a click train.
            let sub = rng.below(4);
            let f0 = match sub {
                0 => rng.log_range(800.0, 3000.0),
                1 => rng.log_range(40.0, 180.0),
                2 => rng.log_range(900.0, 5000.0),
                _ => rng.log_range(1500.0, 6000.0),
            };
            let tau = match sub {
                0 => rng.log_range(5e-4, 4e-3),
                1 => rng.log_range(0.01, 0.08),
                2 => rng.log_range(0.05, 0.4),
                _ => rng.log_range(2e-4, 1e-3),
            };
            let phase = rng.range(0.0, std::f64::consts::TAU);
            let clicks = 1 + rng.below(4);
            let gap = rng.range(0.01, 0.05);
            let f = move |t: f64| match sub {
                0 => {
                    if t < 0.0 {
                        0.0
                    } else {
                        peak * 0.5 * hash_noise(t, salt) * (-t / tau).exp()
                            + damped_sine(t, 0.5 * peak, f0, tau, phase)
                    }
                }
                1 => {
                    damped_sine(t, peak, f0, tau, phase)
                        + damped_sine(t, 0.3 * peak, 4.0 * f0, tau / 4.0, 0.0)
                }
                2 => {
                    damped_sine(t, peak, f0, tau, phase)
                        + damped_sine(t, 0.6 * peak, 2.76 * f0, tau / 2.0, 1.0)
                }
                _ => (0..clicks)
                    .map(|c| damped_sine(t - c as f64 * gap, peak, f0, tau, phase))
                    .sum(),
            };
            add_fn(out, fs, onset_s, 6.0 * tau + 0.3, &f);
        }
    }
    truth(kind, onset_s, fs, i0, &before, out)
}

/// A launch heard from 0.3–5 km: the motor's ignition is a step into a
/// roar that grows for a while and lasts, and the air has taken its
/// highs (the cut-off is where ISO 9613-1 absorption over the range reaches
/// 6 dB, for an air drawn at random; two one-pole low-passes stand in for the
/// full filter, so the classifier does not learn one renderer's exact shape).
/// Peak `peak`, first sample at `onset_s`.
fn distant_launch(rng: &mut Rng, fs: f64, onset_s: f64, peak: f64, out: &mut [f32]) {
    let range_m = rng.log_range(300.0, 5000.0);
    let (temp_c, rh) = (rng.range(-5.0, 30.0), rng.range(20.0, 90.0));
    let loss_db = |f: f64| absorption::alpha_db_per_m(f, temp_c, rh, 101_325.0) * range_m;
    // Bisection in log f for loss_db(f) = 6 dB (monotonic in f).
    let (mut lo, mut hi) = (20.0f64.ln(), (0.45 * fs).ln());
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if loss_db(mid.exp()) < 6.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let fc = lo.exp();
    let step = rng.range(0.15, 0.5);
    let tau = rng.log_range(0.1, 1.0);
    // Real motors roar for seconds; 2 s is all the features look at, and
    // the scene's sources are 2.5 s apart.
    let dur = rng.range(1.0, 2.2);
    let low_share = rng.range(0.3, 0.8);
    let pole = |f: f64| (-std::f64::consts::TAU * f / fs).exp();
    let (a_low, a_air) = (pole(300.0), pole(fc));
    let first = (onset_s * fs).ceil() as usize;
    let n = ((dur * fs) as usize).min(out.len().saturating_sub(first));
    let mut x = vec![0.0f64; n];
    let (mut low, mut l2, mut y1, mut y2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (i, v) in x.iter_mut().enumerate() {
        let t = (first + i) as f64 / fs - onset_s;
        low = a_low * low + (1.0 - a_low) * rng.normal();
        l2 = a_low * l2 + (1.0 - a_low) * low;
        // The low band's variance after two poles is ~ (1-a)/4 of white's.
        let roar = low_share * l2 * (4.0 / (1.0 - a_low)).sqrt() + (1.0 - low_share) * rng.normal();
        let env =
            (step + (1.0 - step) * (1.0 - (-t / tau).exp())) * ((dur - t) / 0.3).clamp(0.0, 1.0);
        y1 = a_air * y1 + (1.0 - a_air) * env * roar;
        y2 = a_air * y2 + (1.0 - a_air) * y1;
        *v = y2;
    }
    let max = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if max > 0.0 {
        for (o, v) in out[first..first + n].iter_mut().zip(&x) {
            *o += (peak * v / max) as f32;
        }
    }
}

/// The truth of a source rendered into `out`: its measured peak is the
/// largest change against `before` (the samples from `i0` before it).
fn truth(
    kind: SourceKind,
    onset_s: f64,
    fs: f64,
    i0: usize,
    before: &[f32],
    out: &[f32],
) -> TruthEvent {
    let mut pk = 0.0f64;
    for (j, &b0) in before.iter().enumerate() {
        if let Some(&a) = out.get(i0 + j) {
            pk = pk.max(f64::from(a - b0).abs());
        }
    }
    TruthEvent {
        kind,
        onset_index: onset_s * fs,
        peak: pk,
    }
}

/// Add Gaussian noise of total RMS `rms`: a mix of white and red (one-pole
/// low-passed) noise, `red` in 0..1 the red share of the power.
pub fn add_noise(rng: &mut Rng, rms: f64, red: f64, out: &mut [f32]) {
    let a = 0.995f64;
    let red_gain = (1.0 - a * a).sqrt();
    let (w, r) = (
        (1.0 - red).max(0.0).sqrt() * rms,
        red.clamp(0.0, 1.0).sqrt() * rms,
    );
    let mut state = 0.0f64;
    for v in out.iter_mut() {
        state = a * state + red_gain * rng.normal();
        *v += (w * rng.normal() + r * state) as f32;
    }
}

/// A test scene: noise plus events at random times and SNRs.
#[derive(Debug, Clone)]
pub struct Scene {
    /// Sample rate, Hz.
    pub fs: f64,
    /// Samples, physical units.
    pub samples: Vec<f32>,
    /// Truth, by onset.
    pub events: Vec<TruthEvent>,
    /// Noise RMS, physical units.
    pub noise_rms: f64,
}

/// What a scene holds.
#[derive(Debug, Clone)]
pub struct SceneSpec {
    /// Sample rate, Hz.
    pub fs: f64,
    /// Length, s.
    pub duration_s: f64,
    /// Mean spacing between events, s (events are at least 1 s apart).
    pub spacing_s: f64,
    /// Peak SNR range (dB over noise RMS) drawn uniformly.
    pub snr_db: (f64, f64),
    /// Classes drawn uniformly.
    pub classes: Vec<SourceKind>,
    /// Noise RMS, physical units (Pa).
    pub noise_rms: f64,
}

/// Render a scene from a seed.
pub fn scene(seed: u64, spec: &SceneSpec) -> Scene {
    let mut rng = Rng::new(seed);
    let n = (spec.duration_s * spec.fs) as usize;
    let mut samples = vec![0f32; n];
    let red = rng.range(0.0, 0.8);
    add_noise(&mut rng, spec.noise_rms, red, &mut samples);
    let mut events = Vec::new();
    let mut t = 0.6 + rng.range(0.0, spec.spacing_s);
    while t < spec.duration_s - 2.5 && !spec.classes.is_empty() {
        let kind = spec.classes[rng.below(spec.classes.len())];
        let snr = rng.range(spec.snr_db.0, spec.snr_db.1);
        let peak = spec.noise_rms * 10f64.powf(snr / 20.0);
        let onset = (t * spec.fs + rng.uniform()) / spec.fs;
        events.push(render(kind, &mut rng, spec.fs, onset, peak, &mut samples));
        t += 2.5 + rng.range(0.0, 2.0 * (spec.spacing_s - 2.5).max(0.0));
    }
    Scene {
        fs: spec.fs,
        samples,
        events,
        noise_rms: spec.noise_rms,
    }
}
