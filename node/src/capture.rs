//! Live capture with cpal (cargo feature `capture`).
//!
//! Real-time discipline: the audio callback only converts samples to f32
//! physical units and copies them into a pre-allocated lock-free SPSC ring
//! (`rtrb`), plus one timing record per callback (device frame index,
//! frames written, frames dropped, capture time by the system clock) into a
//! second small ring. When a ring is full the whole callback buffer is
//! dropped and counted as an overrun: no lock, no I/O, no allocation.
//!
//! The consumer side ([`CaptureSource`], on the pipeline thread) pops
//! timing records, feeds them to the [`ClockModel`] and de-interleaves the
//! frames into the configured streams. The cpal `Stream` lives on its own
//! thread (it is not `Send` on every platform) and stops when the source is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blastnet_contract::{ClockInfo, ClockSource, StreamKind, UtcNs};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SizedSample};

use crate::clock::{
    parse_chrony_tracking, ChronyTracking, ClockModel, ClockModelConfig, ClockStatus,
};
use crate::config::{CaptureSettings, ClockMode, ClockSettings};
use crate::error::NodeError;
use crate::source::{SampleSource, SourceEvent, StreamInfo};

/// One callback's worth of frames.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    /// Device frame index of the callback's first frame.
    frame: u64,
    /// Frames written to the sample ring.
    written: u32,
    /// System time at which the first frame was captured, ns since the epoch.
    t_ns: i64,
}

struct Shared {
    overruns: AtomicU64,
    stream_errors: AtomicU64,
    stop: AtomicBool,
}

/// Live capture from a sound card (or an ADC exposed as one).
pub struct CaptureSource {
    samples: rtrb::Consumer<f32>,
    timings: rtrb::Consumer<Timing>,
    shared: Arc<Shared>,
    channels: usize,
    /// (device channel, stream kind) per stream.
    map: Vec<(usize, StreamKind)>,
    rate: u32,
    clock: ClockModel,
    clock_cfg: ClockSettings,
    chrony: Arc<Mutex<Option<ChronyTracking>>>,
    /// De-interleaved frames waiting to be handed out: stream, first index, samples.
    pending: Vec<(usize, u64, Vec<f32>)>,
    interleaved: Vec<f32>,
    last_data: Instant,
}

fn find_device(host: &cpal::Host, name: &str) -> Result<cpal::Device, NodeError> {
    if name == "default" {
        return host
            .default_input_device()
            .ok_or_else(|| NodeError::Capture("no default input device".into()));
    }
    let devices = host
        .input_devices()
        .map_err(|e| NodeError::Capture(format!("cannot list input devices: {e}")))?;
    let mut seen = Vec::new();
    for d in devices {
        let desc = d.description().map(|d| d.to_string()).unwrap_or_default();
        if desc.contains(name) {
            return Ok(d);
        }
        seen.push(desc);
    }
    Err(NodeError::Capture(format!(
        "no input device whose description contains {name:?} (config source.device); found {seen:?}"
    )))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

fn build<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut samples: rtrb::Producer<f32>,
    mut timings: rtrb::Producer<Timing>,
    scale: Vec<f32>,
    shared: Arc<Shared>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels).max(1);
    let err_shared = shared.clone();
    let mut frame: u64 = 0;
    device.build_input_stream::<T, _, _>(
        config,
        move |data: &[T], info: &cpal::InputCallbackInfo| {
            let ts = info.timestamp();
            let latency = ts.callback.saturating_duration_since(ts.capture).as_nanos() as i64;
            let frames = data.len() / channels;
            let fits = timings.slots() > 0 && samples.slots() >= frames * channels;
            let written = if fits { frames } else { 0 };
            if fits {
                if let Ok(chunk) = samples.write_chunk_uninit(frames * channels) {
                    chunk.fill_from_iter(
                        data.iter()
                            .enumerate()
                            .map(|(i, s)| f32::from_sample(*s) * scale[i % channels]),
                    );
                }
                let _ = timings.push(Timing {
                    frame,
                    written: written as u32,
                    t_ns: now_ns() - latency,
                });
            } else {
                shared.overruns.fetch_add(frames as u64, Ordering::Relaxed);
            }
            frame += frames as u64;
        },
        move |_e| {
            err_shared.stream_errors.fetch_add(1, Ordering::Relaxed);
        },
        None,
    )
}

impl CaptureSource {
    /// Open the configured device and start capturing.
    pub fn open(cfg: &CaptureSettings, clock: &ClockSettings) -> Result<CaptureSource, NodeError> {
        let channels = cfg.channels.len();
        let ring_frames = (cfg.ring_s * cfg.sample_rate as f64) as usize;
        let (sp, sc) = rtrb::RingBuffer::<f32>::new(ring_frames * channels);
        let (tp, tc) = rtrb::RingBuffer::<Timing>::new(4096);
        let shared = Arc::new(Shared {
            overruns: AtomicU64::new(0),
            stream_errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let scale: Vec<f32> = cfg
            .channels
            .iter()
            .map(|k| match k {
                Some(StreamKind::Acoustic) => cfg.acoustic_sensitivity as f32,
                Some(StreamKind::Seismic) => cfg.seismic_sensitivity as f32,
                None => 0.0,
            })
            .collect();
        let stream_cfg = cpal::StreamConfig {
            channels: channels as u16,
            sample_rate: cfg.sample_rate,
            buffer_size: match cfg.period_frames {
                Some(n) => cpal::BufferSize::Fixed(n),
                None => cpal::BufferSize::Default,
            },
        };
        let device_name = cfg.device.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), NodeError>>();
        let owner_shared = shared.clone();
        // The cpal stream lives on this thread until the source is dropped.
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let host = cpal::default_host();
                let stream = find_device(&host, &device_name).and_then(|dev| {
                    let s = build::<f32>(&dev, stream_cfg, sp, tp, scale, owner_shared.clone())
                        .map_err(|e| NodeError::Capture(format!("device {device_name:?}: {e} (config source.sample_rate / source.channels)")))?;
                    s.play().map_err(|e| NodeError::Capture(format!("cannot start {device_name:?}: {e}")))?;
                    Ok(s)
                });
                match stream {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        while !owner_shared.stop.load(Ordering::Relaxed) {
                            std::thread::park_timeout(Duration::from_millis(200));
                        }
                        drop(s);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| NodeError::Capture(format!("cannot start the capture thread: {e}")))?;
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| {
                NodeError::Capture("the capture device did not start within 10 s".into())
            })??;
        let chrony = Arc::new(Mutex::new(None));
        if clock.mode == ClockMode::Auto {
            spawn_chrony_poller(chrony.clone(), clock.poll, shared.clone());
        }
        let map = cfg
            .channels
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.map(|k| (i, k)))
            .collect();
        Ok(CaptureSource {
            samples: sc,
            timings: tc,
            shared,
            channels,
            map,
            rate: cfg.sample_rate,
            clock: ClockModel::new(
                cfg.sample_rate,
                ClockModelConfig {
                    step_threshold_s: clock.step_threshold_s,
                    ..ClockModelConfig::default()
                },
            ),
            clock_cfg: clock.clone(),
            chrony,
            pending: Vec::new(),
            interleaved: Vec::with_capacity(ring_frames * channels),
            last_data: Instant::now(),
        })
    }
}

fn spawn_chrony_poller(
    out: Arc<Mutex<Option<ChronyTracking>>>,
    every: Duration,
    shared: Arc<Shared>,
) {
    let _ = std::thread::Builder::new()
        .name("chrony".into())
        .spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                let got = std::process::Command::new("chronyc")
                    .args(["-c", "tracking"])
                    .output()
                    .map_err(|e| format!("cannot run chronyc: {e}"))
                    .and_then(|o| parse_chrony_tracking(&String::from_utf8_lossy(&o.stdout)));
                let v = match got {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::warn!("clock: {e}; time sync counts as lost");
                        None
                    }
                };
                *out.lock().unwrap_or_else(|p| p.into_inner()) = v;
                std::thread::sleep(every);
            }
        });
}

impl Drop for CaptureSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

impl SampleSource for CaptureSource {
    fn streams(&self) -> Vec<StreamInfo> {
        self.map
            .iter()
            .map(|(_, kind)| StreamInfo {
                kind: *kind,
                sample_rate: self.rate,
            })
            .collect()
    }

    fn next(&mut self, buf: &mut Vec<f32>) -> Result<SourceEvent, NodeError> {
        buf.clear();
        if let Some((stream, first, samples)) = self.pending.pop() {
            buf.extend_from_slice(&samples);
            return Ok(SourceEvent::Samples {
                stream,
                first_index: first,
                len: samples.len(),
            });
        }
        let waited = Instant::now();
        let t = loop {
            match self.timings.pop() {
                Ok(t) => break t,
                Err(_) if waited.elapsed() < Duration::from_millis(100) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => {
                    if self.last_data.elapsed() > Duration::from_secs(5) {
                        return Err(NodeError::Capture(format!(
                            "no audio for 5 s ({} stream error(s)); the device may have gone",
                            self.shared.stream_errors.load(Ordering::Relaxed)
                        )));
                    }
                    return Ok(SourceEvent::Idle);
                }
            }
        };
        self.last_data = Instant::now();
        let n = t.written as usize * self.channels;
        self.interleaved.resize(n, 0.0);
        self.samples
            .pop_entire_slice(&mut self.interleaved[..n])
            .map_err(|_| NodeError::Internal("capture rings out of step".into()))?;
        self.clock.observe(t.frame, UtcNs(t.t_ns));
        // Stream blocks are handed out in stream order (pop from the back).
        for (s, (ch, _)) in self.map.iter().enumerate().rev() {
            let v: Vec<f32> = self
                .interleaved
                .iter()
                .skip(*ch)
                .step_by(self.channels)
                .copied()
                .collect();
            self.pending.push((s, t.frame, v));
        }
        self.next(buf)
    }

    fn utc_of(&self, _stream: usize, index: f64) -> UtcNs {
        self.clock.utc_of(index).unwrap_or_else(UtcNs::now)
    }

    fn clock(&self) -> ClockStatus {
        let (source, sys_u, synced) = match self.clock_cfg.mode {
            ClockMode::Fixed(s) => (
                s,
                self.clock_cfg.nominal_uncertainty_s,
                s != ClockSource::System,
            ),
            ClockMode::Auto => match *self.chrony.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(t) => (t.source, t.uncertainty_s, t.synced),
                None => (ClockSource::System, self.clock_cfg.max_uncertainty_s, false),
            },
        };
        let fit_u = self
            .clock
            .fit_uncertainty_s(self.clock.observations() as f64);
        let fit_u = if fit_u.is_finite() {
            fit_u
        } else {
            1.0 / self.rate as f64
        };
        let u = (sys_u * sys_u + fit_u * fit_u).sqrt();
        ClockStatus {
            info: ClockInfo {
                source,
                uncertainty_s: u,
            },
            synced: synced && u <= self.clock_cfg.max_uncertainty_s,
            drift_ppm: self.clock.drift_ppm(),
            steps: self.clock.steps(),
        }
    }

    fn data_time(&self) -> Option<UtcNs> {
        None
    }

    fn overruns(&self) -> u64 {
        self.shared.overruns.load(Ordering::Relaxed)
    }

    fn errors(&self) -> u64 {
        self.shared.stream_errors.load(Ordering::Relaxed)
    }
}
