//! The location evaluation as a library (`blastnet eval --locate`): two
//! tuning seeds through the real pipeline give a complete report. The
//! engine's figures are not judged here (its targets are for the held-back
//! seeds, `blastnet eval --locate 200 --seed-base 10000`); only that every
//! source of every scene was scored and the summary figures are computed.

use blastnet_lab::eval::locate::{locate, seed_set, LocateOptions, HELD_BACK_SEED_BASE};

#[test]
fn two_tuning_scenes_through_the_pipeline_give_a_complete_report() {
    let seeds = 4..6;
    assert_eq!(seed_set(&seeds), "tuning");
    assert_eq!(
        seed_set(&(HELD_BACK_SEED_BASE..HELD_BACK_SEED_BASE + 200)),
        "held-back"
    );
    let r = locate(&LocateOptions {
        seeds: seeds.clone(),
        threads: 2,
        progress: false,
    })
    .expect("evaluation runs");
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(
        r.scenes.iter().map(|s| s.seed).collect::<Vec<_>>(),
        seeds.clone().collect::<Vec<_>>()
    );
    for s in &r.scenes {
        // Every true source of the scene is scored.
        let spec = blastnet_simulator::random_scene(s.seed);
        assert_eq!(s.sources.len(), spec.sources.len(), "seed {}", s.seed);
        assert_eq!(s.nodes, spec.nodes.len());
        assert!(s.aperture_m > 0.0);
    }
    let (located, total) = r.recall(|_, _| true);
    assert!(total >= 6 && located > 0, "{located}/{total}\n{r}");
    assert!(r.ghosts_per_100().is_finite());
    assert!(r.median_error_over_crlb() > 0.0, "{r}");
    let (c1, c2, n) = r.coverage();
    assert!(c1 <= c2 && c2 <= n && n == located, "{r}");
    let text = r.to_string();
    assert!(text.contains("tuning seeds 4..6"), "{text}");
    assert!(text.contains("recall inside the hull"), "{text}");
}
