//! Helpers shared by the end-to-end tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};

#[allow(dead_code)] // Not every test binary copies a scenario.
/// A copy of the shipped `recordings/<name>` in a temp folder: replay writes
/// its outputs beside the scenario.
pub fn shipped(name: &str) -> tempfile::TempDir {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recordings")
        .join(name);
    let work = tempfile::tempdir().expect("tempdir");
    for f in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let f = f.expect("entry").path();
        std::fs::copy(&f, work.path().join(f.file_name().expect("name"))).expect("copy");
    }
    work
}

/// `blastnet aggregator --config config`, its log (RUST_LOG=info) in `log`.
#[allow(dead_code)] // Not every test binary runs the aggregator process.
pub fn spawn_aggregator(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(["aggregator", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawning blastnet aggregator")
}

/// The body of `GET path` on 127.0.0.1:`http` if it answers 200.
#[allow(dead_code)]
pub fn get_ok(rt: &tokio::runtime::Runtime, http: u16, path: &str) -> Option<String> {
    let addr = ([127, 0, 0, 1], http).into();
    match rt.block_on(blastnet_aggregator::testkit::http_get(addr, path)) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Wait until the aggregator process serves `/healthz` with the broker
/// connected (20 s at most; its log if it exits first).
#[allow(dead_code)]
pub fn wait_up(rt: &tokio::runtime::Runtime, http: u16, child: &mut Child, log: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if get_ok(rt, http, "/healthz").is_some_and(|b| b.contains("\"mqtt_connected\":true")) {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "aggregator exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "aggregator not up within 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A `blastnet replay DIR --serve` process once it serves: the child, the
/// API's address, the stderr lines read so far (`log`) and the rest to come
/// (`rx`, fed by `reader` until stderr closes).
#[allow(dead_code)] // Not every test binary keeps a replay up.
pub struct Serving {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub log: Vec<String>,
    pub rx: std::sync::mpsc::Receiver<String>,
    pub reader: std::thread::JoinHandle<()>,
}

/// `blastnet replay DIR --serve ARGS...`, waiting (up to `wait`) for its
/// `serving the API and live map at http://...` line; the child is killed
/// and the test fails with stderr if it never comes.
#[allow(dead_code)]
pub fn replay_serve(dir: &Path, args: &[&std::ffi::OsStr], wait: std::time::Duration) -> Serving {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .arg("replay")
        .arg(dir)
        .arg("--serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning blastnet replay --serve");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no `serving` line ({e:?}); stderr:\n{}", log.join("\n"));
            }
        };
        log.push(line.clone());
        if line.contains("serving the API and live map at") {
            let url = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .expect("a URL on the serving line");
            let addr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .expect("host:port");
            return Serving {
                child,
                addr,
                log,
                rx,
                reader,
            };
        }
    }
}
