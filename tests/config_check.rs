//! `blastnet node --check` and `blastnet aggregator --check` (issue #19):
//! a good file gives a short summary for people (no debug dump, no
//! password); a bad one lists every error at once, one line each naming the
//! file and the field, and exits non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_blastnet");
const PASSWORD: &str = "s3cret-pw-text";

fn check(cmd: &str, file: &Path) -> Output {
    Command::new(BIN)
        .args([cmd, "--check", "--config"])
        .arg(file)
        .output()
        .unwrap()
}

/// A good config: exit 0, a readable summary on stdout, no Rust debug
/// output, never the password.
fn assert_readable_summary(out: &Output, file: &Path, must_say: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.starts_with(&format!("{}: OK", file.display())),
        "{stdout}"
    );
    for noise in ["{", "}", "Some(", "None", "::", "\"", "password:"] {
        assert!(!stdout.contains(noise), "{noise:?} in:\n{stdout}");
    }
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
    let lines = stdout.lines().count();
    assert!((5..=20).contains(&lines), "{lines} lines:\n{stdout}");
    for s in must_say {
        assert!(stdout.contains(s), "{s:?} missing from:\n{stdout}");
    }
}

/// A bad config: non-zero exit, and one stderr line per `fields` entry
/// naming the file and that field.
fn assert_every_error(out: &Output, file: &Path, fields: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let origin = format!("{}: field `", file.display());
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&origin)).collect();
    assert_eq!(error_lines.len(), fields.len(), "{stderr}");
    for (line, field) in error_lines.iter().zip(fields) {
        assert!(line.contains(&format!("`{field}`")), "{field}: {line}");
    }
    assert!(
        stderr.contains(&format!("({} errors)", fields.len())),
        "{stderr}"
    );
}

#[test]
fn aggregator_check_summarises_the_shipped_config() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware/aggregator.toml");
    let out = check("aggregator", &file);
    assert_readable_summary(
        &out,
        &file,
        &[
            "mqtt://127.0.0.1:1883",
            "blastnet-aggregator-range1",
            "range1",
            "/var/lib/blastnet/events.db",
            "127.0.0.1:8080",
            "wall clock",
            "home assistant off",
        ],
    );
}

#[test]
fn aggregator_check_never_prints_the_password_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agg.toml");
    let token = "0123456789abcdef0123";
    std::fs::write(
        &file,
        format!(
            "[mqtt]\nusername = \"agg\"\npassword = \"{PASSWORD}\"\n\
             [http]\nlisten = \"0.0.0.0:8080\"\ntoken = \"{token}\"\n\
             [store]\npath = \":memory:\"\n[homeassistant]\nenabled = true\n"
        ),
    )
    .unwrap();
    let out = check("aggregator", &file);
    assert_readable_summary(
        &out,
        &file,
        &[
            "agg (password set)",
            "token set",
            "in memory",
            "on, discovery prefix homeassistant",
        ],
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(token));
}

/// `blastnet <kind> --check` on a config of `text` names every field of
/// `fields` (see [`assert_every_error`]).
fn check_lists(kind: &str, text: &str, fields: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{kind}.toml"));
    std::fs::write(&file, text).unwrap();
    let out = check(kind, &file);
    assert_every_error(&out, &file, fields);
}

#[test]
fn aggregator_check_lists_every_error_at_once() {
    check_lists(
        "aggregator",
        "[mqtt]\nbroker = \"ftp://x\"\n[time]\nbase = \"sundial\"\n[ingest]\nmax_payload_bytes = 1\n",
        &["mqtt.broker", "time.base", "ingest.max_payload_bytes"],
    );
}

#[test]
fn node_check_summarises_a_config_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware/node.toml"))
            .unwrap();
    // The shipped file reads the password from /etc; give it inline instead.
    let text: String = shipped
        .lines()
        .map(|l| {
            if l.starts_with("password_file") {
                format!("password = \"{PASSWORD}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(
        text.contains(PASSWORD),
        "hardware/node.toml has no password_file"
    );
    std::fs::write(&file, text).unwrap();
    let out = check("node", &file);
    assert_readable_summary(
        &out,
        &file,
        &[
            "pi-north-01 at site range-a",
            "mqtt://aggregator.local:1883",
            "TLS no",
            "pi-north-01 (password set)",
            "capture from",
            "acoustic",
            "seismic",
            "/var/lib/blastnet/node",
        ],
    );
}

#[test]
fn node_check_lists_every_error_at_once() {
    check_lists(
        "node",
        "node_id = \"a/b\"\n[mqtt]\nurl = \"ftp://x\"\n[state]\nspool_max_bytes = 1\n",
        &["node_id", "mqtt.url", "state.spool_max_bytes"],
    );
}

#[test]
fn a_single_error_still_reads_as_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agg.toml");
    std::fs::write(&file, "[time]\nbase = \"sundial\"\n").unwrap();
    let out = check("aggregator", &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.matches("`time.base`").count(), 1, "{stderr}");
    assert!(stderr.contains("(1 error)"), "{stderr}");
}
