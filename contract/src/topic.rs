//! The SPEC v1 MQTT topic grammar, in one place: formatting, parsing and
//! subscription filters. The prefix is a parameter (SPEC: configurable,
//! default [`DEFAULT_PREFIX`]); it may have several levels (`a/b`).
//!
//! | topic | function |
//! |---|---|
//! | `{prefix}/{site}/node/{node}/detection` | [`detection`] |
//! | `{prefix}/{site}/node/{node}/status` | [`status`] |
//! | `{prefix}/{site}/event` | [`event`] |
//! | `{prefix}/{site}/node/{node}/snippet` (extension) | [`snippet`] |
//!
//! The snippet topic is an extension inside the node grammar (its last
//! level is `snippet`), so that the aggregator's one node subscription per
//! site receives a node's snippets behind the detections they belong to.
//!
//! blastnet extensions (outside the SPEC grammar, so [`parse`] refuses them
//! and the aggregator's node filter never matches them):
//!
//! | topic | function |
//! |---|---|
//! | `{prefix}/{site}/event/latest` (retained) | [`event_latest`] |
//! | `{prefix}/aggregator/{client_id}/availability` (retained, last will) | [`aggregator_availability`] |
//!
//! Parsing is strict ([`parse_node`], [`parse_event`], [`parse`]): anything
//! that is not exactly one of these (an extra level, an empty site, a prefix
//! that only starts the same) is a [`TopicError`] naming what was expected.

/// The SPEC's default topic prefix.
pub const DEFAULT_PREFIX: &str = "blastnet";

/// What a node topic carries: its last level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeMessage {
    /// `.../detection`: a `blastnet.detection/1` payload.
    Detection,
    /// `.../status`: a `blastnet.status/1` payload (retained).
    Status,
    /// Extension: `.../snippet`: a `blastnet.snippet/1` payload (QoS 1,
    /// not retained), the waveform around one detection.
    Snippet,
}

impl NodeMessage {
    /// Every kind: the SPEC's two, then the extension.
    pub const ALL: [NodeMessage; 3] = [
        NodeMessage::Detection,
        NodeMessage::Status,
        NodeMessage::Snippet,
    ];

    /// The topic's last level.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeMessage::Detection => "detection",
            NodeMessage::Status => "status",
            NodeMessage::Snippet => "snippet",
        }
    }

    /// The message kind whose last level is `level`.
    pub fn from_level(level: &str) -> Option<NodeMessage> {
        NodeMessage::ALL.into_iter().find(|m| m.as_str() == level)
    }
}

/// `{prefix}/{site}/node/{node}/{detection|status|snippet}`.
pub fn node(prefix: &str, site: &str, node: &str, msg: NodeMessage) -> String {
    format!("{prefix}/{site}/node/{node}/{}", msg.as_str())
}

/// `{prefix}/{site}/node/{node}/detection`.
pub fn detection(prefix: &str, site: &str, node_id: &str) -> String {
    node(prefix, site, node_id, NodeMessage::Detection)
}

/// `{prefix}/{site}/node/{node}/status`.
pub fn status(prefix: &str, site: &str, node_id: &str) -> String {
    node(prefix, site, node_id, NodeMessage::Status)
}

/// Extension: `{prefix}/{site}/node/{node}/snippet` ([`crate::Snippet`]).
pub fn snippet(prefix: &str, site: &str, node_id: &str) -> String {
    node(prefix, site, node_id, NodeMessage::Snippet)
}

/// `{prefix}/{site}/event`.
pub fn event(prefix: &str, site: &str) -> String {
    format!("{prefix}/{site}/event")
}

/// Extension: `{prefix}/{site}/event/latest`, the newest event of `site`
/// (by origin time), retained, so that a subscriber sees it at once.
pub fn event_latest(prefix: &str, site: &str) -> String {
    format!("{prefix}/{site}/event/latest")
}

/// Extension: `{prefix}/aggregator/{client_id}/availability`, retained:
/// [`AVAILABLE`] while the aggregator is connected, [`UNAVAILABLE`] after a
/// clean stop or (its last will) when its connection is lost.
pub fn aggregator_availability(prefix: &str, client_id: &str) -> String {
    format!("{prefix}/aggregator/{client_id}/availability")
}

/// Payload of [`aggregator_availability`] while connected (Home Assistant's
/// default `payload_available`).
pub const AVAILABLE: &str = "online";

/// Payload of [`aggregator_availability`] once stopped or lost (Home
/// Assistant's default `payload_not_available`).
pub const UNAVAILABLE: &str = "offline";

/// Whether `topic` matches the subscription `filter` (MQTT 3.1.1 4.7: `+`
/// one level, `#` the rest, including none).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(l)) if f == l => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

/// Subscription filter for every node message of `site` (`+` for all
/// sites): `{prefix}/{site}/node/+/+`. One filter for both kinds keeps a
/// node's status behind the detections it published before it (brokers
/// keep order per subscription filter).
pub fn node_filter(prefix: &str, site: &str) -> String {
    format!("{prefix}/{site}/node/+/+")
}

/// Subscription filter for one kind of node message of `site` (`+` for all
/// sites): `{prefix}/{site}/node/+/{detection|status}`.
pub fn node_kind_filter(prefix: &str, site: &str, msg: NodeMessage) -> String {
    format!("{prefix}/{site}/node/+/{}", msg.as_str())
}

/// Subscription filter for the events of `site` (`+` for all sites):
/// `{prefix}/{site}/event`.
pub fn event_filter(prefix: &str, site: &str) -> String {
    event(prefix, site)
}

/// A topic that is not the one expected. A subscriber counts and skips
/// the message (nothing to retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic {topic:?}: expected {expected}")]
#[non_exhaustive]
pub struct TopicError {
    /// The topic as received.
    pub topic: String,
    /// The grammar it should follow, with the prefix filled in.
    pub expected: String,
}

/// A parsed node topic, borrowing from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTopic<'a> {
    /// `{site}`.
    pub site: &'a str,
    /// `{node}`.
    pub node: &'a str,
    /// Detection or status.
    pub kind: NodeMessage,
}

/// Any SPEC topic, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// A node's detection or status.
    Node(NodeTopic<'a>),
    /// A located event of `site`.
    Event {
        /// `{site}`.
        site: &'a str,
    },
}

/// The levels after `{prefix}/`, or `None` when the topic does not start with
/// the whole prefix.
fn after_prefix<'a>(prefix: &str, topic: &'a str) -> Option<std::str::Split<'a, char>> {
    topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .map(|r| r.split('/'))
}

/// Parse `{prefix}/{site}/node/{node}/{detection|status|snippet}`.
pub fn parse_node<'a>(prefix: &str, topic: &'a str) -> Result<NodeTopic<'a>, TopicError> {
    let bad = || TopicError {
        topic: topic.to_string(),
        expected: format!("{prefix}/<site>/node/<node>/detection, /status or /snippet"),
    };
    let mut it = after_prefix(prefix, topic).ok_or_else(bad)?;
    let (Some(site), Some("node"), Some(node), Some(last), None) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad());
    };
    if site.is_empty() || node.is_empty() {
        return Err(bad());
    }
    let kind = NodeMessage::from_level(last).ok_or_else(bad)?;
    Ok(NodeTopic { site, node, kind })
}

/// Parse `{prefix}/{site}/event`; returns the site.
pub fn parse_event<'a>(prefix: &str, topic: &'a str) -> Result<&'a str, TopicError> {
    let bad = || TopicError {
        topic: topic.to_string(),
        expected: format!("{prefix}/<site>/event"),
    };
    let mut it = after_prefix(prefix, topic).ok_or_else(bad)?;
    match (it.next(), it.next(), it.next()) {
        (Some(site), Some("event"), None) if !site.is_empty() => Ok(site),
        _ => Err(bad()),
    }
}

/// Parse any SPEC topic.
pub fn parse<'a>(prefix: &str, topic: &'a str) -> Result<Topic<'a>, TopicError> {
    if let Ok(site) = parse_event(prefix, topic) {
        return Ok(Topic::Event { site });
    }
    parse_node(prefix, topic)
        .map(Topic::Node)
        .map_err(|_| TopicError {
            topic: topic.to_string(),
            expected: format!(
                "{prefix}/<site>/node/<node>/detection, /status or /snippet, or {prefix}/<site>/event"
            ),
        })
}

/// Check a topic prefix given by a user: one or more levels, none empty
/// (no leading, trailing or double `/`), no wildcards. The error says what
/// was expected.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty()
        || prefix.split('/').any(str::is_empty)
        || prefix.contains(['#', '+'])
        || prefix.chars().any(char::is_control)
    {
        return Err(format!(
            "expected a topic prefix like \"blastnet\" (no leading/trailing '/', no wildcards), got {prefix:?}"
        ));
    }
    Ok(())
}

/// Check one topic level given by a user (a site or node id): non-empty, no
/// `/`, `+`, `#`, no control characters; `+` alone only if `allow_wildcard`.
pub fn check_level(level: &str, allow_wildcard: bool) -> Result<(), String> {
    if level.is_empty() {
        return Err("must not be empty".to_string());
    }
    if allow_wildcard && level == "+" {
        return Ok(());
    }
    if level.contains(['/', '#', '+']) || level.chars().any(char::is_control) {
        return Err(format!(
            "{level:?} must be one MQTT topic level (no '/', '+', '#')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_formatted_as_in_the_spec() {
        assert_eq!(
            detection("blastnet", "s1", "n01"),
            "blastnet/s1/node/n01/detection"
        );
        assert_eq!(
            status("blastnet", "s1", "n01"),
            "blastnet/s1/node/n01/status"
        );
        assert_eq!(event("blastnet", "s1"), "blastnet/s1/event");
        assert_eq!(node_filter("blastnet", "+"), "blastnet/+/node/+/+");
        assert_eq!(
            node_kind_filter("a/b", "s", NodeMessage::Detection),
            "a/b/s/node/+/detection"
        );
        assert_eq!(event_filter("blastnet", "+"), "blastnet/+/event");
        assert_eq!(event_latest("blastnet", "s1"), "blastnet/s1/event/latest");
        assert_eq!(
            aggregator_availability("a/b", "agg-1"),
            "a/b/aggregator/agg-1/availability"
        );
    }

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("a/+/c", "a/b/c/d"));
        assert!(!matches("a/+/c", "a/c"));
        assert!(!matches("a/b", "a/bc"));
    }

    #[test]
    fn extension_topics_are_neither_node_topics_nor_spec_events() {
        // The aggregator subscribes with the node filter: its own outputs
        // must never come back to it, whatever the site or client id.
        for prefix in ["blastnet", "a/b"] {
            for id in ["node", "event", "agg"] {
                for t in [
                    event_latest(prefix, "s1"),
                    event_latest(prefix, "node"),
                    aggregator_availability(prefix, id),
                ] {
                    assert!(!matches(&node_filter(prefix, "+"), &t), "{t}");
                    assert!(!matches(&event_filter(prefix, "+"), &t), "{t}");
                    assert!(parse(prefix, &t).is_err(), "{t}");
                }
            }
        }
    }

    #[test]
    fn formatted_topics_parse_back() {
        for prefix in ["blastnet", "a/b"] {
            for msg in NodeMessage::ALL {
                let t = node(prefix, "site-1", "n.7", msg);
                assert_eq!(
                    parse_node(prefix, &t).expect("node topic"),
                    NodeTopic {
                        site: "site-1",
                        node: "n.7",
                        kind: msg
                    }
                );
                assert!(matches!(parse(prefix, &t), Ok(Topic::Node(_))));
            }
            let t = event(prefix, "hill");
            assert_eq!(parse_event(prefix, &t).expect("event topic"), "hill");
            assert_eq!(parse(prefix, &t), Ok(Topic::Event { site: "hill" }));
        }
    }

    #[test]
    fn malformed_node_topics_are_refused() {
        let t = parse_node("a/b", "a/b/x/node/n/status").expect("ok");
        assert_eq!((t.site, t.node, t.kind), ("x", "n", NodeMessage::Status));
        for bad in [
            "blastnet/s1/node/n01",
            "blastnet/s1/node/n01/detection/x",
            "blastnet/s1/nodes/n01/detection",
            "other/s1/node/n01/detection",
            "blastnetx/s1/node/n01/detection",
            "blastnet//node/n01/detection",
            "blastnet/s1/node//detection",
            "blastnet/s1/node/n01/event",
            "blastnet",
            "",
        ] {
            let e = parse_node("blastnet", bad).expect_err(bad);
            assert_eq!(e.topic, bad);
            assert!(
                e.to_string().contains("expected blastnet/<site>/node/"),
                "{e}"
            );
            assert!(parse("blastnet", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_event_topics_are_refused() {
        for bad in [
            "blastnet/event",
            "blastnet//event",
            "blastnet/s1/event/x",
            "blastnetx/s1/event",
            "blastnet/s1/events",
        ] {
            let e = parse_event("blastnet", bad).expect_err(bad);
            assert!(e.to_string().contains("blastnet/<site>/event"), "{e}");
        }
    }

    #[test]
    fn prefixes_and_levels_are_checked() {
        for ok in ["blastnet", "a/b", "x-1"] {
            assert!(check_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/x", "x/", "a//b", "a/+", "#"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(check_level("site-1", false).is_ok());
        assert!(check_level("+", true).is_ok());
        for bad in ["", "+", "a/b", "a#", "a+b"] {
            assert!(check_level(bad, false).is_err(), "{bad:?}");
        }
    }
}
