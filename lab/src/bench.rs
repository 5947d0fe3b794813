//! Detection speed (`blastnet bench`): the node detector on one 48 kHz
//! acoustic stream, against `aubioonset` (Debian `aubio-tools`) on the same
//! WAV, measured in one run.
//!
//! The WAV (16-bit mono, noise with a blast every 30 s) is written to a
//! temporary directory and removed afterwards unless `keep`.
//!
//! Then the real replay, end to end (WAV decoding on a read-ahead thread,
//! the node runtime, the embedded broker, the aggregator), on that WAV as
//! one node, and on a 12-node scenario of it (12 node-hours for an hour:
//! nodes on a 300 m circle hearing the same samples, so every source is at
//! its centre), with the process's CPU time, to show the cores in use.

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

    // The real replay, end to end: one node, then twelve.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (replay_1, _) = replay_wall(&rt, &wav, secs, 1, &mut line)?;
    let scene = dir.join("twelve");
    write_ring_manifest(&scene, &wav, 12)?;
    replay_wall(&rt, &scene, secs, 12, &mut line)?;
    drop(rt);

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
                    "ratio: blastnet replay end to end is {:.1}x faster than aubioonset (both decode the WAV); the detector alone, decoding on the same thread, {:.1}x; detection alone {:.1}x",
                    aubio / replay_1,
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

/// Replay `path` (a WAV or a scenario folder of `nodes` nodes) end to end
/// as `blastnet replay` does, as fast as the CPU allows; report wall and
/// CPU time. Returns (wall, CPU) seconds.
fn replay_wall(
    rt: &tokio::runtime::Runtime,
    path: &std::path::Path,
    secs: f64,
    nodes: usize,
    line: &mut impl FnMut(&str),
) -> Result<(f64, f64)> {
    let opts = crate::replay::ReplayOptions {
        path: path.to_path_buf(),
        broker: None,
        pace: blastnet_node::Pace::Fast,
        http_listen: ([127, 0, 0, 1], 0).into(),
        start_utc: None,
        progress: false,
        linger: std::time::Duration::ZERO,
        aggregator_config: None,
        store: None,
    };
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let out = rt.block_on(crate::replay::run(&opts, |_| {}))?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    line(&format!(
        "blastnet replay end to end, {nodes} node{} ({:.0} node-hours): {wall:.3} s wall -> {:.0}x real time per node-stream; {} detections, {} events; CPU {}",
        if nodes == 1 { "" } else { "s" },
        secs * nodes as f64 / 3600.0,
        secs * nodes as f64 / wall,
        out.detections.len(),
        out.events.len(),
        cpu.map_or("not measured (no /proc/self/stat)".to_string(), |c| format!(
            "{c:.2} s (user + system), {:.2} cores busy on average",
            c / wall
        )),
    ));
    Ok((wall, cpu.unwrap_or(f64::NAN)))
}

/// This process's CPU time (user + system, every thread), seconds, from
/// `/proc/self/stat` (Linux; clock ticks of 1/100 s, USER_HZ on every
/// Linux architecture).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A scenario folder of `n` nodes on a 300 m circle, each with `wav` as
/// its acoustic stream (linked, not copied).
fn write_ring_manifest(dir: &std::path::Path, wav: &std::path::Path, n: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let link = dir.join("stream.wav");
    if std::fs::hard_link(wav, &link).is_err() {
        std::fs::copy(wav, &link).with_context(|| format!("{}: cannot copy", link.display()))?;
    }
    let (lat0, lon0) = (40.44_f64, -79.99_f64);
    let nodes: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let a = std::f64::consts::TAU * i as f64 / n as f64;
            let (e, nn) = (300.0 * a.cos(), 300.0 * a.sin());
            serde_json::json!({
                "id": format!("b{:02}", i + 1),
                "lat": lat0 + nn / 111_320.0,
                "lon": lon0 + e / (111_320.0 * lat0.to_radians().cos()),
                "alt_m": 250.0,
                "streams": [{
                    "file": "stream.wav",
                    "kind": "acoustic",
                    "start_utc": "2024-05-01T00:00:00Z",
                    "sensitivity": 20.0
                }]
            })
        })
        .collect();
    let m = serde_json::json!({
        "format": "blastnet-recording/1",
        "name": "bench-ring",
        "description": "blastnet bench: one WAV heard by every node",
        "nodes": nodes,
    });
    let path = dir.join(blastnet_recording::MANIFEST_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(&m)?)
        .with_context(|| format!("{}: cannot write", path.display()))
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
