//! The shipped broker security (hardware/mosquitto/) against a real Mosquitto:
//! TLS listener, per-node passwords made by `add-node` (mosquitto_passwd),
//! certificates made by `make-certs` (openssl), and the ACL that lets a node
//! publish only below its own topic. Clients are real: `mosquitto_pub` over
//! TLS for the nodes (rumqttc is built without TLS here), rumqttc on the
//! loopback listener for the readers, and the aggregator service itself for
//! the payload `node_id` check that the ACL cannot do.
//!
//! Requires mosquitto, its clients and openssl (`scripts/test` installs
//! them): fails, naming the missing one, when they are absent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blastnet_aggregator::ingest::Reason;
use blastnet_aggregator::metrics::Kind;
use blastnet_aggregator::testkit::Layout;
use blastnet_aggregator::{AggregatorConfig, CancellationToken};
use blastnet_broker::{free_port, wait_for_port, Mosquitto};
use blastnet_contract::{Geodetic, UtcNs};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};

const SITE: &str = "sec";

/// (topic, payload) of each message a reader receives.
type Received = mpsc::Receiver<(String, Vec<u8>)>;

fn hardware() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware/mosquitto")
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The shipped blastnet.conf with paths moved to `dir` and the TLS listener
/// on loopback `tls_port`. The loopback listener and persistence lines are
/// the broker helper's own, so the shipped ones are left out.
fn shipped_config(dir: &Path, tls_port: u16) -> String {
    let text = std::fs::read_to_string(hardware().join("blastnet.conf")).unwrap();
    for must in [
        "per_listener_settings false",
        "allow_anonymous false",
        "password_file /etc/mosquitto/blastnet/passwd",
        "acl_file /etc/mosquitto/blastnet/acl",
        "listener 1883 127.0.0.1",
        "listener 8883",
        "cafile /etc/mosquitto/blastnet/ca.crt",
        "certfile /etc/mosquitto/blastnet/server.crt",
        "keyfile /etc/mosquitto/blastnet/server.key",
    ]
    .into_iter()
    .chain(blastnet_broker::MOSQUITTO_LIMITS.lines())
    {
        assert!(
            text.lines().any(|l| l.trim() == must),
            "blastnet.conf lost {must:?}"
        );
    }
    let mut out = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with("persistence")
            || line.starts_with("autosave_interval")
            || blastnet_broker::MOSQUITTO_LIMITS.lines().any(|l| l == line)
            || line == "listener 1883 127.0.0.1"
        {
            continue;
        }
        let line = if line == "listener 8883" {
            format!("listener {tls_port} 127.0.0.1")
        } else {
            line.replace("/etc/mosquitto/blastnet/", &format!("{}/", dir.display()))
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A reader on the loopback listener: every publish it receives goes to the channel.
fn reader(
    port: u16,
    user: &str,
    password: &str,
    filter: &str,
) -> (Client, Received, Vec<SubscribeReasonCode>) {
    let mut o = MqttOptions::new(format!("sec-reader-{user}"), "127.0.0.1", port);
    o.set_credentials(user, password);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut conn) = Client::new(o, 32);
    client.subscribe(filter, QoS::AtLeastOnce).unwrap();
    let (tx, rx) = mpsc::channel();
    let (ack_tx, ack_rx) = mpsc::channel();
    let filter = filter.to_string();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(a))) => {
                    let _ = ack_tx.send(a.return_codes);
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = ack_tx.send(Vec::new());
                    eprintln!("reader {filter}: {e}");
                    break;
                }
            }
        }
    });
    let codes = ack_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("SUBACK within 10 s");
    (client, rx, codes)
}

struct Tls {
    port: u16,
    ca: PathBuf,
}

impl Tls {
    /// `mosquitto_pub` over TLS, QoS 1; `user` None = anonymous.
    fn publish(&self, user: Option<(&str, &str)>, topic: &str, msg: &[u8]) -> Output {
        let mut c = Command::new("mosquitto_pub");
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--cafile"])
            .arg(&self.ca)
            .args(["-q", "1", "-t", topic, "-s"]);
        if let Some((u, p)) = user {
            c.args(["-u", u, "-P", p]);
        }
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("mosquitto_pub");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(msg).expect("write to mosquitto_pub");
        }
        child.wait_with_output().expect("mosquitto_pub")
    }
}

fn topic(node: &str, last: &str) -> String {
    format!("blastnet/{SITE}/node/{node}/{last}")
}

/// Wait for the message with `payload`; return everything received before it.
fn until(rx: &mpsc::Receiver<(String, Vec<u8>)>, payload: &[u8]) -> Vec<(String, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) if m.1 == payload => return before,
            Ok(m) => before.push(m),
            Err(_) => panic!(
                "{:?} not received within 10 s (got {before:?})",
                String::from_utf8_lossy(payload)
            ),
        }
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shipped security set up in a temporary directory: certificates by
/// `make-certs`, a password per user by `add-node`, the shipped ACL, and
/// Mosquitto on the shipped blastnet.conf with its TLS listener on loopback.
struct SecureBroker {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    tls: Tls,
}

impl SecureBroker {
    fn start(users: &[&str]) -> SecureBroker {
        for (tool, package) in [
            ("mosquitto_pub", "mosquitto-clients"),
            ("mosquitto_passwd", "mosquitto"),
            ("openssl", "openssl"),
        ] {
            assert!(
                on_path(tool),
                "this test requires {tool}, not found on PATH: run the tests with `scripts/test`, \
                 which installs it when missing (or `apt-get install -y {package}`)"
            );
        }
        if let Err(e) = blastnet_broker::mosquitto_binary() {
            panic!("{e}\n{}", blastnet_broker::MOSQUITTO_REQUIRED);
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            // Mosquitto started as root drops to its own user before reading the
            // password and ACL files: let it into the directory.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        run_ok(
            Command::new(hardware().join("make-certs"))
                .arg(dir)
                .args(["localhost", "127.0.0.1"]),
        );
        for user in users {
            run_ok(
                Command::new(hardware().join("add-node"))
                    .arg(dir.join("passwd"))
                    .arg(user)
                    .arg(dir.join("creds")),
            );
        }
        std::fs::copy(hardware().join("acl"), dir.join("acl")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.join("acl"), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let tls = Tls {
            port: free_port(),
            ca: dir.join("ca.crt"),
        };
        let broker =
            Mosquitto::start_with_config(&shipped_config(dir, tls.port)).expect("mosquitto");
        assert!(
            wait_for_port(tls.port, Duration::from_secs(10)),
            "TLS listener not up; log: {}",
            std::fs::read_to_string(broker.dir().join("mosquitto.log")).unwrap_or_default()
        );
        SecureBroker {
            dir: tmp,
            broker,
            tls,
        }
    }

    /// The file `add-node` wrote `user`'s password to.
    fn password_file(&self, user: &str) -> PathBuf {
        self.dir
            .path()
            .join("creds")
            .join(format!("{user}.password"))
    }

    fn password(&self, user: &str) -> String {
        std::fs::read_to_string(self.password_file(user))
            .unwrap()
            .trim()
            .to_string()
    }
}

#[test]
fn the_site_broker_enforces_tls_passwords_and_per_node_topics() {
    let sb = SecureBroker::start(&["n01", "n02", "aggregator"]);
    let (broker, tls) = (&sb.broker, &sb.tls);
    let (p01, p02, pagg) = (
        sb.password("n01"),
        sb.password("n02"),
        sb.password("aggregator"),
    );
    assert!(
        p01.len() >= 24 && p01 != p02,
        "add-node makes distinct random passwords"
    );
    let passwd = std::fs::read_to_string(sb.dir.path().join("passwd")).unwrap();
    assert!(
        !passwd.contains(&p01),
        "the password file holds hashes, not passwords"
    );

    // Readers on the loopback listener: the aggregator (may read every node)
    // and node n02 (may read nothing).
    let (_agg, agg_rx, codes) = reader(broker.port(), "aggregator", &pagg, "blastnet/+/node/#");
    assert!(
        matches!(codes.as_slice(), [SubscribeReasonCode::Success(_)]),
        "the aggregator could not subscribe: {codes:?}"
    );
    // Mosquitto may grant the subscription and filter each message on
    // delivery, or refuse it: either way n02 must receive nothing.
    let (_n02, n02_rx, _) = reader(broker.port(), "n02", &p02, "blastnet/#");

    // The aggregator service too, with its password, for the payload check.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agg_pw_file = sb.password_file("aggregator");
    let cfg = AggregatorConfig::from_toml_str(
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{}\"\nusername = \"aggregator\"\npassword_file = \"{}\"\nclient_id = \"sec-aggregator\"\nsites = [\"{SITE}\"]\n[store]\npath = \":memory:\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            broker.port(),
            agg_pw_file.display()
        ),
        "security test",
    )
    .unwrap();
    let handle = rt
        .block_on(blastnet_aggregator::start(cfg, CancellationToken::new()))
        .expect("aggregator connects with its password");
    let metrics = handle.metrics();

    // 1. n01 publishes its own detection over TLS with its password.
    let layout = Layout::ring(SITE, Geodetic::new(40.44, -80.0, 250.0), 4, 300.0);
    let dets = layout.detections(Geodetic::new(40.4405, -80.0005, 250.0), UtcNs::now(), 1);
    let d01 = dets.iter().find(|d| d.node_id == "n01").unwrap();
    let d02 = dets.iter().find(|d| d.node_id == "n02").unwrap();
    let own = serde_json::to_vec(d01).unwrap();
    let out = tls.publish(Some(("n01", &p01)), &topic("n01", "detection"), &own);
    assert!(
        out.status.success(),
        "n01 over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = until(&agg_rx, &own);
    assert!(before.is_empty(), "{before:?}");
    wait_for("the aggregator to accept n01's detection", || {
        metrics.detections_accepted.load(Relaxed) == 1
    });

    // 2. n01 cannot publish on n02's topic: the broker drops it (the reader
    // never gets it), though MQTT 3.1.1 still acknowledges the publish.
    let forged = b"n01 speaking as n02".to_vec();
    let _ = tls.publish(Some(("n01", &p01)), &topic("n02", "detection"), &forged);
    let marker = b"n01 marker after the forged publish".to_vec();
    let out = tls.publish(Some(("n01", &p01)), &topic("n01", "status"), &marker);
    assert!(out.status.success());
    // The forged publish was acknowledged before the marker was sent, so had
    // the broker routed it, it would have reached the reader first.
    let before = until(&agg_rx, &marker);
    assert!(
        before.iter().all(|(t, _)| t != &topic("n02", "detection")),
        "n01 published on n02's topic: {before:?}"
    );

    // 3. A wrong password is refused, and nothing it sends arrives.
    let out = tls.publish(
        Some(("n01", "not-the-password")),
        &topic("n01", "detection"),
        b"wrong pw",
    );
    assert!(!out.status.success(), "a wrong password was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not authorised"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 4. Anonymous clients are refused on the TLS listener.
    let out = tls.publish(None, &topic("n01", "detection"), b"anonymous");
    assert!(!out.status.success(), "an anonymous client was accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not authorised"));

    // 5. Plain MQTT on the TLS port does not get through.
    let out = run_plain(
        tls.port,
        "n01",
        &p01,
        &topic("n01", "detection"),
        b"plaintext",
    );
    assert!(
        !out.status.success(),
        "plain MQTT was accepted on the TLS port"
    );

    // 6. The ACL lets n01 write its own topic whatever the payload says; the
    // aggregator refuses a detection whose node_id is not the topic's node.
    let spoof = serde_json::to_vec(d02).unwrap();
    let out = tls.publish(Some(("n01", &p01)), &topic("n01", "detection"), &spoof);
    assert!(out.status.success());
    let mismatch =
        || metrics.invalid[Kind::Detection as usize][Reason::NodeMismatch.index()].load(Relaxed);
    wait_for(
        "the aggregator to refuse n02's detection on n01's topic",
        || mismatch() == 1,
    );
    assert_eq!(metrics.detections_accepted.load(Relaxed), 1);

    let last = b"last marker".to_vec();
    assert!(tls
        .publish(Some(("n01", &p01)), &topic("n01", "status"), &last)
        .status
        .success());
    let before = until(&agg_rx, &last);
    assert!(
        before
            .iter()
            .all(|(_, p)| p != b"wrong pw" && p != b"anonymous" && p != b"plaintext"),
        "a refused client got a message through: {before:?}"
    );
    // n02 subscribed to everything but may read nothing.
    std::thread::sleep(Duration::from_millis(300));
    let leaked: Vec<_> = n02_rx.try_iter().collect();
    assert!(leaked.is_empty(), "node n02 read other traffic: {leaked:?}");

    handle.shutdown();
    rt.block_on(handle.join())
        .expect("aggregator stops cleanly");
}

/// `mosquitto_pub` without TLS (to show the TLS port refuses it).
fn run_plain(port: u16, user: &str, password: &str, topic: &str, msg: &[u8]) -> Output {
    Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .args(["-u", user, "-P", password, "-m"])
        .arg(String::from_utf8_lossy(msg).as_ref())
        .output()
        .expect("mosquitto_pub")
}

/// Issue #18: `blastnet node` and the aggregator themselves over TLS (the
/// `tls` feature, rustls) against the shipped broker security: every node
/// of the single-blast scenario replays as its own user (the ACL's `%u`)
/// into the aggregator, which reads as user `aggregator`, trusting the
/// site CA made by `make-certs`. Every detection the nodes published
/// reaches it over TLS, and the blast is located from all five nodes.
#[cfg(feature = "tls")]
#[test]
fn node_and_aggregator_speak_tls_with_their_own_passwords() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("recordings/single-blast");
    let manifest = blastnet_contract::Manifest::from_json(
        &std::fs::read_to_string(scenario.join("manifest.json")).unwrap(),
        "single-blast",
    )
    .unwrap();
    let ids: Vec<String> = manifest.nodes.iter().map(|n| n.id.clone()).collect();
    let mut users: Vec<&str> = ids.iter().map(String::as_str).collect();
    users.push("aggregator");
    let sb = SecureBroker::start(&users);
    let url = format!("mqtts://localhost:{}", sb.tls.port);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut cfg = AggregatorConfig::from_toml_str(
        &format!(
            "[mqtt]\nbroker = \"{url}\"\nca_file = \"{}\"\nusername = \"aggregator\"\npassword_file = \"{}\"\n\
             client_id = \"tls-aggregator\"\nsites = [\"{SITE}\"]\n[store]\npath = \":memory:\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[time]\nbase = \"nodes\"\n",
            sb.tls.ca.display(),
            sb.password_file("aggregator").display()
        ),
        "tls test",
    )
    .unwrap();
    // Data time from the nodes' statuses, once all of them have spoken (as
    // `blastnet replay` sets it: these nodes start one after another).
    cfg.time.expect_nodes = ids.clone();
    let handle = rt
        .block_on(blastnet_aggregator::start(cfg, CancellationToken::new()))
        .expect("the aggregator connects over TLS with its password");
    let mut events = handle.subscribe();
    let metrics = handle.metrics();

    let work = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for id in &ids {
        let config = work.path().join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "node_id = \"{id}\"\nsite = \"{SITE}\"\n[mqtt]\nurl = \"{url}\"\nusername = \"{id}\"\n\
                 password_file = \"{}\"\nca_file = \"{}\"\n[state]\ndir = \"{}\"\n\
                 [source]\nkind = \"replay\"\npath = \"{}\"\npace = \"fast\"\n",
                sb.password_file(id).display(),
                sb.tls.ca.display(),
                work.path().join(id).display(),
                scenario.display()
            ),
        )
        .unwrap();
        let log = work.path().join(format!("{id}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_blastnet"))
            .args(["node", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        nodes.push((child, log));
    }
    for (child, log) in &mut nodes {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "node did not finish within 60 s: {}",
                std::fs::read_to_string(&*log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = std::fs::read_to_string(&*log).unwrap_or_default();
        assert!(status.success(), "node exited with {status}: {text}");
    }
    // What the nodes published (their logs' closing summaries count them)
    // all reached the aggregator over TLS, and the blast is located.
    let located = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match events.recv().await {
                    Ok(e) if e.status == blastnet_contract::EventStatus::Final => break Some(e),
                    Ok(_) => {}
                    Err(_) => break None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    });
    let Some(e) = located else {
        panic!(
            "no final event within 30 s of the nodes' end; the aggregator accepted {} detections; {} log: {}",
            metrics.detections_accepted.load(Relaxed),
            ids[0],
            std::fs::read_to_string(&nodes[0].1).unwrap_or_default()
        );
    };
    let heard: std::collections::BTreeSet<&str> =
        e.detections.iter().map(|d| d.node_id.as_str()).collect();
    assert_eq!(
        heard.len(),
        ids.len(),
        "the blast located from every node: {heard:?}"
    );
    assert!(metrics.detections_accepted.load(Relaxed) >= ids.len() as u64);
    handle.shutdown();
    rt.block_on(handle.join())
        .expect("aggregator stops cleanly");
}
