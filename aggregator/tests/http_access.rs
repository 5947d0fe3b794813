//! HTTP access control and limits of the aggregator: no open API on the
//! network without a token, the token enforced, websockets only from the
//! server's own pages, and slow clients cannot starve `/healthz`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use blastnet_aggregator::config::{StorePath, TimeBase};
use blastnet_aggregator::testkit::http_get;
use blastnet_aggregator::{start, AggregatorConfig, AggregatorError, CancellationToken};
use blastnet_broker::EmbeddedBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "0123456789abcdef0123";

fn config(port: u16, id: &str) -> AggregatorConfig {
    let mut cfg = AggregatorConfig::for_broker(&format!("mqtt://127.0.0.1:{port}")).unwrap();
    cfg.mqtt.client_id = id.into();
    cfg.time.base = TimeBase::Nodes;
    cfg.store.path = StorePath::Memory;
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    cfg
}

/// Send `req` raw; the status code of the answer.
async fn raw_status(addr: std::net::SocketAddr, req: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn ws_request(addr: std::net::SocketAddr, path: &str, origin: Option<&str>) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_address_without_a_token_refuses_to_start() {
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let mut cfg = config(broker.port(), "agg-open");
    cfg.http_listen = "0.0.0.0:0".parse().unwrap();
    let err = match start(cfg, CancellationToken::new()).await {
        Err(e) => e,
        Ok(_) => panic!("started on 0.0.0.0 without a token"),
    };
    assert!(matches!(err, AggregatorError::Config(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("http.listen") && msg.contains("http.token"),
        "{msg}"
    );
    // The same from a file.
    let e = AggregatorConfig::from_toml_str("[http]\nlisten = \"0.0.0.0:8080\"\n", "agg.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("agg.toml") && e.contains("http.listen"), "{e}");
    let ok = AggregatorConfig::from_toml_str(
        &format!("[http]\nlisten = \"0.0.0.0:8080\"\ntoken = \"{TOKEN}\"\n"),
        "agg.toml",
    );
    assert!(ok.is_ok(), "{ok:?}");
    let short = AggregatorConfig::from_toml_str("[http]\ntoken = \"short\"\n", "agg.toml")
        .unwrap_err()
        .to_string();
    assert!(short.contains("http.token"), "{short}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_required_and_websockets_only_from_the_servers_own_origin() {
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let mut cfg = config(broker.port(), "agg-token");
    cfg.http.token = Some(TOKEN.into());
    cfg.http.allowed_origins = vec!["https://ops.example".into()];
    let h = start(cfg, CancellationToken::new()).await.unwrap();
    let addr = h.http_addr();

    let (code, _) = http_get(addr, "/healthz").await.unwrap();
    assert_eq!(code, 200, "health checks need no token");
    let (code, body) = http_get(addr, "/api/nodes").await.unwrap();
    assert_eq!(code, 401, "{body}");
    let (code, _) = http_get(addr, &format!("/api/nodes?token={TOKEN}x"))
        .await
        .unwrap();
    assert_eq!(code, 401);
    let (code, _) = http_get(addr, &format!("/api/nodes?token={TOKEN}"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    // The waveform evidence too: 401 without the token, 404 (JSON) for an
    // unknown event with it.
    let (code, _) = http_get(addr, "/api/events/ev-x/waveforms").await.unwrap();
    assert_eq!(code, 401);
    let (code, body) = http_get(addr, &format!("/api/events/ev-x/waveforms?token={TOKEN}"))
        .await
        .unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_status(addr, &req).await, 200);
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(addr, &req).await, 401);

    let path = format!("/ws?token={TOKEN}");
    let foreign = raw_status(addr, &ws_request(addr, &path, Some("http://evil.example"))).await;
    assert_eq!(foreign, 403, "a websocket from another site's page");
    let own = raw_status(
        addr,
        &ws_request(addr, &path, Some(&format!("http://{addr}"))),
    )
    .await;
    assert_eq!(own, 101, "the map page's own websocket");
    let listed = raw_status(addr, &ws_request(addr, &path, Some("https://ops.example"))).await;
    assert_eq!(listed, 101, "an allowed origin");
    let no_token = raw_status(
        addr,
        &ws_request(addr, "/ws", Some(&format!("http://{addr}"))),
    )
    .await;
    assert_eq!(no_token, 401);
    h.shutdown();
    h.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slow_clients_do_not_stop_healthz_and_are_cut_off() {
    let broker = EmbeddedBroker::start_on_free_port().unwrap();
    let mut cfg = config(broker.port(), "agg-slow");
    cfg.http.header_timeout = Duration::from_secs(1);
    cfg.http.max_connections = 600;
    let h = start(cfg, CancellationToken::new()).await.unwrap();
    let addr = h.http_addr();

    // Each sends half a request line and then nothing.
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/no").await.unwrap();
        slow.push(s);
    }
    let t = Instant::now();
    let (code, body) = http_get(addr, "/healthz").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "/healthz took {:?}",
        t.elapsed()
    );

    // Past the header timeout the server has closed them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = 0;
    for s in &mut slow {
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
            // EOF, or the 408 hyper sends before closing.
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(
        closed, 500,
        "slow clients still connected after the header timeout"
    );

    // Beyond max_connections new connections are closed at once and counted.
    let mut held = Vec::new();
    for _ in 0..600 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut b))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "the 601st connection gets no answer, only a close");
    assert!(
        h.metrics()
            .http_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    drop(held);
    h.shutdown();
    h.join().await.unwrap();
}
