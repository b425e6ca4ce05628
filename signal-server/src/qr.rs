//! `/qr.svg?text=…`: the room link as a QR code, for the page to show beside the link.
//!
//! Drawn here rather than in the page so the page's wasm carries no QR encoder (about 4 KB of
//! its gzipped size). Only a room link *of this server* is drawn (`http(s)://HOST/r/ROOM`, HOST
//! the request's own `Host`, a valid room id): the route is not a QR generator for any text, or
//! for another site's links, under this server's name. The page already holds
//! the link and the server sees the same room id on the WebSocket, so nothing new is disclosed;
//! the picture holds no text, only squares, and no cache keeps it.

use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use qrcodegen::{QrCode, QrCodeEcc};
use serde::Deserialize;

/// Longest text drawn: a room link is under 100 bytes; this leaves room for long host names.
pub const MAX_TEXT: usize = 300;

/// The query: what to encode.
#[derive(Deserialize)]
pub struct QrQuery {
    text: String,
}

/// The route: an SVG picture, or 400 for a text that is not a room link.
pub async fn svg(
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    Query(q): Query<QrQuery>,
) -> Response {
    // HTTP/1.1 names the host in `Host`, HTTP/2 (browsers over TLS) in `:authority`.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    match host.and_then(|host| render(&q.text, host)) {
        Some(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            svg,
        )
            .into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            format!("text must be a room link of this server, at most {MAX_TEXT} bytes\n"),
        )
            .into_response(),
    }
}

/// Whether `text` is a room link on `own` (a host and port, as in `Host`):
/// `http(s)://HOST/r/ROOM`, nothing after the room id.
fn is_room_link(text: &str, own: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    let Some((host, room)) = rest.split_once("/r/") else {
        return false;
    };
    crate::config::is_plain_host(host)
        && host.eq_ignore_ascii_case(own)
        && signal_protocol::validate_room_id(room).is_ok()
}

/// The SVG for a room link: a square per run of dark modules on a white ground, two modules of
/// quiet zone, 4 px per module unless the page scales it.
pub fn render(text: &str, own: &str) -> Option<String> {
    if text.len() > MAX_TEXT || !is_room_link(text, own) {
        return None;
    }
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).ok()?;
    let border = 2;
    let size = qr.size() + 2 * border;
    let px = size * 4;
    let mut path = String::new();
    for y in 0..qr.size() {
        let mut x = 0;
        while x < qr.size() {
            let start = x;
            while x < qr.size() && qr.get_module(x, y) {
                x += 1;
            }
            if x > start {
                let run = x - start;
                path.push_str(&format!(
                    "M{},{}h{run}v1h-{run}z",
                    start + border,
                    y + border
                ));
            }
            x += 1;
        }
    }
    Some(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{px}" height="{px}" viewBox="0 0 {size} {size}" shape-rendering="crispEdges"><rect width="100%" height="100%" fill="#fff"/><path d="{path}" fill="#000"/></svg>"##
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paints the squares of `svg` (4 px per module), as a browser would, for a decoder to read.
    fn paint(svg: &str) -> (usize, Vec<u8>) {
        let view = svg.split("viewBox=\"0 0 ").nth(1).expect("viewBox");
        let modules: usize = view
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("size");
        let scale = 4;
        let side = modules * scale;
        let mut pixels = vec![255u8; side * side];
        let path = svg
            .split(" d=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .expect("path");
        // Each run is `M{x},{y}h{run}v1h-{run}z`.
        for run in path.split('M').filter(|s| !s.is_empty()) {
            let (corner, rest) = run.split_once('h').expect("corner");
            let width: usize = rest
                .split('v')
                .next()
                .and_then(|w| w.parse().ok())
                .expect("run");
            let (x, y) = corner.split_once(',').expect("x,y");
            let (x, y): (usize, usize) = (x.parse().expect("x"), y.parse().expect("y"));
            for dy in 0..scale {
                for dx in 0..width * scale {
                    pixels[(y * scale + dy) * side + x * scale + dx] = 0;
                }
            }
        }
        (side, pixels)
    }

    #[test]
    fn the_picture_reads_back_as_the_room_link() {
        let link = "https://burrow.example:8443/r/Zq3xv0W1bJ8mUo2RkT9yAw";
        let svg = render(link, "burrow.example:8443").expect("a picture");
        let (side, pixels) = paint(&svg);
        let mut image =
            rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| pixels[y * side + x]);
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the picture");
        let (_, content) = grids[0].decode().expect("decodes");
        assert_eq!(content, link);
    }

    #[test]
    fn only_a_room_link_is_drawn() {
        assert!(render("http://127.0.0.1:8080/r/abcdefghijkl", "127.0.0.1:8080").is_some());
        assert!(render("https://[::1]:8443/r/Zq3xv0W1bJ8mUo2RkT9yAw", "[::1]:8443").is_some());
        assert!(render("https://A.example/r/abcdefghijkl", "a.example").is_some());
        // Another site's room link, under this server's name: refused.
        assert!(render("https://evil.example/r/abcdefghijkl", "a.example").is_none());
        assert!(render("http://127.0.0.1:9999/r/abcdefghijkl", "127.0.0.1:8080").is_none());
        for text in [
            "",
            "hello",
            "https://evil.example/login",
            "https:///r/abcdefghijkl",
            "javascript:alert(1)//r/abcdefghijkl",
            "https://a.example/r/abcdefghijkl?x=1",
            "https://a.example/r/abcdefghijkl/more",
            "https://user@a.example/r/abcdefghijkl",
        ] {
            assert!(render(text, "a.example").is_none(), "{text}");
        }
        let long = format!("https://{}.example/r/abcdefghijkl", "a".repeat(MAX_TEXT));
        assert!(render(&long, &format!("{}.example", "a".repeat(MAX_TEXT))).is_none());
    }
}
