//! The simulator's error type.

use std::path::PathBuf;

/// Why a scenario could not be built or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A scenario description is inconsistent: `field` names the offending
    /// entry (`sources[3].yield_kg_tnt`). The caller should fix the description.
    #[error("{origin}: field `{field}`: {message}")]
    Spec {
        /// File or preset the description came from.
        origin: String,
        /// Path of the field.
        field: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A TOML scenario file did not parse (the message names line, column and key).
    /// The caller should fix the file.
    #[error("{file}: {message}")]
    Toml {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// No preset of that name. The caller should pick one of `known`.
    #[error("unknown preset {name:?}; expected one of: {known}")]
    UnknownPreset {
        /// What was asked for.
        name: String,
        /// The preset names, comma separated.
        known: String,
    },
    /// Reading or writing a file failed. The caller should check the path and retry.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A WAV file could not be written or a distractor clip could not be read.
    /// The caller should check the file; for clips, drop the distractor folder.
    #[error("{path}: WAV: {source}")]
    Wav {
        /// The WAV file.
        path: PathBuf,
        /// hound's error.
        #[source]
        source: hound::Error,
    },
    /// The distractor folder holds no usable clip. The caller should give a
    /// folder with WAV files (e.g. `$BLASTNET_DATA/sounds-dev`) or none.
    #[error("{path}: {message}")]
    Distractors {
        /// The folder.
        path: PathBuf,
        /// What was missing.
        message: String,
    },
}

impl From<blastnet_contract::FieldError> for SimError {
    fn from(e: blastnet_contract::FieldError) -> SimError {
        SimError::Spec {
            origin: e.file,
            field: e.field,
            message: e.message,
        }
    }
}

impl SimError {
    pub(crate) fn spec(origin: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        SimError::Spec {
            origin: origin.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}
