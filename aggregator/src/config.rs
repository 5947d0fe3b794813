//! Configuration in two steps: [`RawConfig`] is what the TOML file says (serde,
//! every key optional, unknown keys refused), [`AggregatorConfig`] is the
//! validated runtime type. Every error names the file and the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blastnet_aggregator_core::EngineConfig;
use blastnet_contract::{topic, BrokerUrl, Check, FieldError};
use serde::Deserialize;

/// The commented default configuration (`blastnet aggregator --print-config`).
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

/// Why a configuration was refused. The CLI prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read. Fix the path or permissions.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or a key has the wrong type or is unknown.
    #[error("{origin}: {message}")]
    Syntax {
        /// File name (or `"<default>"`).
        origin: String,
        /// toml's message, which names the key and the line.
        message: String,
    },
    /// A value parses but is not acceptable.
    #[error("{origin}: field `{field}`: {message}")]
    Field {
        /// File name (or `"<built-in>"`).
        origin: String,
        /// Dotted key, e.g. `mqtt.broker`.
        field: String,
        /// What was expected.
        message: String,
    },
}

/// `[mqtt]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqtt {
    /// `mqtt://host[:port]`.
    pub broker: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// With `mqtts://`: the CA certificate (PEM) the broker's certificate
    /// must chain to (default: the system's web roots).
    pub ca_file: Option<PathBuf>,
    /// Client id.
    pub client_id: Option<String>,
    /// Persistent session unless true.
    pub clean_session: Option<bool>,
    /// Topic prefix.
    pub prefix: Option<String>,
    /// Sites, or `["+"]`.
    pub sites: Option<Vec<String>>,
    /// MQTT keep-alive, seconds.
    pub keep_alive_s: Option<u64>,
    /// Start-up wait for the broker, seconds.
    pub connect_timeout_s: Option<f64>,
    /// Publish the retained availability topic (and its last will).
    pub availability: Option<bool>,
}

/// `[homeassistant]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawHomeAssistant {
    /// Publish Home Assistant MQTT discovery configs.
    pub enabled: Option<bool>,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: Option<String>,
}

/// `[store]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// SQLite file or `:memory:`.
    pub path: Option<PathBuf>,
    /// `revisions` or `latest`.
    pub keep: Option<String>,
    /// Bytes of snippets (waveform evidence) kept at most.
    pub snippet_budget_bytes: Option<u64>,
}

/// `[http]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// `ip:port`.
    pub listen: Option<String>,
    /// Bearer token every request must carry (required off loopback).
    pub token: Option<String>,
    /// File holding the token (first line).
    pub token_file: Option<PathBuf>,
    /// Origins (scheme://host:port) a websocket may come from besides the
    /// server's own.
    pub allowed_origins: Option<Vec<String>>,
    /// Seconds a client has to send a request's headers (and an idle
    /// keep-alive connection is kept).
    pub header_timeout_s: Option<f64>,
    /// Open connections at most; more are closed at once.
    pub max_connections: Option<usize>,
}

/// `[map]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawMap {
    /// Tile URL template with `{z}`, `{x}`, `{y}` (and optionally `{s}`);
    /// empty: no tiles.
    pub tile_url: Option<String>,
    /// Attribution shown on the map for the tiles (their licence asks for it).
    pub tile_attribution: Option<String>,
}

/// `[time]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawTime {
    /// `wall` or `nodes`.
    pub base: Option<String>,
    /// Wall-clock lateness, seconds.
    pub lateness_s: Option<f64>,
    /// Tick period, milliseconds.
    pub tick_ms: Option<u64>,
}

/// `[ingest]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawIngest {
    /// Seconds of data time detections are remembered behind the watermark.
    pub retention_s: Option<f64>,
    /// Largest accepted payload.
    pub max_payload_bytes: Option<usize>,
    /// Write each accepted message to the store's inbox before acknowledging it.
    pub inbox: Option<bool>,
    /// Nodes a site may have.
    pub max_nodes_per_site: Option<usize>,
}

/// One `[[webhook]]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebhook {
    /// `http://host[:port]/path`.
    pub url: Option<String>,
    /// Kinds sent (default: all).
    pub kinds: Option<Vec<String>>,
    /// Least confidence sent.
    pub min_confidence: Option<f64>,
    /// `[south, west, north, east]`, degrees.
    pub area: Option<[f64; 4]>,
}

/// The whole file as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[mqtt]`.
    pub mqtt: RawMqtt,
    /// `[store]`.
    pub store: RawStore,
    /// `[http]`.
    pub http: RawHttp,
    /// `[map]`.
    pub map: RawMap,
    /// `[time]`.
    pub time: RawTime,
    /// `[ingest]`.
    pub ingest: RawIngest,
    /// `[homeassistant]`.
    pub homeassistant: RawHomeAssistant,
    /// `[[webhook]]`, any number.
    pub webhook: Vec<RawWebhook>,
    /// `[engine]`: overlaid on [`EngineConfig::default`].
    pub engine: toml::Table,
}

/// Broker connection and subscriptions.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
    /// `mqtts://`: TLS, with this CA certificate file if given (else the
    /// system's web roots). Needs the `tls` cargo feature.
    pub tls: Option<Option<PathBuf>>,
    /// Fixed client id (persistent sessions are per client id).
    pub client_id: String,
    /// False (the default) keeps a persistent session at the broker.
    pub clean_session: bool,
    /// Topic prefix, default `blastnet`.
    pub prefix: String,
    /// Sites subscribed; `+` for all.
    pub sites: Vec<String>,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// How long [`crate::start`] waits for the subscriptions to be acknowledged.
    pub connect_timeout: Duration,
    /// Publish `online` (retained) on
    /// [`topic::aggregator_availability`] at every connect, `offline` at a
    /// clean stop, with `offline` as the last will.
    pub availability: bool,
}

/// Home Assistant MQTT discovery (`[homeassistant]`, off by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeAssistantConfig {
    /// Home Assistant's discovery prefix (its default `homeassistant`).
    pub discovery_prefix: String,
}

/// Where events are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorePath {
    /// An in-memory database (gone at exit).
    Memory,
    /// A SQLite file (created if missing).
    File(PathBuf),
}

/// Which revisions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepRevisions {
    /// Every revision of every event (and the latest, for queries).
    All,
    /// Only the latest revision of each event.
    Latest,
}

/// Event store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// File or memory.
    pub path: StorePath,
    /// Revisions kept.
    pub keep: KeepRevisions,
    /// Bytes of snippets (waveform evidence) kept at most; the oldest (by
    /// data time) are deleted beyond it. 0 keeps none.
    pub snippet_budget_bytes: u64,
}

/// What drives the watermark that finalises events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBase {
    /// Live: now minus a lateness.
    Wall,
    /// Replay: the nodes' status times.
    Nodes,
}

/// Watermark settings.
#[derive(Debug, Clone)]
pub struct TimeConfig {
    /// Wall or nodes.
    pub base: TimeBase,
    /// Wall mode: watermark = now - lateness.
    pub lateness: Duration,
    /// How often the watermark is advanced.
    pub tick: Duration,
    /// Nodes mode: the nodes whose data time the watermark waits for (a
    /// replay sets its manifest's nodes). Until each has reported, nothing is
    /// judged; the replay is complete once each has gone offline. Empty: the
    /// nodes heard so far (a node whose replay starts after the others have
    /// finished would otherwise be judged absent, its picks arriving too late).
    pub expect_nodes: Vec<String>,
}

/// Ingest limits.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Seconds of data time accepted detections are remembered behind the watermark.
    pub retention_s: f64,
    /// Largest accepted payload, bytes.
    pub max_payload_bytes: usize,
    /// With a file store: every accepted message is written to the store's
    /// inbox before the broker gets its acknowledgement, and read again at
    /// start, so a crash loses nothing that was acknowledged. Replays turn it
    /// off (their inputs are files already).
    pub inbox: bool,
    /// Nodes a site may have; statuses and detections of further new node
    /// ids are refused (reason `node_limit`), so random ids cannot grow the
    /// registry without bound.
    pub max_nodes_per_site: usize,
}

impl HttpConfig {
    /// A non-loopback address serves the site's network: refused without a token.
    pub fn check_listen(&self, listen: SocketAddr) -> Result<(), String> {
        if listen.ip().is_loopback() || self.token.is_some() {
            Ok(())
        } else {
            Err(format!(
                "{listen} is reachable from other machines, and no http.token (or http.token_file) is set: \
                 set one (every request then needs `Authorization: Bearer <token>`), or listen on 127.0.0.1"
            ))
        }
    }
}

/// HTTP access control and limits.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Bearer token (`Authorization: Bearer …`, or `?token=` for the map page
    /// and its websocket); `None`: no authentication, loopback only.
    pub token: Option<String>,
    /// Websocket origins allowed besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Time to send a request's headers, and idle keep-alive limit.
    pub header_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// The live map's background (`[map]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MapConfig {
    /// Tile URL template (`https://tile.openstreetmap.org/{z}/{x}/{y}.png`);
    /// empty: no tiles, the page draws its metric grid. When tiles cannot
    /// load (the field has no internet), the page falls back to the grid too.
    pub tile_url: String,
    /// Attribution shown with the tiles.
    pub tile_attribution: String,
}

/// The validated aggregator configuration.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Broker and topics.
    pub mqtt: MqttConfig,
    /// Event store.
    pub store: StoreConfig,
    /// HTTP listen address; port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// HTTP access and limits.
    pub http: HttpConfig,
    /// The live map's tiles.
    pub map: MapConfig,
    /// Watermark.
    pub time: TimeConfig,
    /// Ingest limits.
    pub ingest: IngestConfig,
    /// Home Assistant discovery, if enabled.
    pub homeassistant: Option<HomeAssistantConfig>,
    /// Webhooks final events are POSTed to.
    pub webhooks: Vec<crate::webhook::Webhook>,
    /// The engine's configuration.
    pub engine: EngineConfig,
}

impl AggregatorConfig {
    /// The built-in defaults with `broker` (`mqtt://host:port`) as the broker:
    /// the starting point for `blastnet replay` and `demo`, which then set
    /// `time.base`, `http_listen`, `store.path`, ... directly.
    pub fn for_broker(broker: &str) -> Result<AggregatorConfig, ConfigError> {
        let mut raw = RawConfig::default();
        raw.mqtt.broker = Some(broker.to_string());
        raw.validate("<built-in>", None)
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<AggregatorConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        raw.validate(origin, None)
    }

    /// Read, parse and validate a file; relative paths in it (`store.path`,
    /// `mqtt.password_file`) are taken relative to the file's folder.
    pub fn from_file(path: &Path) -> Result<AggregatorConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        raw.validate(&origin, path.parent())
    }

    /// [`AggregatorConfig::from_file`] listing every error at once
    /// (`blastnet aggregator --check`). A file that cannot be read or parsed
    /// gives one error.
    pub fn from_file_all(path: &Path) -> Result<AggregatorConfig, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            vec![ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }]
        })?;
        let origin = path.display().to_string();
        let raw: RawConfig = toml::from_str(&text).map_err(|e| {
            vec![ConfigError::Syntax {
                origin: origin.clone(),
                message: e.to_string(),
            }]
        })?;
        raw.validate_all(&origin, path.parent())
    }
}

/// A secret given inline or in a file (not both): its text, if any.
fn secret(
    origin: &str,
    (key, inline): (&str, Option<String>),
    (file_key, file): (&str, Option<PathBuf>),
) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(field_err(
            origin,
            file_key,
            format!("give either {key} or {file_key}, not both"),
        )),
        (Some(t), None) => Ok(Some(t)),
        (None, Some(f)) => std::fs::read_to_string(&f).map(Some).map_err(|e| {
            field_err(
                origin,
                file_key,
                format!("cannot read {}: {e}", f.display()),
            )
        }),
        (None, None) => Ok(None),
    }
}

fn field_err(origin: &str, field: &str, message: impl Into<String>) -> ConfigError {
    Check::new(origin).err(field, message).into()
}

impl From<FieldError> for ConfigError {
    fn from(e: FieldError) -> ConfigError {
        ConfigError::Field {
            origin: e.file,
            field: e.field,
            message: e.message,
        }
    }
}

fn engine_config(origin: &str, table: toml::Table) -> Result<EngineConfig, ConfigError> {
    // EngineConfig is `#[serde(default)]`: the section may give any subset.
    let engine: EngineConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "engine".to_string()
            } else {
                format!("engine.{path}")
            };
            field_err(origin, &field, e.into_inner().to_string())
        })?;
    engine
        .validate()
        .map_err(|e| field_err(origin, "engine", e.to_string()))?;
    Ok(engine)
}

/// `[map]`: an empty `tile_url` (no tiles), or an http(s) URL template
/// with `{z}`, `{x}` and `{y}`.
fn map_config(c: &Check, raw: RawMap) -> Result<MapConfig, ConfigError> {
    let tile_url = raw.tile_url.unwrap_or_default().trim().to_string();
    if !tile_url.is_empty() {
        c.ensure(
            (tile_url.starts_with("http://") || tile_url.starts_with("https://"))
                && ["{z}", "{x}", "{y}"].iter().all(|p| tile_url.contains(p)),
            "map.tile_url",
            format!(
                "expected \"\" (no tiles) or an http(s) URL template with {{z}}, {{x}} and {{y}} \
                 such as \"https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png\", got {tile_url:?}"
            ),
        )?;
    }
    Ok(MapConfig {
        tile_url,
        tile_attribution: raw.tile_attribution.unwrap_or_default(),
    })
}

/// Errors gathered while validating, so `--check` can list every one.
struct Errors(Vec<ConfigError>);

impl Errors {
    /// Keep going: remember the error of `r` (if any) and return its value.
    fn take<T, E: Into<ConfigError>>(&mut self, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e.into());
                None
            }
        }
    }
}

impl RawConfig {
    /// Validate into the runtime type. `base_dir` resolves relative paths.
    /// Stops at the first error; [`RawConfig::validate_all`] lists them all.
    pub fn validate(
        self,
        origin: &str,
        base_dir: Option<&Path>,
    ) -> Result<AggregatorConfig, ConfigError> {
        self.validate_all(origin, base_dir).map_err(|mut errors| {
            // validate_all never answers Err with an empty list.
            errors.swap_remove(0)
        })
    }

    /// Validate into the runtime type, returning every error found: the
    /// independent checks all run; a field's later checks, which depend on
    /// its earlier ones, stop at the first. Never `Err(vec![])`.
    pub fn validate_all(
        self,
        origin: &str,
        base_dir: Option<&Path>,
    ) -> Result<AggregatorConfig, Vec<ConfigError>> {
        let resolve = |p: PathBuf| match base_dir {
            Some(d) if p.is_relative() => d.join(p),
            _ => p,
        };
        let c = Check::new(origin);
        let mut e = Errors(Vec::new());
        let m = self.mqtt;

        let broker = m
            .broker
            .unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());
        let ca_file = m.ca_file.map(resolve);
        let endpoint = e.take((|| -> Result<_, ConfigError> {
            let BrokerUrl { host, port, tls } =
                BrokerUrl::parse(&broker).map_err(|e| c.err("mqtt.broker", e.to_string()))?;
            c.ensure(
                !tls || cfg!(feature = "tls"),
                "mqtt.broker",
                format!("expected mqtt:// (this build has no TLS: mqtts:// needs the `tls` cargo feature), got {broker:?}"),
            )?;
            c.ensure(
                tls || ca_file.is_none(),
                "mqtt.ca_file",
                format!("is set but mqtt.broker {broker:?} is not mqtts://; expected an mqtts:// broker or no ca_file"),
            )?;
            if let Some(f) = &ca_file {
                c.ensure(
                    f.is_file(),
                    "mqtt.ca_file",
                    format!(
                        "{}: expected a readable CA certificate file (PEM)",
                        f.display()
                    ),
                )?;
            }
            Ok((host, port, tls.then_some(ca_file)))
        })());
        let credentials = e.take((|| -> Result<_, ConfigError> {
            let password = secret(
                origin,
                ("mqtt.password", m.password),
                ("mqtt.password_file", m.password_file.map(resolve)),
            )?
            .map(|text| text.trim_end_matches(['\r', '\n']).to_string());
            match (m.username, password) {
                (Some(u), Some(p)) => Ok(Some((u, p))),
                (Some(u), None) => Ok(Some((u, String::new()))),
                (None, Some(_)) => Err(field_err(
                    origin,
                    "mqtt.username",
                    "a password is given but no username",
                )),
                (None, None) => Ok(None),
            }
        })());
        let availability = m.availability.unwrap_or(true);
        let client_id = e.take((|| -> Result<_, ConfigError> {
            let client_id = m
                .client_id
                .unwrap_or_else(|| "blastnet-aggregator".to_string());
            if client_id.is_empty() || client_id.len() > 256 {
                return Err(field_err(
                    origin,
                    "mqtt.client_id",
                    "must be 1..256 characters (a fixed id keeps the persistent session)",
                ));
            }
            if availability {
                topic::check_level(&client_id, false).map_err(|e| {
                    c.err(
                        "mqtt.client_id",
                        format!(
                            "it names the availability topic: {e} (or set mqtt.availability = false)"
                        ),
                    )
                })?;
            }
            Ok(client_id)
        })());
        let prefix = m
            .prefix
            .unwrap_or_else(|| topic::DEFAULT_PREFIX.to_string());
        let prefix = e.take(
            topic::check_prefix(&prefix)
                .map(|()| prefix)
                .map_err(|e| c.err("mqtt.prefix", e)),
        );
        let sites = e.take((|| -> Result<_, ConfigError> {
            let sites = m.sites.unwrap_or_else(|| vec!["+".to_string()]);
            if sites.is_empty() {
                return Err(field_err(
                    origin,
                    "mqtt.sites",
                    "list at least one site, or [\"+\"] for all",
                ));
            }
            for (i, s) in sites.iter().enumerate() {
                topic::check_level(s, true).map_err(|e| c.err(&format!("mqtt.sites[{i}]"), e))?;
            }
            Ok(sites)
        })());
        let keep_alive_s = e.take(c.within(
            "mqtt.keep_alive_s",
            m.keep_alive_s.unwrap_or(30),
            5,
            3600,
            "seconds",
        ));
        let connect_timeout_s = m.connect_timeout_s.unwrap_or(10.0);
        let connect_timeout_s = e
            .take(c.ensure(
                connect_timeout_s.is_finite()
                    && connect_timeout_s > 0.0
                    && connect_timeout_s <= 3600.0,
                "mqtt.connect_timeout_s",
                "expected a number of seconds in (0, 3600]",
            ))
            .map(|()| connect_timeout_s);

        let store_path = e.take(match self.store.path {
            None => Ok(StorePath::File(resolve(PathBuf::from(
                "blastnet-events.db",
            )))),
            Some(p) if p.as_os_str() == ":memory:" => Ok(StorePath::Memory),
            Some(p) if p.as_os_str().is_empty() => Err(field_err(
                origin,
                "store.path",
                "must not be empty (use \":memory:\" to keep nothing)",
            )),
            Some(p) => Ok(StorePath::File(resolve(p))),
        });
        let keep = e.take(c.one_of(
            "store.keep",
            self.store.keep.as_deref().unwrap_or("revisions"),
            &[
                ("revisions", KeepRevisions::All),
                ("latest", KeepRevisions::Latest),
            ],
        ));

        let listen = self
            .http
            .listen
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let http_listen: Option<SocketAddr> = e.take(listen.parse().map_err(|_| {
            field_err(
                origin,
                "http.listen",
                format!("expected ip:port such as 127.0.0.1:8080, got {listen:?}"),
            )
        }));
        let token = e.take((|| -> Result<_, ConfigError> {
            let token = secret(
                origin,
                ("http.token", self.http.token),
                ("http.token_file", self.http.token_file.map(resolve)),
            )?
            .map(|text| text.lines().next().unwrap_or_default().trim().to_string());
            if let Some(t) = &token {
                c.ensure(
                    t.len() >= 16 && t.bytes().all(|b| b.is_ascii_graphic()),
                    "http.token",
                    "expected at least 16 printable ASCII characters (e.g. `openssl rand -hex 24`)",
                )?;
            }
            Ok(token)
        })());
        let header_timeout_s = self.http.header_timeout_s.unwrap_or(10.0);
        let header_timeout_s = e
            .take(c.ensure(
                header_timeout_s.is_finite() && (0.1..=600.0).contains(&header_timeout_s),
                "http.header_timeout_s",
                "expected 0.1 to 600 seconds",
            ))
            .map(|()| header_timeout_s);
        let max_connections = e.take(c.within(
            "http.max_connections",
            self.http.max_connections.unwrap_or(1024),
            1,
            1_000_000,
            "connections",
        ));
        let http = match (token, header_timeout_s, max_connections) {
            (Some(token), Some(header_timeout_s), Some(max_connections)) => Some(HttpConfig {
                token,
                allowed_origins: self.http.allowed_origins.unwrap_or_default(),
                header_timeout: Duration::from_secs_f64(header_timeout_s),
                max_connections,
            }),
            _ => None,
        };
        if let (Some(http), Some(listen)) = (&http, http_listen) {
            e.take(
                http.check_listen(listen)
                    .map_err(|e| field_err(origin, "http.listen", e)),
            );
        }

        let map = e.take(map_config(&c, self.map));

        let base = e.take(c.one_of(
            "time.base",
            self.time.base.as_deref().unwrap_or("wall"),
            &[("wall", TimeBase::Wall), ("nodes", TimeBase::Nodes)],
        ));
        let lateness = e.take(c.secs(
            "time.lateness_s",
            self.time.lateness_s.unwrap_or(2.0),
            0.0,
            3600.0,
        ));
        let tick_ms = e.take(c.within(
            "time.tick_ms",
            self.time.tick_ms.unwrap_or(100),
            1,
            60_000,
            "milliseconds",
        ));
        let retention_s = self.ingest.retention_s.unwrap_or(600.0);
        let retention_s = e
            .take(c.ensure(
                retention_s.is_finite() && retention_s >= 1.0,
                "ingest.retention_s",
                "expected at least 1 second",
            ))
            .map(|()| retention_s);
        let max_payload_bytes = e.take(c.within(
            "ingest.max_payload_bytes",
            self.ingest.max_payload_bytes.unwrap_or(65536),
            256,
            16 << 20,
            "bytes",
        ));
        let max_nodes_per_site = e.take(c.within(
            "ingest.max_nodes_per_site",
            self.ingest.max_nodes_per_site.unwrap_or(10_000),
            1,
            1_000_000,
            "nodes",
        ));
        let homeassistant = e.take(match self.homeassistant.enabled.unwrap_or(false) {
            false => Ok(None),
            true => {
                let discovery_prefix = self
                    .homeassistant
                    .discovery_prefix
                    .unwrap_or_else(|| "homeassistant".to_string());
                topic::check_prefix(&discovery_prefix)
                    .map(|()| Some(HomeAssistantConfig { discovery_prefix }))
                    .map_err(|e| c.err("homeassistant.discovery_prefix", e))
            }
        });
        let mut webhooks = Vec::new();
        for (i, w) in self.webhook.into_iter().enumerate() {
            let f = |k: &str| format!("webhook[{i}].{k}");
            let url = w
                .url
                .ok_or_else(|| c.err(&f("url"), "missing: the http:// URL to POST events to"))
                .and_then(|url| {
                    let (host, port, path) = crate::webhook::Webhook::parse_url(&url)
                        .map_err(|e| c.err(&f("url"), e))?;
                    Ok((url, host, port, path))
                });
            let url = e.take(url);
            let kinds = e.take(match w.kinds {
                None => Ok(None),
                Some(ks) => ks
                    .iter()
                    .map(|k| {
                        serde_json::from_value(serde_json::Value::String(k.clone())).map_err(|_| {
                            c.err(
                                &f("kinds"),
                                format!(
                                    "expected kinds among {:?}, got {k:?}",
                                    blastnet_contract::SourceKind::ALL.map(|k| k.as_str())
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
            });
            let min_confidence = w.min_confidence.unwrap_or(0.0);
            let min_confidence = e
                .take(c.ensure(
                    (0.0..=1.0).contains(&min_confidence),
                    &f("min_confidence"),
                    "expected a number from 0 to 1",
                ))
                .map(|()| min_confidence);
            let area = match w.area {
                Some([s, w_, n, e_]) => e.take(c.ensure(
                    (-90.0..=90.0).contains(&s)
                        && (-90.0..=90.0).contains(&n)
                        && (-180.0..=180.0).contains(&w_)
                        && (-180.0..=180.0).contains(&e_)
                        && s < n
                        && w_ < e_,
                    &f("area"),
                    "expected [south, west, north, east] in degrees, south < north, west < east",
                )),
                None => Some(()),
            };
            if let (Some((url, host, port, path)), Some(kinds), Some(min_confidence), Some(())) =
                (url, kinds, min_confidence, area)
            {
                webhooks.push(crate::webhook::Webhook {
                    url,
                    host,
                    port,
                    path,
                    kinds,
                    min_confidence,
                    area: w.area,
                });
            }
        }
        let engine = e.take(engine_config(origin, self.engine));

        let (
            Some((host, port, tls)),
            Some(credentials),
            Some(client_id),
            Some(prefix),
            Some(sites),
            Some(keep_alive_s),
            Some(connect_timeout_s),
            Some(store_path),
            Some(keep),
            Some(http_listen),
            Some(http),
            Some(map),
            Some(base),
            Some(lateness),
            Some(tick_ms),
            Some(retention_s),
            Some(max_payload_bytes),
            Some(max_nodes_per_site),
            Some(homeassistant),
            Some(engine),
        ) = (
            endpoint,
            credentials,
            client_id,
            prefix,
            sites,
            keep_alive_s,
            connect_timeout_s,
            store_path,
            keep,
            http_listen,
            http,
            map,
            base,
            lateness,
            tick_ms,
            retention_s,
            max_payload_bytes,
            max_nodes_per_site,
            homeassistant,
            engine,
        )
        else {
            return Err(e.0);
        };
        if !e.0.is_empty() {
            return Err(e.0);
        }

        Ok(AggregatorConfig {
            mqtt: MqttConfig {
                host,
                port,
                credentials,
                tls,
                client_id,
                clean_session: m.clean_session.unwrap_or(false),
                prefix,
                sites,
                keep_alive: Duration::from_secs(keep_alive_s),
                connect_timeout: Duration::from_secs_f64(connect_timeout_s),
                availability,
            },
            store: StoreConfig {
                path: store_path,
                keep,
                snippet_budget_bytes: self
                    .store
                    .snippet_budget_bytes
                    .unwrap_or(crate::store::DEFAULT_SNIPPET_BUDGET_BYTES),
            },
            http_listen,
            http,
            map,
            time: TimeConfig {
                base,
                lateness,
                tick: Duration::from_millis(tick_ms),
                expect_nodes: Vec::new(),
            },
            ingest: IngestConfig {
                retention_s,
                max_payload_bytes,
                inbox: self.ingest.inbox.unwrap_or(true),
                max_nodes_per_site,
            },
            homeassistant,
            webhooks,
            engine,
        })
    }
}

/// The default configuration followed by the engine's defaults, as printed by
/// `blastnet aggregator --print-config`.
pub fn print_config() -> String {
    let mut out = DEFAULT_CONFIG.to_string();
    match toml::to_string(&EngineConfig::default()) {
        Ok(engine) => {
            for line in engine.lines() {
                if line.trim().is_empty() {
                    out.push('\n');
                } else if let Some(rest) = line.strip_prefix('[') {
                    // Nested engine tables: `[x]` becomes `[engine.x]`.
                    out.push_str(&format!("# [engine.{rest}\n"));
                } else {
                    out.push_str(&format!("# {line}\n"));
                }
            }
        }
        Err(e) => out.push_str(&format!("# (engine defaults could not be printed: {e})\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_parses_to_the_documented_defaults() {
        let c = AggregatorConfig::from_toml_str(DEFAULT_CONFIG, "<default>").expect("default");
        assert_eq!(c.mqtt.host, "127.0.0.1");
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.mqtt.prefix, "blastnet");
        assert_eq!(c.mqtt.sites, vec!["+".to_string()]);
        assert!(!c.mqtt.clean_session);
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.time.base, TimeBase::Wall);
        assert_eq!(c.time.lateness, Duration::from_secs(2));
        assert_eq!(c.time.tick, Duration::from_millis(100));
        assert_eq!(c.store.keep, KeepRevisions::All);
        assert!(c.mqtt.availability);
        assert_eq!(c.homeassistant, None);
        assert_eq!(c.map, MapConfig::default(), "no tiles by default");
    }

    #[test]
    fn map_tile_url_is_empty_or_an_http_template_with_z_x_y() {
        let osm = "[map]\ntile_url = \"https://tile.openstreetmap.org/{z}/{x}/{y}.png\"\n\
                   tile_attribution = \"© OpenStreetMap contributors\"";
        let c = AggregatorConfig::from_toml_str(osm, "t").expect("OSM");
        assert_eq!(
            c.map.tile_url,
            "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
        );
        assert_eq!(c.map.tile_attribution, "© OpenStreetMap contributors");
        for bad in [
            "tile.openstreetmap.org/{z}/{x}/{y}.png",
            "https://tile.openstreetmap.org/{z}/{x}.png",
            "file:///tiles/{z}/{x}/{y}.png",
        ] {
            let e = AggregatorConfig::from_toml_str(&format!("[map]\ntile_url = \"{bad}\""), "t")
                .expect_err(bad)
                .to_string();
            assert!(e.contains("map.tile_url") && e.contains("{z}"), "{e}");
        }
        let shipped = include_str!("../../hardware/aggregator.toml");
        let c = AggregatorConfig::from_toml_str(shipped, "hardware/aggregator.toml")
            .expect("the field config");
        assert!(
            c.map.tile_url.contains("openstreetmap")
                && c.map.tile_attribution.contains("OpenStreetMap")
        );
    }

    #[test]
    fn home_assistant_discovery_is_off_unless_enabled() {
        let c =
            AggregatorConfig::from_toml_str("[homeassistant]\nenabled = true", "t").expect("ok");
        assert_eq!(
            c.homeassistant,
            Some(HomeAssistantConfig {
                discovery_prefix: "homeassistant".into()
            })
        );
        let c = AggregatorConfig::from_toml_str("[homeassistant]\ndiscovery_prefix = \"ha\"", "t")
            .expect("ok");
        assert_eq!(c.homeassistant, None);
        // A client id that is no topic level is fine without availability.
        let c = AggregatorConfig::from_toml_str(
            "[mqtt]\nclient_id = \"a/b\"\navailability = false",
            "t",
        )
        .expect("ok");
        assert!(!c.mqtt.availability);
    }

    #[test]
    fn the_printed_config_parses_too() {
        AggregatorConfig::from_toml_str(&print_config(), "<printed>").expect("printed parses");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[mqtt]\nbroker = \"ftp://x\"", "mqtt.broker"),
            ("[mqtt]\nsites = [\"a/b\"]", "mqtt.sites[0]"),
            ("[mqtt]\nprefix = \"/x\"", "mqtt.prefix"),
            ("[http]\nlisten = \"localhost\"", "http.listen"),
            ("[time]\nbase = \"sundial\"", "time.base"),
            ("[time]\nlateness_s = -1.0", "time.lateness_s"),
            ("[store]\nkeep = \"some\"", "store.keep"),
            ("[mqtt]\npassword = \"p\"", "mqtt.username"),
            ("[mqtt]\nclient_id = \"a/b\"", "mqtt.client_id"),
            ("[[webhook]]\nurl = \"https://x/\"", "webhook[0].url"),
            (
                "[[webhook]]\nurl = \"http://x/\"\nkinds = [\"boom\"]",
                "webhook[0].kinds",
            ),
            (
                "[[webhook]]\nurl = \"http://x/\"\narea = [41.0, -80.0, 40.0, -79.0]",
                "webhook[0].area",
            ),
            (
                "[homeassistant]\nenabled = true\ndiscovery_prefix = \"ha/\"",
                "homeassistant.discovery_prefix",
            ),
        ];
        for (text, field) in cases {
            let e = AggregatorConfig::from_toml_str(text, "a.toml").expect_err(text);
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("`{field}`")) && msg.starts_with("a.toml"),
                "{text}: {msg}"
            );
        }
        let e = AggregatorConfig::from_toml_str("[mqtt]\nbrokr = \"x\"", "a.toml")
            .expect_err("unknown key");
        assert!(e.to_string().contains("brokr"), "{e}");
    }

    #[test]
    fn broker_urls_are_the_contracts_and_tls_needs_the_feature() {
        // The grammar is tested in blastnet_contract::broker.
        let c = AggregatorConfig::for_broker("10.0.0.2:1884").expect("bare host:port");
        assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("10.0.0.2", 1884));
        let c = AggregatorConfig::for_broker("mqtt://[::1]").expect("ipv6");
        assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("::1", 1883));
        let tls = AggregatorConfig::for_broker("mqtts://x");
        assert_eq!(tls.is_ok(), cfg!(feature = "tls"), "{tls:?}");
        if let Ok(c) = tls {
            assert_eq!((c.mqtt.port, c.mqtt.tls), (8883, Some(None)));
        }
        let e = AggregatorConfig::from_toml_str(
            "[mqtt]\nbroker = \"mqtt://x\"\nca_file = \"ca.crt\"",
            "a.toml",
        )
        .expect_err("ca_file without TLS");
        assert!(e.to_string().contains("mqtt.ca_file"), "{e}");
        for bad in ["http://x", "mqtt://x:0"] {
            let e = AggregatorConfig::for_broker(bad).expect_err(bad);
            assert!(
                e.to_string().contains("`mqtt.broker`: expected mqtt://"),
                "{e}"
            );
        }
    }

    #[test]
    fn memory_store_and_port_zero_are_allowed() {
        let c = AggregatorConfig::from_toml_str(
            "[store]\npath = \":memory:\"\n[http]\nlisten = \"127.0.0.1:0\"",
            "t",
        )
        .expect("ok");
        assert_eq!(c.store.path, StorePath::Memory);
        assert_eq!(c.http_listen.port(), 0);
    }
}
