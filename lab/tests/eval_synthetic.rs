//! The synthetic evaluation as a library: its report is data a test can
//! check, here against the detector's targets (issue #4), not against what
//! it printed once.

use blastnet_detector::{Classifier, DetectorConfig};
use blastnet_lab::eval::synthetic::rate_report;

/// At 48 kHz, audible impulsive arrivals (peak SNR >= 15 dB) are detected at least 98 %
/// of the time, and the median |pick error| of impulsive fronts at SNR >= 20
/// dB is within one sample period (the target is 0.1 ms; a sample is 0.02 ms).
#[test]
fn synthetic_scenes_at_48_khz_meet_the_detection_targets() {
    let c = Classifier::builtin().expect("built-in model");
    let (mut pairs, mut confusion) = (Vec::new(), [[0usize; 4]; 4]);
    let r = rate_report(
        48_000,
        3,
        &DetectorConfig::default(),
        &c,
        &mut pairs,
        &mut confusion,
    )
    .expect("report");
    // Impulsive arrivals (explosion, gunshot, other): a launch heard from
    // afar is a roar rising out of the noise with no front, and its peak
    // SNR overstates how audible it is (its RMS is ~12 dB below its peak);
    // its recall is reported, not held to this target.
    let impulsive = [0, 1, 3];
    let audible: usize = impulsive.iter().map(|&k| r.audible[k]).sum();
    let found: usize = impulsive.iter().map(|&k| r.found[k]).sum();
    assert!(audible >= 20, "too few audible arrivals to judge: {r}");
    assert!(found as f64 >= 0.98 * audible as f64, "{r}");
    let mut e = r.errs20.clone();
    e.sort_by(f64::total_cmp);
    let median = e[e.len() / 2];
    assert!(
        median <= 1.0 / 48_000.0,
        "median |pick error| {median} s\n{r}"
    );
    // Every scored pick is in the confusion matrix and the reliability pairs.
    let scored: usize = confusion.iter().flatten().sum();
    assert_eq!(scored, pairs.len());
}
