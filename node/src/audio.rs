//! Audio keeping (off by default, for privacy): snippets around each
//! detection, and/or continuous recording to rotating 32-bit float WAV files
//! listed in a `manifest.json`, so that a night can be replayed later with
//! `blastnet replay <dir>`. Everything kept stays within a disk budget: the
//! oldest files are deleted first (and counted).
//!
//! Failures here never stop the node: they are logged and counted
//! (`audio_errors` in status).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use blastnet_contract::{Geodetic, Manifest, NodeSpec, StreamKind, StreamSpec, UtcNs};

use crate::config::AudioSettings;
use crate::error::NodeError;
use crate::source::StreamInfo;

type Writer = hound::WavWriter<BufWriter<File>>;

struct Segment {
    writer: Writer,
    file: String,
    start_utc: UtcNs,
    frames: u64,
}

struct PendingSnippet {
    seq: u64,
    from: u64,
    to: u64,
    start_utc: UtcNs,
}

struct StreamKeep {
    info: StreamInfo,
    segment: Option<Segment>,
    /// Recent samples for snippets: (index of ring[0], samples).
    ring_start: u64,
    ring: VecDeque<f32>,
    ring_cap: usize,
    pending: Vec<PendingSnippet>,
}

/// Keeps audio as configured. Built only when snippets or continuous recording is on.
pub struct AudioKeeper {
    cfg: AudioSettings,
    node_id: String,
    position: Geodetic,
    streams: Vec<StreamKeep>,
    /// Finished continuous files, in order.
    done: Vec<StreamSpec>,
    errors: u64,
    deleted: u64,
}

fn spec(kind: StreamKind) -> hound::WavSpec {
    let _ = kind;
    hound::WavSpec {
        channels: 1,
        sample_rate: 0,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    }
}

/// `2022-02-08T22:05:13.5Z` → `20220208T220513.500000000Z`, safe in file names.
fn compact(t: UtcNs) -> String {
    let s = t.to_string();
    let (date, rest) = s.split_once('T').unwrap_or((&s, ""));
    let rest = rest.trim_end_matches('Z');
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, ""));
    format!(
        "{}T{}.{:0<9}Z",
        date.replace('-', ""),
        hms.replace(':', ""),
        frac
    )
}

impl AudioKeeper {
    /// `None` when audio keeping is off.
    pub fn new(
        cfg: &AudioSettings,
        node_id: &str,
        position: Geodetic,
        streams: &[StreamInfo],
    ) -> Result<Option<AudioKeeper>, NodeError> {
        if !cfg.snippets && !cfg.continuous {
            return Ok(None);
        }
        fs::create_dir_all(&cfg.dir)
            .map_err(|e| NodeError::io(&cfg.dir, "cannot create audio folder", e))?;
        let keep_s = cfg.snippet_before_s + cfg.snippet_after_s + 2.0;
        Ok(Some(AudioKeeper {
            cfg: cfg.clone(),
            node_id: node_id.to_string(),
            position,
            streams: streams
                .iter()
                .map(|info| StreamKeep {
                    info: *info,
                    segment: None,
                    ring_start: 0,
                    ring: VecDeque::new(),
                    ring_cap: if cfg.snippets {
                        (keep_s * info.sample_rate as f64) as usize
                    } else {
                        0
                    },
                    pending: Vec::new(),
                })
                .collect(),
            done: Vec::new(),
            errors: 0,
            deleted: 0,
        }))
    }

    /// Write errors so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Files deleted to stay within the budget.
    pub fn deleted(&self) -> u64 {
        self.deleted
    }

    fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        self.errors += 1;
        tracing::error!("audio keeping: {what}: {e}");
    }

    /// Samples `first_index..` of `stream`, the first at `t0`.
    pub fn samples(&mut self, stream: usize, first_index: u64, block: &[f32], t0: UtcNs) {
        if stream >= self.streams.len() {
            return;
        }
        if self.cfg.continuous {
            if let Err(e) = self.continuous(stream, block, t0) {
                self.fail("continuous recording", e);
            }
        }
        if self.cfg.snippets {
            let s = &mut self.streams[stream];
            if s.ring.is_empty() || s.ring_start + s.ring.len() as u64 != first_index {
                s.ring.clear();
                s.ring_start = first_index;
            }
            s.ring.extend(block.iter().copied());
            while s.ring.len() > s.ring_cap {
                s.ring.pop_front();
                s.ring_start += 1;
            }
            let end = s.ring_start + s.ring.len() as u64;
            let ready: Vec<PendingSnippet> = {
                let (r, keep) = std::mem::take(&mut s.pending)
                    .into_iter()
                    .partition(|p| p.to <= end);
                s.pending = keep;
                r
            };
            for p in ready {
                if let Err(e) = self.write_snippet(stream, &p) {
                    self.fail("snippet", e);
                }
            }
        }
    }

    fn continuous(
        &mut self,
        stream: usize,
        mut block: &[f32],
        mut t0: UtcNs,
    ) -> Result<(), String> {
        let rate = self.streams[stream].info.sample_rate;
        let seg_frames = (self.cfg.segment_s * rate as f64) as u64;
        while !block.is_empty() {
            if self.streams[stream].segment.is_none() {
                let kind = self.streams[stream].info.kind;
                let file = format!("{}-{}-{}.wav", self.node_id, kind.as_str(), compact(t0));
                let path = self.cfg.dir.join(&file);
                let spec = hound::WavSpec {
                    sample_rate: rate,
                    ..spec(kind)
                };
                let writer = hound::WavWriter::create(&path, spec)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                self.streams[stream].segment = Some(Segment {
                    writer,
                    file,
                    start_utc: t0,
                    frames: 0,
                });
            }
            let seg = self.streams[stream].segment.as_mut().ok_or("no segment")?;
            let room = (seg_frames - seg.frames.min(seg_frames)).max(1) as usize;
            let n = room.min(block.len());
            for &x in &block[..n] {
                seg.writer
                    .write_sample(x)
                    .map_err(|e| format!("{}: {e}", seg.file))?;
            }
            seg.frames += n as u64;
            block = &block[n..];
            t0 = t0.add_secs_f64(n as f64 / rate as f64);
            if seg.frames >= seg_frames {
                self.close_segment(stream)?;
            }
        }
        Ok(())
    }

    fn close_segment(&mut self, stream: usize) -> Result<(), String> {
        let Some(seg) = self.streams[stream].segment.take() else {
            return Ok(());
        };
        seg.writer
            .finalize()
            .map_err(|e| format!("{}: {e}", seg.file))?;
        self.done.push(StreamSpec {
            file: seg.file,
            channel: 0,
            kind: self.streams[stream].info.kind,
            start_utc: seg.start_utc,
            sensitivity: 1.0,
        });
        self.enforce_budget();
        self.write_manifest()
    }

    fn write_manifest(&mut self) -> Result<(), String> {
        self.done.retain(|s| self.cfg.dir.join(&s.file).exists());
        if self.done.is_empty() {
            return Ok(());
        }
        let m = Manifest::new(
            format!("{}-kept", self.node_id),
            format!(
                "audio kept by blastnet node {} (continuous recording)",
                self.node_id
            ),
            vec![NodeSpec {
                id: self.node_id.clone(),
                lat: self.position.lat,
                lon: self.position.lon,
                alt_m: self.position.alt_m,
                position_uncertainty_m: None,
                streams: self.done.clone(),
            }],
        );
        let path = self.cfg.dir.join(blastnet_recording::MANIFEST_FILE);
        let tmp = self.cfg.dir.join("manifest.json.tmp");
        fs::write(&tmp, m.to_json_pretty()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Delete the oldest kept files until the folder is within budget.
    fn enforce_budget(&mut self) {
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> =
            match fs::read_dir(&self.cfg.dir) {
                Ok(rd) => rd
                    .flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "wav"))
                    .filter_map(|e| {
                        let m = e.metadata().ok()?;
                        Some((m.modified().ok()?, m.len(), e.path()))
                    })
                    .collect(),
                Err(e) => return self.fail("budget", e),
            };
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, path) in files {
            if total <= self.cfg.budget_bytes {
                break;
            }
            if self.is_open(&path) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    self.deleted += 1;
                }
                Err(e) => self.fail("budget", format!("{}: {e}", path.display())),
            }
        }
    }

    fn is_open(&self, path: &Path) -> bool {
        self.streams
            .iter()
            .filter_map(|s| s.segment.as_ref())
            .any(|seg| path.file_name().is_some_and(|n| n == seg.file.as_str()))
    }

    /// A detection at (fractional) `index` of `stream`, seq `seq`.
    pub fn detection(&mut self, stream: usize, index: f64, seq: u64, onset_utc: UtcNs) {
        if !self.cfg.snippets || stream >= self.streams.len() {
            return;
        }
        let rate = self.streams[stream].info.sample_rate as f64;
        let before = (self.cfg.snippet_before_s * rate) as u64;
        let from = (index.max(0.0) as u64).saturating_sub(before);
        let to = index.max(0.0) as u64 + (self.cfg.snippet_after_s * rate) as u64;
        let start_utc = onset_utc.add_secs_f64(-((index - from as f64) / rate));
        self.streams[stream].pending.push(PendingSnippet {
            seq,
            from,
            to,
            start_utc,
        });
    }

    fn write_snippet(&mut self, stream: usize, p: &PendingSnippet) -> Result<(), String> {
        let s = &self.streams[stream];
        let from = p.from.max(s.ring_start);
        let to = p.to.min(s.ring_start + s.ring.len() as u64);
        let file = format!(
            "snippet-{}-{:08}-{}-{}.wav",
            self.node_id,
            p.seq,
            s.info.kind.as_str(),
            compact(p.start_utc)
        );
        let path = self.cfg.dir.join(file);
        let spec = hound::WavSpec {
            sample_rate: s.info.sample_rate,
            ..spec(s.info.kind)
        };
        let mut w = hound::WavWriter::create(&path, spec)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for i in from..to {
            let x = s.ring[(i - s.ring_start) as usize];
            w.write_sample(x)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        w.finalize()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.enforce_budget();
        Ok(())
    }

    /// The samples of `stream` stop following on: close its continuous file.
    pub fn gap(&mut self, stream: usize) {
        if stream < self.streams.len() {
            if let Err(e) = self.close_segment(stream) {
                self.fail("continuous recording", e);
            }
            self.streams[stream].ring.clear();
        }
    }

    /// End: write pending snippets with what there is, close files, write the manifest.
    pub fn finish(&mut self) {
        for i in 0..self.streams.len() {
            let pending = std::mem::take(&mut self.streams[i].pending);
            for p in pending {
                if let Err(e) = self.write_snippet(i, &p) {
                    self.fail("snippet", e);
                }
            }
            if let Err(e) = self.close_segment(i) {
                self.fail("continuous recording", e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use blastnet_recording::{Chunk, Scenario};

    #[test]
    fn continuous_recording_replays_sample_exact_with_its_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AudioSettings {
            snippets: true,
            snippet_before_s: 0.1,
            snippet_after_s: 0.1,
            continuous: true,
            segment_s: 1.0,
            budget_bytes: 1 << 30,
            dir: dir.path().to_path_buf(),
            publish_snippets: false,
            snippet_queue: 1,
        };
        let info = StreamInfo {
            kind: StreamKind::Acoustic,
            sample_rate: 1000,
        };
        let pos = Geodetic {
            lat: 1.0,
            lon: 2.0,
            alt_m: 3.0,
        };
        let mut k = AudioKeeper::new(&cfg, "n01", pos, &[info])
            .unwrap()
            .unwrap();
        let t0 = UtcNs::parse("2024-01-01T00:00:00Z").unwrap();
        let signal: Vec<f32> = (0..2500).map(|i| (i as f32 * 0.01).sin() * 3.0).collect();
        for (b, block) in signal.chunks(300).enumerate() {
            let first = (b * 300) as u64;
            k.samples(0, first, block, t0.at_sample(first, 1000));
            if b == 2 {
                k.detection(0, 700.0, 5, t0.at_sample(700, 1000));
            }
        }
        k.finish();
        assert_eq!(k.errors(), 0);
        let sc = Scenario::open(dir.path()).unwrap();
        let mut r = sc
            .open_stream("n01", StreamKind::Acoustic)
            .unwrap()
            .unwrap();
        assert_eq!(r.start_utc(), t0);
        let mut buf = Vec::new();
        let mut back = Vec::new();
        loop {
            match r.next_chunk(&mut buf, 4096).unwrap() {
                Chunk::Samples { .. } => back.extend_from_slice(&buf),
                Chunk::Discontinuity { gap_ns, .. } => panic!("unexpected gap {gap_ns}"),
                Chunk::End => break,
            }
        }
        assert_eq!(back, signal, "float WAV round trip is lossless");
        let snip = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("snippet-n01-00000005")
            })
            .expect("snippet written");
        let s: Vec<f32> = hound::WavReader::open(snip.path())
            .unwrap()
            .samples::<f32>()
            .map(|x| x.unwrap())
            .collect();
        assert_eq!(s, signal[600..800].to_vec());
    }

    #[test]
    fn the_budget_deletes_the_oldest_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AudioSettings {
            snippets: false,
            snippet_before_s: 0.0,
            snippet_after_s: 0.0,
            continuous: true,
            segment_s: 1.0,
            // One 1 s file at 8 kHz f32 is 32 044 bytes: room for two.
            budget_bytes: 70_000,
            dir: dir.path().to_path_buf(),
            publish_snippets: false,
            snippet_queue: 1,
        };
        let info = StreamInfo {
            kind: StreamKind::Seismic,
            sample_rate: 8000,
        };
        let mut k = AudioKeeper::new(&cfg, "n02", Geodetic::default(), &[info])
            .unwrap()
            .unwrap();
        let t0 = UtcNs::parse("2024-01-01T00:00:00Z").unwrap();
        let block = vec![0.5f32; 8000];
        for s in 0..5u64 {
            k.samples(0, s * 8000, &block, t0.at_sample(s * 8000, 8000));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        k.finish();
        assert_eq!(k.deleted(), 3);
        let sc = Scenario::open(dir.path()).unwrap();
        let r = sc.open_stream("n02", StreamKind::Seismic).unwrap().unwrap();
        assert_eq!(
            r.start_utc(),
            t0.at_sample(3 * 8000, 8000),
            "manifest lists only the kept files"
        );
    }
}
