//! Onsets that allow for atmospheric absorption.
//!
//! Absorption (ISO 9613-1) is causal and minimum-phase: over a long path it
//! turns a shock front into a rounded rise that leaves the noise well after
//! the wavefront arrived. A pick on that rise (its 50 % point, or where its
//! steepest tangent meets zero) is late by a range-dependent amount: on
//! blasts rendered through the absorption filter at 48 kHz, 0.06 ms at
//! 200 m, 0.30 ms at 1 km, 0.44 ms at 2 km, 0.65 ms at 4 km and 0.80 ms at
//! 6 km, while the pick's stated 1-sigma was 0.02–0.09 ms.
//!
//! The front's arrival is recovered by fitting the rising edge with the
//! step response of the absorption over a range of path lengths (a bank of
//! templates, each passed through the same picking high-pass as the
//! signal): the template that matches the edge's shape fixes where, before
//! the visible rise, the wavefront arrived. The range is a shape parameter
//! here, not a distance the node claims; the air (temperature, humidity)
//! is the detector's configured one (`air_temperature_c`,
//! `air_humidity_pct`: a weather sensor's, or the manifest's in replay).
//! Humidity matters: a template of 50 % humidity fitted to a front that
//! crossed 6 km of air at 20 % or 80 % is off by up to 0.3 ms (of a
//! 1.4 ms correction), which the stated sigma allows for
//! ([`MODEL_FRACTION`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use blastnet_contract::absorption::{absorption_fir, Air};

use crate::filter::HighPass;

/// Path lengths of the template bank: log-spaced, m.
const RANGE_MIN_M: f64 = 5.0;
const RANGE_MAX_M: f64 = 20_000.0;
const N_TEMPLATES: usize = 64;
/// Length of each template after the arrival, s (the first peak of a
/// high-passed front is within a few ms even at 20 km).
const TEMPLATE_S: f64 = 0.03;
/// Shifts tried around each template's 50 %-aligned position: ±this many
/// samples in quarter samples.
const SHIFT_SPAN: f64 = 3.0;
const SHIFT_STEP: f64 = 0.25;
/// A template whose 50 % point lies less than this many samples after its
/// arrival is a sharp front: sampling, not absorption, sets its timing, and
/// the caller's 50 % crossing stands.
const MIN_DISPERSION_SAMPLES: f64 = 2.5;
/// Shifts per template (`2 SHIFT_SPAN / SHIFT_STEP + 1`).
const N_SHIFTS: usize = 25;
/// The fit must explain this share of the edge's energy to be used.
const MIN_EXPLAINED: f64 = 0.9;
/// 1-sigma model error of a correction, as a share of it: the spread from
/// humidity off the configured value by ±30 points (0.3 ms of 1.4 ms at 6 km).
pub(crate) const MODEL_FRACTION: f64 = 0.2;

/// One template: the high-passed step response of absorption over `range_m`.
struct Template {
    range_m: f64,
    /// Samples from the arrival on (zero before it).
    y: Vec<f64>,
    /// Its 50 % crossing of the first peak, samples after the arrival.
    t50: f64,
}

/// The template bank of one (rate, high-pass, air).
pub(crate) struct Bank {
    templates: Vec<Template>,
    /// Largest `t50` of the bank, samples.
    t50_max: f64,
    /// Sample rate, Hz.
    fs: f64,
}

/// What a fit found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fit {
    /// The wavefront's arrival, in the picking buffer's samples.
    pub onset: f64,
    /// The template's path length, m (a shape parameter, see the module docs).
    pub range_m: f64,
}

type Key = (u64, u64, u64, u64);

impl Bank {
    /// The bank for `fs`, the picking high-pass `hp_hz` and the air, shared
    /// by every detector of the process with the same settings (built once:
    /// 48 minimum-phase filters, ~30 ms at 48 kHz).
    pub(crate) fn shared(fs: f64, hp_hz: f64, temperature_c: f64, humidity_pct: f64) -> Arc<Bank> {
        static BANKS: OnceLock<Mutex<HashMap<Key, Arc<Bank>>>> = OnceLock::new();
        let key = (
            fs.to_bits(),
            hp_hz.to_bits(),
            temperature_c.to_bits(),
            humidity_pct.to_bits(),
        );
        let banks = BANKS.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = banks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key)
            .or_insert_with(|| Arc::new(Bank::new(fs, hp_hz, temperature_c, humidity_pct)))
            .clone()
    }

    fn new(fs: f64, hp_hz: f64, temperature_c: f64, humidity_pct: f64) -> Bank {
        let air = Air {
            temperature_c,
            relative_humidity_pct: humidity_pct,
            pressure_pa: 101_325.0,
        };
        let hp = HighPass::butterworth(hp_hz, fs);
        let len = (TEMPLATE_S * fs).round() as usize;
        let ratio = (RANGE_MAX_M / RANGE_MIN_M).powf(1.0 / (N_TEMPLATES - 1) as f64);
        let mut templates = Vec::with_capacity(N_TEMPLATES);
        for j in 0..N_TEMPLATES {
            let range_m = RANGE_MIN_M * ratio.powi(j as i32);
            let h = absorption_fir(air, range_m, fs.round() as u32);
            // Step response, then the picking high-pass from rest.
            let mut acc = 0.0;
            let mut y: Vec<f32> = (0..len)
                .map(|i| {
                    acc += h.get(i).copied().unwrap_or(0.0);
                    acc as f32
                })
                .collect();
            hp.run(&mut y);
            let y: Vec<f64> = y.into_iter().map(f64::from).collect();
            // Sample i of a sum of taps holds the step response half a
            // sample after i (a midpoint rule): the arrival is at i = -0.5.
            let Some(t50) = first_peak_t50(&y).map(|t| t + 0.5) else {
                continue;
            };
            templates.push(Template { range_m, y, t50 });
        }
        let t50_max = templates.iter().fold(0.0f64, |m, t| m.max(t.t50));
        Bank {
            templates,
            t50_max,
            fs,
        }
    }

    /// Fit the rising edge of `z` (first excursion positive) that peaks at
    /// `p`, whose 50 % crossing is `t50` (samples of `z`). `None` when no
    /// template explains the edge well, or the best is a sharp front
    /// (no dispersion to speak of: the caller's pick stands).
    pub(crate) fn fit(&self, z: &[f32], p: usize, t50: f64) -> Option<Fit> {
        // From 0.5 ms before the earliest arrival any template allows.
        let margin = 0.0005 * self.fs;
        let lo = (t50 - self.t50_max - SHIFT_SPAN - margin).floor().max(0.0) as usize;
        let hi = p.min(z.len().checked_sub(1)?);
        if hi <= lo + 2 {
            return None;
        }
        let seg = &z[lo..=hi];
        let yy: f64 = seg.iter().map(|&v| f64::from(v).powi(2)).sum();
        if yy <= 0.0 {
            return None;
        }
        let steps = N_SHIFTS - 1;
        // (residual, template index, shift index), and each residual per shift
        // of the best template for the parabolic refinement (no allocation:
        // the detector allocates nothing in steady state).
        let mut best: Option<(f64, usize, usize)> = None;
        let mut resid = [0.0; N_SHIFTS];
        let mut best_resid = [0.0; N_SHIFTS];
        for (j, t) in self.templates.iter().enumerate() {
            let guess = t50 - t.t50;
            for (s, r_out) in resid.iter_mut().enumerate() {
                let t0 = guess - SHIFT_SPAN + s as f64 * SHIFT_STEP;
                let (mut xy, mut xx) = (0.0, 0.0);
                for (i, &v) in seg.iter().enumerate() {
                    let x = t.at((lo + i) as f64 - t0);
                    xy += x * f64::from(v);
                    xx += x * x;
                }
                let r = if xx > 0.0 && xy > 0.0 {
                    yy - xy * xy / xx
                } else {
                    yy
                };
                *r_out = r;
                if best.is_none_or(|(b, _, _)| r < b) {
                    best = Some((r, j, s));
                }
            }
            if best.is_some_and(|(_, bj, _)| bj == j) {
                best_resid.copy_from_slice(&resid);
            }
        }
        let (r, j, s) = best?;
        if self.templates[j].t50 < MIN_DISPERSION_SAMPLES || r > (1.0 - MIN_EXPLAINED) * yy {
            return None;
        }
        // Parabola through the neighbouring shifts.
        let mut frac = 0.0;
        if s > 0 && s < steps {
            let (a, b, c) = (best_resid[s - 1], best_resid[s], best_resid[s + 1]);
            let den = a - 2.0 * b + c;
            if den > 0.0 {
                frac = (0.5 * (a - c) / den).clamp(-0.5, 0.5);
            }
        }
        let t = &self.templates[j];
        Some(Fit {
            onset: t50 - t.t50 - SHIFT_SPAN + (s as f64 + frac) * SHIFT_STEP,
            range_m: t.range_m,
        })
    }
}

impl Template {
    /// The template at `tau` samples after the arrival: sample i of `y` is
    /// at tau = i + 0.5, linearly interpolated, from zero at tau = -0.5.
    fn at(&self, tau: f64) -> f64 {
        let x = tau - 0.5;
        if x <= -1.0 {
            return 0.0;
        }
        if x < 0.0 {
            return self.y.first().map_or(0.0, |a| a * (x + 1.0));
        }
        let i = x.floor() as usize;
        let f = x - i as f64;
        match (self.y.get(i), self.y.get(i + 1)) {
            (Some(a), Some(b)) => a + (b - a) * f,
            (Some(a), None) => *a,
            _ => 0.0,
        }
    }
}

/// The 50 % crossing, walking back from the first peak, in samples.
fn first_peak_t50(y: &[f64]) -> Option<f64> {
    let (p, pv) = y.iter().enumerate().fold(
        (0, 0.0f64),
        |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
    );
    if pv <= 0.0 {
        return None;
    }
    let lvl = 0.5 * pv;
    let mut j = p;
    while j > 0 {
        j -= 1;
        if y[j] < lvl {
            return Some(j as f64 + (lvl - y[j]) / (y[j + 1] - y[j]).max(1e-30));
        }
    }
    Some(0.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_template_fits_itself_at_its_own_arrival() {
        let fs = 48_000.0;
        let bank = Bank::shared(fs, 150.0, 15.0, 50.0);
        let t = &bank.templates[40];
        let at = 200.37;
        let z: Vec<f32> = (0..2000).map(|i| t.at(i as f64 - at) as f32).collect();
        let p = (0..z.len()).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap();
        let fit = bank.fit(&z, p, at + t.t50).unwrap();
        assert!((fit.onset - at).abs() < 0.05, "{fit:?}");
        assert_eq!(fit.range_m, t.range_m);
    }
}
