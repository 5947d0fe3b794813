//! Events in words, for people: the one formatter behind the CLI's event
//! lines (`blastnet demo`, `blastnet replay --print-events`) and the live
//! map's labels (the server sends these strings; the page does not format
//! events itself), so that the two never tell different stories.
//!
//! The rules, each the answer to a line that once misled a reader:
//! arrivals and nodes are counted apart (`13 arrivals from 11 nodes`: a node
//! with a microphone and a geophone gives two arrivals); counts have the
//! right plural; only rejected picks are called outliers (a later arrival at
//! a node already used is an echo, a seismic pick at a node whose acoustic
//! pick is used is the same air wave felt through the ground: both are
//! expected and said so); yields have two or three significant figures in
//! g, kg or t (`< 1 g` below a gram) and never `e+` notation, and a launch
//! has none (a rocket motor is not a charge); the confidence says it is one;
//! times are to the millisecond (full precision stays in the JSON); a 2-D
//! fix (the event's `dims` is 2: the solver held the altitude at the
//! ground) says "altitude fixed" rather than quoting a vertical uncertainty
//! of 0, which would read as "altitude exact".

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::time::{UtcNs, NS_PER_S};
use crate::wire::{ArrivalRef, Event, EventStatus, SourceKind, StreamKind, YieldEstimate};

/// An event in words, in pieces for a page to lay out; [`EventText::line`]
/// is all of them on one line (what the CLI prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventText {
    /// Kind and confidence: `explosion, confidence 0.92`.
    pub headline: String,
    /// Revision and status: `rev 3, final`.
    pub revision: String,
    /// Origin time to the millisecond: `2022-03-01T01:30:01.002Z`.
    pub time: String,
    /// Position, its 1-sigma and the altitude:
    /// `50.44469, 30.53467 ±13.5 m (CRLB 2.6 m), altitude fixed at 195 m`.
    pub place: String,
    /// Arrivals, nodes and picks not used:
    /// `13 arrivals from 11 nodes; 1 outlier; 2 echoes and 6 air-coupled seismic picks not used`.
    pub picks: String,
    /// Yield (`yield 170 kg TNT (96–290 kg)`), or empty (none estimated, or a launch).
    pub yield_text: String,
    /// What to weigh before acting on it, from the event's `quality`
    /// (`thin support: 1 check beyond the unknowns; aliased: an equally good
    /// fit 130 m away`), or empty.
    pub caution: String,
    /// A short map label: kind, horizontal 1-sigma, the altitude of a 3-D
    /// fix, and a word on thin or aliased support (`explosion ±13.5 m`,
    /// `explosion ±40 m, alt 850 m, marginal`).
    pub label: String,
    /// Everything on one line, starting with `event <id>`.
    pub line: String,
}

/// `e` in words.
pub fn event_text(e: &Event) -> EventText {
    let headline = format!("{}, confidence {:.2}", e.kind.as_str(), e.confidence);
    let status = match e.status {
        EventStatus::Preliminary => "preliminary",
        EventStatus::Final => "final",
    };
    let revision = format!("rev {}, {status}", e.revision);
    let time = utc_ms(e.origin_utc);
    let place = place(e);
    let picks = picks(e);
    let yield_text = if e.kind == SourceKind::Launch {
        String::new()
    } else {
        e.yield_estimate
            .as_ref()
            .map(|y| format!("yield {}", yield_range(y)))
            .unwrap_or_default()
    };
    let caution = caution(e);
    let mut label = format!(
        "{} ±{}",
        e.kind.as_str(),
        length(e.uncertainty.horizontal_m)
    );
    if e.dims == 3 {
        // An airburst's altitude on the map (a 2-D fix is on the ground).
        let _ = write!(label, ", alt {:.0} m", e.alt_m);
    }
    if e.quality.as_ref().is_some_and(|q| q.aliased) {
        label.push_str(", aliased");
    } else if e.quality.as_ref().is_some_and(|q| q.marginal) {
        label.push_str(", marginal");
    }
    let mut line = format!(
        "event {} {revision} {time}: {headline}, at {place}; {picks}",
        e.event_id
    );
    if !yield_text.is_empty() {
        let _ = write!(line, "; {yield_text}");
    }
    if !caution.is_empty() {
        let _ = write!(line, "; {caution}");
    }
    EventText {
        headline,
        revision,
        time,
        place,
        picks,
        yield_text,
        caution,
        label,
        line,
    }
}

/// The event's `quality` as a caution (see [`EventText::caution`]).
fn caution(e: &Event) -> String {
    let Some(q) = &e.quality else {
        return String::new();
    };
    let mut parts = Vec::new();
    if q.marginal {
        let mut s = format!(
            "thin support: {} beyond the unknowns",
            plural(q.checks as usize, "check", "checks")
        );
        if let Some(p) = q.chance.filter(|p| *p > 0.01) {
            let _ = write!(
                s,
                ", {}% chance of such support by coincidence",
                sig(100.0 * p, 2)
            );
        }
        parts.push(s);
    }
    if q.aliased {
        parts.push(match q.alternative_m {
            Some(d) => format!("aliased: an equally good fit {} away", length(d)),
            None => "aliased: an equally good fit elsewhere".to_string(),
        });
    }
    parts.join("; ")
}

/// `e` on one line (the CLI's event line).
pub fn event_line(e: &Event) -> String {
    event_text(e).line
}

/// RFC 3339 UTC rounded to the millisecond, always three digits:
/// `2022-03-01T01:30:01.002Z`.
pub fn utc_ms(t: UtcNs) -> String {
    const NS_PER_MS: i64 = 1_000_000;
    let ms = (t.0.div_euclid(NS_PER_MS / 2) + 1).div_euclid(2); // nearest ms, halves up
    let secs = ms.div_euclid(1000);
    let whole = UtcNs(secs * NS_PER_S).to_string();
    let stem = whole.strip_suffix('Z').unwrap_or(&whole);
    format!("{stem}.{:03}Z", ms.rem_euclid(1000))
}

/// `count` and `noun`, plural unless the count is 1 (`1 outlier`, `2 echoes`).
pub fn plural(count: usize, singular: &str, plural: &str) -> String {
    format!("{count} {}", if count == 1 { singular } else { plural })
}

/// `x` with at least `figs` significant figures and no exponent; integers
/// keep every digit (`168`, `6.4`, `0.43`).
pub fn sig(x: f64, figs: u32) -> String {
    if !x.is_finite() {
        return "?".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let decimals = |v: f64| (figs as i32 - 1 - v.abs().log10().floor() as i32).max(0) as usize;
    let d = decimals(x);
    // Rounding may carry into the next power of ten (9.96 -> 10.0): count again.
    let rounded: f64 = format!("{x:.d$}").parse().unwrap_or(x);
    let d = decimals(rounded).min(d);
    format!("{rounded:.d$}")
}

/// A mass of TNT given in kg, in g, kg, t or kt with two or three
/// significant figures (`< 1 g` below a gram). Returns (number, unit), the
/// number `None` below a gram.
fn mass_parts(kg: f64) -> (Option<String>, &'static str) {
    if kg < 1e-3 {
        return (None, "g");
    }
    const UNITS: [(f64, &str); 4] = [(1e-3, "g"), (1.0, "kg"), (1e3, "t"), (1e6, "kt")];
    let mut i = UNITS.iter().rposition(|&(s, _)| kg >= s).unwrap_or(0);
    loop {
        let (scale, unit) = UNITS[i];
        let text = sig(kg / scale, 2);
        // 999.6 kg reads 1000 kg: say 1.0 t instead.
        if text.parse::<f64>().unwrap_or(0.0) >= 1000.0 && i + 1 < UNITS.len() {
            i += 1;
            continue;
        }
        return (Some(text), unit);
    }
}

/// A mass of TNT given in kg, for people: `168 kg`, `2.6 g`, `< 1 g`.
pub fn mass(kg: f64) -> String {
    if !kg.is_finite() {
        return "?".into();
    }
    match mass_parts(kg) {
        (Some(n), unit) => format!("{n} {unit}"),
        (None, unit) => format!("< 1 {unit}"),
    }
}

/// A yield with its range: `168 kg TNT (96–294 kg)`; `< 1 g TNT` when even
/// the upper bound is below a gram.
pub fn yield_range(y: &YieldEstimate) -> String {
    if ![y.kg_tnt, y.low_kg_tnt, y.high_kg_tnt]
        .iter()
        .all(|v| v.is_finite())
    {
        return format!("{} TNT", mass(y.kg_tnt));
    }
    if mass_parts(y.high_kg_tnt).0.is_none() {
        return "< 1 g TNT".into();
    }
    let best = mass(y.kg_tnt);
    let (high, high_unit) = mass_parts(y.high_kg_tnt);
    let high = high.unwrap_or_default();
    let range = match mass_parts(y.low_kg_tnt) {
        (Some(low), low_unit) if low_unit == high_unit => format!("{low}–{high} {high_unit}"),
        (Some(low), low_unit) => format!("{low} {low_unit} – {high} {high_unit}"),
        (None, _) => format!("up to {high} {high_unit}"),
    };
    format!("{best} TNT ({range})")
}

/// A length in metres: `9.7 m`, `55 m`, `1.2 km`.
pub fn length(m: f64) -> String {
    if !m.is_finite() {
        "?".into()
    } else if m < 10.0 {
        format!("{m:.1} m")
    } else if m < 999.5 {
        format!("{m:.0} m")
    } else {
        format!("{} km", sig(m / 1000.0, 2))
    }
}

fn place(e: &Event) -> String {
    let mut s = format!(
        "{:.5}, {:.5} ±{}",
        e.lat,
        e.lon,
        length(e.uncertainty.horizontal_m)
    );
    if let Some(c) = &e.crlb {
        let _ = write!(s, " (CRLB {})", length(c.horizontal_m));
    }
    if e.dims == 2 {
        let _ = write!(s, ", altitude fixed at {:.0} m", e.alt_m);
    } else {
        let _ = write!(
            s,
            ", altitude {:.0} m ±{}",
            e.alt_m,
            length(e.uncertainty.vertical_m)
        );
    }
    s
}

/// Why an outlier was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aside {
    /// A later pick on a node and stream already used: an echo or re-trigger.
    Echo,
    /// A seismic pick at a node whose acoustic pick is used: the air wave
    /// felt through the ground, not a second independent arrival.
    AirCoupled,
    /// Inconsistent with the location: a real outlier.
    Rejected,
}

fn aside(e: &Event, o: &ArrivalRef) -> Aside {
    let used_at = |stream: StreamKind| {
        e.detections
            .iter()
            .find(|d| d.node_id == o.node_id && d.stream == stream)
    };
    if o.stream == StreamKind::Seismic && used_at(StreamKind::Acoustic).is_some() {
        Aside::AirCoupled
    } else if used_at(o.stream).is_some_and(|d| d.onset_utc < o.onset_utc) {
        Aside::Echo
    } else {
        Aside::Rejected
    }
}

fn picks(e: &Event) -> String {
    let nodes: BTreeSet<&str> = e.detections.iter().map(|d| d.node_id.as_str()).collect();
    let mut s = format!(
        "{} from {}",
        plural(e.detections.len(), "arrival", "arrivals"),
        plural(nodes.len(), "node", "nodes")
    );
    let count = |k: Aside| e.outliers.iter().filter(|o| aside(e, o) == k).count();
    let rejected = count(Aside::Rejected);
    if rejected > 0 {
        let _ = write!(s, "; {}", plural(rejected, "outlier", "outliers"));
    }
    let expected: Vec<String> = [
        (count(Aside::Echo), "echo", "echoes"),
        (
            count(Aside::AirCoupled),
            "air-coupled seismic pick",
            "air-coupled seismic picks",
        ),
    ]
    .into_iter()
    .filter(|(n, ..)| *n > 0)
    .map(|(n, one, many)| plural(n, one, many))
    .collect();
    if !expected.is_empty() {
        let _ = write!(s, "; {} not used", expected.join(" and "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Crlb, Uncertainty, EVENT_SCHEMA};

    fn arrival(node: &str, stream: StreamKind, onset_ms: i64) -> ArrivalRef {
        ArrivalRef {
            node_id: node.into(),
            seq: 1,
            stream,
            onset_utc: UtcNs(onset_ms * 1_000_000),
            residual_s: 0.0,
            reason: None,
        }
    }

    fn event(kind: SourceKind, kg: Option<f64>) -> Event {
        Event {
            schema: EVENT_SCHEMA.into(),
            event_id: "ev-1".into(),
            revision: 2,
            origin_utc: UtcNs::parse("2022-03-01T01:30:01.0020375Z").expect("time"),
            lat: 50.444691234,
            lon: 30.534671234,
            alt_m: 195.3,
            uncertainty: Uncertainty {
                horizontal_m: 13.46,
                vertical_m: 0.0,
                origin_s: 0.01,
                covariance_enu: [[0.0; 3]; 3],
            },
            kind,
            confidence: 0.6612,
            detections: vec![
                arrival("n01", StreamKind::Acoustic, 10),
                arrival("n01", StreamKind::Seismic, 11),
                arrival("n02", StreamKind::Acoustic, 12),
            ],
            outliers: vec![],
            sound_speed_mps: 331.0,
            status: EventStatus::Final,
            dims: 2,
            crlb: Some(Crlb {
                horizontal_m: 2.63,
                ..Crlb::default()
            }),
            yield_estimate: kg.map(|k| YieldEstimate {
                kg_tnt: k,
                low_kg_tnt: k * 0.57,
                high_kg_tnt: k * 1.75,
            }),
            site: None,
            quality: None,
        }
    }

    #[test]
    fn thin_or_aliased_support_is_said_in_the_line_and_the_label() {
        let mut e = event(SourceKind::Gunshot, None);
        assert_eq!(event_text(&e).caution, "");
        e.quality = Some(crate::wire::Quality {
            checks: 3,
            chance: Some(1e-6),
            marginal: false,
            aliased: false,
            alternative_m: None,
        });
        let t = event_text(&e);
        assert_eq!(t.caution, "");
        assert!(!t.label.contains(','), "{}", t.label);
        e.quality = Some(crate::wire::Quality {
            checks: 1,
            chance: Some(0.034),
            marginal: true,
            aliased: true,
            alternative_m: Some(131.6),
        });
        let t = event_text(&e);
        assert_eq!(
            t.caution,
            "thin support: 1 check beyond the unknowns, 3.4% chance of such support by coincidence; aliased: an equally good fit 132 m away"
        );
        assert!(t.line.ends_with(&t.caution), "{}", t.line);
        assert!(t.label.ends_with(", aliased"), "{}", t.label);
        e.dims = 3;
        e.alt_m = 851.4;
        assert_eq!(event_text(&e).label, "gunshot ±13 m, alt 851 m, aliased");
    }

    #[test]
    fn significant_figures_have_no_exponent() {
        assert_eq!(sig(167.78, 2), "168");
        assert_eq!(sig(6.44, 2), "6.4");
        assert_eq!(sig(0.426, 2), "0.43");
        assert_eq!(sig(9.96, 2), "10");
        assert_eq!(sig(0.000264, 2), "0.00026");
        assert_eq!(sig(1.3e2, 2), "130");
        for x in [1e-9, 3.7e-4, 0.5, 12.0, 999.9, 1.3e5, 7.7e12] {
            let s = sig(x, 2);
            assert!(!s.contains('e'), "{x} -> {s}");
            let back: f64 = s.parse().expect("a number");
            assert!((back - x).abs() <= 0.05 * x, "{x} -> {s}");
        }
    }

    #[test]
    fn masses_are_in_g_kg_t_with_two_or_three_figures() {
        assert_eq!(mass(0.00026), "< 1 g");
        assert_eq!(mass(0.0), "< 1 g");
        assert_eq!(mass(f64::NAN), "?");
        assert_eq!(mass(0.00099), "< 1 g");
        assert_eq!(mass(0.0012), "1.2 g");
        assert_eq!(mass(0.25), "250 g");
        assert_eq!(mass(0.9996), "1.0 kg");
        assert_eq!(mass(1.66), "1.7 kg");
        assert_eq!(mass(167.78), "168 kg");
        assert_eq!(mass(999.7), "1.0 t");
        assert_eq!(mass(1500.0), "1.5 t");
        assert_eq!(mass(2.5e6), "2.5 kt");
    }

    #[test]
    fn a_yield_below_a_gram_reads_less_than_one_gram_never_zero_kg() {
        for ((kg_tnt, low_kg_tnt, high_kg_tnt), want) in [
            ((0.000264, 0.000208, 0.000335), "< 1 g TNT"),
            ((0.0026, 0.0002, 0.03), "2.6 g TNT (up to 30 g)"),
            ((167.78, 95.88, 1293.6), "168 kg TNT (96 kg – 1.3 t)"),
            ((1.66, 0.43, 6.44), "1.7 kg TNT (430 g – 6.4 kg)"),
        ] {
            let y = YieldEstimate {
                kg_tnt,
                low_kg_tnt,
                high_kg_tnt,
            };
            assert_eq!(yield_range(&y), want);
        }
    }

    #[test]
    fn a_launch_has_no_yield() {
        let t = event_text(&event(SourceKind::Launch, Some(0.00026)));
        assert_eq!(t.yield_text, "");
        assert!(!t.line.contains("yield"), "{}", t.line);
        assert!(!t.line.contains("TNT"), "{}", t.line);
        let t = event_text(&event(SourceKind::Explosion, Some(120.0)));
        assert_eq!(t.yield_text, "yield 120 kg TNT (68–210 kg)");
        assert!(
            t.line.ends_with("; yield 120 kg TNT (68–210 kg)"),
            "{}",
            t.line
        );
    }

    #[test]
    fn arrivals_and_nodes_are_counted_apart() {
        let e = event(SourceKind::Explosion, None);
        assert_eq!(event_text(&e).picks, "3 arrivals from 2 nodes");
        let mut one = e.clone();
        one.detections.truncate(1);
        assert_eq!(event_text(&one).picks, "1 arrival from 1 node");
    }

    #[test]
    fn only_rejected_picks_are_called_outliers() {
        let mut e = event(SourceKind::Explosion, None);
        // n02's seismic pick: the air wave through the ground (its acoustic is used).
        e.outliers.push(arrival("n02", StreamKind::Seismic, 13));
        assert_eq!(
            event_text(&e).picks,
            "3 arrivals from 2 nodes; 1 air-coupled seismic pick not used"
        );
        // A later acoustic pick at n01: an echo; n03 not used at all: an outlier.
        e.outliers.push(arrival("n01", StreamKind::Acoustic, 40));
        e.outliers.push(arrival("n01", StreamKind::Acoustic, 50));
        e.outliers.push(arrival("n03", StreamKind::Acoustic, 20));
        assert_eq!(
            event_text(&e).picks,
            "3 arrivals from 2 nodes; 1 outlier; 2 echoes and 1 air-coupled seismic pick not used"
        );
        e.outliers.push(arrival("n04", StreamKind::Acoustic, 20));
        assert!(event_text(&e).picks.contains("; 2 outliers;"));
    }

    #[test]
    fn confidence_is_labelled_and_time_is_to_the_millisecond() {
        let t = event_text(&event(SourceKind::Explosion, None));
        assert_eq!(t.headline, "explosion, confidence 0.66");
        assert_eq!(t.time, "2022-03-01T01:30:01.002Z");
        assert_eq!(t.revision, "rev 2, final");
        assert!(
            t.line.starts_with(
                "event ev-1 rev 2, final 2022-03-01T01:30:01.002Z: explosion, confidence 0.66, at "
            ),
            "{}",
            t.line
        );
        assert_eq!(
            utc_ms(UtcNs::parse("2022-03-01T01:30:01.9996Z").expect("t")),
            "2022-03-01T01:30:02.000Z"
        );
        assert_eq!(
            utc_ms(UtcNs::parse("2022-03-01T01:30:01Z").expect("t")),
            "2022-03-01T01:30:01.000Z"
        );
        assert_eq!(utc_ms(UtcNs(-1)), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_two_d_fix_says_altitude_fixed_and_a_three_d_fix_its_sigma() {
        let mut e = event(SourceKind::Explosion, None);
        let t = event_text(&e);
        assert_eq!(
            t.place,
            "50.44469, 30.53467 ±13 m (CRLB 2.6 m), altitude fixed at 195 m"
        );
        assert_eq!(t.label, "explosion ±13 m");
        e.dims = 3;
        e.alt_m = 2689.4;
        e.uncertainty.vertical_m = 35.95;
        assert_eq!(
            event_text(&e).place,
            "50.44469, 30.53467 ±13 m (CRLB 2.6 m), altitude 2689 m ±36 m"
        );
        e.uncertainty.horizontal_m = 1234.0;
        assert_eq!(event_text(&e).label, "explosion ±1.2 km, alt 2689 m");
    }
}
