//! Physically grounded blast scenario simulator (`blastnet simulate`).
//!
//! Writes scenario folders (SPEC `blastnet-recording/1` manifest with
//! `environment` and `truth`, plus WAV files) so that every other part can be
//! developed and tested against known answers.
//!
//! Physics, each with its source in the module that implements it:
//! - blast waves: Friedlander pulses with Hopkinson–Cranz scaling,
//!   Kingery–Bulmash (surface bursts) and Kinney–Graham (free air) —
//!   [`blastnet_contract::blast`];
//! - propagation: straight rays, sound speed from temperature plus wind along
//!   the path, spherical spreading, the ground-reflected image path over
//!   level or tilted ground, wall echoes, exact sub-sample delays —
//!   [`propagation`], `render.rs`;
//! - ISO 9613-1 atmospheric absorption as a causal minimum-phase filter — [`absorption`];
//! - gun muzzle blasts and Whitham N-waves, rocket roar, air-coupled ground
//!   motion and the seismic P wave of ground bursts — `write.rs`;
//! - sensors (sensitivity, clipping, bit depth, self-noise), GPS and clock
//!   errors, dying nodes, urban and wind noise, local distractors and real
//!   clips — [`spec`], `noise.rs`, [`clips`].
//!
//! Everything is deterministic for a given spec, seed and options.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod absorption;
pub mod array;
pub mod clips;
mod error;
mod noise;
mod presets;
pub mod propagation;
mod random_scene;
mod render;
pub mod scenes;
pub mod spec;
mod write;

pub use error::SimError;
pub use presets::{make_quiet, preset, random_array, PRESETS};
pub use propagation::{arrival_utc, travel_time_geodetic};
pub use random_scene::random_scene;
pub use spec::{
    BulletSpec, BurstSpec, DistractorKind, DistractorSpec, EnvironmentSpec, ErrorSpec,
    GeophoneSpec, NodeSim, NoiseSpec, RatesSpec, SampleFormat, ScenarioSpec, SensorSpec,
    SourceSpec, TerrainSpec, WallSpec,
};
pub use write::{
    whitham_n_wave, write_scenario, WriteOptions, FRIEDLANDER_B, SURFACE_SEISMIC_COUPLING,
};
