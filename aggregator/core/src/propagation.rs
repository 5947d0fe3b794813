//! Straight-ray travel times (acoustic with a uniform wind, seismic ground
//! wave) and their gradients with respect to the source position.

use serde::{Deserialize, Serialize};

/// Which wave an arrival time belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The air blast: speed of sound from temperature, advected by the wind.
    Acoustic,
    /// The ground-coupled wave at a geophone: [`Propagation::seismic_speed_mps`].
    Seismic,
}

/// The propagation model of one location problem.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Propagation {
    /// Speed of sound in still air, m/s (from temperature: `blastnet_contract::physics::sound_speed`).
    pub sound_speed_mps: f64,
    /// Uniform wind [east, north], m/s, blowing TO.
    pub wind_mps: [f64; 2],
    /// Apparent speed of the ground-coupled seismic phase, m/s.
    pub seismic_speed_mps: f64,
    /// Relative 1-sigma uncertainty of `seismic_speed_mps` (site dependent), added to
    /// each seismic arrival's variance as (rel · travel time)².
    pub seismic_speed_rel_sigma: f64,
}

impl Propagation {
    /// Still air at `temperature_c`, default seismic speed.
    pub fn still_air(temperature_c: f64) -> Self {
        Propagation {
            sound_speed_mps: blastnet_contract::physics::sound_speed(temperature_c),
            wind_mps: [0.0, 0.0],
            seismic_speed_mps: 1500.0,
            seismic_speed_rel_sigma: 0.15,
        }
    }

    /// Travel time of `phase` from `src` to `rcv` (ENU metres), seconds.
    #[inline]
    pub fn travel_time(&self, phase: Phase, src: [f64; 3], rcv: [f64; 3]) -> f64 {
        self.travel_and_gradient(phase, src, rcv).0
    }

    /// Travel time and its gradient with respect to the source position.
    ///
    /// Acoustic: T = r / c_eff(û) with the contract's effective speed
    /// c_eff = c·s + a, s = sqrt(1 - (|w|² - a²)/c²), a = w·û (û from source to
    /// receiver). Differentiating, with ∂r/∂X = -û and ∂a/∂X = -(w - a·û)/r:
    /// ∂T/∂X = -û/c_eff + (1 + a/(c·s))·(w - a·û)/c_eff².
    #[inline]
    pub fn travel_and_gradient(
        &self,
        phase: Phase,
        src: [f64; 3],
        rcv: [f64; 3],
    ) -> (f64, [f64; 3]) {
        let d = [rcv[0] - src[0], rcv[1] - src[1], rcv[2] - src[2]];
        let r = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        if r < 1e-9 {
            return (0.0, [0.0; 3]);
        }
        let u = [d[0] / r, d[1] / r, d[2] / r];
        match phase {
            Phase::Seismic => {
                let v = self.seismic_speed_mps;
                (r / v, [-u[0] / v, -u[1] / v, -u[2] / v])
            }
            Phase::Acoustic => {
                let c = self.sound_speed_mps;
                let w = [self.wind_mps[0], self.wind_mps[1], 0.0];
                let a = w[0] * u[0] + w[1] * u[1];
                let w2 = w[0] * w[0] + w[1] * w[1];
                if w2 == 0.0 {
                    return (r / c, [-u[0] / c, -u[1] / c, -u[2] / c]);
                }
                let s = (1.0 - (w2 - a * a).max(0.0) / (c * c)).max(1e-6).sqrt();
                let ce = c * s + a;
                let k = (1.0 + a / (c * s)) / (ce * ce);
                let mut g = [0.0; 3];
                for i in 0..3 {
                    g[i] = -u[i] / ce + k * (w[i] - a * u[i]);
                }
                (r / ce, g)
            }
        }
    }

    /// Extra 1-sigma timing error of the model for `phase` at travel time `t`, seconds.
    pub fn model_sigma(&self, phase: Phase, travel_s: f64) -> f64 {
        match phase {
            Phase::Acoustic => 0.0,
            Phase::Seismic => self.seismic_speed_rel_sigma * travel_s,
        }
    }

    /// The slowest horizontal acoustic speed with this wind (for causality bounds).
    pub fn min_acoustic_speed(&self) -> f64 {
        let w = self.wind_mps[0].hypot(self.wind_mps[1]);
        (self.sound_speed_mps - w).max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_central_differences_with_wind() {
        let p = Propagation {
            wind_mps: [7.0, -4.0],
            ..Propagation::still_air(10.0)
        };
        let rcv = [120.0, -340.0, 2.0];
        for src in [
            [900.0, 400.0, 0.0],
            [-1500.0, 30.0, 2500.0],
            [10.0, -2000.0, 50.0],
        ] {
            for phase in [Phase::Acoustic, Phase::Seismic] {
                let (_, g) = p.travel_and_gradient(phase, src, rcv);
                for i in 0..3 {
                    let h = 1e-3;
                    let mut a = src;
                    let mut b = src;
                    a[i] += h;
                    b[i] -= h;
                    let num =
                        (p.travel_time(phase, a, rcv) - p.travel_time(phase, b, rcv)) / (2.0 * h);
                    assert!(
                        (num - g[i]).abs() < 1e-9,
                        "{phase:?} {i}: {num} vs {}",
                        g[i]
                    );
                }
            }
        }
    }

    #[test]
    fn acoustic_time_agrees_with_the_contract_formula() {
        use blastnet_contract::{physics::travel_time, Enu};
        let p = Propagation {
            wind_mps: [5.0, 3.0],
            ..Propagation::still_air(20.0)
        };
        let (s, r) = ([100.0, 200.0, 30.0], [-800.0, 1500.0, 0.0]);
        let ours = p.travel_time(Phase::Acoustic, s, r);
        let theirs = travel_time(
            p.sound_speed_mps,
            p.wind_mps,
            Enu::new(s[0], s[1], s[2]),
            Enu::new(r[0], r[1], r[2]),
        );
        assert!((ours - theirs).abs() < 1e-12);
    }
}
