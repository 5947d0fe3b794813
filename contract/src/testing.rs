//! Test helpers (cargo feature `testing`, enabled by the dev-dependencies
//! of the crates that use it): a [`DetectionBuilder`] instead of an
//! 18-field `Detection` literal in every test, bench and test helper.

use crate::geo::Geodetic;
use crate::time::UtcNs;
use crate::wire::{ClassProbs, ClockInfo, ClockSource, Detection, SourceKind, StreamKind};

/// Builds a [`Detection`] from plausible defaults: an acoustic explosion
/// (confidence 0.9), 0.1 ms pick uncertainty, peak 50 Pa, 30 dB SNR, 10 ms
/// long, at (0, 0, 0), GPS-PPS clock (1 µs), no extensions. Change only
/// what a test is about.
#[derive(Debug, Clone)]
#[must_use]
pub struct DetectionBuilder(Detection);

impl DetectionBuilder {
    /// Detection `seq` of `node_id` with its onset at `onset_utc`.
    pub fn new(node_id: impl Into<String>, seq: u64, onset_utc: UtcNs) -> DetectionBuilder {
        DetectionBuilder(Detection {
            onset_uncertainty_s: 1e-4,
            kind: SourceKind::Explosion,
            confidence: 0.9,
            peak: 50.0,
            snr_db: 30.0,
            duration_s: 0.01,
            ..Detection::new(
                node_id,
                seq,
                onset_utc,
                Geodetic::default(),
                ClockInfo {
                    source: ClockSource::GpsPps,
                    uncertainty_s: 1e-6,
                },
            )
        })
    }

    /// 1-sigma pick uncertainty, s.
    pub fn onset_uncertainty_s(mut self, s: f64) -> Self {
        self.0.onset_uncertainty_s = s;
        self
    }

    /// Which sensor.
    pub fn stream(mut self, stream: StreamKind) -> Self {
        self.0.stream = stream;
        self
    }

    /// Classifier decision and its confidence.
    pub fn kind(mut self, kind: SourceKind, confidence: f64) -> Self {
        self.0.kind = kind;
        self.0.confidence = confidence;
        self
    }

    /// Per-class probabilities (the `class_probs` extension).
    pub fn class_probs(mut self, p: ClassProbs) -> Self {
        self.0.class_probs = p.to_map();
        self
    }

    /// Peak |value|, Pa or m/s.
    pub fn peak(mut self, peak: f64) -> Self {
        self.0.peak = peak;
        self
    }

    /// Peak over noise, dB.
    pub fn snr_db(mut self, snr_db: f64) -> Self {
        self.0.snr_db = snr_db;
        self
    }

    /// Pulse duration, s.
    pub fn duration_s(mut self, s: f64) -> Self {
        self.0.duration_s = s;
        self
    }

    /// The node's position.
    pub fn at(mut self, g: Geodetic) -> Self {
        self.0.lat = g.lat;
        self.0.lon = g.lon;
        self.0.alt_m = g.alt_m;
        self
    }

    /// Clock source and 1-sigma uncertainty, s.
    pub fn clock(mut self, source: ClockSource, uncertainty_s: f64) -> Self {
        self.0.clock = ClockInfo {
            source,
            uncertainty_s,
        };
        self
    }

    /// The `site` extension.
    pub fn site(mut self, site: impl Into<String>) -> Self {
        self.0.site = Some(site.into());
        self
    }

    /// The `position_uncertainty_m` extension.
    pub fn position_uncertainty_m(mut self, m: f64) -> Self {
        self.0.position_uncertainty_m = Some(m);
        self
    }

    /// The `clipped` extension.
    pub fn clipped(mut self, clipped: bool) -> Self {
        self.0.clipped = clipped;
        self
    }

    /// The detection.
    pub fn build(self) -> Detection {
        self.0
    }
}

/// `n` pseudo-random bytes (xorshift64 from `seed`): a corrupted file's contents.
pub fn noise_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
