//! Straight-ray propagation in a uniform atmosphere over flat ground.
//!
//! - Sound speed c(T) = 331.3 √(1 + T/273.15) and the moving-medium ground
//!   speed c·√(1 − (w⊥/c)²) + w·û (both from `blastnet_contract::physics`,
//!   shared with the aggregator), with the wind [east, north] taken in the
//!   local ENU frame at the source.
//! - Spherical spreading: amplitude ∝ 1/R beyond the blast laws' fitted range
//!   (see `blastnet_contract::blast`).
//! - The ground-reflected path is the straight ray from the image source
//!   mirrored in the ground plane (up = 0); in a uniform horizontal wind its
//!   travel time is exactly that of the image ray.

use blastnet_contract::physics::{sound_speed, travel_time};
use blastnet_contract::{Enu, EnuFrame, Environment, Geodetic, TruthSource, UtcNs};

/// One acoustic path from a source to a receiver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Path {
    /// Geometric length, m.
    pub length_m: f64,
    /// Travel time, s.
    pub travel_s: f64,
    /// Whether this is the ground-reflected path.
    pub reflected: bool,
}

/// Travel time (s) of the direct ray from geodetic `source` to `receiver`
/// with sound speed `c` and wind `wind_en` in the ENU frame at the source.
pub fn travel_time_geodetic(
    c: f64,
    wind_en: [f64; 2],
    source: Geodetic,
    receiver: Geodetic,
) -> f64 {
    let f = EnuFrame::new(source);
    travel_time(c, wind_en, Enu::new(0.0, 0.0, 0.0), f.to_enu(receiver))
}

/// The simulator's ideal arrival time of `truth` at `receiver` in the
/// atmosphere `env` (direct ray): truth time + travel time. For others'
/// tests; equal to what `write_scenario` renders (to the nanosecond).
pub fn arrival_utc(truth: &TruthSource, receiver: Geodetic, env: &Environment) -> UtcNs {
    let src = Geodetic::new(truth.lat, truth.lon, truth.alt_m);
    let t = travel_time_geodetic(sound_speed(env.temperature_c), env.wind_mps, src, receiver);
    truth.time_utc.add_secs_f64(t)
}

/// Direct and (for elevated sources, when `reflection` > 0) ground-reflected
/// paths from `source` to `receiver`, both in the scenario frame `frame`
/// (ground at up = 0).
pub fn paths(
    frame: &EnuFrame,
    c: f64,
    wind_en: [f64; 2],
    source: Enu,
    receiver: Enu,
    reflection: f64,
) -> Vec<Path> {
    let src_geo = frame.to_geodetic(source);
    let rcv_geo = frame.to_geodetic(receiver);
    let mut out = vec![Path {
        length_m: source.distance(receiver),
        travel_s: travel_time_geodetic(c, wind_en, src_geo, rcv_geo),
        reflected: false,
    }];
    // A source on the ground coincides with its image: the surface-burst law
    // already includes the reflection, so there is no separate path.
    if source.u > 0.0 && reflection > 0.0 {
        let image = Enu::new(source.e, source.n, -source.u);
        out.push(Path {
            length_m: image.distance(receiver),
            travel_s: travel_time(c, wind_en, image, receiver),
            reflected: true,
        });
    }
    out
}

/// Where and when a supersonic projectile's shock reaches `receiver`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShockArrival {
    /// Time after the shot, s.
    pub after_shot_s: f64,
    /// Miss distance (receiver to trajectory), m.
    pub miss_m: f64,
    /// Ray length from the emission point on the trajectory to the receiver, m.
    pub ray_m: f64,
}

/// Mach-cone geometry (still air): the shock heard at `receiver` leaves the
/// trajectory at the point where the ray to the receiver meets the trajectory
/// at 90° − θ, sin θ = c/V; it arrives at s/V + b/(c cos θ), with s the
/// distance flown to that point and b the miss distance. `None` when that
/// point lies behind the muzzle or beyond `range_m` (no shock is heard).
pub fn bullet_shock(
    c: f64,
    muzzle: Enu,
    direction: [f64; 3],
    speed: f64,
    range_m: f64,
    receiver: Enu,
) -> Option<ShockArrival> {
    let n = (direction[0].powi(2) + direction[1].powi(2) + direction[2].powi(2)).sqrt();
    let d = [direction[0] / n, direction[1] / n, direction[2] / n];
    let rel = [
        receiver.e - muzzle.e,
        receiver.n - muzzle.n,
        receiver.u - muzzle.u,
    ];
    let along = rel[0] * d[0] + rel[1] * d[1] + rel[2] * d[2];
    let perp2 = (rel[0].powi(2) + rel[1].powi(2) + rel[2].powi(2)) - along * along;
    let miss = perp2.max(0.0).sqrt();
    if speed <= c || miss <= 0.0 {
        return None;
    }
    let sin_t = c / speed;
    let cos_t = (1.0 - sin_t * sin_t).sqrt();
    let s = along - miss * sin_t / cos_t;
    if s < 0.0 || s > range_m {
        return None;
    }
    Some(ShockArrival {
        after_shot_s: s / speed + miss / (c * cos_t),
        miss_m: miss,
        ray_m: miss / cos_t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflected_path_is_longer_and_its_delay_matches_the_image_geometry() {
        let frame = EnuFrame::new(Geodetic::new(50.0, 30.0, 150.0));
        let c = sound_speed(10.0);
        let src = Enu::new(0.0, 0.0, 2000.0);
        let rcv = Enu::new(1500.0, 0.0, 20.0);
        let p = paths(&frame, c, [0.0, 0.0], src, rcv, 0.9);
        assert_eq!(p.len(), 2);
        let direct = (1500f64.powi(2) + 1980f64.powi(2)).sqrt();
        let image = (1500f64.powi(2) + 2020f64.powi(2)).sqrt();
        assert!((p[0].travel_s - direct / c).abs() < 1e-7, "{:?}", p[0]);
        assert!((p[1].travel_s - image / c).abs() < 1e-9);
        // A ground source has no separate image path.
        assert_eq!(
            paths(&frame, c, [0.0, 0.0], Enu::new(0.0, 0.0, 0.0), rcv, 0.9).len(),
            1
        );
    }

    #[test]
    fn shock_arrives_before_the_muzzle_blast_and_at_the_mach_angle() {
        let c = 340.0;
        let v = 850.0;
        let muzzle = Enu::new(0.0, 0.0, 1.5);
        let rcv = Enu::new(200.0, 30.0, 1.5);
        let s = bullet_shock(c, muzzle, [1.0, 0.0, 0.0], v, 600.0, rcv).expect("heard");
        let blast = muzzle.distance(rcv) / c;
        assert!(s.after_shot_s < blast, "{s:?} vs {blast}");
        assert!((s.miss_m - 30.0).abs() < 1e-9);
        // Brute force: the earliest of (x/V + |R − P(x)|/c) over emission points x.
        let best = (0..=600_000)
            .map(|i| {
                let x = i as f64 * 0.001;
                x / v + ((200.0 - x).powi(2) + 900.0).sqrt() / c
            })
            .fold(f64::INFINITY, f64::min);
        assert!(
            (s.after_shot_s - best).abs() < 1e-6,
            "{} vs {best}",
            s.after_shot_s
        );
        // Behind the muzzle: nothing.
        assert!(bullet_shock(
            c,
            muzzle,
            [1.0, 0.0, 0.0],
            v,
            600.0,
            Enu::new(-100.0, 5.0, 1.5)
        )
        .is_none());
    }
}
