//! The candidate classifier: gradient-boosted regression trees over the
//! features (multiclass softmax, Friedman 2001; the second-order leaf
//! values of Chen & Guestrin 2016), logits divided by a fitted temperature
//! for calibration. The model lives in `model.json`, written by `blastnet
//! eval --train` (see `lab/src/train.rs`).
//!
//! Why trees and not the logistic regression this replaced: the features
//! interact (a negative phase as deep as the peak says "not an explosion"
//! but nothing about gunshots; a level that stays up after the onset means
//! a launch when the rise is slow and a crowd when it is not). On the same
//! training picks, a linear model reported 34 % of synthetic blasts as
//! blasts at 6.5 false blasts per node-hour; trees 89 % at 7.
//!
//! Written here rather than taken from a crate: inference is a few lines
//! over flat arrays and must not allocate (it runs per candidate on the
//! node), training must be bit-reproducible from its seeds, and the
//! candidates number thousands, not millions (see `lab/src/train.rs`).
//!
//! A node reports a blast kind only when the blast classes together reach
//! a threshold: the model is trained on class-balanced data, while in the
//! field almost every candidate is not a blast, so the threshold (chosen at
//! training on simulated field hours, for a budget of false blasts per
//! node-hour) plays the part of the field's prior odds. The threshold
//! depends on which blast class is likeliest ([`Model::class_thresholds`]):
//! each class has its own look-alikes in the field (a slam for an
//! explosion, a click for a gunshot, an engine for a launch), and one
//! threshold set by the closest of them all would hold back the classes
//! whose look-alikes are farther. The class probabilities themselves stay
//! calibrated and are published.

use crate::features::{FEATURE_NAMES, N_FEATURES};
use blastnet_contract::SourceKind;
use serde::{Deserialize, Serialize};

/// Number of classes: [`SourceKind::CLASSIFIED`] (explosion, gunshot, launch,
/// other_impulsive), in that order.
pub const N_CLASSES: usize = SourceKind::CLASSIFIED.len();

/// The model's format string.
pub const MODEL_FORMAT: &str = "blastnet-detector-gbdt/1";

/// One regression tree as parallel arrays; node 0 is the root. A node with
/// `left[i] == 0` is a leaf with value `value[i]`; otherwise a sample goes
/// left when `x[feature[i]] <= threshold[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Feature index per node (0 for leaves).
    pub feature: Vec<u16>,
    /// Split threshold per node (0 for leaves).
    pub threshold: Vec<f64>,
    /// Left child per node (0: a leaf).
    pub left: Vec<u32>,
    /// Right child per node (0: a leaf).
    pub right: Vec<u32>,
    /// Leaf value (logit increment) per node (0 for splits).
    pub value: Vec<f64>,
}

/// The model file (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// How it was trained (command, seeds, data, settings).
    pub provenance: String,
    /// Feature names in order; must equal [`FEATURE_NAMES`].
    pub features: Vec<String>,
    /// Class names in order.
    pub classes: Vec<String>,
    /// Trees, round-robin over the classes: tree `t` adds to the logit of
    /// class `t % N_CLASSES`.
    pub trees: Vec<Tree>,
    /// Logits are divided by this (calibration).
    pub temperature: f64,
    /// A blast kind is reported when the blast classes' probabilities sum
    /// to at least this (unless `class_thresholds` says otherwise).
    pub blast_threshold: f64,
    /// Per blast class (explosion, gunshot, launch): the sum the blast
    /// classes must reach when that class is the likeliest blast. Empty:
    /// `blast_threshold` for every class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_thresholds: Vec<f64>,
}

/// Number of blast classes (all but other_impulsive).
pub const N_BLAST: usize = N_CLASSES - 1;

/// The model compiled into the crate.
pub const MODEL_JSON: &str = include_str!("../model.json");

#[derive(Debug, Clone, Copy)]
struct Node {
    feature: u16,
    /// 0: a leaf.
    left: u32,
    right: u32,
    /// The threshold of a split, the value of a leaf.
    v: f64,
}

/// A validated classifier (flat nodes, no allocation when evaluated).
#[derive(Debug, Clone)]
pub struct Classifier {
    nodes: Vec<Node>,
    /// Root node of each tree (tree `t` feeds class `t % N_CLASSES`).
    roots: Vec<u32>,
    inv_t: f64,
    thresholds: [f64; N_BLAST],
}

impl Classifier {
    /// Validate a model; the error says which field is wrong.
    pub fn from_model(m: &Model) -> Result<Classifier, String> {
        if m.format != MODEL_FORMAT {
            return Err(format!(
                "format: expected {MODEL_FORMAT:?}, got {:?}",
                m.format
            ));
        }
        if m.features.len() != N_FEATURES
            || m.features.iter().zip(FEATURE_NAMES).any(|(a, b)| a != b)
        {
            return Err(format!("features: expected {FEATURE_NAMES:?}"));
        }
        if m.classes.len() != N_CLASSES
            || m.classes
                .iter()
                .zip(SourceKind::CLASSIFIED)
                .any(|(a, k)| a != k.as_str())
        {
            let names = SourceKind::CLASSIFIED.map(SourceKind::as_str);
            return Err(format!("classes: expected {names:?}"));
        }
        if !(m.temperature.is_finite() && m.temperature > 0.0) {
            return Err("temperature: expected a positive number".into());
        }
        if !(m.blast_threshold.is_finite() && (0.0..=1.0).contains(&m.blast_threshold)) {
            return Err("blast_threshold: expected a number in [0, 1]".into());
        }
        let mut thresholds = [m.blast_threshold; N_BLAST];
        if !m.class_thresholds.is_empty() {
            if m.class_thresholds.len() != N_BLAST
                || m.class_thresholds
                    .iter()
                    .any(|t| !(t.is_finite() && (0.0..=1.0).contains(t)))
            {
                return Err(format!(
                    "class_thresholds: expected {N_BLAST} numbers in [0, 1] (explosion, gunshot, launch)"
                ));
            }
            thresholds.copy_from_slice(&m.class_thresholds);
        }
        let mut nodes = Vec::new();
        let mut roots = Vec::with_capacity(m.trees.len());
        for (t, tree) in m.trees.iter().enumerate() {
            let n = tree.feature.len();
            if n == 0
                || [
                    tree.threshold.len(),
                    tree.left.len(),
                    tree.right.len(),
                    tree.value.len(),
                ]
                .iter()
                .any(|&l| l != n)
            {
                return Err(format!("trees[{t}]: expected equal, non-empty node arrays"));
            }
            let base = nodes.len() as u32;
            roots.push(base);
            for i in 0..n {
                let (l, r) = (tree.left[i], tree.right[i]);
                let leaf = l == 0 && r == 0;
                if !leaf {
                    // Children come after their parent: no cycles.
                    if l as usize <= i || r as usize <= i || l as usize >= n || r as usize >= n {
                        return Err(format!("trees[{t}] node {i}: children out of order"));
                    }
                    if tree.feature[i] as usize >= N_FEATURES || !tree.threshold[i].is_finite() {
                        return Err(format!("trees[{t}] node {i}: bad split"));
                    }
                } else if !tree.value[i].is_finite() {
                    return Err(format!("trees[{t}] node {i}: leaf value not finite"));
                }
                nodes.push(Node {
                    feature: tree.feature[i],
                    left: if leaf { 0 } else { base + l },
                    right: if leaf { 0 } else { base + r },
                    v: if leaf {
                        tree.value[i]
                    } else {
                        tree.threshold[i]
                    },
                });
            }
        }
        Ok(Classifier {
            nodes,
            roots,
            inv_t: 1.0 / m.temperature,
            thresholds,
        })
    }

    /// A model without trees (uniform probabilities): bootstraps training
    /// when the compiled-in model no longer matches the features.
    pub fn uniform() -> Classifier {
        Classifier {
            nodes: Vec::new(),
            roots: Vec::new(),
            inv_t: 1.0,
            thresholds: [0.5; N_BLAST],
        }
    }

    /// The compiled-in model (parsed once per process: it is a few hundred
    /// kB of JSON, and every detector starts from it).
    pub fn builtin() -> Result<Classifier, String> {
        static BUILTIN: std::sync::OnceLock<Result<Classifier, String>> =
            std::sync::OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                let m: Model =
                    serde_json::from_str(MODEL_JSON).map_err(|e| format!("model.json: {e}"))?;
                Classifier::from_model(&m)
            })
            .clone()
    }

    /// Uncalibrated logits (temperature 1) for one feature vector.
    pub fn logits(&self, x: &[f64; N_FEATURES]) -> [f64; N_CLASSES] {
        let mut l = [0.0; N_CLASSES];
        for (t, &root) in self.roots.iter().enumerate() {
            let mut i = root as usize;
            loop {
                let n = self.nodes[i];
                if n.left == 0 {
                    l[t % N_CLASSES] += n.v;
                    break;
                }
                i = if x[n.feature as usize] <= n.v {
                    n.left
                } else {
                    n.right
                } as usize;
            }
        }
        l
    }

    /// Calibrated class probabilities for one feature vector.
    pub fn probs(&self, x: &[f64; N_FEATURES]) -> [f64; N_CLASSES] {
        let mut l = self.logits(x);
        for v in &mut l {
            *v *= self.inv_t;
        }
        softmax(&l)
    }

    /// The class a node reports for probabilities `p`, and its confidence:
    /// the likeliest blast class when the blast classes together reach that
    /// class's threshold, else other_impulsive (confidence: its own
    /// probability).
    pub fn decide(&self, p: &[f64; N_CLASSES]) -> (usize, f64) {
        let (best, blast) = likeliest_blast(p);
        if blast >= self.thresholds[best] {
            (best, p[best])
        } else {
            (N_CLASSES - 1, p[N_CLASSES - 1])
        }
    }

    /// The same trees and temperature with other blast thresholds.
    pub fn with_thresholds(mut self, t: [f64; N_BLAST]) -> Classifier {
        self.thresholds = t.map(|v| v.clamp(0.0, 1.0));
        self
    }
}

/// The likeliest blast class of `p` (the first on a tie) and the blast
/// classes' summed probability.
pub fn likeliest_blast(p: &[f64; N_CLASSES]) -> (usize, f64) {
    let mut best = 0;
    for k in 1..N_BLAST {
        if p[k] > p[best] {
            best = k;
        }
    }
    (best, p[..N_BLAST].iter().sum())
}

/// Numerically safe softmax.
pub fn softmax(l: &[f64; N_CLASSES]) -> [f64; N_CLASSES] {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut p = [0.0; N_CLASSES];
    let mut s = 0.0;
    for k in 0..N_CLASSES {
        p[k] = (l[k] - m).exp();
        s += p[k];
    }
    for v in &mut p {
        *v /= s;
    }
    p
}
