//! Exposed sites on origins of their own.
//!
//! A site a peer exposes (`burrow expose`) is someone else's code. Opened on the room page's own
//! origin it could script the page (send chat as the visitor, read its storage and saved tokens,
//! reach other peers' services). So every exposed service gets its own origin, as ngrok and
//! Cloudflare Tunnel give every tunnel its own host name:
//!
//! ```text
//!  room page  http://burrow.example/r/ROOM          (origin A: the Room, the peer connections)
//!    └─ iframe  http://<label>.SITES/__burrow/host.html   (origin B: one per peer and service)
//!         └─ iframe  http://<label>.SITES/…         the site itself, served by B's service worker
//! ```
//!
//! `<label>` is 32 hex digits of SHA-256(salt, room, peer, service), computed by the page; the
//! salt is the visitor's own secret (random, kept in the room page's storage), so no other
//! member can compute the origin of a site this visitor opened, and B answers only when framed
//! by a room page (`frame-ancestors`, [`frame_ancestors`]): a hostile site, opened in the same
//! page, cannot frame another site's host frame and hand it a port of its own. B's service
//! worker turns each request into a message to the host frame, which passes it over a
//! `MessagePort` the room page handed it; the room page carries it over a data channel to that one
//! peer and service — the port cannot name any other. B cannot reach A's window or storage
//! (another origin), nor the signaling socket (this router serves B only the host frame's files).
//!
//! `SITES` is `--sites-domain` (a wildcard DNS name, e.g. `sites.burrow.example`, with a
//! wildcard certificate: service workers need https); without it, and for a page opened on
//! `localhost` or `127.0.0.1`, it is `localhost`, whose subdomains browsers resolve to loopback
//! and treat as secure.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tower_http::services::ServeFile;

use crate::state::AppState;

/// The domain under which sites get their origins, for a page reached at `request_host`.
pub fn domain_for(configured: Option<&str>, request_host: Option<&str>) -> Option<String> {
    if let Some(d) = configured {
        return Some(d.trim_matches('.').to_ascii_lowercase());
    }
    let host = request_host.map(crate::config::strip_port)?;
    ["localhost", "127.0.0.1", "[::1]"]
        .contains(&host.to_ascii_lowercase().as_str())
        .then(|| "localhost".to_string())
}

/// Whether `host` (a `Host` header) names a site origin: any name under `localhost` or under
/// the configured sites domain (a trailing dot ignored). Real site origins use a 32-hex-digit
/// label; other names there get the same few files, never the room page or the API.
pub fn is_site_host(host: &str, configured: Option<&str>) -> bool {
    let host = crate::config::strip_port(host).to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    let under = |parent: &str| {
        host.strip_suffix(parent)
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty())
    };
    under("localhost")
        || configured.is_some_and(|d| under(&d.trim_matches('.').to_ascii_lowercase()))
}

/// `/api/sites`: where the page should open sites (`{"domain": null}` when it cannot).
pub async fn api(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    Json(serde_json::json!({
        "domain": domain_for(state.config.sites_domain.as_deref(), host),
    }))
}

/// Where [`dispatch`] sends a site origin's requests.
#[derive(Clone)]
pub struct Dispatch {
    /// The site origins' router ([`router`]).
    pub sites: Router,
    /// `--sites-domain`, if set.
    pub domain: Option<String>,
    /// The server listens on loopback only: then only loopback host names are served (a web
    /// page elsewhere could otherwise reach it by DNS rebinding: its own name, resolved to
    /// 127.0.0.1, would pass the Origin check, which compares the page with `Host`).
    pub loopback_only: bool,
}

/// Whether `host` is a name a loopback-only server answers to.
fn is_loopback_host(host: &str) -> bool {
    let host = crate::config::strip_port(host).to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Sends requests for a site origin to [`router`], everything else on to the page's routes.
pub async fn dispatch(State(d): State<Dispatch>, mut req: Request, next: Next) -> Response {
    // HTTP/2 names the host in `:authority`, not `Host`: give every handler one place to look.
    if !req.headers().contains_key(header::HOST) {
        if let Some(value) = req
            .uri()
            .authority()
            .and_then(|a| axum::http::HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, value);
        }
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if d.loopback_only && !is_loopback_host(host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this server answers to localhost / 127.0.0.1 only\n",
        )
            .into_response();
    }
    if is_site_host(host, d.domain.as_deref()) {
        match tower::ServiceExt::oneshot(d.sites, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    } else {
        next.run(req).await
    }
}

/// What a site origin serves itself: the host frame, its script and style, and the service
/// worker. Any other path reaches the server only before the service worker runs, and gets a
/// hint. Every answer may be framed only by a room page ([`frame_ancestors`]).
pub fn router(state: &AppState) -> Router {
    let dir = state.config.www.join("site");
    let sw = ServeFile::new(dir.join("sw.js"));
    let policy = HeaderValue::from_str(&format!(
        "default-src 'self'; script-src 'self'; frame-src 'self'; object-src 'none'; \
         base-uri 'none'; frame-ancestors {}",
        frame_ancestors(&state.config)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(STRICT_POLICY));
    Router::new()
        .route_service("/__burrow/host.html", ServeFile::new(dir.join("host.html")))
        .route_service("/__burrow/host.js", ServeFile::new(dir.join("host.js")))
        .route_service("/__burrow/host.css", ServeFile::new(dir.join("host.css")))
        .route_service("/__burrow/sw.js", sw)
        .fallback(not_here)
        .layer(axum::middleware::map_response(move |resp| {
            site_headers(resp, policy.clone())
        }))
}

/// The policy when the room pages' origins cannot be written as one (never expected: names
/// from the configuration are checked by [`frame_ancestors`]): nothing may frame a site.
const STRICT_POLICY: &str = "default-src 'self'; script-src 'self'; frame-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The origins whose pages may frame a site's host frame: the room page's, wherever the
/// server is reached (loopback, the sites domain's parent, `--public-host`, the ACME names,
/// `--allowed-origin`). Never a site origin: a hostile exposed site, itself framed by the room
/// page, cannot frame another site's host frame and hand it a port of its own.
pub fn frame_ancestors(config: &crate::config::Config) -> String {
    // CSP host sources have no IPv6 literals: a page on [::1] opens sites through localhost.
    let mut sources: Vec<String> = ["localhost", "127.0.0.1"]
        .iter()
        .flat_map(|h| [format!("http://{h}:*"), format!("https://{h}:*")])
        .collect();
    let mut names: Vec<String> = config.acme_domain.clone();
    names.extend(config.public_host.clone());
    if let Some(domain) = &config.sites_domain {
        let domain = domain.trim_matches('.').to_ascii_lowercase();
        if let Some((_, parent)) = domain.split_once('.') {
            if parent.contains('.') {
                names.push(parent.to_string());
            }
        }
    }
    let host_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    for name in names {
        let name = name.trim_matches('.').to_ascii_lowercase();
        let is_site = config.sites_domain.as_deref().is_some_and(|d| {
            is_site_host(&name, Some(d)) || name == d.trim_matches('.').to_ascii_lowercase()
        });
        if !name.is_empty() && name.chars().all(host_char) && !is_site {
            sources.push(format!("https://{name}:*"));
        }
    }
    for origin in &config.allowed_origin {
        let ok = origin.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https")
                && !rest.is_empty()
                && rest.chars().all(|c| host_char(c) || c == ':')
        });
        if ok {
            sources.push(origin.trim_end_matches('/').to_ascii_lowercase());
        }
    }
    sources.dedup();
    sources.join(" ")
}

async fn not_here() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        "This address shows a site a Burrow peer exposes; open it from the room page.\n",
    )
}

/// The host frame's own policy: its script only, framing only its own origin, framed only by
/// a room page; the worker may control the whole origin. The site's pages (made by its
/// worker) carry the site's headers.
async fn site_headers(mut resp: Response, policy: HeaderValue) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, policy);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert("service-worker-allowed", HeaderValue::from_static("/"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn site_hosts() {
        assert!(is_site_host(&format!("{LABEL}.localhost:8080"), None));
        assert!(is_site_host(
            &format!("{LABEL}.sites.example"),
            Some("sites.example")
        ));
        assert!(is_site_host(&format!("{LABEL}.localhost.:8080"), None));
        assert!(
            is_site_host("short.localhost", None),
            "any name under it, never the app"
        );
        assert!(is_site_host(&format!("x.{LABEL}.localhost"), None));
        assert!(!is_site_host("localhost:8080", None));
        assert!(!is_site_host("localhost.:8080", None));
        assert!(!is_site_host("127.0.0.1:8080", None));
        assert!(!is_site_host(&format!("{LABEL}.evil.example"), None));
        assert!(!is_site_host("sites.example", Some("sites.example")));
    }

    #[test]
    fn loopback_names() {
        for ok in [
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:8080",
            "x.localhost",
            "LOCALHOST.",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.0.0.1",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn only_room_pages_frame_a_site() {
        let mut c = crate::config::Config::defaults();
        c.sites_domain = Some("sites.burrow.example".into());
        c.public_host = Some("burrow.example".into());
        c.acme_domain = vec!["x.sites.burrow.example".into(), "bad name".into()];
        c.allowed_origin = vec!["https://other.example".into(), "*".into()];
        let a = frame_ancestors(&c);
        for want in [
            "http://localhost:*",
            "https://127.0.0.1:*",
            "https://burrow.example:*",
            "https://other.example",
        ] {
            assert!(a.split(' ').any(|s| s == want), "{want} in {a}");
        }
        for never in ["sites.burrow.example", "bad", "*.", " * "] {
            assert!(!a.contains(never), "{never} not in {a}");
        }
        assert!(!a.split(' ').any(|s| s == "*"));
    }

    #[test]
    fn domains() {
        assert_eq!(
            domain_for(None, Some("127.0.0.1:8080")).as_deref(),
            Some("localhost")
        );
        assert_eq!(
            domain_for(None, Some("localhost:8080")).as_deref(),
            Some("localhost")
        );
        assert_eq!(domain_for(None, Some("203.0.113.10:8080")), None);
        assert_eq!(
            domain_for(Some("Sites.Example."), Some("burrow.example")).as_deref(),
            Some("sites.example")
        );
    }
}
