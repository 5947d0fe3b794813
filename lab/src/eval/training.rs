//! Fitting the node classifier from synthetic scenes, ShotSpotter FP1–FP2, designed effects and field hours.

use std::path::Path;

use anyhow::{Context, Result};
use blastnet_contract::{SourceKind, StreamKind};
use blastnet_detector::classify::likeliest_blast;
use blastnet_detector::{Classifier, DetectorConfig};
use blastnet_simulator::scenes::{self};

use super::field::{distractors, field_hours, print_reliability, sfx_examples, Half};
use super::shotspotter::shotspotter;
use super::synthetic::{synth_spec, LAUNCH_MATCH_S};
use super::{detect, nearest, TRAIN_SEED_BASE};
use crate::train::{self, Example};

pub(crate) fn synth_examples(
    seeds: std::ops::Range<u64>,
    cfg: &DetectorConfig,
    c: &Classifier,
) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for seed in seeds {
        let fs = [12_000u32, 16_000, 48_000, 96_000][(seed % 4) as usize];
        let mut spec = synth_spec(f64::from(fs));
        spec.duration_s = 30.0;
        spec.snr_db = (12.0, 45.0);
        let sc = scenes::scene(seed, &spec);
        let picks = detect(StreamKind::Acoustic, fs, &sc.samples, cfg, c)?;
        for e in &sc.events {
            let w = if e.kind == SourceKind::Launch {
                LAUNCH_MATCH_S
            } else {
                0.005
            } * f64::from(fs);
            if let (Some(p), Some(y)) = (nearest(&picks, e.onset_index, w), e.kind.class_index()) {
                out.push(Example {
                    x: p.features.vector(),
                    y,
                });
            }
        }
    }
    Ok(out)
}

/// False blasts per node-hour the training aims the blast thresholds at, on
/// its own validation field hours (the budget; the evaluation's
/// field hours are other recordings' stretches and seeds, and say how well
/// it holds there).
pub(crate) const FALSE_BLAST_BUDGET_PER_HOUR: f64 = 0.5;
/// Simulated field hours (first halves of the distractors) in the training
/// set, and for choosing the blast threshold.
pub(crate) const FIELD_TRAIN_HOURS: f64 = 12.0;
/// Synthetic training scenes (30 s each, at 12, 16, 48 and 96 kHz in turn).
pub(crate) const SYNTH_TRAIN_SCENES: u64 = 300;
pub(crate) const FIELD_VALIDATION_HOURS: f64 = 12.0;

pub fn train_model(data: &Path, out_path: &Path, cfg: &DetectorConfig) -> Result<()> {
    // Feature extraction does not depend on the model; any valid one will
    // do (uniform when the compiled-in one no longer matches the features).
    let c = Classifier::builtin().unwrap_or_else(|_| Classifier::uniform());
    println!(
        "# training the node classifier (seeds >= {TRAIN_SEED_BASE}; evaluation uses seeds < 1000)"
    );
    let mut train_set = synth_examples(
        TRAIN_SEED_BASE..TRAIN_SEED_BASE + SYNTH_TRAIN_SCENES,
        cfg,
        &c,
    )?;
    let calib = synth_examples(TRAIN_SEED_BASE + 500..TRAIN_SEED_BASE + 540, cfg, &c)?;
    println!(
        "synthetic: {} training picks, {} calibration picks",
        train_set.len(),
        calib.len()
    );
    match shotspotter(data, cfg, &c, Some(&["FP1", "FP2"])) {
        Ok(ss) => {
            let before = train_set.len();
            for p in ss.iter().filter_map(|p| p.found.as_ref()) {
                train_set.push(Example {
                    x: p.1.features.vector(),
                    y: 1,
                });
            }
            println!(
                "ShotSpotter FP1–FP2: {} gunshot picks",
                train_set.len() - before
            );
        }
        Err(e) => println!("ShotSpotter: skipped: {e:#}"),
    }
    match sfx_examples(data, cfg, &c, |i| i % 3 != 0, 4, TRAIN_SEED_BASE) {
        Ok(ex) => {
            println!("sounds-dev designed effects (rows with index % 3 != 0, 4 noise draws each): {} picks", ex.len());
            train_set.extend(ex.into_iter().map(|(e, _)| e));
        }
        Err(e) => println!("sounds-dev: skipped: {e:#}"),
    }
    let dist = match distractors(data, 48_000) {
        Ok(d) => d,
        Err(e) => {
            println!("freesound distractors: skipped: {e:#}");
            Vec::new()
        }
    };
    // Field hours: every pick is not a blast (noise, distractor stretches
    // from the first halves, synthetic other-impulsive sounds).
    let (field, _, _) = field_hours(
        &dist,
        Half::First,
        FIELD_TRAIN_HOURS,
        TRAIN_SEED_BASE + 7,
        cfg,
        &c,
    )?;
    println!(
        "field hours: {FIELD_TRAIN_HOURS} h of noise with first-half distractor stretches: {} other-impulsive picks",
        field.len()
    );
    train_set.extend(field.iter().map(|(p, _)| Example {
        x: p.features.vector(),
        y: 3,
    }));
    let mut counts = [0usize; 4];
    for e in &train_set {
        counts[e.y] += 1;
    }
    println!(
        "training set by class: explosion {}, gunshot {}, launch {}, other {}",
        counts[0], counts[1], counts[2], counts[3]
    );
    let boosting = train::Boosting::default();
    let mut provenance = format!(
        "blastnet eval --train: synthetic seeds {TRAIN_SEED_BASE}..+{SYNTH_TRAIN_SCENES} (calibration +500..+540), ShotSpotter FP1-FP2, sounds-dev sfx rows i%3!=0, {FIELD_TRAIN_HOURS} field hours from the freesound first halves (seed +7); gradient-boosted trees {boosting:?}"
    );
    let mut model = train::fit(&train_set, &calib, boosting, &provenance);
    let fitted = Classifier::from_model(&model).map_err(|e| anyhow::anyhow!(e))?;
    // The blast thresholds: per likeliest blast class, as many calibration
    // blasts as possible reported with at most the budget of validation
    // field hours (other seeds, same first halves) let through.
    let (val, _, _) = field_hours(
        &dist,
        Half::First,
        FIELD_VALIDATION_HOURS,
        TRAIN_SEED_BASE + 9,
        cfg,
        &c,
    )?;
    let field_scores: Vec<(usize, f64)> = val
        .iter()
        .map(|(p, _)| likeliest_blast(&fitted.probs(&p.features.vector())))
        .collect();
    let blast_scores: Vec<(usize, f64)> = calib
        .iter()
        .filter(|e| e.y < 3)
        .map(|e| likeliest_blast(&fitted.probs(&e.x)))
        .collect();
    let allowed = (FALSE_BLAST_BUDGET_PER_HOUR * FIELD_VALIDATION_HOURS).floor() as usize;
    let (thresholds, _) = train::class_thresholds(&field_scores, &blast_scores, allowed);
    model.blast_threshold = thresholds.iter().copied().fold(1.0, f64::min);
    model.class_thresholds = thresholds.to_vec();
    provenance.push_str(&format!(
        "; class_thresholds (explosion, gunshot, launch) {:.6} / {:.6} / {:.6}: at most {FALSE_BLAST_BUDGET_PER_HOUR} false blasts per hour on {FIELD_VALIDATION_HOURS} validation field hours (seed +9), most calibration blasts reported",
        thresholds[0], thresholds[1], thresholds[2]
    ));
    model.provenance = provenance;
    let fitted = fitted.with_thresholds(thresholds);
    let through = field_scores
        .iter()
        .filter(|&&(k, s)| s >= thresholds[k])
        .count();
    let mut by_class = [0usize; 3];
    for &(k, s) in &field_scores {
        if s >= 0.5 {
            by_class[k] += 1;
        }
    }
    println!(
        "validation field picks likelier blast than not, by likeliest blast class: explosion {}, gunshot {}, launch {}",
        by_class[0], by_class[1], by_class[2]
    );
    let (acc, _) = train::score(&fitted, &train_set);
    let (cacc, cpairs) = train::score(&fitted, &calib);
    let blasts: Vec<&Example> = calib.iter().filter(|e| e.y < 3).collect();
    let reported = blasts
        .iter()
        .filter(|e| fitted.decide(&fitted.probs(&e.x)).0 < 3)
        .count();
    println!(
        "temperature {:.3}; training accuracy {:.1}%, calibration accuracy {:.1}%",
        model.temperature,
        100.0 * acc,
        100.0 * cacc
    );
    println!(
        "blast thresholds explosion {:.4}, gunshot {:.4}, launch {:.4} ({through} of {} validation field picks through): calibration blasts reported as blasts {reported}/{} = {:.1}%",
        thresholds[0],
        thresholds[1],
        thresholds[2],
        field_scores.len(),
        blasts.len(),
        100.0 * reported as f64 / blasts.len().max(1) as f64
    );
    print_reliability(&train::reliability(&cpairs));
    let text = serde_json::to_string(&model)?;
    std::fs::write(out_path, text + "\n")
        .with_context(|| format!("{}: cannot write", out_path.display()))?;
    println!("wrote {}", out_path.display());
    Ok(())
}
