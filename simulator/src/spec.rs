//! The scenario description (`ScenarioSpec`): serde types, loadable from TOML,
//! and their validation.
//!
//! Positions are local East-North-Up metres from `origin`, whose altitude is
//! the ground level there: `at = [east, north, up]`, with `up` the height
//! above the ground below the point (the ground is flat unless `terrain`
//! tilts it). Times are seconds after `start_utc`.

use std::path::Path;

use blastnet_contract::{Check, Enu, Environment, Geodetic, SourceKind, UtcNs};
use serde::{Deserialize, Serialize};

use crate::error::SimError;

/// A complete scenario: where, when, what, and how it is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// Scenario name (the manifest's `name`).
    pub name: String,
    /// Free text, copied into the manifest's description.
    #[serde(default)]
    pub description: String,
    /// UTC of scenario time 0.
    pub start_utc: UtcNs,
    /// Length of the recording, seconds (nodes may start a little later, see `errors.start_jitter_s`).
    pub duration_s: f64,
    /// Origin of the local ENU frame; its altitude is ground level.
    pub origin: Geodetic,
    /// Air and ground.
    #[serde(default)]
    pub environment: EnvironmentSpec,
    /// Sample rates.
    #[serde(default)]
    pub rates: RatesSpec,
    /// Position and clock errors (turned off by `--ideal`).
    #[serde(default)]
    pub errors: ErrorSpec,
    /// Background noise.
    #[serde(default)]
    pub noise: NoiseSpec,
    /// The sensor nodes.
    pub nodes: Vec<NodeSim>,
    /// The sources to detect and locate.
    #[serde(default)]
    pub sources: Vec<SourceSpec>,
    /// Local single-node distractors (door slams, claps, hammering, traffic).
    #[serde(default)]
    pub distractors: Vec<DistractorSpec>,
    /// The ground's shape (flat when omitted).
    #[serde(default, skip_serializing_if = "TerrainSpec::is_flat")]
    pub terrain: TerrainSpec,
    /// Reflecting walls (building faces, cliffs): each adds an echo.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub walls: Vec<WallSpec>,
}

/// The ground: the plane up = `slope` · [east, north] through the origin, so
/// nodes and sources at one height above ground sit at different altitudes.
/// A plane keeps the ground reflection one exact image path.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TerrainSpec {
    /// Rise of the ground per metre [east, north] (0.02 = 2 %).
    pub slope: [f64; 2],
}

impl TerrainSpec {
    /// Whether the ground is level (the default, not written out).
    pub fn is_flat(&self) -> bool {
        self.slope == [0.0, 0.0]
    }

    /// Ground height at (east, north) in the scenario frame, m.
    pub fn ground_u(&self, e: f64, n: f64) -> f64 {
        self.slope[0] * e + self.slope[1] * n
    }

    /// The scenario-frame position of `at` = [east, north, height above ground].
    pub fn place(&self, at: [f64; 3]) -> Enu {
        Enu::new(at[0], at[1], self.ground_u(at[0], at[1]) + at[2])
    }

    /// The mirror image of `p` in the ground plane.
    pub fn mirror(&self, p: Enu) -> Enu {
        let n = [-self.slope[0], -self.slope[1], 1.0];
        let n2 = n[0] * n[0] + n[1] * n[1] + n[2] * n[2];
        // Signed height above the plane times |n|: the plane passes through the origin.
        let k = 2.0 * (p.e * n[0] + p.n * n[1] + p.u * n[2]) / n2;
        Enu::new(p.e - k * n[0], p.n - k * n[1], p.u - k * n[2])
    }
}

/// A vertical reflecting wall standing on the ground (a building face, a
/// cliff): a node on its face side hears an echo of every source on that
/// side whose specular point lies on the wall.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WallSpec {
    /// Centre of the wall's foot [east, north], m.
    pub at: [f64; 2],
    /// Direction the reflecting face looks to, degrees clockwise from north.
    pub facing_deg: f64,
    /// Length along the ground, m.
    pub length_m: f64,
    /// Height above the ground at its centre, m.
    pub height_m: f64,
    /// Pressure reflection coefficient (0..1).
    pub reflection: f64,
}

/// The atmosphere and ground the simulation uses (uniform in space and time).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// Air temperature, °C (sound speed; also written to the manifest unless `reported`).
    pub temperature_c: f64,
    /// Wind [east, north], m/s, blowing TO (SPEC convention; written to the manifest unless `reported`).
    pub wind_mps: [f64; 2],
    /// Relative humidity, % (ISO 9613-1 absorption only).
    pub relative_humidity_pct: f64,
    /// Ambient pressure, Pa (ISO 9613-1 absorption only; blast laws are sea-level).
    pub pressure_pa: f64,
    /// Pressure reflection coefficient of the ground for the image path (0..1).
    pub ground_reflection: f64,
    /// Near-surface P-wave speed, m/s (seismic direct wave of ground bursts).
    pub p_wave_mps: f64,
    /// The weather the network is told, when it differs from the truth above
    /// (a weather station's reading, a forecast): written to the manifest
    /// instead, while the rendering uses the truth. Omitted: the truth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<Environment>,
}

impl Default for EnvironmentSpec {
    fn default() -> Self {
        EnvironmentSpec {
            temperature_c: 15.0,
            wind_mps: [0.0, 0.0],
            relative_humidity_pct: 70.0,
            pressure_pa: 101_325.0,
            ground_reflection: 0.9,
            p_wave_mps: 800.0,
            reported: None,
        }
    }
}

/// Sample rates of the two stream kinds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RatesSpec {
    /// Acoustic sample rate, Hz.
    pub acoustic_hz: u32,
    /// Seismic sample rate, Hz; 0 = no seismic streams. Written as a separate file.
    pub seismic_hz: u32,
}

impl Default for RatesSpec {
    fn default() -> Self {
        RatesSpec {
            acoustic_hz: 16_000,
            seismic_hz: 500,
        }
    }
}

/// Sensor imperfections, drawn per node from the seed; all zero with `--ideal`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorSpec {
    /// 1-sigma horizontal GPS error per axis in the manifest position, m.
    pub gps_sigma_h_m: f64,
    /// 1-sigma vertical GPS error in the manifest altitude, m.
    pub gps_sigma_v_m: f64,
    /// 1-sigma clock offset (node clock minus UTC), s (GPS-PPS: ~1e-6).
    pub clock_offset_sigma_s: f64,
    /// 1-sigma clock rate error, parts per million.
    pub clock_drift_sigma_ppm: f64,
    /// Nodes start recording at a uniformly random true time in 0..this, s
    /// (not an error: kept in `--ideal`, where start_utc states it exactly).
    pub start_jitter_s: f64,
}

impl Default for ErrorSpec {
    fn default() -> Self {
        // A static node's GPS fix averaged over an hour: ~1 m horizontal, ~2 m vertical.
        ErrorSpec {
            gps_sigma_h_m: 1.0,
            gps_sigma_v_m: 2.0,
            clock_offset_sigma_s: 2e-6,
            clock_drift_sigma_ppm: 0.5,
            start_jitter_s: 0.05,
        }
    }
}

/// Background noise. Each level that is omitted is off.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseSpec {
    /// Urban background (pink spectrum), rms dB SPL (e.g. 50–65 at night).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urban_db: Option<f64>,
    /// Wind noise on the microphone (below ~20 Hz, gusty), rms dB SPL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wind_db: Option<f64>,
    /// Ambient ground velocity (1–20 Hz cultural noise), rms m/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seismic_mps: Option<f64>,
    /// Number of real clips from the distractor folder mixed in (one node each), when a folder is given.
    pub real_clips: u32,
}

/// Sample format of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleFormat {
    /// 16-bit PCM.
    I16,
    /// 24-bit PCM.
    I24,
    /// 32-bit float.
    F32,
}

/// A microphone: clipping level, self-noise, sample format.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorSpec {
    /// Level of a full-scale sine, dB SPL (a MEMS microphone's acoustic overload
    /// point, ~120–130; a high-SPL sensor ~170). Samples clip at its peak.
    pub full_scale_db: f64,
    /// Self-noise, rms dB SPL (white); omitted = none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_noise_db: Option<f64>,
    /// Sample format.
    pub format: SampleFormat,
}

impl SensorSpec {
    /// A MEMS microphone: overload at 125 dB SPL, 32 dB self-noise, 16-bit.
    pub fn mems() -> Self {
        SensorSpec {
            full_scale_db: 125.0,
            self_noise_db: Some(32.0),
            format: SampleFormat::I16,
        }
    }
    /// A high-SPL pressure sensor: 170 dB full scale, 60 dB self-noise, 24-bit.
    pub fn high_spl() -> Self {
        SensorSpec {
            full_scale_db: 170.0,
            self_noise_db: Some(60.0),
            format: SampleFormat::I24,
        }
    }
    /// Peak pressure of full scale, Pa: the peak of a sine of `full_scale_db` rms.
    pub fn full_scale_pa(&self) -> f64 {
        20e-6 * 10f64.powf(self.full_scale_db / 20.0) * std::f64::consts::SQRT_2
    }
}

impl Default for SensorSpec {
    fn default() -> Self {
        SensorSpec::mems()
    }
}

/// A geophone: full scale, self-noise, air-to-ground coupling, format.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeophoneSpec {
    /// Ground velocity at full scale, m/s.
    pub full_scale_mps: f64,
    /// Self-noise, rms m/s; omitted = none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_noise_mps: Option<f64>,
    /// Air-coupled ground motion per pascal of air pressure, (m/s)/Pa (~1e-6..1e-5).
    pub coupling_mps_per_pa: f64,
    /// Sample format.
    pub format: SampleFormat,
}

impl Default for GeophoneSpec {
    fn default() -> Self {
        GeophoneSpec {
            full_scale_mps: 0.01,
            self_noise_mps: Some(5e-9),
            coupling_mps_per_pa: 3e-6,
            format: SampleFormat::I24,
        }
    }
}

/// One sensor node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSim {
    /// Node id.
    pub id: String,
    /// True position [east, north, up] m; `up` is the height above ground.
    pub at: [f64; 3],
    /// Microphone.
    #[serde(default)]
    pub sensor: SensorSpec,
    /// Geophone (used when `rates.seismic_hz` > 0 and `seismic` is true).
    #[serde(default)]
    pub geophone: GeophoneSpec,
    /// Whether this node has a seismic stream.
    #[serde(default = "yes")]
    pub seismic: bool,
    /// The node stops recording at this scenario time, s (its WAV ends early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dies_at_s: Option<f64>,
    /// Overrides `errors.clock_offset_sigma_s` for this node (e.g. 5e-3 for an NTP node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_sigma_s: Option<f64>,
}

fn yes() -> bool {
    true
}

impl NodeSim {
    /// A MEMS node at `at`.
    pub fn new(id: impl Into<String>, at: [f64; 3]) -> Self {
        NodeSim {
            id: id.into(),
            at,
            sensor: SensorSpec::mems(),
            geophone: GeophoneSpec::default(),
            seismic: true,
            dies_at_s: None,
            clock_offset_sigma_s: None,
        }
    }
}

/// Ground burst or airburst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BurstSpec {
    /// On the ground (`at[2]` = 0): Kingery–Bulmash surface burst, plus a direct seismic P wave.
    Ground,
    /// In the air: Kinney–Graham free air, plus the ground-reflected image path.
    Air,
}

/// A supersonic projectile: its shock wave reaches the nodes as an N-wave.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulletSpec {
    /// Direction of fire [east, north, up] (normalised internally).
    pub direction: [f64; 3],
    /// Muzzle velocity, m/s (must exceed the sound speed).
    pub speed_mps: f64,
    /// Calibre (diameter), m.
    #[serde(default = "default_calibre")]
    pub calibre_m: f64,
    /// Projectile length, m.
    #[serde(default = "default_bullet_length")]
    pub length_m: f64,
    /// Range over which the projectile stays supersonic, m.
    #[serde(default = "default_bullet_range")]
    pub range_m: f64,
}

fn default_calibre() -> f64 {
    0.00556
}
fn default_bullet_length() -> f64 {
    0.023
}
fn default_bullet_range() -> f64 {
    600.0
}

/// A source the network should detect and locate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceSpec {
    /// A detonation.
    Explosion {
        /// Position [east, north, up], m.
        at: [f64; 3],
        /// Detonation time, s after start.
        time_s: f64,
        /// Charge, kg TNT equivalent.
        yield_kg_tnt: f64,
        /// Ground burst or airburst.
        burst: BurstSpec,
        /// Free-text label for the truth entry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// A firearm discharge: muzzle blast, and an N-wave when `bullet` is given.
    Gunshot {
        /// Muzzle position [east, north, up], m.
        at: [f64; 3],
        /// Shot time, s after start.
        time_s: f64,
        /// Muzzle-blast peak level at 1 m, dB SPL (handgun ~150, rifle ~160).
        peak_db_at_1m: f64,
        /// Muzzle-blast positive-phase duration, ms (~0.3–1).
        #[serde(default = "default_muzzle_ms")]
        duration_ms: f64,
        /// Supersonic projectile, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bullet: Option<BulletSpec>,
        /// Free-text label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// A rocket or missile launch: seconds of broadband roar with a slow rise.
    Launch {
        /// Launcher position [east, north, up], m.
        at: [f64; 3],
        /// Ignition time, s after start.
        time_s: f64,
        /// Roar level at 100 m once fully developed, rms dB SPL.
        level_db_at_100m: f64,
        /// Length of the roar heard, s.
        #[serde(default = "default_launch_s")]
        duration_s: f64,
        /// Rise time constant, s.
        #[serde(default = "default_rise_s")]
        rise_s: f64,
        /// Free-text label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
}

fn default_muzzle_ms() -> f64 {
    0.6
}
fn default_launch_s() -> f64 {
    4.0
}
fn default_rise_s() -> f64 {
    0.6
}

impl SourceSpec {
    /// Position [east, north, up].
    pub fn at(&self) -> [f64; 3] {
        match self {
            SourceSpec::Explosion { at, .. }
            | SourceSpec::Gunshot { at, .. }
            | SourceSpec::Launch { at, .. } => *at,
        }
    }
    /// Source time, s after start.
    pub fn time_s(&self) -> f64 {
        match self {
            SourceSpec::Explosion { time_s, .. }
            | SourceSpec::Gunshot { time_s, .. }
            | SourceSpec::Launch { time_s, .. } => *time_s,
        }
    }
    /// The SPEC class.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceSpec::Explosion { .. } => SourceKind::Explosion,
            SourceSpec::Gunshot { .. } => SourceKind::Gunshot,
            SourceSpec::Launch { .. } => SourceKind::Launch,
        }
    }
    /// The label given, or a description made from the parameters.
    pub fn label(&self) -> String {
        match self {
            SourceSpec::Explosion { label: Some(l), .. }
            | SourceSpec::Gunshot { label: Some(l), .. }
            | SourceSpec::Launch { label: Some(l), .. } => l.clone(),
            SourceSpec::Explosion {
                burst: BurstSpec::Ground,
                yield_kg_tnt,
                ..
            } => {
                format!("ground burst, {yield_kg_tnt} kg TNT")
            }
            SourceSpec::Explosion {
                burst: BurstSpec::Air,
                yield_kg_tnt,
                at,
                ..
            } => {
                format!("airburst at {:.0} m, {yield_kg_tnt} kg TNT", at[2])
            }
            SourceSpec::Gunshot { bullet, .. } => {
                if bullet.is_some() {
                    "gunshot, supersonic".into()
                } else {
                    "gunshot".into()
                }
            }
            SourceSpec::Launch { .. } => "launch".into(),
        }
    }
}

/// What a local distractor sounds like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistractorKind {
    /// A door slamming: a low thud with a rattle.
    DoorSlam,
    /// A hand clap: a few ms of broadband noise.
    Clap,
    /// Hammering: a series of metallic knocks.
    Hammering,
    /// A vehicle passing: seconds of low-frequency noise rising and falling.
    Traffic,
}

/// A sound near one node that no other node hears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistractorSpec {
    /// What it is.
    pub kind: DistractorKind,
    /// The node that hears it.
    pub node: String,
    /// Start time, s after start.
    pub time_s: f64,
    /// Peak level at the node, dB SPL (traffic: maximum rms level).
    pub level_db: f64,
    /// Distance from the node, m (its truth position lies that far east of it).
    #[serde(default = "default_distractor_m")]
    pub distance_m: f64,
}

fn default_distractor_m() -> f64 {
    6.0
}

impl DistractorKind {
    /// Label for the truth entry.
    pub fn label(self) -> &'static str {
        match self {
            DistractorKind::DoorSlam => "door slam",
            DistractorKind::Clap => "clap",
            DistractorKind::Hammering => "hammering",
            DistractorKind::Traffic => "traffic",
        }
    }
}

impl ScenarioSpec {
    /// Parse a TOML scenario description and validate it; errors name `file` and the field.
    pub fn from_toml(text: &str, file: &Path) -> Result<ScenarioSpec, SimError> {
        let spec: ScenarioSpec = toml::from_str(text).map_err(|e| SimError::Toml {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        spec.validate(&file.display().to_string())?;
        Ok(spec)
    }

    /// Read and parse a TOML file.
    pub fn load(path: &Path) -> Result<ScenarioSpec, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        ScenarioSpec::from_toml(&text, path)
    }

    /// As TOML text (the format `load` reads).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Check ranges and references; `origin` (file or preset name) is named in errors.
    pub fn validate(&self, origin: &str) -> Result<(), SimError> {
        let c = Check::new(origin);
        let finite3 = |a: &[f64; 3]| a.iter().all(|v| v.is_finite());
        c.ensure(
            !(self.name.is_empty() || self.name.contains(['/', '\\'])),
            "name",
            format!(
                "expected a non-empty name without slashes, got {:?}",
                self.name
            ),
        )?;
        c.ensure(
            self.duration_s.is_finite() && self.duration_s > 0.0 && self.duration_s <= 86_400.0,
            "duration_s",
            format!("expected seconds in (0, 86400], got {}", self.duration_s),
        )?;
        let env = &self.environment;
        c.ensure(
            (-80.0..=70.0).contains(&env.temperature_c),
            "environment.temperature_c",
            format!("expected °C in -80..70, got {}", env.temperature_c),
        )?;
        c.ensure(
            env.wind_mps
                .iter()
                .all(|w| w.is_finite() && w.abs() <= 60.0),
            "environment.wind_mps",
            "expected [east, north] m/s, each within ±60",
        )?;
        c.ensure(
            (0.0..=100.0).contains(&env.relative_humidity_pct),
            "environment.relative_humidity_pct",
            format!("expected 0..100, got {}", env.relative_humidity_pct),
        )?;
        c.ensure(
            env.pressure_pa > 10_000.0 && env.pressure_pa < 120_000.0,
            "environment.pressure_pa",
            format!("expected Pa in 10000..120000, got {}", env.pressure_pa),
        )?;
        c.ensure(
            (0.0..=1.0).contains(&env.ground_reflection),
            "environment.ground_reflection",
            format!("expected 0..1, got {}", env.ground_reflection),
        )?;
        c.ensure(
            env.p_wave_mps > 100.0 && env.p_wave_mps < 10_000.0,
            "environment.p_wave_mps",
            format!("expected m/s in 100..10000, got {}", env.p_wave_mps),
        )?;
        if let Some(r) = &env.reported {
            c.ensure(
                (-80.0..=70.0).contains(&r.temperature_c),
                "environment.reported.temperature_c",
                format!("expected °C in -80..70, got {}", r.temperature_c),
            )?;
            c.ensure(
                r.wind_mps.iter().all(|w| w.is_finite() && w.abs() <= 60.0),
                "environment.reported.wind_mps",
                "expected [east, north] m/s, each within ±60",
            )?;
        }
        c.ensure(
            self.terrain
                .slope
                .iter()
                .all(|s| s.is_finite() && s.abs() <= 0.5),
            "terrain.slope",
            format!(
                "expected [east, north] rise per metre, each within ±0.5, got {:?}",
                self.terrain.slope
            ),
        )?;
        for (i, w) in self.walls.iter().enumerate() {
            let at = |f: &str| format!("walls[{i}].{f}");
            c.ensure(
                w.at.iter().all(|v| v.is_finite()) && w.facing_deg.is_finite(),
                &at("at"),
                "expected finite [east, north] and facing_deg",
            )?;
            c.ensure(
                w.length_m > 0.0
                    && w.length_m <= 10_000.0
                    && w.height_m > 0.0
                    && w.height_m <= 1000.0,
                &at("length_m"),
                format!(
                    "expected length_m in (0, 10000] and height_m in (0, 1000], got {} and {}",
                    w.length_m, w.height_m
                ),
            )?;
            c.ensure(
                (0.0..=1.0).contains(&w.reflection),
                &at("reflection"),
                format!("expected 0..1, got {}", w.reflection),
            )?;
        }
        c.ensure(
            (1000..=384_000).contains(&self.rates.acoustic_hz),
            "rates.acoustic_hz",
            format!(
                "expected Hz in 1000..384000, got {}",
                self.rates.acoustic_hz
            ),
        )?;
        c.ensure(
            self.rates.seismic_hz == 0 || (50..=48_000).contains(&self.rates.seismic_hz),
            "rates.seismic_hz",
            format!(
                "expected 0 (none) or Hz in 50..48000, got {}",
                self.rates.seismic_hz
            ),
        )?;
        let e = &self.errors;
        for (name, v) in [
            ("gps_sigma_h_m", e.gps_sigma_h_m),
            ("gps_sigma_v_m", e.gps_sigma_v_m),
            ("clock_offset_sigma_s", e.clock_offset_sigma_s),
            ("clock_drift_sigma_ppm", e.clock_drift_sigma_ppm),
            ("start_jitter_s", e.start_jitter_s),
        ] {
            c.ensure(
                v.is_finite() && v >= 0.0,
                &format!("errors.{name}"),
                format!("expected a non-negative number, got {v}"),
            )?;
        }
        c.ensure(
            e.start_jitter_s < self.duration_s,
            "errors.start_jitter_s",
            "expected less than duration_s",
        )?;
        c.ensure(
            !self.nodes.is_empty(),
            "nodes",
            "expected at least one node",
        )?;
        // A node id also names its WAV file: no backslash either.
        c.node_ids(self.nodes.iter().map(|n| n.id.as_str()), &['\\'])?;
        for (i, n) in self.nodes.iter().enumerate() {
            let at = |f: &str| format!("nodes[{i}].{f}");
            c.ensure(
                finite3(&n.at) && n.at[2] >= 0.0 && n.at[2] <= 1000.0,
                &at("at"),
                "expected finite [east, north, up] with up (height above ground) in 0..1000 m",
            )?;
            c.ensure(
                (60.0..=200.0).contains(&n.sensor.full_scale_db),
                &at("sensor.full_scale_db"),
                format!("expected dB SPL in 60..200, got {}", n.sensor.full_scale_db),
            )?;
            if let Some(d) = n.dies_at_s {
                c.ensure(
                    d.is_finite() && d > 0.0,
                    &at("dies_at_s"),
                    format!("expected a positive time, got {d}"),
                )?;
            }
            if let Some(s) = n.clock_offset_sigma_s {
                c.ensure(
                    s.is_finite() && s >= 0.0,
                    &at("clock_offset_sigma_s"),
                    format!("expected a non-negative number, got {s}"),
                )?;
            }
            let g = &n.geophone;
            c.ensure(
                g.full_scale_mps > 0.0 && g.full_scale_mps.is_finite(),
                &at("geophone.full_scale_mps"),
                "expected a positive number",
            )?;
            c.ensure(
                g.coupling_mps_per_pa >= 0.0 && g.coupling_mps_per_pa < 1e-3,
                &at("geophone.coupling_mps_per_pa"),
                "expected (m/s)/Pa in 0..1e-3 (typical 1e-6..1e-5)",
            )?;
        }
        let sound_speed = blastnet_contract::physics::sound_speed(env.temperature_c);
        for (i, s) in self.sources.iter().enumerate() {
            let at = |f: &str| format!("sources[{i}].{f}");
            let pos = s.at();
            c.ensure(
                finite3(&pos) && pos[2] >= 0.0 && pos[2] <= 20_000.0,
                &at("at"),
                "expected finite [east, north, up] with up in 0..20000 m",
            )?;
            c.ensure(
                s.time_s().is_finite() && s.time_s() >= -60.0 && s.time_s() <= self.duration_s,
                &at("time_s"),
                format!("expected -60..duration_s, got {}", s.time_s()),
            )?;
            match s {
                SourceSpec::Explosion {
                    yield_kg_tnt,
                    burst,
                    ..
                } => {
                    c.ensure(
                        *yield_kg_tnt > 0.0 && *yield_kg_tnt <= 1e6,
                        &at("yield_kg_tnt"),
                        format!("expected kg TNT in (0, 1e6], got {yield_kg_tnt}"),
                    )?;
                    c.ensure(
                        !(*burst == BurstSpec::Ground && pos[2] != 0.0),
                        &at("at"),
                        format!(
                            "a ground burst sits on the ground: expected up = 0, got {}",
                            pos[2]
                        ),
                    )?;
                    c.ensure(
                        !(*burst == BurstSpec::Air && pos[2] < 1.0),
                        &at("at"),
                        "an airburst needs up >= 1 m (use burst = \"ground\" on the ground)",
                    )?;
                }
                SourceSpec::Gunshot {
                    peak_db_at_1m,
                    duration_ms,
                    bullet,
                    ..
                } => {
                    c.ensure(
                        (100.0..=200.0).contains(peak_db_at_1m),
                        &at("peak_db_at_1m"),
                        format!("expected dB SPL in 100..200, got {peak_db_at_1m}"),
                    )?;
                    c.ensure(
                        *duration_ms > 0.01 && *duration_ms < 50.0,
                        &at("duration_ms"),
                        format!("expected ms in 0.01..50, got {duration_ms}"),
                    )?;
                    if let Some(b) = bullet {
                        let n = (b.direction[0].powi(2)
                            + b.direction[1].powi(2)
                            + b.direction[2].powi(2))
                        .sqrt();
                        c.ensure(
                            n.is_finite() && n > 0.0,
                            &at("bullet.direction"),
                            "expected a non-zero vector",
                        )?;
                        c.ensure(
                            b.speed_mps > sound_speed * 1.01 && b.speed_mps < 3000.0,
                            &at("bullet.speed_mps"),
                            format!(
                                "expected a supersonic speed ({:.0}..3000 m/s), got {}",
                                sound_speed * 1.01,
                                b.speed_mps
                            ),
                        )?;
                        c.ensure(
                            b.calibre_m > 0.0 && b.length_m > 0.0 && b.range_m > 0.0,
                            &at("bullet"),
                            "expected positive calibre_m, length_m, range_m",
                        )?;
                    }
                }
                SourceSpec::Launch {
                    level_db_at_100m,
                    duration_s,
                    rise_s,
                    ..
                } => {
                    c.ensure(
                        (60.0..=200.0).contains(level_db_at_100m),
                        &at("level_db_at_100m"),
                        format!("expected dB SPL in 60..200, got {level_db_at_100m}"),
                    )?;
                    c.ensure(
                        *duration_s > 0.1 && *duration_s <= 60.0,
                        &at("duration_s"),
                        format!("expected s in 0.1..60, got {duration_s}"),
                    )?;
                    c.ensure(
                        *rise_s > 0.0 && *rise_s < *duration_s,
                        &at("rise_s"),
                        "expected 0 < rise_s < duration_s",
                    )?;
                }
            }
        }
        for (i, d) in self.distractors.iter().enumerate() {
            let at = |f: &str| format!("distractors[{i}].{f}");
            c.ensure(
                self.nodes.iter().any(|n| n.id == d.node),
                &at("node"),
                format!("no node with id {:?}", d.node),
            )?;
            c.ensure(
                d.time_s.is_finite() && (0.0..=self.duration_s).contains(&d.time_s),
                &at("time_s"),
                format!("expected 0..duration_s, got {}", d.time_s),
            )?;
            c.ensure(
                (20.0..=160.0).contains(&d.level_db),
                &at("level_db"),
                format!("expected dB SPL in 20..160, got {}", d.level_db),
            )?;
            c.ensure(
                d.distance_m > 0.0 && d.distance_m < 500.0,
                &at("distance_m"),
                format!("expected m in (0, 500), got {}", d.distance_m),
            )?;
        }
        Ok(())
    }
}
