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
    /// Rounds of the end-to-end measurements (replay of one node, of twelve,
    /// and aubioonset, interleaved), of which the best and the median are
    /// reported: on a shared machine one run says little.
    pub runs: usize,
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

    // The real replay, end to end (one node, then twelve) and aubioonset,
    // interleaved round by round, so that a change in the machine's load
    // falls on all three alike.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let scene = dir.join("twelve");
    write_ring_manifest(&scene, &wav, 12)?;
    let runs = args.runs.max(1);
    let (mut one, mut twelve, mut aubio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=runs {
        if runs > 1 {
            line(&format!("round {round} of {runs}"));
        }
        one.push(replay_wall(&rt, &wav, secs, 1, &mut line)?);
        twelve.push(replay_wall(&rt, &scene, secs, 12, &mut line)?);
        if !args.no_aubio {
            match run_aubio(&wav) {
                Ok(a) => {
                    line(&format!(
                        "aubioonset (defaults: hfc, buf 512, hop 256): {:.3} s -> {:.0}x real time, {} onsets; other processes kept {} busy",
                        a.wall,
                        secs / a.wall,
                        a.onsets,
                        a.others.map_or("?".into(), |o| format!("{o:.2} cores"))
                    ));
                    aubio.push(a.wall);
                }
                Err(e) => line(&format!("{e:#}")),
            }
        }
    }
    drop(rt);
    summary(&one, &twelve, &aubio, (ours, secs / core), &mut line);
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

/// One end-to-end measurement: wall time, the CPU time of the measured work
/// over it, and the CPU every other process took meanwhile (the machine may
/// be shared: figures taken beside other work say so).
#[derive(Debug, Clone, Copy)]
struct Measured {
    wall: f64,
    /// User and system CPU seconds of the measured work, every thread.
    user: f64,
    system: f64,
    /// Cores kept busy by every other process, on average (`None` without
    /// `/proc/stat`).
    others: Option<f64>,
}

/// Replay `path` (a WAV or a scenario folder of `nodes` nodes) end to end
/// as `blastnet replay` does, as fast as the CPU allows; report wall and
/// CPU time.
fn replay_wall(
    rt: &tokio::runtime::Runtime,
    path: &std::path::Path,
    secs: f64,
    nodes: usize,
    line: &mut impl FnMut(&str),
) -> Result<Measured> {
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
    let before = Ticks::now();
    let t = Instant::now();
    let out = rt.block_on(crate::replay::run(&opts, |_| {}))?;
    let wall = t.elapsed().as_secs_f64();
    let m = Ticks::now().measure(&before, wall, false);
    line(&format!(
        "blastnet replay end to end, {nodes} node{} ({:.0} node-hours): {wall:.3} s wall -> {:.0}x real time per node-stream; {} detections, {} events; CPU {:.2} s user + {:.2} s system = {:.2} cores busy on average; other processes: {}",
        if nodes == 1 { "" } else { "s" },
        secs * nodes as f64 / 3600.0,
        secs * nodes as f64 / wall,
        out.detections.len(),
        out.events.len(),
        m.user,
        m.system,
        (m.user + m.system) / wall,
        cores(m.others),
    ));
    Ok(m)
}

fn cores(c: Option<f64>) -> String {
    c.map_or("not measured".into(), |c| format!("{c:.2} cores"))
}

/// `aubioonset` with its defaults on a WAV: wall time, onsets found, other
/// processes' load meanwhile.
struct Aubio {
    wall: f64,
    onsets: usize,
    others: Option<f64>,
}

fn run_aubio(wav: &std::path::Path) -> Result<Aubio> {
    let before = Ticks::now();
    let t = Instant::now();
    let out = Command::new("aubioonset")
        .arg("-i")
        .arg(wav)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .context("aubioonset not run; install it with `apt-get install -y aubio-tools`")?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        anyhow::bail!("aubioonset failed on {} with {}", wav.display(), out.status);
    }
    let m = Ticks::now().measure(&before, wall, true);
    Ok(Aubio {
        wall,
        onsets: String::from_utf8_lossy(&out.stdout).lines().count(),
        others: m.others,
    })
}

/// CPU clock ticks (USER_HZ: 1/100 s on every Linux architecture) from
/// `/proc`: this process's user and system time, its waited-for
/// children's, and the whole machine's busy time.
#[derive(Debug, Clone, Copy, Default)]
struct Ticks {
    user: f64,
    system: f64,
    children: f64,
    machine_busy: Option<f64>,
}

impl Ticks {
    fn now() -> Ticks {
        let mut t = Ticks::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which is in parentheses:
            // utime, stime, cutime, cstime are fields 14 to 17 of the line.
            if let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) {
                let f: Vec<f64> = rest
                    .split_whitespace()
                    .map(|v| v.parse().unwrap_or(f64::NAN))
                    .collect();
                if let (Some(u), Some(s), Some(cu), Some(cs)) =
                    (f.get(11), f.get(12), f.get(13), f.get(14))
                {
                    (t.user, t.system, t.children) = (*u, *s, cu + cs);
                }
            }
        }
        // "cpu  user nice system idle iowait irq softirq steal ...": busy is
        // all but idle and iowait.
        t.machine_busy = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            let v: Vec<f64> = s
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() >= 5).then(|| v.iter().sum::<f64>() - v[3] - v[4])
        });
        t
    }

    /// What happened since `before`, over `wall` seconds; `child`: the
    /// measured work was a child process waited for (its CPU is in
    /// `children`, all counted as user time), else this process's threads.
    fn measure(&self, before: &Ticks, wall: f64, child: bool) -> Measured {
        let (user, system) = if child {
            (self.children - before.children, 0.0)
        } else {
            (self.user - before.user, self.system - before.system)
        };
        let ours =
            self.user - before.user + self.system - before.system + self.children - before.children;
        let others = self
            .machine_busy
            .zip(before.machine_busy)
            .map(|(a, b)| ((a - b - ours) / 100.0 / wall).max(0.0));
        Measured {
            wall,
            user: user / 100.0,
            system: system / 100.0,
            others,
        }
    }
}

/// Best (least) and median of `v`.
fn best_median(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    };
    (s[0], med)
}

/// The figures issue #18 asks for, over every round: replay end to end
/// against aubioonset (target 10x), and whether twelve nodes keep both
/// cores busy (user time twice the wall time on two idle cores).
fn summary(
    one: &[Measured],
    twelve: &[Measured],
    aubio: &[f64],
    (detector_file_s, detector_core_s): (f64, f64),
    line: &mut impl FnMut(&str),
) {
    let n = one.len();
    let (r1, r1m) = best_median(&one.iter().map(|m| m.wall).collect::<Vec<_>>());
    line(&format!(
        "summary over {n} round{}: replay end to end, 1 node: best {r1:.3} s, median {r1m:.3} s",
        if n == 1 { "" } else { "s" }
    ));
    if !aubio.is_empty() {
        let (a, am) = best_median(aubio);
        line(&format!(
            "  aubioonset on the same WAV: best {a:.3} s, median {am:.3} s; blastnet replay end to end is {:.1}x faster (best against best), {:.1}x (median against median); target 10x",
            a / r1,
            am / r1m
        ));
        line(&format!(
            "  against aubioonset's median: this bench's own one-thread detector with hound's per-sample decoding {:.1}x; detection alone, in memory, {:.1}x",
            am / detector_file_s,
            am / detector_core_s
        ));
    }
    if let Some(b) = twelve.iter().min_by(|a, b| a.wall.total_cmp(&b.wall)) {
        let (w, wm) = best_median(&twelve.iter().map(|m| m.wall).collect::<Vec<_>>());
        line(&format!(
            "  12 nodes, 12 node-hours: wall best {w:.3} s, median {wm:.3} s; the fastest round: {:.2} s user + {:.2} s system, user / wall = {:.2} (2 = both of two cores), other processes: {}; {} cores here",
            b.user,
            b.system,
            b.user / b.wall,
            cores(b.others),
            std::thread::available_parallelism().map_or(0, |p| p.get())
        ));
    }
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
