//! Behaviour of the streaming detector on signals with exact truth.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use blastnet_contract::{SourceKind, StreamKind};
use blastnet_detector::{Detector, DetectorConfig, DetectorError, Pick};
use blastnet_simulator::scenes::{add_noise, render, scene, Rng, SceneSpec};

/// Friedlander `Ps (1 - t/td) exp(-b t/td)` starting at `t0` (samples), each
/// sample the mean over its sampling interval (16 points), written here
/// independently of the crate's generator.
fn friedlander_into(x: &mut [f32], t0: f64, ps: f64, td_samples: f64, b: f64) {
    for (i, v) in x.iter_mut().enumerate() {
        let mut acc = 0.0;
        for s in 0..16 {
            let t = i as f64 + (s as f64 + 0.5) / 16.0 - 0.5 - t0;
            if t >= 0.0 {
                acc += ps * (1.0 - t / td_samples) * (-b * t / td_samples).exp();
            }
        }
        *v += (acc / 16.0) as f32;
    }
}

fn run(d: &mut Detector, x: &[f32], block: usize) -> Vec<Pick> {
    let mut out = Vec::new();
    for c in x.chunks(block.max(1)) {
        d.process(c, &mut out);
    }
    d.flush(&mut out);
    out
}

fn acoustic(fs: u32) -> Detector {
    Detector::new(StreamKind::Acoustic, fs, &DetectorConfig::default()).expect("default config")
}

#[test]
fn friedlander_onset_is_picked_within_the_sampling_and_noise_bound() {
    for &fs in &[12_000u32, 48_000] {
        let mut errs = Vec::new();
        for seed in 0..12u64 {
            let mut rng = Rng::new(seed);
            let n = fs as usize * 2;
            let mut x = vec![0f32; n];
            let sigma = 0.01;
            add_noise(&mut rng, sigma, 0.0, &mut x);
            let snr_db = 30.0;
            let ps = sigma * 10f64.powf(snr_db / 20.0);
            let t0 = 1.2 * f64::from(fs) + rng.uniform();
            let td = rng.range(0.0005, 0.02) * f64::from(fs);
            friedlander_into(&mut x, t0, ps, td, rng.range(0.5, 2.0));
            let picks = run(&mut acoustic(fs), &x, 1000);
            assert_eq!(picks.len(), 1, "fs {fs} seed {seed}: {picks:?}");
            let p = &picks[0];
            let err = p.onset_index - t0;
            // Bound: one sample period (where the step falls inside its
            // sampling interval) plus 3 sigma of the noise-induced error of a
            // level crossing, sqrt(2) sigma_n / slope, slope ~ Ps per sample.
            let bound = 1.0 + 3.0 * 2f64.sqrt() * 10f64.powf(-snr_db / 20.0);
            assert!(
                err.abs() <= bound,
                "fs {fs} seed {seed}: err {err} samples > {bound}"
            );
            // The reported 1-sigma is honest: the error is within 4 of them.
            let sig = p.onset_uncertainty_s * f64::from(fs);
            assert!(
                err.abs() <= 4.0 * sig,
                "fs {fs} seed {seed}: err {err} vs sigma {sig}"
            );
            assert!((p.snr_db - snr_db).abs() < 6.0, "snr {}", p.snr_db);
            errs.push(err.abs());
        }
        errs.sort_by(f64::total_cmp);
        // Median of |uniform(-1/2, 1/2)| is 1/4 sample: allow the noise term on top.
        assert!(
            errs[errs.len() / 2] <= 0.35,
            "fs {fs}: median |err| {} samples",
            errs[errs.len() / 2]
        );
    }
}

#[test]
fn picks_do_not_depend_on_block_size() {
    let spec = SceneSpec {
        fs: 16_000.0,
        duration_s: 20.0,
        spacing_s: 3.0,
        snr_db: (15.0, 40.0),
        classes: SourceKind::CLASSIFIED.to_vec(),
        noise_rms: 0.02,
    };
    let sc = scene(3, &spec);
    let reference = run(&mut acoustic(16_000), &sc.samples, 16_000);
    assert!(
        reference.len() >= sc.events.len() / 2,
        "{} picks",
        reference.len()
    );
    for block in [1usize, 7, 160, 4096] {
        let got = run(&mut acoustic(16_000), &sc.samples, block);
        assert_eq!(got, reference, "block size {block}");
    }
    // Uneven blocks too.
    let mut d = acoustic(16_000);
    let mut out = Vec::new();
    let mut rng = Rng::new(9);
    let mut i = 0;
    while i < sc.samples.len() {
        let len = 1 + rng.below(3000);
        let end = (i + len).min(sc.samples.len());
        d.process(&sc.samples[i..end], &mut out);
        i = end;
    }
    d.flush(&mut out);
    assert_eq!(out, reference, "random block sizes");
}

#[test]
fn every_pick_is_emitted_within_the_stated_latency() {
    let spec = SceneSpec {
        fs: 12_000.0,
        duration_s: 15.0,
        spacing_s: 3.0,
        snr_db: (20.0, 40.0),
        classes: SourceKind::CLASSIFIED.to_vec(),
        noise_rms: 0.02,
    };
    let sc = scene(5, &spec);
    let mut d = acoustic(12_000);
    let max = d.max_latency_samples();
    let mut out = Vec::new();
    let mut n = 0;
    for &v in &sc.samples {
        d.process(&[v], &mut out);
        for p in &out[n..] {
            let lag = d.samples_seen() as f64 - p.onset_index;
            assert!(lag <= max as f64, "lag {lag} > {max}");
        }
        n = out.len();
    }
    assert!(n >= 3, "{n} picks");
}

#[test]
fn saturated_pulse_is_timed_at_its_first_rise() {
    let fs = 48_000u32;
    let mut x = vec![0f32; fs as usize];
    add_noise(&mut Rng::new(4), 0.01, 0.0, &mut x);
    let t0 = 30_000.37;
    friedlander_into(&mut x, t0, 50.0, 0.01 * f64::from(fs), 1.0);
    // A recorder that clips at 2 Pa: the pulse is flat-topped at 25x below its peak.
    for v in &mut x {
        *v = v.clamp(-2.0, 2.0);
    }
    let picks = run(&mut acoustic(fs), &x, 4800);
    assert_eq!(picks.len(), 1, "{picks:?}");
    let err = picks[0].onset_index - t0;
    assert!(err.abs() <= 1.0, "err {err} samples");
    assert_eq!(picks[0].features.clipped, 1.0);
}

#[test]
fn every_supported_rate_detects_a_blast() {
    for fs in [8_000u32, 12_000, 16_000, 44_100, 48_000, 96_000] {
        let mut rng = Rng::new(u64::from(fs));
        let mut x = vec![0f32; fs as usize * 3];
        add_noise(&mut rng, 0.01, 0.3, &mut x);
        let truth = render(
            SourceKind::Explosion,
            &mut rng,
            f64::from(fs),
            1.5,
            1.0,
            &mut x,
        );
        let picks = run(&mut acoustic(fs), &x, 1024);
        let hit = picks.iter().any(|p| {
            (p.onset_index - truth.onset_index).abs()
                <= 2.0 + p.onset_uncertainty_s * f64::from(fs) * 4.0
        });
        assert!(
            hit,
            "fs {fs}: truth {} picks {:?}",
            truth.onset_index,
            picks.iter().map(|p| p.onset_index).collect::<Vec<_>>()
        );
    }
}

#[test]
fn gaussian_noise_alone_gives_no_pick() {
    let fs = 48_000u32;
    let mut x = vec![0f32; fs as usize * 60];
    add_noise(&mut Rng::new(11), 0.05, 0.5, &mut x);
    let mut d = acoustic(fs);
    let picks = run(&mut d, &x, 4800);
    assert!(
        picks.is_empty(),
        "{} picks in 60 s of noise: {picks:?}",
        picks.len()
    );
    // Noise floor: band 100..8000 Hz of white (50 %) + red noise, 0.05 Pa RMS
    // total; the in-band share is at most the total: <= 20 log10(0.05/20e-6) = 68 dB.
    let nf = d.noise_floor_db();
    assert!(nf < 68.0 && nf > 50.0, "noise floor {nf} dB");
}

#[test]
fn seismic_arrival_is_picked_by_sta_lta_and_aic() {
    let fs = 200u32;
    let mut rng = Rng::new(2);
    let n = fs as usize * 60;
    let mut x = vec![0f32; n];
    add_noise(&mut rng, 1e-7, 0.0, &mut x);
    // An emergent P arrival at 40.3 s: 8 Hz wavelet, 1e-6 m/s, 0.5 s decay.
    let t0 = 40.3 * f64::from(fs);
    for (i, v) in x.iter_mut().enumerate() {
        let t = (i as f64 - t0) / f64::from(fs);
        if t >= 0.0 {
            *v += (1e-6 * (2.0 * std::f64::consts::PI * 8.0 * t).sin() * (-t / 0.5).exp()) as f32;
        }
    }
    let mut d = Detector::new(StreamKind::Seismic, fs, &DetectorConfig::default()).unwrap();
    let picks = run(&mut d, &x, 100);
    assert_eq!(picks.len(), 1, "{picks:?}");
    let p = &picks[0];
    // A sine starting at zero phase: the first sample above noise is ~1 sample in.
    let err = p.onset_index - t0;
    assert!(err.abs() <= 3.0, "err {err} samples");
    assert_eq!(p.kind, SourceKind::Unknown);
    // Noise floor: 1e-7 m/s RMS = 100 nm/s = 40 dB re 1 nm/s (LTA after the event is higher).
    assert!(
        (d.noise_floor_db() - 40.0).abs() < 10.0,
        "{}",
        d.noise_floor_db()
    );
}

#[test]
fn bad_config_names_the_field() {
    let cfg = DetectorConfig {
        trigger_off: 9.0,
        ..DetectorConfig::default()
    };
    let e = Detector::new(StreamKind::Seismic, 100, &cfg).unwrap_err();
    assert!(
        matches!(
            e,
            DetectorError::Config {
                field: "trigger_off",
                ..
            }
        ),
        "{e}"
    );
    let e = Detector::new(StreamKind::Acoustic, 100, &DetectorConfig::default()).unwrap_err();
    assert!(matches!(e, DetectorError::SampleRate(100)), "{e}");
    let parsed: Result<DetectorConfig, _> = serde_json::from_str(r#"{"on_dbb": 3}"#);
    assert!(parsed.unwrap_err().to_string().contains("on_dbb"));
}

#[test]
fn an_impulse_train_counts_its_comparable_onsets_and_the_same_pulse_alone_is_a_blast() {
    // 8 kHz noise of 0.02 Pa; identical 2 Pa Friedlander clicks (td 1 ms)
    // every 0.1 s from 2 s to 8 s (applause-like train), then one alone at 11 s.
    let fs = 48_000u32;
    let f = f64::from(fs);
    let mut x = vec![0f32; 13 * fs as usize];
    add_noise(&mut Rng::new(11), 0.02, 0.3, &mut x);
    let mut t = 2.0;
    while t < 8.0 {
        let start = (t * f) as usize;
        friedlander_into(&mut x[start - 10..start + 4800], 10.3, 2.0, 48.0, 1.5);
        t += 0.1;
    }
    let start = 11 * fs as usize;
    friedlander_into(&mut x[start - 10..start + 4800], 10.3, 2.0, 48.0, 1.5);
    let mut d = acoustic(fs);
    let picks = run(&mut d, &x, 4096);
    // Past the first 2 s of the train (when 2 s of context are all train),
    // every pulse has ~19 comparable onsets before it. (Its kind is the
    // classifier's: identical sharp impulses ten times a second are what
    // automatic fire sounds like; real applause, typing and rain are judged
    // by `blastnet eval`'s false-alarm hours.)
    let train: Vec<&Pick> = picks
        .iter()
        .filter(|p| p.onset_index > 4.5 * f && p.onset_index < 8.0 * f)
        .collect();
    assert!(train.len() >= 30, "train picks {}", train.len());
    for p in &train {
        assert!(p.features.comparable_onsets >= 10.0, "{:?}", p.features);
    }
    // The isolated pulse, 3 s after the train: 40 dB peak SNR, nothing
    // comparable: the same waveform is now reported as a blast.
    let lone = picks
        .iter()
        .find(|p| (p.onset_index - 11.0 * f).abs() < 0.001 * f)
        .expect("the isolated pulse is detected");
    assert_eq!(lone.features.comparable_onsets, 0.0);
    assert!(lone.kind.is_blast(), "{lone:?}");
}

/// A stream that starts (or resumes after a dropout) with digital silence
/// and a DC offset, as ShotSpotter's released WAVs do (1 s of exact zeros,
/// then signal around -372 counts): the step into the signal is no blast;
/// a blast after the floor is learnt again is still detected, on time.
#[test]
fn digital_silence_then_offset_signal_is_no_blast_but_a_later_blast_is() {
    let fs = 12_000u32;
    for seed in 0..6u64 {
        let mut rng = Rng::new(seed);
        let n = fs as usize * 4;
        let mut x = vec![0f32; n];
        let sigma = 0.01;
        add_noise(&mut rng, sigma, 0.0, &mut x);
        // A dropout mid-stream, and zeros before the signal starts.
        let gap = (2.0 * f64::from(fs)) as usize..(2.3 * f64::from(fs)) as usize;
        let start = f64::from(fs) as usize;
        for (i, v) in x.iter_mut().enumerate() {
            if i < start || gap.contains(&i) {
                *v = 0.0;
            } else {
                *v -= 0.3; // DC offset, 30 sigma of the noise
            }
        }
        let t0 = 3.2 * f64::from(fs) + rng.uniform();
        friedlander_into(&mut x, t0, sigma * 100.0, 0.004 * f64::from(fs), 1.0);
        let picks = run(&mut acoustic(fs), &x, 977);
        assert_eq!(picks.len(), 1, "seed {seed}: {picks:?}");
        assert!(
            (picks[0].onset_index - t0).abs() <= 2.0,
            "seed {seed}: {picks:?}"
        );
    }
}
