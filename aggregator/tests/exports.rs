//! `/api/events.csv` and `/api/events.kml` over real HTTP from a running
//! aggregator with located events: each read back with a real parser (the
//! `csv` crate, an XML parser) to the same events as `/api/events`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use blastnet_aggregator::testkit::{http_get, http_get_with_head};
use blastnet_contract::{Event, UtcNs};

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn api_events(addr: std::net::SocketAddr, query: &str) -> BTreeMap<String, Event> {
    let (status, body) = http_get(addr, &format!("/api/events{query}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let evs: Vec<Event> = serde_json::from_str(&body).unwrap();
    evs.into_iter().map(|e| (e.event_id.clone(), e)).collect()
}

/// The CSV's rows by event id, each a map column -> value.
fn csv_rows(body: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut r = csv::Reader::from_reader(body.as_bytes());
    let cols: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let mut out = BTreeMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        assert_eq!(rec.len(), cols.len(), "ragged row {rec:?}");
        let row: BTreeMap<String, String> = cols
            .iter()
            .cloned()
            .zip(rec.iter().map(String::from))
            .collect();
        assert!(
            out.insert(row["event_id"].clone(), row).is_none(),
            "an event has two rows"
        );
    }
    out
}

/// The first child element of `n` named `name`.
fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> roxmltree::Node<'a, 'i> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
        .unwrap_or_else(|| panic!("<{}> has no <{name}>", n.tag_name().name()))
}

fn f(row: &BTreeMap<String, String>, col: &str) -> f64 {
    row[col]
        .parse()
        .unwrap_or_else(|e| panic!("{col} = {:?}: {e}", row[col]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_export_holds_the_same_events_as_the_api() {
    let scene = common::located_events("agg-csv").await;
    let addr = scene.agg.http_addr();
    let api = api_events(addr, "").await;
    assert_eq!(
        api.keys().collect::<Vec<_>>(),
        scene.finals.keys().collect::<Vec<_>>()
    );

    let (status, head, body) = http_get_with_head(addr, "/api/events.csv").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let ct = header(&head, "content-type").unwrap_or_default();
    assert!(ct.starts_with("text/csv"), "Content-Type {ct:?}");
    // RFC 4180: CRLF or LF line ends are both read; the header row is there.
    assert!(body.starts_with("event_id,revision,status,origin_utc,lat,lon,alt_m,"));
    let rows = csv_rows(&body);
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        api.keys().collect::<Vec<_>>()
    );
    for (id, ev) in &api {
        let row = &rows[id];
        assert_eq!(row["revision"], ev.revision.to_string(), "{id}");
        assert_eq!(row["status"], "final", "{id}");
        assert_eq!(UtcNs::parse(&row["origin_utc"]).unwrap(), ev.origin_utc);
        // Shortest round-trip floats: the very same numbers.
        assert_eq!(f(row, "lat"), ev.lat, "{id}");
        assert_eq!(f(row, "lon"), ev.lon, "{id}");
        assert_eq!(f(row, "alt_m"), ev.alt_m, "{id}");
        assert_eq!(f(row, "horizontal_m"), ev.uncertainty.horizontal_m);
        assert_eq!(f(row, "vertical_m"), ev.uncertainty.vertical_m);
        assert_eq!(f(row, "confidence"), ev.confidence);
        assert_eq!(row["kind"], ev.kind.as_str());
        assert_eq!(row["arrivals"], ev.detections.len().to_string());
        let nodes: std::collections::BTreeSet<_> =
            ev.detections.iter().map(|r| &r.node_id).collect();
        assert_eq!(row["nodes"], nodes.len().to_string());
        match &ev.yield_estimate {
            Some(y) => assert_eq!(f(row, "yield_kg_tnt"), y.kg_tnt),
            None => assert_eq!(row["yield_kg_tnt"], ""),
        }
        assert_eq!(Some(row["site"].as_str()), ev.site.as_deref());
    }

    // The same query parameters as /api/events: a time window and a limit.
    let origins: Vec<UtcNs> = api.values().map(|e| e.origin_utc).collect();
    let mid = origins.iter().min().unwrap().add_secs_f64(10.0);
    let q = format!("?from={mid}");
    let (_, body) = http_get(addr, &format!("/api/events.csv{q}"))
        .await
        .unwrap();
    let later = csv_rows(&body);
    let expected = api_events(addr, &q).await;
    assert_eq!(
        later.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        later.len(),
        api.len() - 1,
        "`from` left out the first event"
    );
    let (_, body) = http_get(addr, "/api/events.csv?limit=1").await.unwrap();
    assert_eq!(csv_rows(&body).len(), 1);
    let (status, body) = http_get(addr, "/api/events.csv?from=yesterday")
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("`from`"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kml_export_has_one_placemark_per_event_where_the_api_puts_it() {
    let scene = common::located_events("agg-kml").await;
    let addr = scene.agg.http_addr();
    let api = api_events(addr, "").await;
    assert_eq!(api.len(), scene.finals.len());

    let (status, head, body) = http_get_with_head(addr, "/api/events.kml").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&head, "content-type"),
        Some("application/vnd.google-earth.kml+xml")
    );
    let doc = roxmltree::Document::parse(&body).unwrap_or_else(|e| panic!("not XML: {e}\n{body}"));
    let kml_ns = "http://www.opengis.net/kml/2.2";
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "kml");
    assert_eq!(root.tag_name().namespace(), Some(kml_ns));
    let placemarks: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name((kml_ns, "Placemark")))
        .collect();
    assert_eq!(placemarks.len(), api.len());
    let mut seen = std::collections::BTreeSet::new();
    for pm in placemarks {
        let data: BTreeMap<&str, &str> = child(pm, "ExtendedData")
            .children()
            .filter(|c| c.has_tag_name("Data"))
            .map(|d| {
                (
                    d.attribute("name").unwrap(),
                    child(d, "value").text().unwrap_or(""),
                )
            })
            .collect();
        let id = data["event_id"];
        let ev = api
            .get(id)
            .unwrap_or_else(|| panic!("placemark {id} is no event"));
        assert!(seen.insert(id.to_string()), "two placemarks for {id}");
        assert_eq!(data["kind"], ev.kind.as_str());
        let when = child(child(pm, "TimeStamp"), "when").text().unwrap();
        assert_eq!(UtcNs::parse(when).unwrap(), ev.origin_utc);
        let name = child(pm, "name").text().unwrap();
        assert!(name.contains(ev.kind.as_str()), "{name}");
        let desc = child(pm, "description").text().unwrap();
        assert!(desc.contains("confidence"), "{desc}");
        // KML coordinates are lon,lat[,alt] in decimal degrees.
        let coords: Vec<f64> = child(child(pm, "Point"), "coordinates")
            .text()
            .unwrap()
            .trim()
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(coords, vec![ev.lon, ev.lat, ev.alt_m], "{id}");
    }
}
