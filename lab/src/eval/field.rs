//! sounds-dev: designed effects, freesound distractors and simulated field hours (false alarms).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use blastnet_contract::{SourceKind, StreamKind};
use blastnet_detector::{Classifier, Detector, DetectorConfig, Pick};
use blastnet_simulator::scenes::{add_noise, render, Rng};

use super::shotspotter::read_wav_mono;
use super::{detect, dump, dump_pick, EvalOptions};
use crate::train::{self, Example, ReliabilityBin};

pub(crate) fn sfx_label(label: &str) -> Option<SourceKind> {
    match label {
        "explosion" | "artillery" => Some(SourceKind::Explosion),
        "gunshot" => Some(SourceKind::Gunshot),
        "rocket" => Some(SourceKind::Launch),
        "other-impulsive" => Some(SourceKind::OtherImpulsive),
        _ => None,
    }
}

/// First pick of each designed effect (rows chosen by `keep`), embedded in
/// noise at a random peak SNR of 20–40 dB, `reps` noise draws per clip.
pub(crate) fn sfx_examples(
    data: &Path,
    cfg: &DetectorConfig,
    c: &Classifier,
    keep: impl Fn(usize) -> bool,
    reps: u64,
    seed: u64,
) -> Result<Vec<(Example, Pick)>> {
    let dir = data.join("sounds-dev");
    let csv_path = dir.join("sfx.csv");
    let csv = std::fs::read_to_string(&csv_path)
        .with_context(|| format!("{}: cannot read", csv_path.display()))?;
    let mut out = Vec::new();
    for (i, line) in csv.lines().skip(1).enumerate() {
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() < 4 {
            bail!(
                "{}: line {}: expected file,source,licence,label,...",
                csv_path.display(),
                i + 2
            );
        }
        let Some(kind) = sfx_label(cols[3]) else {
            continue;
        };
        if !keep(i) {
            continue;
        }
        let (clip, fs) = read_wav_mono(&dir.join(cols[0]))?;
        if fs < 8000 {
            continue;
        }
        let peak = clip.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if peak <= 0.0 {
            continue;
        }
        for r in 0..reps {
            let mut rng = Rng::new(seed ^ (i as u64 * 1000 + r));
            let snr = rng.range(20.0, 40.0);
            let noise = f64::from(peak) / 10f64.powf(snr / 20.0);
            let lead = fs as usize;
            let mut x = vec![0f32; lead + clip.len() + fs as usize];
            let red = rng.range(0.0, 0.8);
            add_noise(&mut rng, noise, red, &mut x);
            for (j, &v) in clip.iter().enumerate() {
                x[lead + j] += v;
            }
            let picks = detect(StreamKind::Acoustic, fs, &x, cfg, c)?;
            if let Some(p) = picks
                .iter()
                .find(|p| p.onset_index >= lead as f64 - 0.01 * f64::from(fs))
            {
                if let Some(y) = kind.class_index() {
                    out.push((
                        Example {
                            x: p.features.vector(),
                            y,
                        },
                        p.clone(),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The freesound distractors, resampled to `fs` (linear; they are noise).
pub(crate) fn distractors(data: &Path, fs: u32) -> Result<Vec<(String, Vec<f32>)>> {
    let dir = data.join("sounds-dev");
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.starts_with("freesound-") && s.ends_with(".wav"))
        })
        .collect();
    names.sort();
    for p in names {
        let (x, rate) = read_wav_mono(&p)?;
        let ratio = f64::from(rate) / f64::from(fs);
        let n = (x.len() as f64 / ratio) as usize;
        let y: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f64 * ratio;
                let j = t as usize;
                let f = (t - j as f64) as f32;
                let a = x[j.min(x.len() - 1)];
                let b = x[(j + 1).min(x.len() - 1)];
                a + f * (b - a)
            })
            .collect();
        out.push((
            p.file_name()
                .and_then(|s| s.to_str())
                .unwrap_or("?")
                .to_owned(),
            y,
        ));
    }
    Ok(out)
}

/// Which half of each freesound recording a field simulation draws from:
/// training takes the first halves, evaluation the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Half {
    First,
    Second,
}

/// What [`field_hours`] produced: each pick with its source, and the
/// numbers of distractor stretches and synthetic sounds inserted.
pub(crate) type Field = (Vec<(Pick, String)>, usize, usize);

/// Hours of a node's life without blasts, at 48 kHz: noise whose level
/// (0.005–0.1 Pa) and colour drift, a 2–5 s stretch of a freesound
/// recording in half of the 10 s chunks (faded in and out over 50 ms) and a
/// synthetic other-impulsive sound in a fifth. Every pick the detector makes
/// is returned with what it came from (`noise only`, a recording's name, or
/// `synthetic other-impulsive`), with the counts of what was inserted.
pub(crate) fn field_hours(
    dist: &[(String, Vec<f32>)],
    half: Half,
    hours: f64,
    seed: u64,
    cfg: &DetectorConfig,
    c: &Classifier,
) -> Result<Field> {
    let fs = 48_000u32;
    let mut d = Detector::with_classifier(StreamKind::Acoustic, fs, cfg, c.clone())?;
    let mut rng = Rng::new(seed);
    let chunk = 10 * fs as usize;
    let n_chunks = (hours * 360.0).ceil() as usize;
    let mut buf = vec![0f32; chunk];
    let mut tmp = vec![0f32; chunk];
    let mut out = Vec::new();
    let mut picks = Vec::new();
    let (mut inserted, mut synth_other) = (0usize, 0usize);
    let mut level = 0.02f64;
    // What was inserted where (absolute sample spans), to attribute picks.
    let mut spans: Vec<(u64, u64, String)> = Vec::new();
    let source = |spans: &[(u64, u64, String)], p: &Pick| {
        let t = p.onset_index as u64;
        spans
            .iter()
            .rev()
            .find(|s| s.0 <= t + 48 && t < s.1 + u64::from(fs) / 4)
            .map_or("noise only".to_string(), |s| s.2.clone())
    };
    for ci in 0..n_chunks {
        let base = (ci * chunk) as u64;
        // Level drifts by up to ±3 dB per 10 s, within 0.005–0.1 Pa.
        let next = (level * 10f64.powf(rng.range(-3.0, 3.0) / 20.0)).clamp(0.005, 0.1);
        let red = rng.range(0.0, 0.8);
        tmp.iter_mut().for_each(|v| *v = 0.0);
        add_noise(&mut rng, 1.0, red, &mut tmp);
        for (i, v) in buf.iter_mut().enumerate() {
            let g = level + (next - level) * i as f64 / chunk as f64;
            *v = (f64::from(tmp[i]) * g) as f32;
        }
        level = next;
        if !dist.is_empty() && rng.uniform() < 0.5 {
            let (name, y) = &dist[rng.below(dist.len())];
            // A random 2–5 s stretch, so that each insertion is a different
            // moment of the recording.
            let part = match half {
                Half::First => &y[..y.len() / 2],
                Half::Second => &y[y.len() / 2..],
            };
            let len = ((rng.range(2.0, 5.0) * f64::from(fs)) as usize).min(part.len());
            let off = rng.below(part.len() - len + 1);
            let part = &part[off..off + len];
            let at = rng.below(chunk - len);
            let pk = part.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-9);
            let gain = (level * 10f64.powf(rng.range(10.0, 35.0) / 20.0)) as f32 / pk;
            // Fade in/out over 50 ms so the splice itself is not an impulse.
            let fade = (0.05 * f64::from(fs)) as usize;
            for j in 0..len {
                let w = (j.min(len - 1 - j) as f32 / fade as f32).min(1.0);
                buf[at + j] += gain * w * part[j];
            }
            spans.push((base + at as u64, base + (at + len) as u64, name.clone()));
            inserted += 1;
        }
        if rng.uniform() < 0.2 {
            let snr = rng.range(15.0, 40.0);
            let onset = rng.range(1.0, 8.0);
            render(
                SourceKind::OtherImpulsive,
                &mut rng,
                f64::from(fs),
                onset,
                level * 10f64.powf(snr / 20.0),
                &mut buf,
            );
            let at = base + (onset * f64::from(fs)) as u64;
            spans.push((at, at + u64::from(fs), "synthetic other-impulsive".into()));
            synth_other += 1;
        }
        for b in buf.chunks(4800) {
            d.process(b, &mut out);
        }
        for p in out.drain(..) {
            let src = source(&spans, &p);
            picks.push((p, src));
        }
        // Only the recent spans can still match a pick.
        spans.retain(|s| s.1 + 2 * chunk as u64 > base);
    }
    d.flush(&mut out);
    for p in out.drain(..) {
        let src = source(&spans, &p);
        picks.push((p, src));
    }
    Ok((picks, inserted, synth_other))
}

/// False detections over simulated field hours without blasts.
#[derive(Debug, Clone, Default)]
pub struct FalseAlarmReport {
    /// Hours of stream evaluated (whole 10 s chunks).
    pub hours: f64,
    /// Distractor-recording stretches inserted.
    pub inserted: usize,
    /// Synthetic other-impulsive sounds inserted.
    pub synth_other: usize,
    /// Every pick made.
    pub picks: usize,
    /// Picks by reported kind (explosion, gunshot, launch, other).
    pub by_kind: [usize; 4],
    /// False blasts with confidence at or above 0.8, 0.9, 0.95.
    pub confident: [usize; 3],
    /// False blasts by what they came from and the kind reported.
    pub blame: std::collections::BTreeMap<String, usize>,
}

impl FalseAlarmReport {
    /// Picks reported as a blast (every one is false here).
    pub fn false_blasts(&self) -> usize {
        self.by_kind[..3].iter().sum()
    }

    /// False blasts per node-hour.
    pub fn per_hour(&self) -> f64 {
        self.false_blasts() as f64 / self.hours
    }
}

impl std::fmt::Display for FalseAlarmReport {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (hours, by_kind, blasts) = (self.hours, &self.by_kind, self.false_blasts());
        writeln!(out, "\n## False alarms: {hours:.2} h of 48 kHz noise (level drifting 0.005–0.1 Pa, colour varying)")?;
        writeln!(
            out,
            "with {} freesound distractor stretches (second halves: applause, car, crowd, rain, train, typing) and {} synthetic other-impulsive sounds",
            self.inserted, self.synth_other
        )?;
        writeln!(
            out,
            "picks: {} (explosion {}, gunshot {}, launch {}, other {}); false blast detections: {blasts} = {:.2} per node-hour; non-blast picks {}",
            self.picks,
            by_kind[0],
            by_kind[1],
            by_kind[2],
            by_kind[3],
            self.per_hour(),
            by_kind[3]
        )?;
        write!(
            out,
            "false blast detections with confidence >= 0.8 / 0.9 / 0.95: {:.1} / {:.1} / {:.1} per node-hour",
            self.confident[0] as f64 / hours,
            self.confident[1] as f64 / hours,
            self.confident[2] as f64 / hours
        )?;
        if blasts > 0 {
            write!(
                out,
                "\nfalse blasts by source (within the inserted span + 0.25 s):"
            )?;
            for (k, v) in &self.blame {
                write!(out, "\n  {v:>5}  {k}")?;
            }
        }
        Ok(())
    }
}

/// The false-alarm part of the report: field hours from the second halves
/// of the distractors (the training draws from the first halves, with other
/// seeds); every pick reported as a blast is a false blast.
pub(crate) fn false_alarms(
    data: &Path,
    args: &EvalOptions,
    cfg: &DetectorConfig,
    c: &Classifier,
) -> Result<()> {
    let dist = match distractors(data, 48_000) {
        Ok(d) => d,
        Err(e) => {
            println!("\n## False alarms: freesound distractors unavailable ({e:#}); noise and synthetic distractors only");
            Vec::new()
        }
    };
    println!("{}", false_alarm_report(&dist, args.noise_hours, cfg, c)?);
    Ok(())
}

/// Count what the detector reports over `hours` of simulated field life
/// with stretches of `dist` (their second halves) and synthetic sounds.
pub fn false_alarm_report(
    dist: &[(String, Vec<f32>)],
    hours: f64,
    cfg: &DetectorConfig,
    c: &Classifier,
) -> Result<FalseAlarmReport> {
    let (picks, inserted, synth_other) = field_hours(dist, Half::Second, hours, 424_242, cfg, c)?;
    let mut r = FalseAlarmReport {
        hours: (hours * 360.0).ceil() / 360.0,
        inserted,
        synth_other,
        picks: picks.len(),
        ..FalseAlarmReport::default()
    };
    for (p, src) in &picks {
        if let Some(k) = p.kind.class_index() {
            r.by_kind[k] += 1;
        }
        if dump() {
            dump_pick(&format!("fa:{src}"), p);
        }
        if p.kind.is_blast() {
            *r.blame
                .entry(format!("{src} as {}", p.kind.as_str()))
                .or_default() += 1;
            for (slot, lim) in r.confident.iter_mut().zip([0.8, 0.9, 0.95]) {
                if p.confidence >= lim {
                    *slot += 1;
                }
            }
        }
    }
    Ok(r)
}

pub(crate) fn print_reliability(bins: &[ReliabilityBin]) {
    println!("\nreliability (stated confidence vs fraction right):");
    println!(
        "  {:<12} {:>6} {:>10} {:>9}",
        "confidence", "n", "mean conf", "accuracy"
    );
    for b in bins {
        if b.count > 0 {
            println!(
                "  {:.2}–{:.2}    {:>6} {:>10.3} {:>9.3}",
                b.lo, b.hi, b.count, b.mean_confidence, b.accuracy
            );
        }
    }
    println!("  expected calibration error: {:.3}", train::ece(bins));
}
