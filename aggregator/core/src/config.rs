//! Engine configuration (serde, with defaults) and its validation.

use blastnet_contract::Geodetic;
use serde::{Deserialize, Serialize};

/// Tunables of the [`crate::Engine`]. Every field has a default; a TOML/JSON
/// section may give any subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Air temperature, °C, used when no node reports one.
    pub temperature_c: f64,
    /// Uniform wind [east, north], m/s, blowing TO.
    pub wind_mps: [f64; 2],
    /// 1-sigma error of the air temperature the engine uses (a node's
    /// thermometer or the configured value) as the temperature along the
    /// paths, °C. Default 3 °C: the spread of a ±5 °C error (uniform), how
    /// far a nearby weather report or a sensor in the sun may be from the
    /// air between the nodes.
    pub temperature_uncertainty_c: f64,
    /// 1-sigma error of each wind component the engine uses, m/s. Default
    /// 2 m/s: the spread of a ±3 m/s error (uniform), a regional wind
    /// report against the wind near the ground.
    pub wind_uncertainty_mps: f64,
    /// Apparent speed of the ground-coupled seismic phase, m/s.
    pub seismic_speed_mps: f64,
    /// Relative 1-sigma uncertainty of `seismic_speed_mps`.
    pub seismic_speed_rel_sigma: f64,
    /// Origin of the internal ENU frame; `None`: the first node seen.
    pub origin: Option<Geodetic>,
    /// The site's ground height, m (as node `alt_m`): ground sources are
    /// located on it. `None`: the median node's height (see the engine's
    /// `Ground` for why not the lowest node).
    pub ground_height_m: Option<f64>,
    /// A node further than this from the median position of its site's
    /// nodes is refused (a bad GPS fix, a typo in a survey), m. Default
    /// 50 km: ground-level sensors rarely hear even large blasts beyond a
    /// few tens of km, and over such baselines the straight-ray model's
    /// weather error alone exceeds any arrival-time precision, so a node
    /// further out cannot share sources with the rest of its site.
    pub max_site_radius_m: f64,
    /// Prior 1-sigma timing error of the straight-ray propagation model
    /// (temperature, wind, terrain, multipath, sensor position) at a site
    /// the engine has not learned yet, s. Each site's scale is then
    /// estimated online from its own events' residuals (see
    /// [`crate::calibration`]), starting from this value with the weight of
    /// about one event. Default 10 ms: wide on purpose. Too small a scale
    /// breaks a source's arrivals into outliers and loses it (on
    /// ShotSpotter's Pittsburgh recordings 24 % of shots within 15 m at
    /// 1 ms); too wide costs only a little precision and ghost protection
    /// until the first over-determined events have narrowed it. 0 trusts the
    /// pick sigmas alone (noise-free simulations).
    pub model_sigma_s: f64,
    /// Slack beyond the physics when grouping: pairs must satisfy
    /// |t_i − t_j| <= d_ij / c_min + this, and a seed's candidate source must
    /// predict a supporting arrival within gate_sigmas·σ + this, s.
    pub association_tolerance_s: f64,
    /// An arrival joins an event when |residual| <= this many sigmas of
    /// (pick ⊕ prediction).
    pub gate_sigmas: f64,
    /// Longest time span of one source's arrivals over the array, s;
    /// `None`: array aperture / slowest sound speed + tolerance + 1 s.
    pub max_event_window_s: Option<f64>,
    /// The watermark passed to `advance` guarantees delivery of every
    /// detection with onset < watermark − this, s.
    pub lateness_s: f64,
    /// Fewest arrivals for a source on the ground plane (exactly determined:
    /// only accepted when every other live node is accounted for).
    pub min_nodes_ground: usize,
    /// Fewest arrivals for a preliminary event with redundancy (2D + t0 plus one).
    pub min_nodes_preliminary: usize,
    /// Fewest arrivals before altitude is solved (3D + t0 plus one).
    pub min_nodes_3d: usize,
    /// An event is published early (before every live node's arrival is due)
    /// only with this many arrivals beyond the model's unknowns. In a salvo
    /// thousands of pick combinations are tried per detection, and echoes and
    /// false triggers make one- or two-coincidence fits common; three
    /// independent confirmations make a ghost improbable. Otherwise the event
    /// waits until every live node's arrival is due and is then judged on
    /// `min_detect_fraction`.
    pub confirm_extra_arrivals: usize,
    /// A candidate source is refused when fewer than this fraction of the live
    /// nodes whose arrival is already due reported it.
    pub min_detect_fraction: f64,
    /// Residuals beyond this many sigmas are rejected as outliers.
    pub outlier_sigmas: f64,
    /// χ²(2D) − χ²(3D) above which altitude is accepted (χ²(1), 10.83 = p 0.001).
    pub altitude_lr_threshold: f64,
    /// Unassociated arrivals within this of an event's prediction at a node
    /// are reported as that event's outliers, s.
    pub outlier_window_s: f64,
    /// A node's acoustic pick that follows its direct arrival (a pick used by
    /// an event) by at most this is a probable echo (reflections off
    /// buildings and terrain arrive later than the direct path): it may still
    /// join a source but does not seed one, s. 0 disables.
    pub echo_window_s: f64,
    /// A node is flagged when its residuals in at least `clock_flag_min_events`
    /// recent events agree in sign, exceed this in magnitude and scatter by
    /// less than a quarter of it, s.
    pub clock_flag_threshold_s: f64,
    /// See `clock_flag_threshold_s`.
    pub clock_flag_min_events: usize,
    /// At most this many pending detections are considered when seeding an event.
    pub max_seed_candidates: usize,
    /// Searches a node's picks may seed, per second of data time, sustained
    /// (a token bucket of `seed_burst`): its other picks still support
    /// sources, found from other nodes' picks. A node hears a salvo's
    /// sources and a burst's rounds a few a second for a few seconds; steady
    /// faster picking is noise (hail, wind, a fireworks night), and each
    /// search costs a thousand hypotheses. A source heard by k nodes is
    /// sought from every one of its picks that seeds: under a storm of
    /// r picks/s at each, about k·rate/r of them. Where the network's pick
    /// rate alone explains a source's confirming arrivals by chance (a
    /// storm), its picks together seed at the nodes' rates summed, with a
    /// burst of `seed_burst` for only as many nodes as confirm a source
    /// (every node's burst at once is then a storm's onset, not a salvo).
    /// 0 lifts the limit.
    pub seed_rate_hz: f64,
    /// See `seed_rate_hz`: picks in a row that seed at any rate.
    pub seed_burst: usize,
    /// Relative 1-sigma error of calibrated peak pressures, for yield bounds.
    pub yield_pressure_rel_sigma: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            temperature_c: 15.0,
            wind_mps: [0.0, 0.0],
            temperature_uncertainty_c: 3.0,
            wind_uncertainty_mps: 2.0,
            seismic_speed_mps: 1500.0,
            seismic_speed_rel_sigma: 0.15,
            origin: None,
            ground_height_m: None,
            max_site_radius_m: 50_000.0,
            model_sigma_s: 0.010,
            association_tolerance_s: 0.02,
            gate_sigmas: 4.0,
            max_event_window_s: None,
            lateness_s: 1.0,
            min_nodes_ground: 3,
            min_nodes_preliminary: 4,
            min_nodes_3d: 5,
            confirm_extra_arrivals: 3,
            min_detect_fraction: 0.5,
            outlier_sigmas: 4.0,
            altitude_lr_threshold: 10.83,
            outlier_window_s: 0.5,
            echo_window_s: 0.5,
            clock_flag_threshold_s: 0.02,
            clock_flag_min_events: 3,
            max_seed_candidates: 32,
            seed_rate_hz: 1.0,
            seed_burst: 20,
            yield_pressure_rel_sigma: 0.3,
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `field` is not acceptable; the caller should fix the configuration and restart.
    #[error("engine config field `{field}`: expected {expected}, got {got}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What is accepted.
        expected: &'static str,
        /// What was given.
        got: String,
    },
}

impl EngineConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, expected, got: String| {
            Err(ConfigError::Invalid {
                field,
                expected,
                got,
            })
        };
        let pos = |v: f64| v.is_finite() && v > 0.0;
        let nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if !(self.max_site_radius_m.is_finite() && self.max_site_radius_m >= 100.0) {
            return bad(
                "max_site_radius_m",
                "at least 100 m",
                self.max_site_radius_m.to_string(),
            );
        }
        if !(self.temperature_c.is_finite() && (-80.0..=70.0).contains(&self.temperature_c)) {
            return bad(
                "temperature_c",
                "a finite value in -80..=70 °C",
                self.temperature_c.to_string(),
            );
        }
        if !self
            .wind_mps
            .iter()
            .all(|w| w.is_finite() && w.abs() < 100.0)
        {
            return bad(
                "wind_mps",
                "two finite values below 100 m/s",
                format!("{:?}", self.wind_mps),
            );
        }
        for (f, v) in [
            ("seismic_speed_mps", self.seismic_speed_mps),
            ("association_tolerance_s", self.association_tolerance_s),
            ("gate_sigmas", self.gate_sigmas),
            ("outlier_sigmas", self.outlier_sigmas),
            ("altitude_lr_threshold", self.altitude_lr_threshold),
            ("outlier_window_s", self.outlier_window_s),
            ("clock_flag_threshold_s", self.clock_flag_threshold_s),
        ] {
            if !pos(v) {
                return bad(f, "a finite value > 0", v.to_string());
            }
        }
        for (f, v) in [
            ("seismic_speed_rel_sigma", self.seismic_speed_rel_sigma),
            ("temperature_uncertainty_c", self.temperature_uncertainty_c),
            ("wind_uncertainty_mps", self.wind_uncertainty_mps),
            ("model_sigma_s", self.model_sigma_s),
            ("lateness_s", self.lateness_s),
            ("echo_window_s", self.echo_window_s),
            ("seed_rate_hz", self.seed_rate_hz),
            ("yield_pressure_rel_sigma", self.yield_pressure_rel_sigma),
        ] {
            if !nonneg(v) {
                return bad(f, "a finite value >= 0", v.to_string());
            }
        }
        if let Some(w) = self.max_event_window_s {
            if !pos(w) {
                return bad(
                    "max_event_window_s",
                    "a finite value > 0 (or absent)",
                    w.to_string(),
                );
            }
        }
        if !(0.0..=1.0).contains(&self.min_detect_fraction) {
            return bad(
                "min_detect_fraction",
                "a value in 0..=1",
                self.min_detect_fraction.to_string(),
            );
        }
        if self.min_nodes_ground < 3 {
            return bad(
                "min_nodes_ground",
                "at least 3",
                self.min_nodes_ground.to_string(),
            );
        }
        if self.min_nodes_preliminary < 4 {
            return bad(
                "min_nodes_preliminary",
                "at least 4 (one more than the 2D unknowns)",
                self.min_nodes_preliminary.to_string(),
            );
        }
        if self.min_nodes_3d < 5 {
            return bad(
                "min_nodes_3d",
                "at least 5 (one more than the 3D unknowns)",
                self.min_nodes_3d.to_string(),
            );
        }
        if self.confirm_extra_arrivals < 1 {
            return bad(
                "confirm_extra_arrivals",
                "at least 1",
                self.confirm_extra_arrivals.to_string(),
            );
        }
        if self.clock_flag_min_events < 2 {
            return bad(
                "clock_flag_min_events",
                "at least 2",
                self.clock_flag_min_events.to_string(),
            );
        }
        if self.seed_rate_hz > 0.0 && self.seed_burst < 1 {
            return bad(
                "seed_burst",
                "at least 1 (with seed_rate_hz > 0)",
                self.seed_burst.to_string(),
            );
        }
        if self.max_seed_candidates < 3 {
            return bad(
                "max_seed_candidates",
                "at least 3",
                self.max_seed_candidates.to_string(),
            );
        }
        if let Some(h) = self.ground_height_m {
            if !(h.is_finite() && h.abs() < 20_000.0) {
                return bad(
                    "ground_height_m",
                    "a finite height in metres (or absent)",
                    h.to_string(),
                );
            }
        }
        if let Some(o) = self.origin {
            if !(o.lat.is_finite()
                && o.lat.abs() <= 90.0
                && o.lon.is_finite()
                && o.alt_m.is_finite())
            {
                return bad("origin", "a valid lat/lon/alt_m", format!("{o:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_field_is_named() {
        EngineConfig::default()
            .validate()
            .expect("defaults are valid");
        let cfg = EngineConfig {
            gate_sigmas: -1.0,
            ..EngineConfig::default()
        };
        let e = cfg.validate().expect_err("negative gate");
        assert!(e.to_string().contains("gate_sigmas"), "{e}");
    }
}
