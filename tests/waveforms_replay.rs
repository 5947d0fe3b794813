//! Waveform evidence end to end: `blastnet replay --serve` of the shipped
//! single blast (node runtimes taking snippets from the WAVs, a real
//! broker, the aggregator's store) and `GET /api/events/{id}/waveforms`:
//! one waveform per arrival, each holding its pick, nearest node first,
//! the acoustic predictions at origin + distance / sound speed, and the
//! blast's peak just after each acoustic pick.
//!
//! Tolerances from physics: the snippet keeps every 6th sample (48 kHz to
//! 8 kHz) of a zero-phase low-pass, so a peak is placed within a couple of
//! output samples; a pick lies within 3 sigma of the true onset
//! (`onset_uncertainty_s`); the positive phase of a blast up to a tonne of
//! TNT lasts under 50 ms at these ranges (cube-root scaling, Kinney and
//! Graham), so the largest pressure comes within 50 ms after the onset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use blastnet_aggregator::testkit::http_get;
use blastnet_contract::{Detection, Event, Geodetic, UtcNs};
use serde_json::Value;

fn utc(v: &Value) -> UtcNs {
    UtcNs::parse(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
}

#[test]
fn every_arrival_of_a_replayed_blast_has_its_waveform_with_the_pick_inside() {
    let work = common::shipped("single-blast");
    let out = work.path().join("events.jsonl");
    let common::Serving {
        mut child,
        addr,
        mut log,
        rx,
        reader,
    } = common::replay_serve(
        work.path(),
        &["--events-out".as_ref(), out.as_os_str()],
        Duration::from_secs(120),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = |path: &str| rt.block_on(http_get(addr, path)).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (status, body) = get("/api/events");
        assert_eq!(status, 200, "{body}");
        let events: Vec<Event> = serde_json::from_str(&body).unwrap();
        assert!(!events.is_empty(), "no events located");

        let (status, body) = get("/api/events/no-such-event/waveforms");
        assert_eq!(status, 404, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("no-such-event"),
            "{v}"
        );

        let mut acoustic_checked = 0;
        for ev in &events {
            let (status, body) = get(&format!("/api/events/{}", ev.event_id));
            assert_eq!(status, 200, "{body}");
            let rec: Value = serde_json::from_str(&body).unwrap();
            let dets: Vec<Detection> = serde_json::from_value(rec["detections"].clone()).unwrap();
            let (status, body) = get(&format!("/api/events/{}/waveforms", ev.event_id));
            assert_eq!(status, 200, "{body}");
            let w: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(w["event_id"], ev.event_id.as_str());
            assert_eq!(utc(&w["origin_utc"]), ev.origin_utc);
            assert_eq!(w["sound_speed_mps"].as_f64().unwrap(), ev.sound_speed_mps);
            let waves = w["waveforms"].as_array().unwrap();
            let missing = w["missing"].as_array().unwrap();
            assert!(
                missing.is_empty(),
                "event {}: arrivals without a snippet: {missing:?}",
                ev.event_id
            );
            // One per arrival (detections and outliers), no other.
            let mut want: Vec<(String, u64, bool)> = ev
                .detections
                .iter()
                .map(|a| (a.node_id.clone(), a.seq, false))
                .chain(ev.outliers.iter().map(|a| (a.node_id.clone(), a.seq, true)))
                .collect();
            let mut got: Vec<(String, u64, bool)> = waves
                .iter()
                .map(|x| {
                    (
                        x["node_id"].as_str().unwrap().to_string(),
                        x["seq"].as_u64().unwrap(),
                        x["outlier"].as_bool().unwrap(),
                    )
                })
                .collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "event {}", ev.event_id);
            // Nearest first.
            let d: Vec<f64> = waves
                .iter()
                .map(|x| x["distance_m"].as_f64().unwrap())
                .collect();
            assert!(d.windows(2).all(|p| p[0] <= p[1]), "{d:?}");
            let source = Geodetic::new(ev.lat, ev.lon, ev.alt_m);
            for x in waves {
                let node = x["node_id"].as_str().unwrap();
                let seq = x["seq"].as_u64().unwrap();
                let det = dets
                    .iter()
                    .find(|d| d.node_id == node && d.seq == seq)
                    .unwrap_or_else(|| panic!("{node}/{seq} not among the event's detections"));
                let stream = x["stream"].as_str().unwrap();
                assert_eq!(stream, det.stream.as_str());
                assert_eq!(x["units"], if stream == "acoustic" { "Pa" } else { "m/s" });
                let rate = x["sample_rate_hz"].as_u64().unwrap();
                assert!((1..=8000).contains(&rate), "{node}/{seq}: {rate} Hz");
                let scale = x["scale"].as_f64().unwrap();
                assert!(
                    scale.is_finite() && scale > 0.0,
                    "{node}/{seq}: scale {scale}"
                );
                let samples: Vec<i64> = x["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_i64().unwrap())
                    .collect();
                let dt = 1.0 / rate as f64;
                // 1.5 s: 0.5 before the onset, 1.0 after.
                let n_want = 1.5 * rate as f64;
                assert!(
                    (samples.len() as f64 - n_want).abs() <= 2.0,
                    "{node}/{seq}: {} samples at {rate} Hz",
                    samples.len()
                );
                let start = utc(&x["start_utc"]);
                let onset = utc(&x["onset_utc"]);
                assert_eq!(onset, det.onset_utc);
                let end = start.add_secs_f64(samples.len() as f64 * dt);
                assert!(
                    start <= onset && onset < end,
                    "{node}/{seq}: pick {onset} outside {start}..{end}"
                );
                let residual = x["residual_s"].as_f64().unwrap();
                let predicted = utc(&x["predicted_utc"]);
                let dist = source.distance(Geodetic::new(det.lat, det.lon, det.alt_m));
                assert!((x["distance_m"].as_f64().unwrap() - dist).abs() < 1e-3);
                if stream == "acoustic" {
                    let want = ev.origin_utc.add_secs_f64(dist / ev.sound_speed_mps);
                    assert!(
                        predicted.secs_since(want).abs() < 1e-6,
                        "{node}/{seq}: predicted {predicted}, origin + d/c {want}"
                    );
                } else {
                    let want = onset.add_secs_f64(-residual);
                    assert!(predicted.secs_since(want).abs() < 1e-6);
                }
                if stream == "acoustic" && !x["outlier"].as_bool().unwrap() {
                    // The blast's peak: just after the pick.
                    let (i, _) = samples
                        .iter()
                        .enumerate()
                        .max_by_key(|(_, s)| s.unsigned_abs())
                        .unwrap();
                    let t = start.add_secs_f64(i as f64 * dt).secs_since(onset);
                    let early = 3.0 * det.onset_uncertainty_s + 2.0 * dt;
                    eprintln!(
                        "{}: {node}/{seq} at {:.0} m, peak {:+.4} s from the pick",
                        ev.event_id, dist, t
                    );
                    assert!(
                        t >= -early && t <= 0.050,
                        "{node}/{seq}: peak {t:+.4} s from the pick (allowed -{early:.4}..0.050)"
                    );
                    acoustic_checked += 1;
                }
            }
        }
        assert!(
            acoustic_checked >= 4,
            "{acoustic_checked} acoustic arrivals checked"
        );
    }));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reader.join().unwrap();
    log.extend(rx.try_iter());
    if let Err(e) = result {
        eprintln!("replay stderr:\n{}", log.join("\n"));
        std::panic::resume_unwind(e);
    }
}
