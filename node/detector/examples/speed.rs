//! Scratch: time the acoustic detector on 10 minutes of 48 kHz noise.
use blastnet_contract::StreamKind;
use blastnet_detector::synth::{add_noise, Rng};
use blastnet_detector::{Detector, DetectorConfig};
fn main() {
    let fs = 48000usize;
    let mut x = vec![0f32; fs * 600];
    add_noise(&mut Rng::new(1), 0.01, 0.5, &mut x);
    let mut cfg = DetectorConfig::default();
    if let Some(v) = std::env::args().nth(1).and_then(|s| s.parse().ok()) { cfg.frame_s = v; }
    let mut d = Detector::new(StreamKind::Acoustic, fs as u32, &cfg).expect("cfg");
    let mut out = Vec::with_capacity(1000);
    let t = std::time::Instant::now();
    for c in x.chunks(4800) { d.process(c, &mut out); }
    let el = t.elapsed().as_secs_f64();
    println!("frame {} : {:.3} s for 600 s -> {:.0}x realtime, picks {} stats {:?}", d.frame_len(), el, 600.0 / el, out.len(), d.stats());
}
