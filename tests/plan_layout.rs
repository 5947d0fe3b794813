//! `blastnet plan` end to end: the real binary on layout files written here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use blastnet_contract::blast::{peak_overpressure_pa, Burst};
use blastnet_contract::physics::sound_speed;
use blastnet_contract::{Enu, EnuFrame, Geodetic};

const ORIGIN: Geodetic = Geodetic::new(40.4406, -79.9959, 250.0);

fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blastnet"))
        .arg("plan")
        .args(args)
        .output()
        .expect("run blastnet plan")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "blastnet plan failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TOML layout with nodes at the given ENU offsets (metres) from ORIGIN, all at ORIGIN's height.
fn layout(options: &str, enu: &[(f64, f64)]) -> String {
    let frame = EnuFrame::new(ORIGIN);
    let mut s = format!("[options]\n{options}\n");
    for (k, (e, n)) in enu.iter().enumerate() {
        let g = frame.to_geodetic(Enu::new(*e, *n, 0.0));
        s += &format!(
            "[[nodes]]\nid = \"n{:02}\"\nlat = {:.12}\nlon = {:.12}\nalt_m = {}\n",
            k + 1,
            g.lat,
            g.lon,
            ORIGIN.alt_m
        );
    }
    s
}

/// The number after `key` in the line starting with `prefix`.
fn number_after(text: &str, prefix: &str, key: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"));
    let rest = &line[line
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line:?}"))
        + key.len()..];
    rest.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
}

/// CSV rows as (e, n, nodes_heard, covered, crlb_horizontal_m).
fn csv_rows(path: &Path) -> Vec<(f64, f64, usize, bool, Option<f64>)> {
    let text = std::fs::read_to_string(path).expect("csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("e_m,n_m,lat,lon,nodes_heard,covered,crlb_horizontal_m,crlb_origin_s")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
                f[6].parse().ok(),
            )
        })
        .collect()
}

#[test]
fn crlb_at_the_centre_of_a_regular_array_matches_the_closed_form() {
    // Closed form. N nodes evenly on a circle around a ground source at the
    // centre, all at the source's height, still air at speed c, each arrival
    // with timing sigma s. Unknowns (e, n, t0); the arrival model is
    // t_i = t0 + |P_i - X| / c, so the gradient row of arrival i is
    // h_i = (-u_ix / c, -u_iy / c, 1), u_i the unit vector to node i.
    // Fisher F = sum h_i h_i^T / s^2. For N >= 3 evenly spaced directions
    // sum u_i = 0 and sum u_i u_i^T = (N/2) I, so
    //   F = diag(N / (2 c^2 s^2), N / (2 c^2 s^2), N / s^2)
    // and the bound is var(e) = var(n) = 2 c^2 s^2 / N, var(t0) = s^2 / N:
    //   horizontal 1-sigma = sqrt(var e + var n) = 2 c s / sqrt(N),
    //   origin 1-sigma = s / sqrt(N).
    // (For the square, N = 4: horizontal = c s.)
    let dir = tempfile::tempdir().unwrap();
    // A clock sigma large enough (NTP-like) that leaving it out would show.
    let (pick, clock, temp) = (4e-4_f64, 1e-4_f64, 21.0_f64);
    let s = pick.hypot(clock);
    let c = sound_speed(temp);
    for (n_nodes, radius, rot) in [(4usize, 424.0_f64, 45.0_f64), (8, 600.0, 10.0)] {
        let enu: Vec<(f64, f64)> = (0..n_nodes)
            .map(|k| {
                let a = (rot + 360.0 * k as f64 / n_nodes as f64).to_radians();
                (radius * a.cos(), radius * a.sin())
            })
            .collect();
        let opts = format!(
            "charge_kg = 5.0\nthreshold_pa = 2.0\npick_sigma_s = {pick}\nclock_sigma_s = {clock}\ntemperature_c = {temp}\ngrid_extent_m = 1000\ngrid_step_m = 100\n"
        );
        let path = dir.path().join(format!("ring-{n_nodes}.toml"));
        std::fs::write(&path, layout(&opts, &enu)).unwrap();
        let csv = dir.path().join(format!("ring-{n_nodes}.csv"));
        let out = stdout_of(&plan(&[
            path.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ]));

        let expect_h = 2.0 * c * s / (n_nodes as f64).sqrt();
        let expect_t = s / (n_nodes as f64).sqrt();
        let h = number_after(&out, "CRLB at the array centre:", "horizontal");
        let t = number_after(&out, "CRLB at the array centre:", "origin");
        // The layout is symmetric to ~1e-6 relative (lat/lon rounding at 1e-12
        // degrees, Earth curvature over < 1 km lifts the nodes' ENU height by
        // r^2 / 2R ~ 0.03 m): 1e-4 relative is far above both.
        assert!(
            (h / expect_h - 1.0).abs() < 1e-4,
            "N={n_nodes}: horizontal {h} m, closed form {expect_h} m"
        );
        assert!(
            (t / expect_t - 1.0).abs() < 1e-4,
            "N={n_nodes}: origin {t} s, closed form {expect_t} s"
        );
        assert!(
            out.contains(&format!("heard by {n_nodes} nodes")),
            "every node hears 5 kg at 600 m:\n{out}"
        );

        let rows = csv_rows(&csv);
        assert_eq!(rows.len(), 21 * 21);
        let centre = rows
            .iter()
            .find(|r| r.0 == 0.0 && r.1 == 0.0)
            .expect("a (0, 0) cell");
        let ch = centre.4.expect("the centre cell has a bound");
        assert!(
            (ch / expect_h - 1.0).abs() < 1e-4,
            "csv centre {ch} vs {expect_h}"
        );
        // Every covered cell of a non-degenerate ring has a finite, positive bound.
        assert!(rows
            .iter()
            .filter(|r| r.3)
            .all(|r| r.4.is_some_and(|b| b.is_finite() && b > 0.0)));
        // The map marks every node once.
        let stars: usize = out
            .lines()
            .filter(|l| l.starts_with("  |"))
            .map(|l| l.matches('*').count())
            .sum();
        assert_eq!(stars, n_nodes, "{out}");
    }
}

#[test]
fn coverage_shrinks_for_a_smaller_charge_and_matches_the_blast_law() {
    let dir = tempfile::tempdir().unwrap();
    let enu = [
        (-400.0, -400.0),
        (400.0, -400.0),
        (400.0, 400.0),
        (-400.0, 400.0),
    ];
    let threshold = 20.0; // Pa, 120 dB: where an ICS-43434 clips
    let opts = format!(
        "threshold_pa = {threshold}\ngrid_extent_m = 3000\ngrid_step_m = 100\nmin_nodes = 4\n"
    );
    let path = dir.path().join("square.toml");
    std::fs::write(&path, layout(&opts, &enu)).unwrap();
    let mut coverage = Vec::new();
    for w in [10.0_f64, 1.0, 0.1] {
        let csv = dir.path().join(format!("w{w}.csv"));
        let out = stdout_of(&plan(&[
            path.to_str().unwrap(),
            "--charge-kg",
            &w.to_string(),
            "--csv",
            csv.to_str().unwrap(),
        ]));
        let cov = number_after(&out, "coverage:", "coverage:");
        coverage.push(cov);

        // Independent check: the range R(W) at which the Kingery-Bulmash peak
        // falls to the threshold (bisection here), then a cell is covered when
        // all four nodes lie within R of it.
        let (mut lo, mut hi) = (1.0_f64, 1e6_f64);
        for _ in 0..200 {
            let mid = (lo * hi).sqrt();
            if peak_overpressure_pa(Burst::Surface, mid, w) >= threshold {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let r = lo;
        let rows = csv_rows(&csv);
        let mut checked = 0;
        for (e, n, heard, covered, _) in &rows {
            let d: Vec<f64> = enu.iter().map(|(x, y)| (x - e).hypot(y - n)).collect();
            // Skip cells within 1 m of the hearing circle (curvature and
            // rounding decide those).
            if d.iter().any(|x| (x - r).abs() < 1.0) {
                continue;
            }
            let expect = d.iter().filter(|x| **x <= r).count();
            assert_eq!(*heard, expect, "W={w} kg, cell ({e}, {n}), R={r:.1} m");
            assert_eq!(*covered, expect == 4);
            checked += 1;
        }
        assert!(checked > rows.len() * 9 / 10);
        let expect_cov = 100.0 * rows.iter().filter(|r| r.3).count() as f64 / rows.len() as f64;
        assert!(
            (cov - expect_cov).abs() < 0.01,
            "printed {cov} %, csv {expect_cov} %"
        );
    }
    assert!(
        coverage[0] > coverage[1] && coverage[1] > coverage[2],
        "coverage for 10, 1, 0.1 kg: {coverage:?}"
    );
    assert!(
        coverage[2] > 0.0,
        "0.1 kg is heard by all four nodes near the centre: {coverage:?}"
    );
}

#[test]
fn a_bad_layout_file_gets_an_error_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = layout(
        "",
        &[(0.0, 0.0), (300.0, 0.0), (0.0, 300.0), (300.0, 300.0)],
    );

    // Latitude out of range (TOML).
    let bad = dir.path().join("bad-lat.toml");
    let mut text = good.clone();
    let third = text.match_indices("lat = ").nth(2).unwrap().0;
    text.replace_range(third..third + "lat = ".len(), "lat = 95.0 #");
    std::fs::write(&bad, &text).unwrap();
    let out = plan(&[bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
    assert!(err.contains("nodes[2].lat"), "{err}");

    // Wrong type of an option (TOML).
    let bad = dir.path().join("bad-charge.toml");
    std::fs::write(
        &bad,
        good.replace("[options]\n", "[options]\ncharge_kg = \"one\"\n"),
    )
    .unwrap();
    let out = plan(&[bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad-charge.toml") && err.contains("options.charge_kg"),
        "{err}"
    );

    // An unknown key is refused, not ignored.
    let bad = dir.path().join("typo.toml");
    std::fs::write(
        &bad,
        good.replace("[options]\n", "[options]\nchrage_kg = 1.0\n"),
    )
    .unwrap();
    let out = plan(&[bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("typo.toml") && err.contains("chrage_kg"),
        "{err}"
    );

    // JSON: a string where a number belongs.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"nodes": [{"id": "a", "lat": 40.0, "lon": -80.0, "alt_m": 0},
                      {"id": "b", "lat": 40.001, "lon": "west", "alt_m": 0},
                      {"id": "c", "lat": 40.0, "lon": -80.001, "alt_m": 0}]}"#,
    )
    .unwrap();
    let out = plan(&[bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.json") && err.contains("nodes[1].lon"),
        "{err}"
    );

    // A missing file.
    let missing = dir.path().join("nope.toml");
    let out = plan(&[missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}

#[test]
fn the_shipped_city_layout_plans() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/hardware/layouts/city-12.toml");
    let out = stdout_of(&plan(&[path]));
    assert!(out.contains("12 nodes"), "{out}");
    let cov = number_after(&out, "coverage:", "coverage:");
    assert!(cov > 0.0 && cov <= 100.0, "{out}");
}
