//! `blastnet eval` (issue #4): detection, timing and classification quality
//! of the node detector, printed as a report; `--train FILE` fits the
//! classifier instead and writes its model JSON.
//!
//! Data sets (read in place from `--data`, default `$BLASTNET_DATA` or
//! `<workspace>/../shared/data`):
//! - synthetic scenes from `blastnet_detector::synth` (evaluation seeds
//!   `0..scenes`; training seeds start at [`TRAIN_SEED_BASE`]: never shared);
//! - ShotSpotter Pittsburgh FP1–FP3: detection of the pulses ShotSpotter
//!   grouped per shot, on every sensor whose audio is released; FP1–FP2 are
//!   used for training, so classification is scored on FP3 only;
//! - sounds-dev: designed effects split by row (`index % 3 == 0` evaluates,
//!   the rest trains) and freesound distractors (first half of each file
//!   trains, second half feeds the false-alarm hour).
//!
//! Real simulated scenarios (`blastnet simulate` folders) are not read yet:
//! the simulator crate had no API when this was written; the synthetic
//! generator here renders the same Friedlander physics with exact truth.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use blastnet_contract::{SourceKind, StreamKind, UtcNs};
use blastnet_detector::synth::{self, add_noise, class_index, render, Rng, SceneSpec, CLASSES};
use blastnet_detector::train::{self, Example, ReliabilityBin};
use blastnet_detector::{Classifier, Detector, DetectorConfig, Pick};

/// Seeds at or above this are for training only.
pub const TRAIN_SEED_BASE: u64 = 1_000_000;

/// Arguments of `blastnet eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory holding `shotspotter-pittsburgh-dev/` and `sounds-dev/`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Synthetic evaluation scenes per sample rate (60 s each).
    #[arg(long, default_value_t = 20)]
    pub scenes: usize,
    /// Hours of noise plus distractors for the false-alarm rate.
    #[arg(long, default_value_t = 4.0)]
    pub noise_hours: f64,
    /// Detector config as JSON (any subset of `DetectorConfig` fields); defaults otherwise.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Skip the synthetic, sounds-dev or false-alarm parts (comma list: synth,shotspotter,sfx,noise).
    #[arg(long, default_value = "")]
    pub skip: String,
    /// Train the classifier and write the model JSON to this file instead of evaluating.
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Evaluate with this model JSON instead of the compiled-in one.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// Run `blastnet eval`.
pub fn run(args: Args) -> Result<()> {
    let data = args.data.clone().unwrap_or_else(default_data_dir);
    if let Some(out) = &args.train {
        let cfg = load_config(args.config.as_deref())?;
        return train_model(&data, out, &cfg);
    }
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
    let cfg = load_config(args.config.as_deref())?;
    let skip = |part: &str| args.skip.split(',').any(|s| s.trim() == part);
    println!(
        "# blastnet eval — node detector (blastnet-detector {})",
        env!("CARGO_PKG_VERSION")
    );
    println!("data: {}", data.display());
    let mut pairs: Vec<(f64, bool)> = Vec::new();
    let mut confusion = [[0usize; 4]; 4];

    if !skip("synth") {
        synthetic_eval(&args, &cfg, &classifier, &mut pairs, &mut confusion)?;
    }
    match shotspotter(&data, &cfg, &classifier, None) {
        _ if skip("shotspotter") => {}
        Ok(ss) => print_shotspotter(&ss, &mut pairs, &mut confusion),
        Err(e) => println!("\n## ShotSpotter: skipped: {e:#}"),
    }
    match sfx_examples(&data, &cfg, &classifier, |i| i % 3 == 0, 1, 77) {
        Ok(ex) => {
            let right = ex
                .iter()
                .filter(|(e, p)| class_index(p.kind) == Some(e.y))
                .count();
            println!("\n## sounds-dev designed effects (held-out rows, first pick per clip)");
            println!(
                "clips picked: {}   reported kind right: {:.1}%",
                ex.len(),
                100.0 * right as f64 / ex.len().max(1) as f64
            );
            for (e, p) in &ex {
                let got = class_index(p.kind).unwrap_or(3);
                pairs.push((p.confidence, got == e.y));
                confusion[e.y][got] += 1;
            }
        }
        Err(e) => println!("\n## sounds-dev: skipped: {e:#}"),
    }
    if !skip("noise") {
        false_alarms(&data, &args, &cfg, &classifier)?;
    }

    println!("\n## Classification over all evaluation picks above");
    println!("confusion (rows truth, columns decision): explosion gunshot launch other");
    for (k, row) in confusion.iter().enumerate() {
        println!(
            "  {:<16} {:>6} {:>6} {:>6} {:>6}",
            CLASSES[k].as_str(),
            row[0],
            row[1],
            row[2],
            row[3]
        );
    }
    print_reliability(&train::reliability(&pairs));
    Ok(())
}

fn load_config(path: Option<&Path>) -> Result<DetectorConfig> {
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

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BLASTNET_DATA") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

fn argmax(p: &[f64; 4]) -> usize {
    let mut b = 0;
    for k in 1..4 {
        if p[k] > p[b] {
            b = k;
        }
    }
    b
}

fn detect(
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
fn dump() -> bool {
    std::env::var_os("BLASTNET_EVAL_DUMP").is_some()
}

fn dump_pick(label: &str, p: &Pick) {
    let ungated = Classifier::builtin()
        .map(|c| CLASSES[argmax(&c.probs(&p.features.vector()))].as_str())
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

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// The pick closest to `t` within `win` samples.
fn nearest(picks: &[Pick], t: f64, win: f64) -> Option<&Pick> {
    picks
        .iter()
        .filter(|p| (p.onset_index - t).abs() <= win)
        .min_by(|a, b| {
            (a.onset_index - t)
                .abs()
                .total_cmp(&(b.onset_index - t).abs())
        })
}

// ---------------------------------------------------------------- synthetic

const AUDIBLE_DB: f64 = 15.0;

fn synth_spec(fs: f64) -> SceneSpec {
    SceneSpec {
        fs,
        duration_s: 60.0,
        spacing_s: 4.0,
        snr_db: (6.0, 45.0),
        classes: CLASSES.to_vec(),
        noise_rms: 0.02,
    }
}

fn synthetic_eval(
    args: &Args,
    cfg: &DetectorConfig,
    c: &Classifier,
    pairs: &mut Vec<(f64, bool)>,
    confusion: &mut [[usize; 4]; 4],
) -> Result<()> {
    println!(
        "\n## Synthetic scenes (seeds 0..{}, 60 s each, peak SNR 6–45 dB over noise RMS)",
        args.scenes
    );
    println!("audible = peak SNR >= {AUDIBLE_DB} dB; pick error for explosion+gunshot (impulsive fronts)");
    for fs in [12_000u32, 48_000, 96_000] {
        let mut audible = [0usize; 4];
        let mut found = [0usize; 4];
        let mut below = (0usize, 0usize);
        let mut errs20 = Vec::new();
        let mut errs_all = Vec::new();
        let mut within1 = (0usize, 0usize);
        let mut extra = 0usize;
        let mut far = 0usize;
        let mut total_picks = 0usize;
        // Audible blasts picked: (picked, reported as a blast, as the right blast).
        let mut labelled = (0usize, 0usize, 0usize);
        for seed in 0..args.scenes as u64 {
            let sc = synth::scene(seed, &synth_spec(f64::from(fs)));
            let picks = detect(StreamKind::Acoustic, fs, &sc.samples, cfg, c)?;
            total_picks += picks.len();
            // Detection: a pick within 20 ms of the arrival (a reflection or
            // the muzzle blast behind an N-wave may be picked instead).
            let win = 0.020 * f64::from(fs);
            for e in &sc.events {
                let Some(ci) = class_index(e.kind) else {
                    continue;
                };
                let snr = 20.0 * (e.peak / sc.noise_rms).log10();
                // Launch onsets are slow envelopes: match within 0.2 s.
                let w = if e.kind == SourceKind::Launch {
                    0.2 * f64::from(fs)
                } else {
                    win
                };
                let hit = nearest(&picks, e.onset_index, w);
                if let Some(p) = hit.filter(|_| dump()) {
                    dump_pick(&format!("synth:{}", e.kind.as_str()), p);
                }
                if snr >= AUDIBLE_DB {
                    audible[ci] += 1;
                    if hit.is_some() {
                        found[ci] += 1;
                    } else if dump() {
                        eprintln!(
                            "MISS\t{fs}\tseed {seed}\t{}\t{:.3} s\t{snr:.1} dB",
                            e.kind.as_str(),
                            e.onset_index / f64::from(fs)
                        );
                    }
                } else {
                    below.0 += 1;
                    if hit.is_some() {
                        below.1 += 1;
                    }
                }
                if let Some(p) = hit {
                    if matches!(e.kind, SourceKind::Explosion | SourceKind::Gunshot)
                        && (p.onset_index - e.onset_index).abs() > 0.005 * f64::from(fs)
                    {
                        far += 1;
                    }
                    // Scored on what the node reports: its `kind` (after
                    // the isolation gate) and that kind's confidence.
                    let got = class_index(p.kind).unwrap_or(3);
                    confusion[ci][got] += 1;
                    pairs.push((p.confidence, got == ci));
                    if snr >= AUDIBLE_DB && ci < 3 {
                        labelled.0 += 1;
                        labelled.1 += usize::from(got < 3);
                        labelled.2 += usize::from(got == ci);
                    }
                    if matches!(e.kind, SourceKind::Explosion | SourceKind::Gunshot)
                        && (p.onset_index - e.onset_index).abs() <= 0.005 * f64::from(fs)
                    {
                        let err = (p.onset_index - e.onset_index) / f64::from(fs);
                        errs_all.push(err.abs());
                        if snr >= 20.0 {
                            errs20.push(err.abs());
                        }
                        within1.0 += 1;
                        if err.abs() <= p.onset_uncertainty_s {
                            within1.1 += 1;
                        }
                    }
                }
            }
            extra += picks
                .iter()
                .filter(|p| {
                    !sc.events
                        .iter()
                        .any(|e| (p.onset_index - e.onset_index).abs() < 0.5 * f64::from(fs))
                })
                .count();
        }
        let a: usize = audible.iter().sum();
        let f: usize = found.iter().sum();
        println!("\n### {} kHz", f64::from(fs) / 1000.0);
        println!(
            "audible arrivals detected: {f}/{a} = {:.2}%   (explosion {}/{}, gunshot {}/{}, launch {}/{}, other {}/{})",
            100.0 * f as f64 / a.max(1) as f64,
            found[0], audible[0], found[1], audible[1], found[2], audible[2], found[3], audible[3]
        );
        println!("below {AUDIBLE_DB} dB detected: {}/{}", below.1, below.0);
        println!(
            "audible blasts (explosion, gunshot, launch) picked {}: reported as a blast {} ({:.1}%), as the right kind {} ({:.1}%)",
            labelled.0,
            labelled.1,
            100.0 * labelled.1 as f64 / labelled.0.max(1) as f64,
            labelled.2,
            100.0 * labelled.2 as f64 / labelled.0.max(1) as f64
        );
        println!(
            "|pick error| at SNR >= 20 dB: median {:.4} ms, 90th pct {:.4} ms (n = {}); all SNR median {:.4} ms; sample period {:.4} ms",
            1e3 * median(&mut errs20),
            1e3 * pct(&mut errs20, 0.9),
            errs20.len(),
            1e3 * median(&mut errs_all),
            1e3 / f64::from(fs)
        );
        println!("(pick error over picks within 5 ms of the truth; {} explosion/gunshot picks 5–20 ms off)", far);
        println!(
            "stated 1-sigma covers {:.1}% of picks (68% if honest and Gaussian)",
            100.0 * within1.1 as f64 / within1.0.max(1) as f64
        );
        println!("picks {total_picks}, of which {extra} farther than 0.5 s from any source (none expected: sources are >= 2.5 s apart)");
    }
    Ok(())
}

// -------------------------------------------------------------- ShotSpotter

struct SsPulse {
    fp: String,
    ss_snr_db: f64,
    found: Option<(f64, Pick)>,
}

fn read_wav_mono(path: &Path) -> Result<(Vec<f32>, u32)> {
    let mut r = hound::WavReader::open(path)
        .with_context(|| format!("{}: not a readable WAV", path.display()))?;
    let spec = r.spec();
    let ch = usize::from(spec.channels.max(1));
    let all: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: bad float samples", path.display()))?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .with_context(|| format!("{}: bad int samples", path.display()))?
        }
    };
    Ok((all.chunks(ch).map(|c| c[0]).collect(), spec.sample_rate))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

fn json_str<'a>(v: &'a serde_json::Value, field: &str, path: &Path) -> Result<&'a str> {
    v.get(field)
        .and_then(|s| s.as_str())
        .with_context(|| format!("{}: field `{field}`: expected a string", path.display()))
}

/// Run the detector on every released sensor of FP1–FP3 (or only `fps`) and
/// match the grouped pulses.
fn shotspotter(
    data: &Path,
    cfg: &DetectorConfig,
    c: &Classifier,
    fps: Option<&[&str]>,
) -> Result<Vec<SsPulse>> {
    let root = data.join("shotspotter-pittsburgh-dev/data");
    if !root.is_dir() {
        bail!("{} not found", root.display());
    }
    let mut out = Vec::new();
    for fp in fps.unwrap_or(&["FP1", "FP2", "FP3"]) {
        let mut tests: Vec<PathBuf> = std::fs::read_dir(root.join(fp))
            .with_context(|| format!("{}/{fp}", root.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        tests.sort();
        for t in tests {
            let Some(tid) = t.file_name().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            let ap_path = t.join(format!("{tid}.allpulses.json"));
            let nl_path = t.join(format!("{tid}.nlos-tuples.json"));
            let allpulses = read_json(&ap_path)?;
            let tuples = read_json(&nl_path)?;
            let mut grouped = std::collections::HashSet::new();
            for s in tuples
                .as_array()
                .with_context(|| format!("{}: expected an array", nl_path.display()))?
            {
                for u in s
                    .get("pulse_uuids")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(u) = u.as_str() {
                        grouped.insert(u.to_owned());
                    }
                }
            }
            let mut wavs: Vec<PathBuf> = std::fs::read_dir(&t)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wav"))
                .collect();
            wavs.sort();
            for wav in wavs {
                let meta_path = wav.with_extension("json");
                let meta = read_json(&meta_path)?;
                let serial = json_str(&meta, "serial_number", &meta_path)?;
                let start =
                    UtcNs::parse(json_str(&meta, "timestamp", &meta_path)?).map_err(|e| {
                        anyhow::anyhow!("{}: field `timestamp`: {e}", meta_path.display())
                    })?;
                let (x, fs) = read_wav_mono(&wav)?;
                let picks = detect(StreamKind::Acoustic, fs, &x, cfg, c)?;
                for p in allpulses
                    .as_array()
                    .with_context(|| format!("{}: expected an array", ap_path.display()))?
                {
                    let (Some(uuid), Some(sn), Some(at)) = (
                        p.get("pulse_uuid").and_then(|v| v.as_str()),
                        p.get("serial_number").and_then(|v| v.as_str()),
                        p.get("arrival_time_utc").and_then(|v| v.as_str()),
                    ) else {
                        bail!(
                            "{}: a pulse lacks pulse_uuid/serial_number/arrival_time_utc",
                            ap_path.display()
                        );
                    };
                    if sn != serial || !grouped.contains(uuid) {
                        continue;
                    }
                    let arr = UtcNs::parse(at).map_err(|e| {
                        anyhow::anyhow!("{}: arrival_time_utc: {e}", ap_path.display())
                    })?;
                    let idx = arr.secs_since(start) * f64::from(fs);
                    // ShotSpotter's times have 1 ms resolution and mark a zero
                    // crossing at the start of the pulse: match within 10 ms.
                    let hit = nearest(&picks, idx, 0.010 * f64::from(fs))
                        .map(|pk| ((pk.onset_index - idx) / f64::from(fs), pk.clone()));
                    if let Some((_, pk)) = hit.as_ref().filter(|_| dump()) {
                        dump_pick(&format!("ss:{fp}"), pk);
                    }
                    if hit.is_none() && std::env::var_os("BLASTNET_EVAL_DEBUG").is_some() {
                        let nb = nearest(&picks, idx, f64::from(fs) * 10.0)
                            .map(|pk| (pk.onset_index - idx) / f64::from(fs));
                        eprintln!(
                            "miss {tid} {serial} t={:.4}s ss_snr={:?} nearest pick {:?}",
                            idx / f64::from(fs),
                            p.get("signal_to_noise_dB"),
                            nb
                        );
                    }
                    out.push(SsPulse {
                        fp: (*fp).to_owned(),
                        ss_snr_db: p
                            .get("signal_to_noise_dB")
                            .and_then(|v| v.as_f64())
                            .unwrap_or(f64::NAN),
                        found: hit,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn print_shotspotter(
    ss: &[SsPulse],
    pairs: &mut Vec<(f64, bool)>,
    confusion: &mut [[usize; 4]; 4],
) {
    println!("\n## ShotSpotter Pittsburgh FP1–FP3 (grouped pulses on released sensors, match within 10 ms)");
    for fp in ["FP1", "FP2", "FP3"] {
        let v: Vec<&SsPulse> = ss.iter().filter(|p| p.fp == fp).collect();
        let f = v.iter().filter(|p| p.found.is_some()).count();
        println!(
            "{fp}: detected {f}/{} = {:.1}%",
            v.len(),
            100.0 * f as f64 / v.len().max(1) as f64
        );
    }
    let f = ss.iter().filter(|p| p.found.is_some()).count();
    let mut snr_hit: Vec<f64> = ss
        .iter()
        .filter(|p| p.found.is_some())
        .map(|p| p.ss_snr_db)
        .collect();
    let mut snr_miss: Vec<f64> = ss
        .iter()
        .filter(|p| p.found.is_none())
        .map(|p| p.ss_snr_db)
        .collect();
    println!(
        "ShotSpotter's own signal_to_noise_dB: median {:.1} dB for detected pulses, {:.1} dB for missed ones",
        median(&mut snr_hit),
        median(&mut snr_miss)
    );
    for lim in [6.0, 10.0] {
        let v: Vec<&SsPulse> = ss.iter().filter(|p| p.ss_snr_db >= lim).collect();
        let f = v.iter().filter(|p| p.found.is_some()).count();
        println!(
            "  with their SNR >= {lim} dB: detected {f}/{} = {:.1}%",
            v.len(),
            100.0 * f as f64 / v.len().max(1) as f64
        );
    }
    let mut d: Vec<f64> = ss
        .iter()
        .filter_map(|p| p.found.as_ref().map(|x| x.0))
        .collect();
    let mut a: Vec<f64> = d.iter().map(|v| v.abs()).collect();
    println!(
        "all: detected {f}/{} = {:.1}%",
        ss.len(),
        100.0 * f as f64 / ss.len().max(1) as f64
    );
    println!(
        "pick - ShotSpotter arrival: median {:+.2} ms, median |.| {:.2} ms, 90th pct |.| {:.2} ms (their times: 1 ms resolution, zero-crossing convention)",
        1e3 * median(&mut d),
        1e3 * median(&mut a),
        1e3 * pct(&mut a, 0.9)
    );
    let fp3: Vec<&Pick> = ss
        .iter()
        .filter(|p| p.fp == "FP3")
        .filter_map(|p| p.found.as_ref().map(|x| &x.1))
        .collect();
    let g = fp3.iter().filter(|p| p.kind == SourceKind::Gunshot).count();
    println!(
        "FP3 (not trained on): classified gunshot {g}/{} = {:.1}%",
        fp3.len(),
        100.0 * g as f64 / fp3.len().max(1) as f64
    );
    for p in fp3 {
        let got = class_index(p.kind).unwrap_or(3);
        confusion[1][got] += 1;
        pairs.push((p.confidence, got == 1));
    }
}

// ---------------------------------------------------------------- sounds-dev

fn sfx_label(label: &str) -> Option<SourceKind> {
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
fn sfx_examples(
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
                if let Some(y) = class_index(kind) {
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
fn distractors(data: &Path, fs: u32) -> Result<Vec<(String, Vec<f32>)>> {
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
enum Half {
    First,
    Second,
}

/// What [`field_hours`] produced: each pick with its source, and the
/// numbers of distractor stretches and synthetic sounds inserted.
type Field = (Vec<(Pick, String)>, usize, usize);

/// Hours of a node's life without blasts, at 48 kHz: noise whose level
/// (0.005–0.1 Pa) and colour drift, a 2–5 s stretch of a freesound
/// recording in half of the 10 s chunks (faded in and out over 50 ms) and a
/// synthetic other-impulsive sound in a fifth. Every pick the detector makes
/// is returned with what it came from (`noise only`, a recording's name, or
/// `synthetic other-impulsive`), with the counts of what was inserted.
fn field_hours(
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

/// The false-alarm part of the report: field hours from the second halves
/// of the distractors (the training draws from the first halves, with other
/// seeds); every pick reported as a blast is a false blast.
fn false_alarms(data: &Path, args: &Args, cfg: &DetectorConfig, c: &Classifier) -> Result<()> {
    let dist = match distractors(data, 48_000) {
        Ok(d) => d,
        Err(e) => {
            println!("\n## False alarms: freesound distractors unavailable ({e:#}); noise and synthetic distractors only");
            Vec::new()
        }
    };
    let (picks, inserted, synth_other) =
        field_hours(&dist, Half::Second, args.noise_hours, 424_242, cfg, c)?;
    let hours = (args.noise_hours * 360.0).ceil() / 360.0;
    let mut by_kind = [0usize; 4];
    let mut confident = [0usize; 3];
    let mut blame: std::collections::BTreeMap<String, usize> = Default::default();
    for (p, src) in &picks {
        if let Some(k) = class_index(p.kind) {
            by_kind[k] += 1;
        }
        if dump() {
            dump_pick(&format!("fa:{src}"), p);
        }
        if p.kind.is_blast() {
            *blame
                .entry(format!("{src} as {}", p.kind.as_str()))
                .or_default() += 1;
            for (slot, lim) in confident.iter_mut().zip([0.8, 0.9, 0.95]) {
                if p.confidence >= lim {
                    *slot += 1;
                }
            }
        }
    }
    let blasts = by_kind[..3].iter().sum::<usize>();
    println!("\n## False alarms: {hours:.2} h of 48 kHz noise (level drifting 0.005–0.1 Pa, colour varying)");
    println!(
        "with {inserted} freesound distractor stretches (second halves: applause, car, crowd, rain, train, typing) and {synth_other} synthetic other-impulsive sounds"
    );
    println!(
        "picks: {} (explosion {}, gunshot {}, launch {}, other {}); false blast detections: {blasts} = {:.2} per node-hour; non-blast picks {}",
        picks.len(),
        by_kind[0],
        by_kind[1],
        by_kind[2],
        by_kind[3],
        blasts as f64 / hours,
        by_kind[3]
    );
    println!(
        "false blast detections with confidence >= 0.8 / 0.9 / 0.95: {:.1} / {:.1} / {:.1} per node-hour",
        confident[0] as f64 / hours,
        confident[1] as f64 / hours,
        confident[2] as f64 / hours
    );
    if blasts > 0 {
        println!("false blasts by source (within the inserted span + 0.25 s):");
        for (k, v) in &blame {
            println!("  {v:>5}  {k}");
        }
    }
    Ok(())
}

fn print_reliability(bins: &[ReliabilityBin]) {
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

// ----------------------------------------------------------------- training

fn synth_examples(
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
        let sc = synth::scene(seed, &spec);
        let picks = detect(StreamKind::Acoustic, fs, &sc.samples, cfg, c)?;
        for e in &sc.events {
            let w = if e.kind == SourceKind::Launch {
                0.2
            } else {
                0.005
            } * f64::from(fs);
            if let (Some(p), Some(y)) = (nearest(&picks, e.onset_index, w), class_index(e.kind)) {
                out.push(Example {
                    x: p.features.vector(),
                    y,
                });
            }
        }
    }
    Ok(out)
}

/// False blasts per node-hour the training aims the blast threshold at, on
/// its own validation field hours (half the budget of one: the
/// evaluation's field hours are other recordings' stretches and seeds).
const FALSE_BLAST_BUDGET_PER_HOUR: f64 = 0.5;
/// Simulated field hours (first halves of the distractors) in the training
/// set, and for choosing the blast threshold.
const FIELD_TRAIN_HOURS: f64 = 6.0;
/// Synthetic training scenes (30 s each, at 12, 16, 48 and 96 kHz in turn).
const SYNTH_TRAIN_SCENES: u64 = 300;
const FIELD_VALIDATION_HOURS: f64 = 6.0;

fn train_model(data: &Path, out_path: &Path, cfg: &DetectorConfig) -> Result<()> {
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
    // The blast threshold: the lowest at which the validation field hours
    // (other seeds, same first halves) stay within the budget.
    let (val, _, _) = field_hours(
        &dist,
        Half::First,
        FIELD_VALIDATION_HOURS,
        TRAIN_SEED_BASE + 9,
        cfg,
        &c,
    )?;
    let mut pb: Vec<f64> = val
        .iter()
        .map(|(p, _)| fitted.probs(&p.features.vector())[..3].iter().sum())
        .collect();
    pb.sort_by(|a, b| b.total_cmp(a));
    let allowed = (FALSE_BLAST_BUDGET_PER_HOUR * FIELD_VALIDATION_HOURS).floor() as usize;
    // Strictly above the (allowed + 1)-th highest: at most `allowed` pass.
    let threshold = pb
        .get(allowed)
        .map_or(0.5, |&v| (v + 1e-9).min(1.0))
        .max(0.5);
    model.blast_threshold = threshold;
    provenance.push_str(&format!(
        "; blast_threshold {threshold:.6}: at most {FALSE_BLAST_BUDGET_PER_HOUR} false blasts per hour on {FIELD_VALIDATION_HOURS} validation field hours (seed +9)"
    ));
    model.provenance = provenance;
    let fitted = fitted.with_blast_threshold(threshold);
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
        "blast threshold {threshold:.4} ({} of {} validation field picks above it): calibration blasts reported as blasts {reported}/{} = {:.1}%",
        pb.iter().filter(|&&v| v >= threshold).count(),
        pb.len(),
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
