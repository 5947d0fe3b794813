//! Detection speed (`blastnet bench`): the node detector on one 48 kHz
//! acoustic stream, against `aubioonset` (Debian `aubio-tools`) on the same
//! WAV, measured in one run.
//!
//! The WAV (16-bit mono, noise with a blast every 30 s) is written to a
//! temporary directory and removed afterwards unless `keep`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use blastnet_contract::{SourceKind, StreamKind};
use blastnet_detector::{Detector, DetectorConfig};
use blastnet_simulator::scenes::{add_noise, render, Rng};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Length of the test stream, minutes.
    pub minutes: f64,
    /// Sample rate, Hz.
    pub rate: u32,
    /// Skip the aubioonset comparison.
    pub no_aubio: bool,
    /// Keep the WAV (its path is reported).
    pub keep: bool,
}

/// Measure, handing each line of the report to `line` as it is measured.
pub fn run(args: &BenchOptions, mut line: impl FnMut(&str)) -> Result<()> {
    let fs = args.rate;
    let secs = args.minutes * 60.0;
    let dir = std::env::temp_dir().join(format!("blastnet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let wav = dir.join(format!("bench-{}k-{}min.wav", fs / 1000, args.minutes));
    let t = Instant::now();
    let n_events = write_wav(&wav, fs, secs)?;
    line(&format!(
        "wrote {} ({:.0} s, {} Hz, 16-bit mono, {n_events} sources) in {:.1} s",
        wav.display(),
        secs,
        fs,
        t.elapsed().as_secs_f64()
    ));

    // Ours, end to end: WAV decode + detection + classification, one thread.
    let t = Instant::now();
    let (picks, samples) = detect_file(&wav, fs)?;
    let ours = t.elapsed().as_secs_f64();
    line(&format!(
        "blastnet detector (decode + detect + classify): {:.3} s -> {:.0}x real time ({:.1} Msamples/s), {picks} picks",
        ours,
        secs / ours,
        samples as f64 / ours / 1e6
    ));
    // Detection alone on decoded samples (10 minutes, extrapolated rate).
    let core = detect_in_memory(&wav, fs, secs.min(600.0), &mut line)?;
    line(&format!(
        "blastnet detector (detection only, in memory): {:.0}x real time",
        core
    ));

    if !args.no_aubio {
        let t = Instant::now();
        let out = Command::new("aubioonset")
            .arg("-i")
            .arg(&wav)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let aubio = t.elapsed().as_secs_f64();
                let onsets = String::from_utf8_lossy(&o.stdout).lines().count();
                line(&format!(
                    "aubioonset (defaults: hfc, buf 512, hop 256): {:.3} s -> {:.0}x real time, {onsets} onsets",
                    aubio,
                    secs / aubio
                ));
                line(&format!(
                    "ratio: blastnet is {:.1}x faster than aubioonset end to end (both decode the WAV), {:.1}x on detection alone",
                    aubio / ours,
                    aubio / (secs / core)
                ));
            }
            Ok(o) => line(&format!("aubioonset failed with {}", o.status)),
            Err(e) => line(&format!(
                "aubioonset not run ({e}); install with `apt-get install -y aubio-tools`"
            )),
        }
    }
    if args.keep {
        line(&format!("kept {}", wav.display()));
    } else {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("{}: cannot remove", dir.display()))?;
    }
    Ok(())
}

/// Noise (0.02 Pa RMS, full scale = 20 Pa) with one source every 30 s.
fn write_wav(path: &std::path::Path, fs: u32, secs: f64) -> Result<usize> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: fs,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    let chunk = 30 * fs as usize;
    let total = (secs * f64::from(fs)) as usize;
    let mut rng = Rng::new(5000);
    let mut buf = vec![0f32; chunk];
    let mut done = 0;
    let mut events = 0;
    while done < total {
        let len = chunk.min(total - done);
        buf.iter_mut().for_each(|v| *v = 0.0);
        add_noise(&mut rng, 0.02, 0.5, &mut buf[..len]);
        if len > 5 * fs as usize {
            let kind: SourceKind = SourceKind::CLASSIFIED[events % 4];
            let peak = 0.02 * 10f64.powf(rng.range(15.0, 40.0) / 20.0);
            let onset = rng.range(1.0, 3.0);
            render(kind, &mut rng, f64::from(fs), onset, peak, &mut buf[..len]);
            events += 1;
        }
        for &v in &buf[..len] {
            let s = (f64::from(v) / 20.0 * 32767.0)
                .round()
                .clamp(-32768.0, 32767.0) as i16;
            w.write_sample(s)?;
        }
        done += len;
    }
    w.finalize()?;
    Ok(events)
}

fn detector(fs: u32) -> Result<Detector> {
    Ok(Detector::new(
        StreamKind::Acoustic,
        fs,
        &DetectorConfig::default(),
    )?)
}

fn detect_file(path: &std::path::Path, fs: u32) -> Result<(usize, u64)> {
    let mut r =
        hound::WavReader::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut d = detector(fs)?;
    let mut out = Vec::with_capacity(4096);
    let mut block = Vec::with_capacity(4800);
    let scale = 20.0 / 32768.0;
    let mut n_picks = 0;
    for s in r.samples::<i16>() {
        block
            .push(f32::from(s.with_context(|| format!("{}: bad sample", path.display()))?) * scale);
        if block.len() == 4800 {
            d.process(&block, &mut out);
            block.clear();
            n_picks += out.len();
            out.clear();
        }
    }
    d.process(&block, &mut out);
    d.flush(&mut out);
    n_picks += out.len();
    Ok((n_picks, d.samples_seen()))
}

fn detect_in_memory(
    path: &PathBuf,
    fs: u32,
    secs: f64,
    line: &mut impl FnMut(&str),
) -> Result<f64> {
    let r =
        hound::WavReader::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let n = (secs * f64::from(fs)) as usize;
    let x: Vec<f32> = r
        .into_samples::<i16>()
        .take(n)
        .map(|s| s.map(|v| f32::from(v) * (20.0 / 32768.0)))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: bad sample", path.display()))?;
    let mut d = detector(fs)?;
    let mut out = Vec::with_capacity(4096);
    let t = Instant::now();
    for c in x.chunks(4800) {
        d.process(c, &mut out);
        out.clear();
    }
    d.flush(&mut out);
    let el = t.elapsed().as_secs_f64();
    line(&format!("  back end: {:?}", d.stats()));
    Ok(x.len() as f64 / f64::from(fs) / el)
}
