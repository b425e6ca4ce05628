//! What a running `burrow expose` or `burrow forward` is doing, as frp's admin page shows it:
//! its services (health, cap, open streams, bytes each way), its peers and their paths. Served
//! with `--admin 127.0.0.1:PORT` as a page (`/`) and as JSON (`/status`), and read by
//! `burrow status`.
//!
//! Only on loopback (there is no login), and only to requests naming a loopback host: a web
//! page elsewhere cannot read it through a DNS name rebound to 127.0.0.1.

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::meter::Reading;

/// The default `--admin` address (frp's admin port).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7400";

/// A snapshot of a running `expose` or `forward`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `expose` or `forward`.
    pub mode: String,
    /// The room's page.
    pub room: String,
    /// Our peer id, once in the room.
    pub peer_id: Option<String>,
    /// What we expose, or what the peers offer us.
    pub services: Vec<ServiceStatus>,
    /// The peers in the room.
    pub peers: Vec<PeerStatus>,
    /// Forward mode: what our streams carried (in: from the peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried: Option<Reading>,
}

/// One service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// `http`, `tcp` or `udp`.
    pub kind: String,
    /// Expose mode: the local address it is connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Forward mode: the peer offering it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Whether its health check finds it down.
    pub down: bool,
    /// Whether it needs a token.
    pub protected: bool,
    /// Its bandwidth cap, bytes a second each way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<u64>,
    /// Expose mode: what it carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried: Option<Reading>,
}

/// One peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its id.
    pub id: String,
    /// Its display name, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the link to it is up.
    pub connected: bool,
    /// The path (`direct (hole punched)`, `relayed`, …), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The last round-trip time measured, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
}

/// How the admin server asks the session for a snapshot.
pub type Asks = mpsc::Sender<oneshot::Sender<Status>>;

/// Why `--admin` cannot be served or `burrow status` cannot read one.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The status has no login: it stays on this machine.
    #[error(
        "--admin {0}: give a loopback address (like {DEFAULT_ADMIN}); the status page has no login"
    )]
    NotLoopback(SocketAddr),
    /// The socket failed.
    #[error("admin {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    /// Not what a Burrow admin answers.
    #[error(
        "{0} does not answer as burrow's admin ({1}); is expose/forward running with --admin {0}?"
    )]
    Answer(SocketAddr, String),
}

/// Listens on `addr` (loopback only) for the admin page.
pub async fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener, AdminError> {
    if !addr.ip().is_loopback() {
        return Err(AdminError::NotLoopback(addr));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AdminError::Io(addr, e))
}

/// Serves the admin page on `listener` until the session goes (`asks` closes).
pub async fn serve(listener: tokio::net::TcpListener, asks: Asks) {
    let closed = asks.clone();
    let app = axum::Router::new()
        .route("/", axum::routing::get(page))
        .route("/status", axum::routing::get(json))
        .with_state(asks);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { closed.closed().await })
        .await;
}

/// Whether a request's `Host` names this machine (a rebound DNS name does not).
fn local_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn snapshot(asks: &Asks, headers: &HeaderMap) -> Result<Status, Response> {
    if !local_host(headers) {
        return Err((StatusCode::FORBIDDEN, "not a local host name\n").into_response());
    }
    let (tx, rx) = oneshot::channel();
    let asked = asks.send(tx).await.is_ok();
    match (asked, rx.await) {
        (true, Ok(status)) => Ok(status),
        _ => Err((StatusCode::SERVICE_UNAVAILABLE, "burrow is stopping\n").into_response()),
    }
}

async fn json(State(asks): State<Asks>, headers: HeaderMap) -> Response {
    match snapshot(&asks, &headers).await {
        Ok(status) => axum::Json(status).into_response(),
        Err(refused) => refused,
    }
}

async fn page(State(asks): State<Asks>, headers: HeaderMap) -> Response {
    match snapshot(&asks, &headers).await {
        Ok(status) => (
            [(
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            )],
            Html(render(&status)),
        )
            .into_response(),
        Err(refused) => refused,
    }
}

/// Text for HTML (peers choose their names and their services' names).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).to_string()
}

/// The admin page: two tables, refreshed every two seconds.
fn render(s: &Status) -> String {
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2>\
         <title>burrow {mode}</title><style>body{{font:14px system-ui;margin:2em}}\
         table{{border-collapse:collapse;margin-bottom:2em}}td,th{{padding:.3em .8em;\
         border-bottom:1px solid #ddd;text-align:left}}.down{{color:#b00}}</style>\
         <h1>burrow {mode}</h1><p>room {room} · peer {me}</p><h2>Services</h2><table>\
         <tr><th>name<th>kind<th>where<th>state<th>cap<th>open<th>streams<th>in<th>out",
        mode = escape(&s.mode),
        room = escape(&s.room),
        me = escape(s.peer_id.as_deref().unwrap_or("(joining)")),
    );
    for svc in &s.services {
        let r = svc.carried.unwrap_or_default();
        let _ = write!(
            html,
            "<tr><td>{}<td>{}<td>{}<td{}>{}<td>{}<td>{}<td>{}<td>{}<td>{}",
            escape(&svc.name),
            escape(&svc.kind),
            escape(svc.addr.as_deref().or(svc.peer.as_deref()).unwrap_or("")),
            if svc.down { " class=down" } else { "" },
            if svc.down { "down" } else { "up" },
            svc.max_rate
                .map(|r| format!("{}/s", bytes(r)))
                .unwrap_or_else(|| "none".into()),
            r.open,
            r.streams,
            bytes(r.bytes_in),
            bytes(r.bytes_out),
        );
    }
    html.push_str("</table><h2>Peers</h2><table><tr><th>peer<th>name<th>link<th>path<th>rtt");
    for p in &s.peers {
        let _ = write!(
            html,
            "<tr><td>{}<td>{}<td>{}<td>{}<td>{}",
            escape(&p.id),
            escape(p.name.as_deref().unwrap_or("")),
            if p.connected { "up" } else { "connecting" },
            escape(p.path.as_deref().unwrap_or("")),
            p.rtt_ms.map(|r| format!("{r:.1} ms")).unwrap_or_default(),
        );
    }
    html.push_str("</table>");
    html
}

/// The most of an answer `burrow status` reads.
const ANSWER_MAX: usize = 1 << 20;

/// Reads the status of the `burrow` whose admin listens on `addr`.
pub async fn fetch(addr: SocketAddr) -> Result<Status, AdminError> {
    let io = |e| AdminError::Io(addr, e);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    let request = format!("GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    (&mut tcp)
        .take(ANSWER_MAX as u64)
        .read_to_end(&mut raw)
        .await
        .map_err(io)?;
    let bad = |why: &str| AdminError::Answer(addr, why.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    if !head.starts_with("HTTP/1.1 200") {
        let first = head.lines().next().unwrap_or_default();
        return Err(bad(first));
    }
    serde_json::from_slice(&raw[split + 4..]).map_err(|e| bad(&e.to_string()))
}

/// `burrow status` for people: the services, then the peers.
pub fn table(s: &Status) -> String {
    let mut out = format!(
        "burrow {} in {} as {}\n\n",
        s.mode,
        s.room,
        s.peer_id.as_deref().unwrap_or("(joining)")
    );
    let _ = writeln!(
        out,
        "{:<16} {:<5} {:<22} {:<5} {:>10} {:>5} {:>8} {:>10} {:>10}",
        "SERVICE", "KIND", "WHERE", "STATE", "CAP/S", "OPEN", "STREAMS", "IN", "OUT"
    );
    for svc in &s.services {
        // Counted per service where it is exposed; `forward` counts all its streams together.
        let [open, streams, bytes_in, bytes_out] = match svc.carried {
            Some(r) => [
                r.open.to_string(),
                r.streams.to_string(),
                bytes(r.bytes_in),
                bytes(r.bytes_out),
            ],
            None => ["-", "-", "-", "-"].map(String::from),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<5} {:<22} {:<5} {:>10} {:>5} {:>8} {:>10} {:>10}",
            svc.name,
            svc.kind,
            svc.addr.as_deref().or(svc.peer.as_deref()).unwrap_or("-"),
            if svc.down { "down" } else { "up" },
            svc.max_rate.map(bytes).unwrap_or_else(|| "-".into()),
            open,
            streams,
            bytes_in,
            bytes_out,
        );
    }
    if let Some(r) = s.carried {
        let _ = writeln!(
            out,
            "carried: {} streams ({} open), {} in, {} out",
            r.streams,
            r.open,
            bytes(r.bytes_in),
            bytes(r.bytes_out)
        );
    }
    let _ = writeln!(
        out,
        "\n{:<12} {:<16} {:<11} {:<22} {:>9}",
        "PEER", "NAME", "LINK", "PATH", "RTT"
    );
    for p in &s.peers {
        let _ = writeln!(
            out,
            "{:<12} {:<16} {:<11} {:<22} {:>9}",
            p.id,
            p.name.as_deref().unwrap_or("-"),
            if p.connected { "up" } else { "connecting" },
            p.path.as_deref().unwrap_or("-"),
            p.rtt_ms
                .map(|r| format!("{r:.1} ms"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, h.parse().unwrap());
        m
    }

    #[test]
    fn only_local_host_names_are_answered() {
        for ok in [
            "127.0.0.1:7400",
            "localhost:7400",
            "[::1]:7400",
            "LOCALHOST",
            "127.0.0.2",
        ] {
            assert!(local_host(&host(ok)), "{ok}");
        }
        for bad in [
            "evil.example:7400",
            "evil.example",
            "10.0.0.1:7400",
            "localhost.evil:7400",
        ] {
            assert!(!local_host(&host(bad)), "{bad}");
        }
        assert!(!local_host(&HeaderMap::new()));
    }

    #[test]
    fn names_from_peers_cannot_write_html() {
        let s = Status {
            services: vec![ServiceStatus {
                name: "<script>x</script>".into(),
                ..ServiceStatus::default()
            }],
            peers: vec![PeerStatus {
                id: "p1".into(),
                name: Some("\"><img src=x onerror=alert(1)>".into()),
                ..PeerStatus::default()
            }],
            ..Status::default()
        };
        let html = render(&s);
        assert!(
            !html.contains("<script>x") && !html.contains("<img"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;"));
    }

    #[tokio::test]
    async fn an_address_elsewhere_is_refused() {
        let e = listen("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
        assert!(matches!(e, AdminError::NotLoopback(_)), "{e}");
    }
}
