//! `/qr.svg?text=…`: the room link as a QR code, for the page to show beside the link.
//!
//! Drawn here rather than in the page so the page's wasm carries no QR encoder (about 4 KB of
//! its gzipped size). The text is a room link the page already holds; the server sees the same
//! room id on the WebSocket, so nothing new is disclosed. The picture holds no text, only
//! squares, and the answer is private to the browser's cache.

use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use qrcodegen::{QrCode, QrCodeEcc};
use serde::Deserialize;

/// Longest text drawn: a room link is under 100 bytes; this leaves room for long host names.
pub const MAX_TEXT: usize = 512;

/// The query: what to encode.
#[derive(Deserialize)]
pub struct QrQuery {
    text: String,
}

/// The route: an SVG picture, or 400 for a text that is empty or too long.
pub async fn svg(Query(q): Query<QrQuery>) -> Response {
    match render(&q.text) {
        Some(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "private, max-age=86400"),
            ],
            svg,
        )
            .into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            format!("text must be 1 to {MAX_TEXT} bytes\n"),
        )
            .into_response(),
    }
}

/// The SVG for `text`: one square per dark module on a white ground, two modules of quiet zone.
pub fn render(text: &str) -> Option<String> {
    if text.is_empty() || text.len() > MAX_TEXT {
        return None;
    }
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).ok()?;
    let border = 2;
    let size = qr.size() + 2 * border;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    Some(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" shape-rendering="crispEdges"><rect width="100%" height="100%" fill="#fff"/><path d="{path}" fill="#000"/></svg>"##
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
        for square in path.split('M').filter(|s| !s.is_empty()) {
            let corner = square.split('h').next().expect("corner");
            let (x, y) = corner.split_once(',').expect("x,y");
            let (x, y): (usize, usize) = (x.parse().expect("x"), y.parse().expect("y"));
            for dy in 0..scale {
                for dx in 0..scale {
                    pixels[(y * scale + dy) * side + x * scale + dx] = 0;
                }
            }
        }
        (side, pixels)
    }

    #[test]
    fn the_picture_reads_back_as_the_room_link() {
        let link = "https://burrow.example:8443/r/Zq3xv0W1bJ8mUo2RkT9yAw";
        let svg = render(link).expect("a picture");
        let (side, pixels) = paint(&svg);
        let mut image =
            rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| pixels[y * side + x]);
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the picture");
        let (_, content) = grids[0].decode().expect("decodes");
        assert_eq!(content, link);
    }

    #[test]
    fn empty_or_huge_text_is_refused() {
        assert!(render("").is_none());
        assert!(render(&"x".repeat(MAX_TEXT + 1)).is_none());
        assert!(render(&"x".repeat(MAX_TEXT)).is_some());
    }
}
