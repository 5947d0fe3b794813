//! The recording manifest (`recordings/<scenario>/manifest.json`, SPEC v1).
//!
//! Parsing is two steps: serde into these types (an error names the JSON path
//! of the field and what was expected), then [`Manifest::validate`] for what
//! serde cannot check (ranges, uniqueness, the format string).

use serde::{Deserialize, Serialize};

use crate::check::{Check, FieldError};
use crate::geo::Geodetic;
use crate::time::UtcNs;
use crate::wire::{SourceKind, StreamKind};

/// The `format` string of a v1 manifest.
pub const MANIFEST_FORMAT: &str = "blastnet-recording/1";

/// A scenario: nodes, their WAV streams, optional environment and truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Scenario name.
    pub name: String,
    /// Free text, provenance, licence.
    #[serde(default)]
    pub description: String,
    /// Extension: the deployment site the recording was made at (the MQTT
    /// `{site}` a replay publishes under; default: the scenario name).
    /// Recordings of one deployment share it, so that what a replay teaches
    /// the aggregator about the site (its station terms and timing-error
    /// scale, kept in a store) applies to the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Air temperature and wind during the recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// The sensor nodes.
    pub nodes: Vec<NodeSpec>,
    /// Ground truth, for evaluation only: the detection and location path never reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth: Option<Vec<TruthSource>>,
}

/// Weather during a recording.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Air temperature near the ground, °C.
    pub temperature_c: f64,
    /// Air velocity [east, north], m/s, the direction the wind blows TO.
    #[serde(default)]
    pub wind_mps: [f64; 2],
    /// Extension: relative humidity, %. Nodes use it for the atmospheric
    /// absorption their onset picks allow for (ISO 9613-1); absent: the
    /// detector's configured air.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_humidity_pct: Option<f64>,
}

/// One node of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Node id (MQTT topic segment).
    pub id: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Altitude, metres.
    pub alt_m: f64,
    /// Extension: 1-sigma error of the surveyed position projected on a
    /// ray, m (for a GPS fix with per-axis sigmas h, h, v:
    /// sqrt((2h² + v²)/3)). The aggregator adds it to every arrival's
    /// timing error. Absent: unknown (the aggregator's model error only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_uncertainty_m: Option<f64>,
    /// Its streams; several of one kind are consecutive files in time order.
    pub streams: Vec<StreamSpec>,
}

impl NodeSpec {
    /// The node's position.
    pub fn position(&self) -> Geodetic {
        Geodetic::new(self.lat, self.lon, self.alt_m)
    }
}

/// One channel of one WAV file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// WAV file, relative to the manifest's folder.
    pub file: String,
    /// Channel index (0-based).
    #[serde(default)]
    pub channel: u16,
    /// Sensor kind.
    pub kind: StreamKind,
    /// UTC of the first sample.
    pub start_utc: UtcNs,
    /// Physical units per full-scale sample value (Pa/FS or (m/s)/FS); 1.0 when unknown.
    #[serde(default = "one")]
    pub sensitivity: f64,
}

fn one() -> f64 {
    1.0
}

/// A true source, for evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthSource {
    /// Source time.
    pub time_utc: UtcNs,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Altitude, metres.
    pub alt_m: f64,
    /// Class.
    pub kind: SourceKind,
    /// Extension: charge in kg TNT (explosions), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yield_kg_tnt: Option<f64>,
    /// Extension: free-text label ("airburst intercept", "9mm handgun").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Why a manifest was refused. Every variant names the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not JSON of the right shape: `path` is the JSON path (`nodes[2].streams[0].start_utc`).
    /// The caller should report it and not use the manifest.
    #[error("{source_name}: field `{path}`: {message}")]
    Field {
        /// File or other origin of the text.
        source_name: String,
        /// JSON path of the field.
        path: String,
        /// What was wrong and what was expected.
        message: String,
    },
}

impl From<FieldError> for ManifestError {
    fn from(e: FieldError) -> ManifestError {
        ManifestError::Field {
            source_name: e.file,
            path: e.field,
            message: e.message,
        }
    }
}

impl ManifestError {
    fn field(source_name: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        ManifestError::Field {
            source_name: source_name.to_string(),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Nodes a manifest may have: a replay runs every node as its own node
/// runtime (a thread, a spool, a broker connection), all at once.
pub const MAX_NODES: usize = 1024;

/// Largest manifest file read, bytes (a 1,024-node manifest with a few
/// streams each and its truth is well under 4 MB).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

impl Manifest {
    /// A manifest for a recording blastnet writes itself (kept node audio, a
    /// bare WAV): v1 format, no environment, no ground truth.
    pub fn new(name: String, description: String, nodes: Vec<NodeSpec>) -> Manifest {
        Manifest {
            site: None,
            format: MANIFEST_FORMAT.into(),
            name,
            description,
            environment: None,
            nodes,
            truth: None,
        }
    }

    /// Parse and validate a manifest's JSON text; `source_name` (usually the
    /// file path) is named in every error.
    pub fn from_json(text: &str, source_name: &str) -> Result<Manifest, ManifestError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = if inner.is_eof() {
                format!(
                    "file ends early at line {}: expected more JSON",
                    inner.line()
                )
            } else if inner.is_syntax() {
                format!(
                    "not valid JSON at line {} column {}: {inner}",
                    inner.line(),
                    inner.column()
                )
            } else {
                inner.to_string()
            };
            ManifestError::field(
                source_name,
                if path == "." {
                    "(top level)".into()
                } else {
                    path
                },
                msg,
            )
        })?;
        manifest.validate(source_name)?;
        Ok(manifest)
    }

    /// Serialise to pretty JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Check what serde cannot: the format string, ranges, unique ids.
    pub fn validate(&self, src: &str) -> Result<(), ManifestError> {
        let c = Check::new(src);
        c.ensure(
            self.format == MANIFEST_FORMAT,
            "format",
            format!("expected \"{MANIFEST_FORMAT}\", got {:?}", self.format),
        )?;
        c.ensure(
            !self.nodes.is_empty(),
            "nodes",
            "expected at least one node",
        )?;
        c.ensure(
            self.nodes.len() <= MAX_NODES,
            "nodes",
            format!(
                "expected at most {MAX_NODES} nodes (a replay runs each as its own node runtime with its own broker connection), got {}; split the recording",
                self.nodes.len()
            ),
        )?;
        if let Some(env) = &self.environment {
            c.ensure(
                (-80.0..=70.0).contains(&env.temperature_c),
                "environment.temperature_c",
                format!(
                    "expected an air temperature in -80..70 °C, got {}",
                    env.temperature_c
                ),
            )?;
            c.ensure(
                env.wind_mps
                    .iter()
                    .all(|w| w.is_finite() && w.abs() <= 100.0),
                "environment.wind_mps",
                "expected [east, north] in m/s, each within ±100",
            )?;
            if let Some(rh) = env.relative_humidity_pct {
                c.ensure(
                    rh > 0.0 && rh <= 100.0,
                    "environment.relative_humidity_pct",
                    format!("expected a relative humidity in (0, 100] %, got {rh}"),
                )?;
            }
        }
        c.node_ids(self.nodes.iter().map(|n| n.id.as_str()), &[])?;
        for (i, node) in self.nodes.iter().enumerate() {
            let at = |f: &str| format!("nodes[{i}].{f}");
            check_position(&c, &at(""), node.lat, node.lon, node.alt_m)?;
            if let Some(u) = node.position_uncertainty_m {
                c.ensure(
                    u.is_finite() && (0.0..=1000.0).contains(&u),
                    &at("position_uncertainty_m"),
                    format!("expected metres in 0..=1000, got {u}"),
                )?;
            }
            c.ensure(
                !node.streams.is_empty(),
                &at("streams"),
                "expected at least one stream",
            )?;
            for (j, s) in node.streams.iter().enumerate() {
                c.ensure(
                    !s.file.is_empty(),
                    &at(&format!("streams[{j}].file")),
                    "expected a WAV file name",
                )?;
                c.ensure(
                    s.sensitivity.is_finite() && s.sensitivity > 0.0,
                    &at(&format!("streams[{j}].sensitivity")),
                    format!(
                        "expected a positive number (units per full scale), got {}",
                        s.sensitivity
                    ),
                )?;
            }
        }
        for (i, t) in self.truth.iter().flatten().enumerate() {
            check_position(&c, &format!("truth[{i}]."), t.lat, t.lon, t.alt_m)?;
        }
        Ok(())
    }
}

fn check_position(
    c: &Check<'_>,
    prefix: &str,
    lat: f64,
    lon: f64,
    alt: f64,
) -> Result<(), ManifestError> {
    c.ensure(
        (-90.0..=90.0).contains(&lat),
        &format!("{prefix}lat"),
        format!("expected degrees in -90..90, got {lat}"),
    )?;
    c.ensure(
        (-180.0..=180.0).contains(&lon),
        &format!("{prefix}lon"),
        format!("expected degrees in -180..180, got {lon}"),
    )?;
    c.ensure(
        (-500.0..=50_000.0).contains(&alt),
        &format!("{prefix}alt_m"),
        format!("expected metres in -500..50000, got {alt}"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manifest example of `contract/SPEC.md` (v1), verbatim.
    pub(crate) const SPEC_EXAMPLE: &str = r#"{
  "format": "blastnet-recording/1",
  "name": "damascus-salvo",
  "description": "free text, provenance, licence",
  "environment": { "temperature_c": 12.0, "wind_mps": [1.5, -0.5] },
  "nodes": [
    {
      "id": "n01",
      "lat": 33.5138, "lon": 36.2765, "alt_m": 690.0,
      "streams": [
        { "file": "n01.wav", "channel": 0, "kind": "acoustic",
          "start_utc": "2022-02-08T22:05:00Z",
          "sensitivity": 1.0 },
        { "file": "n01.wav", "channel": 1, "kind": "seismic",
          "start_utc": "2022-02-08T22:05:00Z",
          "sensitivity": 1.0 }
      ]
    }
  ],
  "truth": [
    { "time_utc": "2022-02-08T22:05:13.5Z", "lat": 33.50, "lon": 36.29,
      "alt_m": 1200.0, "kind": "explosion" }
  ]
}"#;

    #[test]
    fn spec_example_parses_and_serialises_back_to_equal_json() {
        let m = Manifest::from_json(SPEC_EXAMPLE, "SPEC.md").expect("SPEC example is valid");
        assert_eq!(m.nodes[0].streams[1].kind, StreamKind::Seismic);
        let original: serde_json::Value = serde_json::from_str(SPEC_EXAMPLE).expect("json");
        let back = serde_json::to_value(&m).expect("serialise");
        assert_eq!(back, original);
    }

    fn err_of(text: &str) -> String {
        Manifest::from_json(text, "scen/manifest.json")
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn too_many_nodes_is_a_clear_error() {
        let mut m = Manifest::from_json(SPEC_EXAMPLE, "SPEC.md").expect("valid");
        let node = m.nodes[0].clone();
        m.nodes = (0..=MAX_NODES)
            .map(|i| NodeSpec {
                id: format!("n{i}"),
                ..node.clone()
            })
            .collect();
        let e = err_of(&m.to_json_pretty());
        assert!(e.contains("nodes") && e.contains("at most 1024"), "{e}");
    }

    #[test]
    fn missing_field_is_named_with_its_path() {
        let text = SPEC_EXAMPLE.replace(r#""kind": "acoustic","#, "");
        let e = err_of(&text);
        assert!(e.contains("scen/manifest.json"), "{e}");
        assert!(e.contains("nodes[0].streams[0]"), "{e}");
        assert!(e.contains("missing field `kind`"), "{e}");
    }

    #[test]
    fn ill_typed_field_is_named_with_what_was_expected() {
        let text = SPEC_EXAMPLE.replace(r#""lat": 33.5138"#, r#""lat": "north""#);
        let e = err_of(&text);
        assert!(e.contains("nodes[0].lat"), "{e}");
        assert!(e.contains("expected f64"), "{e}");
    }

    #[test]
    fn non_utc_timestamp_is_refused_naming_the_field() {
        let text = SPEC_EXAMPLE.replace(
            "2022-02-08T22:05:00Z\",\n          \"sensitivity\": 1.0 },\n        { \"file\"",
            "2022-02-08T22:05:00+03:00\",\n          \"sensitivity\": 1.0 },\n        { \"file\"",
        );
        let e = err_of(&text);
        assert!(e.contains("nodes[0].streams[0].start_utc"), "{e}");
        assert!(e.contains("UTC"), "{e}");
    }

    #[test]
    fn wrong_format_and_bad_ranges_are_named() {
        let e = err_of(&SPEC_EXAMPLE.replace("blastnet-recording/1", "blastnet-recording/9"));
        assert!(
            e.contains("`format`") && e.contains("blastnet-recording/1"),
            "{e}"
        );
        let e = err_of(&SPEC_EXAMPLE.replace(
            "\"sensitivity\": 1.0 },\n        { \"file\"",
            "\"sensitivity\": -2 },\n        { \"file\"",
        ));
        assert!(e.contains("nodes[0].streams[0].sensitivity"), "{e}");
        let e = err_of(&SPEC_EXAMPLE.replace("\"lon\": 36.2765", "\"lon\": 236.2765"));
        assert!(e.contains("nodes[0].lon"), "{e}");
    }

    #[test]
    fn truncated_json_says_where_it_ends() {
        let e = err_of(&SPEC_EXAMPLE[..200]);
        assert!(e.contains("scen/manifest.json"), "{e}");
        assert!(e.contains("ends early") || e.contains("line"), "{e}");
    }
}
