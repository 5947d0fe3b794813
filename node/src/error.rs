//! The node's error type.

use std::path::PathBuf;

/// Why the node could not start or had to stop. Errors that come from input
/// name the file or field and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A config field is missing or out of range. Fix the config; do not retry.
    #[error("{file}: field `{field}`: {msg}")]
    Config {
        /// The config file (or `<built-in>` for a config built in code).
        file: String,
        /// Dotted path of the field, e.g. `mqtt.url`.
        field: String,
        /// What was expected.
        msg: String,
    },
    /// A file or directory operation failed (state dir, spool, audio). Check
    /// the path's permissions and free space. At start-up (the state folder
    /// cannot be created or listed) the node stops; while running, a
    /// detection that cannot be spooled or a state that cannot be saved is
    /// logged and counted and the node goes on (it spools again once there
    /// is room).
    #[error("{path}: {what}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The per-node seq counter reached `u64::MAX`: another detection would
    /// need a seq already used (the SPEC's seq is monotonic), so detections
    /// are refused rather than numbered again from 0. Give the node a new
    /// `node_id` and an empty state folder; retrying does not help.
    #[error(
        "seq counter at {seq} (u64::MAX): refusing to spool a detection rather than \
         wrap to 0 and reuse seqs; give the node a new node_id and an empty state folder"
    )]
    SeqExhausted {
        /// The counter's value.
        seq: u64,
    },
    /// The recording to replay cannot be read. Fix or skip the scenario.
    #[error(transparent)]
    Recording(#[from] blastnet_recording::RecordingError),
    /// The detector refused a stream (sample rate, config). Fix the config or the stream.
    #[error("stream {stream}: {source}")]
    Detector {
        /// Which stream.
        stream: String,
        /// The detector's error.
        source: blastnet_detector::DetectorError,
    },
    /// The capture device failed or cannot be opened. Check the device name
    /// (`arecord -L`) and the channel map; restart.
    #[error("capture: {0}")]
    Capture(String),
    /// The pipeline thread panicked or vanished: a bug. Restart (systemd does).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<blastnet_contract::FieldError> for NodeError {
    fn from(e: blastnet_contract::FieldError) -> NodeError {
        NodeError::Config {
            file: e.file,
            field: e.field,
            msg: e.message,
        }
    }
}

impl NodeError {
    pub(crate) fn io(path: impl Into<PathBuf>, what: &'static str, source: std::io::Error) -> Self {
        NodeError::Io {
            path: path.into(),
            what,
            source,
        }
    }
}
