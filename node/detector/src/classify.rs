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
        if !(m.temperature.is_finite() && m.temperature > 0.0) {
            return Err("temperature: expected a positive number".into());
        }
        let mut c = Classifier {
            mean: [0.0; N_FEATURES],
            inv_std: [1.0; N_FEATURES],
            w: [[0.0; N_FEATURES]; N_CLASSES],
            b: [0.0; N_CLASSES],
            inv_t: 1.0 / m.temperature,
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
