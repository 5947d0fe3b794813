//! Events as files other tools open: CSV for spreadsheets and scripts, KML
//! for Google Earth, QGIS and GIS viewers (`/api/events.csv`,
//! `/api/events.kml`). Both carry the same events as `/api/events`: one
//! row or Placemark per event, its latest revision.
//!
//! CSV goes through the `csv` crate (RFC 4180 quoting, shortest round-trip
//! floats). KML is written by hand: the document is a fixed shape of a dozen
//! elements and every value passes through one escaping function, which a
//! test reads back with an XML parser; an XML writer crate would add a
//! dependency to do the same.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use blastnet_contract::{Event, EventStatus};
use serde::Serialize;

/// One CSV row: the columns of `/api/events.csv`, in order.
#[derive(Debug, Serialize)]
struct Row<'a> {
    event_id: &'a str,
    revision: u32,
    status: &'static str,
    origin_utc: String,
    lat: f64,
    lon: f64,
    alt_m: f64,
    /// 2 (altitude fixed on the ground plane) or 3 (altitude solved).
    dims: u8,
    horizontal_m: f64,
    vertical_m: f64,
    kind: &'static str,
    confidence: f64,
    /// Arrivals (detections) used.
    arrivals: usize,
    /// Distinct nodes among them (a node can give an acoustic and a seismic arrival).
    nodes: usize,
    yield_kg_tnt: Option<f64>,
    yield_low_kg_tnt: Option<f64>,
    yield_high_kg_tnt: Option<f64>,
    site: Option<&'a str>,
}

fn status_name(s: EventStatus) -> &'static str {
    match s {
        EventStatus::Preliminary => "preliminary",
        EventStatus::Final => "final",
    }
}

/// Distinct nodes among an event's arrivals.
pub fn node_count(ev: &Event) -> usize {
    ev.detections
        .iter()
        .map(|r| r.node_id.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

/// `events` as CSV with a header row.
pub fn events_csv(events: &[Event]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for ev in events {
        w.serialize(Row {
            event_id: &ev.event_id,
            revision: ev.revision,
            status: status_name(ev.status),
            origin_utc: ev.origin_utc.to_string(),
            lat: ev.lat,
            lon: ev.lon,
            alt_m: ev.alt_m,
            dims: ev.dims,
            horizontal_m: ev.uncertainty.horizontal_m,
            vertical_m: ev.uncertainty.vertical_m,
            kind: ev.kind.as_str(),
            confidence: ev.confidence,
            arrivals: ev.detections.len(),
            nodes: node_count(ev),
            yield_kg_tnt: ev.yield_estimate.as_ref().map(|y| y.kg_tnt),
            yield_low_kg_tnt: ev.yield_estimate.as_ref().map(|y| y.low_kg_tnt),
            yield_high_kg_tnt: ev.yield_estimate.as_ref().map(|y| y.high_kg_tnt),
            site: ev.site.as_deref(),
        })?;
    }
    if events.is_empty() {
        // `serialize` writes the header with the first row: none, so by hand.
        w.write_record([
            "event_id",
            "revision",
            "status",
            "origin_utc",
            "lat",
            "lon",
            "alt_m",
            "dims",
            "horizontal_m",
            "vertical_m",
            "kind",
            "confidence",
            "arrivals",
            "nodes",
            "yield_kg_tnt",
            "yield_low_kg_tnt",
            "yield_high_kg_tnt",
            "site",
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `s` escaped for XML text and attribute values. Characters XML 1.0 does not
/// allow at all (control characters but tab, newline, return) become U+FFFD.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// `events` as a KML 2.2 document: per event a Placemark with a name (kind
/// and origin time), a description, a TimeStamp (origin), the Point
/// (lon,lat,alt; clamped to the ground, as KML does by default: `alt_m` is
/// in the description and the data) and ExtendedData with the id and key
/// figures.
pub fn events_kml(events: &[Event]) -> String {
    let mut o = String::with_capacity(512 + 1024 * events.len());
    o.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <kml xmlns=\"http://www.opengis.net/kml/2.2\">\n<Document>\n<name>blastnet events</name>\n",
    );
    for ev in events {
        let kind = ev.kind.as_str();
        let origin = ev.origin_utc.to_string();
        let nodes = node_count(ev);
        let mut desc = format!(
            "{kind} (confidence {:.2}), {} event, revision {}\n\
             origin {origin}\n\
             lat {:.6}, lon {:.6}, altitude {:.1} m{}\n\
             1-sigma: horizontal {:.1} m{}\n\
             {} arrival{} from {nodes} node{}",
            ev.confidence,
            status_name(ev.status),
            ev.revision,
            ev.lat,
            ev.lon,
            ev.alt_m,
            if ev.dims == 2 { " (fixed)" } else { "" },
            ev.uncertainty.horizontal_m,
            if ev.dims == 2 {
                String::new()
            } else {
                format!(", vertical {:.1} m", ev.uncertainty.vertical_m)
            },
            ev.detections.len(),
            if ev.detections.len() == 1 { "" } else { "s" },
            if nodes == 1 { "" } else { "s" },
        );
        if let Some(y) = &ev.yield_estimate {
            let _ = write!(
                desc,
                "\nyield {:.3} kg TNT [{:.3}, {:.3}]",
                y.kg_tnt, y.low_kg_tnt, y.high_kg_tnt
            );
        }
        let data = [
            ("event_id", ev.event_id.clone()),
            ("revision", ev.revision.to_string()),
            ("status", status_name(ev.status).to_string()),
            ("kind", kind.to_string()),
            ("confidence", ev.confidence.to_string()),
            ("alt_m", ev.alt_m.to_string()),
            ("horizontal_m", ev.uncertainty.horizontal_m.to_string()),
            ("arrivals", ev.detections.len().to_string()),
            ("nodes", nodes.to_string()),
        ];
        let _ = write!(
            o,
            "<Placemark>\n<name>{}</name>\n<description>{}</description>\n\
             <TimeStamp><when>{}</when></TimeStamp>\n<ExtendedData>\n",
            xml_escape(&format!("{kind} {origin}")),
            xml_escape(&desc),
            xml_escape(&origin),
        );
        for (k, v) in data {
            let _ = writeln!(
                o,
                "<Data name=\"{k}\"><value>{}</value></Data>",
                xml_escape(&v)
            );
        }
        let _ = writeln!(
            o,
            "</ExtendedData>\n<Point><coordinates>{},{},{}</coordinates></Point>\n</Placemark>",
            ev.lon, ev.lat, ev.alt_m
        );
    }
    o.push_str("</Document>\n</kml>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escape_leaves_no_markup_and_no_forbidden_characters() {
        assert_eq!(
            xml_escape("a<b>&\"c'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;c&apos;\u{fffd}\n"
        );
    }

    #[test]
    fn an_empty_export_still_names_its_columns() {
        let csv = events_csv(&[]).unwrap();
        assert!(
            csv.starts_with("event_id,revision,status,origin_utc,"),
            "{csv}"
        );
        assert_eq!(csv.lines().count(), 1);
        let kml = events_kml(&[]);
        assert!(kml.contains("<Document>") && !kml.contains("<Placemark>"));
    }
}
