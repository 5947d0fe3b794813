//! One seam for samples: [`SampleSource`] is implemented by live capture
//! (`capture` feature) and by [`ReplaySource`] (a scenario's WAV files), so
//! both feed exactly the same pipeline.

use std::time::{Duration, Instant};

use blastnet_contract::{Geodetic, StreamKind, UtcNs};
use blastnet_recording::{Chunk, Prefetch, Scenario};

use crate::clock::ClockStatus;
use crate::error::NodeError;

/// How fast a replay runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the CPU allows (timestamps are still the recorded ones).
    Fast,
    /// At the recording's pace times `speed` (1.0 = real time).
    RealTime {
        /// Data seconds per wall second.
        speed: f64,
    },
}

/// One stream of a source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamInfo {
    /// Acoustic or seismic.
    pub kind: StreamKind,
    /// Samples per second (nominal).
    pub sample_rate: u32,
}

/// What [`SampleSource::next`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEvent {
    /// `len` samples of `stream` are in the buffer; the first is sample
    /// `first_index` of the stream (counted from the stream's start, over
    /// every segment).
    Samples {
        /// Index into [`SampleSource::streams`].
        stream: usize,
        /// Index of the first sample.
        first_index: u64,
        /// Samples in the buffer.
        len: usize,
    },
    /// The next samples of `stream` do not follow the previous ones (a gap
    /// between recording files, a capture overrun): reset continuity.
    Gap {
        /// Index into [`SampleSource::streams`].
        stream: usize,
    },
    /// Nothing right now (live capture between buffers); call again.
    Idle,
    /// No more samples, ever.
    End,
}

/// A source of samples in physical units. Runs on the pipeline's own
/// thread, so `next` may block (briefly: it should return `Idle` at least
/// every 100 ms so that heartbeats and shutdown are served).
pub trait SampleSource: Send + 'static {
    /// The streams, in a fixed order.
    fn streams(&self) -> Vec<StreamInfo>;
    /// The next block (into `buf`, cleared first) or event.
    fn next(&mut self, buf: &mut Vec<f32>) -> Result<SourceEvent, NodeError>;
    /// UTC of (fractional) sample `index` of `stream`.
    fn utc_of(&self, stream: usize, index: f64) -> UtcNs;
    /// Clock quality now.
    fn clock(&self) -> ClockStatus;
    /// Replay: the data time every stream has been delivered up to. Live: `None` (use the wall clock).
    fn data_time(&self) -> Option<UtcNs>;
    /// Where the sensor is, if the source knows (a replay's manifest).
    fn position(&self) -> Option<Geodetic> {
        None
    }
    /// 1-sigma error of that position along a ray, m, if the source knows.
    fn position_uncertainty_m(&self) -> Option<f64> {
        None
    }
    /// A replayable source's identity: a restart with the same key resumes
    /// (detections already spooled are not spooled again). Live: `None`.
    fn resume_key(&self) -> Option<String> {
        None
    }
    /// Resuming: data up to `t` was processed before, so do not pace it.
    fn skip_pacing_until(&mut self, _t: UtcNs) {}
    /// Capture overruns (samples lost) so far.
    fn overruns(&self) -> u64 {
        0
    }
    /// Read errors so far (a stream that failed is ended, not fatal).
    fn errors(&self) -> u64 {
        0
    }
}

struct ReplayStream {
    reader: Prefetch,
    kind: StreamKind,
    rate: u32,
    /// (index of the segment's first sample, its UTC), in order.
    segments: Vec<(u64, UtcNs)>,
    /// Samples delivered.
    delivered: u64,
    /// UTC of the next sample.
    next_utc: UtcNs,
    ended: bool,
}

/// Replays one node of a scenario with its recorded timestamps.
pub struct ReplaySource {
    streams: Vec<ReplayStream>,
    pace: Pace,
    clock: ClockStatus,
    position: Geodetic,
    position_uncertainty_m: Option<f64>,
    key: String,
    /// Wall instant and data time that pacing counts from.
    anchor: Option<(Instant, UtcNs)>,
    skip_until: Option<UtcNs>,
    errors: u64,
}

/// Seconds of samples per block a replay hands to the pipeline.
const BLOCK_S: f64 = 0.05;

impl ReplaySource {
    /// Open every stream of `node_id` in `scenario`. `uncertainty_s` is the clock
    /// uncertainty reported on its detections (config `clock.replay_uncertainty_s`).
    pub fn new(
        scenario: &Scenario,
        node_id: &str,
        pace: Pace,
        uncertainty_s: f64,
    ) -> Result<ReplaySource, NodeError> {
        let file = scenario
            .manifest_path
            .clone()
            .unwrap_or_else(|| scenario.dir.clone())
            .display()
            .to_string();
        let Some(node) = scenario.manifest.nodes.iter().find(|n| n.id == node_id) else {
            let ids: Vec<&str> = scenario
                .manifest
                .nodes
                .iter()
                .map(|n| n.id.as_str())
                .collect();
            return Err(NodeError::Config {
                file,
                field: "source.scenario_node".into(),
                msg: format!("no node {node_id:?} in the scenario; it has {ids:?}"),
            });
        };
        let mut streams = Vec::new();
        for kind in scenario.stream_kinds(node) {
            if let Some(reader) = scenario.open_stream(node_id, kind)? {
                let start = reader.start_utc();
                let rate = reader.sample_rate();
                // Blocks of BLOCK_S, decoded a few blocks ahead on a thread
                // of their own.
                let block = ((f64::from(rate) * BLOCK_S) as usize).max(1);
                let reader =
                    reader.prefetch(block, 20, 3, &format!("wav-{node_id}-{}", kind.as_str()))?;
                streams.push(ReplayStream {
                    kind,
                    rate,
                    segments: vec![(0, start)],
                    delivered: 0,
                    next_utc: start,
                    ended: false,
                    reader,
                });
            }
        }
        if streams.is_empty() {
            return Err(NodeError::Config {
                file,
                field: "source.scenario_node".into(),
                msg: format!("node {node_id:?} has no stream"),
            });
        }
        let first = streams.iter().map(|s| s.next_utc).min().unwrap_or_default();
        let scenario_id = scenario
            .manifest_path
            .as_deref()
            .and_then(|p| p.canonicalize().ok())
            .unwrap_or_else(|| scenario.dir.clone());
        Ok(ReplaySource {
            streams,
            pace,
            clock: ClockStatus::replay(uncertainty_s),
            position: Geodetic {
                lat: node.lat,
                lon: node.lon,
                alt_m: node.alt_m,
            },
            position_uncertainty_m: node.position_uncertainty_m,
            key: format!(
                "replay:{}:{}:{}:{}",
                scenario.manifest.name,
                scenario_id.display(),
                node_id,
                first
            ),
            anchor: None,
            skip_until: None,
            errors: 0,
        })
    }

    fn pace_until(&mut self, t: UtcNs) {
        let Pace::RealTime { speed } = self.pace else {
            return;
        };
        if let Some(skip) = self.skip_until {
            if t <= skip {
                return;
            }
            self.skip_until = None;
            self.anchor = Some((Instant::now(), skip));
        }
        let (wall0, data0) = *self.anchor.get_or_insert((Instant::now(), t));
        let ahead = t.secs_since(data0) / speed;
        if ahead > 0.0 {
            let due = wall0 + Duration::from_secs_f64(ahead);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
}

impl SampleSource for ReplaySource {
    fn streams(&self) -> Vec<StreamInfo> {
        self.streams
            .iter()
            .map(|s| StreamInfo {
                kind: s.kind,
                sample_rate: s.rate,
            })
            .collect()
    }

    fn next(&mut self, buf: &mut Vec<f32>) -> Result<SourceEvent, NodeError> {
        buf.clear();
        // The stream furthest behind in data time goes next, so streams
        // advance together and detections come out in time order.
        let Some(i) = (0..self.streams.len())
            .filter(|i| !self.streams[*i].ended)
            .min_by_key(|i| self.streams[*i].next_utc)
        else {
            return Ok(SourceEvent::End);
        };
        let s = &mut self.streams[i];
        match s.reader.next_chunk(buf) {
            Ok(Chunk::Samples {
                segment_start,
                first_index,
                len,
            }) => {
                let g = s.delivered;
                let seg_g0 = g - first_index.min(g);
                if s.segments.last().is_none_or(|l| l.1 != segment_start) {
                    s.segments.push((seg_g0, segment_start));
                }
                s.delivered += len as u64;
                s.next_utc = segment_start.at_sample(first_index + len as u64, s.rate);
                let end = s.next_utc;
                self.pace_until(end);
                Ok(SourceEvent::Samples {
                    stream: i,
                    first_index: g,
                    len,
                })
            }
            Ok(Chunk::Discontinuity { gap_ns, .. }) => {
                tracing::warn!(
                    "{} stream: recording gap of {} s; detector restarts",
                    s.kind.as_str(),
                    gap_ns as f64 / 1e9
                );
                s.next_utc = UtcNs(s.next_utc.0 + gap_ns);
                Ok(SourceEvent::Gap { stream: i })
            }
            Ok(Chunk::End) => {
                s.ended = true;
                Ok(if self.streams.iter().all(|s| s.ended) {
                    SourceEvent::End
                } else {
                    SourceEvent::Idle
                })
            }
            Err(e) => {
                tracing::error!("{} stream: {e}; the stream ends here", s.kind.as_str());
                s.ended = true;
                self.errors += 1;
                Ok(SourceEvent::Gap { stream: i })
            }
        }
    }

    fn utc_of(&self, stream: usize, index: f64) -> UtcNs {
        let Some(s) = self.streams.get(stream) else {
            return UtcNs::default();
        };
        let whole = index.floor().max(0.0) as u64;
        let k = s
            .segments
            .partition_point(|seg| seg.0 <= whole)
            .saturating_sub(1);
        let (g0, start) = s.segments[k];
        start
            .at_sample(whole - g0, s.rate)
            .add_secs_f64((index - whole as f64) / s.rate as f64)
    }

    fn clock(&self) -> ClockStatus {
        self.clock
    }

    fn data_time(&self) -> Option<UtcNs> {
        let live = self
            .streams
            .iter()
            .filter(|s| !s.ended)
            .map(|s| s.next_utc)
            .min();
        live.or_else(|| self.streams.iter().map(|s| s.next_utc).max())
    }

    fn position(&self) -> Option<Geodetic> {
        Some(self.position)
    }

    fn position_uncertainty_m(&self) -> Option<f64> {
        self.position_uncertainty_m
    }

    fn resume_key(&self) -> Option<String> {
        Some(self.key.clone())
    }

    fn skip_pacing_until(&mut self, t: UtcNs) {
        self.skip_until = Some(t);
    }

    fn errors(&self) -> u64 {
        self.errors
    }
}
