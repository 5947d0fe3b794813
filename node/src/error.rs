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
    /// the path's permissions and free space; the node stops rather than lose data.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A spool or state file is corrupt beyond what recovery can skip. Move it aside.
    #[error("{path}: {msg}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        msg: String,
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
