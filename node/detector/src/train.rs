//! Fitting the classifier (pure: the caller gathers labelled feature
//! vectors). Multinomial logistic regression with L2, class-balanced,
//! full-batch gradient descent from zero (deterministic), then one
//! temperature fitted on a calibration split by minimising its log-loss.

// Several fixed-size arrays are walked in step: indices read clearer here.
#![allow(clippy::needless_range_loop)]

use crate::classify::{softmax, Classifier, Model, N_CLASSES};
use crate::features::{FEATURE_NAMES, N_FEATURES};

/// One labelled example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Example {
    /// Feature vector ([`crate::Features::vector`]).
    pub x: [f64; N_FEATURES],
    /// Class index (explosion, gunshot, launch, other_impulsive).
    pub y: usize,
}

fn logits(
    w: &[[f64; N_FEATURES]; N_CLASSES],
    b: &[f64; N_CLASSES],
    z: &[f64; N_FEATURES],
) -> [f64; N_CLASSES] {
    let mut l = *b;
    for k in 0..N_CLASSES {
        for i in 0..N_FEATURES {
            l[k] += w[k][i] * z[i];
        }
    }
    l
}

/// Fit on `train`, calibrate the temperature on `calib`. `provenance` is
/// stored in the model.
pub fn fit(train: &[Example], calib: &[Example], l2: f64, iters: usize, provenance: &str) -> Model {
    let n = train.len().max(1) as f64;
    let mut mean = [0.0; N_FEATURES];
    let mut std = [0.0; N_FEATURES];
    for e in train {
        for i in 0..N_FEATURES {
            mean[i] += e.x[i] / n;
        }
    }
    for e in train {
        for i in 0..N_FEATURES {
            std[i] += (e.x[i] - mean[i]).powi(2) / n;
        }
    }
    for s in &mut std {
        *s = s.sqrt().max(1e-6);
    }
    let stdz = |x: &[f64; N_FEATURES]| {
        let mut z = [0.0; N_FEATURES];
        for i in 0..N_FEATURES {
            z[i] = (x[i] - mean[i]) / std[i];
        }
        z
    };
    let zs: Vec<([f64; N_FEATURES], usize)> = train.iter().map(|e| (stdz(&e.x), e.y)).collect();
    // Class-balanced weights: each class carries the same total weight.
    let mut counts = [0usize; N_CLASSES];
    for e in train {
        counts[e.y.min(N_CLASSES - 1)] += 1;
    }
    let cw: Vec<f64> = counts
        .iter()
        .map(|&c| {
            if c > 0 {
                n / (N_CLASSES as f64 * c as f64)
            } else {
                0.0
            }
        })
        .collect();
    let mut w = [[0.0; N_FEATURES]; N_CLASSES];
    let mut b = [0.0; N_CLASSES];
    let lr = 1.0;
    for _ in 0..iters {
        let mut gw = [[0.0; N_FEATURES]; N_CLASSES];
        let mut gb = [0.0; N_CLASSES];
        for (z, y) in &zs {
            let p = softmax(&logits(&w, &b, z));
            let c = cw[*y];
            for k in 0..N_CLASSES {
                let d = c * (p[k] - if k == *y { 1.0 } else { 0.0 }) / n;
                gb[k] += d;
                for i in 0..N_FEATURES {
                    gw[k][i] += d * z[i];
                }
            }
        }
        for k in 0..N_CLASSES {
            b[k] -= lr * gb[k];
            for i in 0..N_FEATURES {
                w[k][i] -= lr * (gw[k][i] + l2 * w[k][i]);
            }
        }
    }
    // Temperature: golden-section search of the calibration log-loss over
    // T in [0.3, 5] (the calibration split is weighted like the training).
    let cz: Vec<([f64; N_FEATURES], usize)> = calib.iter().map(|e| (stdz(&e.x), e.y)).collect();
    let nll = |t: f64| -> f64 {
        cz.iter()
            .map(|(z, y)| {
                let mut l = logits(&w, &b, z);
                for v in &mut l {
                    *v /= t;
                }
                -softmax(&l)[*y].max(1e-12).ln() * cw[*y]
            })
            .sum()
    };
    let (mut lo, mut hi) = (0.3f64, 5.0f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..60 {
        let a = hi - g * (hi - lo);
        let c = lo + g * (hi - lo);
        if nll(a) < nll(c) {
            hi = c;
        } else {
            lo = a;
        }
    }
    let temperature = if cz.is_empty() { 1.0 } else { 0.5 * (lo + hi) };
    Model {
        format: "blastnet-detector-logreg/1".into(),
        provenance: provenance.into(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        classes: ["explosion", "gunshot", "launch", "other_impulsive"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        mean: mean.to_vec(),
        std: std.to_vec(),
        weights: w.iter().map(|r| r.to_vec()).collect(),
        bias: b.to_vec(),
        temperature,
        gated_other_prob: 0.95,
    }
}

/// One row of a reliability table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReliabilityBin {
    /// Confidence range [lo, hi).
    pub lo: f64,
    /// Upper edge.
    pub hi: f64,
    /// Decisions in the bin.
    pub count: usize,
    /// Mean stated confidence.
    pub mean_confidence: f64,
    /// Fraction that were right.
    pub accuracy: f64,
}

/// Reliability of `(confidence, correct)` pairs in bins of 0.1 from 0.2.
pub fn reliability(pairs: &[(f64, bool)]) -> Vec<ReliabilityBin> {
    let edges = [0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.000_001];
    edges
        .windows(2)
        .map(|e| {
            let inb: Vec<&(f64, bool)> =
                pairs.iter().filter(|p| p.0 >= e[0] && p.0 < e[1]).collect();
            let c = inb.len();
            ReliabilityBin {
                lo: e[0],
                hi: e[1].min(1.0),
                count: c,
                mean_confidence: if c > 0 {
                    inb.iter().map(|p| p.0).sum::<f64>() / c as f64
                } else {
                    0.0
                },
                accuracy: if c > 0 {
                    inb.iter().filter(|p| p.1).count() as f64 / c as f64
                } else {
                    0.0
                },
            }
        })
        .collect()
}

/// Expected calibration error over the bins.
pub fn ece(bins: &[ReliabilityBin]) -> f64 {
    let n: usize = bins.iter().map(|b| b.count).sum();
    if n == 0 {
        return 0.0;
    }
    bins.iter()
        .map(|b| b.count as f64 * (b.mean_confidence - b.accuracy).abs())
        .sum::<f64>()
        / n as f64
}

/// Accuracy of a classifier on examples, with the (confidence, correct) pairs.
pub fn score(c: &Classifier, ex: &[Example]) -> (f64, Vec<(f64, bool)>) {
    let mut pairs = Vec::with_capacity(ex.len());
    for e in ex {
        let p = c.probs(&e.x);
        let (mut best, mut conf) = (0, p[0]);
        for (k, &q) in p.iter().enumerate() {
            if q > conf {
                best = k;
                conf = q;
            }
        }
        pairs.push((conf, best == e.y));
    }
    let acc = pairs.iter().filter(|p| p.1).count() as f64 / pairs.len().max(1) as f64;
    (acc, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Rng;

    #[test]
    fn the_generator_draws_unit_normals() {
        let mut rng = Rng::new(5);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let m = xs.iter().sum::<f64>() / n as f64;
        let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
        let within1 = xs.iter().filter(|x| x.abs() < 1.0).count() as f64 / n as f64;
        // Standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the variance.
        assert!(
            m.abs() < 0.01 && (v - 1.0).abs() < 0.015,
            "mean {m} var {v}"
        );
        assert!((within1 - 0.6827).abs() < 0.005, "P(|x|<1) = {within1}");
    }

    #[test]
    fn separable_classes_are_learnt_and_calibrated() {
        // Four Gaussian blobs along feature 0 with unit spread: overlapping
        // enough that confidence must be < 1, so calibration is testable.
        let mut rng = Rng::new(1);
        let mut make = |n: usize| -> Vec<Example> {
            (0..n)
                .map(|i| {
                    let y = i % N_CLASSES;
                    let mut x = [0.0; N_FEATURES];
                    for v in x.iter_mut() {
                        *v = rng.normal();
                    }
                    x[0] += 2.0 * y as f64;
                    Example { x, y }
                })
                .collect()
        };
        let train = make(2000);
        let calib = make(1000);
        let test = make(4000);
        let m = fit(&train, &calib, 1e-4, 1000, "test");
        let c = Classifier::from_model(&m).expect("valid model");
        let (acc, pairs) = score(&c, &test);
        let nearest = test
            .iter()
            .filter(|e| ((e.x[0] / 2.0).round().clamp(0.0, 3.0) as usize) == e.y)
            .count() as f64
            / test.len() as f64;
        // The Bayes rule here is the nearest mean (equal spreads and priors):
        // the fitted model must do as well on the same sample.
        assert!(acc > nearest - 0.015, "accuracy {acc} vs Bayes {nearest}");
        let bins = reliability(&pairs);
        // Binomial noise alone is ~sqrt(0.2/700) = 0.017 per bin of ~700.
        assert!(ece(&bins) < 0.05, "ECE {} {bins:?}", ece(&bins));
    }
}
