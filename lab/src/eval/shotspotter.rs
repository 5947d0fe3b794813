//! ShotSpotter Pittsburgh FP1–FP3: detection of the pulses ShotSpotter grouped per shot.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use blastnet_contract::{SourceKind, StreamKind, UtcNs};
use blastnet_detector::{Classifier, DetectorConfig, Pick};
use blastnet_recording::import::shotspotter as ss;

use super::{detect, dump, dump_pick, median, nearest, pct};

/// One pulse ShotSpotter grouped into a shot, on a sensor whose audio is released.
#[derive(Debug, Clone)]
pub struct SsPulse {
    /// Firing position (FP1..).
    pub fp: String,
    /// ShotSpotter's own SNR of the pulse, dB (NaN where not given).
    pub ss_snr_db: f64,
    /// (pick − their arrival in s, the pick), when a pick is within 10 ms.
    pub found: Option<(f64, Pick)>,
}

pub(crate) fn read_wav_mono(path: &Path) -> Result<(Vec<f32>, u32)> {
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

/// Run the detector on every released sensor of FP1–FP3 (or only `fps`) and
/// match the grouped pulses.
pub(crate) fn shotspotter(
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
        for t in ss::test_dirs(&root.join(fp))? {
            let tid = t
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (allpulses, tuples) = ss::pulses(&t)?;
            let grouped: HashSet<&str> = tuples
                .iter()
                .flat_map(|s| s.pulse_uuids.iter().map(String::as_str))
                .collect();
            for audio in ss::sensor_audio(&t)? {
                let (x, fs) = read_wav_mono(&audio.wav)?;
                let picks = detect(StreamKind::Acoustic, fs, &x, cfg, c)?;
                for p in &allpulses {
                    if p.serial_number != audio.serial_number
                        || !grouped.contains(p.pulse_uuid.as_str())
                    {
                        continue;
                    }
                    let arr = UtcNs::parse(&p.arrival_time_utc).map_err(|e| {
                        anyhow::anyhow!("{}: {tid}: arrival_time_utc: {e}", t.display())
                    })?;
                    let idx = arr.secs_since(audio.start) * f64::from(fs);
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
                            "miss {tid} {} t={:.4}s ss_snr={:?} nearest pick {:?}",
                            audio.serial_number,
                            idx / f64::from(fs),
                            p.signal_to_noise_db,
                            nb
                        );
                    }
                    out.push(SsPulse {
                        fp: (*fp).to_owned(),
                        ss_snr_db: p.signal_to_noise_db.unwrap_or(f64::NAN),
                        found: hit,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Detection of ShotSpotter's grouped pulses, pulse by pulse.
#[derive(Debug, Clone)]
pub struct ShotSpotterReport {
    /// Every grouped pulse on a released sensor, with the pick matched to it.
    pub pulses: Vec<SsPulse>,
}

impl std::fmt::Display for ShotSpotterReport {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ss = &self.pulses;
        writeln!(out, "\n## ShotSpotter Pittsburgh FP1–FP3 (grouped pulses on released sensors, match within 10 ms)")?;
        for fp in ["FP1", "FP2", "FP3"] {
            let (f, n) = self.detected_by(|p| p.fp == fp);
            writeln!(
                out,
                "{fp}: detected {f}/{n} = {:.1}%",
                100.0 * f as f64 / n.max(1) as f64
            )?;
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
        writeln!(
            out,
        "ShotSpotter's own signal_to_noise_dB: median {:.1} dB for detected pulses, {:.1} dB for missed ones",
        median(&mut snr_hit),
        median(&mut snr_miss)
    )?;
        for lim in [6.0, 10.0] {
            let (f, n) = self.detected_by(|p| p.ss_snr_db >= lim);
            writeln!(
                out,
                "  with their SNR >= {lim} dB: detected {f}/{n} = {:.1}%",
                100.0 * f as f64 / n.max(1) as f64
            )?;
        }
        let mut d: Vec<f64> = ss
            .iter()
            .filter_map(|p| p.found.as_ref().map(|x| x.0))
            .collect();
        let mut a: Vec<f64> = d.iter().map(|v| v.abs()).collect();
        writeln!(
            out,
            "all: detected {f}/{} = {:.1}%",
            ss.len(),
            100.0 * f as f64 / ss.len().max(1) as f64
        )?;
        writeln!(
            out,
        "pick - ShotSpotter arrival: median {:+.2} ms, median |.| {:.2} ms, 90th pct |.| {:.2} ms (their times: 1 ms resolution, zero-crossing convention)",
        1e3 * median(&mut d),
        1e3 * median(&mut a),
        1e3 * pct(&mut a, 0.9)
    )?;
        let fp3: Vec<&Pick> = ss
            .iter()
            .filter(|p| p.fp == "FP3")
            .filter_map(|p| p.found.as_ref().map(|x| &x.1))
            .collect();
        let g = fp3.iter().filter(|p| p.kind == SourceKind::Gunshot).count();
        writeln!(
            out,
            "FP3 (not trained on): classified gunshot {g}/{} = {:.1}%",
            fp3.len(),
            100.0 * g as f64 / fp3.len().max(1) as f64
        )?;
        Ok(())
    }
}

impl ShotSpotterReport {
    /// (detected, grouped) over the pulses that `keep` selects.
    pub fn detected_by(&self, keep: impl Fn(&SsPulse) -> bool) -> (usize, usize) {
        let v: Vec<&SsPulse> = self.pulses.iter().filter(|p| keep(p)).collect();
        (v.iter().filter(|p| p.found.is_some()).count(), v.len())
    }

    /// Score the FP3 picks (not trained on) as gunshots: each one's
    /// (confidence, right) into `pairs`, its decision into `confusion`.
    pub fn score_fp3(&self, pairs: &mut Vec<(f64, bool)>, confusion: &mut [[usize; 4]; 4]) {
        let fp3 = self
            .pulses
            .iter()
            .filter(|p| p.fp == "FP3")
            .filter_map(|p| p.found.as_ref().map(|x| &x.1));
        for p in fp3 {
            let got = p.kind.class_index().unwrap_or(3);
            confusion[1][got] += 1;
            pairs.push((p.confidence, got == 1));
        }
    }
}
