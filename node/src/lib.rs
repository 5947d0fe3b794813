//! Field node runtime: sample sources (live capture, WAV/manifest replay),
//! the capture clock model, the on-disk spool (store-and-forward), the MQTT
//! publisher and the runtime that ties them to the detection core.
//!
//! ```text
//!  SampleSource ──► pipeline thread (detectors, clock, spool append + fsync)
//!                          │ ordered messages (spooled seq, status)
//!                          ▼
//!                   publisher task (rumqttc; PUBACK removes from the spool)
//! ```
//!
//! Library entry point: [`run_node`] with a [`NodeRuntimeConfig`], any
//! [`SampleSource`] (e.g. [`ReplaySource`]) and a [`CancellationToken`].

pub mod audio;
pub mod backoff;
#[cfg(feature = "capture")]
pub mod capture;
pub mod clock;
pub mod config;
mod error;
mod outbox;
mod pipeline;
pub mod publisher;
mod runtime;
pub mod snippet;
pub mod source;
pub mod spool;
pub mod state;

pub use clock::{ClockModel, ClockModelConfig, ClockStatus};
pub use config::{NodeConfig, NodeRuntimeConfig, SourceConfig, DEFAULT_CONFIG_TOML};
pub use error::NodeError;
pub use runtime::{run_node, NodeSummary};
pub use source::{Pace, ReplaySource, SampleSource, SourceEvent, StreamInfo};
pub use tokio_util::sync::CancellationToken;
