//! Mapping a capture clock's sample index to UTC.
//!
//! [`ClockModel`] is pure: it is fed observations `(sample_index, system
//! time)` — the system clock read when a capture buffer arrived, that clock
//! being disciplined by chrony (NTP or GPS+PPS) on the Pi — and fits
//! `t = t0 + (index − i0) · period` over a sliding window by least squares.
//! The fitted period against the nominal one is the sound card's drift; an
//! observation far from the fit is an outlier (a late callback), and several
//! consistent ones in a row are a step of the system clock (chrony stepping,
//! a GPS lock arriving), after which the fit restarts from the new offset.
//!
//! [`parse_chrony_tracking`] reads `chronyc -c tracking` to learn the clock
//! source and its uncertainty; the shell runs chronyc, this module only parses.

use std::collections::VecDeque;

use blastnet_contract::{ClockInfo, ClockSource, UtcNs, NS_PER_S};

/// Tuning of a [`ClockModel`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockModelConfig {
    /// Observations kept in the fit window.
    pub window: usize,
    /// A residual larger than this (seconds) is an outlier or part of a step.
    pub step_threshold_s: f64,
    /// Consecutive consistent outliers that make a step.
    pub step_confirm: usize,
}

impl Default for ClockModelConfig {
    fn default() -> Self {
        ClockModelConfig {
            window: 128,
            step_threshold_s: 0.005,
            step_confirm: 3,
        }
    }
}

/// What one observation did to the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockUpdate {
    /// Added to the fit.
    Accepted,
    /// Too far from the fit; held as a possible step.
    Outlier {
        /// Observed minus predicted, s.
        residual_s: f64,
    },
    /// The system clock stepped by this much (s); the fit restarted.
    Step {
        /// Size of the step, s (positive: the system clock jumped forward).
        offset_s: f64,
    },
}

/// The fitted line and its quality.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fit {
    /// Reference index (mean of the window).
    x_mean: f64,
    /// Time at `x_mean`, ns since `t_ref`.
    y_mean_ns: f64,
    /// Seconds per sample.
    period_s: f64,
    /// Residual standard deviation, s.
    sigma_s: f64,
    /// Σ(x − x̄)².
    sxx: f64,
    n: usize,
}

/// Sample index → UTC for one capture clock. See the module docs.
#[derive(Debug, Clone)]
pub struct ClockModel {
    nominal_rate: u32,
    cfg: ClockModelConfig,
    /// Observations: index, ns relative to `t_ref`.
    obs: VecDeque<(u64, i64)>,
    /// Outliers waiting to be confirmed as a step.
    suspects: Vec<(u64, i64, f64)>,
    t_ref: i64,
    fit: Option<Fit>,
    steps: u64,
    outliers: u64,
}

impl ClockModel {
    /// A model for a clock nominally running at `nominal_rate` samples per second.
    pub fn new(nominal_rate: u32, cfg: ClockModelConfig) -> ClockModel {
        ClockModel {
            nominal_rate: nominal_rate.max(1),
            cfg: ClockModelConfig {
                window: cfg.window.max(4),
                step_confirm: cfg.step_confirm.max(1),
                ..cfg
            },
            obs: VecDeque::new(),
            suspects: Vec::new(),
            t_ref: 0,
            fit: None,
            steps: 0,
            outliers: 0,
        }
    }

    /// Feed one observation: sample `index` was captured at system time `t`.
    pub fn observe(&mut self, index: u64, t: UtcNs) -> ClockUpdate {
        if self.obs.is_empty() {
            self.t_ref = t.0;
        }
        let y = t.0 - self.t_ref;
        let residual_s = match self.predict_ns(index as f64) {
            Some(p) => (y as f64 - p) / NS_PER_S as f64,
            None => 0.0,
        };
        if residual_s.abs() <= self.cfg.step_threshold_s {
            self.suspects.clear();
            self.push(index, y);
            return ClockUpdate::Accepted;
        }
        // Consistent with the earlier suspects? (A step moves every later
        // observation by the same amount; late callbacks scatter.)
        let consistent = self
            .suspects
            .first()
            .is_none_or(|s| (s.2 - residual_s).abs() <= self.cfg.step_threshold_s);
        if !consistent {
            self.suspects.clear();
        }
        self.suspects.push((index, y, residual_s));
        self.outliers += 1;
        if self.suspects.len() < self.cfg.step_confirm {
            return ClockUpdate::Outlier { residual_s };
        }
        let offset_s = self.suspects.iter().map(|s| s.2).sum::<f64>() / self.suspects.len() as f64;
        let suspects = std::mem::take(&mut self.suspects);
        self.obs.clear();
        self.fit = None;
        for (i, y, _) in suspects {
            self.push(i, y);
        }
        self.steps += 1;
        self.outliers -= self.cfg.step_confirm as u64;
        ClockUpdate::Step { offset_s }
    }

    fn push(&mut self, index: u64, y: i64) {
        self.obs.push_back((index, y));
        while self.obs.len() > self.cfg.window {
            self.obs.pop_front();
        }
        self.refit();
    }

    fn refit(&mut self) {
        let n = self.obs.len();
        let nominal = 1.0 / self.nominal_rate as f64;
        let x0 = self.obs[0].0 as f64;
        let xm = self.obs.iter().map(|o| o.0 as f64 - x0).sum::<f64>() / n as f64;
        let ym = self.obs.iter().map(|o| o.1 as f64).sum::<f64>() / n as f64;
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for &(i, y) in &self.obs {
            let dx = i as f64 - x0 - xm;
            sxx += dx * dx;
            sxy += dx * (y as f64 - ym);
        }
        // With fewer than two distinct indices (or a span too short to
        // resolve the slope) keep the nominal period.
        let period_s = if n >= 2 && sxx > 0.0 {
            sxy / sxx / NS_PER_S as f64
        } else {
            nominal
        };
        let period_s = if (period_s / nominal - 1.0).abs() > 0.01 {
            nominal
        } else {
            period_s
        };
        let mut ss = 0.0;
        for &(i, y) in &self.obs {
            let pred = ym + (i as f64 - x0 - xm) * period_s * NS_PER_S as f64;
            let r = (y as f64 - pred) / NS_PER_S as f64;
            ss += r * r;
        }
        let sigma_s = if n > 2 {
            (ss / (n - 2) as f64).sqrt()
        } else {
            0.0
        };
        self.fit = Some(Fit {
            x_mean: x0 + xm,
            y_mean_ns: ym,
            period_s,
            sigma_s,
            sxx,
            n,
        });
    }

    fn predict_ns(&self, index: f64) -> Option<f64> {
        let f = self.fit?;
        Some(f.y_mean_ns + (index - f.x_mean) * f.period_s * NS_PER_S as f64)
    }

    /// UTC of (fractional) sample `index`; `None` before the first observation.
    pub fn utc_of(&self, index: f64) -> Option<UtcNs> {
        self.predict_ns(index)
            .map(|ns| UtcNs(self.t_ref + ns.round() as i64))
    }

    /// Sound-card clock error against the system clock, parts per million
    /// (positive: the card runs slow, each sample lasts longer than nominal).
    pub fn drift_ppm(&self) -> Option<f64> {
        let f = self.fit?;
        (f.n >= 3).then_some((f.period_s * self.nominal_rate as f64 - 1.0) * 1e6)
    }

    /// 1-sigma uncertainty of [`ClockModel::utc_of`] at `index` from the fit
    /// alone (the system clock's own uncertainty is added by the caller).
    pub fn fit_uncertainty_s(&self, index: f64) -> f64 {
        match self.fit {
            Some(f) if f.n > 2 && f.sxx > 0.0 => {
                let dx = index - f.x_mean;
                f.sigma_s * (1.0 / f.n as f64 + dx * dx / f.sxx).sqrt()
            }
            Some(f) => f.sigma_s.max(1.0 / self.nominal_rate as f64),
            None => f64::INFINITY,
        }
    }

    /// Steps detected so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Outliers rejected so far (not counting those that turned out to be a step).
    pub fn outliers(&self) -> u64 {
        self.outliers
    }

    /// Observations in the current fit.
    pub fn observations(&self) -> usize {
        self.obs.len()
    }
}

/// The clock quality reported with detections and in status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockStatus {
    /// Source and 1-sigma uncertainty.
    pub info: ClockInfo,
    /// Time sync is good (status `online`); false turns status `degraded`.
    pub synced: bool,
    /// Drift of the sample clock, ppm, when known.
    pub drift_ppm: Option<f64>,
    /// Steps detected so far.
    pub steps: u64,
}

impl ClockStatus {
    /// The clock of a replay: timestamps from the recording.
    pub fn replay(uncertainty_s: f64) -> ClockStatus {
        ClockStatus {
            info: ClockInfo {
                source: ClockSource::Replay,
                uncertainty_s,
            },
            synced: true,
            drift_ppm: None,
            steps: 0,
        }
    }
}

/// What `chronyc -c tracking` says about the system clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChronyTracking {
    /// PPS/GPS reference (gps-pps) or a network server (ntp).
    pub source: ClockSource,
    /// Bound on the system clock's error, s: |offset| + root dispersion + root delay / 2
    /// (chrony's own "maximum error" reasoning).
    pub uncertainty_s: f64,
    /// Leap status is not "Not synchronised" and the stratum is below 16.
    pub synced: bool,
}

/// Parse one line of `chronyc -c tracking` (CSV: ref id, ref name, stratum,
/// ref time, system offset, last offset, rms offset, frequency, residual
/// frequency, skew, root delay, root dispersion, update interval, leap status).
pub fn parse_chrony_tracking(line: &str) -> Result<ChronyTracking, String> {
    let f: Vec<&str> = line.trim().split(',').collect();
    if f.len() < 14 {
        return Err(format!(
            "expected 14 comma-separated fields from `chronyc -c tracking`, got {}",
            f.len()
        ));
    }
    let num = |i: usize, name: &str| -> Result<f64, String> {
        f[i].trim()
            .parse::<f64>()
            .map_err(|_| format!("field {i} ({name}): expected a number, got {:?}", f[i]))
    };
    let stratum = num(2, "stratum")?;
    let offset = num(4, "system time offset")?;
    let root_delay = num(10, "root delay")?;
    let root_disp = num(11, "root dispersion")?;
    let leap = f[13].trim();
    let name = f[1].trim().to_ascii_uppercase();
    let refid = f[0].trim().to_ascii_uppercase();
    // Reference ids of local refclocks are their names in ASCII hex: PPS = 50505300, GPS = 47505300.
    let pps = ["PPS", "GPS", "PPS0", "GPS0"]
        .iter()
        .any(|n| name.starts_with(n))
        || refid.starts_with("505053")
        || refid.starts_with("475053");
    Ok(ChronyTracking {
        source: if pps {
            ClockSource::GpsPps
        } else {
            ClockSource::Ntp
        },
        uncertainty_s: offset.abs() + root_disp + root_delay / 2.0,
        synced: leap != "Not synchronised" && stratum < 16.0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const RATE: u32 = 48_000;

    /// Deterministic jitter in [0, max) ns (callback latency is one-sided).
    fn jitter(i: u64, max_ns: i64) -> i64 {
        ((i.wrapping_mul(2_654_435_761) >> 7) % max_ns as u64) as i64
    }

    #[test]
    fn drift_of_a_fast_card_is_measured_to_a_fraction_of_a_ppm() {
        // A card 37 ppm fast: each sample lasts (1 - 37e-6) / RATE seconds.
        let mut m = ClockModel::new(RATE, ClockModelConfig::default());
        let period_ns = 1e9 / RATE as f64 * (1.0 - 37e-6);
        let t0 = 1_700_000_000 * NS_PER_S;
        for k in 0..120u64 {
            let idx = k * 48_000; // one observation per second for two minutes
            let t = t0 + (idx as f64 * period_ns) as i64 + jitter(k, 200_000);
            assert_eq!(m.observe(idx, UtcNs(t)), ClockUpdate::Accepted);
        }
        let d = m.drift_ppm().unwrap();
        // 200 µs uniform jitter (σ ≈ 58 µs) over a 119 s baseline with 120 points:
        // σ_slope ≈ 58e-6 / (119 s · sqrt(120/12)) ≈ 0.15 ppm. Allow 4σ.
        assert!((d + 37.0).abs() < 0.6, "drift {d} ppm, expected -37");
        // Mapping in the middle of the window: within jitter mean (100 µs) + a few σ/sqrt(n).
        let idx = 60.5 * 48_000.0;
        let expected = t0 + (idx * period_ns) as i64;
        let err = (m.utc_of(idx).unwrap().0 - expected) as f64 / 1e9;
        assert!((err - 100e-6).abs() < 30e-6, "mapping error {err} s");
        let u = m.fit_uncertainty_s(idx);
        assert!(u > 1e-6 && u < 20e-6, "fit uncertainty {u}");
    }

    #[test]
    fn a_single_late_callback_is_an_outlier_not_a_step() {
        let mut m = ClockModel::new(RATE, ClockModelConfig::default());
        let t0 = 1_000 * NS_PER_S;
        for k in 0..20u64 {
            m.observe(k * 4800, UtcNs(t0 + k as i64 * 100_000_000));
        }
        let late = m.observe(20 * 4800, UtcNs(t0 + 20 * 100_000_000 + 30_000_000));
        assert!(
            matches!(late, ClockUpdate::Outlier { residual_s } if (residual_s - 0.03).abs() < 1e-6)
        );
        for k in 21..30u64 {
            assert_eq!(
                m.observe(k * 4800, UtcNs(t0 + k as i64 * 100_000_000)),
                ClockUpdate::Accepted
            );
        }
        assert_eq!(m.steps(), 0);
        assert_eq!(m.outliers(), 1);
        let err = m.utc_of(25.0 * 4800.0).unwrap().0 - (t0 + 2_500_000_000);
        assert!(
            err.abs() < 1_000,
            "late callback pulled the fit by {err} ns"
        );
    }

    #[test]
    fn a_system_clock_step_is_detected_and_the_fit_follows_it() {
        let mut m = ClockModel::new(RATE, ClockModelConfig::default());
        let t0 = 1_000 * NS_PER_S;
        for k in 0..50u64 {
            m.observe(k * 4800, UtcNs(t0 + k as i64 * 100_000_000));
        }
        // chrony steps the clock back by 0.25 s.
        let step = -250_000_000i64;
        let mut seen = Vec::new();
        for k in 50..60u64 {
            seen.push(m.observe(k * 4800, UtcNs(t0 + k as i64 * 100_000_000 + step)));
        }
        assert!(matches!(seen[0], ClockUpdate::Outlier { .. }));
        assert!(matches!(seen[1], ClockUpdate::Outlier { .. }));
        match seen[2] {
            ClockUpdate::Step { offset_s } => assert!((offset_s + 0.25).abs() < 1e-6, "{offset_s}"),
            other => panic!("expected a step at the third consistent outlier, got {other:?}"),
        }
        assert!(seen[3..].iter().all(|u| *u == ClockUpdate::Accepted));
        assert_eq!(m.steps(), 1);
        let idx = 58.0 * 4800.0;
        let err = m.utc_of(idx).unwrap().0 - (t0 + 5_800_000_000 + step);
        assert!(
            err.abs() < 1_000,
            "after the step the mapping is off by {err} ns"
        );
    }

    #[test]
    fn chrony_tracking_lines_parse() {
        let pps = "50505300,PPS,1,1700000000.123,0.000000120,0.000000050,0.000000300,-12.345,0.001,0.010,0.000000000,0.000001000,16.0,Normal";
        let t = parse_chrony_tracking(pps).unwrap();
        assert_eq!(t.source, ClockSource::GpsPps);
        assert!(t.synced);
        assert!((t.uncertainty_s - 1.12e-6).abs() < 1e-12);
        let ntp = "C0A80001,192.168.0.1,3,1700000000.1,-0.000200,0.0001,0.0003,1.0,0.01,0.1,0.020000,0.004000,64.0,Normal";
        let t = parse_chrony_tracking(ntp).unwrap();
        assert_eq!(t.source, ClockSource::Ntp);
        assert!((t.uncertainty_s - 0.0142).abs() < 1e-9);
        let lost = "00000000,,0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,1.0,0.0,Not synchronised";
        assert!(!parse_chrony_tracking(lost).unwrap().synced);
        assert!(parse_chrony_tracking("garbage").is_err());
    }
}
