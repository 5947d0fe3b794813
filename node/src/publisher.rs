//! The MQTT publisher: spool entries out in seq order, PUBACKs in, spool
//! entries removed; heartbeats retained; a last will that says `offline`.
//!
//! The queue state (what to hand out next, what is in flight, what was
//! acknowledged, where to restart after a reconnect) is the pure
//! [`Outbox`]; this file does the I/O around it.
//!
//! Each connection gets a fresh rumqttc `EventLoop` (clean session). rumqttc
//! keeps unacknowledged publishes only in memory and drops them when a new
//! session starts, so the spool, not rumqttc, is the outbox: after every
//! (re)connect the publisher starts again from the oldest spooled seq.
//! A detection whose PUBACK was lost with a connection is therefore sent
//! again with the same seq (at-least-once; subscribers de-duplicate by
//! `(node_id, seq)`), but never under a new seq.
//!
//! Order on the wire: spooled detections in seq order, then the latest
//! heartbeat, then snippets, then (at the end) the `offline` status. A
//! heartbeat is never sent ahead of a detection spooled before it, so a
//! subscriber that sees a status time has already seen every detection up
//! to it.
//!
//! Snippets (waveform evidence, an extension) are best effort and never in
//! a detection's way: memory only, at most `audio.snippet_queue` waiting
//! (the oldest dropped beyond it), two in flight, sent once (lost with a
//! connection). Each drop or loss is counted in status as
//! `snippets_dropped`; the acknowledged ones as `snippets_published`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use blastnet_contract::{NodeState, Status, UtcNs, WILL_COUNTER};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::NodeRuntimeConfig;
use crate::error::NodeError;
use crate::outbox::{Item, Outbox};
use crate::pipeline::PubMsg;
use crate::spool::Spool;

/// How long a stopping node (cancelled) keeps trying to deliver before it exits.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What the publisher did.
#[derive(Debug, Clone, Default)]
pub struct PublisherReport {
    /// Detections acknowledged by the broker.
    pub acked: u64,
    /// Connections accepted by the broker.
    pub connections: u64,
    /// Detections still in the spool at exit.
    pub backlog_at_exit: u64,
    /// Everything spooled was acknowledged and the final status delivered.
    pub drained: bool,
}

struct Conn {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, rumqttc::ConnectionError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) struct Publisher {
    cfg: NodeRuntimeConfig,
    spool: Arc<Spool>,
    rx: UnboundedReceiver<PubMsg>,
    cancel: CancellationToken,
    latest: Option<Status>,
    /// The node's data time at start (see [`Publisher::new`]).
    start: UtcNs,
    ending: Option<Status>,
    outbox: Outbox,
    report: PublisherReport,
    backoff: Backoff,
    /// Snippets waiting for the broker, oldest first: (seq, payload).
    snippets: VecDeque<(u64, Vec<u8>)>,
    /// Snippets dropped from a full queue (or that did not serialise).
    snippets_dropped: u64,
    /// Snippets the broker acknowledged.
    snippets_published: u64,
}

async fn recv_event(conn: &mut Option<Conn>) -> Option<Result<Event, rumqttc::ConnectionError>> {
    match conn {
        Some(c) => c.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Publisher {
    /// `start` is the node's data time when it starts (the wall clock live,
    /// the first sample's time in a replay): the time of the offline will
    /// of a connection made before the first status.
    pub fn new(
        cfg: NodeRuntimeConfig,
        spool: Arc<Spool>,
        rx: UnboundedReceiver<PubMsg>,
        cancel: CancellationToken,
        start: UtcNs,
    ) -> Publisher {
        let backoff = Backoff::new(cfg.mqtt.backoff_initial, cfg.mqtt.backoff_max);
        let outbox = Outbox::new(usize::from(cfg.mqtt.inflight));
        Publisher {
            cfg,
            spool,
            rx,
            cancel,
            latest: None,
            start,
            ending: None,
            outbox,
            report: PublisherReport::default(),
            backoff,
            snippets: VecDeque::new(),
            snippets_dropped: 0,
            snippets_published: 0,
        }
    }

    /// Queue a snippet; a full queue drops its oldest (counted).
    fn queue_snippet(&mut self, s: &blastnet_contract::Snippet) {
        let payload = match serde_json::to_vec(s) {
            Ok(p) => p,
            Err(e) => {
                self.snippets_dropped += 1;
                tracing::warn!("snippet of seq {} does not serialise: {e}", s.seq);
                return;
            }
        };
        while self.snippets.len() >= self.cfg.audio.snippet_queue.max(1) {
            self.snippets.pop_front();
            self.snippets_dropped += 1;
            if self.snippets_dropped.is_power_of_two() {
                tracing::warn!(
                    "snippet queue full ({} waiting for the broker): dropping the oldest ({} so far)",
                    self.snippets.len() + 1,
                    self.snippets_dropped
                );
            }
        }
        self.snippets.push_back((s.seq, payload));
    }

    fn options(&self) -> Result<MqttOptions, NodeError> {
        let m = &self.cfg.mqtt;
        let mut o = MqttOptions::new(m.client_id.clone(), m.host.clone(), m.port);
        o.set_keep_alive(m.keep_alive);
        o.set_clean_session(true);
        o.set_inflight(m.inflight);
        let max_packet = blastnet_contract::broker::MAX_PACKET_BYTES;
        o.set_max_packet_size(max_packet, max_packet);
        if let Some(u) = &m.username {
            o.set_credentials(u.clone(), m.password.clone().unwrap_or_default());
        }
        if m.tls {
            self.set_tls(&mut o)?;
        }
        // The will: the broker publishes it (retained) if this connection
        // dies. At the data time of the latest status, or before the first
        // one the node's start: never the wall clock in a replay, which
        // would put a replayed node's data time years ahead (an aggregator
        // following the nodes' data time would wait on it, or jump to it).
        let mut will = self.latest.clone().unwrap_or_else(|| Status {
            spool_backlog: self.spool.backlog(),
            ..Status::new(
                self.cfg.node_id.clone(),
                NodeState::Online,
                self.start,
                self.cfg.position.unwrap_or_default(),
            )
        });
        will.state = NodeState::Offline;
        // Marks it as the will (the broker lost the connection), not the
        // node's own last status at the end of its data.
        will.counters.insert(WILL_COUNTER.into(), 1);
        let payload = serde_json::to_vec(&will).map_err(|e| NodeError::Internal(e.to_string()))?;
        o.set_last_will(LastWill::new(
            self.cfg.status_topic(),
            payload,
            QoS::AtLeastOnce,
            true,
        ));
        Ok(o)
    }

    #[cfg(feature = "tls")]
    fn set_tls(&self, o: &mut MqttOptions) -> Result<(), NodeError> {
        use rumqttc::{TlsConfiguration, Transport};
        let tls = match &self.cfg.mqtt.ca_file {
            Some(f) => TlsConfiguration::Simple {
                ca: std::fs::read(f)
                    .map_err(|e| NodeError::io(f, "cannot read mqtt.ca_file", e))?,
                alpn: None,
                client_auth: None,
            },
            None => TlsConfiguration::default(),
        };
        o.set_transport(Transport::Tls(tls));
        Ok(())
    }

    #[cfg(not(feature = "tls"))]
    fn set_tls(&self, _o: &mut MqttOptions) -> Result<(), NodeError> {
        Err(NodeError::Config {
            file: "<runtime>".into(),
            field: "mqtt.url".into(),
            msg: "mqtts:// needs a build with the `tls` cargo feature".into(),
        })
    }

    fn connect(&mut self) -> Result<Conn, NodeError> {
        let opts = self.options()?;
        let cap = usize::from(self.cfg.mqtt.inflight) + 16;
        let (client, mut el) = AsyncClient::new(opts, cap);
        // A detection goes out at once: with Nagle's algorithm a small
        // packet written while an earlier one is unacknowledged waits for
        // the broker's delayed ACK (40 ms on Linux).
        let mut net = el.network_options();
        net.set_tcp_nodelay(true);
        el.set_network_options(net);
        let (tx, events) = mpsc::unbounded_channel();
        // The event loop runs in its own task so that nothing else cancels a
        // connection attempt half-way; it ends at the first error.
        let task = tokio::spawn(async move {
            loop {
                let ev = el.poll().await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    break;
                }
            }
        });
        self.outbox.disconnected();
        Ok(Conn {
            client,
            events,
            task,
        })
    }

    fn stamped(&self, st: &Status) -> Vec<u8> {
        let mut st = st.clone();
        st.spool_backlog = self.spool.backlog();
        st.counters
            .insert("spool_quarantined".into(), self.spool.quarantined());
        st.counters.insert("published".into(), self.report.acked);
        st.counters
            .insert("connections".into(), self.report.connections);
        if self.cfg.audio.publish_snippets {
            st.counters.insert(
                "snippets_dropped".into(),
                self.snippets_dropped + self.outbox.snippets_lost(),
            );
            st.counters
                .insert("snippets_published".into(), self.snippets_published);
        }
        serde_json::to_vec(&st).unwrap_or_default()
    }

    /// Hand rumqttc what the outbox asks for, as far as the in-flight
    /// window allows, in order.
    fn pump(&mut self, c: &Conn) {
        let det_topic = self.cfg.detection_topic();
        let status_topic = self.cfg.status_topic();
        let snippet_topic = self.cfg.snippet_topic();
        let spool = Arc::clone(&self.spool);
        loop {
            let snippet = self.snippets.front().map(|(seq, _)| *seq);
            let Some(item) = self
                .outbox
                .next_with(|cursor| spool.next_at_or_after(cursor), snippet)
            else {
                break;
            };
            let (topic, payload) = match item {
                Item::Snippet(_) => match self.snippets.front() {
                    Some((_, p)) => (&snippet_topic, p.clone()),
                    None => {
                        self.outbox.skip(item);
                        continue;
                    }
                },
                // `read` checks the entry: a damaged one is quarantined
                // (logged, counted) and skipped like one already gone.
                Item::Detection(seq) => match self.spool.read(seq) {
                    Some(payload) => (&det_topic, payload),
                    None => {
                        self.outbox.skip(item);
                        continue;
                    }
                },
                // The outbox offers a status only after one was given (so
                // the `None` arms are not reached).
                Item::Status | Item::Final => {
                    let st = match item {
                        Item::Status => self.latest.as_ref(),
                        _ => self.ending.as_ref(),
                    };
                    match st {
                        Some(st) => (&status_topic, self.stamped(st)),
                        None => {
                            self.outbox.skip(item);
                            continue;
                        }
                    }
                }
            };
            let retain = matches!(item, Item::Status | Item::Final);
            if c.client
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .is_err()
            {
                return; // request channel full: try again after the next event
            }
            if matches!(item, Item::Snippet(_)) {
                self.snippets.pop_front();
            }
            self.outbox.handed(item);
        }
    }

    fn on_event(&mut self, ev: Event) -> Result<(), NodeError> {
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                self.outbox.connected();
                self.report.connections += 1;
                self.backoff.reset();
                tracing::info!(
                    "connected to mqtt://{}:{} ({} spooled detection(s) to send)",
                    self.cfg.mqtt.host,
                    self.cfg.mqtt.port,
                    self.spool.backlog()
                );
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => self.outbox.outgoing(pkid),
            Event::Incoming(Packet::PubAck(ack)) => {
                let item = self.outbox.acked(ack.pkid);
                if let Some(Item::Detection(seq)) = item {
                    if self.spool.remove(seq)? {
                        self.report.acked += 1;
                    }
                } else if let Some(Item::Snippet(_)) = item {
                    self.snippets_published += 1;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.ending.is_some() && self.outbox.final_acked() && self.spool.backlog() == 0
    }

    /// Run until the pipeline ended and everything is delivered, or the
    /// drain/shutdown deadline passes.
    pub async fn run(mut self) -> Result<PublisherReport, NodeError> {
        let mut conn: Option<Conn> = None;
        let mut next_attempt = Some(Instant::now());
        let mut deadline: Option<Instant> = None;
        let mut cancel_seen = false;
        let mut rx_open = true;
        loop {
            if conn.is_none() && next_attempt.is_some_and(|t| t <= Instant::now()) {
                next_attempt = None;
                conn = Some(self.connect()?);
            }
            if let Some(c) = conn.as_ref().filter(|_| self.outbox.is_connected()) {
                self.pump(c);
            }
            if self.done() {
                self.report.drained = true;
                break;
            }
            if !rx_open && self.ending.is_none() {
                // The pipeline vanished without an end message (it failed).
                break;
            }
            tokio::select! {
                _ = self.cancel.cancelled(), if !cancel_seen => {
                    cancel_seen = true;
                    let grace = Instant::now() + SHUTDOWN_GRACE;
                    deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
                }
                ev = recv_event(&mut conn) => match ev {
                    Some(Ok(ev)) => {
                        if conn.is_some() {
                            self.on_event(ev)?;
                        }
                    }
                    Some(Err(e)) => {
                        let delay = self.backoff.next_delay(&mut rand::rng());
                        let was = conn.take().is_some() && self.outbox.is_connected();
                        self.outbox.disconnected();
                        if was {
                            tracing::warn!("mqtt connection lost: {e}; reconnecting in {:.1} s", delay.as_secs_f64());
                        } else {
                            tracing::warn!("mqtt connect to {}:{} failed: {e}; retrying in {:.1} s", self.cfg.mqtt.host, self.cfg.mqtt.port, delay.as_secs_f64());
                        }
                        next_attempt = Some(Instant::now() + delay);
                    }
                    None => {
                        conn = None;
                        self.outbox.disconnected();
                        next_attempt = Some(Instant::now() + self.backoff.next_delay(&mut rand::rng()));
                    }
                },
                m = self.rx.recv(), if rx_open => match m {
                    Some(PubMsg::Spooled(seq)) => tracing::trace!("seq {seq} spooled"),
                    Some(PubMsg::Snippet(s)) => self.queue_snippet(&s),
                    Some(PubMsg::Status(st)) => {
                        self.latest = Some(*st);
                        self.outbox.status_updated();
                    }
                    Some(PubMsg::End { status, completed }) => {
                        self.ending = Some(*status);
                        self.outbox.end();
                        let limit = if completed { self.cfg.drain_timeout } else { Some(SHUTDOWN_GRACE) };
                        if let Some(l) = limit {
                            let t = Instant::now() + l;
                            deadline = Some(deadline.map_or(t, |d| d.min(t)));
                        }
                    }
                    None => rx_open = false,
                },
                _ = sleep_until_opt(next_attempt), if conn.is_none() => {}
                _ = sleep_until_opt(deadline) => {
                    tracing::warn!("stopping with {} detection(s) still spooled (sent on the next start)", self.spool.backlog());
                    break;
                }
            }
        }
        if let Some(c) = conn.take() {
            if self.outbox.is_connected() {
                let _ = c.client.try_disconnect();
                let mut c = c;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = c.events.recv().await {}
                })
                .await;
            }
        }
        self.report.backlog_at_exit = self.spool.backlog();
        Ok(self.report)
    }
}
