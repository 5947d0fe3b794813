//! Webhooks (`[[webhook]]`): each final event revision that passes a hook's
//! filters (kinds, confidence, area) is POSTed to its URL as the
//! `blastnet.event/1` JSON, retried with exponential backoff when the
//! server cannot be reached or answers other than 2xx.
//!
//! The filter ([`Webhook::wants`]) is pure; [`spawn`] runs one task per
//! hook with its own queue, so a slow or dead endpoint delays only itself.
//! Plain `http://` only (this build has no TLS); HTTP/1.1 is written by
//! hand, as in `testkit::http_get`, rather than pulling in a client crate.

use std::time::Duration;

use blastnet_contract::{Event, EventStatus, SourceKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// An event's JSON, shared by every hook's queue.
pub type Body = std::sync::Arc<[u8]>;

/// First retry after this; doubled each time up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Attempts per event before it is given up (logged, counted): with the
/// backoff above, about 2.5 minutes of an endpoint being down.
pub const MAX_ATTEMPTS: u32 = 10;

/// One validated `[[webhook]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// The URL as given (for logs).
    pub url: String,
    /// Host to connect to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Kinds sent; `None`: every kind.
    pub kinds: Option<Vec<SourceKind>>,
    /// Events less confident than this are not sent.
    pub min_confidence: f64,
    /// `[south, west, north, east]` in degrees: only events inside are sent.
    pub area: Option<[f64; 4]>,
}

impl Webhook {
    /// Parse `http://host[:port][/path]`; the error says what was expected.
    pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
        let bad = || {
            format!(
                "expected http://host[:port]/path (plain HTTP; no TLS in this build), got {url:?}"
            )
        };
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') || authority.is_empty() {
            return Err(bad());
        }
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, p) = h.split_once(']').ok_or_else(bad)?;
            (h.to_string(), p.strip_prefix(':').unwrap_or("80"))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (authority.to_string(), "80"),
            }
        };
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
        if host.is_empty() || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        Ok((host, port, path))
    }

    /// Whether this hook sends `ev`: a final revision of a wanted kind, at
    /// least as confident as asked, inside the area.
    pub fn wants(&self, ev: &Event) -> bool {
        ev.status == EventStatus::Final
            && self.kinds.as_ref().is_none_or(|k| k.contains(&ev.kind))
            && ev.confidence >= self.min_confidence
            && self
                .area
                .is_none_or(|[s, w, n, e]| (s..=n).contains(&ev.lat) && (w..=e).contains(&ev.lon))
    }

    /// One POST; `Ok` on a 2xx answer.
    async fn post(&self, body: &[u8]) -> Result<(), String> {
        let addr = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut s = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        .map_err(|_| "connect: timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: blastnet-aggregator/{}\r\nConnection: close\r\n\r\n",
            self.path,
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        let exchange = async {
            s.write_all(&req).await?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 512];
            // The status line is enough.
            while !buf.windows(2).any(|w| w == b"\r\n") {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok::<_, std::io::Error>(buf)
        };
        let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
            .map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&buf);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                format!(
                    "not an HTTP answer: {:?}",
                    line.lines().next().unwrap_or("")
                )
            })?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

/// Start one sender task per hook; returns the queue each final event goes
/// to (events a hook does not want are skipped there). The tasks end when
/// the sender is dropped and their queues are empty.
pub fn spawn(hooks: Vec<Webhook>) -> Vec<mpsc::UnboundedSender<(Event, Body)>> {
    hooks
        .into_iter()
        .map(|hook| {
            let (tx, mut rx) = mpsc::unbounded_channel::<(Event, Body)>();
            tokio::spawn(async move {
                while let Some((ev, body)) = rx.recv().await {
                    if !hook.wants(&ev) {
                        continue;
                    }
                    deliver(&hook, &ev, &body).await;
                }
            });
            tx
        })
        .collect()
}

/// POST with retries; gives up after [`MAX_ATTEMPTS`].
async fn deliver(hook: &Webhook, ev: &Event, body: &[u8]) {
    let mut wait = FIRST_BACKOFF;
    for attempt in 1..=MAX_ATTEMPTS {
        match hook.post(body).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(url = %hook.url, event = %ev.event_id, "webhook delivered at attempt {attempt}");
                }
                return;
            }
            Err(e) if attempt < MAX_ATTEMPTS => {
                tracing::warn!(url = %hook.url, event = %ev.event_id, "webhook attempt {attempt}: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
            Err(e) => {
                tracing::error!(url = %hook.url, event = %ev.event_id, "webhook given up after {attempt} attempts: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_with_a_host() {
        assert_eq!(
            Webhook::parse_url("http://10.0.0.5:8123/api/webhook/x?y=1").unwrap(),
            ("10.0.0.5".into(), 8123, "/api/webhook/x?y=1".into())
        );
        assert_eq!(
            Webhook::parse_url("http://h").unwrap(),
            ("h".into(), 80, "/".into())
        );
        assert_eq!(
            Webhook::parse_url("http://[::1]:9/p").unwrap(),
            ("::1".into(), 9, "/p".into())
        );
        for bad in [
            "https://h/",
            "h:80/",
            "http://",
            "http://h:0/",
            "http://u@h/",
            "http://h/a b",
        ] {
            assert!(Webhook::parse_url(bad).is_err(), "{bad}");
        }
    }
}
