//! Node configuration in two steps: [`NodeConfigFile`] (serde, what the TOML
//! says) is checked into [`NodeConfig`] (runtime types, every value in
//! range). The defaults live in one place, the commented
//! [`DEFAULT_CONFIG_TOML`]; a user file is merged over it before checking,
//! so any field left out takes the default shown by `--print-config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use blastnet_contract::{topic, BrokerUrl, Check, ClockSource, Geodetic, StreamKind};
use blastnet_detector::DetectorConfig;
use serde::Deserialize;

use crate::error::NodeError;
use crate::source::Pace;

/// The commented default configuration.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default_node.toml");

/// What a node.toml says, before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfigFile {
    /// `node_id`.
    pub node_id: String,
    /// `site`.
    pub site: String,
    /// `[position]`.
    pub position: Option<PositionFile>,
    /// `[mqtt]`.
    pub mqtt: MqttFile,
    /// `[status]`.
    pub status: StatusFile,
    /// `[state]`.
    pub state: StateFile,
    /// `[clock]`.
    pub clock: ClockFile,
    /// `[source]`.
    pub source: SourceFile,
    /// `[detector]`.
    #[serde(default)]
    pub detector: DetectorConfig,
    /// `[audio]`.
    pub audio: AudioFile,
}

/// `[position]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionFile {
    /// Degrees north.
    pub lat: f64,
    /// Degrees east.
    pub lon: f64,
    /// Metres.
    pub alt_m: f64,
    /// 1-sigma position error along a ray, m (survey or GPS accuracy).
    pub uncertainty_m: Option<f64>,
}

/// `[mqtt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttFile {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Topic prefix.
    pub prefix: String,
    /// Client id.
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password (prefer `password_file`).
    pub password: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// CA certificate for TLS.
    pub ca_file: Option<PathBuf>,
    /// MQTT keep-alive, s.
    pub keep_alive_s: f64,
    /// First reconnect delay, s.
    pub backoff_initial_s: f64,
    /// Largest reconnect delay, s.
    pub backoff_max_s: f64,
    /// QoS 1 publishes in flight.
    pub inflight: u16,
}

/// `[status]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusFile {
    /// Heartbeat period, s.
    pub heartbeat_s: f64,
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// State directory.
    pub dir: PathBuf,
    /// Spool bound, bytes.
    pub spool_max_bytes: u64,
    /// fsync each spooled detection.
    pub fsync: bool,
    /// Drain timeout at the end of a replay, s (0 = none).
    pub drain_timeout_s: f64,
}

/// `[clock]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockFile {
    /// `auto`, `gps-pps`, `ntp`, `system`.
    pub source: String,
    /// Uncertainty when the source is fixed, s.
    pub nominal_uncertainty_s: f64,
    /// chrony poll period, s.
    pub poll_s: f64,
    /// Sync-lost threshold, s.
    pub max_uncertainty_s: f64,
    /// Step threshold, s.
    pub step_threshold_s: f64,
    /// Replay clock uncertainty, s.
    pub replay_uncertainty_s: f64,
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// `replay` or `capture`.
    pub kind: String,
    /// Replay: scenario folder, manifest or WAV.
    pub path: PathBuf,
    /// Replay: node of the scenario.
    pub scenario_node: Option<String>,
    /// Replay: `fast` or `realtime`.
    pub pace: String,
    /// Replay: realtime speed factor.
    pub speed: f64,
    /// Capture: device description substring.
    pub device: String,
    /// Capture: sample rate, Hz.
    pub sample_rate: u32,
    /// Capture: channel map.
    pub channels: Vec<String>,
    /// Capture: Pa per full scale.
    pub acoustic_sensitivity: f64,
    /// Capture: (m/s) per full scale.
    pub seismic_sensitivity: f64,
    /// Capture: ring length, s.
    pub ring_s: f64,
    /// Capture: frames per device period (0: the device's default).
    pub period_frames: u32,
}

/// `[audio]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioFile {
    /// Keep snippets around detections.
    pub snippets: bool,
    /// Seconds before the onset.
    pub snippet_before_s: f64,
    /// Seconds after the onset.
    pub snippet_after_s: f64,
    /// Continuous recording.
    pub continuous: bool,
    /// Length of one continuous file, s.
    pub segment_s: f64,
    /// Disk budget, bytes.
    pub budget_bytes: u64,
    /// Folder; default `{state.dir}/audio`.
    pub dir: Option<PathBuf>,
    /// Publish a snippet around each detection on the snippet topic.
    pub publish_snippets: bool,
    /// Snippets waiting for the broker at most; beyond, the oldest is dropped.
    pub snippet_queue: usize,
}

/// Broker connection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// Topic prefix.
    pub prefix: String,
    /// Client id.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// CA certificate (PEM) for TLS.
    pub ca_file: Option<PathBuf>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// QoS 1 publishes in flight.
    pub inflight: u16,
}

/// How the live clock's source is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockMode {
    /// Ask chrony.
    Auto,
    /// A fixed source with the nominal uncertainty.
    Fixed(ClockSource),
}

/// Clock settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockSettings {
    /// Source mode (live capture).
    pub mode: ClockMode,
    /// Uncertainty of a fixed source, s.
    pub nominal_uncertainty_s: f64,
    /// chrony poll period.
    pub poll: Duration,
    /// Sync counts as lost above this uncertainty, s.
    pub max_uncertainty_s: f64,
    /// Step threshold, s.
    pub step_threshold_s: f64,
    /// Replay clock uncertainty, s.
    pub replay_uncertainty_s: f64,
}

/// Audio keeping on disk (off by default) and snippets published (on by default).
#[derive(Debug, Clone, PartialEq)]
pub struct AudioSettings {
    /// Snippets around detections.
    pub snippets: bool,
    /// Seconds before the onset.
    pub snippet_before_s: f64,
    /// Seconds after the onset.
    pub snippet_after_s: f64,
    /// Continuous rotating recording.
    pub continuous: bool,
    /// Length of one continuous file, s.
    pub segment_s: f64,
    /// Disk budget for kept audio, bytes.
    pub budget_bytes: u64,
    /// Folder.
    pub dir: PathBuf,
    /// Publish a snippet around each detection (extension topic
    /// `.../snippet`); memory only, on by default.
    pub publish_snippets: bool,
    /// Snippets waiting for the broker at most (the oldest is dropped and
    /// counted, `snippets_dropped`).
    pub snippet_queue: usize,
}

/// Everything [`crate::run_node`] needs besides the source.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRuntimeConfig {
    /// Node id.
    pub node_id: String,
    /// Site.
    pub site: String,
    /// Position; `None` = take it from the source (replay manifest).
    pub position: Option<Geodetic>,
    /// 1-sigma error of `position` along a ray, m; `None`: unknown (a
    /// replay takes it from the manifest).
    pub position_uncertainty_m: Option<f64>,
    /// Broker.
    pub mqtt: MqttSettings,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// State directory (spool, seq, checkpoint).
    pub state_dir: PathBuf,
    /// Spool bound, bytes.
    pub spool_max_bytes: u64,
    /// fsync each spooled detection.
    pub fsync: bool,
    /// At a graceful end, how long to wait for the broker to acknowledge everything.
    pub drain_timeout: Option<Duration>,
    /// Clock.
    pub clock: ClockSettings,
    /// Detector tuning.
    pub detector: DetectorConfig,
    /// Audio keeping.
    pub audio: AudioSettings,
}

/// Live capture settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSettings {
    /// Device description substring, or `default`.
    pub device: String,
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// Per device channel: the stream it feeds, or `None` (unused).
    pub channels: Vec<Option<StreamKind>>,
    /// Pa per full scale.
    pub acoustic_sensitivity: f64,
    /// (m/s) per full scale.
    pub seismic_sensitivity: f64,
    /// Ring length, s.
    pub ring_s: f64,
    /// Frames per device period (one callback), or `None`: the device's default.
    pub period_frames: Option<u32>,
}

/// Where samples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// Replay a recording.
    Replay {
        /// Scenario folder, manifest or WAV.
        path: PathBuf,
        /// Node of the scenario.
        scenario_node: String,
        /// Pace.
        pace: Pace,
    },
    /// Live capture.
    Capture(CaptureSettings),
}

/// A checked node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// For the runtime.
    pub runtime: NodeRuntimeConfig,
    /// For building the source.
    pub source: SourceConfig,
}

/// Deep-merge `over` into `base` (tables merge key by key, other values replace).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn parse_table(text: &str, file: &str) -> Result<toml::Table, NodeError> {
    text.parse::<toml::Table>().map_err(|e| NodeError::Config {
        file: file.to_string(),
        field: "(syntax)".into(),
        msg: e.to_string().trim().to_string(),
    })
}

impl NodeConfigFile {
    /// Parse TOML text merged over the defaults. `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<NodeConfigFile, NodeError> {
        let mut base = parse_table(DEFAULT_CONFIG_TOML, "<built-in default>")?;
        merge(&mut base, parse_table(text, file)?);
        serde_path_to_error::deserialize(toml::Value::Table(base)).map_err(|e| {
            let field = e.path().to_string();
            NodeError::Config {
                file: file.to_string(),
                field,
                msg: e.into_inner().message().to_string(),
            }
        })
    }
}

impl NodeConfig {
    /// Read and check a config file; relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> Result<NodeConfig, NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::io(path, "cannot read config", e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        NodeConfig::from_toml(&text, &path.display().to_string(), base)
    }

    /// Parse and check TOML text; `base_dir` anchors relative paths.
    pub fn from_toml(text: &str, file: &str, base_dir: &Path) -> Result<NodeConfig, NodeError> {
        let raw = NodeConfigFile::from_toml(text, file)?;
        NodeConfig::check(raw, file, base_dir)
    }

    /// Step two: check every field and build the runtime types. Stops at
    /// the first error; [`NodeConfig::check_all`] lists them all.
    pub fn check(
        raw: NodeConfigFile,
        file: &str,
        base_dir: &Path,
    ) -> Result<NodeConfig, NodeError> {
        // check_all never answers Err with an empty list.
        NodeConfig::check_all(raw, file, base_dir).map_err(|mut errors| errors.swap_remove(0))
    }

    /// [`NodeConfig::load`] listing every error at once (`node --check`). A
    /// file that cannot be read or parsed gives one error.
    pub fn load_all(path: &Path) -> Result<NodeConfig, Vec<NodeError>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![NodeError::io(path, "cannot read config", e)])?;
        let base = path.parent().unwrap_or(Path::new("."));
        let file = path.display().to_string();
        let raw = NodeConfigFile::from_toml(&text, &file).map_err(|e| vec![e])?;
        NodeConfig::check_all(raw, &file, base)
    }

    /// Step two, listing every error: the independent checks all run; a
    /// field's later checks, which depend on its earlier ones, stop at the
    /// first. Never `Err(vec![])`.
    pub fn check_all(
        raw: NodeConfigFile,
        file: &str,
        base_dir: &Path,
    ) -> Result<NodeConfig, Vec<NodeError>> {
        let c = Check::new(file);
        let mut errors: Vec<NodeError> = Vec::new();
        let e = &mut errors;
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        let node_id = take(e, c.name("node_id", &raw.node_id));
        let site = take(e, c.name("site", &raw.site));
        let position = match &raw.position {
            Some(p) => {
                let lat = take(e, c.range("position.lat", p.lat, -90.0, 90.0));
                let lon = take(e, c.range("position.lon", p.lon, -180.0, 180.0));
                let alt_m = take(e, c.range("position.alt_m", p.alt_m, -500.0, 10_000.0));
                match (lat, lon, alt_m) {
                    (Some(lat), Some(lon), Some(alt_m)) => Some(Some(Geodetic { lat, lon, alt_m })),
                    _ => None,
                }
            }
            None => Some(None),
        };
        let position_uncertainty_m = match raw.position.as_ref().and_then(|p| p.uncertainty_m) {
            Some(u) => take(e, c.range("position.uncertainty_m", u, 0.0, 1000.0)).map(Some),
            None => Some(None),
        };
        let m = &raw.mqtt;
        let mqtt = take(
            e,
            (|| -> Result<_, NodeError> {
                let BrokerUrl { host, port, tls } =
                    BrokerUrl::parse(&m.url).map_err(|e| c.err("mqtt.url", e.to_string()))?;
                if tls && !cfg!(feature = "tls") {
                    return Err(c
                        .err(
                            "mqtt.url",
                            "mqtts:// needs a build with the `tls` cargo feature",
                        )
                        .into());
                }
                // Leading and trailing '/' are forgiven here (the node always did).
                let prefix = m.prefix.trim_matches('/').to_string();
                topic::check_prefix(&prefix).map_err(|e| c.err("mqtt.prefix", e))?;
                let password = match (&m.password, &m.password_file) {
                    (Some(_), Some(_)) => {
                        return Err(c
                            .err(
                                "mqtt.password_file",
                                "set password or password_file, not both",
                            )
                            .into())
                    }
                    (Some(p), None) => Some(p.clone()),
                    (None, Some(f)) => {
                        let f = abs(f);
                        let text = std::fs::read_to_string(&f).map_err(|e| {
                            c.err(
                                "mqtt.password_file",
                                format!("cannot read {}: {e}", f.display()),
                            )
                        })?;
                        Some(text.trim_end_matches(['\r', '\n']).to_string())
                    }
                    (None, None) => None,
                };
                if password.is_some() && m.username.is_none() {
                    return Err(c
                        .err("mqtt.username", "a password is set but no username")
                        .into());
                }
                let backoff_initial =
                    c.secs("mqtt.backoff_initial_s", m.backoff_initial_s, 0.01, 3600.0)?;
                let backoff_max = c.secs("mqtt.backoff_max_s", m.backoff_max_s, 0.01, 86_400.0)?;
                if backoff_max < backoff_initial {
                    return Err(c
                        .err(
                            "mqtt.backoff_max_s",
                            "expected backoff_max_s >= backoff_initial_s",
                        )
                        .into());
                }
                if m.inflight == 0 {
                    return Err(c.err("mqtt.inflight", "expected at least 1").into());
                }
                Ok(MqttSettings {
                    host,
                    port,
                    tls,
                    prefix,
                    client_id: match &m.client_id {
                        Some(id) => c.name("mqtt.client_id", id)?,
                        None => format!(
                            "blastnet-node-{}-{}",
                            site.as_deref().unwrap_or_default(),
                            node_id.as_deref().unwrap_or_default()
                        ),
                    },
                    username: m.username.clone(),
                    password,
                    ca_file: m.ca_file.as_deref().map(abs),
                    keep_alive: c.secs("mqtt.keep_alive_s", m.keep_alive_s, 1.0, 3600.0)?,
                    backoff_initial,
                    backoff_max,
                    inflight: m.inflight,
                })
            })(),
        );
        let heartbeat = take(
            e,
            c.secs("status.heartbeat_s", raw.status.heartbeat_s, 0.1, 3600.0),
        );
        let spool = take(
            e,
            c.ensure(
                raw.state.spool_max_bytes >= 4096,
                "state.spool_max_bytes",
                "expected at least 4096 bytes",
            ),
        );
        let drain = take(
            e,
            c.secs(
                "state.drain_timeout_s",
                raw.state.drain_timeout_s,
                0.0,
                86_400.0,
            ),
        );
        let clock = take(
            e,
            (|| -> Result<_, NodeError> {
                let k = &raw.clock;
                let mode = c.one_of(
                    "clock.source",
                    &k.source,
                    &[
                        ("auto", ClockMode::Auto),
                        ("gps-pps", ClockMode::Fixed(ClockSource::GpsPps)),
                        ("ntp", ClockMode::Fixed(ClockSource::Ntp)),
                        ("system", ClockMode::Fixed(ClockSource::System)),
                    ],
                )?;
                Ok(ClockSettings {
                    mode,
                    nominal_uncertainty_s: c.range(
                        "clock.nominal_uncertainty_s",
                        k.nominal_uncertainty_s,
                        0.0,
                        3600.0,
                    )?,
                    poll: c.secs("clock.poll_s", k.poll_s, 1.0, 86_400.0)?,
                    max_uncertainty_s: c.range(
                        "clock.max_uncertainty_s",
                        k.max_uncertainty_s,
                        1e-9,
                        3600.0,
                    )?,
                    step_threshold_s: c.range(
                        "clock.step_threshold_s",
                        k.step_threshold_s,
                        1e-6,
                        3600.0,
                    )?,
                    replay_uncertainty_s: c.range(
                        "clock.replay_uncertainty_s",
                        k.replay_uncertainty_s,
                        0.0,
                        1.0,
                    )?,
                })
            })(),
        );
        let state_dir = abs(&raw.state.dir);
        let audio = take(
            e,
            (|| -> Result<_, NodeError> {
                let a = &raw.audio;
                let audio = AudioSettings {
                    snippets: a.snippets,
                    snippet_before_s: c.range(
                        "audio.snippet_before_s",
                        a.snippet_before_s,
                        0.0,
                        60.0,
                    )?,
                    snippet_after_s: c.range(
                        "audio.snippet_after_s",
                        a.snippet_after_s,
                        0.0,
                        60.0,
                    )?,
                    continuous: a.continuous,
                    segment_s: c.range("audio.segment_s", a.segment_s, 1.0, 86_400.0)?,
                    budget_bytes: a.budget_bytes,
                    dir: a
                        .dir
                        .as_deref()
                        .map(abs)
                        .unwrap_or_else(|| state_dir.join("audio")),
                    publish_snippets: a.publish_snippets,
                    snippet_queue: c.within(
                        "audio.snippet_queue",
                        a.snippet_queue,
                        1,
                        10_000,
                        "snippets",
                    )?,
                };
                if (a.snippets || a.continuous) && a.budget_bytes < 1 << 20 {
                    return Err(c
                        .err(
                            "audio.budget_bytes",
                            "expected at least 1 MiB when audio keeping is on",
                        )
                        .into());
                }
                Ok(audio)
            })(),
        );
        let source = take(
            e,
            (|| -> Result<_, NodeError> {
                let node_id = node_id.clone().unwrap_or_default();
                let s = &raw.source;
                let source = match s.kind.as_str() {
                    "replay" => {
                        let pace = match c.one_of(
                            "source.pace",
                            &s.pace,
                            &[("fast", false), ("realtime", true)],
                        )? {
                            false => Pace::Fast,
                            true => Pace::RealTime {
                                speed: c.range("source.speed", s.speed, 1e-3, 1e6)?,
                            },
                        };
                        SourceConfig::Replay {
                            path: abs(&s.path),
                            scenario_node: s.scenario_node.clone().unwrap_or(node_id),
                            pace,
                        }
                    }
                    "capture" => {
                        if matches!(position, Some(None)) {
                            return Err(c
                                .err(
                                    "position",
                                    "a capturing node needs [position] lat, lon, alt_m",
                                )
                                .into());
                        }
                        let mut channels = Vec::new();
                        for (i, ch) in s.channels.iter().enumerate() {
                            channels.push(c.one_of(
                                &format!("source.channels[{i}]"),
                                ch,
                                &[
                                    ("acoustic", Some(StreamKind::Acoustic)),
                                    ("seismic", Some(StreamKind::Seismic)),
                                    ("unused", None),
                                ],
                            )?);
                        }
                        for kind in [StreamKind::Acoustic, StreamKind::Seismic] {
                            if channels.iter().filter(|k| **k == Some(kind)).count() > 1 {
                                return Err(c
                                    .err(
                                        "source.channels",
                                        format!(
                                            "{} is mapped to more than one channel",
                                            kind.as_str()
                                        ),
                                    )
                                    .into());
                            }
                        }
                        if channels.iter().all(Option::is_none) {
                            return Err(c
                                .err(
                                    "source.channels",
                                    "expected at least one acoustic or seismic channel",
                                )
                                .into());
                        }
                        if !(8..=192_000).contains(&s.sample_rate) {
                            return Err(c
                                .err(
                                    "source.sample_rate",
                                    format!("expected 8..=192000 Hz, got {}", s.sample_rate),
                                )
                                .into());
                        }
                        SourceConfig::Capture(CaptureSettings {
                            device: s.device.clone(),
                            sample_rate: s.sample_rate,
                            channels,
                            acoustic_sensitivity: c.range(
                                "source.acoustic_sensitivity",
                                s.acoustic_sensitivity,
                                1e-12,
                                1e12,
                            )?,
                            seismic_sensitivity: c.range(
                                "source.seismic_sensitivity",
                                s.seismic_sensitivity,
                                1e-12,
                                1e12,
                            )?,
                            ring_s: c.range("source.ring_s", s.ring_s, 0.1, 60.0)?,
                            period_frames: match s.period_frames {
                                0 => None,
                                n if n <= s.sample_rate => Some(n),
                                n => {
                                    return Err(c
                                        .err(
                                            "source.period_frames",
                                            format!(
                                                "expected 0 (the device's default) or at most one second of frames ({}), got {n}",
                                                s.sample_rate
                                            ),
                                        )
                                        .into())
                                }
                            },
                        })
                    }
                    other => {
                        return Err(c
                            .err(
                                "source.kind",
                                format!("expected replay or capture, got {other:?}"),
                            )
                            .into())
                    }
                };
                Ok(source)
            })(),
        );
        let (
            Some(node_id),
            Some(site),
            Some(position),
            Some(position_uncertainty_m),
            Some(mqtt),
            Some(heartbeat),
            Some(()),
            Some(drain),
            Some(clock),
            Some(audio),
            Some(source),
        ) = (
            node_id,
            site,
            position,
            position_uncertainty_m,
            mqtt,
            heartbeat,
            spool,
            drain,
            clock,
            audio,
            source,
        )
        else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let runtime = NodeRuntimeConfig {
            node_id,
            site,
            position,
            position_uncertainty_m,
            mqtt,
            heartbeat,
            state_dir,
            spool_max_bytes: raw.state.spool_max_bytes,
            fsync: raw.state.fsync,
            drain_timeout: (!drain.is_zero()).then_some(drain),
            clock,
            detector: raw.detector.clone(),
            audio,
        };
        Ok(NodeConfig { runtime, source })
    }
}

/// Keep going: remember the error of `r` (if any) and return its value.
fn take<T, E: Into<NodeError>>(errors: &mut Vec<NodeError>, r: Result<T, E>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(e.into());
            None
        }
    }
}

impl NodeRuntimeConfig {
    /// The built-in defaults for one replayed node publishing to `broker_url`,
    /// keeping its spool and seq under `state_dir`. Used by `blastnet replay`.
    pub fn for_replay(
        node_id: &str,
        site: &str,
        broker_url: &str,
        state_dir: &Path,
    ) -> Result<Self, NodeError> {
        let text = format!(
            "node_id = {node_id:?}\nsite = {site:?}\n[mqtt]\nurl = {broker_url:?}\n[state]\ndir = {:?}\n",
            state_dir.display().to_string()
        );
        Ok(NodeConfig::from_toml(&text, "<replay>", Path::new("."))?.runtime)
    }

    /// This node's detection topic ([`topic::detection`]).
    pub fn detection_topic(&self) -> String {
        topic::detection(&self.mqtt.prefix, &self.site, &self.node_id)
    }

    /// This node's snippet topic ([`topic::snippet`], an extension).
    pub fn snippet_topic(&self) -> String {
        topic::snippet(&self.mqtt.prefix, &self.site, &self.node_id)
    }

    /// This node's status topic ([`topic::status`]).
    pub fn status_topic(&self) -> String {
        topic::status(&self.mqtt.prefix, &self.site, &self.node_id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn built_in_default_parses_and_checks() {
        let cfg = NodeConfig::from_toml("", "x.toml", Path::new("/etc/blastnet")).unwrap();
        assert_eq!(cfg.runtime.node_id, "n01");
        assert_eq!(cfg.runtime.heartbeat, Duration::from_secs(10));
        assert_eq!(cfg.runtime.mqtt.port, 1883);
        assert_eq!(cfg.runtime.mqtt.client_id, "blastnet-node-default-n01");
        assert_eq!(cfg.runtime.detector, DetectorConfig::default());
        assert!(
            !cfg.runtime.audio.snippets && !cfg.runtime.audio.continuous,
            "audio keeping on disk must be off by default"
        );
        assert!(
            cfg.runtime.audio.publish_snippets,
            "snippets are published by default (waveform evidence)"
        );
        assert_eq!(cfg.runtime.audio.snippet_queue, 64);
        assert_eq!(
            cfg.runtime.detection_topic(),
            "blastnet/default/node/n01/detection"
        );
        match cfg.source {
            SourceConfig::Replay {
                path,
                scenario_node,
                pace,
            } => {
                assert_eq!(path, Path::new("/etc/blastnet/recordings/city-salvo"));
                assert_eq!(scenario_node, "n01");
                assert_eq!(pace, Pace::Fast);
            }
            other => panic!("default source should be replay, got {other:?}"),
        }
    }

    #[test]
    fn user_values_override_defaults_and_keep_the_rest() {
        let text = "node_id = \"pi-7\"\n[mqtt]\nurl = \"mqtt://10.0.0.2:1884\"\n[status]\nheartbeat_s = 5\n";
        let cfg = NodeConfig::from_toml(text, "node.toml", Path::new(".")).unwrap();
        assert_eq!(cfg.runtime.node_id, "pi-7");
        assert_eq!(
            (cfg.runtime.mqtt.host.as_str(), cfg.runtime.mqtt.port),
            ("10.0.0.2", 1884)
        );
        assert_eq!(cfg.runtime.heartbeat, Duration::from_secs(5));
        assert_eq!(cfg.runtime.mqtt.prefix, "blastnet");
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let cases = [
            ("[mqtt]\nurl = \"http://x\"\n", "mqtt.url"),
            ("node_id = \"a/b\"\n", "node_id"),
            ("[mqtt]\nbackoff_max_s = 0.1\nbackoff_initial_s = 1\n", "mqtt.backoff_max_s"),
            ("[source]\nkind = \"capture\"\n", "position"),
            ("[source]\nkind = \"capture\"\nchannels = [\"acoustic\", \"sesmic\"]\n[position]\nlat = 1\nlon = 2\nalt_m = 3\n", "source.channels[1]"),
            ("[source]\nkind = \"capture\"\nperiod_frames = 48001\n[position]\nlat = 1\nlon = 2\nalt_m = 3\n", "source.period_frames"),
            ("[clock]\nsource = \"gps\"\n", "clock.source"),
            ("[state]\nspool_max_bytes = \"big\"\n", "state.spool_max_bytes"),
            ("[mqtt]\nurll = \"x\"\n", "mqtt.urll"),
        ];
        for (text, field) in cases {
            let err = NodeConfig::from_toml(text, "node.toml", Path::new(".")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("node.toml: field `"), "{msg}");
            match err {
                NodeError::Config { field: f, .. } => assert_eq!(f, field, "{text:?} -> {msg}"),
                other => panic!("{other}"),
            }
        }
    }

    #[test]
    fn broker_urls_are_the_contracts() {
        // The grammar is tested in blastnet_contract::broker; here only
        // that the node takes what it accepts and names the field.
        let cfg = NodeConfig::from_toml(
            "[mqtt]\nurl = \"127.0.0.1:1999\"\n",
            "n.toml",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            (
                cfg.runtime.mqtt.host.as_str(),
                cfg.runtime.mqtt.port,
                cfg.runtime.mqtt.tls
            ),
            ("127.0.0.1", 1999, false)
        );
        let err = NodeConfig::from_toml("[mqtt]\nurl = \"mqtt://h:x\"\n", "n.toml", Path::new("."))
            .unwrap_err();
        assert!(
            err.to_string().contains("expected mqtt://host[:port]"),
            "{err}"
        );
    }

    #[test]
    fn the_example_pi_config_in_hardware_is_valid() {
        let text = include_str!("../../hardware/node.toml").replace(
            "password_file = \"/etc/blastnet/mqtt-password\"",
            "password = \"secret\"",
        );
        let cfg =
            NodeConfig::from_toml(&text, "hardware/node.toml", Path::new("/etc/blastnet")).unwrap();
        assert_eq!(cfg.runtime.mqtt.username.as_deref(), Some("pi-north-01"));
        match cfg.source {
            SourceConfig::Capture(c) => {
                assert_eq!(
                    c.channels,
                    vec![Some(StreamKind::Acoustic), Some(StreamKind::Seismic)]
                );
                assert_eq!(c.sample_rate, 48_000);
                assert_eq!(c.period_frames, None, "the device's own period by default");
            }
            other => panic!("the Pi example captures, got {other:?}"),
        }
    }

    #[test]
    fn for_replay_uses_defaults() {
        let rt = NodeRuntimeConfig::for_replay(
            "n02",
            "test",
            "mqtt://127.0.0.1:5555",
            Path::new("/tmp/s"),
        )
        .unwrap();
        assert_eq!(rt.mqtt.port, 5555);
        assert_eq!(rt.state_dir, Path::new("/tmp/s"));
        assert_eq!(rt.status_topic(), "blastnet/test/node/n02/status");
    }
}
