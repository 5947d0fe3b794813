//! Live capture through ALSA, end to end (`--features capture`; scripts/test
//! always builds with it).
//!
//! There is no sound card in CI and no kernel module (snd-aloop, snd-dummy)
//! can be loaded in a container, so the device is user-space ALSA: a PCM of
//! alsa-lib's `file` plugin over a `null` slave, whose `infile` is a FIFO
//! this test writes. `blastnet node` opens it through cpal like any card
//! (found by its hint description, as `arecord -L` lists it) and every
//! period cpal reads blocks on the FIFO, so the test is the sound card: it
//! delivers a scenario's samples, one period at a time, at the sample rate.
//!
//! - `capture_gives_the_detections_replay_gives_for_the_same_samples`: the
//!   node's detections and snippets from capturing the gunshot scenario's
//!   g1 (48 kHz, 9 detections) equal, bit for bit, those of `blastnet node`
//!   replaying the same WAV, except what comes from the capture clock (the
//!   onset's UTC and the clock fields); the onset's UTC is checked against
//!   the wall time at which the test delivered the first sample, within
//!   the clock uncertainty the node reports.
//! - `overruns_are_counted_when_the_reader_is_stalled`: capturing the
//!   single-blast scenario's n1 (16 kHz), every thread of the node except
//!   cpal's audio thread is stopped (ptrace) while 2 s of audio arrive; the
//!   ring (`source.ring_s` = 0.5 s) keeps the whole periods that fit and the
//!   rest are counted, exactly, as overruns in the node's status, which
//!   turns `degraded`. (The stall stands for what can stop the detection
//!   thread on a field node: an fsync on a slow SD card, a starved CPU.)
//!
//! The FIFO is opened read-write by the test before the node starts (so the
//! plugin's open does not block) and enlarged to 1 MiB. A period is 512
//! two-channel float frames, 4096 bytes = PIPE_BUF, so each write of one
//! period lands atomically (POSIX) and each of the plugin's period reads
//! returns exactly one period (a short read would be padded with the null
//! slave's silence). `source.period_frames` fixes the period for that.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blastnet_contract::{Detection, NodeState, Snippet, StreamKind, UtcNs};
use blastnet_recording::Scenario;
use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use node_common::{Msg, Subscriber};

const NODE: &str = "n1";
/// Frames per period of the test device (`source.period_frames`): with two
/// float channels, PIPE_BUF (4096 bytes), the largest atomic pipe write.
const PERIOD: usize = 512;
/// The PCM's hint description, which `source.device` names.
const DEVICE: &str = "blastnet ALSA test capture";

/// A shipped scenario: one node's microphone on channel 0 of a two-channel
/// test device, another's on channel 1, which the node is told is unused
/// (`channels = ["acoustic", "unused"]`, as with the I2S microphone of
/// hardware/alsa/asound.conf).
struct Input {
    /// A scenario of n1's acoustic stream alone: the replay reference.
    scenario: PathBuf,
    rate: u32,
    /// Interleaved frames as a sound card delivering float samples gives
    /// them: each WAV sample over its full scale.
    frames: Vec<[f32; 2]>,
    acoustic_sensitivity: f64,
    /// UTC of n1's first sample.
    start: UtcNs,
}

fn read_wav(path: &Path) -> (u32, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(spec.channels, 1, "{}: mono expected", path.display());
    let v = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.unwrap()).collect(),
        hound::SampleFormat::Int => {
            let full = (1u64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.unwrap() as f32 / full)
                .collect()
        }
    };
    (spec.sample_rate, v)
}

fn input(dir: &Path, name: &str, node_id: &str, other_id: &str) -> Input {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recordings")
        .join(name);
    let sc = Scenario::open(&shipped).unwrap();
    let acoustic = |id: &str| {
        let node = sc.manifest.nodes.iter().find(|n| n.id == id).unwrap();
        let s = node
            .streams
            .iter()
            .find(|s| s.kind == StreamKind::Acoustic)
            .unwrap();
        (node, s)
    };
    let (node, a) = acoustic(node_id);
    let (_, other) = acoustic(other_id);
    let (rate, v1) = read_wav(&shipped.join(&a.file));
    let (rate2, v2) = read_wav(&shipped.join(&other.file));
    assert_eq!(rate, rate2, "one device: one rate");
    // The reference: the same manifest with n1's acoustic stream alone.
    std::fs::create_dir_all(dir).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped.join("manifest.json")).unwrap()).unwrap();
    // The node under test is called NODE in both runs.
    let mut n = serde_json::to_value(node).unwrap();
    n["id"] = serde_json::json!(NODE);
    n["streams"] = serde_json::json!([serde_json::to_value(a).unwrap()]);
    manifest["nodes"] = serde_json::json!([n]);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::copy(shipped.join(&a.file), dir.join(&a.file)).unwrap();
    Input {
        scenario: dir.to_path_buf(),
        rate,
        frames: v1
            .iter()
            .zip(v2.iter().chain(std::iter::repeat(&0.0)))
            .map(|(a, b)| [*a, *b])
            .collect(),
        acoustic_sensitivity: a.sensitivity,
        start: a.start_utc,
    }
}

/// The ALSA configuration (a self-contained `ALSA_CONFIG_PATH`: the
/// machine's own configuration plays no part) and the FIFO it reads.
struct Device {
    config: PathBuf,
    fifo: File,
}

impl Device {
    fn new(dir: &Path) -> Device {
        let fifo_path = dir.join("capture.fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo_path, rustix::fs::Mode::from(0o600)).unwrap();
        // Read-write: the open does not wait for a reader, and the FIFO never
        // reports end of file to the plugin (which would then deliver the
        // null slave's silence as fast as it is asked).
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo_path)
            .unwrap();
        let size = rustix::pipe::fcntl_setpipe_size(&fifo, 1 << 20).unwrap();
        assert!(size >= 1 << 20, "FIFO of {size} bytes");
        let config = dir.join("asound.conf");
        std::fs::write(
            &config,
            format!(
                r#"pcm.blastnet_test {{
    type file
    slave.pcm {{ type null }}
    file "/dev/null"
    infile "{}"
    format "raw"
    hint {{ show on description "{DEVICE}" }}
}}
"#,
                fifo_path.display()
            ),
        )
        .unwrap();
        Device { config, fifo }
    }

    /// Deliver `frames` (whole periods), one period per period of time from
    /// `t0` + `from` periods on.
    fn play(&mut self, frames: &[[f32; 2]], rate: u32, t0: Instant, from: usize) {
        assert_eq!(frames.len() % PERIOD, 0);
        let mut bytes = Vec::with_capacity(PERIOD * 8);
        for (k, period) in frames.chunks(PERIOD).enumerate() {
            let due = t0 + Duration::from_secs_f64(((from + k) * PERIOD) as f64 / f64::from(rate));
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            bytes.clear();
            for f in period {
                bytes.extend_from_slice(&f[0].to_le_bytes());
                bytes.extend_from_slice(&f[1].to_le_bytes());
            }
            self.fifo.write_all(&bytes).unwrap();
        }
    }

    /// Wait until the node has read everything delivered.
    fn wait_drained(&self, timeout: Duration, what: &str) {
        let t = Instant::now();
        while rustix::io::ioctl_fionread(&self.fifo).unwrap() > 0 {
            assert!(
                t.elapsed() < timeout,
                "{what}: the capture did not read the FIFO within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn capture_config(dir: &Path, input: &Input, port: u16, ring_s: f64) -> PathBuf {
    let sc = Scenario::open(&input.scenario).unwrap();
    let node = &sc.manifest.nodes[0];
    let text = format!(
        r#"node_id = "{NODE}"
site = "test"
[position]
lat = {lat:?}
lon = {lon:?}
alt_m = {alt:?}
uncertainty_m = {u:?}
[mqtt]
url = "mqtt://127.0.0.1:{port}"
keep_alive_s = 30
[status]
heartbeat_s = 1
[state]
dir = "{state}"
[clock]
source = "ntp"
nominal_uncertainty_s = 0.001
max_uncertainty_s = 1.0
[source]
kind = "capture"
device = "{DEVICE}"
sample_rate = {rate}
channels = ["acoustic", "unused"]
acoustic_sensitivity = {sa:?}
ring_s = {ring_s:?}
period_frames = {PERIOD}
"#,
        lat = node.lat,
        lon = node.lon,
        alt = node.alt_m,
        u = node.position_uncertainty_m.unwrap(),
        state = dir.join("state").display(),
        rate = input.rate,
        sa = input.acoustic_sensitivity,
    );
    let p = dir.join("node.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn spawn_capture_node(config: &Path, device: &Device, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(["node", "--config"])
        .arg(config)
        .env("ALSA_CONFIG_PATH", &device.config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Wait for `needle` in the node's log (the node must stay up meanwhile).
fn wait_log(child: &mut Child, log: &Path, needle: &str, timeout: Duration) {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("node exited ({st}) before {needle:?}:\n{text}");
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no {needle:?} in the node's log within {timeout:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM (a systemd stop) and wait for a clean exit.
fn stop(mut child: Child, log: &Path) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let t = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "node did not stop within 20 s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        st.success(),
        "node exited {st}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Detections (first copy of each seq) and snippets by seq.
fn received(msgs: &[Msg]) -> (Vec<Detection>, BTreeMap<u64, Snippet>) {
    let mut dets = BTreeMap::new();
    let mut snips = BTreeMap::new();
    for m in msgs {
        if m.topic == format!("blastnet/test/node/{NODE}/detection") {
            let d: Detection = serde_json::from_slice(&m.payload).unwrap();
            dets.entry(d.seq).or_insert(d);
        } else if m.topic == format!("blastnet/test/node/{NODE}/snippet") {
            let s: Snippet = serde_json::from_slice(&m.payload).unwrap();
            snips.entry(s.seq).or_insert(s);
        }
    }
    (dets.into_values().collect(), snips)
}

/// `blastnet node` replaying the same WAVs (fast): the reference.
fn replay(dir: &Path, input: &Input, port: u16) -> Vec<Msg> {
    std::fs::create_dir_all(dir).unwrap();
    let sub = Subscriber::start(port, "sub-alsa-replay");
    sub.wait_subscribed(1, Duration::from_secs(10));
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"node_id = "{NODE}"
site = "test"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
[state]
dir = "{state}"
[source]
kind = "replay"
path = "{path}"
pace = "fast"
"#,
            state = dir.join("state").display(),
            path = input.scenario.display()
        ),
    )
    .unwrap();
    let log = dir.join("node.log");
    let mut node = Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(["node", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let st = node_common::wait_exit(&mut node, Duration::from_secs(60), &log);
    assert!(
        st.success(),
        "replay failed:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    sub.wait_offline(NODE, Duration::from_secs(10));
    sub.snapshot()
}

#[test]
fn capture_gives_the_detections_replay_gives_for_the_same_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(&tmp.path().join("scenario"), "gunshot", "g1", "g2");
    let broker = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();
    let (want, want_snips) = received(&replay(&tmp.path().join("replay"), &input, broker.port()));
    assert!(!want.is_empty(), "the reference replay detects the blast");

    let dir = tmp.path().join("capture");
    std::fs::create_dir_all(&dir).unwrap();
    let mut device = Device::new(&dir);
    // Whole periods: the last partial one would be padded with silence.
    let n = input.frames.len() / PERIOD * PERIOD;
    assert!(
        want.iter().all(|d| d.onset_utc.secs_since(input.start)
            < (n as f64 - 0.5 * f64::from(input.rate)) / f64::from(input.rate)),
        "every reference detection lies well inside the whole periods played"
    );
    let sub = Subscriber::start(broker.port(), "sub-alsa-capture");
    sub.wait_subscribed(1, Duration::from_secs(10));
    let cfg = capture_config(&dir, &input, broker.port(), 60.0);
    let log = dir.join("node.log");
    let mut node = spawn_capture_node(&cfg, &device, &log);
    wait_log(&mut node, &log, "capturing from", Duration::from_secs(20));
    let t0_wall = UtcNs::now();
    let t0 = Instant::now();
    device.play(&input.frames[..n], input.rate, t0, 0);
    device.wait_drained(Duration::from_secs(10), "capture");
    sub.wait_for("the capture's detections", Duration::from_secs(20), |m| {
        received(m).0.len() >= want.len()
    });
    // Anything more would come within the detector's latency (well under 1 s).
    std::thread::sleep(Duration::from_secs(1));
    stop(node, &log);
    // The broker forwards the last status after the node has gone.
    sub.wait_offline(NODE, Duration::from_secs(10));
    let (got, got_snips) = received(&sub.snapshot());

    assert_eq!(got.len(), want.len(), "capture {got:?}\nreplay {want:?}");
    for (g, w) in got.iter().zip(&want) {
        // The onset's UTC comes from the capture clock (the system time of
        // each period's callback, fitted): the first sample was delivered
        // at t0_wall, so the onset is t0_wall plus its offset in the data,
        // to within 3 sigma of the clock uncertainty the node reports.
        let offset = w.onset_utc.secs_since(input.start);
        let err = g.onset_utc.secs_since(t0_wall) - offset;
        let tol = 3.0 * g.clock.uncertainty_s;
        eprintln!(
            "seq {}: {} at +{offset:.6} s, capture clock error {err:+.6} s (tolerance {tol:.6} s)",
            g.seq,
            g.kind.as_str(),
        );
        assert!(
            err.abs() <= tol,
            "seq {}: capture onset {} is {err:+.6} s from t0 + {offset:.6} s (tolerance {tol:.6} s)",
            g.seq,
            g.onset_utc
        );
        // Everything else is computed from the samples: equal bit for bit.
        let mut g2 = g.clone();
        g2.onset_utc = w.onset_utc;
        g2.clock = w.clock;
        assert_eq!(
            &g2, w,
            "seq {}: the capture's detection differs beyond its time",
            g.seq
        );
    }
    // The snippets hold the same samples (same window, so the same onset
    // sample index), bit for bit.
    assert_eq!(
        got_snips.keys().collect::<Vec<_>>(),
        want_snips.keys().collect::<Vec<_>>()
    );
    for (seq, w) in &want_snips {
        let g = &got_snips[seq];
        assert_eq!(g.stream, w.stream);
        assert_eq!(g.sample_rate_hz, w.sample_rate_hz);
        assert_eq!(
            g.check().unwrap(),
            w.check().unwrap(),
            "snippet {seq}: different samples"
        );
    }
    let last = sub
        .statuses(NODE)
        .into_iter()
        .rev()
        .map(|(s, _)| s)
        .next()
        .unwrap();
    assert_eq!(
        last.counters["overruns"], 0,
        "no overrun with a 60 s ring: {last:?}"
    );
}

/// Stop (ptrace) every thread of `pid` but the one named `keep`.
fn stop_threads_but(pid: u32, keep: &str) -> Vec<Pid> {
    let mut stopped = Vec::new();
    let mut kept = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let name = std::fs::read_to_string(t.join("comm")).unwrap();
        if name.trim_end() == keep {
            kept += 1;
            continue;
        }
        let tid = Pid::from_raw(t.file_name().unwrap().to_str().unwrap().parse().unwrap());
        ptrace::seize(tid, ptrace::Options::empty())
            .unwrap_or_else(|e| panic!("ptrace seize {tid}: {e} (ptrace not permitted here?)"));
        ptrace::interrupt(tid).unwrap();
        waitpid(tid, Some(WaitPidFlag::__WALL)).unwrap();
        stopped.push(tid);
    }
    assert_eq!(kept, 1, "one thread named {keep:?} in the node");
    stopped
}

#[test]
fn overruns_are_counted_when_the_reader_is_stalled() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(&tmp.path().join("scenario"), "single-blast", "n1", "n2");
    let broker = blastnet_broker::EmbeddedBroker::start_on_free_port().unwrap();
    let dir = tmp.path().join("capture");
    std::fs::create_dir_all(&dir).unwrap();
    let mut device = Device::new(&dir);
    let sub = Subscriber::start(broker.port(), "sub-alsa-stall");
    sub.wait_subscribed(1, Duration::from_secs(10));
    let ring_s = 0.5;
    let cfg = capture_config(&dir, &input, broker.port(), ring_s);
    let log = dir.join("node.log");
    let mut node = spawn_capture_node(&cfg, &device, &log);
    wait_log(&mut node, &log, "capturing from", Duration::from_secs(20));
    let periods_per_s = input.rate as usize / PERIOD;
    let before = 2 * periods_per_s;
    let during = 2 * periods_per_s;
    device.play(
        &input.frames[..before * PERIOD],
        input.rate,
        Instant::now(),
        0,
    );
    device.wait_drained(Duration::from_secs(10), "before the stall");
    // The reader takes a period within microseconds (it polls its ring
    // every 5 ms): the ring is empty well before 200 ms.
    std::thread::sleep(Duration::from_millis(200));

    // The reader (and everything else of the node) stalls; cpal's audio
    // thread goes on reading the device and calling back.
    let stopped = stop_threads_but(node.id(), "cpal_alsa_in");
    device.play(
        &input.frames[before * PERIOD..(before + during) * PERIOD],
        input.rate,
        Instant::now(),
        0,
    );
    device.wait_drained(
        Duration::from_secs(10),
        "while the reader is stalled (the audio callback must keep reading)",
    );
    // The callback follows the read at once.
    std::thread::sleep(Duration::from_millis(10));
    for tid in stopped {
        ptrace::detach(tid, None).unwrap();
    }
    // The device goes on 0.25 s later: the resumed reader empties the full
    // ring (0.5 s of audio) in far less, so nothing more is lost.
    let rest = input.frames.len() / PERIOD;
    device.play(
        &input.frames[(before + during) * PERIOD..rest * PERIOD],
        input.rate,
        Instant::now() + Duration::from_millis(250),
        0,
    );
    device.wait_drained(Duration::from_secs(10), "after the stall");
    std::thread::sleep(Duration::from_millis(1500));
    stop(node, &log);
    // The broker forwards the last status after the node has gone.
    sub.wait_offline(NODE, Duration::from_secs(10));

    // The ring holds ring_s of frames; the callback writes whole periods
    // or drops them: it kept as many whole periods as fit, the rest of the
    // stall's periods are overruns (counted in frames).
    let ring_frames = (ring_s * f64::from(input.rate)) as usize;
    let kept = ring_frames / PERIOD;
    let expected = ((during - kept) * PERIOD) as u64;
    let statuses: Vec<_> = sub.statuses(NODE).into_iter().map(|(s, _)| s).collect();
    let last = statuses.last().unwrap();
    assert_eq!(last.state, NodeState::Offline);
    assert_eq!(
        last.counters["overruns"],
        expected,
        "{during} periods of {PERIOD} frames arrived during the stall; the ring holds {kept}: {:?}",
        statuses
            .iter()
            .map(|s| (s.state, s.counters["overruns"]))
            .collect::<Vec<_>>()
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.state == NodeState::Online && s.counters["overruns"] == 0),
        "online before the stall: {statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.state == NodeState::Degraded && s.counters["overruns"] == expected),
        "a heartbeat reports the overruns with state degraded: {statuses:?}"
    );
}
