//! The blastnet contract: SPEC v1 wire types, the recording manifest, UTC time
//! in integer nanoseconds, WGS84 geodesy and the sound-speed formulas that
//! every part shares, and the vocabulary defined once for all of them: the
//! MQTT topic grammar ([`topic`]), the classified kinds and their
//! probability vector ([`SourceKind::CLASSIFIED`], [`ClassProbs`]), the
//! broker address ([`BrokerUrl`]), the status skeleton ([`Status::new`]),
//! the field checker of every validator ([`Check`]) and events in words for
//! people ([`text`], shared by the CLI and the live map). Pure: no I/O.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blast;
pub mod broker;
pub mod check;
pub mod geo;
pub mod manifest;
pub mod physics;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod time;
pub mod topic;
pub mod wire;

pub use broker::{BrokerUrl, BrokerUrlError};
pub use check::{Check, FieldError};
pub use geo::{Ecef, Enu, EnuFrame, Geodetic};
pub use manifest::{Environment, Manifest, ManifestError, NodeSpec, StreamSpec, TruthSource};
pub use time::{TimeError, UtcNs, NS_PER_S};
pub use wire::{
    ArrivalRef, ClassProbs, ClockInfo, ClockSource, Crlb, Detection, Event, EventStatus, NodeState,
    Quality, Snippet, SnippetError, SourceKind, Status, StreamKind, Uncertainty, YieldEstimate,
    DETECTION_SCHEMA, EVENT_SCHEMA, SNIPPET_SCHEMA, STATUS_SCHEMA, WILL_COUNTER,
};

/// The software version reported in status messages.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
