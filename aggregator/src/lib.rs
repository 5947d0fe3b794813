//! Aggregator service: subscribe to node detections and statuses over MQTT,
//! validate and dedupe them, feed the association/location engine
//! (`blastnet-aggregator-core`), publish located events on MQTT, store them
//! in SQLite, and serve them over HTTP with a live map.
//!
//! Library entry points: [`start`] (returns an [`AggregatorHandle`] with the
//! bound HTTP address, an event receiver and a completion signal) and [`run`].

pub mod config;
pub mod discovery;
pub mod export;
pub mod geometry;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod pipeline;
mod service;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testkit;
pub mod waveforms;
pub mod webhook;

pub use config::{AggregatorConfig, ConfigError, TimeBase};
pub use service::{run, start, AggregatorError, AggregatorHandle, Summary, SHUTDOWN_BUDGET};
pub use tokio_util::sync::CancellationToken;
