//! The HTTP routes: the page and its files, room links, new rooms, the WebSocket, health.

use std::sync::Arc;

use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use rand::RngCore;
use signal_protocol::validate_room_id;
use tower_http::services::{ServeDir, ServeFile};

use crate::connection::{self, Client};
use crate::AppState;

/// Builds the router over shared state.
pub fn router(state: Arc<AppState>) -> Router {
    let www = state.config.www.clone();
    let index = ServeFile::new(www.join("index.html"));
    Router::new()
        .route_service("/", index.clone())
        .route("/r/{room}", get(room_page))
        .route("/new", get(new_room))
        .route("/ws/{room}", get(websocket))
        .route("/healthz", get(healthz))
        .route("/api/netcheck", get(netcheck))
        .fallback_service(ServeDir::new(www))
        .with_state(state)
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
    Redirect::to(&format!("/r/{}", new_room_id()))
}

/// A fresh room id: 22 URL-safe characters from 16 random bytes.
pub fn new_room_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `/ws/{room}`: upgrades to the signaling WebSocket. The room id is checked on `hello`, so a
/// bad one gets a protocol error the page can show instead of a bare failed handshake.
async fn websocket(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let limit = state.config.max_message_bytes;
    // Frames up to 4x the limit are read and refused politely; beyond that the socket closes.
    ws.read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(limit.saturating_mul(4))
        .max_frame_size(limit.saturating_mul(4))
        .on_upgrade(move |socket| connection::serve(socket, Client { room, host }, state))
}

/// `/api/netcheck`: the two STUN URLs a client compares to classify its NAT.
async fn netcheck(State(state): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    Json(serde_json::json!({ "stun": state.netcheck_urls(host) }))
}

/// `/healthz`: liveness and counts.
async fn healthz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let (rooms, peers) = state.rooms.counts();
    Json(serde_json::json!({ "status": "ok", "rooms": rooms, "peers": peers }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_room_ids_are_valid_and_distinct() {
        let a = new_room_id();
        let b = new_room_id();
        assert_eq!(a.len(), 22);
        assert!(validate_room_id(&a).is_ok());
        assert_ne!(a, b);
    }
}
