//! The pipeline thread: source → detectors → clock → spool (fsync) →
//! ordered messages to the publisher. Synchronous on purpose: it runs on
//! its own OS thread, off the async runtime, and its order of work is the
//! order of seqs on the wire.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use blastnet_contract::{Detection, Geodetic, NodeState, Snippet, Status, StreamKind, UtcNs};
use blastnet_detector::{Detector, Pick};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::audio::AudioKeeper;
use crate::config::NodeRuntimeConfig;
use crate::error::NodeError;
use crate::snippet::SnippetMaker;
use crate::source::{SampleSource, SourceEvent, StreamInfo};
use crate::spool::Spool;
use crate::state::{PersistedState, ResumePoint, StateStore};

/// Pipeline → publisher, in order.
#[derive(Debug)]
pub(crate) enum PubMsg {
    /// Entry `seq` is in the spool.
    Spooled(u64),
    /// A heartbeat to publish (retained) after every detection before it.
    Status(Box<Status>),
    /// The snippet of a detection already spooled (sent before this):
    /// published after it, best effort (a bounded queue, never ahead of a
    /// detection).
    Snippet(Box<Snippet>),
    /// The source ended (or the node is stopping): publish this last status
    /// (state offline), drain, disconnect.
    End {
        status: Box<Status>,
        /// The source was played to its end (not cancelled).
        completed: bool,
    },
}

/// What the pipeline did, for the summary.
#[derive(Debug, Default, Clone)]
pub(crate) struct PipelineReport {
    pub detections: u64,
    /// Detections that could not be spooled (disk full, seq exhausted): lost.
    pub spool_append_failures: u64,
    /// State saves that failed (disk full): the next start reconciles from the spool.
    pub state_write_failures: u64,
    pub skipped_on_resume: u64,
    pub evictions: u64,
    pub overruns: u64,
    pub source_errors: u64,
    pub data_end: Option<UtcNs>,
    pub completed: bool,
}

struct StreamDet {
    info: StreamInfo,
    det: Detector,
    /// Stream index of the detector's sample 0.
    base: u64,
}

pub(crate) struct Pipeline<S: SampleSource> {
    cfg: NodeRuntimeConfig,
    source: S,
    streams: Vec<StreamDet>,
    spool: Arc<Spool>,
    store: StateStore,
    state: PersistedState,
    resume_active: bool,
    position: Geodetic,
    tx: UnboundedSender<PubMsg>,
    cancel: CancellationToken,
    audio: Option<AudioKeeper>,
    /// Snippets for the snippet topic (`audio.publish_snippets`).
    snippets: Option<SnippetMaker>,
    /// Finished snippets, sent to the publisher at once.
    snips: Vec<Snippet>,
    report: PipelineReport,
    picks: Vec<Pick>,
    // heartbeat bookkeeping
    last_hb_data: Option<UtcNs>,
    last_hb_wall: Option<Instant>,
    last_overruns: u64,
    last_evictions: u64,
    last_errors: u64,
    last_quarantined: u64,
    last_append_failures: u64,
    /// Data time of the first sample (replay): status times never go before it.
    data_start: Option<UtcNs>,
}

impl<S: SampleSource> Pipeline<S> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: NodeRuntimeConfig,
        mut source: S,
        spool: Arc<Spool>,
        store: StateStore,
        mut state: PersistedState,
        position: Geodetic,
        tx: UnboundedSender<PubMsg>,
        cancel: CancellationToken,
    ) -> Result<Self, NodeError> {
        let infos = source.streams();
        let mut streams = Vec::new();
        for info in &infos {
            streams.push(StreamDet {
                info: *info,
                det: new_detector(&cfg, info)?,
                base: 0,
            });
        }
        // Resume: same source, and not finished or finished with detections
        // still waiting in the spool (its drain was cut short: the broker was
        // out of reach) → skip what is already spooled. A finished replay
        // whose detections were all delivered runs again from the start.
        let mut resume_active = false;
        let mut state_saved_at_start = Ok(false);
        match source.resume_key() {
            Some(key) => {
                let waiting = spool.backlog() > 0;
                let same = state
                    .resume
                    .as_ref()
                    .is_some_and(|r| r.key == key && (!r.completed || waiting));
                if same {
                    resume_active = true;
                    if let Some(t) = state
                        .resume
                        .as_ref()
                        .and_then(|r| r.last_onset.values().max().copied())
                    {
                        tracing::info!("resuming replay: detections up to {t} are already spooled");
                        source.skip_pacing_until(t);
                    }
                } else {
                    state.resume = Some(ResumePoint {
                        key,
                        completed: false,
                        last_onset: BTreeMap::new(),
                    });
                    state_saved_at_start = store.save(&state).map(|()| true);
                }
            }
            None => {
                if state.resume.take().is_some() {
                    state_saved_at_start = store.save(&state).map(|()| true);
                }
            }
        }
        let mut report = PipelineReport::default();
        match state_saved_at_start {
            Ok(true) => spool.state_saved(state.seq_next),
            Ok(false) => {}
            Err(e) => {
                // Not fatal: a node on a full disk must still start and drain.
                tracing::error!("{e}; the node goes on with the state in memory");
                report.state_write_failures += 1;
            }
        }
        let audio = AudioKeeper::new(&cfg.audio, &cfg.node_id, position, &infos)?;
        let snippets = cfg.audio.publish_snippets.then(|| {
            let latency: Vec<f64> = streams
                .iter()
                .map(|s| s.det.max_latency_samples() as f64 / f64::from(s.info.sample_rate))
                .collect();
            SnippetMaker::new(&cfg.node_id, &infos, &latency)
        });
        let data_start = source.data_time();
        Ok(Pipeline {
            cfg,
            source,
            streams,
            spool,
            store,
            state,
            resume_active,
            position,
            tx,
            cancel,
            audio,
            snippets,
            snips: Vec::new(),
            report,
            picks: Vec::new(),
            last_hb_data: None,
            last_hb_wall: None,
            last_overruns: 0,
            last_evictions: 0,
            last_errors: 0,
            last_quarantined: 0,
            last_append_failures: 0,
            data_start,
        })
    }

    /// Run until the source ends or `cancel` fires.
    pub fn run(mut self) -> Result<PipelineReport, NodeError> {
        let mut buf: Vec<f32> = Vec::with_capacity(16_384);
        self.heartbeat(false)?;
        let completed = loop {
            if self.cancel.is_cancelled() {
                break false;
            }
            match self.source.next(&mut buf)? {
                SourceEvent::Samples {
                    stream,
                    first_index,
                    len,
                } => {
                    self.samples(stream, first_index, &buf[..len.min(buf.len())])?;
                }
                SourceEvent::Gap { stream } => self.gap(stream)?,
                SourceEvent::Idle => {}
                SourceEvent::End => break true,
            }
            self.heartbeat(false)?;
        };
        if completed {
            for i in 0..self.streams.len() {
                self.picks.clear();
                let mut picks = std::mem::take(&mut self.picks);
                self.streams[i].det.flush(&mut picks);
                self.handle_picks(i, &picks)?;
                self.picks = picks;
            }
            if let Some(m) = self.snippets.as_mut() {
                m.finish(&mut self.snips);
                self.send_snippets();
            }
            if let Some(r) = self.state.resume.as_mut() {
                r.completed = true;
            }
            self.save_state();
            // The final heartbeat: everything up to the end of the data is published.
            self.heartbeat(true)?;
        }
        if let Some(a) = self.audio.as_mut() {
            a.finish();
        }
        self.report.completed = completed;
        self.report.overruns = self.source.overruns();
        self.report.source_errors = self.source.errors();
        self.report.evictions = self.spool.evictions();
        self.report.data_end = self.source.data_time();
        let mut last = self.status(true);
        last.state = NodeState::Offline;
        let _ = self.tx.send(PubMsg::End {
            status: Box::new(last),
            completed,
        });
        Ok(self.report)
    }

    fn samples(&mut self, stream: usize, first_index: u64, block: &[f32]) -> Result<(), NodeError> {
        let Some(sd) = self.streams.get_mut(stream) else {
            return Err(NodeError::Internal(format!(
                "source returned stream {stream} of {}",
                self.streams.len()
            )));
        };
        if sd.base + sd.det.samples_seen() != first_index {
            // Samples were lost (capture overrun): the detector restarts at the new index.
            self.gap(stream)?;
            self.streams[stream].base = first_index;
        }
        let mut picks = std::mem::take(&mut self.picks);
        picks.clear();
        self.streams[stream].det.process(block, &mut picks);
        if let Some(a) = self.audio.as_mut() {
            let t0 = self.source.utc_of(stream, first_index as f64);
            a.samples(stream, first_index, block, t0);
        }
        if let Some(m) = self.snippets.as_mut() {
            m.samples(stream, first_index, block, &mut self.snips);
            self.send_snippets();
        }
        let r = self.handle_picks(stream, &picks);
        self.picks = picks;
        r
    }

    fn gap(&mut self, stream: usize) -> Result<(), NodeError> {
        let Some(sd) = self.streams.get_mut(stream) else {
            return Ok(());
        };
        let mut picks = std::mem::take(&mut self.picks);
        picks.clear();
        sd.det.flush(&mut picks);
        let next_base = sd.base + sd.det.samples_seen();
        let info = sd.info;
        let r = self.handle_picks(stream, &picks);
        self.picks = picks;
        r?;
        self.streams[stream] = StreamDet {
            info,
            det: new_detector(&self.cfg, &info)?,
            base: next_base,
        };
        if let Some(a) = self.audio.as_mut() {
            a.gap(stream);
        }
        if let Some(m) = self.snippets.as_mut() {
            m.gap(stream, &mut self.snips);
            self.send_snippets();
        }
        Ok(())
    }

    fn handle_picks(&mut self, stream: usize, picks: &[Pick]) -> Result<(), NodeError> {
        for p in picks {
            let sd = &self.streams[stream];
            let kind = sd.info.kind;
            let index = sd.base as f64 + p.onset_index;
            let onset_utc = self.source.utc_of(stream, index);
            if self.resume_active {
                let done = self
                    .state
                    .resume
                    .as_ref()
                    .and_then(|r| r.last_onset.get(kind.as_str()))
                    .is_some_and(|last| onset_utc <= *last);
                if done {
                    self.report.skipped_on_resume += 1;
                    continue;
                }
            }
            // A detection that cannot be spooled (seq exhausted, disk
            // full) is lost, logged and counted; the node goes on (it
            // still drains its spool) and spools again once there is room.
            // Its seq is not used: the next detection gets it.
            let spooled = self.state.next_seq().and_then(|(seq, next)| {
                let det = self.detection(seq, kind, onset_utc, p);
                let payload =
                    serde_json::to_vec(&det).map_err(|e| NodeError::Internal(e.to_string()))?;
                self.spool.append(seq, &payload)?;
                Ok((seq, next, det))
            });
            let (seq, next, det) = match spooled {
                Ok(s) => s,
                Err(e) => {
                    self.report.spool_append_failures += 1;
                    tracing::error!(
                        "{e}; {} detection at {onset_utc} not spooled (lost; {} so far)",
                        kind.as_str(),
                        self.report.spool_append_failures
                    );
                    continue;
                }
            };
            self.state.seq_next = next;
            if let Some(r) = self.state.resume.as_mut() {
                r.last_onset.insert(kind.as_str().to_string(), onset_utc);
            }
            self.save_state();
            self.report.detections += 1;
            tracing::debug!(
                "seq {seq}: {} {} at {onset_utc}",
                kind.as_str(),
                det.kind.as_str()
            );
            if let Some(a) = self.audio.as_mut() {
                a.detection(stream, index, seq, onset_utc);
            }
            // The publisher may be gone only if the node is stopping: the entry stays spooled.
            let _ = self.tx.send(PubMsg::Spooled(seq));
            // After `Spooled`: the publisher never has a snippet before its detection.
            if let Some(m) = self.snippets.as_mut() {
                m.detection(stream, index, seq, onset_utc, &mut self.snips);
                self.send_snippets();
            }
        }
        Ok(())
    }

    /// Hand the finished snippets to the publisher (which bounds its queue).
    fn send_snippets(&mut self) {
        for s in self.snips.drain(..) {
            let _ = self.tx.send(PubMsg::Snippet(Box::new(s)));
        }
    }

    /// Save the state; a failure (a full disk) is logged and counted, not
    /// fatal: the spool entry is written, and the next start reconciles
    /// the state from the spool.
    fn save_state(&mut self) {
        match self.store.save(&self.state) {
            Ok(()) => self.spool.state_saved(self.state.seq_next),
            Err(e) => {
                self.report.state_write_failures += 1;
                tracing::error!(
                    "{e}; state not saved (seq_next {} is recovered from the spool at the next start)",
                    self.state.seq_next
                );
            }
        }
    }

    fn detection(&self, seq: u64, stream: StreamKind, onset_utc: UtcNs, p: &Pick) -> Detection {
        Detection {
            onset_uncertainty_s: p.onset_uncertainty_s,
            stream,
            kind: p.kind,
            confidence: p.confidence.clamp(0.0, 1.0),
            peak: p.peak,
            snr_db: p.snr_db,
            duration_s: p.duration_s,
            class_probs: p.class_probs.to_map(),
            site: Some(self.cfg.site.clone()),
            position_uncertainty_m: self.cfg.position_uncertainty_m,
            clipped: p.features.clipped > 0.5,
            ..Detection::new(
                self.cfg.node_id.clone(),
                seq,
                onset_utc,
                self.position,
                self.source.clock().info,
            )
        }
    }

    /// The time up to which every pick has been emitted: the data position
    /// minus the detector's worst-case latency (replay), or now (live).
    fn complete_until(&self, at_end: bool) -> UtcNs {
        match self.source.data_time() {
            Some(t) if at_end => t,
            Some(t) => {
                let lag = self
                    .streams
                    .iter()
                    .map(|s| s.det.max_latency_samples() as f64 / s.info.sample_rate as f64)
                    .fold(0.0, f64::max);
                let t = t.add_secs_f64(-lag);
                self.data_start.map_or(t, |s| t.max(s))
            }
            None => UtcNs::now(),
        }
    }

    fn status(&mut self, at_end: bool) -> Status {
        let clock = self.source.clock();
        let overruns = self.source.overruns();
        let evictions = self.spool.evictions();
        let errors = self.source.errors();
        let quarantined = self.spool.quarantined();
        let append_failures = self.report.spool_append_failures;
        let impaired = !clock.synced
            || overruns > self.last_overruns
            || evictions > self.last_evictions
            || errors > self.last_errors
            || quarantined > self.last_quarantined
            || append_failures > self.last_append_failures;
        self.last_overruns = overruns;
        self.last_evictions = evictions;
        self.last_errors = errors;
        self.last_quarantined = quarantined;
        self.last_append_failures = append_failures;
        let mut counters = BTreeMap::new();
        counters.insert("overruns".into(), overruns);
        counters.insert("spool_evictions".into(), evictions);
        counters.insert("spool_quarantined".into(), quarantined);
        counters.insert("spool_append_failures".into(), append_failures);
        counters.insert(
            "state_write_failures".into(),
            self.report.state_write_failures,
        );
        counters.insert("source_errors".into(), errors);
        counters.insert("clock_steps".into(), clock.steps);
        counters.insert("detections".into(), self.report.detections);
        counters.insert("skipped_on_resume".into(), self.report.skipped_on_resume);
        if let Some(a) = &self.audio {
            counters.insert("audio_errors".into(), a.errors());
            counters.insert("audio_files_deleted".into(), a.deleted());
        }
        let state = if impaired {
            NodeState::Degraded
        } else {
            NodeState::Online
        };
        Status {
            clock: Some(clock.info),
            noise_floor_db: self
                .streams
                .iter()
                .filter(|s| s.det.samples_seen() > 0)
                .map(|s| (s.info.kind.as_str().to_string(), s.det.noise_floor_db()))
                .collect(),
            spool_backlog: self.spool.backlog(),
            counters,
            ..Status::new(
                self.cfg.node_id.clone(),
                state,
                self.complete_until(at_end),
                self.position,
            )
        }
    }

    /// Publish a heartbeat when one is due (every `heartbeat` of data time in
    /// replay, of wall time live), or now if `force`.
    fn heartbeat(&mut self, force: bool) -> Result<(), NodeError> {
        let due = match self.source.data_time() {
            Some(t) => self
                .last_hb_data
                .is_none_or(|l| t.secs_since(l) >= self.cfg.heartbeat.as_secs_f64()),
            None => self
                .last_hb_wall
                .is_none_or(|l| l.elapsed() >= self.cfg.heartbeat),
        };
        if !(due || force) {
            return Ok(());
        }
        self.last_hb_data = self.source.data_time();
        self.last_hb_wall = Some(Instant::now());
        let st = self.status(force);
        let _ = self.tx.send(PubMsg::Status(Box::new(st)));
        Ok(())
    }
}

fn new_detector(cfg: &NodeRuntimeConfig, info: &StreamInfo) -> Result<Detector, NodeError> {
    Detector::new(info.kind, info.sample_rate, &cfg.detector).map_err(|source| {
        NodeError::Detector {
            stream: info.kind.as_str().to_string(),
            source,
        }
    })
}
