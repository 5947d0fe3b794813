//! Atmospheric acoustics shared by the simulator, the node and the aggregator.

use crate::geo::Enu;

/// Speed of sound in dry air at `temperature_c`, m/s:
/// c = 331.3 · sqrt(1 + T/273.15) (the ideal-gas law with γ = 1.4, R = 287.05).
pub fn sound_speed(temperature_c: f64) -> f64 {
    331.3 * (1.0 + temperature_c / 273.15).sqrt()
}

/// Effective propagation speed from `from` to `to` with a uniform wind
/// `wind_en` ([east, north], m/s, blowing TO): the ray's ground speed
/// c_eff = c·sqrt(1 - (w⊥/c)²) + w·û, the exact speed along û of a wavefront
/// point in a moving medium (w⊥ the wind component across the path).
pub fn effective_speed(c: f64, wind_en: [f64; 2], from: Enu, to: Enu) -> f64 {
    let d = [to.e - from.e, to.n - from.n, to.u - from.u];
    let r = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    if r == 0.0 {
        return c;
    }
    let along = (wind_en[0] * d[0] + wind_en[1] * d[1]) / r;
    let w2 = wind_en[0] * wind_en[0] + wind_en[1] * wind_en[1];
    let across2 = (w2 - along * along).max(0.0);
    c * (1.0 - across2 / (c * c)).max(0.0).sqrt() + along
}

/// Travel time from `from` to `to`, seconds, straight ray with uniform wind.
pub fn travel_time(c: f64, wind_en: [f64; 2], from: Enu, to: Enu) -> f64 {
    from.distance(to) / effective_speed(c, wind_en, from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sound_speed_at_zero_and_twenty_celsius() {
        assert!((sound_speed(0.0) - 331.3).abs() < 1e-12);
        // 331.3*sqrt(293.15/273.15) = 343.21 m/s, the textbook 343 m/s at 20 °C.
        assert!((sound_speed(20.0) - 343.21).abs() < 0.01);
    }

    #[test]
    fn wind_along_the_path_adds_and_across_it_barely_matters() {
        let a = Enu::new(0.0, 0.0, 0.0);
        let b = Enu::new(1000.0, 0.0, 0.0);
        assert!((effective_speed(340.0, [10.0, 0.0], a, b) - 350.0).abs() < 1e-9);
        assert!((effective_speed(340.0, [-10.0, 0.0], a, b) - 330.0).abs() < 1e-9);
        let across = effective_speed(340.0, [0.0, 10.0], a, b);
        assert!((across - (340.0f64 * 340.0 - 100.0).sqrt()).abs() < 1e-9);
    }
}
