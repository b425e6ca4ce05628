//! The HTTP routes: the page and its files, room links, new rooms, the WebSocket, health.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use signal_protocol::validate_room_id;
use tower_http::services::{ServeDir, ServeFile};

use crate::accept::ClientAddr;
use crate::connection::{self, Client};
use crate::state::AppState;

/// Builds the router over shared state.
pub fn router(state: Arc<AppState>) -> Router {
    let www = state.config.www.clone();
    let index = ServeFile::new(www.join("index.html"));
    let router = Router::new()
        .route_service("/", index.clone())
        .route("/r/{room}", get(room_page))
        .route("/new", get(new_room))
        .route("/ws/{room}", get(websocket))
        .route("/healthz", get(healthz))
        .route("/api/netcheck", get(netcheck))
        .route("/qr.svg", get(crate::qr::svg));
    let router = if state.config.metrics_listen.is_none() {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    let router = router
        .route("/api/sites", get(crate::sites::api))
        .fallback_service(ServeDir::new(www));
    let csp = HeaderValue::from_str(&csp(state.config.sites_domain.as_deref()))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    let dispatch = crate::sites::Dispatch {
        sites: crate::sites::router(&state),
        domain: state.config.sites_domain.clone(),
        loopback_only: state.config.listen.ip().is_loopback(),
    };
    router
        .layer(axum::middleware::map_response_with_state(
            csp,
            security_headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            dispatch,
            crate::sites::dispatch,
        ))
        .with_state(state)
}

/// The page's Content-Security-Policy: its own scripts and the wasm module only, no inline code,
/// no plugins, never framed by another site. `wasm-unsafe-eval` lets the page compile its wasm
/// (not `eval`); `blob:`/`data:` images are received files and the favicon; frames are the
/// exposed sites' own origins (see [`crate::sites`]).
fn csp(sites_domain: Option<&str>) -> String {
    let mut frames = String::from("http://*.localhost:* https://*.localhost:*");
    if let Some(d) = sites_domain {
        let d = d.trim_matches('.');
        frames.push_str(&format!(" http://*.{d}:* https://*.{d}:*"));
    }
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' blob:; \
         worker-src 'self'; frame-src {frames}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// Adds the security headers to every response: the CSP above, no MIME sniffing, no framing
/// by other sites, and no `Referer` (a room link is a secret: it must not leak to other sites).
async fn security_headers(State(csp): State<HeaderValue>, mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// Whether a WebSocket upgrade from `origin` may proceed. Browsers always send `Origin`: it must
/// be the server's own (`http(s)://` + the `Host` the client used) or listed in
/// `--allowed-origin` (`*` lists all). Clients that send none (the `burrow` CLI) are not a
/// browser page acting for someone else, so they may.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    match (origin.split_once("://"), host) {
        (Some(("http" | "https", authority)), Some(host)) => authority.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// `/r/{room}`: the same page; its script reads the room from the URL.
async fn room_page(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    req: axum::extract::Request,
) -> Response {
    if let Err(e) = validate_room_id(&room) {
        return (StatusCode::BAD_REQUEST, format!("invalid room id: {e}\n")).into_response();
    }
    let index = ServeFile::new(state.config.www.join("index.html"));
    match tower::ServiceExt::oneshot(index, req).await {
        Ok(resp) => resp.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `/new`: redirects to a fresh, unguessable room (128 random bits, URL-safe base64).
async fn new_room() -> Redirect {
    Redirect::to(&format!("/r/{}", crate::secrets::new_room_id()))
}

/// `/ws/{room}`: upgrades to the signaling WebSocket. The room id is checked on `hello`, so a
/// bad one gets a protocol error the page can show instead of a bare failed handshake.
async fn websocket(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    ConnectInfo(client_addr): ClientAddr,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
    if !origin_allowed(origin, host.as_deref(), &state.config.allowed_origin) {
        tracing::info!(%client_addr, origin = ?origin, "websocket refused: origin not allowed");
        state.metrics.origin_refused.inc();
        return (
            StatusCode::FORBIDDEN,
            "this page's origin may not use this server (see --allowed-origin)\n",
        )
            .into_response();
    }
    let limit = state.config.max_message_bytes;
    // Frames up to 4x the limit are read and refused politely; beyond that the socket closes.
    ws.read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(limit.saturating_mul(4))
        .max_frame_size(limit.saturating_mul(4))
        .on_upgrade(move |socket| {
            connection::serve(
                socket,
                Client {
                    room,
                    host,
                    addr: client_addr,
                },
                state,
            )
        })
}

/// `/api/netcheck`: the two STUN URLs a client compares to classify its NAT.
async fn netcheck(State(state): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    Json(serde_json::json!({ "stun": state.netcheck_urls(host) }))
}

/// The router for `--metrics-listen`: `/metrics` alone.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `/metrics`: the Prometheus text exposition.
async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let (rooms, peers) = state.rooms.counts();
    let body = state.metrics.render(crate::metrics::Live {
        rooms,
        peers,
        connections: state.limits.open(),
        turn_allocations: state.turn_access.allocations(),
        away_bytes: state.rooms.away_bytes(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// `/healthz`: liveness and this instance's counts (and, with `--redis`, whether Redis answers).
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let (rooms, peers) = state.rooms.counts();
    let Some(cluster) = &state.cluster else {
        return Json(serde_json::json!({ "status": "ok", "rooms": rooms, "peers": peers }))
            .into_response();
    };
    // With Redis, this instance is healthy only while it can reach it.
    let redis = cluster.healthy().await;
    let body = Json(serde_json::json!({
        "status": if redis { "ok" } else { "degraded" },
        "redis": if redis { "ok" } else { "unreachable" },
        "instance": cluster.instance(),
        "rooms": rooms,
        "peers": peers,
    }));
    let code = if redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let host = Some("burrow.example:8080");
        let none: &[String] = &[];
        assert!(origin_allowed(None, host, none), "the CLI sends no Origin");
        assert!(origin_allowed(
            Some("http://burrow.example:8080"),
            host,
            none
        ));
        assert!(origin_allowed(
            Some("https://BURROW.example:8080"),
            host,
            none
        ));
        assert!(!origin_allowed(Some("http://evil.example"), host, none));
        assert!(!origin_allowed(Some("null"), host, none));
        assert!(!origin_allowed(
            Some("http://burrow.example:8080"),
            None,
            none
        ));
        let listed = ["https://evil.example/".to_string()];
        assert!(origin_allowed(Some("https://evil.example"), host, &listed));
        assert!(origin_allowed(Some("http://x"), host, &["*".to_string()]));
    }
}
