//! The back end of the acoustic path: turning a triggered frame into a
//! [`Pick`] in named steps (load the raw window, high-pass a picking copy,
//! AIC onset and first peak, SNR gate, sub-sample onset, features,
//! classification). It owns the types those steps hand each other.

use blastnet_contract::{ClassProbs, SourceKind};

use super::{Acoustic, CONTEXT_S, TRIG_HIST};
use crate::aic::aic_pick;
use crate::classify::N_CLASSES;
use crate::features::{measure, Features, PulseGeometry};
use crate::Pick;

impl Acoustic {
    /// Pick, measure and classify the candidate triggered at frame `f`:
    /// load the raw window, high-pass a picking copy, AIC onset, first peak
    /// and polarity, SNR gate, sub-sample onset, duplicate check, features,
    /// classification. Each step that can refuse the candidate counts why.
    pub(super) fn finish(&mut self, f: u64) -> Option<Pick> {
        let sustained = self.sustained(f);
        let Some(win) = self.load_window(f) else {
            self.stats.rejected_other += 1;
            return None;
        };
        let len = self.pick_copy(&win);
        let Some(peak) = self.first_peak(&win, len) else {
            self.stats.rejected_other += 1;
            return None;
        };
        let Some(noise_rms) = self.snr_gate(&win, len, &peak, sustained) else {
            self.stats.rejected_snr += 1;
            return None;
        };
        let (onset, sigma_samples, rise) = self.refine_onset(len, &peak, noise_rms);
        let onset_abs = win.w0 as f64 + onset;
        if onset_abs - self.last_onset < self.min_sep {
            self.stats.rejected_duplicate += 1;
            return None;
        }
        self.last_onset = onset_abs;

        let geom = PulseGeometry {
            onset: (onset.ceil() as usize).min(len - 1),
            peak: peak.p,
            rise_samples: rise,
            noise_rms,
            clipped: win.clipped,
        };
        let features = self.features(f, &win, &geom);
        let (kind, confidence, class_probs) = self.classify(&features);
        Some(Pick {
            onset_index: onset_abs,
            onset_uncertainty_s: sigma_samples / self.fs,
            kind,
            confidence,
            class_probs,
            peak: features.peak,
            snr_db: features.snr_db,
            duration_s: features.duration_s,
            features,
        })
    }

    /// Copy the raw window around the trigger frame `f` into `work`, note
    /// saturation and remove the pre-window mean. `None`: too short a window.
    fn load_window(&mut self, f: u64) -> Option<Window> {
        let n = self.n as u64;
        let frame_start = f * n;
        let w0 = frame_start
            .saturating_sub(self.pre_n as u64)
            .max(self.ring.oldest());
        let w1 = self.samples.min(frame_start + n + self.post_n as u64);
        if w1 <= w0 + 16 {
            return None;
        }
        let len = ((w1 - w0) as usize).min(self.work.len());
        let y = &mut self.work[..len];
        self.ring.copy_to(w0, y);
        // Saturation, on the raw samples around the trigger: three or more
        // samples at the window's largest |x| is a flat top.
        let fe_raw = ((frame_start + n - w0) as usize).min(len);
        let around = &y[fe_raw.saturating_sub(5 * self.n)..(fe_raw + self.n).min(len)];
        let top = around.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let clipped = top > 0.0
            && around
                .iter()
                .filter(|v| v.abs() >= top * (1.0 - 1e-6))
                .count()
                >= 3;
        // Remove the pre-window mean so the high-pass starts near rest.
        let m0 = (self.pre_n / 2).clamp(1, len);
        let mean = y[..m0].iter().map(|&v| f64::from(v)).sum::<f64>() / m0 as f64;
        for v in y.iter_mut() {
            *v -= mean as f32;
        }
        Some(Window {
            w0,
            len,
            fe: (frame_start + n - w0) as usize,
            clipped,
        })
    }

    /// The picking copy in `pick_buf`, only as far as the gate needs:
    /// high-passed at `pick_highpass_hz` so that low-frequency noise (wind,
    /// traffic) does not dominate the AIC. Returns its length.
    fn pick_copy(&mut self, win: &Window) -> usize {
        let fe = win.fe;
        let q_len = (fe + (2 * self.n + self.rise_win).max(self.n + self.slow_gate_n)).min(win.len);
        let q = &mut self.pick_buf[..q_len];
        q.copy_from_slice(&self.work[..q_len]);
        self.pick_hp.run(q);
        q_len
    }

    /// AIC onset, then the first excursion's peak; both copies are turned
    /// so that the first excursion is positive. `None`: no change point, or
    /// nothing but zeros after it.
    fn first_peak(&mut self, win: &Window, len: usize) -> Option<FirstPeak> {
        let fe = win.fe;
        let q = &mut self.pick_buf[..len];
        // AIC from the window start to one frame past the trigger frame,
        // the change searched within the few frames before the trigger.
        let aic_end = (fe + self.n).min(len);
        let lo = fe.saturating_sub(4 * self.n).max(8);
        let k = aic_pick(&q[..aic_end], lo, fe.min(aic_end))?;

        // Polarity of the first excursion, then its first peak.
        let a = k.saturating_sub(2);
        let b = (k + 1 + self.rise_win).min(len);
        let (mut imax, mut vmax) = (a, 0.0f32);
        for (i, &v) in q.iter().enumerate().take(b).skip(a) {
            if v.abs() > vmax {
                vmax = v.abs();
                imax = i;
            }
        }
        if vmax <= 0.0 {
            return None;
        }
        if q[imax] < 0.0 {
            for v in q.iter_mut() {
                *v = -*v;
            }
            for v in self.work[..win.len].iter_mut() {
                *v = -*v;
            }
        }
        Some(FirstPeak { k, a, b, p: imax })
    }

    /// The SNR gate on the picking copy: the pre-onset noise RMS if the
    /// pulse stands `min_snr_db` above it, else `None`.
    fn snr_gate(&self, win: &Window, len: usize, peak: &FirstPeak, sustained: bool) -> Option<f64> {
        let z = &self.pick_buf[..len];
        let k = peak.k;
        // Pre-onset noise.
        let noise_end = k.saturating_sub(self.rise_win / 2).max(16).min(len);
        let noise_rms = (z[..noise_end]
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            / noise_end as f64)
            .sqrt();
        // The gate looks at the whole trigger frame after the pick, so that a
        // slowly rising sound (a launch) is judged by its level, not its first ms.
        let gate_end = (win.fe + self.n).min(len).max(peak.b);
        let level_db = |end: usize| -> f64 {
            let from = k.min(len - 1);
            let peak = z[from..end.max(from + 1)]
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            20.0 * (f64::from(peak) / noise_rms.max(1e-30)).max(1e-12).log10()
        };
        let mut gate_db = level_db(gate_end);
        // A sustained onset (see `sustained`) is judged by its peak over
        // `slow_gate_s`: a launch's roar builds for 50–120 ms and read
        // 10–12 dB on the first frame alone. Only a sustained one, so that a
        // noise trigger does not reach an unrelated later peak (a blast
        // 40 ms after a noise trigger made a false pick before it).
        if gate_db < self.min_snr_db && sustained {
            gate_db = level_db((k + self.slow_gate_n).min(len).max(gate_end));
        }
        (gate_db >= self.min_snr_db).then_some(noise_rms)
    }

    /// The sub-sample onset on the rising edge (in window samples), its
    /// 1-sigma in samples, and the 10–90 % rise time in samples. A front
    /// rounded by absorption is timed where the wavefront arrived, by the
    /// dispersion templates ([`crate::dispersion`]), when they explain it.
    fn refine_onset(&self, len: usize, peak: &FirstPeak, noise_rms: f64) -> (f64, f64, f64) {
        let z = &self.pick_buf[..len];
        let (a, k, p) = (peak.a, peak.k, peak.p);
        let pv = f64::from(z[p]);
        // Level crossings walking back from the peak.
        let crossing = |frac: f64| -> Option<f64> {
            let lvl = frac * pv;
            let mut j = p;
            while j > a {
                j -= 1;
                if f64::from(z[j]) < lvl {
                    let (z0, z1) = (f64::from(z[j]), f64::from(z[j + 1]));
                    return Some(j as f64 + (lvl - z0) / (z1 - z0).max(1e-30));
                }
            }
            None
        };
        let t50 = crossing(0.5);
        let t10 = crossing(0.1);
        let t90 = crossing(0.9);
        let rise = match (t10, t90) {
            (Some(u), Some(v)) => (v - u).max(0.0),
            _ => 0.0,
        };
        let (onset, slope, model_var) = match t50 {
            Some(t) if rise <= 2.0 => {
                let j = t.floor() as usize;
                let s = f64::from(z[(j + 1).min(len - 1)]) - f64::from(z[j]);
                (t, s, 1.0 / 12.0)
            }
            Some(t) => {
                // Slow rise: the steepest tangent's intercept with zero.
                let from = t10.map_or(a, |u| u.floor() as usize);
                let (mut best_i, mut best_d) = (from, 0.0f64);
                for i in from..p {
                    let d = f64::from(z[i + 1]) - f64::from(z[i]);
                    if d > best_d {
                        best_d = d;
                        best_i = i;
                    }
                }
                let inter = best_i as f64 - f64::from(z[best_i]) / best_d.max(1e-30);
                let inter = inter.clamp(t10.unwrap_or(t) - rise, t);
                (inter, best_d, 1.0 / 12.0 + (0.15 * rise).powi(2))
            }
            None => (k as f64 + 0.5, pv, 0.25),
        };
        let noise_var = 2.0 * (noise_rms / slope.max(1e-30)).powi(2);
        // A rise over more than 2 samples (or one whose 10 % point the walk
        // back from the peak did not reach) is a rounded front: the template
        // fit times it. Its model error is a share of the correction (the
        // air's humidity is not known exactly).
        if let (Some(t), true) = (t50, rise > 2.0 || t10.is_none()) {
            if let Some(fit) = self.dispersion.fit(&self.pick_buf[..len], p, t) {
                let shift = (t - fit.onset).max(0.0);
                let model = 1.0 / 12.0 + (crate::dispersion::MODEL_FRACTION * shift).powi(2);
                return (fit.onset, (model + noise_var).sqrt(), rise);
            }
        }
        (onset, (model_var + noise_var).sqrt(), rise)
    }

    /// The features of the pulse (on the whole window, gently high-passed)
    /// and of its context in the trigger and frame-energy histories.
    fn features(&mut self, f: u64, win: &Window, geom: &PulseGeometry) -> Features {
        // The feature copy: the whole window, gently high-passed.
        self.hp.run(&mut self.work[..win.len]);
        let mut features = measure(&self.work[..win.len], self.fs, geom, &mut self.spectral);
        // Context from the trigger history (frame-exact, so block-size free).
        let frame_dur = self.n as f64 / self.fs;
        let ctx = (CONTEXT_S / frame_dur).round() as u64;
        let after = (self.post_n as u64).div_ceil(self.n as u64);
        let held = self.trig_count.min(TRIG_HIST);
        let (mut before, mut later) = (0usize, 0usize);
        for j in 0..held {
            let t = self.trig_hist[(self.trig_count - 1 - j) % TRIG_HIST];
            if t < f && t + ctx >= f {
                before += 1;
            } else if t > f && t <= f + after {
                later += 1;
            }
        }
        features.impulse_rate_before_hz = before as f64 / CONTEXT_S;
        features.impulse_rate_after_hz = later as f64 / (after as f64 * frame_dur);
        let ctx = self.context(f);
        features.local_prominence_db = ctx.prominence_db;
        features.comparable_onsets = ctx.comparable;
        features.level_after_db = ctx.level_after_db;
        features.tail_db = ctx.tail_db;
        features
    }

    /// The kind, its confidence and the class probabilities. The optional
    /// isolation gate (off by default: the classifier sees prominence and
    /// comparable onsets as features) can only withhold a blast kind; the
    /// class probabilities stay the model's.
    fn classify(&self, features: &Features) -> (SourceKind, f64, ClassProbs) {
        let isolated = features.local_prominence_db >= self.gate.min_prominence_db
            && features.comparable_onsets <= self.gate.max_comparable;
        let probs = self.classifier.probs(&features.vector());
        let (best, conf) = if isolated {
            self.classifier.decide(&probs)
        } else {
            (N_CLASSES - 1, probs[N_CLASSES - 1])
        };
        (SourceKind::CLASSIFIED[best], conf, ClassProbs(probs))
    }
}

/// The raw window around a candidate, as loaded into `work`.
struct Window {
    /// Stream index of `work[0]`.
    w0: u64,
    /// Samples loaded.
    len: usize,
    /// Index of the end of the trigger frame in the window.
    fe: usize,
    /// Saturated around the trigger.
    clipped: bool,
}

/// The AIC onset and the first excursion after it, in picking-copy samples.
struct FirstPeak {
    /// AIC change point.
    k: usize,
    /// Start of the first-excursion search (just before `k`).
    a: usize,
    /// End of the first-excursion search.
    b: usize,
    /// The first peak.
    p: usize,
}
