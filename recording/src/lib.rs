//! Recording reader: a scenario folder (SPEC `manifest.json` plus WAV files)
//! or a bare WAV, streamed per node stream in blocks with constant memory.
//!
//! Samples come out as `f32` in physical units (`sensitivity` × full-scale
//! fraction), for every PCM format hound reads (8/16/24/32-bit integer,
//! 32-bit float, WAVE_FORMAT_EXTENSIBLE), any rate, any channel. Each block
//! carries the exact UTC of its first sample, in integer nanoseconds.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use blastnet_contract::{Manifest, NodeSpec, StreamKind, StreamSpec, UtcNs};

pub mod import;
mod riff;
pub mod truth;

pub use riff::WavLayout;

/// File name of a scenario's manifest inside its folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Why a recording could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// The path does not exist or cannot be opened. Check the path.
    #[error("{path}: cannot open: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The manifest is invalid (the message names the field). Fix the manifest.
    #[error(transparent)]
    Manifest(#[from] blastnet_contract::ManifestError),
    /// A WAV file is malformed: `detail` says where and what was expected. Skip this stream.
    #[error("{path}: {detail}")]
    Wav {
        /// The WAV file.
        path: PathBuf,
        /// What was wrong, with the byte offset or field when known.
        detail: String,
    },
    /// A metadata file of an import (JSON beside the audio) is malformed or missing a field.
    #[error("{path}: {detail}")]
    Metadata {
        /// The file or folder.
        path: PathBuf,
        /// What was wrong and what was expected.
        detail: String,
    },
    /// A stream in the manifest does not fit its WAV (missing file, channel out of range).
    #[error("{manifest}: field `{field}`: {detail}")]
    Stream {
        /// The manifest file.
        manifest: PathBuf,
        /// JSON path of the offending field, e.g. `nodes[0].streams[1].channel`.
        field: String,
        /// What was expected.
        detail: String,
    },
}

type Result<T> = std::result::Result<T, RecordingError>;

/// Where the real recordings used by tests and evaluation live (they are
/// not in the repository): `$BLASTNET_DATA`, or `../shared/data` beside the
/// workspace.
pub fn data_dir() -> PathBuf {
    std::env::var_os("BLASTNET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// `sub` inside [`data_dir`], for a test that needs the real recordings.
/// Such a test is `#[ignore = "needs the real recordings in ../shared/data
/// (BLASTNET_DATA)"]`; `scripts/test` runs it when the data directory exists.
///
/// # Panics
///
/// When `sub` is not a folder there: a test that was asked to run on the real
/// data fails, naming what is missing, rather than passing without it.
pub fn require_data(sub: &str) -> PathBuf {
    let p = data_dir().join(sub);
    assert!(
        p.is_dir(),
        "this test needs the real recordings: {} is not a folder; set BLASTNET_DATA to \
         the data directory holding `{sub}` (default: ../shared/data beside the workspace)",
        p.display()
    );
    p
}

/// An opened scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Folder the stream files are relative to.
    pub dir: PathBuf,
    /// The manifest file, or `None` for a bare WAV.
    pub manifest_path: Option<PathBuf>,
    /// The validated manifest (synthesised for a bare WAV).
    pub manifest: Manifest,
}

/// How to interpret a bare WAV (no manifest).
#[derive(Debug, Clone, Default)]
pub struct BareWavOptions {
    /// UTC of the first sample. When `None`, the file's modification time
    /// minus its duration is used (a recorder writes until it stops).
    pub start_utc: Option<UtcNs>,
    /// Node id to give it; default: the file stem.
    pub node_id: Option<String>,
    /// Pa per full scale; default 1.0 (unknown).
    pub sensitivity: Option<f64>,
}

impl Scenario {
    /// Open a scenario folder, a manifest file, or a bare `.wav`.
    pub fn open(path: &Path) -> Result<Scenario> {
        let meta = std::fs::metadata(path).map_err(|source| RecordingError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            return Scenario::from_manifest(&path.join(MANIFEST_FILE));
        }
        let is_wav = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
        if is_wav {
            Scenario::from_bare_wav(path, &BareWavOptions::default())
        } else {
            Scenario::from_manifest(path)
        }
    }

    /// Open and validate a manifest file, and check every stream against its WAV.
    pub fn from_manifest(manifest_path: &Path) -> Result<Scenario> {
        let bytes = std::fs::metadata(manifest_path)
            .map_err(|source| RecordingError::Open {
                path: manifest_path.to_path_buf(),
                source,
            })?
            .len();
        if bytes > blastnet_contract::manifest::MAX_MANIFEST_BYTES {
            return Err(RecordingError::Open {
                path: manifest_path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{bytes} bytes: a manifest is read whole, at most {} MiB",
                        blastnet_contract::manifest::MAX_MANIFEST_BYTES >> 20
                    ),
                ),
            });
        }
        let text =
            std::fs::read_to_string(manifest_path).map_err(|source| RecordingError::Open {
                path: manifest_path.to_path_buf(),
                source,
            })?;
        let manifest = Manifest::from_json(&text, &manifest_path.display().to_string())?;
        let dir = manifest_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let scenario = Scenario {
            dir,
            manifest_path: Some(manifest_path.to_path_buf()),
            manifest,
        };
        scenario.check_streams()?;
        Ok(scenario)
    }

    /// A one-node scenario around a bare WAV: channel 0 acoustic, position unknown (0, 0, 0).
    pub fn from_bare_wav(path: &Path, opts: &BareWavOptions) -> Result<Scenario> {
        let layout = WavLayout::read(path)?;
        let start_utc = match opts.start_utc {
            Some(t) => t,
            None => {
                let modified =
                    std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .map_err(|source| RecordingError::Open {
                            path: path.to_path_buf(),
                            source,
                        })?;
                let end = modified
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| UtcNs(d.as_nanos() as i64))
                    .unwrap_or_default();
                let dur_ns = (layout.frames as i128 * 1_000_000_000
                    / layout.sample_rate.max(1) as i128) as i64;
                UtcNs(end.0 - dur_ns)
            }
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node".into());
        let id: String = opts
            .node_id
            .clone()
            .unwrap_or(stem)
            .chars()
            .map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c })
            .collect();
        let file = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = Manifest::new(
            id.clone(),
            format!("bare WAV {}", path.display()),
            vec![NodeSpec {
                id,
                lat: 0.0,
                lon: 0.0,
                alt_m: 0.0,
                position_uncertainty_m: None,
                streams: vec![StreamSpec {
                    file,
                    channel: 0,
                    kind: StreamKind::Acoustic,
                    start_utc,
                    sensitivity: opts.sensitivity.unwrap_or(1.0),
                }],
            }],
        );
        Ok(Scenario {
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            manifest_path: None,
            manifest,
        })
    }

    fn manifest_name(&self) -> PathBuf {
        self.manifest_path
            .clone()
            .unwrap_or_else(|| self.dir.clone())
    }

    /// Every stream's file exists, is a readable WAV, and has the channel named.
    fn check_streams(&self) -> Result<()> {
        for (i, node) in self.manifest.nodes.iter().enumerate() {
            for (j, s) in node.streams.iter().enumerate() {
                let path = self.dir.join(&s.file);
                if !path.is_file() {
                    return Err(RecordingError::Stream {
                        manifest: self.manifest_name(),
                        field: format!("nodes[{i}].streams[{j}].file"),
                        detail: format!("expected a WAV file at {}, found none", path.display()),
                    });
                }
                let layout = WavLayout::read(&path)?;
                if s.channel >= layout.channels {
                    return Err(RecordingError::Stream {
                        manifest: self.manifest_name(),
                        field: format!("nodes[{i}].streams[{j}].channel"),
                        detail: format!(
                            "channel {} is out of range: {} has {} channel(s) (0..{})",
                            s.channel,
                            path.display(),
                            layout.channels,
                            layout.channels - 1
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The kinds of stream a node has, in first-listed order.
    pub fn stream_kinds(&self, node: &NodeSpec) -> Vec<StreamKind> {
        let mut kinds = Vec::new();
        for s in &node.streams {
            if !kinds.contains(&s.kind) {
                kinds.push(s.kind);
            }
        }
        kinds
    }

    /// Open the stream of `kind` of node `node_id`: all its files in time order.
    /// `Ok(None)` if the node has no such stream.
    pub fn open_stream(&self, node_id: &str, kind: StreamKind) -> Result<Option<StreamReader>> {
        let Some(node) = self.manifest.nodes.iter().find(|n| n.id == node_id) else {
            return Ok(None);
        };
        let mut specs: Vec<StreamSpec> = node
            .streams
            .iter()
            .filter(|s| s.kind == kind)
            .cloned()
            .collect();
        if specs.is_empty() {
            return Ok(None);
        }
        specs.sort_by_key(|s| s.start_utc);
        StreamReader::new(&self.dir, specs).map(Some)
    }
}

/// A block of samples and where it sits in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// `len` samples were written into the caller's buffer. Sample `k` of the
    /// block is at `segment_start.at_sample(first_index + k, rate)`.
    Samples {
        /// UTC of sample 0 of the current continuous segment.
        segment_start: UtcNs,
        /// Index (within the segment) of the block's first sample.
        first_index: u64,
        /// Samples in the block.
        len: usize,
    },
    /// The next file does not start where the previous one ended: a gap
    /// (positive) or overlap (negative) of `gap_ns`. A new segment begins;
    /// the caller should reset state that assumes continuity.
    Discontinuity {
        /// The file that starts the new segment (index into the stream's files).
        file_index: usize,
        /// Start of the new file minus end of the previous one, ns.
        gap_ns: i64,
    },
    /// No more samples.
    End,
}

/// Streams one node stream (one channel of one or more consecutive WAV files).
pub struct StreamReader {
    dir: PathBuf,
    specs: Vec<StreamSpec>,
    kind: StreamKind,
    rate: u32,
    file_index: usize,
    current: Option<OpenWav>,
    segment_start: UtcNs,
    index_in_segment: u64,
    pending_gap: Option<(usize, i64)>,
}

struct OpenWav {
    path: PathBuf,
    /// The file, positioned in its data chunk.
    file: File,
    /// How each sample is stored.
    format: SampleCoding,
    /// Bytes of one frame (every channel).
    frame_bytes: usize,
    /// Byte offset of the wanted channel within a frame.
    offset: usize,
    scale: f32,
    frames_total: u64,
    frames_read: u64,
    /// Samples per second.
    rate: u32,
    /// Raw bytes of the block being decoded (reused).
    raw: Vec<u8>,
}

impl StreamReader {
    fn new(dir: &Path, specs: Vec<StreamSpec>) -> Result<StreamReader> {
        let kind = specs[0].kind;
        let first = OpenWav::open(&dir.join(&specs[0].file), &specs[0])?;
        let rate = first.rate;
        Ok(StreamReader {
            dir: dir.to_path_buf(),
            segment_start: specs[0].start_utc,
            specs,
            kind,
            rate,
            file_index: 0,
            current: Some(first),
            index_in_segment: 0,
            pending_gap: None,
        })
    }

    /// Samples per second.
    pub fn sample_rate(&self) -> u32 {
        self.rate
    }

    /// Acoustic or seismic.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// UTC of the first sample of the stream.
    pub fn start_utc(&self) -> UtcNs {
        self.specs[0].start_utc
    }

    /// Total samples over all files.
    pub fn total_samples(&self) -> Result<u64> {
        let mut n = 0;
        for s in &self.specs {
            n += WavLayout::read(&self.dir.join(&s.file))?.frames;
        }
        Ok(n)
    }

    /// Read up to `max` samples into `buf` (cleared first; its capacity is
    /// reused, so a steady caller allocates nothing).
    pub fn next_chunk(&mut self, buf: &mut Vec<f32>, max: usize) -> Result<Chunk> {
        buf.clear();
        if let Some((file_index, gap_ns)) = self.pending_gap.take() {
            return Ok(Chunk::Discontinuity { file_index, gap_ns });
        }
        loop {
            let Some(cur) = self.current.as_mut() else {
                return Ok(Chunk::End);
            };
            let n = cur.read(buf, max)?;
            if n > 0 {
                let first_index = self.index_in_segment;
                self.index_in_segment += n as u64;
                return Ok(Chunk::Samples {
                    segment_start: self.segment_start,
                    first_index,
                    len: n,
                });
            }
            // This file is done: move to the next one.
            let end = self
                .segment_start
                .at_sample(self.index_in_segment, self.rate);
            self.file_index += 1;
            if self.file_index >= self.specs.len() {
                self.current = None;
                return Ok(Chunk::End);
            }
            let spec = self.specs[self.file_index].clone();
            let path = self.dir.join(&spec.file);
            let next = OpenWav::open(&path, &spec)?;
            let rate = next.rate;
            if rate != self.rate {
                return Err(RecordingError::Wav {
                    path,
                    detail: format!(
                        "sample rate {rate} Hz differs from the stream's earlier files ({} Hz); expected one rate per stream",
                        self.rate
                    ),
                });
            }
            self.current = Some(next);
            let gap_ns = spec.start_utc.0 - end.0;
            // Within half a sample counts as continuous (file boundaries are whole samples).
            let half_sample_ns = 500_000_000 / self.rate as i64;
            if gap_ns.abs() > half_sample_ns {
                self.segment_start = spec.start_utc;
                self.index_in_segment = 0;
                return Ok(Chunk::Discontinuity {
                    file_index: self.file_index,
                    gap_ns,
                });
            }
        }
    }
}

impl StreamReader {
    /// This reader on a thread of its own that decodes ahead (up to `depth`
    /// batches of `batch` blocks of `block` samples), so that reading and
    /// decoding a recording overlap with whatever the caller does with the
    /// samples (replay's detector): the same chunks, in the same order, as
    /// `next_chunk` with `max = block` would give. A batch is read from the
    /// file in one go and handed over in one message, then cut into blocks.
    pub fn prefetch(
        self,
        block: usize,
        batch: usize,
        depth: usize,
        name: &str,
    ) -> Result<Prefetch> {
        let block = block.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Result<Chunk>, Vec<f32>)>(depth.max(1));
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<f32>>();
        let path = self.dir.clone();
        let mut reader = self;
        let max = block * batch.max(1);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || loop {
                let mut buf = back_rx.try_recv().unwrap_or_default();
                let r = reader.next_chunk(&mut buf, max);
                let last = !matches!(r, Ok(Chunk::Samples { .. } | Chunk::Discontinuity { .. }));
                // The receiver gone (the replay stopped): stop too.
                if tx.send((r, buf)).is_err() || last {
                    return;
                }
            })
            .map_err(|source| RecordingError::Open { path, source })?;
        Ok(Prefetch {
            rx,
            back: back_tx,
            block,
            batch: Vec::new(),
            at: 0,
            segment_start: UtcNs(0),
            first_index: 0,
        })
    }
}

/// A [`StreamReader`] decoding ahead on its own thread
/// ([`StreamReader::prefetch`]).
pub struct Prefetch {
    rx: std::sync::mpsc::Receiver<(Result<Chunk>, Vec<f32>)>,
    back: std::sync::mpsc::Sender<Vec<f32>>,
    block: usize,
    /// The batch being cut into blocks, and how far.
    batch: Vec<f32>,
    at: usize,
    /// Where the batch sits: its segment, and the index of its first sample.
    segment_start: UtcNs,
    first_index: u64,
}

impl Prefetch {
    /// The next chunk of at most the block size; its samples in `buf`.
    /// After the end, or an error, `Chunk::End`.
    pub fn next_chunk(&mut self, buf: &mut Vec<f32>) -> Result<Chunk> {
        buf.clear();
        loop {
            if self.at < self.batch.len() {
                let len = self.block.min(self.batch.len() - self.at);
                buf.extend_from_slice(&self.batch[self.at..self.at + len]);
                let first_index = self.first_index + self.at as u64;
                self.at += len;
                return Ok(Chunk::Samples {
                    segment_start: self.segment_start,
                    first_index,
                    len,
                });
            }
            let Ok((r, v)) = self.rx.recv() else {
                return Ok(Chunk::End);
            };
            let done = std::mem::replace(&mut self.batch, v);
            let _ = self.back.send(done);
            self.at = 0;
            match r {
                Ok(Chunk::Samples {
                    segment_start,
                    first_index,
                    ..
                }) => {
                    self.segment_start = segment_start;
                    self.first_index = first_index;
                }
                other => {
                    self.batch.clear();
                    return other;
                }
            }
        }
    }
}

/// How a sample is stored in the data chunk (little-endian, as WAV is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleCoding {
    /// 8-bit unsigned, offset 128.
    U8,
    I16,
    /// 24 bits in 3 bytes.
    I24,
    /// 24 bits in the low 3 bytes of 4.
    I24In32,
    I32,
    F32,
}

/// Append channel sample at byte `offset` of every `frame_bytes`-byte frame
/// of `raw`, times `scale`, to `buf`: one loop per coding, with no
/// per-sample branch, so that the compiler can vectorise it. An integer
/// sample is taken as its signed value, as hound returns it.
fn decode_into(
    buf: &mut Vec<f32>,
    raw: &[u8],
    frame_bytes: usize,
    offset: usize,
    coding: SampleCoding,
    scale: f32,
) {
    // Mono 16-bit and float, the common cases: written in place over a
    // zipped slice of constant-size chunks, so the bounds checks go and the
    // loop vectorises. (`extend` from a mapped `chunks_exact` did not: it
    // took half the read-ahead thread's time on a 16-bit hour.)
    match (coding, frame_bytes) {
        (SampleCoding::I16, 2) => {
            let start = buf.len();
            buf.resize(start + raw.len() / 2, 0.0);
            for (o, b) in buf[start..].iter_mut().zip(raw.chunks_exact(2)) {
                *o = f32::from(i16::from_le_bytes([b[0], b[1]])) * scale;
            }
            return;
        }
        (SampleCoding::F32, 4) => {
            let start = buf.len();
            buf.resize(start + raw.len() / 4, 0.0);
            for (o, b) in buf[start..].iter_mut().zip(raw.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * scale;
            }
            return;
        }
        _ => {}
    }
    let frames = raw.chunks_exact(frame_bytes).map(|f| &f[offset..]);
    match coding {
        SampleCoding::U8 => buf.extend(frames.map(|b| (i32::from(b[0]) - 128) as f32 * scale)),
        SampleCoding::I16 => {
            buf.extend(frames.map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) * scale))
        }
        SampleCoding::I24 | SampleCoding::I24In32 => buf.extend(
            frames.map(|b| (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 * scale),
        ),
        SampleCoding::I32 => {
            buf.extend(frames.map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 * scale))
        }
        SampleCoding::F32 => {
            buf.extend(frames.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * scale))
        }
    }
}

impl OpenWav {
    /// hound reads and checks the header; the samples are then read in
    /// large blocks straight from the data chunk and converted in one pass
    /// (hound's per-sample reads dominated a replay's time: issue #18),
    /// giving the same values hound would.
    fn open(path: &Path, spec: &StreamSpec) -> Result<OpenWav> {
        let layout = WavLayout::read(path)?;
        let reader = hound::WavReader::open(path).map_err(|e| wav_err(path, e))?;
        let hs = reader.spec();
        drop(reader);
        let channels = hs.channels as usize;
        if spec.channel as usize >= channels {
            return Err(RecordingError::Wav {
                path: path.to_path_buf(),
                detail: format!(
                    "channel {} requested but the file has {channels} channel(s)",
                    spec.channel
                ),
            });
        }
        let float = hs.sample_format == hound::SampleFormat::Float;
        let frame_bytes = layout.block_align as usize;
        let width = frame_bytes / channels.max(1);
        let format = match (float, width, hs.bits_per_sample) {
            (false, 1, 8) => SampleCoding::U8,
            (false, 2, 16) => SampleCoding::I16,
            (false, 3, 24) => SampleCoding::I24,
            (false, 4, 24) => SampleCoding::I24In32,
            (false, 4, 32) => SampleCoding::I32,
            (true, 4, 32) => SampleCoding::F32,
            (_, w, bits) => {
                return Err(RecordingError::Wav {
                    path: path.to_path_buf(),
                    detail: format!(
                        "unsupported WAV encoding: {bits}-bit {} samples in {w}-byte containers; expected PCM integer 8/16/24/32-bit or 32-bit float",
                        if float { "float" } else { "integer" }
                    ),
                })
            }
        };
        let full_scale = if float {
            1.0
        } else {
            (1u64 << (hs.bits_per_sample - 1)) as f64
        };
        let open_err = |source| RecordingError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(open_err)?;
        file.seek(SeekFrom::Start(layout.data_offset))
            .map_err(open_err)?;
        Ok(OpenWav {
            path: path.to_path_buf(),
            file,
            format,
            frame_bytes,
            offset: spec.channel as usize * width,
            frames_total: layout.frames,
            scale: (spec.sensitivity / full_scale) as f32,
            frames_read: 0,
            rate: hs.sample_rate,
            raw: Vec::new(),
        })
    }

    fn read(&mut self, buf: &mut Vec<f32>, max: usize) -> Result<usize> {
        let want = (max as u64).min(self.frames_total - self.frames_read) as usize;
        if want == 0 {
            return Ok(0);
        }
        self.raw.resize(want * self.frame_bytes, 0);
        if let Err(e) = self.file.read_exact(&mut self.raw) {
            return Err(RecordingError::Wav {
                path: self.path.clone(),
                detail: format!(
                    "reading sample frames {}..{} of {}: {e}",
                    self.frames_read,
                    self.frames_read + want as u64,
                    self.frames_total
                ),
            });
        }
        decode_into(
            buf,
            &self.raw,
            self.frame_bytes,
            self.offset,
            self.format,
            self.scale,
        );
        self.frames_read += want as u64;
        Ok(want)
    }
}

pub(crate) fn wav_err(path: &Path, e: hound::Error) -> RecordingError {
    let detail = match e {
        hound::Error::FormatError(m) => format!("not a valid WAV file: {m}"),
        hound::Error::Unsupported => {
            "unsupported WAV encoding: expected PCM integer 8/16/24/32-bit or 32-bit float".into()
        }
        other => other.to_string(),
    };
    RecordingError::Wav {
        path: path.to_path_buf(),
        detail,
    }
}
