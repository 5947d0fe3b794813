//! The seismic detector: STA/LTA trigger, AIC pick inside each trigger.

use crate::aic::aic_pick;
use crate::ring::Ring;
use crate::seismic::{RecursiveStaLta, TriggerEvent, TriggerOnset};
use crate::{DetectorConfig, Features, Pick};
use blastnet_contract::{ClassProbs, SourceKind};

pub(crate) struct SeismicDetector {
    fs: f64,
    nsta: u64,
    stalta: RecursiveStaLta,
    trig: TriggerOnset,
    ring: Ring,
    work: Vec<f32>,
    pre_n: u64,
    post_n: u64,
    max_n: u64,
    emitted_on: Option<u64>,
    min_snr_db: f64,
    samples: u64,
}

impl std::fmt::Debug for SeismicDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeismicDetector")
            .field("fs", &self.fs)
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

impl SeismicDetector {
    pub(crate) fn new(fs_hz: u32, cfg: &DetectorConfig) -> Self {
        let fs = f64::from(fs_hz);
        let nsta = ((cfg.sta_s * fs).round() as u64).max(1);
        let nlta = ((cfg.lta_s * fs).round() as u64).max(nsta + 1);
        let pre_n = ((cfg.seismic_pre_s * fs).round() as u64).max(16);
        let post_n = ((cfg.window_s * fs).round() as u64).max(16);
        let max_n = ((cfg.seismic_max_s * fs).round() as u64).max(post_n);
        SeismicDetector {
            fs,
            nsta,
            stalta: RecursiveStaLta::new(nsta, nlta),
            trig: TriggerOnset::new(cfg.trigger_on, cfg.trigger_off),
            ring: Ring::new((pre_n + max_n) as usize + 64),
            work: vec![0.0; (pre_n + post_n) as usize + 2],
            pre_n,
            post_n,
            max_n,
            emitted_on: None,
            min_snr_db: cfg.min_snr_db,
            samples: 0,
        }
    }

    pub(crate) fn max_latency_samples(&self) -> u64 {
        self.max_n + 1
    }

    pub(crate) fn noise_floor_db(&self) -> f64 {
        10.0 * (self.stalta.lta() / 1e-18).max(1e-30).log10()
    }

    pub(crate) fn process(&mut self, block: &[f32], out: &mut Vec<Pick>) {
        for &v in block {
            self.ring.push_slice(std::slice::from_ref(&v));
            let i = self.samples;
            self.samples += 1;
            let cf = self.stalta.next(f64::from(v));
            match self.trig.next(i, cf) {
                TriggerEvent::Off(on, _off) => {
                    if self.emitted_on != Some(on) {
                        self.finish(on, out);
                    }
                    self.emitted_on = None;
                }
                TriggerEvent::On(_) | TriggerEvent::None => {
                    if let Some(on) = self.trig.open() {
                        if self.emitted_on != Some(on) && i + 1 >= on + self.max_n {
                            self.finish(on, out);
                            self.emitted_on = Some(on);
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn flush(&mut self, out: &mut Vec<Pick>) {
        if let Some(on) = self.trig.open() {
            if self.emitted_on != Some(on) {
                self.finish(on, out);
                self.emitted_on = Some(on);
            }
        }
    }

    fn finish(&mut self, on: u64, out: &mut Vec<Pick>) {
        let w0 = on.saturating_sub(self.pre_n).max(self.ring.oldest());
        let w1 = self.samples.min(on + self.post_n);
        if w1 <= w0 + 8 {
            return;
        }
        let len = ((w1 - w0) as usize).min(self.work.len());
        let y = &mut self.work[..len];
        self.ring.copy_to(w0, y);
        let search_hi = ((on - w0) + self.nsta) as usize;
        let Some(k) = aic_pick(y, 4, search_hi.min(len)) else {
            return;
        };
        let noise_n = (k + 1).max(4).min(len);
        let mean = y[..noise_n].iter().map(|&v| f64::from(v)).sum::<f64>() / noise_n as f64;
        let noise_rms = (y[..noise_n]
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / noise_n as f64)
            .sqrt();
        let peak = y[(k + 1).min(len - 1)..]
            .iter()
            .map(|&v| (f64::from(v) - mean).abs())
            .fold(0.0, f64::max);
        let snr_db = 20.0 * (peak / noise_rms.max(1e-30)).max(1e-12).log10();
        if snr_db < self.min_snr_db {
            return;
        }
        // AIC resolves a change to about a sample at high SNR and to a
        // fraction of the STA window when the onset is buried in noise.
        let sigma = (1.0 / 12.0 + (self.nsta as f64 * 10f64.powf(-snr_db / 20.0)).powi(2)).sqrt();
        let duration_s = (self.samples.min(on + self.max_n) - on) as f64 / self.fs;
        let features = Features {
            peak,
            snr_db,
            duration_s,
            ..Features::default()
        };
        out.push(Pick {
            onset_index: w0 as f64 + k as f64 + 0.5,
            onset_uncertainty_s: sigma / self.fs,
            kind: SourceKind::Unknown,
            confidence: 0.0,
            class_probs: ClassProbs::uniform(),
            peak,
            snr_db,
            duration_s,
            features,
        });
    }
}
