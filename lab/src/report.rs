//! Human-readable lines for what the pipeline publishes.

/// One human-readable line for an event revision.
pub fn event_line(e: &blastnet_contract::Event) -> String {
    let crlb = e
        .crlb
        .as_ref()
        .map(|c| format!(" crlb {:.1} m", c.horizontal_m))
        .unwrap_or_default();
    let yld = e
        .yield_estimate
        .as_ref()
        .map(|y| {
            format!(
                " yield {:.2} kg TNT [{:.2}, {:.2}]",
                y.kg_tnt, y.low_kg_tnt, y.high_kg_tnt
            )
        })
        .unwrap_or_default();
    format!(
        "event {} r{} {:?} {} at {:.5},{:.5} alt {:.0} m ±{:.1} m{} {} {:.2} ({} nodes, {} outliers){}",
        e.event_id,
        e.revision,
        e.status,
        e.origin_utc,
        e.lat,
        e.lon,
        e.alt_m,
        e.uncertainty.horizontal_m,
        crlb,
        e.kind.as_str(),
        e.confidence,
        e.detections.len(),
        e.outliers.len(),
        yld
    )
}
