//! The closed-form starting points against exact arrivals: the spherical
//! intersection of three sensors, the exact solve of a quadruple (the
//! association search's free-height hypothesis) and the least squares of
//! more sensors must each return the true source when the arrivals are
//! exact (up to rounding: micrometres on kilometre geometry).
#![allow(clippy::unwrap_used)]

use blastnet_aggregator_core::{closed_form, closed_form_of, Arrival, Phase, Propagation};
use blastnet_contract::Enu;

fn arrivals(sensors: &[[f64; 3]], src: [f64; 3], t0: f64) -> Vec<Arrival> {
    let p = Propagation::still_air(15.0);
    sensors
        .iter()
        .map(|s| Arrival {
            position: Enu::new(s[0], s[1], s[2]),
            time_s: t0 + p.travel_time(Phase::Acoustic, src, *s),
            sigma_s: 1e-3,
            phase: Phase::Acoustic,
        })
        .collect()
}

/// The free-height point of a quadruple (the second, when there is one).
fn free_point(arr: &[Arrival], idx: &[usize]) -> Option<[f64; 4]> {
    closed_form_of(arr, idx, c(), 0.0).iter().nth(1)
}

fn c() -> f64 {
    Propagation::still_air(15.0).sound_speed_mps
}

/// Distance in position (m) and in origin time (as metres of sound path).
fn miss(g: [f64; 4], src: [f64; 3], t0: f64) -> f64 {
    let d = ((g[0] - src[0]).powi(2) + (g[1] - src[1]).powi(2) + (g[2] - src[2]).powi(2)).sqrt();
    d.max((g[3] - t0).abs() * c())
}

const PLANE: [[f64; 3]; 6] = [
    [0.0, 0.0, 0.0],
    [1800.0, 150.0, 0.0],
    [-400.0, 2100.0, 0.0],
    [900.0, -1700.0, 0.0],
    [-2200.0, -600.0, 0.0],
    [2500.0, 2400.0, 0.0],
];

#[test]
fn three_sensors_intersect_at_a_ground_source() {
    let src = [700.0, -350.0, 0.0];
    let arr = arrivals(&PLANE[..3], src, 4.0);
    let g = closed_form_of(&arr, &[0, 1, 2], c(), 0.0);
    let best = g
        .iter()
        .map(|g| miss(g, src, 4.0))
        .fold(f64::INFINITY, f64::min);
    assert!(best < 1e-6, "nearest root {best} m off");
}

#[test]
fn a_quadruple_gives_an_airburst_exactly_and_agrees_with_least_squares() {
    let src = [300.0, -200.0, 1500.0];
    let arr = arrivals(&PLANE, src, 2.5);
    let quad = free_point(&arr, &[0, 1, 2, 3]).unwrap();
    assert!(miss(quad, src, 2.5) < 1e-6, "{quad:?}");
    // Any other quadruple, and all six by least squares, agree.
    let other = free_point(&arr, &[1, 2, 4, 5]).unwrap();
    assert!(miss(other, src, 2.5) < 1e-6, "{other:?}");
    let all = closed_form(&arr, &[true; 6], c(), 0.0);
    assert_eq!(all.len(), 2, "a ground and a free-height point: {all:?}");
    assert!(miss(all[1], src, 2.5) < 1e-6, "{:?}", all[1]);
}

#[test]
fn collinear_sensors_give_no_free_height_point() {
    let line: Vec<[f64; 3]> = (0..4).map(|i| [500.0 * i as f64, 0.0, 0.0]).collect();
    let arr = arrivals(&line, [300.0, 900.0, 800.0], 1.0);
    assert_eq!(free_point(&arr, &[0, 1, 2, 3]), None);
}
