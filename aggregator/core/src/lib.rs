//! Pure core of the blastnet aggregator: association of detections into
//! events, TDOA location with uncertainty and the Cramér–Rao bound, and yield
//! from peak overpressure. No I/O, no async: the service in `aggregator/`
//! feeds [`Engine`] and publishes the [`Action`]s it returns.
//!
//! Positions are handled in a local East-North-Up frame (one origin per
//! engine); events leave the crate in WGS84 lat/lon/alt_m.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod calibration;
pub mod config;
pub mod engine;
pub mod locate;
pub mod propagation;
pub mod release;
pub mod stats;
pub mod watermark;
pub mod yield_est;

pub use calibration::{Calibration, ErrorScale, NodeCalibration, SiteCalibration, StationTerm};
pub use config::{ConfigError, EngineConfig};
pub use engine::{Action, Engine, NodeInfo, TraceEntry, Work};
pub use locate::{
    closed_form, closed_form_of, crlb, default_ground_u, locate, Arrival, Bound, Dims, DimsChoice,
    Guesses, LocateError, LocateOptions, Solution,
};
pub use propagation::{Phase, Propagation};
pub use release::{DataTimeOrder, Release};
pub use watermark::{NodesWatermark, WatermarkStep};
pub use yield_est::{estimate_yield, estimate_yield_multi};
