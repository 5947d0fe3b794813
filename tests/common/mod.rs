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
