//! Real distractor clips read in place from a folder such as `sounds-dev` of
//! the real recordings (`$BLASTNET_DATA/sounds-dev`, not in the repository):
//! its top-level WAV files (everyday sounds), and
//! the rows of `sfx.csv` labelled `other-impulsive` or `non-impulsive`
//! (designed blasts and gunshots there are not distractors and are skipped).

use std::path::{Path, PathBuf};

use blastnet_contract::SourceKind;

use crate::error::SimError;

/// A candidate clip.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipRef {
    /// The WAV file.
    pub path: PathBuf,
    /// How the truth entry classes it.
    pub kind: SourceKind,
}

/// List the usable clips under `dir`, sorted by path (so a seed picks the same ones).
pub fn list_clips(dir: &Path) -> Result<Vec<ClipRef>, SimError> {
    let io = |source| SimError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
        {
            out.push(ClipRef {
                path,
                kind: SourceKind::Unknown,
            });
        }
    }
    let csv = dir.join("sfx.csv");
    if let Ok(text) = std::fs::read_to_string(&csv) {
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            if cols.len() < 4 {
                continue;
            }
            let kind = match cols[3].trim() {
                "other-impulsive" => SourceKind::OtherImpulsive,
                "non-impulsive" => SourceKind::Unknown,
                _ => continue,
            };
            let path = dir.join(cols[0].trim());
            if path.is_file() {
                out.push(ClipRef { path, kind });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    if out.is_empty() {
        return Err(SimError::Distractors {
            path: dir.to_path_buf(),
            message:
                "no WAV files and no usable sfx.csv rows (other-impulsive, non-impulsive) found"
                    .into(),
        });
    }
    Ok(out)
}

/// Read a clip as mono f64 in [-1, 1] with its sample rate.
pub fn read_clip(path: &Path) -> Result<(Vec<f64>, u32), SimError> {
    let wav = |source| SimError::Wav {
        path: path.to_path_buf(),
        source,
    };
    let mut r = hound::WavReader::open(path).map_err(wav)?;
    let spec = r.spec();
    let ch = spec.channels.max(1) as usize;
    let interleaved: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .map(|s| s.map(f64::from))
            .collect::<Result<_, _>>()
            .map_err(wav)?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f64;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f64 * scale))
                .collect::<Result<_, _>>()
                .map_err(wav)?
        }
    };
    let mono = interleaved
        .chunks(ch)
        .map(|c| c.iter().sum::<f64>() / ch as f64)
        .collect();
    Ok((mono, spec.sample_rate))
}

/// Linear-interpolation resampling to `to_hz` (after a moving-average
/// anti-alias when decimating): adequate for background distractors, which
/// carry no timing truth.
pub fn resample(x: &[f64], from_hz: u32, to_hz: u32) -> Vec<f64> {
    if from_hz == to_hz || x.is_empty() {
        return x.to_vec();
    }
    let ratio = from_hz as f64 / to_hz as f64;
    let smoothed: Vec<f64> = if ratio > 1.0 {
        let w = ratio.round().max(1.0) as usize;
        let mut acc = 0.0;
        let mut out = Vec::with_capacity(x.len());
        for i in 0..x.len() {
            acc += x[i];
            if i >= w {
                acc -= x[i - w];
            }
            out.push(acc / w.min(i + 1) as f64);
        }
        out
    } else {
        x.to_vec()
    };
    let n = ((x.len() as f64) / ratio).floor() as usize;
    (0..n)
        .map(|k| {
            let p = k as f64 * ratio;
            let i = p.floor() as usize;
            let f = p - i as f64;
            let a = smoothed[i.min(smoothed.len() - 1)];
            let b = smoothed[(i + 1).min(smoothed.len() - 1)];
            a + (b - a) * f
        })
        .collect()
}
