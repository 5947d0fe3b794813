//! The command line: subcommands listed, bad paths named.

use std::process::Command;

fn blastnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(args)
        .output()
        .expect("run blastnet")
}

#[test]
fn help_lists_every_subcommand() {
    let out = blastnet(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "node",
        "aggregator",
        "replay",
        "simulate",
        "demo",
        "import",
        "eval",
        "bench",
        "plan",
        "broker",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(cmd)),
            "`{cmd}` missing from:\n{text}"
        );
    }
}

#[test]
fn replay_of_a_missing_folder_fails_naming_it() {
    let out = blastnet(&["replay", "/no/such/dir"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/dir"), "{err}");
}

#[test]
fn replay_of_a_bad_manifest_names_the_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("manifest.json"),
        r#"{"format": "blastnet-recording/1", "name": "x", "nodes": [{"id": "n1", "lat": "north", "lon": 0, "alt_m": 0, "streams": []}]}"#,
    )
    .expect("write");
    let out = blastnet(&["replay", &dir.path().display().to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("manifest.json") && err.contains("nodes[0].lat"),
        "{err}"
    );
}
