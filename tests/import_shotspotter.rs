//! `blastnet import shotspotter` on the real release subset (not in the
//! repository: `blastnet_recording::data_dir`, `BLASTNET_DATA`). The tests
//! that read it are ignored by default; `scripts/test` runs them when the
//! data directory exists.

use std::path::PathBuf;
use std::process::Command;

use blastnet_contract::{Enu, EnuFrame};
use blastnet_recording::import::shotspotter::NOMINAL_ORIGIN;
use blastnet_recording::Scenario;

fn release() -> PathBuf {
    blastnet_recording::require_data("shotspotter-pittsburgh-dev")
}

#[test]
#[ignore = "needs the real recordings in ../shared/data (BLASTNET_DATA)"]
fn import_writes_one_loadable_scenario_per_test_with_truth_per_shot() {
    let rel = release();
    let out = tempfile::tempdir().unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(["import", "shotspotter"])
        .arg(&rel)
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let dirs: Vec<_> = std::fs::read_dir(out.path()).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 54, "FP1-FP3 hold 54 tests");
    let mut shots = 0;
    for d in dirs {
        let sc = Scenario::open(&d.path()).unwrap();
        let truth = sc.manifest.truth.clone().unwrap_or_default();
        shots += truth.len();
        assert!(sc.manifest.nodes.len() >= 2, "{}", d.path().display());
    }
    // 3 firearms x (3+3+3+1+1+1) rounds per firing position x 3 positions.
    assert_eq!(shots, 108);
}

#[test]
#[ignore = "needs the real recordings in ../shared/data (BLASTNET_DATA)"]
fn local_xyz_maps_to_wgs84_and_back_exactly_and_weather_wind_points_downwind() {
    let rel = release();
    let out = tempfile::tempdir().unwrap();
    let test = rel.join("data/FP3/test_053");
    let imp = blastnet_recording::import::shotspotter::import_test(&test, out.path()).unwrap();
    let frame = EnuFrame::new(NOMINAL_ORIGIN);
    let n = imp
        .manifest
        .nodes
        .iter()
        .find(|n| n.id == "SCP-00-BNG-5545")
        .unwrap();
    let back = frame.to_enu(n.position());
    // From test_053.audio.SCP-00-BNG-5545.json.
    let want = Enu::new(-8757.39749451994, -1749.54077848047, -23.2622085037500);
    assert!(back.distance(want) < 1e-3, "{back:?}");
    assert_eq!(n.streams[0].start_utc.to_string(), "2018-12-19T02:26:57Z");
    let env = imp.manifest.environment.unwrap();
    assert!((env.temperature_c - 1.0).abs() < 1e-12);
}

#[test]
fn import_of_a_folder_that_is_not_a_release_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(["import", "shotspotter"])
        .arg(dir.path())
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        err.contains(&dir.path().display().to_string()) && err.contains("test_xxx"),
        "{err}"
    );
}
