//! The shipped example configuration is valid and says what it claims.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use blastnet_aggregator::config::{StorePath, TimeBase};
use blastnet_aggregator::AggregatorConfig;

#[test]
fn the_hardware_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hardware/aggregator.toml");
    let c = AggregatorConfig::from_file(&path).unwrap();
    assert_eq!(c.mqtt.sites, vec!["range1".to_string()]);
    assert_eq!(c.time.base, TimeBase::Wall);
    assert_eq!(
        c.store.path,
        StorePath::File("/var/lib/blastnet/events.db".into())
    );
    assert_eq!(c.engine.temperature_c, 12.0);
}

#[test]
fn an_engine_key_error_names_the_engine_field() {
    let e =
        AggregatorConfig::from_toml_str("[engine]\ngate_sigmas = \"wide\"", "x.toml").unwrap_err();
    assert!(e.to_string().contains("engine.gate_sigmas"), "{e}");
    let e = AggregatorConfig::from_toml_str("[engine]\ngate_sigmas = -1.0", "x.toml").unwrap_err();
    assert!(e.to_string().contains("gate_sigmas"), "{e}");
    let e = AggregatorConfig::from_toml_str("[engine]\nno_such_knob = 1", "x.toml").unwrap_err();
    assert!(e.to_string().contains("no_such_knob"), "{e}");
}

#[test]
fn relative_store_paths_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("agg.toml");
    std::fs::write(&f, "[store]\npath = \"data/events.db\"\n").unwrap();
    let c = AggregatorConfig::from_file(&f).unwrap();
    assert_eq!(
        c.store.path,
        StorePath::File(dir.path().join("data/events.db"))
    );
    let e = AggregatorConfig::from_file(&dir.path().join("missing.toml")).unwrap_err();
    assert!(e.to_string().contains("missing.toml"), "{e}");
}
