//! Reconnect back-off: exponential with jitter, so that a fleet of nodes
//! that lost the same broker does not reconnect in lock-step (no storm).
//!
//! Delay of attempt `k` (0-based) is drawn uniformly from
//! `[cap_k / 2, cap_k]` with `cap_k = min(max, initial · 2^k)` ("equal
//! jitter"): never shorter than half the exponential step, spread over the
//! other half. A connection that was accepted resets the sequence.

use std::time::Duration;

use rand::Rng;

/// Back-off state for one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// From the first and the largest delay.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The cap of the next delay (before jitter).
    pub fn cap(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay, drawn with `rng`; advances the sequence.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let cap = self.cap().as_secs_f64();
        let d = rng.random_range(cap / 2.0..=cap);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_secs_f64(d)
    }

    /// A connection succeeded: start again from `initial`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_grow_exponentially_within_jitter_bounds_and_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        for k in 0..12u32 {
            let cap = (0.5 * 2f64.powi(k as i32)).min(60.0);
            let d = b.next_delay(&mut rng).as_secs_f64();
            assert!(
                d >= cap / 2.0 - 1e-9 && d <= cap + 1e-9,
                "attempt {k}: {d} not in [{}, {cap}]",
                cap / 2.0
            );
        }
        b.reset();
        assert_eq!(b.cap(), Duration::from_millis(500));
    }

    #[test]
    fn a_fleet_does_not_reconnect_in_lock_step() {
        // 100 nodes lose the broker at the same instant; their 6th retries
        // (cap 16 s) must spread over seconds, not land together.
        let mut times = Vec::new();
        for node in 0..100u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(node);
            let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
            let t: f64 = (0..6).map(|_| b.next_delay(&mut rng).as_secs_f64()).sum();
            times.push(t);
        }
        times.sort_by(f64::total_cmp);
        let spread = times[89] - times[10];
        // Sum of six independent uniforms of widths 0.25..8 s: σ ≈ 2.7 s; the
        // 10-90 % range of a near-normal is ≈ 2.56 σ ≈ 7 s. Demand at least 3 s.
        assert!(spread > 3.0, "retries bunched within {spread} s");
        // And in any 100 ms window at most a handful of the 100 nodes.
        let max_in_window = (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t < times[i] + 0.1)
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(
            max_in_window <= 10,
            "{max_in_window} nodes reconnect within 100 ms"
        );
    }
}
