//! `GET /api/events/{id}/waveforms`: the evidence behind one event, every
//! arrival's snippet (the waveform the node published around its pick)
//! with the pick, the arrival time the location predicts, the distance and
//! the residual, nearest node first; arrivals whose snippet never came are
//! listed in `missing`.
//!
//! `predicted_utc`: for an acoustic arrival, origin + distance / the
//! event's `sound_speed_mps` (straight ray, the event's effective speed:
//! what the drawer aligns the traces on); for a seismic arrival, the
//! engine's own prediction, `onset_utc - residual_s` (its seismic phase
//! speed and any station term are inside the residual). An acoustic
//! arrival whose node position is unknown falls back to the latter too.

use blastnet_contract::{ArrivalRef, Event, Geodetic, StreamKind, UtcNs};
use serde::Serialize;

use crate::pipeline::NodeView;
use crate::store::{Store, StoreError};

/// The waveforms of one event (the endpoint's JSON).
#[derive(Debug, Clone, Serialize)]
pub struct EventWaveforms {
    /// The event.
    pub event_id: String,
    /// Its origin time.
    pub origin_utc: UtcNs,
    /// Source latitude.
    pub lat: f64,
    /// Source longitude.
    pub lon: f64,
    /// Source altitude, m.
    pub alt_m: f64,
    /// Effective sound speed of the event, m/s.
    pub sound_speed_mps: f64,
    /// One per arrival with a snippet, nearest first.
    pub waveforms: Vec<Waveform>,
    /// Arrivals without a snippet, nearest first.
    pub missing: Vec<Missing>,
}

/// One arrival's snippet.
#[derive(Debug, Clone, Serialize)]
pub struct Waveform {
    /// Node.
    pub node_id: String,
    /// The detection's seq.
    pub seq: u64,
    /// Which sensor.
    pub stream: StreamKind,
    /// UTC of `samples[0]`.
    pub start_utc: UtcNs,
    /// Samples per second.
    pub sample_rate_hz: u32,
    /// Physical units per count.
    pub scale: f64,
    /// `Pa` (acoustic) or `m/s` (seismic).
    pub units: &'static str,
    /// The pick.
    pub onset_utc: UtcNs,
    /// When the location says it should have arrived (see the module docs).
    pub predicted_utc: UtcNs,
    /// Source to node, m (straight line, 3-D); `null` if the node's
    /// position is unknown.
    pub distance_m: Option<f64>,
    /// Observed minus predicted, s (the engine's).
    pub residual_s: f64,
    /// The engine rejected this arrival (`event.outliers`).
    pub outlier: bool,
    /// The samples, counts (× `scale` for physical units).
    pub samples: Vec<i16>,
}

/// An arrival without a snippet.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    /// Node.
    pub node_id: String,
    /// The detection's seq.
    pub seq: u64,
    /// Why: `no snippet received`, or why the kept one is unreadable.
    pub reason: String,
    /// Which sensor.
    pub stream: StreamKind,
    /// The pick.
    pub onset_utc: UtcNs,
    /// Source to node, m, if known.
    pub distance_m: Option<f64>,
    /// The engine rejected this arrival.
    pub outlier: bool,
}

fn units(stream: StreamKind) -> &'static str {
    match stream {
        StreamKind::Acoustic => "Pa",
        StreamKind::Seismic => "m/s",
    }
}

/// The waveforms of event `event_id`; `None` if there is no such event.
/// Node positions come from the stored detections, else from `nodes`.
pub fn event_waveforms(
    store: &Store,
    event_id: &str,
    nodes: &[NodeView],
) -> Result<Option<EventWaveforms>, StoreError> {
    let Some(rec) = store.event(event_id)? else {
        return Ok(None);
    };
    let ev: &Event = &rec.event;
    let source = Geodetic::new(ev.lat, ev.lon, ev.alt_m);
    let position = |a: &ArrivalRef| -> Option<Geodetic> {
        rec.detections
            .iter()
            .find(|d| d.node_id == a.node_id && d.seq == a.seq)
            .map(|d| Geodetic::new(d.lat, d.lon, d.alt_m))
            .or_else(|| {
                nodes
                    .iter()
                    .find(|n| n.node_id == a.node_id)
                    .map(|n| Geodetic::new(n.lat, n.lon, n.alt_m))
            })
    };
    let mut waveforms = Vec::new();
    let mut missing = Vec::new();
    let arrivals = ev
        .detections
        .iter()
        .map(|a| (a, false))
        .chain(ev.outliers.iter().map(|a| (a, true)));
    for (a, outlier) in arrivals {
        let distance_m = position(a).map(|p| source.distance(p));
        let gone = |reason: String| Missing {
            node_id: a.node_id.clone(),
            seq: a.seq,
            reason,
            stream: a.stream,
            onset_utc: a.onset_utc,
            distance_m,
            outlier,
        };
        let Some(s) = store.snippet(&a.node_id, a.seq)? else {
            missing.push(gone("no snippet received".to_string()));
            continue;
        };
        let samples = match s.check() {
            Ok(x) => x,
            Err(e) => {
                missing.push(gone(format!("kept snippet unreadable: {e}")));
                continue;
            }
        };
        let engine_prediction = a.onset_utc.add_secs_f64(-a.residual_s);
        let predicted_utc = match (a.stream, distance_m) {
            (StreamKind::Acoustic, Some(d)) if ev.sound_speed_mps > 0.0 => {
                ev.origin_utc.add_secs_f64(d / ev.sound_speed_mps)
            }
            _ => engine_prediction,
        };
        waveforms.push(Waveform {
            node_id: a.node_id.clone(),
            seq: a.seq,
            stream: s.stream,
            start_utc: s.start_utc,
            sample_rate_hz: s.sample_rate_hz,
            scale: s.scale,
            units: units(s.stream),
            onset_utc: a.onset_utc,
            predicted_utc,
            distance_m,
            residual_s: a.residual_s,
            outlier,
            samples,
        });
    }
    let key = |d: Option<f64>, node: &str, seq: u64| {
        (d.is_none(), d.unwrap_or(0.0), node.to_string(), seq)
    };
    waveforms.sort_by(|a, b| {
        key(a.distance_m, &a.node_id, a.seq)
            .partial_cmp(&key(b.distance_m, &b.node_id, b.seq))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    missing.sort_by(|a, b| {
        key(a.distance_m, &a.node_id, a.seq)
            .partial_cmp(&key(b.distance_m, &b.node_id, b.seq))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(Some(EventWaveforms {
        event_id: ev.event_id.clone(),
        origin_utc: ev.origin_utc,
        lat: ev.lat,
        lon: ev.lon,
        alt_m: ev.alt_m,
        sound_speed_mps: ev.sound_speed_mps,
        waveforms,
        missing,
    }))
}
