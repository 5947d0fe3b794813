//! Real gunfire located with no engine settings (issue #16): ShotSpotter's
//! Pittsburgh FP1–FP3 (54 tests, 108 shots), imported and replayed as a new
//! user would (`blastnet import shotspotter`, `blastnet replay`), with no
//! `--config` and nothing from the importer but node positions, sensor kinds
//! and the site name. Cold: each test alone, each a fresh aggregator. Warm:
//! the tests in time order into one store, each starting from what the
//! earlier ones taught (station terms, the site's timing-error scale).
//!
//! Thresholds are the targets, not this code's output. The targets
//! not met yet are checked as known open (the test fails when one is met,
//! so that it becomes an assertion).

use std::path::Path;
use std::process::Command;

/// The figures of the `all:`, `rounds:` and `coverage:` lines of a replay
/// of a folder of scenarios.
#[derive(Debug, Clone, PartialEq)]
struct Figures {
    within_15: f64,
    within_25: f64,
    ghosts: usize,
    first_rounds: f64,
    later_rounds: f64,
    /// The same picks grouped by truth and solved alone, % within 15 m.
    ceiling: f64,
    text: String,
}

fn number_before(line: &str, marker: &str) -> f64 {
    let i = line
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {line:?}"));
    line[..i]
        .rsplit(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a number before {marker:?} in {line:?}"))
}

fn replay(dir: &Path, store: Option<&Path>) -> Figures {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blastnet"));
    cmd.arg("replay").arg(dir);
    if let Some(s) = store {
        cmd.arg("--store").arg(s);
    }
    let out = cmd.output().expect("running blastnet replay");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay failed:\n{err}");
    let line = |p: &str| {
        err.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p:?} line in:\n{err}"))
            .to_string()
    };
    let (all, rounds, ceiling) = (line("all:"), line("rounds:"), line("ceiling:"));
    let text: String = err
        .lines()
        .filter(|l| !l.starts_with("live map"))
        .collect::<Vec<_>>()
        .join("\n");
    Figures {
        within_15: number_before(&all[all.find("within 15 m").unwrap_or(0)..], "%,"),
        within_25: number_before(&all[all.find("within 25 m").unwrap_or(0)..], "%;"),
        ghosts: number_before(&all, " ghost events") as usize,
        first_rounds: number_before(&rounds[..rounds.find("later").unwrap_or(0)], "%)"),
        later_rounds: number_before(&rounds[rounds.find("later").unwrap_or(0)..], "%)"),
        ceiling: number_before(&ceiling, "%)"),
        text,
    }
}

#[test]
#[ignore = "needs the real recordings in ../shared/data (BLASTNET_DATA)"]
fn real_gunfire_is_located_with_no_engine_settings() {
    let release = blastnet_recording::require_data("shotspotter-pittsburgh-dev");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ss");
    let st = Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .args(["import", "shotspotter"])
        .arg(&release)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // The importer writes what a deployer knows, no engine settings.
    for d in std::fs::read_dir(&dir).unwrap().flatten() {
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| n == "manifest.json" || n.ends_with(".wav")),
            "{}: {names:?}",
            d.path().display()
        );
    }

    let cold = replay(&dir, None);
    println!("cold:\n{}", cold.text);
    // Same input, same output.
    let again = replay(&dir, None);
    assert_eq!(cold.text, again.text, "two cold replays differ");
    assert!(
        cold.within_15 >= 80.0,
        "cold: {} % within 15 m (target >= 80 %)",
        cold.within_15
    );
    assert!(
        cold.ghosts <= 5,
        "cold: {} ghost events over 54 tests (target <= 5)",
        cold.ghosts
    );

    let store = tmp.path().join("warm.sqlite");
    let warm = replay(&dir, Some(&store));
    println!("warm:\n{}", warm.text);

    // Known open (issue #16), each checked so that meeting it is noticed:
    // within 3 points of the ceiling (blastnet's own picks grouped by
    // truth, same solver), later rounds of bursts within 5 points of first
    // rounds, warm >= 88 % within 15 m and >= 94 % within 25 m.
    let open = [
        (
            "cold within 3 points of the ceiling",
            cold.within_15 >= cold.ceiling - 3.0,
        ),
        (
            "later rounds within 5 points of first rounds",
            cold.later_rounds >= cold.first_rounds - 5.0,
        ),
        (
            "warm >= 88 % within 15 m and >= 94 % within 25 m",
            warm.within_15 >= 88.0 && warm.within_25 >= 94.0,
        ),
    ];
    for (what, met) in open {
        assert!(
            !met,
            "known-open target now met ({what}): make it an assertion of this test"
        );
    }
}
