//! Scratch probe: run the detector on a synthetic scene and print picks vs truth.
use blastnet_contract::{SourceKind, StreamKind};
use blastnet_detector::synth::{scene, SceneSpec};
use blastnet_detector::{Detector, DetectorConfig};

fn main() {
    let fs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(48000.0);
    let spec = SceneSpec {
        fs,
        duration_s: 200.0,
        spacing_s: 4.0,
        snr_db: (std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(10.0), 40.0),
        classes: match std::env::args().nth(3).as_deref() { Some("g") => vec![SourceKind::Gunshot], Some("e") => vec![SourceKind::Explosion], _ => vec![SourceKind::Explosion, SourceKind::Gunshot, SourceKind::Launch, SourceKind::OtherImpulsive] },
        noise_rms: 0.01,
    };
    let sc = scene(7, &spec);
    let mut cfg = DetectorConfig::default(); if let Some(v) = std::env::args().nth(4).and_then(|s| s.parse().ok()) { cfg.min_snr_db = v; }
    let mut d = Detector::new(StreamKind::Acoustic, fs as u32, &cfg).expect("cfg");
    let mut picks = Vec::new();
    for c in sc.samples.chunks(4800) {
        d.process(c, &mut picks);
    }
    d.flush(&mut picks);
    println!("noise floor {:.1} dB  frame {}", d.noise_floor_db(), d.frame_len());
    for e in &sc.events {
        let near = picks.iter().filter(|p| (p.onset_index - e.onset_index).abs() < 0.05 * fs).min_by(|a, b| (a.onset_index - e.onset_index).abs().total_cmp(&(b.onset_index - e.onset_index).abs()));
        let snr = 20.0 * (e.peak / sc.noise_rms).log10();
        match near {
            Some(p) => println!("{:?} snr {:.1}  err {:+.3} samp  sigma {:.3} samp  snr_est {:.1}", e.kind, snr, p.onset_index - e.onset_index, p.onset_uncertainty_s * fs, p.snr_db),
            None => println!("{:?} snr {:.1}  MISSED", e.kind, snr),
        }
    }
    let extra = picks.iter().filter(|p| !sc.events.iter().any(|e| (p.onset_index - e.onset_index).abs() < 0.05 * fs)).count();
    println!("picks {} extra {} stats {:?}", picks.len(), extra, d.stats());
}
