//! The broker address as users type it, parsed once for every part (node,
//! aggregator, replay).
//!
//! Accepted: `mqtt://host:port`, `mqtts://host:port` (TLS), the aliases
//! `tcp://` and `ssl://`, a bare `host:port`, and a host alone; a missing
//! port is the MQTT default for the scheme (1883, or 8883 with TLS). IPv6
//! literals go in brackets (`mqtt://[::1]:1883`). Refused, with a message
//! naming what was expected: other schemes, a path, query or user info
//! (credentials belong in the config's username/password), an empty host,
//! port 0 or a port that is not a number.

use std::fmt;
use std::str::FromStr;

/// Default MQTT port over plain TCP.
pub const DEFAULT_PORT: u16 = 1883;
/// Default MQTT port over TLS.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// The largest MQTT packet any blastnet part sends or takes, bytes: the
/// shipped Mosquitto configuration's `max_packet_size`, the embedded
/// broker's limit and every blastnet client's. A broker with this limit
/// refuses a larger publish (Mosquitto disconnects its sender), so no
/// subscriber is ever handed a packet it would refuse and have redelivered
/// forever. Payloads under it but over `ingest.max_payload_bytes` reach the
/// aggregator, which acknowledges, counts and drops them.
pub const MAX_PACKET_BYTES: usize = 1 << 20;

const EXPECTED: &str = "mqtt://host[:port], mqtts://host[:port] or host[:port]";

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (`mqtts://`, `ssl://`).
    pub tls: bool,
}

/// A broker address that does not parse. The message says what was wrong
/// and what was expected; fix the URL (nothing to retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {EXPECTED}: {problem}, got {url:?}")]
#[non_exhaustive]
pub struct BrokerUrlError {
    /// The text as given.
    pub url: String,
    /// What is wrong with it.
    pub problem: String,
}

impl BrokerUrl {
    /// Parse what a user typed (see the module docs).
    pub fn parse(url: &str) -> Result<BrokerUrl, BrokerUrlError> {
        let err = |problem: String| BrokerUrlError {
            url: url.to_string(),
            problem,
        };
        let text = url.trim();
        let (tls, rest) = if let Some(r) = strip_scheme(text, &["mqtts", "ssl"]) {
            (true, r)
        } else if let Some(r) = strip_scheme(text, &["mqtt", "tcp"]) {
            (false, r)
        } else if let Some((scheme, _)) = text.split_once("://") {
            return Err(err(format!("unknown scheme {scheme:?}")));
        } else {
            (false, text)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(err(
                "no path, query or user info (credentials go in username/password)".into(),
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| err("unclosed '[' around an IPv6 address".into()))?;
            match after {
                "" => (h, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(err(format!("unexpected {after:?} after ']'"))),
                },
            }
        } else {
            match rest.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h, Some(p)),
                Some(_) => {
                    return Err(err(
                        "an IPv6 address must be in brackets, e.g. [::1]:1883".into()
                    ))
                }
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(err("the host is empty".into()));
        }
        let bracketed = rest.starts_with('[');
        let host_ok = if bracketed {
            // An IPv6 literal, maybe with a zone (`fe80::1%eth0`).
            let (addr, zone) = host.split_once('%').unwrap_or((host, ""));
            addr.contains(':')
                && addr
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
                && zone
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        } else {
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        };
        if !host_ok {
            return Err(err(format!(
                "host {host:?} is not a host name, an IPv4 address or a bracketed IPv6 address"
            )));
        }
        let port = match port {
            None => {
                if tls {
                    DEFAULT_TLS_PORT
                } else {
                    DEFAULT_PORT
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(err(format!("port {p:?} is not a number in 1..=65535"))),
            },
        };
        Ok(BrokerUrl {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

fn strip_scheme<'a>(text: &'a str, schemes: &[&str]) -> Option<&'a str> {
    schemes
        .iter()
        .find_map(|s| text.strip_prefix(s).and_then(|r| r.strip_prefix("://")))
}

impl FromStr for BrokerUrl {
    type Err = BrokerUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BrokerUrl::parse(s)
    }
}

impl fmt::Display for BrokerUrl {
    /// `mqtt://host:port` or `mqtts://host:port` (IPv6 in brackets): parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Regression (fuzz target `mqtt_names`, input `[[]`): a bracket was
    /// taken for a host, and the printed URL did not parse back.
    #[test]
    fn a_bracket_is_not_a_host() {
        for bad in [
            "[[]",
            "mqtt://[[]:1883",
            "a b:1883",
            "mqtt://[x]:1883",
            "ho]st",
        ] {
            let e = BrokerUrl::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("expected"), "{e}");
        }
        for good in [
            "[::1]:1883",
            "mqtts://[fe80::1%eth0]",
            "broker-1.example_site.local",
        ] {
            let b = BrokerUrl::parse(good).expect(good);
            assert_eq!(BrokerUrl::parse(&b.to_string()), Ok(b));
        }
    }

    use super::*;

    fn ok(url: &str) -> (String, u16, bool) {
        let b = BrokerUrl::parse(url).expect(url);
        (b.host, b.port, b.tls)
    }

    #[test]
    fn what_users_type_is_accepted() {
        let cases: [(&str, (&str, u16, bool)); 12] = [
            ("mqtt://h:1", ("h", 1, false)),
            ("mqtt://10.0.0.2:1884", ("10.0.0.2", 1884, false)),
            ("mqtt://broker", ("broker", 1883, false)),
            ("mqtt://broker/", ("broker", 1883, false)),
            ("tcp://broker:1999", ("broker", 1999, false)),
            ("mqtts://h", ("h", 8883, true)),
            ("mqtts://h:9999", ("h", 9999, true)),
            ("ssl://h", ("h", 8883, true)),
            ("127.0.0.1:1999", ("127.0.0.1", 1999, false)),
            ("localhost", ("localhost", 1883, false)),
            ("mqtt://[::1]:1999", ("::1", 1999, false)),
            ("[::1]", ("::1", 1883, false)),
        ];
        for (url, (h, p, tls)) in cases {
            assert_eq!(ok(url), (h.to_string(), p, tls), "{url}");
        }
    }

    #[test]
    fn bad_urls_say_what_was_expected() {
        for bad in [
            "ws://h:1",
            "http://x",
            "mqtt://h:x",
            "mqtt://x:0",
            "mqtt://x:70000",
            "mqtt://",
            ":1883",
            "mqtt://h/path",
            "mqtt://user:pw@h",
            "mqtt://h?x=1",
            "mqtt://[::1",
            "mqtt://[::1]x",
            "::1",
        ] {
            let e = BrokerUrl::parse(bad).expect_err(bad);
            let msg = e.to_string();
            assert!(msg.starts_with("expected mqtt://host[:port]"), "{msg}");
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        }
    }

    #[test]
    fn display_parses_back() {
        for url in ["mqtt://h:1", "mqtts://h:8883", "mqtt://[::1]:1883"] {
            let b = BrokerUrl::parse(url).expect(url);
            assert_eq!(b.to_string(), url);
            assert_eq!(b.to_string().parse::<BrokerUrl>(), Ok(b));
        }
    }
}
