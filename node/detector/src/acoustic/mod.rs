//! Acoustic path.
//!
//! Front end (every sample, cheap): first difference (kills DC and wind
//! leakage), non-overlapping rectangular realfft frames (`frame_s`, default
//! 2.5 ms, rounded up to a power of two samples), power in
//! log-spaced bands, each band whitened by its own adaptive noise floor.
//! A frame triggers when the whitened band energy exceeds `on_db`, or, while
//! already on, when the positive whitened spectral flux alone does.
//!
//! Back end (only around candidates): the raw window from the history ring is
//! high-passed, an AIC pick finds the onset sample, the onset is refined to a
//! sub-sample time on the rising edge (50 % crossing of the first peak, or the
//! steepest-tangent intercept for slow rises), features are measured and the
//! classifier runs. All buffers are allocated in `new`.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::classify::Classifier;
use crate::features::SpectralScratch;
use crate::filter::HighPass;
use crate::ring::Ring;
use crate::{DetectorConfig, Pick};

mod finish;

const MAX_PENDING: usize = 64;
/// Low-band boxcars summed side by side (see `process`).
const BOXCAR_LANES: usize = 4;
/// Trigger history kept for the context features.
const TRIG_HIST: usize = 256;
/// Context window before a candidate, s.
const CONTEXT_S: f64 = 2.0;
const N_BANDS_MAX: usize = 24;
/// Local prominence is reported up to this, dB (and when there is no context yet).
const PROMINENCE_CAP_DB: f64 = 60.0;
/// A sustained onset must rise out of this long a quiet stretch, s.
const QUIET_BEFORE_S: f64 = 0.3;
/// The level after a candidate is measured from this long after its trigger, s.
const AFTER_SKIP_S: f64 = 0.04;
/// Onsets this soon after a candidate are its own echoes, not comparable onsets, s.
const TAIL_SKIP_S: f64 = 0.15;
/// 20 µPa squared.
const P_REF2: f64 = 20e-6 * 20e-6;

pub(crate) struct Acoustic {
    fs: f64,
    n: usize,
    fft: Arc<dyn RealToComplex<f32>>,
    frame: Vec<f32>,
    spec: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    fill: usize,
    prev: f32,
    bands: Vec<(usize, usize)>,
    weight: Vec<f64>,
    gain: Vec<f64>,
    floor: Vec<f64>,
    last_white: Vec<f64>,
    frames_done: u64,
    warm_frames: u64,
    /// Frames before this one learn the noise floor and cannot trigger: the
    /// start of the stream, and again after digital silence.
    warm_until: u64,
    /// Consecutive exactly-zero samples (digital silence: a gap, a dropout,
    /// or a recording padded with zeros; no live sensor is that quiet).
    zero_run: u64,
    /// The next warm frame re-learns the floor from scratch.
    reset_floor: bool,
    alpha: f64,
    alpha_slow: f64,
    alpha_fall: f64,
    /// The low-band trigger (see `DetectorConfig::low_on_db`): band-pass
    /// sections and their state, the energy of the frame being filled, the
    /// last frames' energies (`low_window_s`), their adaptive floor.
    low: LowBand,
    low_frames: Vec<f64>,
    low_floor: f64,
    low_on: bool,
    low_on_ratio: f64,
    on_ratio: f64,
    off_ratio: f64,
    triggered: bool,
    last_stat: f64,
    last_trigger_frame: Option<u64>,
    refractory_frames: u64,
    pending: [u64; MAX_PENDING],
    trig_hist: [u64; TRIG_HIST],
    trig_count: usize,
    pending_head: usize,
    pending_len: usize,
    dropped: u64,
    pub(crate) stats: crate::DetectorStats,
    ring: Ring,
    work: Vec<f32>,
    pick_buf: Vec<f32>,
    pick_hp: HighPass,
    /// The dispersion templates of this rate, picking high-pass and air
    /// (built with the detector: processing allocates nothing).
    dispersion: std::sync::Arc<crate::dispersion::Bank>,
    pre_n: usize,
    post_n: usize,
    rise_win: usize,
    /// Samples of the slow-rise gate (`slow_gate_s`).
    slow_gate_n: usize,
    hp: HighPass,
    spectral: SpectralScratch,
    classifier: Classifier,
    min_snr_db: f64,
    min_sep: f64,
    last_onset: f64,
    samples: u64,
    /// Band energy of the first-differenced frame (detection band, not
    /// whitened: the adaptive floor would absorb an applause or a train) of
    /// the last `energy.len()` frames, by frame number modulo the length:
    /// the local background and the comparable onsets around a candidate
    /// come from it. (The whitened statistic separated distractors from
    /// ShotSpotter gunshots far worse in `blastnet eval`.)
    energy: Vec<f32>,
    /// Scratch for the median of the context energies (allocated in `new`).
    energy_scratch: Vec<f32>,
    ctx_frames: u64,
    after_frames: u64,
    /// Frames in `QUIET_BEFORE_S`.
    quiet_frames: u64,
    gate: Gate,
}

/// A candidate's surroundings in the frame-energy history (see `context`).
#[derive(Debug, Clone, Copy)]
struct Context {
    prominence_db: f64,
    comparable: f64,
    level_after_db: f64,
    tail_db: f64,
}

/// The isolation gate's thresholds (from [`DetectorConfig`]).
#[derive(Debug, Clone, Copy)]
struct Gate {
    min_prominence_db: f64,
    comparable_db: f64,
    max_comparable: f64,
}

impl std::fmt::Debug for Acoustic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acoustic")
            .field("fs", &self.fs)
            .field("frame", &self.n)
            .field("bands", &self.bands)
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

fn db_to_pow(db: f64) -> f64 {
    10f64.powf(db / 10.0)
}

impl Acoustic {
    pub(crate) fn new(fs_hz: u32, cfg: &DetectorConfig, classifier: Classifier) -> Self {
        let fs = f64::from(fs_hz);
        let n = ((cfg.frame_s * fs).round() as usize)
            .clamp(32, 1 << 14)
            .next_power_of_two();
        let mut planner = RealFftPlanner::<f32>::new();
        let fft = planner.plan_fft_forward(n);
        let df = fs / n as f64;
        let lo_bin = ((cfg.band_low_hz / df).ceil() as usize).max(1);
        let hi_bin = ((cfg.band_high_hz.min(0.45 * fs) / df).floor() as usize)
            .min(n / 2 - 1)
            .max(lo_bin);
        let nb = cfg.n_bands.clamp(1, N_BANDS_MAX);
        // Log-spaced bands of at least two bins each (a one-bin band's power
        // is exponentially distributed: too noisy to whiten alone).
        let mut bands: Vec<(usize, usize)> = Vec::with_capacity(nb);
        let ratio = (hi_bin as f64 + 1.0) / lo_bin as f64;
        let mut start = lo_bin;
        for j in 1..=nb {
            let edge = (lo_bin as f64 * ratio.powf(j as f64 / nb as f64)).round() as usize;
            let end = edge.max(start + 2).min(hi_bin + 1);
            if end >= start + 2 {
                bands.push((start, end));
                start = end;
            }
        }
        if start <= hi_bin {
            match bands.last_mut() {
                Some(last) => last.1 = hi_bin + 1,
                None => bands.push((start, hi_bin + 1)),
            }
        }
        // Each band counts equally: a pulse's energy sits in a few bands,
        // usually low ones, while most bins are high ones.
        let weight: Vec<f64> = vec![1.0 / bands.len() as f64; bands.len()];
        // Undo the first difference for the physical noise floor: |1 - e^{-iw}|^2 = 4 sin^2(w/2).
        let gain: Vec<f64> = bands
            .iter()
            .map(|&(a, b)| {
                (a..b)
                    .map(|k| {
                        let s = (std::f64::consts::PI * k as f64 / n as f64).sin();
                        1.0 / (4.0 * s * s)
                    })
                    .sum::<f64>()
                    / (b - a) as f64
            })
            .collect();
        let frame_dur = n as f64 / fs;
        // Boxcar decimation to ~2 kHz for the low band (its first null at
        // the decimated rate, passband droop 0.2 dB at 250 Hz).
        let low_decim = ((fs / 2000.0).floor() as usize).max(1);
        let pre_n = ((cfg.pre_s * fs).round() as usize).max(4 * n);
        let post_n = ((cfg.window_s * fs).round() as usize).max(2 * n);
        let rise_win = ((0.002 * fs).round() as usize).max(4);
        let nf = ((0.04 * fs).round() as usize).next_power_of_two().max(64);
        let spectral = SpectralScratch::new(&mut planner, nf);
        let nbands = bands.len();
        let ctx_frames = (CONTEXT_S / frame_dur).round() as u64;
        let after_frames = (post_n as u64).div_ceil(n as u64);
        let hist = (ctx_frames + 2 * after_frames + 16) as usize;
        Acoustic {
            fs,
            n,
            frame: fft.make_input_vec(),
            spec: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            fill: 0,
            prev: 0.0,
            bands,
            weight,
            gain,
            floor: vec![0.0; nbands],
            last_white: vec![0.0; nbands],
            frames_done: 0,
            warm_frames: ((cfg.warmup_s / frame_dur).ceil() as u64).max(4),
            warm_until: ((cfg.warmup_s / frame_dur).ceil() as u64).max(4),
            zero_run: 0,
            reset_floor: false,
            alpha: (frame_dur / cfg.floor_tau_s).min(1.0),
            alpha_slow: (frame_dur / cfg.floor_tau_slow_s).min(1.0),
            alpha_fall: (frame_dur / cfg.floor_fall_tau_s).min(1.0),
            low: LowBand::new(
                HighPass::butterworth(cfg.low_band_hz[0], fs / low_decim as f64),
                HighPass::butterworth_low(cfg.low_band_hz[1], fs / low_decim as f64),
                low_decim,
            ),
            low_frames: vec![0.0; ((cfg.low_window_s / frame_dur).round() as usize).max(1)],
            low_floor: 0.0,
            low_on: false,
            low_on_ratio: db_to_pow(cfg.low_on_db),
            on_ratio: db_to_pow(cfg.on_db),
            off_ratio: db_to_pow(cfg.off_db),
            triggered: false,
            last_stat: 1.0,
            last_trigger_frame: None,
            refractory_frames: ((cfg.min_separation_s / frame_dur).ceil() as u64).max(1),
            pending: [0; MAX_PENDING],
            trig_hist: [0; TRIG_HIST],
            trig_count: 0,
            pending_head: 0,
            pending_len: 0,
            dropped: 0,
            stats: crate::DetectorStats::default(),
            ring: Ring::new(pre_n + post_n + 4 * n + 64),
            work: vec![0.0; pre_n + post_n + 2 * n],
            pick_buf: vec![0.0; pre_n + post_n + 2 * n],
            pick_hp: HighPass::butterworth(cfg.pick_highpass_hz, fs),
            dispersion: crate::dispersion::Bank::shared(
                fs,
                cfg.pick_highpass_hz,
                cfg.air_temperature_c,
                cfg.air_humidity_pct,
            ),
            pre_n,
            post_n,
            rise_win,
            slow_gate_n: ((cfg.slow_gate_s * fs).round() as usize).max(1),
            hp: HighPass::butterworth(cfg.highpass_hz, fs),
            spectral,
            classifier,
            min_snr_db: cfg.min_snr_db,
            min_sep: cfg.min_separation_s * fs,
            last_onset: f64::NEG_INFINITY,
            samples: 0,
            energy: vec![0.0; hist],
            energy_scratch: vec![0.0; hist],
            ctx_frames,
            after_frames,
            quiet_frames: (QUIET_BEFORE_S / frame_dur).round() as u64,
            gate: Gate {
                min_prominence_db: cfg.min_prominence_db,
                comparable_db: cfg.comparable_db,
                max_comparable: cfg.max_comparable_onsets,
            },
        }
    }

    pub(crate) fn max_latency_samples(&self) -> u64 {
        (self.pre_n + self.post_n + 2 * self.n) as u64
    }

    pub(crate) fn frame_len(&self) -> usize {
        self.n
    }

    pub(crate) fn dropped_candidates(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn noise_floor_db(&self) -> f64 {
        let n2 = (self.n * self.n) as f64;
        let ms: f64 = self
            .floor
            .iter()
            .zip(&self.gain)
            .map(|(f, g)| 2.0 * f * g / n2)
            .sum();
        10.0 * (ms / P_REF2).max(1e-30).log10()
    }

    pub(crate) fn process(&mut self, block: &[f32], out: &mut Vec<Pick>) {
        let mut x = block;
        while !x.is_empty() {
            let take = x.len().min(self.n - self.fill);
            let (head, rest) = x.split_at(take);
            self.ring.push_slice(head);
            self.low.feed(head);
            let frame = &mut self.frame[self.fill..self.fill + take];
            first_difference(
                frame,
                head,
                &mut self.prev,
                &mut self.zero_run,
                self.n as u64,
            );
            self.fill += take;
            self.samples += take as u64;
            x = rest;
            if self.fill == self.n {
                self.fill = 0;
                self.on_frame();
                self.emit_ready(out, false);
            }
        }
    }

    pub(crate) fn flush(&mut self, out: &mut Vec<Pick>) {
        self.emit_ready(out, true);
    }

    fn on_frame(&mut self) {
        let f = self.frames_done;
        self.frames_done += 1;
        if self
            .fft
            .process_with_scratch(&mut self.frame, &mut self.spec, &mut self.scratch)
            .is_err()
        {
            return; // lengths are fixed at construction; cannot happen
        }
        if self.zero_run >= self.n as u64 {
            // A whole frame of digital silence: no floor to learn from it;
            // once signal resumes, the floor is learnt again before any
            // trigger (ShotSpotter's released WAVs start with 1 s of zeros,
            // and the step into the signal fired on every sensor at once).
            self.warm_until = f + 1 + self.warm_frames;
            self.reset_floor = true;
            let hl = self.energy.len() as u64;
            self.energy[(f % hl) as usize] = 0.0;
            return;
        }
        let warm = f < self.warm_until;
        let (mut stat, mut flux) = (0.0f64, 0.0f64);
        let mut e_frame = 0.0f64;
        for b in 0..self.bands.len() {
            let (lo, hi) = self.bands[b];
            let p: f32 = self.spec[lo..hi].iter().map(|c| c.norm_sqr()).sum();
            let p = f64::from(p);
            e_frame += p;
            if warm {
                self.floor[b] = if f == 0 || self.reset_floor {
                    p
                } else {
                    self.floor[b] + 0.3 * (p - self.floor[b])
                };
                continue;
            }
            let fl = self.floor[b].max(1e-30);
            let white = p / fl;
            stat += self.weight[b] * white;
            flux += self.weight[b] * (white - self.last_white[b]).max(0.0);
            self.last_white[b] = white;
        }
        // The low band: energy over the last `low_window_s`.
        let kl = self.low_frames.len();
        self.low_frames[(f % kl as u64) as usize] = std::mem::take(&mut self.low.acc);
        let low: f64 = self.low_frames.iter().sum();
        if warm {
            self.low_floor = if f == 0 || self.reset_floor {
                low
            } else {
                self.low_floor + 0.3 * (low - self.low_floor)
            };
        }
        self.reset_floor = false;
        let hl = self.energy.len() as u64;
        self.energy[(f % hl) as usize] = e_frame as f32;
        if warm {
            return;
        }
        let low_ratio = low / self.low_floor.max(1e-30);
        let low_fire = !self.low_on && low_ratio > self.low_on_ratio;
        let last_stat = self.last_stat;
        self.last_stat = stat;
        let refractory_ok = self
            .last_trigger_frame
            .is_none_or(|t| f >= t + self.refractory_frames);
        let band_fire = (!self.triggered && stat > self.on_ratio)
            || (self.triggered && flux > self.on_ratio && stat > self.on_ratio * last_stat);
        // The low band fires only for an onset the bands did not already
        // catch in the last `low_window_s` (its energy lags the onset by up
        // to that much).
        let recent = self.last_trigger_frame.is_some_and(|t| f < t + kl as u64);
        let fire = refractory_ok && (band_fire || (low_fire && !recent));
        if low_ratio > self.low_on_ratio {
            self.low_on = true;
        } else if low_ratio < self.off_ratio {
            self.low_on = false;
        }
        if fire {
            self.last_trigger_frame = Some(f);
            self.triggered |= band_fire;
            self.stats.triggers += 1;
            self.trig_hist[self.trig_count % TRIG_HIST] = f;
            self.trig_count += 1;
            if self.pending_len < MAX_PENDING {
                let slot = (self.pending_head + self.pending_len) % MAX_PENDING;
                self.pending[slot] = f;
                self.pending_len += 1;
            } else {
                self.dropped += 1;
            }
        } else if self.triggered && stat < self.off_ratio {
            self.triggered = false;
        }
        // Noise floor: normal rate for frames that look like noise, a slow
        // rate otherwise (so a long loud sound is eventually absorbed), and
        // a fast fall once the whole frame is 6 dB under it: the floor is an
        // average of linear power, so a roar 40 dB up lifts it to within
        // ~10 dB of the roar, and at the normal rate (4.3 dB/s) it would take
        // seven seconds to come down, deaf to anything but loud onsets
        // (measured: 19 of the 37 synthetic arrivals missed, most of them
        // seconds after a launch).
        // (6 dB under, not just under: in a gunshot's decaying coda the
        // frames sit a few dB below the floor it raised, and a floor that
        // followed them down re-triggered on the coda; measured on
        // ShotSpotter, such picks cost the association shots.)
        let falling = !self.triggered && stat < 0.25;
        let a = if !self.low_on && low_ratio < 0.5 {
            self.alpha_fall
        } else if !self.low_on && low_ratio < 4.0 {
            self.alpha
        } else {
            self.alpha_slow
        };
        self.low_floor += a * (low - self.low_floor);
        for b in 0..self.bands.len() {
            let p = self.last_white[b] * self.floor[b].max(1e-30);
            let a = if falling {
                self.alpha_fall
            } else if !self.triggered && self.last_white[b] < 4.0 {
                self.alpha
            } else {
                self.alpha_slow
            };
            self.floor[b] += a * (p - self.floor[b]);
        }
    }

    fn emit_ready(&mut self, out: &mut Vec<Pick>, flush: bool) {
        while self.pending_len > 0 {
            let f = self.pending[self.pending_head];
            let ready_at = (f + 1) * self.n as u64 + self.post_n as u64;
            if !flush && self.samples < ready_at {
                break;
            }
            self.pending_head = (self.pending_head + 1) % MAX_PENDING;
            self.pending_len -= 1;
            if let Some(p) = self.finish(f) {
                out.push(p);
            }
        }
    }

    /// The isolation context of a candidate triggered at frame `f`, from the
    /// frame-energy history: (prominence of its peak frame energy over the
    /// median frame energy of the `CONTEXT_S` before, dB; number of other
    /// onsets within `comparable_db` of it in that context and in the tail
    /// of the feature window). A blast is one dominant impulse over a quieter
    /// background; applause, typing and rain are trains of comparable
    /// impulses; rumble rises slowly out of a background almost as loud.
    fn context(&mut self, f: u64) -> Context {
        let hl = self.energy.len() as u64;
        let done = self.frames_done;
        let first = self.warm_until.max(done.saturating_sub(hl));
        let e = |j: u64| f64::from(self.energy[(j % hl) as usize]);
        let valid = |j: u64| j >= first && j < done;
        let mut e_pk = 0.0f64;
        for j in f..f + 3 {
            if valid(j) {
                e_pk = e_pk.max(e(j));
            }
        }
        // Background: the median frame energy over the context before the
        // candidate (stopping 4 frames short of the trigger: the onset may
        // start a frame early). Median, not mean, so earlier impulses in it
        // do not raise it.
        let b0 = f.saturating_sub(self.ctx_frames).max(first);
        let b1 = f.saturating_sub(4);
        let mut m = 0usize;
        for j in b0..b1 {
            self.energy_scratch[m] = e(j) as f32;
            m += 1;
        }
        let (prominence, med) = if m >= 8 {
            let (_, med, _) =
                self.energy_scratch[..m].select_nth_unstable_by(m / 2, f32::total_cmp);
            let med = f64::from(*med).max(1e-30);
            (
                (10.0 * (e_pk / med).max(1e-6).log10()).min(PROMINENCE_CAP_DB),
                med,
            )
        } else {
            (PROMINENCE_CAP_DB, 1.0)
        };
        // Comparable onsets: upward crossings of the level `comparable_db`
        // below the candidate's peak, before it and in the tail of the window
        // (echoes and a muzzle blast behind an N-wave come within 0.15 s).
        // Only onsets that would trigger on their own count (noise
        // fluctuations under a weak candidate are not onsets).
        let thr = (e_pk * db_to_pow(-self.gate.comparable_db)).max(self.on_ratio * med);
        let mut count = 0usize;
        let mut above = true; // a burst already on at the context start is not counted
        for j in b0..b1 {
            let a = e(j) >= thr;
            if a && !above {
                count += 1;
            }
            above = a;
        }
        let tail0 = f + (TAIL_SKIP_S * self.fs / self.n as f64).ceil() as u64;
        let tail1 = (f + self.after_frames + 1).min(done);
        let mut above = true;
        for j in tail0..tail1 {
            let a = e(j) >= thr;
            if a && !above {
                count += 1;
            }
            above = a;
        }
        // What follows: the median frame energy from 40 ms after the
        // trigger to the end of the window, over the background (a sound
        // that switched on stays up: a crowd, an engine, rain; a blast
        // falls back) and over the candidate's peak (how far it decayed).
        let a0 = f + (AFTER_SKIP_S * self.fs / self.n as f64).ceil() as u64;
        let a1 = (f + self.after_frames + 1).min(done);
        let mut m = 0usize;
        for j in a0.max(first)..a1 {
            self.energy_scratch[m] = e(j) as f32;
            m += 1;
        }
        let (level_after_db, tail_db) = if m >= 4 && prominence < PROMINENCE_CAP_DB {
            let (_, after, _) =
                self.energy_scratch[..m].select_nth_unstable_by(m / 2, f32::total_cmp);
            let after = f64::from(*after).max(1e-30);
            (
                10.0 * (after / med).log10(),
                10.0 * (after / e_pk.max(1e-30)).log10(),
            )
        } else {
            (0.0, -PROMINENCE_CAP_DB)
        };
        Context {
            prominence_db: prominence,
            comparable: count as f64,
            level_after_db: level_after_db.clamp(-20.0, PROMINENCE_CAP_DB),
            tail_db: tail_db.clamp(-PROMINENCE_CAP_DB, 10.0),
        }
    }

    /// Whether the sound that triggered at frame `f` is sustained: the
    /// median frame energy over `slow_gate_s` from the trigger at least
    /// 3 dB above the median of the `CONTEXT_S` before it (medians, so that
    /// a single later impulse does not count, nor earlier ones).
    fn sustained(&mut self, f: u64) -> bool {
        let hl = self.energy.len() as u64;
        let done = self.frames_done;
        let first = self.warm_until.max(done.saturating_sub(hl));
        let span = (self.slow_gate_n as u64).div_ceil(self.n as u64).max(1);
        let mut median = |from: u64, to: u64| -> Option<f64> {
            let mut m = 0usize;
            for j in from.max(first)..to.min(done) {
                self.energy_scratch[m] = self.energy[(j % hl) as usize];
                m += 1;
            }
            (m > 0).then(|| {
                let (_, med, _) =
                    self.energy_scratch[..m].select_nth_unstable_by(m / 2, f32::total_cmp);
                f64::from(*med)
            })
        };
        let before = median(f.saturating_sub(self.ctx_frames), f.saturating_sub(4));
        let after = median(f, f + span);
        // And it rises out of quiet: no frame of the `QUIET_BEFORE_S` before
        // the trigger 10 dB over the background. In the coda of a shot or
        // within a burst of fire, energy stays up after any trigger, and a
        // peak over 50 ms there is the burst's, not the candidate's.
        let quiet = (f.saturating_sub(self.quiet_frames).max(first)..f.saturating_sub(4))
            .map(|j| f64::from(self.energy[(j % hl) as usize]))
            .fold(0.0f64, f64::max);
        matches!((before, after), (Some(b), Some(a)) if a >= 2.0 * b && b > 0.0 && quiet <= 10.0 * b)
    }
}

/// The low band's front end: boxcar means of `decim` samples (a rate of
/// about 2 kHz, well above the 250 Hz band: a recursive filter per input
/// sample is latency-bound and tripled the detector's cost) through the
/// band-pass sections, their squares summed into `acc` (the energy of the
/// frame being filled; `on_frame` takes it).
#[derive(Debug, Clone)]
struct LowBand {
    hp: HighPass,
    lp: HighPass,
    state: [[f64; 2]; 2],
    acc: f64,
    decim: usize,
    /// The boxcar under way: its sum so far and its number of samples.
    sum: f64,
    count: usize,
}

impl LowBand {
    fn new(hp: HighPass, lp: HighPass, decim: usize) -> LowBand {
        LowBand {
            hp,
            lp,
            state: [[0.0; 2]; 2],
            acc: 0.0,
            decim,
            sum: 0.0,
            count: 0,
        }
    }

    /// The next samples. A boxcar's sum is an f64 sum of the f32 sums of
    /// its parts, cut where the blocks fed are (frames and the caller's
    /// blocks): those cuts are part of its value, so they are kept exactly.
    #[inline]
    fn feed(&mut self, x: &[f32]) {
        let (hp, lp, decim) = (self.hp, self.lp, self.decim);
        let [mut s_hp, mut s_lp] = self.state;
        let (mut sum, mut count, mut acc) = (self.sum, self.count, self.acc);
        let mut todo = x;
        // Complete the boxcar under way, if any.
        if count > 0 {
            let k = (decim - count).min(todo.len());
            let (part, tail) = todo.split_at(k);
            sum += f64::from(part.iter().sum::<f32>());
            count += k;
            todo = tail;
            if count == decim {
                let y = lp.step(&mut s_lp, hp.step(&mut s_hp, sum / decim as f64));
                acc += y * y;
                (sum, count) = (0.0, 0);
            }
        }
        // Whole boxcars: each summed alone in order, but `BOXCAR_LANES` of
        // them side by side: one sequential f32 sum is bound by the latency
        // of its additions, independent ones fill the pipeline.
        let mut whole = todo.chunks_exact(decim * BOXCAR_LANES);
        for group in whole.by_ref() {
            let mut sums = [-0.0f32; BOXCAR_LANES]; // `f32: Sum` starts at -0.0
            for i in 0..decim {
                for (l, s) in sums.iter_mut().enumerate() {
                    *s += group[l * decim + i];
                }
            }
            for s in sums {
                // (`0.0 +`: a boxcar's f64 sum starts at 0.0, as a part's.)
                let y = lp.step(
                    &mut s_lp,
                    hp.step(&mut s_hp, (0.0 + f64::from(s)) / decim as f64),
                );
                acc += y * y;
            }
        }
        let mut singles = whole.remainder().chunks_exact(decim);
        for part in singles.by_ref() {
            let s = 0.0 + f64::from(part.iter().sum::<f32>());
            let y = lp.step(&mut s_lp, hp.step(&mut s_hp, s / decim as f64));
            acc += y * y;
        }
        // Start the next boxcar with what is left.
        let part = singles.remainder();
        if !part.is_empty() {
            sum += f64::from(part.iter().sum::<f32>());
            count += part.len();
        }
        (self.sum, self.count, self.acc) = (sum, count, acc);
        self.state = [s_hp, s_lp];
    }
}

/// The first difference of `head` into `frame` (`head.len()` samples, at
/// most `n`), after `prev`; `zero_run` counts the exact zeros up to here.
/// The first sample to follow `n` or more exact zeros is no step (signal
/// resuming after digital silence, its first sample often a DC offset).
///
/// One loop over the block (it vectorises), then the one sample digital
/// silence can change: a run of `n` zeros ending in this block began before
/// it (a block is at most `n` samples), so that sample is the block's first
/// non-zero one. (16-bit noise holds exact zeros in most frames: a branch
/// per sample for them cost a third of the front end.)
#[inline]
fn first_difference(frame: &mut [f32], head: &[f32], prev: &mut f32, zero_run: &mut u64, n: u64) {
    let mut p = *prev;
    for (slot, &v) in frame.iter_mut().zip(head) {
        *slot = v - p;
        p = v;
    }
    *prev = p;
    match head.iter().position(|&v| v != 0.0) {
        Some(i) => {
            if *zero_run + i as u64 >= n {
                // The sample minus itself, as the rule computes it (not 0.0:
                // a NaN or an infinity stays NaN).
                #[allow(clippy::eq_op)]
                let step = head[i] - head[i];
                frame[i] = step;
            }
            let last = head.iter().rposition(|&v| v != 0.0).unwrap_or(i);
            *zero_run = (head.len() - 1 - last) as u64;
        }
        None => *zero_run += head.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit-like signal (exact zeros common) with runs of digital
    /// silence of every length around the frame length, DC steps after
    /// them, and signed zeros; cut into blocks of varied lengths.
    fn signal_and_cuts(n: usize) -> (Vec<f32>, Vec<usize>) {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut x = Vec::new();
        for (k, run) in [1, 5, n - 1, n, n + 1, 2 * n, 3 * n + 7, 0, 40]
            .into_iter()
            .cycle()
            .take(60)
            .enumerate()
        {
            let offset = [0.0f32, 3.0, -7.0, 0.5][k % 4];
            for _ in 0..(next() % 700) as usize + 50 {
                let q = ((next() % 9) as i64 - 4) as f32; // -4..4 LSB: zeros common
                x.push(if q == 0.0 && next() % 3 == 0 {
                    -0.0
                } else {
                    q + offset
                });
            }
            x.extend(std::iter::repeat_n(0.0f32, run));
        }
        let mut cuts = Vec::new();
        let mut at = 0;
        while at < x.len() {
            let len = match next() % 4 {
                0 => 1,
                1 => n,
                _ => (next() % n as u64) as usize + 1,
            };
            cuts.push(len.min(x.len() - at));
            at += len;
        }
        (x, cuts)
    }

    /// The fast first difference against the rule sample by sample, bit for
    /// bit, blocks cut at frame edges as `process` cuts them.
    #[test]
    fn first_difference_equals_the_sample_by_sample_rule() {
        let n = 128usize;
        let (x, cuts) = signal_and_cuts(n);
        let (mut prev, mut run) = (0.0f32, 0u64);
        let (mut prev_ref, mut run_ref) = (0.0f32, 0u64);
        let (mut at, mut fill) = (0, 0);
        for len in cuts {
            let mut block = &x[at..at + len];
            at += len;
            while !block.is_empty() {
                let take = block.len().min(n - fill);
                let (head, rest) = block.split_at(take);
                let mut fast = vec![0.0f32; take];
                first_difference(&mut fast, head, &mut prev, &mut run, n as u64);
                let mut direct = vec![0.0f32; take];
                for (slot, &v) in direct.iter_mut().zip(head) {
                    if v == 0.0 {
                        run_ref += 1;
                    } else {
                        if run_ref >= n as u64 {
                            prev_ref = v;
                        }
                        run_ref = 0;
                    }
                    *slot = v - prev_ref;
                    prev_ref = v;
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&direct), "block at sample {}", at - len);
                assert_eq!((prev.to_bits(), run), (prev_ref.to_bits(), run_ref));
                fill = (fill + take) % n;
                block = rest;
            }
        }
    }

    /// The side-by-side boxcars against one sum per boxcar part, in order,
    /// bit for bit, on blocks of varied lengths.
    #[test]
    fn low_band_equals_the_boxcar_by_boxcar_sums() {
        let (x, cuts) = signal_and_cuts(128);
        let fs = 48_000.0;
        let decim = 24;
        let (hp, lp) = (
            HighPass::butterworth(20.0, fs / decim as f64),
            HighPass::butterworth_low(250.0, fs / decim as f64),
        );
        let mut fast = LowBand::new(hp, lp, decim);
        let [mut s_hp, mut s_lp] = [[0.0f64; 2]; 2];
        let (mut sum, mut count, mut acc) = (0.0f64, 0usize, 0.0f64);
        let mut at = 0;
        for len in cuts {
            let block = &x[at..at + len];
            at += len;
            fast.feed(block);
            let mut todo = block;
            while !todo.is_empty() {
                let k = (decim - count).min(todo.len());
                let (part, tail) = todo.split_at(k);
                sum += f64::from(part.iter().sum::<f32>());
                count += k;
                todo = tail;
                if count == decim {
                    let y = lp.step(&mut s_lp, hp.step(&mut s_hp, sum / decim as f64));
                    acc += y * y;
                    (sum, count) = (0.0, 0);
                }
            }
            assert_eq!(fast.acc.to_bits(), acc.to_bits(), "after sample {at}");
            assert_eq!((fast.sum.to_bits(), fast.count), (sum.to_bits(), count));
            assert_eq!(
                fast.state.map(|s| s.map(f64::to_bits)),
                [s_hp, s_lp].map(|s| s.map(f64::to_bits))
            );
        }
    }
}
