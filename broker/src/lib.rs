//! MQTT brokers for zero set-up runs and for tests: an embedded rumqttd, and
//! a Mosquitto process on a free loopback port (for interoperability tests).
//!
//! Both listen on 127.0.0.1 only. rumqttd pitfalls handled here: an
//! all-zero `RouterConfig::default()`, a `start()` that blocks forever, a
//! silent port clash and no way to learn a port-0 port.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a broker could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The port is taken. Choose another (or `free_port()`).
    #[error("127.0.0.1:{port} is already in use: {source}")]
    PortInUse {
        /// The port.
        port: u16,
        /// The bind error.
        source: std::io::Error,
    },
    /// The broker did not accept connections in time. Check its log.
    #[error("{what} did not accept connections on 127.0.0.1:{port} within {secs} s")]
    NotListening {
        /// Which broker.
        what: String,
        /// The port.
        port: u16,
        /// How long we waited.
        secs: u64,
    },
    /// The mosquitto binary is missing: install it (`apt-get install -y mosquitto`).
    #[error(
        "mosquitto not found (looked for {0}); install it with `apt-get install -y mosquitto`"
    )]
    MosquittoMissing(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a test that requires Mosquitto says when it cannot start one.
pub const MOSQUITTO_REQUIRED: &str = "this test requires Mosquitto: run the tests with \
    `scripts/test`, which installs it when missing (or `apt-get install -y mosquitto`, \
    or set MOSQUITTO to the binary)";

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18_830)
}

/// Wait until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        // (A refused loopback connect costs microseconds: polling finely
        // keeps every replay's start from waiting a whole period.)
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// An MQTT broker URL for a loopback port.
pub fn loopback_url(port: u16) -> String {
    format!("mqtt://127.0.0.1:{port}")
}

/// rumqttd running in this process (on its own threads) until the process exits:
/// rumqttd has no shutdown API, so a test that must stop a broker runs
/// `blastnet broker` as a child process or uses [`Mosquitto`].
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    port: u16,
}

impl EmbeddedBroker {
    /// Start on 127.0.0.1:`port` and wait until it accepts connections.
    pub fn start(port: u16) -> Result<EmbeddedBroker, BrokerError> {
        // rumqttd only logs a bind failure: check first so the caller hears of it.
        drop(
            TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                .map_err(|source| BrokerError::PortInUse { port, source })?,
        );
        let config = rumqttd_config(port);
        std::thread::Builder::new()
            .name(format!("rumqttd-{port}"))
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!("embedded broker on port {port} stopped: {e}");
                }
            })
            .map_err(|source| BrokerError::Io {
                what: "spawning the embedded broker thread".into(),
                source,
            })?;
        if !wait_for_port(port, Duration::from_secs(10)) {
            return Err(BrokerError::NotListening {
                what: "embedded rumqttd".into(),
                port,
                secs: 10,
            });
        }
        Ok(EmbeddedBroker { port })
    }

    /// Start on a free loopback port.
    pub fn start_on_free_port() -> Result<EmbeddedBroker, BrokerError> {
        let mut last = None;
        for _ in 0..5 {
            match EmbeddedBroker::start(free_port()) {
                Ok(b) => return Ok(b),
                Err(e @ BrokerError::PortInUse { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(BrokerError::NotListening {
            what: "embedded rumqttd".into(),
            port: 0,
            secs: 0,
        }))
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        loopback_url(self.port)
    }
}

/// The rumqttd configuration: v4 (MQTT 3.1.1) and v5 listeners? Only v4 on
/// `port`, which both rumqttc v4 clients and Mosquitto's tools speak.
fn rumqttd_config(port: u16) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: blastnet_contract::broker::MAX_PACKET_BYTES,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: format!("v4-{port}"),
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let mut v4 = HashMap::new();
    v4.insert("v4".to_string(), server);
    rumqttd::Config {
        id: 0,
        // RouterConfig::default() is all zeros: connections would be accepted, then closed.
        router: rumqttd::RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            max_segment_size: 104_857_600,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        ..Default::default()
    }
}

/// The limits of the shipped Mosquitto configuration
/// (`hardware/mosquitto/blastnet.conf` holds these lines; a test checks):
/// - `max_packet_size`: [`blastnet_contract::broker::MAX_PACKET_BYTES`]; a
///   larger publish disconnects its sender and reaches no subscriber;
/// - `max_queued_messages`: QoS 1 messages queued per absent persistent
///   session (the default, 1000, drops the rest: 40 s of a busy site);
/// - `max_inflight_messages`: QoS 1 messages on their way to one client
///   before its acknowledgements (the aggregator acknowledges once a batch is
///   on disk; the default, 20, would cap it at 20 per write).
///
/// Every [`Mosquitto`] the tests start has them too.
pub const MOSQUITTO_LIMITS: &str =
    "max_packet_size 1048576\nmax_queued_messages 1000000\nmax_inflight_messages 1000\n";

/// A line of every test broker's configuration. Mosquitto started
/// as root (a container, CI) drops to the `mosquitto` user, which cannot
/// write into the private temp dir: it then saves no persistence file and
/// no log, without failing, so a restarted broker has lost every session
/// and every queued QoS 1 message it had acknowledged (issue #17: whole
/// soak rounds lost at each broker stop). `user root` keeps it as the user
/// that owns the dir; started as any other user, Mosquitto ignores it.
const MOSQUITTO_TEST_USER: &str = "user root\n";

/// A Mosquitto broker process on a free 127.0.0.1 port, killed on drop.
/// Persistence is on (in a private temp dir), so a stopped and restarted
/// broker keeps sessions and queued QoS 1 messages, as a real one does.
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Mosquitto {
    /// Start with anonymous access on a free port.
    pub fn start() -> Result<Mosquitto, BrokerError> {
        Mosquitto::start_with_config("allow_anonymous true\n")
    }

    /// Start for a test that requires Mosquitto. The README's test command,
    /// `scripts/test`, installs it, so a test never passes without it.
    ///
    /// # Panics
    ///
    /// When it cannot start: the message names what is missing and how to
    /// get it.
    pub fn start_required() -> Mosquitto {
        Mosquitto::start().unwrap_or_else(|e| panic!("{e}\n{MOSQUITTO_REQUIRED}"))
    }

    /// Start with `extra` configuration lines (auth, ACL, TLS listeners...) added
    /// after `listener <port> 127.0.0.1` and the persistence settings. `{dir}` in
    /// `extra` is replaced by the broker's private directory.
    pub fn start_with_config(extra: &str) -> Result<Mosquitto, BrokerError> {
        let bin = mosquitto_binary()?;
        let dir = tempfile::tempdir().map_err(|source| BrokerError::Io {
            what: "creating a temp dir for mosquitto".into(),
            source,
        })?;
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\n{MOSQUITTO_TEST_USER}persistence true\npersistence_location {d}/\nautosave_interval 1\nlog_dest file {d}/mosquitto.log\n{MOSQUITTO_LIMITS}{extra}",
            d = dir.path().display(),
            extra = extra.replace("{dir}", &dir.path().display().to_string()),
        );
        std::fs::write(&config, text).map_err(|source| BrokerError::Io {
            what: format!("writing {}", config.display()),
            source,
        })?;
        let mut m = Mosquitto {
            child: None,
            port,
            dir,
            config,
        };
        m.spawn(&bin)?;
        Ok(m)
    }

    fn spawn(&mut self, bin: &Path) -> Result<(), BrokerError> {
        let child = Command::new(bin)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| BrokerError::Io {
                what: format!("starting {}", bin.display()),
                source,
            })?;
        self.child = Some(child);
        if !wait_for_port(self.port, Duration::from_secs(10)) {
            return Err(BrokerError::NotListening {
                what: format!(
                    "mosquitto (log: {})",
                    self.dir.path().join("mosquitto.log").display()
                ),
                port: self.port,
                secs: 10,
            });
        }
        Ok(())
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        loopback_url(self.port)
    }

    /// Its private directory (config, log, persistence).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stop it gracefully (SIGTERM, so it saves its persistence file) and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port after [`Mosquitto::stop`].
    pub fn start_again(&mut self) -> Result<(), BrokerError> {
        if self.child.is_some() {
            return Ok(());
        }
        let bin = mosquitto_binary()?;
        self.spawn(&bin)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where the mosquitto binary is: `$MOSQUITTO`, then PATH, then /usr/sbin.
pub fn mosquitto_binary() -> Result<PathBuf, BrokerError> {
    if let Some(p) = std::env::var_os("MOSQUITTO") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("mosquitto"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/sbin/mosquitto"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            BrokerError::MosquittoMissing(
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_broker_accepts_connections_and_refuses_a_taken_port() {
        let b = EmbeddedBroker::start_on_free_port().expect("start");
        assert!(wait_for_port(b.port(), Duration::from_secs(1)));
        assert!(matches!(
            EmbeddedBroker::start(b.port()),
            Err(BrokerError::PortInUse { .. })
        ));
    }

    #[test]
    fn mosquitto_stops_and_starts_again_on_the_same_port() {
        let mut m = Mosquitto::start_required();
        let port = m.port();
        m.stop();
        assert!(!wait_for_port(port, Duration::from_millis(300)));
        m.start_again().expect("restart");
        assert!(wait_for_port(port, Duration::from_secs(1)));
    }
}

#[cfg(test)]
mod limit_tests {
    #[test]
    fn the_mosquitto_packet_limit_is_the_clients_limit() {
        let want = format!(
            "max_packet_size {}",
            blastnet_contract::broker::MAX_PACKET_BYTES
        );
        assert!(super::MOSQUITTO_LIMITS.lines().any(|l| l == want));
    }
}
