//! `blastnet aggregator` on the command line: the printed default config
//! parses, and a bad config exits non-zero naming the file and the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_blastnet");

#[test]
fn print_config_prints_a_config_that_parses() {
    let out = Command::new(BIN)
        .args(["aggregator", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[mqtt]") && text.contains("[engine]"));
    blastnet_aggregator::AggregatorConfig::from_toml_str(&text, "<printed>").unwrap();
}

#[test]
fn a_bad_config_is_one_clear_error_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("agg.toml");
    std::fs::write(&f, "[time]\nbase = \"sundial\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["aggregator", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agg.toml") && err.contains("`time.base`"),
        "{err}"
    );
}
