//! Recording reader: formats, scaling, channels, consecutive files, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use blastnet_contract::{StreamKind, UtcNs};
use blastnet_recording::{Chunk, RecordingError, Scenario, StreamReader};

fn write_int(path: &Path, bits: u16, channels: u16, rate: u32, frames: &[Vec<i32>]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for f in frames {
        for &s in f {
            match bits {
                8 => w.write_sample(s as i8).unwrap(),
                16 => w.write_sample(s as i16).unwrap(),
                _ => w.write_sample(s).unwrap(),
            }
        }
    }
    w.finalize().unwrap();
}

fn write_f32(path: &Path, rate: u32, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

fn manifest(streams: &str) -> String {
    format!(
        r#"{{ "format": "blastnet-recording/1", "name": "t",
  "nodes": [ {{ "id": "n01", "lat": 10.0, "lon": 20.0, "alt_m": 5.0, "streams": [ {streams} ] }} ] }}"#
    )
}

/// Write `manifest` into `dir` and open node n01's acoustic stream.
fn acoustic(dir: &Path, manifest: &str) -> StreamReader {
    std::fs::write(dir.join("manifest.json"), manifest).unwrap();
    Scenario::open(dir)
        .unwrap()
        .open_stream("n01", StreamKind::Acoustic)
        .unwrap()
        .unwrap()
}

fn read_all(mut r: StreamReader, block: usize) -> (Vec<f32>, Vec<Chunk>) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunks = Vec::new();
    loop {
        let c = r.next_chunk(&mut buf, block).unwrap();
        if c == Chunk::End {
            break;
        }
        out.extend_from_slice(&buf);
        chunks.push(c);
    }
    (out, chunks)
}

#[test]
fn every_integer_depth_is_scaled_to_full_scale_times_sensitivity() {
    let dir = tempfile::tempdir().unwrap();
    for bits in [8u16, 16, 24, 32] {
        let fs = 1i64 << (bits - 1);
        let half = (fs / 2) as i32;
        let frames = vec![vec![half], vec![-half], vec![0]];
        let name = format!("i{bits}.wav");
        write_int(&dir.path().join(&name), bits, 1, 8000, &frames);
        let m = manifest(&format!(
            r#"{{ "file": "{name}", "kind": "acoustic", "start_utc": "2022-01-01T00:00:00Z", "sensitivity": 200.0 }}"#
        ));
        std::fs::write(dir.path().join("manifest.json"), m).unwrap();
        let sc = Scenario::open(dir.path()).unwrap();
        let r = sc
            .open_stream("n01", StreamKind::Acoustic)
            .unwrap()
            .unwrap();
        let (v, _) = read_all(r, 2);
        assert_eq!(v.len(), 3, "{bits}-bit");
        assert!((v[0] - 100.0).abs() < 1e-3, "{bits}-bit: {v:?}");
        assert!((v[1] + 100.0).abs() < 1e-3, "{bits}-bit: {v:?}");
        assert_eq!(v[2], 0.0);
    }
}

#[test]
fn float_wav_and_channel_selection_of_a_multichannel_file() {
    let dir = tempfile::tempdir().unwrap();
    write_f32(&dir.path().join("f.wav"), 1000, &[0.25, -0.5]);
    let frames: Vec<Vec<i32>> = (0..10).map(|i| vec![i, 100 + i, 200 + i]).collect();
    write_int(&dir.path().join("m.wav"), 16, 3, 1000, &frames);
    let m = manifest(
        r#"{ "file": "f.wav", "kind": "acoustic", "start_utc": "2022-01-01T00:00:00Z", "sensitivity": 2.0 },
           { "file": "m.wav", "channel": 2, "kind": "seismic", "start_utc": "2022-01-01T00:00:00Z", "sensitivity": 32768.0 }"#,
    );
    let (a, _) = read_all(acoustic(dir.path(), &m), 64);
    assert_eq!(a, vec![0.5, -1.0]);
    let sc = Scenario::open(dir.path()).unwrap();
    let (s, _) = read_all(
        sc.open_stream("n01", StreamKind::Seismic).unwrap().unwrap(),
        3,
    );
    assert_eq!(s, (200..210).map(|v| v as f32).collect::<Vec<_>>());
}

#[test]
fn consecutive_files_continue_one_segment_and_a_gap_is_reported_not_bridged() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 100;
    let ones: Vec<Vec<i32>> = (0..100).map(|_| vec![1]).collect();
    write_int(&dir.path().join("a.wav"), 16, 1, rate, &ones);
    write_int(&dir.path().join("b.wav"), 16, 1, rate, &ones);
    write_int(&dir.path().join("c.wav"), 16, 1, rate, &ones);
    // a: 00:00:00-00:00:01, b: exactly after (continuous), c: 0.5 s gap.
    let m = manifest(
        r#"{ "file": "c.wav", "kind": "acoustic", "start_utc": "2022-01-01T00:00:02.5Z" },
           { "file": "a.wav", "kind": "acoustic", "start_utc": "2022-01-01T00:00:00Z" },
           { "file": "b.wav", "kind": "acoustic", "start_utc": "2022-01-01T00:00:01Z" }"#,
    );
    let (v, chunks) = read_all(acoustic(dir.path(), &m), 64);
    assert_eq!(v.len(), 300);
    let gaps: Vec<_> = chunks
        .iter()
        .filter_map(|c| match c {
            Chunk::Discontinuity { gap_ns, file_index } => Some((*file_index, *gap_ns)),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, vec![(2, 500_000_000)]);
    // The block after b's start continues a's segment; the block after the gap starts c's.
    let t0 = UtcNs::parse("2022-01-01T00:00:00Z").unwrap();
    let last = chunks.last().unwrap();
    match *last {
        Chunk::Samples {
            segment_start,
            first_index,
            len,
        } => {
            assert_eq!(
                segment_start,
                UtcNs::parse("2022-01-01T00:00:02.5Z").unwrap()
            );
            assert_eq!(first_index + len as u64, 100);
        }
        _ => panic!("expected samples"),
    }
    let before_gap = chunks
        .iter()
        .take_while(|c| !matches!(c, Chunk::Discontinuity { .. }))
        .last()
        .unwrap();
    match *before_gap {
        Chunk::Samples {
            segment_start,
            first_index,
            len,
        } => {
            assert_eq!(segment_start, t0);
            assert_eq!(first_index + len as u64, 200);
        }
        _ => panic!("expected samples"),
    }
}

#[test]
fn block_size_does_not_change_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    let frames: Vec<Vec<i32>> = (0..1000).map(|i| vec![(i * 37 % 2000) - 1000]).collect();
    write_int(&dir.path().join("x.wav"), 24, 1, 48_000, &frames);
    let sc = Scenario::open(&dir.path().join("x.wav")).unwrap();
    let id = sc.manifest.nodes[0].id.clone();
    let (a, _) = read_all(
        sc.open_stream(&id, StreamKind::Acoustic).unwrap().unwrap(),
        1,
    );
    let (b, _) = read_all(
        sc.open_stream(&id, StreamKind::Acoustic).unwrap().unwrap(),
        4096,
    );
    assert_eq!(a, b);
    assert_eq!(a.len(), 1000);
}

#[test]
fn bare_wav_becomes_a_one_node_scenario_with_the_given_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("night.wav");
    write_f32(&p, 12_000, &[0.0; 120]);
    let start = UtcNs::parse("2018-12-19T02:26:57Z").unwrap();
    let sc = Scenario::from_bare_wav(
        &p,
        &blastnet_recording::BareWavOptions {
            start_utc: Some(start),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(sc.manifest.nodes.len(), 1);
    assert_eq!(sc.manifest.nodes[0].id, "night");
    let r = sc
        .open_stream("night", StreamKind::Acoustic)
        .unwrap()
        .unwrap();
    assert_eq!(r.start_utc(), start);
    assert_eq!(r.sample_rate(), 12_000);
}

fn err_text(e: RecordingError) -> String {
    e.to_string()
}

#[test]
fn truncated_wav_names_the_file_and_byte_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.wav");
    write_int(
        &p,
        16,
        1,
        8000,
        &(0..1000).map(|i| vec![i]).collect::<Vec<_>>(),
    );
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..1000]).unwrap();
    let e = err_text(Scenario::open(&p).unwrap_err());
    assert!(e.contains("cut.wav"), "{e}");
    assert!(
        e.contains("truncated") && e.contains("byte 36") && e.contains("file ends at byte 1000"),
        "{e}"
    );
}

#[test]
fn a_file_that_is_not_wav_says_what_was_expected_at_byte_zero() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.wav");
    std::fs::write(&p, b"ID3\x04 this is an mp3, honestly").unwrap();
    let e = err_text(Scenario::open(&p).unwrap_err());
    assert!(
        e.contains("notes.wav") && e.contains("expected \"RIFF\" at byte 0"),
        "{e}"
    );
}

#[test]
fn missing_stream_file_and_channel_out_of_range_name_the_manifest_field() {
    let dir = tempfile::tempdir().unwrap();
    write_int(&dir.path().join("one.wav"), 16, 1, 8000, &[vec![0]]);
    let m = manifest(
        r#"{ "file": "gone.wav", "kind": "acoustic", "start_utc": "2022-01-01T00:00:00Z" }"#,
    );
    std::fs::write(dir.path().join("manifest.json"), m).unwrap();
    let e = err_text(Scenario::open(dir.path()).unwrap_err());
    assert!(
        e.contains("manifest.json")
            && e.contains("nodes[0].streams[0].file")
            && e.contains("gone.wav"),
        "{e}"
    );

    let m = manifest(
        r#"{ "file": "one.wav", "channel": 3, "kind": "acoustic", "start_utc": "2022-01-01T00:00:00Z" }"#,
    );
    std::fs::write(dir.path().join("manifest.json"), m).unwrap();
    let e = err_text(Scenario::open(dir.path()).unwrap_err());
    assert!(
        e.contains("nodes[0].streams[0].channel") && e.contains("1 channel"),
        "{e}"
    );
}

#[test]
fn a_path_that_does_not_exist_is_named() {
    let e = err_text(Scenario::open(Path::new("/no/such/dir")).unwrap_err());
    assert!(e.contains("/no/such/dir"), "{e}");
}

#[test]
#[ignore = "needs the real recordings in ../shared/data (BLASTNET_DATA)"]
fn shotspotter_clip_reads_as_12khz_ten_seconds() {
    let dir = blastnet_recording::require_data("shotspotter-pittsburgh-dev/data/FP3/test_053");
    let wav = dir.join("test_053.audio.SCP-00-BNG-5545.wav");
    let layout = blastnet_recording::WavLayout::read(&wav).unwrap();
    assert_eq!(
        (layout.sample_rate, layout.channels, layout.bits_per_sample),
        (12_000, 1, 16)
    );
    assert_eq!(layout.frames, 120_000);
}

/// The reader decodes the data chunk in blocks, not through hound's
/// per-sample reads (issue #18): every depth and channel must still give
/// exactly the values hound gives, extremes included.
#[test]
fn block_decoding_gives_exactly_what_hound_reads_for_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 32) as u32
    };
    for (bits, channels) in [(8u16, 3usize), (16, 3), (16, 1), (24, 3), (32, 3), (32, 1)] {
        let (lo, hi) = (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1);
        let span = (hi - lo + 1) as u64;
        let frames: Vec<Vec<i32>> = (0..5000)
            .map(|i| {
                (0..channels)
                    .map(|c| match (i + c) % 50 {
                        0 => lo as i32,
                        1 => hi as i32,
                        2 => -1,
                        _ => (lo + (u64::from(next()) % span) as i64) as i32,
                    })
                    .collect()
            })
            .collect();
        let name = format!("c{bits}-{channels}.wav");
        let path = dir.path().join(&name);
        write_int(&path, bits, channels as u16, 8000, &frames);
        let sens = 3.7;
        let ch = channels - 1;
        let m = manifest(&format!(
            r#"{{ "file": "{name}", "channel": {ch}, "kind": "acoustic", "start_utc": "2022-01-01T00:00:00Z", "sensitivity": {sens} }}"#
        ));
        let (got, _) = read_all(acoustic(dir.path(), &m), 777);
        let scale = (sens / (1u64 << (bits - 1)) as f64) as f32;
        let want: Vec<f32> = hound::WavReader::open(&path)
            .unwrap()
            .samples::<i32>()
            .skip(ch)
            .step_by(channels)
            .map(|v| v.unwrap() as f32 * scale)
            .collect();
        assert_eq!(got.len(), 5000, "{bits}-bit");
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{bits}-bit: block decoding differs from hound"
        );
    }
    let samples: Vec<f32> = (0..3000)
        .map(|_| f32::from_bits(next() & 0x807f_ffff | 0x3f00_0000))
        .collect();
    write_f32(&dir.path().join("f.wav"), 8000, &samples);
    let m = manifest(
        r#"{ "file": "f.wav", "kind": "acoustic", "start_utc": "2022-01-01T00:00:00Z", "sensitivity": 0.3 }"#,
    );
    let (got, _) = read_all(acoustic(dir.path(), &m), 1000);
    let want: Vec<f32> = samples.iter().map(|v| v * 0.3f64 as f32).collect();
    assert!(got
        .iter()
        .zip(&want)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(got.len(), 3000);
}

/// Replay decodes ahead on a thread (`StreamReader::prefetch`), in batches
/// it cuts into blocks: the chunks, samples and positions must be those of
/// reading block by block, across continuous files, a gap and the end.
#[test]
fn prefetching_gives_the_same_chunks_as_reading_block_by_block() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 100;
    for (name, n) in [("a.wav", 130), ("b.wav", 77), ("c.wav", 200)] {
        let frames: Vec<Vec<i32>> = (0..n).map(|i| vec![i * 7 - 300]).collect();
        write_int(&dir.path().join(name), 16, 1, rate, &frames);
    }
    let m = manifest(
        r#"{ "file": "a.wav", "kind": "acoustic", "start_utc": "2022-01-01T00:00:00Z" },
           { "file": "b.wav", "kind": "acoustic", "start_utc": "2022-01-01T00:00:01.3Z" },
           { "file": "c.wav", "kind": "acoustic", "start_utc": "2022-01-01T00:00:05Z" }"#,
    );
    std::fs::write(dir.path().join("manifest.json"), m).unwrap();
    let sc = Scenario::open(dir.path()).unwrap();
    let open = || {
        sc.open_stream("n01", StreamKind::Acoustic)
            .unwrap()
            .unwrap()
    };
    for (block, batch) in [(16, 3), (64, 1), (7, 50)] {
        let mut direct = open();
        let mut ahead = open().prefetch(block, batch, 2, "test-prefetch").unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut chunks = 0;
        loop {
            let ca = direct.next_chunk(&mut a, block).unwrap();
            let cb = ahead.next_chunk(&mut b).unwrap();
            assert_eq!(ca, cb, "block {block}, batch {batch}, chunk {chunks}");
            assert_eq!(a, b, "block {block}, batch {batch}, chunk {chunks}");
            chunks += 1;
            if ca == Chunk::End {
                break;
            }
        }
        assert!(chunks > 407 / block, "{chunks} chunks");
        // After the end, the end again.
        assert_eq!(ahead.next_chunk(&mut b).unwrap(), Chunk::End);
    }
}
