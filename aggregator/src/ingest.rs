//! Ingest: topic parsing and payload validation against SPEC v1.
//!
//! Every payload from the broker is outside input: it is parsed with serde
//! (errors name the field via `serde_path_to_error`) and then checked
//! (schema string, finite numbers, ranges, and the payload's `node_id`
//! against the topic's node segment — a node may only speak for itself).
//! A refusal is an [`Invalid`] with a [`Reason`] (counted in metrics) and the
//! field; nothing here panics on input.

use blastnet_contract::topic;
use blastnet_contract::wire::{DETECTION_SCHEMA, SNIPPET_MAX_PAYLOAD_BYTES, STATUS_SCHEMA};
use blastnet_contract::{Detection, Snippet, Status};

/// Why a message was refused; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// The topic is not `{prefix}/{site}/node/{node}/{detection|status|snippet}`.
    Topic,
    /// The payload is larger than `ingest.max_payload_bytes`.
    TooLarge,
    /// Not JSON (or not UTF-8).
    Json,
    /// JSON, but a field is missing or has the wrong type.
    Field,
    /// The `schema` string is not the one this topic carries.
    Schema,
    /// A number is NaN or infinite (e.g. a `NaN` literal or `1e999`).
    NonFinite,
    /// A number is outside its range (confidence outside 0..1, latitude, ...).
    Range,
    /// The payload's `node_id` is not the topic's node segment.
    NodeMismatch,
    /// The payload's `site` is not the topic's site segment.
    SiteMismatch,
    /// The node's position lies far outside its site (`engine.max_site_radius_m`
    /// from the median of the site's nodes): its detections are not used.
    FarFromSite,
    /// The site already has `ingest.max_nodes_per_site` nodes: a new node
    /// id is not registered (random ids cannot grow the registry).
    NodeLimit,
}

impl Reason {
    /// Every reason, in metrics order.
    pub const ALL: [Reason; 11] = [
        Reason::Topic,
        Reason::TooLarge,
        Reason::Json,
        Reason::Field,
        Reason::Schema,
        Reason::NonFinite,
        Reason::Range,
        Reason::NodeMismatch,
        Reason::SiteMismatch,
        Reason::FarFromSite,
        Reason::NodeLimit,
    ];

    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Topic => "topic",
            Reason::TooLarge => "too_large",
            Reason::Json => "json",
            Reason::Field => "field",
            Reason::Schema => "schema",
            Reason::NonFinite => "non_finite",
            Reason::Range => "range",
            Reason::NodeMismatch => "node_mismatch",
            Reason::SiteMismatch => "site_mismatch",
            Reason::FarFromSite => "far_from_site",
            Reason::NodeLimit => "node_limit",
        }
    }

    /// Index into [`Reason::ALL`].
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A refused message: the reason, the field (dotted path) if known, and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// Counted reason.
    pub reason: Reason,
    /// The offending field, e.g. `clock.uncertainty_s`.
    pub field: Option<String>,
    /// Human-readable detail (what was expected).
    pub detail: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{}: field `{}`: {}",
                self.reason.as_str(),
                field,
                self.detail
            ),
            None => write!(f, "{}: {}", self.reason.as_str(), self.detail),
        }
    }
}

fn invalid(reason: Reason, field: Option<&str>, detail: impl Into<String>) -> Invalid {
    Invalid {
        reason,
        field: field.map(str::to_string),
        detail: detail.into(),
    }
}

/// What a node topic carries (the contract's [`topic::NodeMessage`]).
pub use blastnet_contract::topic::NodeMessage as MessageKind;
/// A parsed node topic (the contract's [`topic::NodeTopic`]).
pub use blastnet_contract::topic::NodeTopic;

/// Parse `{prefix}/{site}/node/{node}/{detection|status|snippet}` ([`topic::parse_node`]);
/// a malformed topic is refused with [`Reason::Topic`].
pub fn parse_topic<'a>(prefix: &str, topic: &'a str) -> Result<NodeTopic<'a>, Invalid> {
    topic::parse_node(prefix, topic)
        .map_err(|e| invalid(Reason::Topic, None, format!("expected {}", e.expected)))
}

/// Map a serde_json error to a reason and field. `NaN`, `Infinity` and
/// out-of-range numbers are syntax errors to serde_json; they get their own
/// reason ([`Reason::NonFinite`]) with the key they stood under, because a
/// producer writing NaN is a bug worth telling apart from garbage.
fn classify_json_error(
    payload: &[u8],
    e: serde_path_to_error::Error<serde_json::Error>,
) -> Invalid {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let field = if path == "." {
                None
            } else {
                Some(path.as_str())
            };
            invalid(Reason::Field, field, inner.to_string())
        }
        serde_json::error::Category::Syntax => {
            if let Some(key) = non_finite_at(payload, inner.line(), inner.column()) {
                let field = if key.is_empty() {
                    None
                } else {
                    Some(key.as_str())
                };
                invalid(
                    Reason::NonFinite,
                    field,
                    "expected a finite number (NaN and infinities are not valid)",
                )
            } else {
                invalid(Reason::Json, None, inner.to_string())
            }
        }
        _ => invalid(Reason::Json, None, inner.to_string()),
    }
}

/// If the syntax error at (line, column) sits on a non-finite number token
/// (`NaN`, `Infinity`, `-Infinity`, `inf`, or a literal overflowing f64),
/// return the JSON key it stands under ("" if none found).
fn non_finite_at(payload: &[u8], line: usize, column: usize) -> Option<String> {
    // Byte offset of (line, column): serde_json counts columns in bytes, 1-based.
    let mut offset = 0usize;
    let mut cur_line = 1usize;
    for (i, b) in payload.iter().enumerate() {
        if cur_line == line {
            offset = i;
            break;
        }
        if *b == b'\n' {
            cur_line += 1;
        }
    }
    if cur_line != line {
        return None;
    }
    let pos = (offset + column.saturating_sub(1)).min(payload.len().saturating_sub(1));
    let is_tok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-');
    let mut start = pos;
    while start > 0 && is_tok(payload[start - 1]) {
        start -= 1;
    }
    let mut end = pos;
    while end < payload.len() && is_tok(payload[end]) {
        end += 1;
    }
    let token = std::str::from_utf8(payload.get(start..end)?).ok()?;
    let bare = token.trim_start_matches(['-', '+']).to_ascii_lowercase();
    let non_finite = matches!(bare.as_str(), "nan" | "infinity" | "inf")
        || token
            .parse::<f64>()
            .map(|v| v.is_infinite())
            .unwrap_or(false);
    if !non_finite {
        return None;
    }
    // The key: skip back over whitespace and ':' to a closing quote, then to its opening quote.
    let mut i = start;
    while i > 0 && (payload[i - 1].is_ascii_whitespace() || payload[i - 1] == b':') {
        i -= 1;
    }
    if i == 0 || payload[i - 1] != b'"' {
        return Some(String::new());
    }
    let close = i - 1;
    let open = payload[..close].iter().rposition(|b| *b == b'"')?;
    Some(String::from_utf8_lossy(&payload[open + 1..close]).into_owned())
}

fn check_finite(field: &str, v: f64) -> Result<(), Invalid> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(invalid(
            Reason::NonFinite,
            Some(field),
            "expected a finite number",
        ))
    }
}

fn check_range(field: &str, v: f64, lo: f64, hi: f64) -> Result<(), Invalid> {
    check_finite(field, v)?;
    if v < lo || v > hi {
        return Err(invalid(
            Reason::Range,
            Some(field),
            format!("expected {lo}..{hi}, got {v}"),
        ));
    }
    Ok(())
}

fn check_position(lat: f64, lon: f64, alt_m: f64) -> Result<(), Invalid> {
    check_range("lat", lat, -90.0, 90.0)?;
    check_range("lon", lon, -180.0, 180.0)?;
    // From the Dead Sea shore to well above any sensor balloon.
    check_range("alt_m", alt_m, -1000.0, 50_000.0)
}

fn check_node_and_site(
    topic: &NodeTopic<'_>,
    node_id: &str,
    site: Option<&str>,
) -> Result<(), Invalid> {
    if node_id != topic.node {
        return Err(invalid(
            Reason::NodeMismatch,
            Some("node_id"),
            format!(
                "payload node_id {node_id:?} is not the topic's node {:?}",
                topic.node
            ),
        ));
    }
    if let Some(site) = site {
        if site != topic.site {
            return Err(invalid(
                Reason::SiteMismatch,
                Some("site"),
                format!(
                    "payload site {site:?} is not the topic's site {:?}",
                    topic.site
                ),
            ));
        }
    }
    Ok(())
}

/// Parse and check a detection published on `topic`.
pub fn validate_detection(topic: &NodeTopic<'_>, payload: &[u8]) -> Result<Detection, Invalid> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let d: Detection =
        serde_path_to_error::deserialize(&mut de).map_err(|e| classify_json_error(payload, e))?;
    de.end()
        .map_err(|e| invalid(Reason::Json, None, format!("trailing data: {e}")))?;
    if d.schema != DETECTION_SCHEMA {
        return Err(invalid(
            Reason::Schema,
            Some("schema"),
            format!("expected {DETECTION_SCHEMA:?}, got {:?}", d.schema),
        ));
    }
    check_node_and_site(topic, &d.node_id, d.site.as_deref())?;
    check_range("onset_uncertainty_s", d.onset_uncertainty_s, 0.0, 60.0)?;
    check_range("confidence", d.confidence, 0.0, 1.0)?;
    check_range("peak", d.peak, 0.0, f64::MAX)?;
    check_finite("snr_db", d.snr_db)?;
    check_range("duration_s", d.duration_s, 0.0, 3600.0)?;
    check_position(d.lat, d.lon, d.alt_m)?;
    check_range("clock.uncertainty_s", d.clock.uncertainty_s, 0.0, 3600.0)?;
    for (k, v) in &d.class_probs {
        check_range(&format!("class_probs.{k}"), *v, 0.0, 1.0)?;
    }
    Ok(d)
}

/// A snippet that passed [`validate_snippet`], with its samples decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedSnippet {
    /// The payload as received.
    pub snippet: Snippet,
    /// Its samples, counts (× `snippet.scale` for physical units).
    pub samples: Vec<i16>,
}

/// Parse and check a snippet (extension `blastnet.snippet/1`) published on
/// `topic`: the payload within [`SNIPPET_MAX_PAYLOAD_BYTES`], the fields
/// ([`Snippet::check`]: schema, encoding, rate, scale, base64 samples) and
/// its `node_id` against the topic.
pub fn validate_snippet(topic: &NodeTopic<'_>, payload: &[u8]) -> Result<CheckedSnippet, Invalid> {
    if payload.len() > SNIPPET_MAX_PAYLOAD_BYTES {
        return Err(invalid(
            Reason::TooLarge,
            None,
            format!(
                "expected a snippet of at most {SNIPPET_MAX_PAYLOAD_BYTES} bytes, got {}",
                payload.len()
            ),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    let s: Snippet =
        serde_path_to_error::deserialize(&mut de).map_err(|e| classify_json_error(payload, e))?;
    de.end()
        .map_err(|e| invalid(Reason::Json, None, format!("trailing data: {e}")))?;
    let samples = s.check().map_err(|e| {
        let reason = match e.field {
            "schema" => Reason::Schema,
            "data" | "encoding" => Reason::Field,
            _ => Reason::Range,
        };
        invalid(reason, Some(e.field), e.detail)
    })?;
    check_node_and_site(topic, &s.node_id, None)?;
    Ok(CheckedSnippet {
        snippet: s,
        samples,
    })
}

/// Parse and check a status published on `topic`.
pub fn validate_status(topic: &NodeTopic<'_>, payload: &[u8]) -> Result<Status, Invalid> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let s: Status =
        serde_path_to_error::deserialize(&mut de).map_err(|e| classify_json_error(payload, e))?;
    de.end()
        .map_err(|e| invalid(Reason::Json, None, format!("trailing data: {e}")))?;
    if s.schema != STATUS_SCHEMA {
        return Err(invalid(
            Reason::Schema,
            Some("schema"),
            format!("expected {STATUS_SCHEMA:?}, got {:?}", s.schema),
        ));
    }
    check_node_and_site(topic, &s.node_id, None)?;
    check_position(s.lat, s.lon, s.alt_m)?;
    if let Some(c) = &s.clock {
        check_range("clock.uncertainty_s", c.uncertainty_s, 0.0, 3600.0)?;
    }
    if let Some(t) = s.temperature_c {
        check_range("temperature_c", t, -90.0, 70.0)?;
    }
    for (k, v) in &s.noise_floor_db {
        check_finite(&format!("noise_floor_db.{k}"), *v)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "blastnet/s1/node/n01/detection";

    fn good() -> serde_json::Value {
        serde_json::json!({
            "schema": "blastnet.detection/1", "node_id": "n01", "seq": 7,
            "onset_utc": "2024-05-01T12:00:00.000123Z", "onset_uncertainty_s": 2e-5,
            "stream": "acoustic", "kind": "explosion", "confidence": 0.9,
            "peak": 12.0, "snr_db": 30.0, "duration_s": 0.01,
            "lat": 40.0, "lon": -80.0, "alt_m": 300.0,
            "clock": {"source": "gps-pps", "uncertainty_s": 1e-6}
        })
    }

    fn check(payload: &str) -> Result<Detection, Invalid> {
        let t = parse_topic("blastnet", TOPIC).expect("topic");
        validate_detection(&t, payload.as_bytes())
    }

    #[test]
    fn topics_parse_and_bad_ones_are_refused() {
        let t = parse_topic("blastnet", TOPIC).expect("ok");
        assert_eq!(
            (t.site, t.node, t.kind),
            ("s1", "n01", MessageKind::Detection)
        );
        // The grammar's cases are tested in `blastnet_contract::topic`; here,
        // that a refused topic is counted under its own reason.
        let bad = "blastnet/s1/nodes/n01/detection";
        assert_eq!(
            parse_topic("blastnet", bad).expect_err(bad).reason,
            Reason::Topic
        );
    }

    #[test]
    fn a_good_detection_passes() {
        let d = check(&good().to_string()).expect("valid");
        assert_eq!(d.seq, 7);
    }

    #[test]
    fn each_defect_gets_its_reason_and_field() {
        let mut v = good();
        v["schema"] = "blastnet.detection/2".into();
        let e = check(&v.to_string()).expect_err("schema");
        assert_eq!(
            (e.reason, e.field.as_deref()),
            (Reason::Schema, Some("schema"))
        );

        let mut v = good();
        v["node_id"] = "n02".into();
        let e = check(&v.to_string()).expect_err("mismatch");
        assert_eq!(
            (e.reason, e.field.as_deref()),
            (Reason::NodeMismatch, Some("node_id"))
        );

        let mut v = good();
        v["confidence"] = 1.5.into();
        let e = check(&v.to_string()).expect_err("range");
        assert_eq!(
            (e.reason, e.field.as_deref()),
            (Reason::Range, Some("confidence"))
        );

        let mut v = good();
        v["clock"]["uncertainty_s"] = "x".into();
        let e = check(&v.to_string()).expect_err("type");
        assert_eq!(
            (e.reason, e.field.as_deref()),
            (Reason::Field, Some("clock.uncertainty_s"))
        );

        let mut v = good();
        v.as_object_mut().expect("object").remove("onset_utc");
        let e = check(&v.to_string()).expect_err("missing");
        assert_eq!(e.reason, Reason::Field);

        let text = good()
            .to_string()
            .replace("\"snr_db\":30.0", "\"snr_db\": NaN");
        let e = check(&text).expect_err("nan");
        assert_eq!(
            (e.reason, e.field.as_deref()),
            (Reason::NonFinite, Some("snr_db"))
        );

        let text = good()
            .to_string()
            .replace("\"peak\":12.0", "\"peak\":-Infinity");
        let e = check(&text).expect_err("inf");
        assert_eq!(
            (e.reason, e.field.as_deref()),
            (Reason::NonFinite, Some("peak"))
        );

        let text = good()
            .to_string()
            .replace("\"peak\":12.0", "\"peak\":1e999");
        let e = check(&text).expect_err("overflow");
        assert_eq!(
            (e.reason, e.field.as_deref()),
            (Reason::NonFinite, Some("peak"))
        );

        assert_eq!(check("{not json").expect_err("json").reason, Reason::Json);
        assert_eq!(check("").expect_err("empty").reason, Reason::Json);
        assert_eq!(check("[1,2]").expect_err("array").reason, Reason::Field);

        let mut v = good();
        v["site"] = "s2".into();
        assert_eq!(
            check(&v.to_string()).expect_err("site").reason,
            Reason::SiteMismatch
        );
    }

    #[test]
    fn status_node_mismatch_is_refused() {
        let t = parse_topic("blastnet", "blastnet/s1/node/n01/status").expect("topic");
        let s = serde_json::json!({
            "schema": "blastnet.status/1", "node_id": "evil", "state": "online",
            "time_utc": "2024-05-01T12:00:00Z"
        });
        let e = validate_status(&t, s.to_string().as_bytes()).expect_err("mismatch");
        assert_eq!(e.reason, Reason::NodeMismatch);
    }

    fn snippet_json() -> serde_json::Value {
        let s = Snippet::encode(
            "n01",
            7,
            blastnet_contract::StreamKind::Acoustic,
            blastnet_contract::UtcNs(1_714_564_800_000_000_000),
            8000,
            &[0.0, 1.0, -2.0, 0.5],
        );
        serde_json::to_value(s).expect("json")
    }

    #[test]
    fn a_good_snippet_is_accepted_with_its_samples() {
        let t = parse_topic("blastnet", "blastnet/s1/node/n01/snippet").expect("topic");
        assert_eq!(t.kind, MessageKind::Snippet);
        let ok = validate_snippet(&t, snippet_json().to_string().as_bytes()).expect("valid");
        assert_eq!(ok.samples, [0, 16384, -32767, 8192]);
        assert_eq!(ok.snippet.seq, 7);
    }

    #[test]
    fn bad_snippets_are_refused_naming_the_field() {
        let t = parse_topic("blastnet", "blastnet/s1/node/n01/snippet").expect("topic");
        let refuse = |v: serde_json::Value| {
            validate_snippet(&t, v.to_string().as_bytes()).expect_err("refused")
        };
        let mut v = snippet_json();
        v["data"] = "%%%".into();
        let e = refuse(v);
        assert_eq!(
            (e.reason, e.field.as_deref()),
            (Reason::Field, Some("data"))
        );
        assert!(e.to_string().contains("field `data`"), "{e}");

        let mut v = snippet_json();
        v["sample_rate_hz"] = 0.into();
        let e = refuse(v);
        assert_eq!(
            (e.reason, e.field.as_deref()),
            (Reason::Range, Some("sample_rate_hz"))
        );

        let mut v = snippet_json();
        v["schema"] = "blastnet.detection/1".into();
        let e = refuse(v);
        assert_eq!(
            (e.reason, e.field.as_deref()),
            (Reason::Schema, Some("schema"))
        );

        let mut v = snippet_json();
        v["node_id"] = "n02".into();
        assert_eq!(refuse(v).reason, Reason::NodeMismatch);

        let mut v = snippet_json();
        v["scale"] = (-1.0).into();
        assert_eq!(refuse(v).field.as_deref(), Some("scale"));

        let mut v = snippet_json();
        v["seq"] = "seven".into();
        assert_eq!(
            (refuse(v.clone()).reason, refuse(v).field.as_deref()),
            (Reason::Field, Some("seq"))
        );

        let mut v = snippet_json();
        v["data"] = "A".repeat(SNIPPET_MAX_PAYLOAD_BYTES).into();
        let e = refuse(v);
        assert_eq!(e.reason, Reason::TooLarge);
    }
}
