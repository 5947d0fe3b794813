//! Fitting the classifier (pure: the caller gathers labelled feature
//! vectors): gradient-boosted regression trees for the multiclass softmax
//! loss, class-balanced, with second-order (Newton) leaf values and L2 on
//! them (Chen & Guestrin 2016), splits searched over per-feature quantile
//! bins (as histogram boosters do); then one temperature fitted on a
//! calibration split by minimising its log-loss. Deterministic: no sampling,
//! ties broken by the first feature and bin.

// Several fixed-size arrays are walked in step: indices read clearer here.
#![allow(clippy::needless_range_loop)]

use blastnet_contract::SourceKind;
use blastnet_detector::classify::{
    softmax, Classifier, Model, Tree, MODEL_FORMAT, N_BLAST, N_CLASSES,
};
use blastnet_detector::features::{FEATURE_NAMES, N_FEATURES};
use ndarray::{Array2, ArrayView2};

/// One labelled example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Example {
    /// Feature vector ([`blastnet_detector::Features::vector`]).
    pub x: [f64; N_FEATURES],
    /// Class index (explosion, gunshot, launch, other_impulsive).
    pub y: usize,
}

/// Settings of [`fit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Boosting {
    /// Boosting rounds (one tree per class each).
    pub rounds: usize,
    /// Depth of each tree.
    pub depth: usize,
    /// Shrinkage of each tree's leaf values.
    pub learning_rate: f64,
    /// L2 penalty on leaf values (in units of hessian).
    pub lambda: f64,
    /// A split needs at least this hessian on each side.
    pub min_child_hessian: f64,
    /// Quantile bins per feature for the split search.
    pub bins: usize,
}

impl Default for Boosting {
    fn default() -> Self {
        Boosting {
            rounds: 300,
            depth: 4,
            learning_rate: 0.1,
            lambda: 1.0,
            min_child_hessian: 1.0,
            bins: 64,
        }
    }
}

/// Split candidates of one feature: bin edges (ascending); a value goes to
/// bin `j`, the number of edges below it.
fn edges(values: &mut [f64], bins: usize) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let mut uniq: Vec<f64> = Vec::new();
    for &v in values.iter() {
        if uniq.last() != Some(&v) {
            uniq.push(v);
        }
    }
    if uniq.len() <= 1 {
        return Vec::new();
    }
    let mut e: Vec<f64> = if uniq.len() <= bins {
        uniq.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect()
    } else {
        (1..bins)
            .map(|j| {
                let q = values[j * values.len() / bins];
                // Midway to the next distinct value, so the edge separates.
                let next = uniq.partition_point(|&u| u <= q);
                if next < uniq.len() {
                    0.5 * (q + uniq[next])
                } else {
                    q
                }
            })
            .collect()
    };
    e.dedup();
    e
}

/// Grow one tree on samples `idx` with gradients `g` and hessians `h`.
struct Grower<'a> {
    /// Bin of each feature (rows) of each sample (columns).
    bins: ArrayView2<'a, u8>,
    edges: &'a [Vec<f64>],
    g: &'a [f64],
    h: &'a [f64],
    b: Boosting,
    tree: Tree,
}

impl Grower<'_> {
    fn node(&mut self) -> usize {
        let t = &mut self.tree;
        t.feature.push(0);
        t.threshold.push(0.0);
        t.left.push(0);
        t.right.push(0);
        t.value.push(0.0);
        t.feature.len() - 1
    }

    fn grow(&mut self, idx: &[usize], depth: usize) -> usize {
        let me = self.node();
        let (gs, hs): (f64, f64) = idx
            .iter()
            .fold((0.0, 0.0), |a, &i| (a.0 + self.g[i], a.1 + self.h[i]));
        let lam = self.b.lambda;
        let parent = gs * gs / (hs + lam);
        let mut best: Option<(f64, usize, usize)> = None; // gain, feature, edge
        if depth < self.b.depth && hs >= 2.0 * self.b.min_child_hessian {
            for f in 0..N_FEATURES {
                let ne = self.edges[f].len();
                if ne == 0 {
                    continue;
                }
                let mut hg = vec![0.0; ne + 1];
                let mut hh = vec![0.0; ne + 1];
                for &i in idx {
                    let bin = self.bins[[f, i]] as usize;
                    hg[bin] += self.g[i];
                    hh[bin] += self.h[i];
                }
                let (mut gl, mut hl) = (0.0, 0.0);
                for j in 0..ne {
                    gl += hg[j];
                    hl += hh[j];
                    let (gr, hr) = (gs - gl, hs - hl);
                    if hl < self.b.min_child_hessian || hr < self.b.min_child_hessian {
                        continue;
                    }
                    let gain = gl * gl / (hl + lam) + gr * gr / (hr + lam) - parent;
                    if gain > 1e-9 && best.is_none_or(|b| gain > b.0) {
                        best = Some((gain, f, j));
                    }
                }
            }
        }
        match best {
            None => {
                self.tree.value[me] = -self.b.learning_rate * gs / (hs + lam);
            }
            Some((_, f, j)) => {
                let (l, r): (Vec<usize>, Vec<usize>) = idx
                    .iter()
                    .partition(|&&i| (self.bins[[f, i]] as usize) <= j);
                self.tree.feature[me] = f as u16;
                self.tree.threshold[me] = self.edges[f][j];
                let li = self.grow(&l, depth + 1);
                let ri = self.grow(&r, depth + 1);
                self.tree.left[me] = li as u32;
                self.tree.right[me] = ri as u32;
            }
        }
        me
    }
}

/// Fit on `train`, calibrate the temperature on `calib`. `provenance` is
/// stored in the model; the blast threshold is left at 0.5 for the caller
/// to set (it depends on the field, not on these examples).
pub fn fit(train: &[Example], calib: &[Example], b: Boosting, provenance: &str) -> Model {
    let n = train.len();
    // Class-balanced weights: each class carries the same total weight.
    let mut counts = [0usize; N_CLASSES];
    for e in train {
        counts[e.y.min(N_CLASSES - 1)] += 1;
    }
    let cw: Vec<f64> = counts
        .iter()
        .map(|&c| {
            if c > 0 {
                n as f64 / (N_CLASSES as f64 * c as f64)
            } else {
                0.0
            }
        })
        .collect();
    // The feature matrix (samples × features), each feature's split
    // candidates from its column, and the samples' bins (features × samples,
    // so that a split search walks one feature's row).
    let x = Array2::from_shape_fn((n, N_FEATURES), |(i, f)| train[i].x[f]);
    let edges: Vec<Vec<f64>> = x
        .columns()
        .into_iter()
        .map(|col| edges(&mut col.to_vec(), b.bins.clamp(2, 255)))
        .collect();
    let bins = Array2::from_shape_fn((N_FEATURES, n), |(f, i)| {
        edges[f].partition_point(|&v| v < x[[i, f]]) as u8
    });
    let all: Vec<usize> = (0..n).collect();
    let mut logit = vec![[0.0; N_CLASSES]; n];
    let mut trees = Vec::with_capacity(b.rounds * N_CLASSES);
    let (mut g, mut h) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..b.rounds {
        let p: Vec<[f64; N_CLASSES]> = logit.iter().map(softmax).collect();
        for k in 0..N_CLASSES {
            for i in 0..n {
                let w = cw[train[i].y];
                let y = if train[i].y == k { 1.0 } else { 0.0 };
                g[i] = w * (p[i][k] - y);
                h[i] = (w * p[i][k] * (1.0 - p[i][k])).max(1e-12);
            }
            let mut grower = Grower {
                bins: bins.view(),
                edges: &edges,
                g: &g,
                h: &h,
                b,
                tree: Tree {
                    feature: Vec::new(),
                    threshold: Vec::new(),
                    left: Vec::new(),
                    right: Vec::new(),
                    value: Vec::new(),
                },
            };
            grower.grow(&all, 0);
            let tree = grower.tree;
            let one = Classifier::from_model(&model_of(vec![tree.clone()], 1.0, provenance))
                .expect("a grown tree is valid");
            for i in 0..n {
                logit[i][k] += one.logits(&train[i].x)[0];
            }
            trees.push(tree);
        }
    }
    // Temperature: golden-section search of the calibration log-loss over
    // T in [0.3, 5] (the calibration split is weighted like the training).
    let c = Classifier::from_model(&model_of(trees.clone(), 1.0, provenance))
        .expect("grown trees are valid");
    let cl: Vec<([f64; N_CLASSES], usize)> = calib.iter().map(|e| (c.logits(&e.x), e.y)).collect();
    let nll = |t: f64| -> f64 {
        cl.iter()
            .map(|(l, y)| {
                let mut l = *l;
                for v in &mut l {
                    *v /= t;
                }
                -softmax(&l)[*y].max(1e-12).ln() * cw[*y]
            })
            .sum()
    };
    let (mut lo, mut hi) = (0.3f64, 5.0f64);
    let gr = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..60 {
        let a = hi - gr * (hi - lo);
        let c = lo + gr * (hi - lo);
        if nll(a) < nll(c) {
            hi = c;
        } else {
            lo = a;
        }
    }
    let temperature = if cl.is_empty() { 1.0 } else { 0.5 * (lo + hi) };
    model_of(trees, temperature, provenance)
}

fn model_of(trees: Vec<Tree>, temperature: f64, provenance: &str) -> Model {
    Model {
        format: MODEL_FORMAT.into(),
        provenance: provenance.into(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        classes: SourceKind::CLASSIFIED
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
        trees,
        temperature,
        blast_threshold: 0.5,
        class_thresholds: Vec::new(),
    }
}

/// Blast thresholds per likeliest blast class (explosion, gunshot, launch)
/// for a budget of `allowed` false blasts among the field candidates
/// `field`, as many of the true blasts `blasts` reported as blasts as
/// possible. Each candidate is (likeliest blast class, blast classes'
/// summed probability) ([`blastnet_detector::classify::likeliest_blast`]).
///
/// The budget is shared out among the classes every way it can be (a
/// handful of ways: it is a few candidates); a class given `a` of it gets
/// the lowest threshold that lets at most `a` of its field candidates
/// through, and never below 0.5 (a blast must be likelier than not). Ties
/// in blasts reported go to fewer field candidates through, then to higher
/// thresholds. Returns the thresholds and the blasts reported.
pub fn class_thresholds(
    field: &[(usize, f64)],
    blasts: &[(usize, f64)],
    allowed: usize,
) -> ([f64; N_BLAST], usize) {
    // Field scores per class, highest first.
    let mut scores: [Vec<f64>; N_BLAST] = Default::default();
    for &(k, s) in field {
        scores[k].push(s);
    }
    for v in &mut scores {
        v.sort_by(|a, b| b.total_cmp(a));
    }
    // Strictly above the (a + 1)-th highest: at most `a` pass.
    let at = |k: usize, a: usize| -> f64 {
        scores[k]
            .get(a)
            .map_or(0.5, |&v| (v + 1e-9).min(1.0))
            .max(0.5)
    };
    let mut best: Option<([f64; N_BLAST], usize, usize)> = None;
    for a0 in 0..=allowed {
        for a1 in 0..=allowed - a0 {
            for a2 in 0..=allowed - a0 - a1 {
                let t = [at(0, a0), at(1, a1), at(2, a2)];
                let reported = blasts.iter().filter(|&&(k, s)| s >= t[k]).count();
                let through = field.iter().filter(|&&(k, s)| s >= t[k]).count();
                // More blasts, then fewer field candidates, then higher thresholds.
                let better = best.as_ref().is_none_or(|(bt, br, bf)| {
                    (reported, bf.cmp(&through))
                        .cmp(&(*br, std::cmp::Ordering::Equal))
                        .then_with(|| t.iter().sum::<f64>().total_cmp(&bt.iter().sum()))
                        .is_gt()
                });
                if better {
                    best = Some((t, reported, through));
                }
            }
        }
    }
    let (t, reported, _) = best.expect("at least the all-zero share");
    (t, reported)
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
    use blastnet_simulator::scenes::Rng;

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
    fn each_blast_class_gets_the_threshold_its_own_look_alikes_allow() {
        // The field's blast-like candidates all look like explosions, save one
        // faintly launch-like; a budget of one false blast.
        let field = [(0, 0.999), (0, 0.998), (0, 0.99), (0, 0.9), (2, 0.6)];
        let blasts = [(0, 0.995), (0, 0.9995), (1, 0.7), (2, 0.8), (2, 0.55)];
        let (t, reported) = class_thresholds(&field, &blasts, 1);
        // Explosions: spending the one allowed on them gains nothing (0.995
        // is below the second look-alike), so none pass; gunshots have no
        // look-alike (0.5); launches: letting the 0.6 one through would
        // report the 0.55 launch too, so it is spent there.
        assert_eq!(reported, 4, "{t:?}");
        assert!(t[0] > 0.999 && t[0] < 0.9995, "{t:?}");
        assert_eq!(t[1], 0.5);
        assert_eq!(t[2], 0.5);
        // With no budget, the launch threshold rises above its look-alike.
        let (t, reported) = class_thresholds(&field, &blasts, 0);
        assert_eq!(reported, 3, "{t:?}");
        assert!(t[2] > 0.6 && t[2] < 0.8, "{t:?}");
        // Field candidates through never exceed the budget.
        for allowed in 0..4 {
            let (t, _) = class_thresholds(&field, &blasts, allowed);
            let through = field.iter().filter(|&&(k, s)| s >= t[k]).count();
            assert!(through <= allowed, "{allowed}: {through} through at {t:?}");
        }
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
        // Trees find this one informative feature among 18 noise ones less
        // efficiently than a linear model would: 8000 examples, not 2000.
        let train = make(8000);
        let calib = make(1000);
        let test = make(4000);
        // Depth 3 and 150 rounds: the shipped settings (depth 4, 300 rounds,
        // for 25k picks whose features all carry something) fit noise when
        // 18 of 19 features are pure noise (0.73 against Bayes 0.76).
        let b = Boosting {
            rounds: 150,
            depth: 3,
            ..Boosting::default()
        };
        let m = fit(&train, &calib, b, "test");
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
