//! Atmospheric absorption for rendering: the ISO 9613-1 minimum-phase
//! filters of [`blastnet_contract::absorption`], cached per path length.

use std::sync::Arc;

pub use blastnet_contract::absorption::{
    absorption_fir, alpha_db_per_m, minimum_phase_from_log_magnitude, Air,
};

/// A cache of absorption filters keyed by (path length rounded to 1 m, rate):
/// absorption changes by far less than a percent per metre of path.
#[derive(Default)]
pub struct FirCache {
    map: std::collections::HashMap<(u64, u32), Arc<Vec<f64>>>,
}

impl FirCache {
    /// The filter for `path_m` at `rate_hz` in `air`.
    pub fn get(&mut self, air: Air, path_m: f64, rate_hz: u32) -> Arc<Vec<f64>> {
        let key = (path_m.max(0.0).round() as u64, rate_hz);
        self.map
            .entry(key)
            .or_insert_with(|| Arc::new(absorption_fir(air, key.0 as f64, rate_hz)))
            .clone()
    }
}
