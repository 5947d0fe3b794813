//! WGS84 geodesy: geodetic <-> ECEF <-> local East-North-Up.
//!
//! Written out rather than taken from a crate: the formulas are a dozen lines,
//! `map_3d`, `geoconv` and `nav-types` were checked to agree with them to
//! 0.1 mm, and the aggregator needs only these three
//! conversions. Source: NGA.STND.0036_1.0.0_WGS84 (2014), eq. 4-14 for
//! geodetic -> ECEF; the inverse is Bowring's (1976) iteration, which
//! converges to well below a millimetre in two steps for any terrestrial or
//! atmospheric height.

use serde::{Deserialize, Serialize};

/// WGS84 semi-major axis, metres.
pub const WGS84_A: f64 = 6_378_137.0;
/// WGS84 flattening.
pub const WGS84_F: f64 = 1.0 / 298.257_223_563;
/// WGS84 semi-minor axis, metres.
pub const WGS84_B: f64 = WGS84_A * (1.0 - WGS84_F);
/// First eccentricity squared.
pub const WGS84_E2: f64 = WGS84_F * (2.0 - WGS84_F);

/// A WGS84 position: latitude and longitude in degrees, height in metres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Geodetic {
    /// Latitude, degrees north.
    pub lat: f64,
    /// Longitude, degrees east.
    pub lon: f64,
    /// Height, metres.
    pub alt_m: f64,
}

/// Earth-centred, Earth-fixed Cartesian coordinates in metres.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Ecef(pub [f64; 3]);

/// A local East-North-Up vector in metres relative to an [`EnuFrame`] origin.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Enu {
    /// East, metres.
    pub e: f64,
    /// North, metres.
    pub n: f64,
    /// Up, metres.
    pub u: f64,
}

impl Enu {
    /// A new ENU vector.
    pub const fn new(e: f64, n: f64, u: f64) -> Self {
        Enu { e, n, u }
    }
    /// As an array `[e, n, u]`.
    pub const fn to_array(self) -> [f64; 3] {
        [self.e, self.n, self.u]
    }
    /// Euclidean distance to `other`.
    pub fn distance(self, other: Enu) -> f64 {
        ((self.e - other.e).powi(2) + (self.n - other.n).powi(2) + (self.u - other.u).powi(2))
            .sqrt()
    }
    /// Horizontal distance to `other`.
    pub fn horizontal_distance(self, other: Enu) -> f64 {
        (self.e - other.e).hypot(self.n - other.n)
    }
}

impl Geodetic {
    /// A new position.
    pub const fn new(lat: f64, lon: f64, alt_m: f64) -> Self {
        Geodetic { lat, lon, alt_m }
    }

    /// Straight-line (slant) distance to `other`, m, through ECEF.
    pub fn distance(self, other: Geodetic) -> f64 {
        let (p, q) = (self.to_ecef().0, other.to_ecef().0);
        ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt()
    }

    /// To ECEF (NGA.STND.0036 eq. 4-14).
    pub fn to_ecef(self) -> Ecef {
        let (slat, clat) = self.lat.to_radians().sin_cos();
        let (slon, clon) = self.lon.to_radians().sin_cos();
        let n = WGS84_A / (1.0 - WGS84_E2 * slat * slat).sqrt();
        Ecef([
            (n + self.alt_m) * clat * clon,
            (n + self.alt_m) * clat * slon,
            (n * (1.0 - WGS84_E2) + self.alt_m) * slat,
        ])
    }
}

impl Ecef {
    /// To geodetic by Bowring's method, iterated to convergence.
    pub fn to_geodetic(self) -> Geodetic {
        let [x, y, z] = self.0;
        let p = x.hypot(y);
        let lon = y.atan2(x);
        let ep2 = WGS84_E2 / (1.0 - WGS84_E2);
        // Parametric latitude start, then Bowring's update.
        let mut beta = (z * WGS84_A).atan2(p * WGS84_B);
        let mut lat = 0.0;
        for _ in 0..5 {
            let (sb, cb) = beta.sin_cos();
            lat = (z + ep2 * WGS84_B * sb.powi(3)).atan2(p - WGS84_E2 * WGS84_A * cb.powi(3));
            let next = ((1.0 - WGS84_F) * lat.sin()).atan2(lat.cos());
            if (next - beta).abs() < 1e-15 {
                break;
            }
            beta = next;
        }
        let (slat, clat) = lat.sin_cos();
        let n = WGS84_A / (1.0 - WGS84_E2 * slat * slat).sqrt();
        // Height formula that stays well conditioned at all latitudes.
        let alt = p * clat + z * slat - WGS84_A * WGS84_A / n;
        Geodetic {
            lat: lat.to_degrees(),
            lon: lon.to_degrees(),
            alt_m: alt,
        }
    }
}

/// A local tangent-plane frame (East-North-Up) at an origin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnuFrame {
    origin: Geodetic,
    origin_ecef: Ecef,
    /// Rows: east, north, up unit vectors in ECEF.
    rot: [[f64; 3]; 3],
}

impl EnuFrame {
    /// The ENU frame whose origin is `origin`.
    pub fn new(origin: Geodetic) -> Self {
        let (sl, cl) = origin.lat.to_radians().sin_cos();
        let (so, co) = origin.lon.to_radians().sin_cos();
        EnuFrame {
            origin,
            origin_ecef: origin.to_ecef(),
            rot: [
                [-so, co, 0.0],
                [-sl * co, -sl * so, cl],
                [cl * co, cl * so, sl],
            ],
        }
    }

    /// The frame's origin.
    pub fn origin(&self) -> Geodetic {
        self.origin
    }

    /// ECEF to local ENU.
    pub fn ecef_to_enu(&self, p: Ecef) -> Enu {
        let d = [
            p.0[0] - self.origin_ecef.0[0],
            p.0[1] - self.origin_ecef.0[1],
            p.0[2] - self.origin_ecef.0[2],
        ];
        let r = &self.rot;
        Enu {
            e: r[0][0] * d[0] + r[0][1] * d[1] + r[0][2] * d[2],
            n: r[1][0] * d[0] + r[1][1] * d[1] + r[1][2] * d[2],
            u: r[2][0] * d[0] + r[2][1] * d[1] + r[2][2] * d[2],
        }
    }

    /// Local ENU to ECEF.
    pub fn enu_to_ecef(&self, v: Enu) -> Ecef {
        let r = &self.rot;
        let o = self.origin_ecef.0;
        Ecef([
            o[0] + r[0][0] * v.e + r[1][0] * v.n + r[2][0] * v.u,
            o[1] + r[0][1] * v.e + r[1][1] * v.n + r[2][1] * v.u,
            o[2] + r[0][2] * v.e + r[1][2] * v.n + r[2][2] * v.u,
        ])
    }

    /// Geodetic to local ENU.
    pub fn to_enu(&self, p: Geodetic) -> Enu {
        self.ecef_to_enu(p.to_ecef())
    }

    /// Local ENU to geodetic.
    pub fn to_geodetic(&self, v: Enu) -> Geodetic {
        self.enu_to_ecef(v).to_geodetic()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn geodetic_to_ecef_matches_nvector_example_4() {
        // navlab.net n-vector Example 4: lat 1°, lon 2°, h 3 m (WGS-84) ->
        // p_EB_E = [6373290.27721828, 222560.20067474, 110568.82718179] m.
        let e = Geodetic::new(1.0, 2.0, 3.0).to_ecef().0;
        assert!(close(e[0], 6_373_290.277_218_28, 1e-6), "{e:?}");
        assert!(close(e[1], 222_560.200_674_74, 1e-6), "{e:?}");
        assert!(close(e[2], 110_568.827_181_79, 1e-6), "{e:?}");
    }

    #[test]
    fn ecef_to_geodetic_matches_nvector_example_3() {
        // navlab.net n-vector Example 3: 6371 km * (0.9, -1, 1.1) ->
        // lat 39.38°, lon -48.01°, height 4702059.83 m (as printed, 2 decimals).
        let g = Ecef([0.9 * 6_371e3, -6_371e3, 1.1 * 6_371e3]).to_geodetic();
        assert!(close(g.lat, 39.38, 0.005), "{g:?}");
        assert!(close(g.lon, -48.01, 0.005), "{g:?}");
        assert!(close(g.alt_m, 4_702_059.83, 0.005), "{g:?}");
    }

    #[test]
    fn poles_and_equator_sit_on_the_defining_axes() {
        let pole = Geodetic::new(90.0, 0.0, 0.0).to_ecef().0;
        assert!(close(pole[2], 6_356_752.314_245, 1e-5), "{pole:?}");
        let eq = Geodetic::new(0.0, 90.0, 0.0).to_ecef().0;
        assert!(close(eq[1], WGS84_A, 1e-6) && eq[0].abs() < 1e-6);
        let back = Ecef([0.0, 0.0, WGS84_B + 10.0]).to_geodetic();
        assert!(close(back.lat, 90.0, 1e-12) && close(back.alt_m, 10.0, 1e-6));
    }

    #[test]
    fn enu_round_trip_is_under_a_millimetre_at_50_km() {
        let frame = EnuFrame::new(Geodetic::new(33.5138, 36.2765, 690.0));
        for &(e, n, u) in &[
            (50_000.0, 0.0, 0.0),
            (-35_355.0, 35_355.0, 5_000.0),
            (0.0, -50_000.0, -200.0),
            (12.5, 7.25, 4_000.0),
        ] {
            let v = Enu::new(e, n, u);
            let back = frame.to_enu(frame.to_geodetic(v));
            assert!(v.distance(back) < 1e-3, "{v:?} -> {back:?}");
        }
    }

    #[test]
    fn geodetic_distance_is_the_enu_norm() {
        // A rigid rotation and shift: the slant distance is the same in ENU.
        let o = Geodetic::new(40.44, -79.99, 250.0);
        let frame = EnuFrame::new(o);
        let v = Enu::new(3_000.0, -4_000.0, 120.0);
        let d = o.distance(frame.to_geodetic(v));
        assert!(
            (d - v.distance(Enu::new(0.0, 0.0, 0.0))).abs() < 1e-3,
            "{d}"
        );
    }

    #[test]
    fn enu_axes_point_east_north_and_up() {
        let o = Geodetic::new(45.0, 10.0, 0.0);
        let frame = EnuFrame::new(o);
        // A point 0.001° further north is ~111 m north (meridian arc at 45°: 111.132 km/°).
        let n = frame.to_enu(Geodetic::new(45.001, 10.0, 0.0));
        assert!(close(n.n, 111.132, 0.01) && n.e.abs() < 1e-6, "{n:?}");
        // East: 111.412 km/° * cos(45°) ≈ 78.847 m per 0.001°.
        let e = frame.to_enu(Geodetic::new(45.0, 10.001, 0.0));
        assert!(close(e.e, 78.847, 0.01) && e.n.abs() < 1e-3, "{e:?}");
        let u = frame.to_enu(Geodetic::new(45.0, 10.0, 100.0));
        assert!(close(u.u, 100.0, 1e-6));
    }
}
