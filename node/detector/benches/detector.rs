//! Throughput of the acoustic detector: 48 kHz noise with a source every 5 s
//! (so the back end, picking and classification run too), and the seismic
//! STA/LTA path at 200 Hz.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use blastnet_contract::{SourceKind, StreamKind};
use blastnet_detector::{Detector, DetectorConfig};
use blastnet_simulator::scenes::{add_noise, render, Rng};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn signal(fs: usize, secs: usize) -> Vec<f32> {
    let mut rng = Rng::new(1);
    let mut x = vec![0f32; fs * secs];
    add_noise(&mut rng, 0.02, 0.5, &mut x);
    for (i, c) in x.chunks_mut(5 * fs).enumerate() {
        let peak = 0.02 * 10f64.powf(rng.range(15.0, 40.0) / 20.0);
        render(
            SourceKind::CLASSIFIED[i % 4],
            &mut rng,
            fs as f64,
            1.0,
            peak,
            c,
        );
    }
    x
}

fn bench(c: &mut Criterion) {
    let fs = 48_000;
    let x = signal(fs, 20);
    let mut g = c.benchmark_group("detector");
    g.throughput(Throughput::Elements(x.len() as u64));
    g.sample_size(20);
    g.bench_function("acoustic_48k_20s", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            let mut d =
                Detector::new(StreamKind::Acoustic, fs as u32, &DetectorConfig::default()).unwrap();
            out.clear();
            for blk in x.chunks(4800) {
                d.process(blk, &mut out);
            }
            d.flush(&mut out);
            out.len()
        })
    });
    let xs: Vec<f32> = signal(8_000, 20).iter().map(|v| v * 1e-5).collect();
    g.throughput(Throughput::Elements(xs.len() as u64));
    g.bench_function("seismic_8k_20s", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            let mut d =
                Detector::new(StreamKind::Seismic, 8_000, &DetectorConfig::default()).unwrap();
            out.clear();
            for blk in xs.chunks(800) {
                d.process(blk, &mut out);
            }
            d.flush(&mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
