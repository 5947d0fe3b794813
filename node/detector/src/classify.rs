//! Multinomial logistic regression over standardised features, with a
//! temperature fitted for calibration. Weights live in `model.json`, written
//! by `cargo run --release -p blastnet-detector --example train`.

// Several fixed-size arrays are walked in step: indices read clearer here.
#![allow(clippy::needless_range_loop)]

use crate::features::{FEATURE_NAMES, N_FEATURES};
use serde::{Deserialize, Serialize};

/// Number of classes: explosion, gunshot, launch, other_impulsive.
pub const N_CLASSES: usize = 4;

/// The model file (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Always "blastnet-detector-logreg/1".
    pub format: String,
    /// How it was trained (command, seeds, data).
    pub provenance: String,
    /// Feature names in order; must equal [`FEATURE_NAMES`].
    pub features: Vec<String>,
    /// Class names in order.
    pub classes: Vec<String>,
    /// Per-feature mean used for standardisation.
    pub mean: Vec<f64>,
    /// Per-feature standard deviation used for standardisation.
    pub std: Vec<f64>,
    /// Weights, one row per class.
    pub weights: Vec<Vec<f64>>,
    /// Bias per class.
    pub bias: Vec<f64>,
    /// Logits are divided by this (calibration).
    pub temperature: f64,
    /// Fraction of the training candidates stopped by the isolation gate
    /// that were truly other_impulsive: the probability a gated candidate
    /// gets for that class (absent in older files: 0.95).
    #[serde(default = "default_gated_other")]
    pub gated_other_prob: f64,
}

fn default_gated_other() -> f64 {
    0.95
}

/// The model compiled into the crate.
pub const MODEL_JSON: &str = include_str!("../model.json");

/// A validated, fixed-size classifier.
#[derive(Debug, Clone)]
pub struct Classifier {
    mean: [f64; N_FEATURES],
    inv_std: [f64; N_FEATURES],
    w: [[f64; N_FEATURES]; N_CLASSES],
    b: [f64; N_CLASSES],
    inv_t: f64,
    gated_other: f64,
}

impl Classifier {
    /// Validate a model; the error says which field is wrong.
    pub fn from_model(m: &Model) -> Result<Classifier, String> {
        if m.format != "blastnet-detector-logreg/1" {
            return Err(format!(
                "format: expected \"blastnet-detector-logreg/1\", got {:?}",
                m.format
            ));
        }
        if m.features.len() != N_FEATURES
            || m.features.iter().zip(FEATURE_NAMES).any(|(a, b)| a != b)
        {
            return Err(format!("features: expected {FEATURE_NAMES:?}"));
        }
        if m.mean.len() != N_FEATURES || m.std.len() != N_FEATURES {
            return Err(format!("mean/std: expected {N_FEATURES} values each"));
        }
        if m.weights.len() != N_CLASSES || m.weights.iter().any(|r| r.len() != N_FEATURES) {
            return Err(format!(
                "weights: expected {N_CLASSES} rows of {N_FEATURES}"
            ));
        }
        if m.bias.len() != N_CLASSES {
            return Err(format!("bias: expected {N_CLASSES} values"));
        }
        if !(m.gated_other_prob.is_finite() && (0.0..=1.0).contains(&m.gated_other_prob)) {
            return Err("gated_other_prob: expected a number in [0, 1]".into());
        }
        if !(m.temperature.is_finite() && m.temperature > 0.0) {
            return Err("temperature: expected a positive number".into());
        }
        let mut c = Classifier {
            mean: [0.0; N_FEATURES],
            inv_std: [1.0; N_FEATURES],
            w: [[0.0; N_FEATURES]; N_CLASSES],
            b: [0.0; N_CLASSES],
            inv_t: 1.0 / m.temperature,
            gated_other: m.gated_other_prob,
        };
        for i in 0..N_FEATURES {
            c.mean[i] = m.mean[i];
            c.inv_std[i] = if m.std[i] > 0.0 { 1.0 / m.std[i] } else { 1.0 };
        }
        for k in 0..N_CLASSES {
            c.w[k].copy_from_slice(&m.weights[k]);
            c.b[k] = m.bias[k];
        }
        Ok(c)
    }

    /// A model with zero weights (uniform probabilities): bootstraps
    /// training when the compiled-in model no longer matches the features.
    pub fn uniform() -> Classifier {
        Classifier {
            mean: [0.0; N_FEATURES],
            inv_std: [1.0; N_FEATURES],
            w: [[0.0; N_FEATURES]; N_CLASSES],
            b: [0.0; N_CLASSES],
            inv_t: 1.0,
            gated_other: 0.95,
        }
    }

    /// The compiled-in model.
    pub fn builtin() -> Result<Classifier, String> {
        let m: Model = serde_json::from_str(MODEL_JSON).map_err(|e| format!("model.json: {e}"))?;
        Classifier::from_model(&m)
    }

    /// Class probabilities for one feature vector.
    pub fn probs(&self, x: &[f64; N_FEATURES]) -> [f64; N_CLASSES] {
        let mut logits = self.b;
        for (k, l) in logits.iter_mut().enumerate() {
            for i in 0..N_FEATURES {
                *l += self.w[k][i] * (x[i] - self.mean[i]) * self.inv_std[i];
            }
            *l *= self.inv_t;
        }
        softmax(&logits)
    }
}

impl Classifier {
    /// Class probabilities for a candidate stopped by the isolation gate:
    /// other_impulsive gets the gate's measured precision, the blast classes
    /// share the rest in the model's proportions.
    pub fn gated_probs(&self, x: &[f64; N_FEATURES]) -> [f64; N_CLASSES] {
        let p = self.probs(x);
        let blast: f64 = p[..N_CLASSES - 1].iter().sum();
        let mut out = [0.0; N_CLASSES];
        let rest = 1.0 - self.gated_other;
        for k in 0..N_CLASSES - 1 {
            out[k] = if blast > 0.0 {
                rest * p[k] / blast
            } else {
                rest / (N_CLASSES - 1) as f64
            };
        }
        out[N_CLASSES - 1] = self.gated_other;
        out
    }
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
