//! Detection, timing and classification quality of the node detector
//! (`blastnet eval`), printed as a report; [`train_model`] fits the
//! classifier instead and writes its model JSON.
//!
//! Data sets (read in place from the data directory, default
//! `$BLASTNET_DATA` or `shared/data` beside the workspace):
//! - synthetic scenes from `blastnet_simulator::scenes` (evaluation seeds
//!   `0..scenes`; training seeds start at [`TRAIN_SEED_BASE`]: never shared);
//! - ShotSpotter Pittsburgh FP1–FP3, read with the typed importer
//!   (`blastnet_recording::import::shotspotter`): detection of the pulses
//!   ShotSpotter grouped per shot, on every sensor whose audio is released;
//!   FP1–FP2 are used for training, so classification is scored on FP3 only;
//! - sounds-dev: designed effects split by row (`index % 3 == 0` evaluates,
//!   the rest trains) and freesound distractors (first half of each file
//!   trains, second half feeds the false-alarm hour).
//!
//! Parts: [`synthetic`], [`shotspotter`], [`field`] (designed effects,
//! distractors, false alarms), [`training`]. [`locate`] (`blastnet eval
//! --locate N`) judges the whole pipeline's locations instead, over random
//! scenes with exact truth.

pub mod field;
pub mod locate;
pub mod shotspotter;
pub mod synthetic;
pub mod training;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use blastnet_contract::{SourceKind, StreamKind};
use blastnet_detector::{Classifier, Detector, DetectorConfig, Pick};

use crate::train;
use field::{false_alarms, print_reliability, sfx_examples};
use shotspotter::{shotspotter, ShotSpotterReport};
use synthetic::synthetic_eval;
pub use training::train_model;

/// Seeds at or above this are for training only.
pub const TRAIN_SEED_BASE: u64 = 1_000_000;

/// What `blastnet eval` evaluates, and where.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Data directory holding `shotspotter-pittsburgh-dev/` and `sounds-dev/`.
    pub data: PathBuf,
    /// Synthetic evaluation scenes per sample rate (60 s each).
    pub scenes: usize,
    /// Hours of noise plus distractors for the false-alarm rate.
    pub noise_hours: f64,
    /// Detector configuration.
    pub config: DetectorConfig,
    /// Parts to skip (synth, shotspotter, sfx, noise).
    pub skip: Vec<String>,
    /// Evaluate with this model instead of the compiled-in one.
    pub model: Option<PathBuf>,
}

/// Evaluate the detector and print the report.
pub fn run(args: &EvalOptions) -> Result<()> {
    let data = args.data.clone();
    let classifier = match &args.model {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            let model: blastnet_detector::Model = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a model file", path.display()))?;
            Classifier::from_model(&model)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Classifier::builtin().map_err(|e| anyhow::anyhow!(e))?,
    };
    let cfg = args.config.clone();
    let skip = |part: &str| args.skip.iter().any(|s| s.trim() == part);
    println!(
        "# blastnet eval — node detector (blastnet-detector {})",
        env!("CARGO_PKG_VERSION")
    );
    println!("data: {}", data.display());
    let mut pairs: Vec<(f64, bool)> = Vec::new();
    let mut confusion = [[0usize; 4]; 4];

    if !skip("synth") {
        synthetic_eval(args, &cfg, &classifier, &mut pairs, &mut confusion)?;
    }
    match shotspotter(&data, &cfg, &classifier, None) {
        _ if skip("shotspotter") => {}
        Ok(pulses) => {
            let report = ShotSpotterReport { pulses };
            print!("{report}");
            report.score_fp3(&mut pairs, &mut confusion);
        }
        Err(e) => println!("\n## ShotSpotter: skipped: {e:#}"),
    }
    match sfx_examples(&data, &cfg, &classifier, |i| i % 3 == 0, 1, 77) {
        Ok(ex) => {
            let right = ex
                .iter()
                .filter(|(e, p)| p.kind.class_index() == Some(e.y))
                .count();
            println!("\n## sounds-dev designed effects (held-out rows, first pick per clip)");
            println!(
                "clips picked: {}   reported kind right: {:.1}%",
                ex.len(),
                100.0 * right as f64 / ex.len().max(1) as f64
            );
            for (e, p) in &ex {
                let got = p.kind.class_index().unwrap_or(3);
                pairs.push((p.confidence, got == e.y));
                confusion[e.y][got] += 1;
            }
        }
        Err(e) => println!("\n## sounds-dev: skipped: {e:#}"),
    }
    if !skip("noise") {
        false_alarms(&data, args, &cfg, &classifier)?;
    }

    println!("\n## Classification over all evaluation picks above");
    println!("confusion (rows truth, columns decision): explosion gunshot launch other");
    for (k, row) in confusion.iter().enumerate() {
        println!(
            "  {:<16} {:>6} {:>6} {:>6} {:>6}",
            SourceKind::CLASSIFIED[k].as_str(),
            row[0],
            row[1],
            row[2],
            row[3]
        );
    }
    print_reliability(&train::reliability(&pairs));
    Ok(())
}

pub fn load_config(path: Option<&Path>) -> Result<DetectorConfig> {
    let Some(path) = path else {
        return Ok(DetectorConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let cfg: DetectorConfig = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a detector config", path.display()))?;
    cfg.validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok(cfg)
}

pub fn default_data_dir() -> PathBuf {
    blastnet_recording::data_dir()
}

pub(crate) fn argmax(p: &[f64; 4]) -> usize {
    let mut b = 0;
    for k in 1..4 {
        if p[k] > p[b] {
            b = k;
        }
    }
    b
}

pub(crate) fn detect(
    kind: StreamKind,
    fs: u32,
    x: &[f32],
    cfg: &DetectorConfig,
    c: &Classifier,
) -> Result<Vec<Pick>> {
    let mut d = Detector::with_classifier(kind, fs, cfg, c.clone())?;
    let mut out = Vec::new();
    for block in x.chunks(4096) {
        d.process(block, &mut out);
    }
    d.flush(&mut out);
    Ok(out)
}

/// `BLASTNET_EVAL_DUMP=1`: one line per evaluated pick on stderr (source,
/// class, confidence, SNR, isolation features) for threshold studies.
pub(crate) fn dump() -> bool {
    std::env::var_os("BLASTNET_EVAL_DUMP").is_some()
}

pub(crate) fn dump_pick(label: &str, p: &Pick) {
    let ungated = Classifier::builtin()
        .map(|c| SourceKind::CLASSIFIED[argmax(&c.probs(&p.features.vector()))].as_str())
        .unwrap_or("?");
    eprintln!(
        "DUMP\t{label}\t{}\t{:.3}\t{:.1}\t{:.1}\t{}\t{ungated}",
        p.kind.as_str(),
        p.confidence,
        p.snr_db,
        p.features.local_prominence_db,
        p.features.comparable_onsets
    );
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// The pick closest to `t` within `win` samples.
pub(crate) fn nearest(picks: &[Pick], t: f64, win: f64) -> Option<&Pick> {
    picks
        .iter()
        .filter(|p| (p.onset_index - t).abs() <= win)
        .min_by(|a, b| {
            (a.onset_index - t)
                .abs()
                .total_cmp(&(b.onset_index - t).abs())
        })
}
