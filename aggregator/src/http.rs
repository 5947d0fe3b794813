//! HTTP API (axum 0.8), the live map page and its websocket.
//!
//! - `GET /` — the live map (static/index.html, compiled in; its one library,
//!   Leaflet, is vendored and compiled in too: `GET /vendor/leaflet/...`,
//!   served without the token, like any public static file)
//! - `GET /api/map-config` — the map's tile URL and attribution (`[map]`)
//! - `GET /api/events?from=&to=&limit=` — latest revisions, JSON array
//!   (`&text=1`: `{events, texts}`, each event's words for people by id)
//! - `GET /api/events.geojson?from=&to=&limit=` — GeoJSON FeatureCollection
//! - `GET /api/events.csv?from=&to=&limit=` — one CSV row per event (RFC 4180)
//! - `GET /api/events.kml?from=&to=&limit=` — KML 2.2, one Placemark per event
//! - `GET /api/events/{id}` — `{event, revisions, detections}`
//! - `GET /api/events/{id}/waveforms` — every arrival's snippet with its
//!   pick, predicted arrival, distance and residual (`waveforms.rs`)
//! - `GET /api/nodes` — node registry
//! - `GET /healthz` — liveness and broker connection
//! - `GET /metrics` — Prometheus text
//! - `GET /ws` — websocket: a snapshot, then node and event updates as JSON
//!   (each event with its words for people, `text`)

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use blastnet_contract::{Event, UtcNs};
use serde_json::json;
use tokio::sync::broadcast;

use crate::export::{events_csv, events_kml};
use crate::geometry::events_geojson;
use crate::metrics::{render_nodes, Metrics};
use crate::pipeline::NodeView;
use crate::store::{Store, StoreError};

/// The live map page.
pub const INDEX_HTML: &str = include_str!("../static/index.html");

/// Leaflet 1.9.4, vendored from the npm registry (static/vendor/leaflet/README.md).
const LEAFLET_JS: &str = include_str!("../static/vendor/leaflet/leaflet.js");
const LEAFLET_CSS: &str = include_str!("../static/vendor/leaflet/leaflet.css");
/// Leaflet's images, by file name (its CSS refers to them as `images/<name>`).
const LEAFLET_IMAGES: [(&str, &[u8]); 5] = [
    (
        "layers.png",
        include_bytes!("../static/vendor/leaflet/images/layers.png"),
    ),
    (
        "layers-2x.png",
        include_bytes!("../static/vendor/leaflet/images/layers-2x.png"),
    ),
    (
        "marker-icon.png",
        include_bytes!("../static/vendor/leaflet/images/marker-icon.png"),
    ),
    (
        "marker-icon-2x.png",
        include_bytes!("../static/vendor/leaflet/images/marker-icon-2x.png"),
    ),
    (
        "marker-shadow.png",
        include_bytes!("../static/vendor/leaflet/images/marker-shadow.png"),
    ),
];
/// Vendored files change only with the binary: a day's caching is safe.
const VENDOR_CACHE: &str = "public, max-age=86400";

/// Events returned by a list query when no `limit` is given, and the cap.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 100_000;
/// Events in the websocket's opening snapshot.
const SNAPSHOT_EVENTS: usize = 500;

/// What the HTTP handlers share with the service.
#[derive(Clone)]
pub struct AppState {
    /// Event store.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Node registry as last published by the pipeline.
    pub nodes: Arc<RwLock<BTreeMap<String, NodeView>>>,
    /// Live updates for websockets: JSON texts.
    pub live: broadcast::Sender<Arc<str>>,
    /// Whether the MQTT connection is up and subscribed (see `service`).
    pub mqtt_connected: Arc<AtomicBool>,
    /// Bearer token every request but `/healthz` must carry, if set.
    pub token: Option<Arc<str>>,
    /// Websocket origins allowed besides the server's own.
    pub allowed_origins: Arc<[String]>,
    /// The map's tiles (`[map]`), for `/api/map-config`.
    pub map: Arc<crate::config::MapConfig>,
}

/// A live update as the websocket sends it: the event (SPEC JSON) and its
/// words for people (`text`: [`blastnet_contract::text::EventText`], the
/// formatter the CLI prints with, so the page formats no event itself).
pub fn live_event(ev: &Event) -> Arc<str> {
    json!({ "type": "event", "event": ev, "text": blastnet_contract::text::event_text(ev) })
        .to_string()
        .into()
}

/// A live node update.
pub fn live_node(n: &NodeView) -> Arc<str> {
    json!({ "type": "node", "node": n }).to_string().into()
}

/// The router.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(index))
        .route("/api/events", get(events))
        .route("/api/events.geojson", get(events_geo))
        .route("/api/events.csv", get(events_csv_route))
        .route("/api/events.kml", get(events_kml_route))
        .route("/api/events/{id}", get(event_by_id))
        .route("/api/events/{id}/waveforms", get(event_waveforms))
        .route("/api/nodes", get(nodes))
        .route("/api/map-config", get(map_config))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/vendor/leaflet/leaflet.js", get(leaflet_js))
        .route("/vendor/leaflet/leaflet.css", get(leaflet_css))
        .route("/vendor/leaflet/images/{name}", get(leaflet_image))
        .merge(protected)
        .with_state(state)
}

/// Byte-wise comparison whose time does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// With a token configured: `Authorization: Bearer <token>`, or `token=<token>`
/// in the query (the map page in a browser, and its websocket, which cannot
/// set headers). 401 otherwise.
async fn require_token(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let header_ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same_secret(t.trim().as_bytes(), token.as_bytes()));
    let query_ok = req.uri().query().is_some_and(|q| {
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("token="))
            .any(|t| same_secret(t.as_bytes(), token.as_bytes()))
    });
    if header_ok || query_ok {
        next.run(req).await
    } else {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "this aggregator needs its token: `Authorization: Bearer <token>` or `?token=<token>`"
                .into(),
        )
        .into_response()
    }
}

/// Serve `app` on `listener` until `stop`: HTTP/1.1 with upgrades (the
/// websocket), a client gets `cfg.header_timeout` to send each request's
/// headers (also the limit on an idle keep-alive connection: slow or idle
/// clients cannot pile up), and beyond `cfg.max_connections` open
/// connections a new one is closed at once (counted). Open websockets end
/// with `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    cfg: crate::config::HttpConfig,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
    let mut logged_full = false;
    loop {
        let (sock, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to close.
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics.http_refused.fetch_add(1, Relaxed);
            if !logged_full {
                tracing::warn!(
                    "http: {} connections open (http.max_connections); closing new ones until some end",
                    cfg.max_connections
                );
                logged_full = true;
            }
            drop(sock);
            continue;
        };
        logged_full = false;
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let timeout = cfg.header_timeout;
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let io = hyper_util::rt::TokioIo::new(sock);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(io, svc)
                .with_upgrades();
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("http connection from {peer}: {e}");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("store query failed: {e}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn leaflet_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, VENDOR_CACHE),
        ],
        LEAFLET_JS,
    )
        .into_response()
}

async fn leaflet_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, VENDOR_CACHE),
        ],
        LEAFLET_CSS,
    )
        .into_response()
}

async fn leaflet_image(Path(name): Path<String>) -> Response {
    match LEAFLET_IMAGES.iter().find(|(n, _)| *n == name) {
        Some((_, bytes)) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, VENDOR_CACHE),
            ],
            *bytes,
        )
            .into_response(),
        None => {
            ApiError(StatusCode::NOT_FOUND, format!("no Leaflet image {name:?}")).into_response()
        }
    }
}

async fn map_config(State(s): State<AppState>) -> Json<crate::config::MapConfig> {
    Json((*s.map).clone())
}

struct Range {
    from: Option<UtcNs>,
    to: Option<UtcNs>,
    limit: usize,
}

fn parse_range(q: &HashMap<String, String>) -> Result<Range, ApiError> {
    let time = |name: &str| -> Result<Option<UtcNs>, ApiError> {
        match q.get(name) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => UtcNs::parse(v).map(Some).map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("query parameter `{name}`: {e}"),
                )
            }),
        }
    };
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("query parameter `limit`: expected 1..{MAX_LIMIT}, got {v:?}"),
                )
            })?,
    };
    Ok(Range {
        from: time("from")?,
        to: time("to")?,
        limit,
    })
}

async fn query_events(store: Store, r: Range) -> Result<Vec<Event>, ApiError> {
    tokio::task::spawn_blocking(move || store.events_between(r.from, r.to, r.limit))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

async fn events(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let r = parse_range(&q)?;
    let evs = query_events(s.store, r).await?;
    // `text=1` (the map page): `{events, texts}` as in the websocket's snapshot.
    if q.get("text").is_some_and(|v| v == "1") {
        return Ok(Json(json!({ "events": evs, "texts": event_texts(&evs) })).into_response());
    }
    Ok(Json(evs).into_response())
}

/// Each event's words for people, by event id (see `live_event`).
fn event_texts(evs: &[Event]) -> BTreeMap<&str, blastnet_contract::text::EventText> {
    evs.iter()
        .map(|e| (e.event_id.as_str(), blastnet_contract::text::event_text(e)))
        .collect()
}

async fn events_geo(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let r = parse_range(&q)?;
    let evs = query_events(s.store, r).await?;
    let body = events_geojson(&evs).to_string();
    Ok(([(header::CONTENT_TYPE, "application/geo+json")], body).into_response())
}

async fn events_csv_route(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let r = parse_range(&q)?;
    let evs = query_events(s.store, r).await?;
    let body = events_csv(&evs)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("csv: {e}")))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/csv; charset=utf-8; header=present",
            ),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"blastnet-events.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

async fn events_kml_route(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let r = parse_range(&q)?;
    let evs = query_events(s.store, r).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.google-earth.kml+xml"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"blastnet-events.kml\"",
            ),
        ],
        events_kml(&evs),
    )
        .into_response())
}

async fn event_by_id(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = s.store;
    let idc = id.clone();
    let rec = tokio::task::spawn_blocking(move || store.event(&idc))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    match rec {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no event {id:?}"))),
    }
}

async fn event_waveforms(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let nodes = node_list(&s);
    let store = s.store;
    let idc = id.clone();
    let w = tokio::task::spawn_blocking(move || {
        crate::waveforms::event_waveforms(&store, &idc, &nodes)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    match w {
        Some(w) => Ok(Json(w).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no event {id:?}"))),
    }
}

fn node_list(s: &AppState) -> Vec<NodeView> {
    s.nodes
        .read()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_else(|p| p.into_inner().values().cloned().collect())
}

async fn nodes(State(s): State<AppState>) -> Json<Vec<NodeView>> {
    Json(node_list(&s))
}

async fn healthz(State(s): State<AppState>) -> Json<serde_json::Value> {
    let wm = s.metrics.watermark_ns.load(Relaxed);
    Json(json!({
        "status": "ok",
        "mqtt_connected": s.mqtt_connected.load(Relaxed),
        "watermark_utc": if wm == 0 { None } else { Some(UtcNs(wm).to_string()) },
        "version": blastnet_contract::VERSION,
    }))
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = s.metrics.render();
    render_nodes(&node_list(&s), &mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn ws(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // A browser sends the page's origin: only this server's own (or one
    // configured) may open the live feed, so another site's page cannot
    // read it through a visitor's browser. Tools that send no Origin pass.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let own = !host.is_empty()
            && (origin == format!("http://{host}") || origin == format!("https://{host}"));
        if !own && !s.allowed_origins.iter().any(|o| o == origin) {
            return ApiError(
                StatusCode::FORBIDDEN,
                format!("websocket from origin {origin:?}: not this server's (add it to http.allowed_origins)"),
            )
            .into_response();
        }
    }
    upgrade.on_upgrade(move |socket| ws_session(s, socket))
}

async fn snapshot(s: &AppState) -> Option<String> {
    let store = s.store.clone();
    let events = tokio::task::spawn_blocking(move || store.recent_events(SNAPSHOT_EVENTS))
        .await
        .ok()?
        .ok()?;
    Some(
        json!({ "type": "snapshot", "nodes": node_list(s), "events": events, "texts": event_texts(&events) })
            .to_string(),
    )
}

async fn ws_session(s: AppState, mut socket: WebSocket) {
    // Subscribe before the snapshot so nothing falls between the two.
    let mut rx = s.live.subscribe();
    let Some(first) = snapshot(&s).await else {
        return;
    };
    if socket.send(Message::Text(first.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let text = match msg {
                    Ok(t) => t.to_string(),
                    // Too slow to follow: start over from a snapshot.
                    Err(broadcast::error::RecvError::Lagged(_)) => match snapshot(&s).await {
                        Some(t) => t,
                        None => return,
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page formats no event itself: the live message carries the
    /// contract formatter's words beside the SPEC event.
    #[test]
    fn a_live_event_carries_the_shared_formatters_text() {
        let ev: Event = serde_json::from_value(json!({
            "schema": "blastnet.event/1", "event_id": "ev-1", "revision": 2,
            "origin_utc": "2022-03-01T01:30:04.033047191Z",
            "lat": 50.46709, "lon": 30.55571, "alt_m": 195.0,
            "uncertainty": { "horizontal_m": 55.3, "vertical_m": 0.0, "origin_s": 0.01,
                             "covariance_enu": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]] },
            "kind": "launch", "confidence": 0.86,
            "detections": [
                { "node_id": "n01", "seq": 1, "stream": "acoustic", "onset_utc": "2022-03-01T01:30:05Z", "residual_s": 0.0 },
                { "node_id": "n01", "seq": 2, "stream": "seismic", "onset_utc": "2022-03-01T01:30:05Z", "residual_s": 0.0 }
            ],
            "sound_speed_mps": 331.0, "status": "final", "dims": 2,
            "yield_estimate": { "kg_tnt": 0.00026, "low_kg_tnt": 0.0002, "high_kg_tnt": 0.0003 }
        }))
        .expect("a SPEC event");
        let msg: serde_json::Value = serde_json::from_str(&live_event(&ev)).expect("JSON");
        assert_eq!(msg["type"], "event");
        assert_eq!(msg["event"]["event_id"], "ev-1");
        let text = blastnet_contract::text::event_text(&ev);
        assert_eq!(msg["text"]["line"], text.line.as_str());
        assert_eq!(msg["text"]["label"], "launch ±55 m");
        assert_eq!(msg["text"]["headline"], "launch, confidence 0.86");
        assert_eq!(msg["text"]["time"], "2022-03-01T01:30:04.033Z");
        assert_eq!(msg["text"]["picks"], "2 arrivals from 1 node");
        assert_eq!(msg["text"]["yield_text"], "");
        assert!(msg["text"]["place"]
            .as_str()
            .is_some_and(|p| p.ends_with("altitude fixed at 195 m")));
    }
}
