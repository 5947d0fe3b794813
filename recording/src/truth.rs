//! Evaluation against a manifest's `truth`, in one place: [`evaluate`]
//! (and [`evaluate_timed`]) matches events to true sources one to one (replay's summary, the release
//! evaluation), [`Judge`] decides whether an event stands for a source within
//! a tolerance of its reported uncertainty (the end-to-end and engine tests).
//! Read only by evaluation and tests — never by the node or the aggregator.

use blastnet_contract::{Enu, EnuFrame, Event, Manifest, TruthSource};

/// One true source and the event matched to it, if any.
#[derive(Debug, Clone)]
pub struct Match {
    /// Index into the truth list.
    pub truth: usize,
    /// Index into the event list.
    pub event: Option<usize>,
    /// Horizontal error, m.
    pub horizontal_m: f64,
    /// 3-D error, m.
    pub error_3d_m: f64,
    /// Origin-time error, s.
    pub origin_s: f64,
    /// The horizontal error's Mahalanobis distance under the event's
    /// reported horizontal covariance (1: on the 1σ ellipse); NaN when
    /// unlocated or the covariance is singular.
    pub mahalanobis_h: f64,
    /// Another true blast within 5 m fired less than 2 s before this one:
    /// a later round of a burst.
    pub later_round: bool,
}

/// The comparison of a run's events with the truth.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// One per true blast (explosion, gunshot, launch).
    pub matches: Vec<Match>,
    /// Events matched to no true blast.
    pub ghosts: Vec<usize>,
    /// Events explained by a true non-blast source (a distractor that was located).
    pub distractor_events: Vec<usize>,
}

impl Evaluation {
    /// True blasts with an event.
    pub fn located(&self) -> usize {
        self.matches.iter().filter(|m| m.event.is_some()).count()
    }

    /// Median of `f` over located blasts.
    pub fn median(&self, f: impl Fn(&Match) -> f64) -> Option<f64> {
        let mut v: Vec<f64> = self
            .matches
            .iter()
            .filter(|m| m.event.is_some())
            .map(f)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    /// Share of located blasts with horizontal error within `m` metres, over all true blasts.
    pub fn share_within(&self, m: f64) -> f64 {
        if self.matches.is_empty() {
            return 0.0;
        }
        self.matches
            .iter()
            .filter(|x| x.event.is_some() && x.horizontal_m <= m)
            .count() as f64
            / self.matches.len() as f64
    }
}

/// Match events to true sources: greedily by 3-D distance, among pairs whose
/// origin times differ by at most `window_s`.
pub fn evaluate(manifest: &Manifest, events: &[Event], window_s: f64) -> Evaluation {
    evaluate_timed(manifest, events, window_s, 0.0)
}

/// [`evaluate`] with the pair cost 3-D distance + `time_weight_mps` × |origin
/// time difference|: the rounds of a burst fired from one place lie at the
/// same distance from each event, and only their times tell which event is
/// which (a sound speed, ~340 m/s, weighs a time error as the range error
/// it would cause).
pub fn evaluate_timed(
    manifest: &Manifest,
    events: &[Event],
    window_s: f64,
    time_weight_mps: f64,
) -> Evaluation {
    let truth: &[TruthSource] = manifest.truth.as_deref().unwrap_or(&[]);
    let Some(first) = manifest.nodes.first() else {
        return Evaluation::default();
    };
    let frame = EnuFrame::new(first.position());
    let ev_pos: Vec<Enu> = events
        .iter()
        .map(|e| frame.to_enu(blastnet_contract::Geodetic::new(e.lat, e.lon, e.alt_m)))
        .collect();
    let tr_pos: Vec<Enu> = truth
        .iter()
        .map(|t| frame.to_enu(blastnet_contract::Geodetic::new(t.lat, t.lon, t.alt_m)))
        .collect();
    let mut pairs = Vec::new();
    for (ti, t) in truth.iter().enumerate() {
        for (ei, e) in events.iter().enumerate() {
            let dt = e.origin_utc.secs_since(t.time_utc);
            if dt.abs() <= window_s {
                let cost = tr_pos[ti].distance(ev_pos[ei]) + time_weight_mps * dt.abs();
                pairs.push((cost, ti, ei));
            }
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut t_used = vec![None; truth.len()];
    let mut e_used = vec![false; events.len()];
    for (_, ti, ei) in pairs {
        if t_used[ti].is_none() && !e_used[ei] {
            t_used[ti] = Some(ei);
            e_used[ei] = true;
        }
    }
    let later_round = |ti: usize| {
        truth.iter().enumerate().any(|(j, u)| {
            let dt = truth[ti].time_utc.secs_since(u.time_utc);
            j != ti
                && u.kind.is_blast()
                && dt > 0.0
                && dt < 2.0
                && tr_pos[j].distance(tr_pos[ti]) < 5.0
        })
    };
    let mut out = Evaluation::default();
    for (ti, t) in truth.iter().enumerate() {
        // `unknown` truth is a non-impulsive distractor (traffic): an event
        // on it is a distractor event, its absence no miss.
        let is_blast = t.kind.is_blast();
        match (is_blast, t_used[ti]) {
            (true, Some(ei)) => out.matches.push(Match {
                truth: ti,
                event: Some(ei),
                horizontal_m: tr_pos[ti].horizontal_distance(ev_pos[ei]),
                error_3d_m: tr_pos[ti].distance(ev_pos[ei]),
                origin_s: events[ei].origin_utc.secs_since(t.time_utc),
                mahalanobis_h: mahalanobis_h(&events[ei], tr_pos[ti], ev_pos[ei]),
                later_round: later_round(ti),
            }),
            (true, None) => out.matches.push(Match {
                truth: ti,
                event: None,
                horizontal_m: f64::NAN,
                error_3d_m: f64::NAN,
                origin_s: f64::NAN,
                mahalanobis_h: f64::NAN,
                later_round: later_round(ti),
            }),
            (false, Some(ei)) => out.distractor_events.push(ei),
            (false, None) => {}
        }
    }
    out.ghosts = (0..events.len())
        .filter(|&ei| !t_used.contains(&Some(ei)))
        .collect();
    out
}

/// √(dᵀ C⁻¹ d) for the horizontal error d under the event's EN covariance.
fn mahalanobis_h(e: &Event, truth: Enu, at: Enu) -> f64 {
    let c = &e.uncertainty.covariance_enu;
    let (a, b, d) = (c[0][0], c[0][1], c[1][1]);
    let det = a * d - b * b;
    if !(det.is_finite() && det > 0.0) {
        return f64::NAN;
    }
    let (x, y) = (at.e - truth.e, at.n - truth.n);
    ((d * x * x - 2.0 * b * x * y + a * y * y) / det).sqrt()
}

/// The ENU frame truth and events are compared in: the first node's position.
pub fn frame(manifest: &Manifest) -> Option<EnuFrame> {
    manifest.nodes.first().map(|n| EnuFrame::new(n.position()))
}

/// What an event may be off by horizontally and still count: `k` sigma, sigma
/// being the larger of its reported 1-sigma horizontal uncertainty and its
/// Cramér–Rao bound, combined with the recording's GPS position error.
pub fn tolerance_m(e: &Event, k: f64, gps_sigma_m: f64) -> f64 {
    let crlb = e.crlb.as_ref().map_or(0.0, |c| c.horizontal_m);
    let sigma = e.uncertainty.horizontal_m.max(crlb);
    k * (sigma * sigma + gps_sigma_m * gps_sigma_m).sqrt()
}

/// Horizontal distance between a true source and an event, m.
pub fn horizontal_error_m(frame: &EnuFrame, t: &TruthSource, e: &Event) -> f64 {
    let tp = frame.to_enu(blastnet_contract::Geodetic::new(t.lat, t.lon, t.alt_m));
    let ep = frame.to_enu(blastnet_contract::Geodetic::new(e.lat, e.lon, e.alt_m));
    tp.horizontal_distance(ep)
}

/// A tolerance judge: an event stands for a true source when their times
/// differ by less than `window_s` and it lies within [`tolerance_m`] of it.
#[derive(Debug, Clone, Copy)]
pub struct Judge {
    /// The comparison frame ([`frame`]).
    pub frame: EnuFrame,
    /// Origin-time window, s.
    pub window_s: f64,
    /// Sigmas of tolerance.
    pub k: f64,
    /// The recording's GPS position error (1-sigma horizontal), m.
    pub gps_sigma_m: f64,
}

impl Judge {
    /// Whether `e` stands for `t`.
    pub fn matches(&self, t: &TruthSource, e: &Event) -> bool {
        e.origin_utc.secs_since(t.time_utc).abs() < self.window_s
            && horizontal_error_m(&self.frame, t, e) <= tolerance_m(e, self.k, self.gps_sigma_m)
    }

    /// The horizontal error of the event nearest to `t` among those within
    /// the time window, with that event's tolerance; `None` when none is.
    pub fn nearest(&self, t: &TruthSource, events: &[Event]) -> Option<(f64, f64)> {
        events
            .iter()
            .filter(|e| e.origin_utc.secs_since(t.time_utc).abs() < self.window_s)
            .map(|e| {
                (
                    horizontal_error_m(&self.frame, t, e),
                    tolerance_m(e, self.k, self.gps_sigma_m),
                )
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }
}
