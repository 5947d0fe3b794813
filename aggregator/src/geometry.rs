//! The 1-sigma horizontal uncertainty ellipse of an event and GeoJSON output.

use blastnet_contract::{Enu, EnuFrame, Event, Geodetic};
use serde::Serialize;
use serde_json::{json, Value};

/// A horizontal 1-sigma ellipse.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ellipse {
    /// Semi-major axis, metres (1 sigma).
    pub semi_major_m: f64,
    /// Semi-minor axis, metres (1 sigma).
    pub semi_minor_m: f64,
    /// Direction of the major axis, degrees clockwise from north (0..180).
    pub azimuth_deg: f64,
}

/// The ellipse of the East-North block of an ENU covariance (m²): the
/// eigen-decomposition of a symmetric 2x2 matrix in closed form. `None` when
/// the block is not finite or not positive semi-definite.
pub fn ellipse_from_cov(cov: &[[f64; 3]; 3]) -> Option<Ellipse> {
    let (a, b, d) = (cov[0][0], 0.5 * (cov[0][1] + cov[1][0]), cov[1][1]);
    if !(a.is_finite() && b.is_finite() && d.is_finite()) {
        return None;
    }
    let mean = 0.5 * (a + d);
    let r = (0.25 * (a - d) * (a - d) + b * b).sqrt();
    let (l1, l2) = (mean + r, mean - r);
    // Tiny negative eigenvalues are rounding; clearly negative ones are a bad matrix.
    if l2 < -1e-9 * l1.abs().max(1e-12) {
        return None;
    }
    // Angle of the major axis from east, counter-clockwise.
    let theta = 0.5 * (2.0 * b).atan2(a - d);
    let azimuth = (90.0 - theta.to_degrees()).rem_euclid(180.0);
    Some(Ellipse {
        semi_major_m: l1.max(0.0).sqrt(),
        semi_minor_m: l2.max(0.0).sqrt(),
        azimuth_deg: azimuth,
    })
}

/// `n` points of the ellipse around `centre` as closed GeoJSON ring `[lon, lat]`.
pub fn ellipse_ring(centre: Geodetic, e: &Ellipse, n: usize) -> Vec<[f64; 2]> {
    let frame = EnuFrame::new(centre);
    // Major-axis unit vector in (east, north).
    let az = e.azimuth_deg.to_radians();
    let (ue, un) = (az.sin(), az.cos());
    let (ve, vn) = (-un, ue);
    let mut ring: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            let t = std::f64::consts::TAU * i as f64 / n as f64;
            let (x, y) = (e.semi_major_m * t.cos(), e.semi_minor_m * t.sin());
            let g = frame.to_geodetic(Enu::new(x * ue + y * ve, x * un + y * vn, 0.0));
            [g.lon, g.lat]
        })
        .collect();
    if let Some(first) = ring.first().copied() {
        ring.push(first);
    }
    ring
}

/// A GeoJSON FeatureCollection: per event a Point (properties: id, revision,
/// time, class, confidence, 1-sigma figures and the ellipse) and, when the
/// covariance is usable, a Polygon of its 1-sigma horizontal ellipse
/// (`"feature": "uncertainty_ellipse"`).
pub fn events_geojson(events: &[Event]) -> Value {
    let mut features = Vec::with_capacity(events.len() * 2);
    for ev in events {
        let ellipse = ellipse_from_cov(&ev.uncertainty.covariance_enu);
        features.push(json!({
            "type": "Feature",
            "id": ev.event_id,
            "geometry": { "type": "Point", "coordinates": [ev.lon, ev.lat, ev.alt_m] },
            "properties": {
                "feature": "event",
                "event_id": ev.event_id,
                "revision": ev.revision,
                "origin_utc": ev.origin_utc.to_string(),
                "kind": ev.kind.as_str(),
                "confidence": ev.confidence,
                "status": ev.status,
                "dims": ev.dims,
                "n_detections": ev.detections.len(),
                "horizontal_m": ev.uncertainty.horizontal_m,
                "vertical_m": ev.uncertainty.vertical_m,
                "origin_s": ev.uncertainty.origin_s,
                "ellipse": ellipse,
                "site": ev.site,
            }
        }));
        if let Some(e) = ellipse {
            let ring = ellipse_ring(Geodetic::new(ev.lat, ev.lon, ev.alt_m), &e, 64);
            features.push(json!({
                "type": "Feature",
                "id": format!("{}/ellipse", ev.event_id),
                "geometry": { "type": "Polygon", "coordinates": [ring] },
                "properties": {
                    "feature": "uncertainty_ellipse",
                    "event_id": ev.event_id,
                    "revision": ev.revision,
                    "sigma": 1,
                    "semi_major_m": e.semi_major_m,
                    "semi_minor_m": e.semi_minor_m,
                    "azimuth_deg": e.azimuth_deg,
                }
            }));
        }
    }
    json!({ "type": "FeatureCollection", "features": features })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipse_axes_and_azimuth_match_a_rotated_diagonal_covariance() {
        // Axes 30 m and 10 m, major axis 30° clockwise from north.
        let (s1, s2, az) = (30.0_f64, 10.0_f64, 30.0_f64.to_radians());
        let (ue, un) = (az.sin(), az.cos());
        let (ve, vn) = (-un, ue);
        let ee = s1 * s1 * ue * ue + s2 * s2 * ve * ve;
        let nn = s1 * s1 * un * un + s2 * s2 * vn * vn;
        let en = s1 * s1 * ue * un + s2 * s2 * ve * vn;
        let cov = [[ee, en, 0.0], [en, nn, 0.0], [0.0, 0.0, 4.0]];
        let e = ellipse_from_cov(&cov).expect("psd");
        assert!((e.semi_major_m - 30.0).abs() < 1e-9, "{e:?}");
        assert!((e.semi_minor_m - 10.0).abs() < 1e-9, "{e:?}");
        assert!((e.azimuth_deg - 30.0).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn ring_points_lie_on_the_ellipse_in_metres() {
        let e = Ellipse {
            semi_major_m: 50.0,
            semi_minor_m: 20.0,
            azimuth_deg: 0.0,
        };
        let c = Geodetic::new(40.44, -79.99, 300.0);
        let ring = ellipse_ring(c, &e, 16);
        assert_eq!(ring.len(), 17);
        assert_eq!(ring[0], ring[16]);
        let frame = EnuFrame::new(c);
        // First point: 50 m north along the major axis (azimuth 0).
        let p = frame.to_enu(Geodetic::new(ring[0][1], ring[0][0], 300.0));
        assert!((p.n - 50.0).abs() < 1e-3 && p.e.abs() < 1e-3, "{p:?}");
        // A quarter turn: 20 m along the minor axis (west, counter-clockwise from north).
        let p = frame.to_enu(Geodetic::new(ring[4][1], ring[4][0], 300.0));
        assert!((p.e.abs() - 20.0).abs() < 1e-3 && p.n.abs() < 1e-3, "{p:?}");
    }

    #[test]
    fn a_non_psd_covariance_gives_no_ellipse() {
        let cov = [[1.0, 5.0, 0.0], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(ellipse_from_cov(&cov).is_none());
        let cov = [[f64::NAN, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(ellipse_from_cov(&cov).is_none());
    }
}
