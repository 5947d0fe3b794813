//! Home Assistant MQTT discovery (`[homeassistant]`): the retained sensor
//! configs that make each site's last event and each node's state appear in
//! Home Assistant. Pure: this module makes topics and payloads; the service
//! publishes them (retained) as sites and nodes appear.
//!
//! One config per entity (HA's single-component discovery) at
//! `<discovery_prefix>/sensor/<object_id>/config`. HA wants `<object_id>`
//! in `[a-zA-Z0-9_-]`; it is the entity's `unique_id` with any other
//! character replaced by `_` and, when one was, a hash of the original
//! appended, so that nodes `n.7` and `n_7` stay two entities. The entity id
//! is suggested with `default_entity_id` (HA 2025.10 deprecated `object_id`
//! in the payload for it, and ignores it from 2026.4).
//!
//! Entities (all under the aggregator's availability topic when
//! `mqtt.availability` is on):
//! - per site, on `{prefix}/{site}/event/latest`: "last event" (state: the
//!   kind; attributes: id, revision, status, confidence, position as
//!   `latitude`/`longitude` so HA can map it, uncertainty, arrivals) and
//!   "last event time" (`device_class: timestamp`, state: `origin_utc`);
//! - per node, on its retained SPEC status topic: "state" (`online`,
//!   `offline`, `degraded`; attributes: position, status time, version),
//!   as a device of its own behind the aggregator's (`via_device`).

use blastnet_contract::topic;
use serde_json::{json, Map, Value};

/// One retained discovery message.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryMessage {
    /// `<discovery_prefix>/sensor/<object_id>/config`.
    pub topic: String,
    /// The config, JSON.
    pub payload: Vec<u8>,
}

/// Makes the discovery configs of one aggregator.
#[derive(Debug, Clone)]
pub struct Discovery {
    discovery_prefix: String,
    prefix: String,
    client_id: String,
    availability_topic: Option<String>,
}

/// The attributes of the last-event sensor: a summary (the whole event,
/// with every arrival, can exceed what HA's recorder keeps).
const EVENT_ATTRIBUTES: &str = "{{ {\"event_id\": value_json.event_id, \
\"revision\": value_json.revision, \"status\": value_json.status, \
\"kind\": value_json.kind, \"confidence\": value_json.confidence, \
\"origin_utc\": value_json.origin_utc, \"latitude\": value_json.lat, \
\"longitude\": value_json.lon, \"alt_m\": value_json.alt_m, \
\"horizontal_m\": value_json.uncertainty.horizontal_m, \
\"arrivals\": value_json.detections | count} | tojson }}";

/// The attributes of a node's state sensor.
const NODE_ATTRIBUTES: &str = "{{ {\"latitude\": value_json.lat, \
\"longitude\": value_json.lon, \"alt_m\": value_json.alt_m, \
\"time_utc\": value_json.time_utc, \
\"software_version\": value_json.software_version} | tojson }}";

impl Discovery {
    /// Configs under `discovery_prefix` for the aggregator `client_id`
    /// serving topics under `prefix`; `availability` when the aggregator
    /// publishes its availability topic.
    pub fn new(discovery_prefix: &str, prefix: &str, client_id: &str, availability: bool) -> Self {
        Discovery {
            discovery_prefix: discovery_prefix.to_string(),
            prefix: prefix.to_string(),
            client_id: client_id.to_string(),
            availability_topic: availability
                .then(|| topic::aggregator_availability(prefix, client_id)),
        }
    }

    fn aggregator_identifier(&self) -> String {
        format!("blastnet_aggregator_{}", self.client_id)
    }

    fn aggregator_device(&self) -> Value {
        json!({
            "identifiers": [self.aggregator_identifier()],
            "name": format!("blastnet aggregator {}", self.client_id),
            "manufacturer": "blastnet",
            "model": "aggregator",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// A sensor's config and its topic.
    fn sensor(&self, unique_id: String, fields: Value) -> DiscoveryMessage {
        let mut c = Map::new();
        c.insert("unique_id".into(), unique_id.clone().into());
        c.insert(
            "default_entity_id".into(),
            format!("sensor.{}", entity_slug(&unique_id)).into(),
        );
        if let Value::Object(f) = fields {
            c.extend(f);
        }
        if let Some(t) = &self.availability_topic {
            c.insert("availability_topic".into(), t.clone().into());
            c.insert("payload_available".into(), topic::AVAILABLE.into());
            c.insert("payload_not_available".into(), topic::UNAVAILABLE.into());
        }
        c.insert(
            "origin".into(),
            json!({"name": "blastnet", "sw_version": env!("CARGO_PKG_VERSION")}),
        );
        DiscoveryMessage {
            topic: format!(
                "{}/sensor/{}/config",
                self.discovery_prefix,
                object_id(&unique_id)
            ),
            payload: serde_json::to_vec(&Value::Object(c)).unwrap_or_default(),
        }
    }

    /// The sensors of `site`'s last event.
    pub fn site(&self, site: &str) -> Vec<DiscoveryMessage> {
        let state_topic = topic::event_latest(&self.prefix, site);
        let base = format!("blastnet_{}_{site}_last_event", self.client_id);
        vec![
            self.sensor(
                base.clone(),
                json!({
                    "name": format!("{site} last event"),
                    "state_topic": state_topic,
                    "value_template": "{{ value_json.kind }}",
                    "json_attributes_topic": state_topic,
                    "json_attributes_template": EVENT_ATTRIBUTES,
                    "icon": "mdi:map-marker-alert",
                    "device": self.aggregator_device(),
                }),
            ),
            self.sensor(
                format!("{base}_time"),
                json!({
                    "name": format!("{site} last event time"),
                    "state_topic": state_topic,
                    "value_template": "{{ value_json.origin_utc }}",
                    "device_class": "timestamp",
                    "device": self.aggregator_device(),
                }),
            ),
        ]
    }

    /// The state sensor of node `node` of `site` (`sw_version` from its
    /// status, empty if none yet).
    pub fn node(&self, site: &str, node: &str, sw_version: &str) -> DiscoveryMessage {
        let state_topic = topic::status(&self.prefix, site, node);
        let mut device = json!({
            "identifiers": [format!("blastnet_node_{site}_{node}")],
            "name": format!("blastnet node {node} ({site})"),
            "manufacturer": "blastnet",
            "model": "node",
            "via_device": self.aggregator_identifier(),
        });
        if !sw_version.is_empty() {
            device["sw_version"] = sw_version.into();
        }
        self.sensor(
            format!("blastnet_{}_{site}_{node}_state", self.client_id),
            json!({
                "name": "state",
                "state_topic": state_topic,
                "value_template": "{{ value_json.state }}",
                "json_attributes_topic": state_topic,
                "json_attributes_template": NODE_ATTRIBUTES,
                "icon": "mdi:access-point-network",
                "device": device,
            }),
        )
    }
}

/// `id` in `[a-zA-Z0-9_-]`: other characters become `_`, and then a hash
/// of `id` is appended so that distinct ids stay distinct.
pub fn object_id(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == id {
        clean
    } else {
        format!("{clean}_{:08x}", fnv1a(id) as u32)
    }
}

/// An entity id's object part: lower-case `[a-z0-9_]`.
fn entity_slug(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike `std`'s hasher).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(m: &DiscoveryMessage) -> Value {
        serde_json::from_slice(&m.payload).expect("config is JSON")
    }

    #[test]
    fn object_ids_keep_only_what_home_assistant_allows_and_stay_distinct() {
        assert_eq!(
            object_id("blastnet_agg-1_s1_n01_state"),
            "blastnet_agg-1_s1_n01_state"
        );
        let (a, b) = (object_id("x_n.7_state"), object_id("x_n_7_state"));
        assert_ne!(a, b);
        for id in [a, b, object_id("ä/b c#")] {
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{id}"
            );
        }
    }

    #[test]
    fn node_configs_name_the_status_topic_and_the_aggregator() {
        let d = Discovery::new("homeassistant", "blastnet", "agg", true);
        let m = d.node("hill", "n.7", "0.3.1");
        assert!(m
            .topic
            .starts_with("homeassistant/sensor/blastnet_agg_hill_n_7_state_"));
        let c = parse(&m);
        assert_eq!(c["state_topic"], "blastnet/hill/node/n.7/status");
        assert_eq!(
            c["availability_topic"],
            "blastnet/aggregator/agg/availability"
        );
        assert_eq!(c["device"]["sw_version"], "0.3.1");
        assert_eq!(c["device"]["via_device"], "blastnet_aggregator_agg");
        assert_eq!(c["default_entity_id"], "sensor.blastnet_agg_hill_n_7_state");
        let d = Discovery::new("ha", "a/b", "agg", false);
        let c = parse(&d.site("s")[0]);
        assert_eq!(c["state_topic"], "a/b/s/event/latest");
        assert!(c.get("availability_topic").is_none());
    }
}
