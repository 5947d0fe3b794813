//! Pure streaming DSP core: acoustic and seismic onset detection, picking and
//! classification. No I/O, no threads, no allocation in steady state.
//!
//! Feed blocks of physical samples (Pa or m/s) to a [`Detector`]; it appends
//! [`Pick`]s whose `onset_index` counts samples since its first sample. Picks
//! do not depend on how the stream is cut into blocks.
#![forbid(unsafe_code)]

mod acoustic;
pub mod aic;
pub mod classify;
mod dispersion;
pub mod features;
mod filter;
mod ring;
pub mod seismic;
mod seismic_detector;

pub use classify::{Classifier, Model, N_CLASSES};
pub use features::{Features, FEATURE_NAMES, N_FEATURES};

use blastnet_contract::{ClassProbs, SourceKind, StreamKind};
use serde::{Deserialize, Serialize};

/// Detector tuning. Every field has a physically motivated default; a TOML
/// or JSON table with any subset of these keys deserialises into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Acoustic STFT frame length, s (rounded up to a power of two samples).
    pub frame_s: f64,
    /// Acoustic detection band, low edge, Hz.
    pub band_low_hz: f64,
    /// Acoustic detection band, high edge, Hz (clamped below 0.45·fs).
    pub band_high_hz: f64,
    /// Number of log-spaced bands, each whitened by its own noise floor.
    pub n_bands: usize,
    /// Acoustic trigger: whitened band energy (or flux while on) above this, dB.
    pub on_db: f64,
    /// Acoustic trigger re-arms when the whitened energy falls below this, dB.
    pub off_db: f64,
    /// Low-band trigger: energy in `low_band_hz` over `low_window_s` above
    /// its own adaptive floor by this, dB (a blast's positive phase lasts
    /// tens of ms and carries most of its energy below 200 Hz, where the
    /// first-differenced STFT frames hardly look).
    pub low_on_db: f64,
    /// Low-band trigger band, Hz.
    pub low_band_hz: [f64; 2],
    /// Low-band trigger integration, s. Red background noise (wind,
    /// traffic) leaves few degrees of freedom in this band: 10 ms and 10 dB
    /// fired twice a second on noise alone at 12 kHz; 20 ms and 12 dB twice
    /// in 20 minutes.
    pub low_window_s: f64,
    /// Noise-floor time constant for noise-like frames, s.
    pub floor_tau_s: f64,
    /// Noise-floor time constant while loud, s.
    pub floor_tau_slow_s: f64,
    /// Noise-floor time constant once a loud sound has ended (the whole
    /// frame at least 3 dB under the floor), s: the floor learnt under a
    /// launch's roar must not deafen the detector for seconds after it.
    pub floor_fall_tau_s: f64,
    /// A candidate still rising at the end of the gate's first window (a
    /// launch's roar builds over tens of ms) is judged by its level over
    /// this long, s.
    pub slow_gate_s: f64,
    /// No triggers during the first `warmup_s` (the floor is being learnt), s.
    pub warmup_s: f64,
    /// High-pass applied to the candidate window before picking, Hz.
    pub highpass_hz: f64,
    /// High-pass applied to the copy used for picking (AIC, rising edge), Hz.
    pub pick_highpass_hz: f64,
    /// Air temperature the onset pick's absorption templates assume, °C
    /// (a local weather sensor's; replay takes the manifest's weather).
    pub air_temperature_c: f64,
    /// Relative humidity the absorption templates assume, % (as above; 50
    /// when unknown: the stated pick sigma allows for ±30 points).
    pub air_humidity_pct: f64,
    /// History kept before a trigger for picking and noise, s.
    pub pre_s: f64,
    /// Window after the trigger used for features (sets the latency), s.
    pub window_s: f64,
    /// Two picks closer than this are one pulse, s.
    pub min_separation_s: f64,
    /// Minimum peak SNR of a pick over the pre-onset noise, dB.
    pub min_snr_db: f64,
    /// Optional isolation gate (off by default: 0 here and 1000 below; the
    /// classifier weighs these features itself): a candidate whose peak
    /// frame energy stands less than this above the median frame energy of
    /// the 2 s before it is not reported as a blast, dB.
    pub min_prominence_db: f64,
    /// Isolation gate: onsets within this many dB of the candidate's peak
    /// frame energy count as comparable, dB.
    pub comparable_db: f64,
    /// Isolation gate: more comparable onsets than this around a candidate
    /// (2 s before, 0.15–0.25 s after) make it part of an impulse train
    /// (applause, typing, rain): `other_impulsive`.
    pub max_comparable_onsets: f64,
    /// Seismic STA length, s.
    pub sta_s: f64,
    /// Seismic LTA length, s.
    pub lta_s: f64,
    /// Seismic STA/LTA trigger-on threshold (ObsPy `thres1`).
    pub trigger_on: f64,
    /// Seismic STA/LTA trigger-off threshold (ObsPy `thres2`), <= `trigger_on`.
    pub trigger_off: f64,
    /// Seismic history kept before a trigger for the AIC pick, s.
    pub seismic_pre_s: f64,
    /// A seismic trigger still on after this long is emitted anyway, s.
    pub seismic_max_s: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            frame_s: 0.0025,
            band_low_hz: 100.0,
            band_high_hz: 8000.0,
            n_bands: 12,
            on_db: 5.0,
            off_db: 2.0,
            low_on_db: 12.0,
            low_band_hz: [10.0, 250.0],
            low_window_s: 0.02,
            floor_tau_s: 1.0,
            floor_tau_slow_s: 20.0,
            floor_fall_tau_s: 0.1,
            slow_gate_s: 0.05,
            warmup_s: 0.25,
            highpass_hz: 10.0,
            pick_highpass_hz: 150.0,
            air_temperature_c: 15.0,
            air_humidity_pct: 50.0,
            pre_s: 0.03,
            window_s: 0.25,
            min_separation_s: 0.005,
            min_snr_db: 12.0,
            min_prominence_db: 0.0,
            comparable_db: 10.0,
            max_comparable_onsets: 1000.0,
            sta_s: 0.05,
            lta_s: 5.0,
            trigger_on: 4.0,
            trigger_off: 1.5,
            seismic_pre_s: 0.5,
            seismic_max_s: 5.0,
        }
    }
}

fn cfg_err(field: &'static str, msg: String) -> DetectorError {
    DetectorError::Config { field, msg }
}

impl DetectorConfig {
    /// Whether a candidate with these isolation features passes the gate
    /// (is a blast candidate at all); see `min_prominence_db`.
    pub fn is_isolated(&self, f: &Features) -> bool {
        f.local_prominence_db >= self.min_prominence_db
            && f.comparable_onsets <= self.max_comparable_onsets
    }

    /// Check ranges; the error names the field.
    pub fn validate(&self) -> Result<(), DetectorError> {
        let pos = [
            ("frame_s", self.frame_s, 1.0),
            ("band_low_hz", self.band_low_hz, 1e6),
            ("band_high_hz", self.band_high_hz, 1e6),
            ("floor_tau_s", self.floor_tau_s, 3600.0),
            ("floor_tau_slow_s", self.floor_tau_slow_s, 36000.0),
            ("floor_fall_tau_s", self.floor_fall_tau_s, 3600.0),
            ("low_window_s", self.low_window_s, 1.0),
            ("low_band_hz[0]", self.low_band_hz[0], 1e6),
            ("low_band_hz[1]", self.low_band_hz[1], 1e6),
            ("slow_gate_s", self.slow_gate_s, 1.0),
            ("warmup_s", self.warmup_s, 60.0),
            ("highpass_hz", self.highpass_hz, 1e5),
            ("pick_highpass_hz", self.pick_highpass_hz, 1e5),
            ("pre_s", self.pre_s, 10.0),
            ("window_s", self.window_s, 10.0),
            ("min_separation_s", self.min_separation_s, 10.0),
            ("sta_s", self.sta_s, 600.0),
            ("lta_s", self.lta_s, 3600.0),
            ("trigger_on", self.trigger_on, 1e9),
            ("trigger_off", self.trigger_off, 1e9),
            ("seismic_pre_s", self.seismic_pre_s, 60.0),
            ("seismic_max_s", self.seismic_max_s, 600.0),
        ];
        for (field, v, max) in pos {
            if !(v.is_finite() && v > 0.0 && v <= max) {
                return Err(cfg_err(
                    field,
                    format!("expected a number in (0, {max}], got {v}"),
                ));
            }
        }
        if self.low_band_hz[1] <= self.low_band_hz[0] {
            return Err(cfg_err(
                "low_band_hz",
                format!(
                    "expected [low, high] with high > low, got {:?}",
                    self.low_band_hz
                ),
            ));
        }
        if !(-80.0..=70.0).contains(&self.air_temperature_c) {
            return Err(cfg_err(
                "air_temperature_c",
                format!("expected °C in -80..=70, got {}", self.air_temperature_c),
            ));
        }
        if !(self.air_humidity_pct > 0.0 && self.air_humidity_pct <= 100.0) {
            return Err(cfg_err(
                "air_humidity_pct",
                format!(
                    "expected a relative humidity in (0, 100] %, got {}",
                    self.air_humidity_pct
                ),
            ));
        }
        if !self.low_on_db.is_finite() {
            return Err(cfg_err("low_on_db", "expected a finite number".into()));
        }
        if self.band_high_hz <= self.band_low_hz {
            return Err(cfg_err(
                "band_high_hz",
                format!("expected > band_low_hz ({})", self.band_low_hz),
            ));
        }
        if self.n_bands == 0 || self.n_bands > 24 {
            return Err(cfg_err(
                "n_bands",
                format!("expected 1..=24, got {}", self.n_bands),
            ));
        }
        if !(self.on_db.is_finite() && self.off_db.is_finite() && self.off_db <= self.on_db) {
            return Err(cfg_err(
                "off_db",
                format!("expected finite and <= on_db ({})", self.on_db),
            ));
        }
        if self.lta_s <= self.sta_s {
            return Err(cfg_err(
                "lta_s",
                format!("expected > sta_s ({})", self.sta_s),
            ));
        }
        if self.trigger_off > self.trigger_on {
            return Err(cfg_err(
                "trigger_off",
                format!("expected <= trigger_on ({})", self.trigger_on),
            ));
        }
        for (field, v) in [
            ("min_prominence_db", self.min_prominence_db),
            ("comparable_db", self.comparable_db),
            ("max_comparable_onsets", self.max_comparable_onsets),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(cfg_err(
                    field,
                    format!("expected a finite number >= 0, got {v}"),
                ));
            }
        }
        if !self.min_snr_db.is_finite() {
            return Err(cfg_err("min_snr_db", "expected a finite number".into()));
        }
        Ok(())
    }
}

/// One detected onset.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// Sub-sample onset, in samples since this detector's first sample.
    pub onset_index: f64,
    /// Honest 1-sigma of the pick, seconds.
    pub onset_uncertainty_s: f64,
    /// Classifier decision.
    pub kind: SourceKind,
    /// Calibrated probability that `kind` is right.
    pub confidence: f64,
    /// Per-class probabilities ([`SourceKind::CLASSIFIED`] order).
    pub class_probs: ClassProbs,
    /// Peak |x| in physical units (Pa or m/s).
    pub peak: f64,
    /// Peak over noise floor, dB.
    pub snr_db: f64,
    /// Pulse duration, seconds.
    pub duration_s: f64,
    /// Feature values.
    pub features: Features,
}

/// Errors of [`Detector::new`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectorError {
    /// The sample rate is outside what the detector supports: fix the stream config.
    #[error("sample rate {0} Hz is outside the supported range (acoustic 8000..=192000 Hz, seismic 10..=192000 Hz)")]
    SampleRate(u32),
    /// A config field is out of range: fix the config (names the field).
    #[error("detector config field `{field}`: {msg}")]
    Config {
        /// The field.
        field: &'static str,
        /// What was expected.
        msg: String,
    },
    /// The compiled-in classifier model is invalid: a build defect, report it.
    #[error("classifier model: {0}")]
    Model(String),
}

/// Counters of what the acoustic back end did with its candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorStats {
    /// Frames that triggered a candidate.
    pub triggers: u64,
    /// Candidates whose pick had a peak SNR below `min_snr_db`.
    pub rejected_snr: u64,
    /// Candidates that re-picked a pulse already emitted.
    pub rejected_duplicate: u64,
    /// Candidates with no usable window or pick.
    pub rejected_other: u64,
}

/// A streaming detector for one stream.
#[derive(Debug)]
pub struct Detector {
    kind: StreamKind,
    sample_rate_hz: u32,
    samples_seen: u64,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Acoustic(Box<acoustic::Acoustic>),
    Seismic(Box<seismic_detector::SeismicDetector>),
}

impl Detector {
    /// Build a detector for one stream (acoustic picks are classified by the
    /// compiled-in model).
    pub fn new(
        kind: StreamKind,
        sample_rate_hz: u32,
        cfg: &DetectorConfig,
    ) -> Result<Detector, DetectorError> {
        let classifier = Classifier::builtin().map_err(DetectorError::Model)?;
        Detector::with_classifier(kind, sample_rate_hz, cfg, classifier)
    }

    /// As [`Detector::new`] with a given classifier (training, experiments).
    pub fn with_classifier(
        kind: StreamKind,
        sample_rate_hz: u32,
        cfg: &DetectorConfig,
        classifier: Classifier,
    ) -> Result<Detector, DetectorError> {
        cfg.validate()?;
        let ok = match kind {
            StreamKind::Acoustic => (8_000..=192_000).contains(&sample_rate_hz),
            StreamKind::Seismic => (10..=192_000).contains(&sample_rate_hz),
        };
        if !ok {
            return Err(DetectorError::SampleRate(sample_rate_hz));
        }
        let inner = match kind {
            StreamKind::Acoustic => Inner::Acoustic(Box::new(acoustic::Acoustic::new(
                sample_rate_hz,
                cfg,
                classifier,
            ))),
            StreamKind::Seismic => Inner::Seismic(Box::new(
                seismic_detector::SeismicDetector::new(sample_rate_hz, cfg),
            )),
        };
        Ok(Detector {
            kind,
            sample_rate_hz,
            samples_seen: 0,
            inner,
        })
    }

    /// Feed the next block (any length, including 1). Appends finished picks to `out`.
    /// Allocates nothing in steady state (beyond `out` growing past its capacity).
    pub fn process(&mut self, block: &[f32], out: &mut Vec<Pick>) {
        self.samples_seen += block.len() as u64;
        match &mut self.inner {
            Inner::Acoustic(a) => a.process(block, out),
            Inner::Seismic(s) => s.process(block, out),
        }
    }

    /// End of stream: emit any pick still pending.
    pub fn flush(&mut self, out: &mut Vec<Pick>) {
        match &mut self.inner {
            Inner::Acoustic(a) => a.flush(out),
            Inner::Seismic(s) => s.flush(out),
        }
    }

    /// Current noise floor, dB (re 20 µPa acoustic, in the detection band;
    /// re 1 nm/s seismic, from the LTA).
    pub fn noise_floor_db(&self) -> f64 {
        match &self.inner {
            Inner::Acoustic(a) => a.noise_floor_db(),
            Inner::Seismic(s) => s.noise_floor_db(),
        }
    }

    /// Samples consumed so far.
    pub fn samples_seen(&self) -> u64 {
        self.samples_seen
    }

    /// Latency: a pick for an onset at index i is emitted once at most this
    /// many samples after i have been fed.
    pub fn max_latency_samples(&self) -> u64 {
        match &self.inner {
            Inner::Acoustic(a) => a.max_latency_samples(),
            Inner::Seismic(s) => s.max_latency_samples(),
        }
    }

    /// The stream kind.
    pub fn stream_kind(&self) -> StreamKind {
        self.kind
    }

    /// The sample rate, Hz.
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// Acoustic STFT frame length in samples (0 for seismic).
    pub fn frame_len(&self) -> usize {
        match &self.inner {
            Inner::Acoustic(a) => a.frame_len(),
            Inner::Seismic(_) => 0,
        }
    }

    /// What the acoustic back end did with its candidates (zeros for seismic).
    pub fn stats(&self) -> DetectorStats {
        match &self.inner {
            Inner::Acoustic(a) => a.stats,
            Inner::Seismic(_) => DetectorStats::default(),
        }
    }

    /// Candidates dropped because too many were pending (should stay 0).
    pub fn dropped_candidates(&self) -> u64 {
        match &self.inner {
            Inner::Acoustic(a) => a.dropped_candidates(),
            Inner::Seismic(_) => 0,
        }
    }
}
