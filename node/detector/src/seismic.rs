//! Seismic path: ObsPy's `recursive_sta_lta` and `trigger_onset`, streaming,
//! then an AIC pick around each trigger.

/// ObsPy's recursive STA/LTA (`obspy.signal.trigger.recursive_sta_lta`, C
/// implementation `recstalta`), one sample at a time.
///
/// ObsPy: `sta = lta = 0 (lta = 1e-99)`, for `i >= 1`: `sta = csta·x² + (1-csta)·sta`,
/// `lta = clta·x² + (1-clta)·lta`, `cf[i] = sta/lta`; `cf[0] = 0` and
/// `cf[i] = 0` for `i < nlta`.
#[derive(Debug, Clone)]
pub struct RecursiveStaLta {
    csta: f64,
    clta: f64,
    sta: f64,
    lta: f64,
    nlta: u64,
    index: u64,
}

impl RecursiveStaLta {
    /// `nsta`, `nlta` in samples (>= 1).
    pub fn new(nsta: u64, nlta: u64) -> Self {
        RecursiveStaLta {
            csta: 1.0 / nsta.max(1) as f64,
            clta: 1.0 / nlta.max(1) as f64,
            sta: 0.0,
            lta: 1e-99,
            nlta,
            index: 0,
        }
    }

    /// Feed one sample, get the characteristic function at that index.
    #[inline]
    pub fn next(&mut self, x: f64) -> f64 {
        let i = self.index;
        self.index += 1;
        if i == 0 {
            return 0.0;
        }
        let sq = x * x;
        self.sta = self.csta * sq + (1.0 - self.csta) * self.sta;
        self.lta = self.clta * sq + (1.0 - self.clta) * self.lta;
        if i < self.nlta {
            0.0
        } else {
            self.sta / self.lta
        }
    }

    /// Current LTA (mean square), physical units squared.
    pub fn lta(&self) -> f64 {
        self.lta
    }
}

/// ObsPy's `trigger_onset(cf, thres1, thres2)` (no `max_len`), streaming.
/// `on` is the first index with `cf > thres1` while off; `off` is the last
/// index with `cf > thres2` before `cf` drops to `<= thres2`.
#[derive(Debug, Clone)]
pub struct TriggerOnset {
    thres1: f64,
    thres2: f64,
    on: Option<u64>,
}

/// What one sample did to the trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerEvent {
    /// Nothing changed.
    None,
    /// Triggered on at this index.
    On(u64),
    /// A trigger finished: `[on, off]` inclusive, as ObsPy returns it.
    Off(u64, u64),
}

impl TriggerOnset {
    /// Thresholds as ObsPy; requires `thres2 <= thres1` (checked by the config).
    pub fn new(thres1: f64, thres2: f64) -> Self {
        TriggerOnset {
            thres1,
            thres2,
            on: None,
        }
    }

    /// Feed `cf[index]`.
    #[inline]
    pub fn next(&mut self, index: u64, cf: f64) -> TriggerEvent {
        match self.on {
            None => {
                if cf > self.thres1 {
                    self.on = Some(index);
                    TriggerEvent::On(index)
                } else {
                    TriggerEvent::None
                }
            }
            Some(on) => {
                if cf > self.thres2 {
                    TriggerEvent::None
                } else {
                    self.on = None;
                    TriggerEvent::Off(on, index.saturating_sub(1))
                }
            }
        }
    }

    /// The open trigger's on index, if any.
    pub fn open(&self) -> Option<u64> {
        self.on
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    #[test]
    fn recursive_sta_lta_matches_the_recurrence_to_1e9() {
        let mut x = noise(20_000, 7);
        for (i, v) in x.iter_mut().enumerate().skip(12_000).take(800) {
            *v *= 20.0 * (-((i - 12_000) as f64) / 300.0).exp() + 1.0;
        }
        let (nsta, nlta) = (50usize, 1000usize);
        // The recurrence written directly over the whole array, as ObsPy's C code.
        let mut cf = vec![0.0f64; x.len()];
        let (csta, clta) = (1.0 / nsta as f64, 1.0 / nlta as f64);
        let (mut sta, mut lta) = (0.0f64, 1e-99f64);
        for i in 1..x.len() {
            let sq = x[i] * x[i];
            sta = csta * sq + (1.0 - csta) * sta;
            lta = clta * sq + (1.0 - clta) * lta;
            cf[i] = sta / lta;
        }
        for v in cf.iter_mut().take(nlta) {
            *v = 0.0;
        }
        let mut r = RecursiveStaLta::new(nsta as u64, nlta as u64);
        let mut worst = 0.0f64;
        for (i, &v) in x.iter().enumerate() {
            let got = r.next(v);
            let want = cf[i];
            let rel = if want == 0.0 {
                got.abs()
            } else {
                ((got - want) / want).abs()
            };
            worst = worst.max(rel);
        }
        assert!(worst <= 1e-9, "worst relative error {worst}");
    }

    /// A literal port of ObsPy 1.4 `trigger_onset` (deques and all), the reference.
    fn obspy_trigger_onset(cf: &[f64], thres1: f64, thres2: f64) -> Vec<(i64, i64)> {
        use std::collections::VecDeque;
        let ind1: Vec<i64> = (0..cf.len())
            .filter(|&i| cf[i] > thres1)
            .map(|i| i as i64)
            .collect();
        if ind1.is_empty() {
            return vec![];
        }
        let ind2: Vec<i64> = (0..cf.len())
            .filter(|&i| cf[i] > thres2)
            .map(|i| i as i64)
            .collect();
        let mut on: VecDeque<f64> = VecDeque::from([ind1[0] as f64]);
        let mut of: VecDeque<f64> = VecDeque::from([-1.0]);
        for w in 0..ind2.len() {
            let last = w + 1 == ind2.len();
            if last || ind2[w + 1] - ind2[w] > 1 {
                of.push_back(ind2[w] as f64);
            }
        }
        for w in 0..ind1.len().saturating_sub(1) {
            if ind1[w + 1] - ind1[w] > 1 {
                on.push_back(ind1[w + 1] as f64);
            }
        }
        of.push_back(*ind2.last().unwrap() as f64);
        let mut pick = vec![];
        while on.back().unwrap() > of.front().unwrap() {
            while on.front().unwrap() <= of.front().unwrap() {
                on.pop_front();
            }
            while of.front().unwrap() < on.front().unwrap() {
                of.pop_front();
            }
            pick.push((*on.front().unwrap() as i64, *of.front().unwrap() as i64));
        }
        pick
    }

    #[test]
    fn streaming_trigger_matches_obspy_trigger_onset() {
        for seed in 0..20u64 {
            // A random walk of cf crossing both thresholds many times.
            let steps = noise(5000, seed + 100);
            let mut cf = Vec::with_capacity(steps.len());
            let mut v = 1.0f64;
            for s in steps {
                v = (v + 2.0 * s).clamp(0.0, 8.0);
                cf.push(v);
            }
            let (t1, t2) = (3.5, 1.5);
            let want = obspy_trigger_onset(&cf, t1, t2);
            let mut trig = TriggerOnset::new(t1, t2);
            let mut got = vec![];
            for (i, &c) in cf.iter().enumerate() {
                if let TriggerEvent::Off(a, b) = trig.next(i as u64, c) {
                    got.push((a as i64, b as i64));
                }
            }
            // ObsPy closes a trigger still on at the end with the last index above thres2.
            if let Some(on) = trig.open() {
                let last = (0..cf.len()).rev().find(|&i| cf[i] > t2).unwrap();
                got.push((on as i64, last as i64));
            }
            assert_eq!(got, want, "seed {seed}");
        }
    }
}
