//! The snippet extension (`blastnet.snippet/1`): JSON round trip with the
//! documented field names, 16-bit quantisation within half a count, the
//! payload cap, and refusals that name the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use blastnet_contract::wire::{SNIPPET_MAX_DATA_CHARS, SNIPPET_MAX_PAYLOAD_BYTES};
use blastnet_contract::{Snippet, StreamKind, UtcNs};

fn start() -> UtcNs {
    UtcNs::parse("2022-03-01T01:30:12.123456789Z").unwrap()
}

/// 1.5 s at 8 kHz: a 60 Hz tone of 0.2 Pa and a 40 Pa pulse at 0.5 s.
fn signal() -> Vec<f64> {
    (0..12_000)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let pulse = if (4000..4040).contains(&i) { 40.0 } else { 0.0 };
            0.2 * (2.0 * std::f64::consts::PI * 60.0 * t).sin() + pulse
        })
        .collect()
}

#[test]
fn a_snippet_round_trips_through_json_within_half_a_count() {
    let x = signal();
    let s = Snippet::encode("n01", 17, StreamKind::Acoustic, start(), 8000, &x);
    let text = serde_json::to_string(&s).unwrap();
    assert!(
        text.len() <= SNIPPET_MAX_PAYLOAD_BYTES,
        "{} bytes",
        text.len()
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema"], "blastnet.snippet/1");
    assert_eq!(v["node_id"], "n01");
    assert_eq!(v["seq"], 17);
    assert_eq!(v["stream"], "acoustic");
    assert_eq!(v["start_utc"], "2022-03-01T01:30:12.123456789Z");
    assert_eq!(v["sample_rate_hz"], 8000);
    assert_eq!(v["encoding"], "pcm_s16le");
    assert!(v["scale"].is_f64());
    assert!(v["data"].is_string());
    let back: Snippet = serde_json::from_str(&text).unwrap();
    // serde_json parses floats to within an ulp (no `float_roundtrip`).
    assert!((back.scale - s.scale).abs() <= 4.0 * f64::EPSILON * s.scale);
    assert!(back.data == s.data, "data changed");
    assert_eq!(
        (
            &back.node_id,
            back.seq,
            back.stream,
            back.start_utc,
            back.sample_rate_hz
        ),
        (&s.node_id, s.seq, s.stream, s.start_utc, s.sample_rate_hz)
    );
    let counts = back.check().unwrap();
    assert_eq!(counts.len(), x.len());
    // The largest |sample| maps to full scale; every sample within half a count.
    assert!((back.scale - 40.2 / 32767.0).abs() < 0.01 / 32767.0 + 1e-12);
    for (c, want) in counts.iter().zip(&x) {
        let got = f64::from(*c) * back.scale;
        assert!(
            (got - want).abs() <= back.scale / 2.0 + 1e-12,
            "{got} vs {want}"
        );
    }
    assert_eq!(
        back.time_of(8000),
        UtcNs::parse("2022-03-01T01:30:13.123456789Z").unwrap()
    );
}

#[test]
fn a_snippet_too_long_for_the_cap_is_cut_to_fit() {
    let x = vec![1.0; 100_000];
    let s = Snippet::encode("n01", 1, StreamKind::Seismic, start(), 48_000, &x);
    let text = serde_json::to_string(&s).unwrap();
    assert!(text.len() <= SNIPPET_MAX_PAYLOAD_BYTES);
    assert!(s.data.len() <= SNIPPET_MAX_DATA_CHARS);
    let n = s.check().unwrap().len();
    assert!(n > 20_000 && n < x.len(), "{n} samples kept");
}

#[test]
fn silence_encodes_with_a_positive_scale() {
    let s = Snippet::encode("n01", 1, StreamKind::Acoustic, start(), 8000, &[0.0; 100]);
    assert_eq!(s.scale, 1.0);
    assert!(s.check().unwrap().iter().all(|c| *c == 0));
}

fn refused(s: &Snippet) -> (String, String) {
    let e = s.check().expect_err("must be refused");
    (e.field.to_string(), e.to_string())
}

#[test]
fn bad_snippets_are_refused_naming_the_field() {
    let good = Snippet::encode("n01", 3, StreamKind::Acoustic, start(), 8000, &signal());
    assert!(good.check().is_ok());

    let s = Snippet {
        data: "not base64 !!".into(),
        ..good.clone()
    };
    let (field, msg) = refused(&s);
    assert_eq!(field, "data");
    assert!(msg.contains("base64"), "{msg}");

    let s = Snippet {
        data: "AAE=".into(), // 2 bytes decode fine; 3 bytes do not make whole samples
        ..good.clone()
    };
    assert!(s.check().is_ok());
    let s = Snippet {
        data: "AAEC".into(),
        ..good.clone()
    };
    assert_eq!(refused(&s).0, "data");

    let s = Snippet {
        sample_rate_hz: 0,
        ..good.clone()
    };
    let (field, msg) = refused(&s);
    assert_eq!(field, "sample_rate_hz");
    assert!(msg.contains("got 0"), "{msg}");

    let s = Snippet {
        data: "A".repeat(SNIPPET_MAX_DATA_CHARS + 4),
        ..good.clone()
    };
    let (field, msg) = refused(&s);
    assert_eq!(field, "data");
    assert!(msg.contains("at most"), "{msg}");

    let s = Snippet {
        schema: "blastnet.snippet/2".into(),
        ..good.clone()
    };
    let (field, msg) = refused(&s);
    assert_eq!(field, "schema");
    assert!(msg.contains("blastnet.snippet/1"), "{msg}");

    let s = Snippet {
        encoding: "flac".into(),
        ..good.clone()
    };
    assert_eq!(refused(&s).0, "encoding");

    for scale in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let s = Snippet {
            scale,
            ..good.clone()
        };
        assert_eq!(refused(&s).0, "scale");
    }
}
