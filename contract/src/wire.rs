//! SPEC v1 MQTT payloads: detection, status, event; and the snippet
//! extension (waveform evidence around a detection, [`Snippet`]).
//!
//! Field names and meanings are exactly those of `contract/SPEC.md` (v1). Fields marked
//! "extension" are additions allowed by the SPEC ("code may add fields");
//! they are optional on input so that payloads from other v1 producers parse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::geo::Geodetic;
use crate::time::UtcNs;

/// `schema` of a detection payload.
pub const DETECTION_SCHEMA: &str = "blastnet.detection/1";
/// `schema` of a status payload.
pub const STATUS_SCHEMA: &str = "blastnet.status/1";
/// `schema` of an event payload.
pub const EVENT_SCHEMA: &str = "blastnet.event/1";
/// Extension: `schema` of a snippet payload ([`Snippet`]).
pub const SNIPPET_SCHEMA: &str = "blastnet.snippet/1";

/// Which sensor a stream or detection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Microphone: pascals.
    Acoustic,
    /// Geophone: ground velocity in m/s.
    Seismic,
}

impl StreamKind {
    /// The SPEC name.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Acoustic => "acoustic",
            StreamKind::Seismic => "seismic",
        }
    }
}

/// The class of a source. More classes may be added (SPEC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A detonation (ground burst or airburst).
    Explosion,
    /// A firearm discharge.
    Gunshot,
    /// A rocket or missile launch.
    Launch,
    /// Impulsive but none of the above (door slam, hammer, clap).
    OtherImpulsive,
    /// Not classified.
    Unknown,
}

impl SourceKind {
    /// Every class, in a fixed order (classifier outputs index this).
    pub const ALL: [SourceKind; 5] = [
        SourceKind::Explosion,
        SourceKind::Gunshot,
        SourceKind::Launch,
        SourceKind::OtherImpulsive,
        SourceKind::Unknown,
    ];

    /// The classes the node's classifier tells apart, in the order of its
    /// probability vector ([`ClassProbs`]): every kind but `Unknown`.
    pub const CLASSIFIED: [SourceKind; 4] = [
        SourceKind::ALL[0],
        SourceKind::ALL[1],
        SourceKind::ALL[2],
        SourceKind::ALL[3],
    ];

    /// Index in [`SourceKind::CLASSIFIED`] (`None` for `Unknown`).
    pub fn class_index(self) -> Option<usize> {
        SourceKind::CLASSIFIED.iter().position(|&k| k == self)
    }

    /// The kind with this SPEC name.
    pub fn from_name(name: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The SPEC name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Explosion => "explosion",
            SourceKind::Gunshot => "gunshot",
            SourceKind::Launch => "launch",
            SourceKind::OtherImpulsive => "other_impulsive",
            SourceKind::Unknown => "unknown",
        }
    }

    /// Whether this class is a blast the network should locate (not a distractor).
    pub fn is_blast(self) -> bool {
        matches!(
            self,
            SourceKind::Explosion | SourceKind::Gunshot | SourceKind::Launch
        )
    }
}

/// Per-class probabilities, indexed like [`SourceKind::CLASSIFIED`]: the
/// classifier's output. On the wire (the detection's `class_probs`
/// extension) it is a map by class name: [`ClassProbs::to_map`] and
/// [`ClassProbs::from_map`] convert.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClassProbs(pub [f64; SourceKind::CLASSIFIED.len()]);

impl ClassProbs {
    /// Every class equally likely.
    pub fn uniform() -> ClassProbs {
        ClassProbs([1.0 / SourceKind::CLASSIFIED.len() as f64; SourceKind::CLASSIFIED.len()])
    }

    /// The probability of `kind` (0 for a kind the classifier does not output).
    pub fn get(&self, kind: SourceKind) -> f64 {
        kind.class_index().map_or(0.0, |i| self.0[i])
    }

    /// (kind, probability) in [`SourceKind::CLASSIFIED`] order.
    pub fn iter(&self) -> impl Iterator<Item = (SourceKind, f64)> + '_ {
        SourceKind::CLASSIFIED
            .into_iter()
            .zip(self.0.iter().copied())
    }

    /// The wire form: class name → probability, every classified kind.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        self.iter()
            .map(|(k, p)| (k.as_str().to_string(), p))
            .collect()
    }

    /// From the wire form: names of classified kinds are read, a missing
    /// one is 0, other names (`unknown`, classes added later) are ignored.
    pub fn from_map(map: &BTreeMap<String, f64>) -> ClassProbs {
        let mut p = ClassProbs::default();
        for (name, &v) in map {
            if let Some(i) = SourceKind::from_name(name).and_then(SourceKind::class_index) {
                p.0[i] = v;
            }
        }
        p
    }
}

impl From<[f64; SourceKind::CLASSIFIED.len()]> for ClassProbs {
    fn from(p: [f64; SourceKind::CLASSIFIED.len()]) -> ClassProbs {
        ClassProbs(p)
    }
}

/// Where a node's time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockSource {
    /// GPS with a PPS-disciplined system clock: ~1 µs.
    GpsPps,
    /// NTP-disciplined: ~1-10 ms.
    Ntp,
    /// Free-running system clock: unknown, large.
    System,
    /// Timestamps from a recording's manifest.
    Replay,
}

/// Clock quality attached to every detection and status.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClockInfo {
    /// Where time comes from.
    pub source: ClockSource,
    /// 1-sigma uncertainty of the node's UTC, seconds.
    pub uncertainty_s: f64,
}

/// One blast onset seen by one node (`blastnet.detection/1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Always [`DETECTION_SCHEMA`].
    pub schema: String,
    /// The node that heard it.
    pub node_id: String,
    /// Per-node, monotonic, survives restarts.
    pub seq: u64,
    /// UTC of the onset.
    pub onset_utc: UtcNs,
    /// 1-sigma onset timing uncertainty (pick only; clock in `clock`), seconds.
    pub onset_uncertainty_s: f64,
    /// Which sensor.
    pub stream: StreamKind,
    /// Classifier decision.
    pub kind: SourceKind,
    /// Calibrated probability that `kind` is right, 0..1.
    pub confidence: f64,
    /// Peak |value|: Pa (acoustic) or m/s (seismic), physical when calibrated.
    pub peak: f64,
    /// Peak over noise floor, dB.
    pub snr_db: f64,
    /// Duration of the pulse, seconds.
    pub duration_s: f64,
    /// Node latitude, degrees.
    pub lat: f64,
    /// Node longitude, degrees.
    pub lon: f64,
    /// Node altitude, metres.
    pub alt_m: f64,
    /// Clock quality at the onset.
    pub clock: ClockInfo,
    /// Extension: per-class probabilities, by class name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub class_probs: BTreeMap<String, f64>,
    /// Extension: site name the node belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Extension: 1-sigma error of the node's position along a ray, m
    /// (see the manifest's `position_uncertainty_m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_uncertainty_m: Option<f64>,
    /// Extension: the pulse saturated the sensor (a flat top), so `peak` is
    /// only a lower bound of the true peak (not used for yield).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clipped: bool,
}

impl Detection {
    /// Detection `seq` of `node_id`, onset at `onset_utc`, heard at
    /// `position` with `clock`: the SPEC schema and the identity of the
    /// detection, with nothing measured yet (acoustic, `unknown` with
    /// confidence 0, zero peak, SNR, duration and pick uncertainty, no
    /// extensions). Set the measurements with struct update syntax:
    /// `Detection { kind, confidence, ..Detection::new(..) }`.
    pub fn new(
        node_id: impl Into<String>,
        seq: u64,
        onset_utc: UtcNs,
        position: Geodetic,
        clock: ClockInfo,
    ) -> Detection {
        Detection {
            schema: DETECTION_SCHEMA.into(),
            node_id: node_id.into(),
            seq,
            onset_utc,
            onset_uncertainty_s: 0.0,
            stream: StreamKind::Acoustic,
            kind: SourceKind::Unknown,
            confidence: 0.0,
            peak: 0.0,
            snr_db: 0.0,
            duration_s: 0.0,
            lat: position.lat,
            lon: position.lon,
            alt_m: position.alt_m,
            clock,
            class_probs: BTreeMap::new(),
            site: None,
            position_uncertainty_m: None,
            clipped: false,
        }
    }
}

/// Node state in a status message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Capturing and publishing normally.
    Online,
    /// Gone (the last will).
    Offline,
    /// Running but impaired (lost time sync, overruns, spool full).
    Degraded,
}

/// The `counters` entry (value 1) that marks a status as a node's last
/// will: published by the broker when the node's connection was lost, at
/// the data time of the node's latest status. The node may come back; its
/// own last status (offline, at the end of its data) carries no such entry.
pub const WILL_COUNTER: &str = "connection_lost";

/// Node health (`blastnet.status/1`), retained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Always [`STATUS_SCHEMA`].
    pub schema: String,
    /// The node.
    pub node_id: String,
    /// Its state.
    pub state: NodeState,
    /// When this status was made.
    pub time_utc: UtcNs,
    /// Node latitude, degrees.
    #[serde(default)]
    pub lat: f64,
    /// Node longitude, degrees.
    #[serde(default)]
    pub lon: f64,
    /// Node altitude, metres.
    #[serde(default)]
    pub alt_m: f64,
    /// Clock quality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockInfo>,
    /// Noise floor per stream, dB re 20 µPa (acoustic) or dB re 1 nm/s (seismic).
    #[serde(default)]
    pub noise_floor_db: BTreeMap<String, f64>,
    /// Software version.
    #[serde(default)]
    pub software_version: String,
    /// Detections on disk not yet acknowledged by the broker.
    #[serde(default)]
    pub spool_backlog: u64,
    /// Extension: counters (overruns, spool evictions, bad inputs, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
    /// Extension: air temperature the node measures or is configured with, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
}

impl Status {
    /// A status of `node_id` in `state` at `time_utc` and `position`, with
    /// the SPEC schema and this software's version; no clock, no noise
    /// floors, no counters, empty spool. Fill the rest with struct update
    /// syntax: `Status { spool_backlog: n, ..Status::new(..) }`.
    pub fn new(
        node_id: impl Into<String>,
        state: NodeState,
        time_utc: UtcNs,
        position: Geodetic,
    ) -> Status {
        Status {
            schema: STATUS_SCHEMA.into(),
            node_id: node_id.into(),
            state,
            time_utc,
            lat: position.lat,
            lon: position.lon,
            alt_m: position.alt_m,
            clock: None,
            noise_floor_db: BTreeMap::new(),
            software_version: crate::VERSION.into(),
            spool_backlog: 0,
            counters: BTreeMap::new(),
            temperature_c: None,
        }
    }
}

/// 1-sigma location uncertainty of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Uncertainty {
    /// Horizontal 1-sigma (root of the trace of the EN block), metres.
    pub horizontal_m: f64,
    /// Vertical 1-sigma, metres.
    pub vertical_m: f64,
    /// Origin-time 1-sigma, seconds.
    pub origin_s: f64,
    /// ENU position covariance, m², row-major 3x3.
    pub covariance_enu: [[f64; 3]; 3],
}

/// One arrival used by (or rejected from) an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrivalRef {
    /// Node.
    pub node_id: String,
    /// That node's detection seq.
    pub seq: u64,
    /// Stream.
    pub stream: StreamKind,
    /// Onset.
    pub onset_utc: UtcNs,
    /// Observed minus predicted arrival time, seconds.
    pub residual_s: f64,
    /// Extension: why it was rejected (outliers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Lifecycle of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// A minimal consistent set fits; more arrivals may come.
    Preliminary,
    /// No further arrival is physically possible.
    Final,
}

/// Extension: yield estimate in kg TNT equivalent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YieldEstimate {
    /// Best estimate, kg TNT.
    pub kg_tnt: f64,
    /// Lower bound (about 1-sigma), kg TNT.
    pub low_kg_tnt: f64,
    /// Upper bound (about 1-sigma), kg TNT.
    pub high_kg_tnt: f64,
}

/// Extension: Cramér–Rao bound of the event's location, 1-sigma.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Crlb {
    /// Horizontal, metres.
    pub horizontal_m: f64,
    /// Vertical, metres (0 for a 2D solution).
    pub vertical_m: f64,
    /// Origin time, seconds.
    pub origin_s: f64,
}

/// A located source (`blastnet.event/1`); each update re-published with the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always [`EVENT_SCHEMA`].
    pub schema: String,
    /// Stable id across revisions.
    pub event_id: String,
    /// 1, 2, ... per update.
    pub revision: u32,
    /// Source time.
    pub origin_utc: UtcNs,
    /// Source latitude.
    pub lat: f64,
    /// Source longitude.
    pub lon: f64,
    /// Source altitude, metres.
    pub alt_m: f64,
    /// 1-sigma uncertainty.
    pub uncertainty: Uncertainty,
    /// Source class.
    pub kind: SourceKind,
    /// Calibrated confidence in `kind`.
    pub confidence: f64,
    /// Arrivals used, with residuals.
    pub detections: Vec<ArrivalRef>,
    /// Arrivals rejected.
    #[serde(default)]
    pub outliers: Vec<ArrivalRef>,
    /// Effective sound speed used, m/s.
    pub sound_speed_mps: f64,
    /// Extension: preliminary or final.
    #[serde(default = "default_status")]
    pub status: EventStatus,
    /// Extension: 2 (on the ground plane: the solver held the altitude, so
    /// `uncertainty.vertical_m` is 0 for "not estimated", not "exact") or 3
    /// (altitude solved).
    #[serde(default = "default_dims")]
    pub dims: u8,
    /// Extension: Cramér–Rao bound for this geometry and these pick uncertainties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crlb: Option<Crlb>,
    /// Extension: yield estimate (explosions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yield_estimate: Option<YieldEstimate>,
    /// Extension: site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Extension: how firmly the event's support pins it down (absent from
    /// producers that do not judge it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
}

/// Extension: how firmly an event's support pins it down. An event is
/// published when its support passes every test; `marginal` and `aliased`
/// say where it passed with little to spare, so that an operator weighs it
/// (the text and the map say so).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Sites beyond the fit's unknowns (3 on the ground plane, 4 in 3-D):
    /// the independent checks its arrivals passed.
    pub checks: u32,
    /// Probability that picks unrelated to any source (at the local pick
    /// rates) would support a fit as well (a contrario), when measured (a
    /// final event with at most two checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chance: Option<f64>,
    /// The support is thin: one check or none, or a support chance could
    /// give (`chance` above 1 %).
    pub marginal: bool,
    /// Another assignment of the picks (one node's arrival exchanged for
    /// its other pick nearby, e.g. a burst's next round) fits as well with
    /// the source elsewhere: `alternative_m` away (checked for a final
    /// event with at most two checks).
    pub aliased: bool,
    /// With `aliased`: the horizontal distance to the alternative, m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternative_m: Option<f64>,
}

/// Extension: the only sample encoding of a [`Snippet`]: signed 16-bit
/// little-endian PCM, one channel.
pub const SNIPPET_ENCODING: &str = "pcm_s16le";

/// Extension: the largest snippet payload (the whole JSON object), bytes.
/// It is the aggregator's default `ingest.max_payload_bytes`, so a snippet
/// within it is never refused as too large by a default aggregator.
pub const SNIPPET_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Extension: the largest `data` (base64 text) of a [`Snippet`], chars:
/// the payload cap less 1 KiB for the other fields. 48 384 bytes of
/// samples, 24 192 samples (1.5 s at 8 kHz needs 12 000).
pub const SNIPPET_MAX_DATA_CHARS: usize = SNIPPET_MAX_PAYLOAD_BYTES - 1024;

/// Extension: a short waveform around one detection
/// (`blastnet.snippet/1`, topic `{prefix}/{site}/node/{node}/snippet`,
/// QoS 1, not retained), published by the node after the detection it
/// belongs to (same `node_id` and `seq`). Samples are 16-bit PCM at a
/// reduced rate, `scale` physical units per count (Pa acoustic, m/s
/// seismic), base64 in `data`. Optional: a v1 subscriber may ignore it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snippet {
    /// Always [`SNIPPET_SCHEMA`].
    pub schema: String,
    /// The node.
    pub node_id: String,
    /// The `seq` of the detection it belongs to.
    pub seq: u64,
    /// Which sensor.
    pub stream: StreamKind,
    /// UTC of the first sample (same format as `onset_utc`).
    pub start_utc: UtcNs,
    /// Samples per second of `data`.
    pub sample_rate_hz: u32,
    /// Always [`SNIPPET_ENCODING`].
    pub encoding: String,
    /// Physical units (Pa or m/s) per count.
    pub scale: f64,
    /// Base64 (standard alphabet, padded) of the little-endian i16 samples.
    pub data: String,
}

/// A snippet field that does not hold what [`SNIPPET_SCHEMA`] says.
/// Subscribers count and drop the payload (nothing to retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {detail}")]
#[non_exhaustive]
pub struct SnippetError {
    /// The offending field, e.g. `data`.
    pub field: &'static str,
    /// What was expected (and what was found).
    pub detail: String,
}

fn snippet_err(field: &'static str, detail: impl Into<String>) -> SnippetError {
    SnippetError {
        field,
        detail: detail.into(),
    }
}

impl Snippet {
    /// A snippet of `samples` (physical units) starting at `start_utc`,
    /// quantised to 16 bits with the scale that maps the largest |sample|
    /// to 32767 (1.0 when all are 0 or not finite; non-finite samples are
    /// 0). Samples beyond [`SNIPPET_MAX_DATA_CHARS`] are left out.
    pub fn encode(
        node_id: impl Into<String>,
        seq: u64,
        stream: StreamKind,
        start_utc: UtcNs,
        sample_rate_hz: u32,
        samples: &[f64],
    ) -> Snippet {
        use base64::Engine as _;
        let max = SNIPPET_MAX_DATA_CHARS / 4 * 3 / 2;
        let samples = &samples[..samples.len().min(max)];
        let peak = samples
            .iter()
            .filter(|x| x.is_finite())
            .fold(0.0f64, |m, x| m.max(x.abs()));
        let scale = if peak > 0.0 && peak.is_finite() {
            peak / f64::from(i16::MAX)
        } else {
            1.0
        };
        let mut bytes = Vec::with_capacity(samples.len() * 2);
        for &x in samples {
            let q = if x.is_finite() {
                (x / scale)
                    .round()
                    .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
            } else {
                0
            };
            bytes.extend_from_slice(&q.to_le_bytes());
        }
        Snippet {
            schema: SNIPPET_SCHEMA.into(),
            node_id: node_id.into(),
            seq,
            stream,
            start_utc,
            sample_rate_hz,
            encoding: SNIPPET_ENCODING.into(),
            scale,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// Check every field and decode the samples (counts; multiply by
    /// `scale` for physical units). The error names the field.
    pub fn check(&self) -> Result<Vec<i16>, SnippetError> {
        use base64::Engine as _;
        if self.schema != SNIPPET_SCHEMA {
            return Err(snippet_err(
                "schema",
                format!("expected {SNIPPET_SCHEMA:?}, got {:?}", self.schema),
            ));
        }
        if self.encoding != SNIPPET_ENCODING {
            return Err(snippet_err(
                "encoding",
                format!("expected {SNIPPET_ENCODING:?}, got {:?}", self.encoding),
            ));
        }
        if self.sample_rate_hz == 0 || self.sample_rate_hz > 1_000_000 {
            return Err(snippet_err(
                "sample_rate_hz",
                format!("expected 1..=1000000 Hz, got {}", self.sample_rate_hz),
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(snippet_err(
                "scale",
                format!(
                    "expected a finite number > 0 (units per count), got {}",
                    self.scale
                ),
            ));
        }
        if self.data.len() > SNIPPET_MAX_DATA_CHARS {
            return Err(snippet_err(
                "data",
                format!(
                    "expected at most {SNIPPET_MAX_DATA_CHARS} base64 characters, got {}",
                    self.data.len()
                ),
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| snippet_err("data", format!("expected padded standard base64: {e}")))?;
        if bytes.is_empty() || bytes.len() % 2 != 0 {
            return Err(snippet_err(
                "data",
                format!(
                    "expected a whole number (at least 1) of 16-bit samples, got {} bytes",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect())
    }

    /// UTC of sample `i` (0 = `start_utc`).
    pub fn time_of(&self, i: usize) -> UtcNs {
        self.start_utc
            .at_sample(i as u64, self.sample_rate_hz.max(1))
    }
}

fn default_status() -> EventStatus {
    EventStatus::Final
}
fn default_dims() -> u8 {
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_round_trips_through_json_with_spec_field_names() {
        let d = crate::testing::DetectionBuilder::new(
            "n01",
            42,
            UtcNs::parse("2022-02-08T22:05:13.123456789Z").expect("valid"),
        )
        .onset_uncertainty_s(2e-5)
        .kind(SourceKind::Explosion, 0.9)
        .peak(120.5)
        .snr_db(31.0)
        .duration_s(0.012)
        .at(Geodetic {
            lat: 33.5,
            lon: 36.2,
            alt_m: 690.0,
        })
        .clock(ClockSource::GpsPps, 1e-6)
        .build();
        assert_eq!(d.stream, StreamKind::Acoustic);
        let v = serde_json::to_value(&d).expect("serialise");
        assert_eq!(v["schema"], "blastnet.detection/1");
        assert_eq!(v["onset_utc"], "2022-02-08T22:05:13.123456789Z");
        assert_eq!(v["stream"], "acoustic");
        assert_eq!(v["clock"]["source"], "gps-pps");
        let back: Detection = serde_json::from_value(v).expect("parse");
        assert_eq!(back, d);
    }

    #[test]
    fn class_probs_round_trip_through_the_wire_map() {
        let p = ClassProbs([0.5, 0.25, 0.125, 0.125]);
        let m = p.to_map();
        assert_eq!(
            m.keys().map(String::as_str).collect::<Vec<_>>(),
            ["explosion", "gunshot", "launch", "other_impulsive"]
        );
        assert_eq!(m["gunshot"], 0.25);
        assert_eq!(ClassProbs::from_map(&m), p);
        let mut extra = m.clone();
        extra.insert("unknown".into(), 0.9);
        extra.insert("drone".into(), 0.9);
        extra.remove("launch");
        let q = ClassProbs::from_map(&extra);
        assert_eq!(q.get(SourceKind::Launch), 0.0);
        assert_eq!(q.get(SourceKind::Unknown), 0.0);
        assert_eq!(q.get(SourceKind::Explosion), 0.5);
    }

    #[test]
    fn the_classified_kinds_are_every_kind_but_unknown_in_order() {
        for (i, k) in SourceKind::CLASSIFIED.into_iter().enumerate() {
            assert_eq!(k.class_index(), Some(i));
            assert_eq!(SourceKind::ALL[i], k);
            assert_eq!(SourceKind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(SourceKind::Unknown.class_index(), None);
        assert_eq!(SourceKind::from_name("drone"), None);
    }

    #[test]
    fn a_new_status_has_the_schema_and_version() {
        let s = Status::new("n01", NodeState::Online, UtcNs(0), Geodetic::default());
        let v = serde_json::to_value(&s).expect("serialise");
        assert_eq!(v["schema"], "blastnet.status/1");
        assert_eq!(v["state"], "online");
        assert_eq!(v["software_version"], crate::VERSION);
    }

    #[test]
    fn other_impulsive_is_snake_case_on_the_wire() {
        let v = serde_json::to_value(SourceKind::OtherImpulsive).expect("serialise");
        assert_eq!(v, "other_impulsive");
    }
}
