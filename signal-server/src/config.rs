//! Command-line flags (each with a `BURROW_*` environment twin) and their defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Everything the server can be told at start-up.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "signal-server",
    version,
    about = "Burrow's rendezvous server: rooms, signaling relay, STUN/TURN, and the web page"
)]
pub struct Config {
    /// Address for HTTP and WebSocket (the page, /ws/{room}, /healthz); port 0 picks a free one.
    #[arg(long, env = "BURROW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// UDP address of the embedded STUN/TURN server; port 0 picks a free one.
    #[arg(long, env = "BURROW_STUN_LISTEN", default_value = "0.0.0.0:3478")]
    pub stun_listen: SocketAddr,

    /// Host name or IP that clients are told to use for STUN/TURN (default: the host the client
    /// connected to).
    #[arg(long, env = "BURROW_PUBLIC_HOST")]
    pub public_host: Option<String>,

    /// Folder holding the web page (index.html and the wasm build in pkg/).
    #[arg(long, env = "BURROW_WWW", default_value = "www")]
    pub www: PathBuf,

    /// Largest signaling message accepted, in bytes; larger ones are refused with an error.
    #[arg(long, env = "BURROW_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Most peers in one room; a join beyond it is refused with `room_full`.
    #[arg(long, env = "BURROW_MAX_PEERS_PER_ROOM", default_value_t = 16)]
    pub max_peers_per_room: usize,

    /// Most rooms at once; a join that would open one more is refused with `server_full`.
    #[arg(long, env = "BURROW_MAX_ROOMS", default_value_t = 100_000)]
    pub max_rooms: usize,

    /// Sustained messages per second one connection may send (a token bucket).
    #[arg(long, env = "BURROW_RATE_PER_SEC", default_value_t = 100)]
    pub rate_per_sec: u32,

    /// Burst of messages one connection may send at once before the rate applies.
    #[arg(long, env = "BURROW_RATE_BURST", default_value_t = 400)]
    pub rate_burst: u32,

    /// How often the server pings each WebSocket (e.g. `10s`, `500ms`).
    #[arg(long, env = "BURROW_PING_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A peer silent (no pong, no message) for this long is dropped and announced as left.
    #[arg(long, env = "BURROW_PING_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub ping_timeout: Duration,

    /// Messages queued for one peer before signals to it are refused with `peer_congested`.
    #[arg(long, env = "BURROW_PEER_QUEUE", default_value_t = 256)]
    pub peer_queue: usize,

    /// Most simultaneous TCP connections (HTTP or WebSocket) from one client IP; 0 means no
    /// limit. Beyond it a new connection is closed at once, before any byte is read.
    #[arg(long, env = "BURROW_MAX_CONNECTIONS_PER_IP", default_value_t = 64)]
    pub max_connections_per_ip: usize,

    /// Most simultaneous TCP connections in total; 0 means no limit.
    #[arg(long, env = "BURROW_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// A connection must finish sending its HTTP request headers within this time (slowloris).
    #[arg(long, env = "BURROW_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// A connection that carries no byte either way for this long is closed: idle HTTP/1
    /// keep-alive and HTTP/2 connections alike (WebSockets are pinged every --ping-interval,
    /// so they are never idle: the deadline is at least twice that).
    #[arg(long, env = "BURROW_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// A WebSocket must send `hello` within this time of opening, or it is closed.
    #[arg(long, env = "BURROW_HELLO_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub hello_timeout: Duration,

    /// A write to a WebSocket that does not complete within this time (the peer stopped reading)
    /// drops the peer, who is announced as left.
    #[arg(long, env = "BURROW_WRITE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Browser origins allowed to open the signaling WebSocket, beyond the server's own
    /// (repeatable, e.g. `https://burrow.example`; `*` allows any). Clients that send no
    /// `Origin` (the `burrow` CLI) are always allowed.
    #[arg(long, env = "BURROW_ALLOWED_ORIGIN", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,

    /// Serve `/metrics` (Prometheus text) on this address only, instead of on the main one.
    #[arg(long, env = "BURROW_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Parent domain of the origins exposed sites open on (`<label>.DOMAIN`, one per peer and
    /// service): needs a wildcard DNS record and, for https, a wildcard certificate. Without it,
    /// sites open only from a page on localhost (under `*.localhost`).
    #[arg(long, env = "BURROW_SITES_DOMAIN")]
    pub sites_domain: Option<String>,

    /// Serve https and wss with this certificate chain (PEM); needs --tls-key.
    #[arg(
        long,
        env = "BURROW_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "BURROW_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,

    /// Get and renew a certificate for this name automatically over ACME (TLS-ALPN-01 on the
    /// main address, which must be port 443 for the world); repeatable. Instead of --tls-cert.
    #[arg(
        long,
        env = "BURROW_ACME_DOMAIN",
        value_delimiter = ',',
        conflicts_with = "tls_cert"
    )]
    pub acme_domain: Vec<String>,

    /// The ACME directory (default: Let's Encrypt).
    #[arg(
        long,
        env = "BURROW_ACME_DIRECTORY",
        default_value = "https://acme-v02.api.letsencrypt.org/directory"
    )]
    pub acme_directory: String,

    /// Where the ACME account and certificates are kept across restarts.
    #[arg(long, env = "BURROW_ACME_CACHE", default_value = "acme-cache")]
    pub acme_cache: PathBuf,

    /// Contact for the ACME account (e.g. `mailto:ops@example.org`); repeatable.
    #[arg(long, env = "BURROW_ACME_CONTACT", value_delimiter = ',')]
    pub acme_contact: Vec<String>,

    /// Also trust this CA (PEM) for the ACME directory's https (a private ACME server).
    #[arg(long, env = "BURROW_ACME_CA_CERT", value_name = "FILE")]
    pub acme_ca_cert: Option<PathBuf>,

    /// With TLS on, also listen for plain HTTP here and redirect every request to https (e.g.
    /// `0.0.0.0:80`).
    #[arg(long, env = "BURROW_HTTP_REDIRECT_LISTEN")]
    pub http_redirect_listen: Option<SocketAddr>,

    /// Share rooms with other instances through this Redis (`redis://host:port`): membership,
    /// limits and routing live there. Without it, rooms live in this process.
    #[arg(long, env = "BURROW_REDIS")]
    pub redis: Option<String>,

    /// How long an instance counts as alive without renewing (its peers are then removed from
    /// the rooms and announced as left).
    #[arg(long, env = "BURROW_REDIS_INSTANCE_TTL", default_value = "15s", value_parser = parse_duration)]
    pub redis_instance_ttl: Duration,

    /// How long a peer whose connection was lost (without leaving) keeps its place in the room:
    /// back within it, with its resume token, it keeps its id and nobody sees it leave. `0s`
    /// removes peers as soon as their connection is lost.
    #[arg(long, env = "BURROW_RESUME_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub resume_grace: Duration,

    /// A file holding the secret that signs resume tokens (created, random, if missing), so
    /// tokens stay valid across restarts. Without it (and without `--redis`, where instances
    /// share one), a restarted server gives ids back only during its first grace period.
    #[arg(long, env = "BURROW_RESUME_SECRET_FILE")]
    pub resume_secret_file: Option<PathBuf>,

    /// A second STUN port, so `burrow netcheck` can tell whether the NAT's mapping depends on the
    /// destination (default: the STUN port + 1; 0 picks a free one).
    #[arg(long, env = "BURROW_STUN_ALT_PORT")]
    pub stun_alt_port: Option<u16>,

    /// Turn off the embedded TURN relay (STUN stays).
    #[arg(long, env = "BURROW_NO_TURN")]
    pub no_turn: bool,

    /// Shared secret for TURN credentials (TURN REST API / coturn `use-auth-secret`); default: a
    /// random one per start.
    #[arg(long, env = "BURROW_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// How long minted TURN credentials stay valid.
    #[arg(long, env = "BURROW_TURN_TTL", default_value = "12h", value_parser = parse_duration)]
    pub turn_ttl: Duration,

    /// The IP relayed candidates advertise (default: the STUN listen IP, or the public host if it
    /// is an IP, or 127.0.0.1).
    #[arg(long, env = "BURROW_TURN_RELAY_IP")]
    pub turn_relay_ip: Option<IpAddr>,

    /// Peer address ranges never relayed to, beyond the built-in ones (private, CGNAT,
    /// loopback, link-local, unspecified, multicast, reserved, IPv6 ULA; repeatable, CIDR).
    #[arg(long, env = "BURROW_TURN_DENIED_PEER", value_delimiter = ',')]
    pub turn_denied_peer: Vec<ipnet::IpNet>,

    /// Peer address ranges relayed to even if otherwise denied (repeatable, CIDR).
    #[arg(long, env = "BURROW_TURN_ALLOWED_PEER", value_delimiter = ',')]
    pub turn_allowed_peer: Vec<ipnet::IpNet>,

    /// Most TURN allocations one peer may hold at once.
    #[arg(long, env = "BURROW_TURN_MAX_PER_PEER", default_value_t = 32)]
    pub turn_max_allocations_per_peer: usize,

    /// Most TURN-over-TCP connections from one client IP at once (for networks that block
    /// UDP; served on the STUN port).
    #[arg(long, env = "BURROW_TURN_TCP_MAX_PER_IP", default_value_t = 16)]
    pub turn_tcp_max_per_ip: usize,

    /// Most TURN-over-TCP connections at once, in total.
    #[arg(long, env = "BURROW_TURN_TCP_MAX", default_value_t = 4096)]
    pub turn_tcp_max: usize,

    /// Most TURN allocations at once, in total.
    #[arg(long, env = "BURROW_TURN_MAX_ALLOCATIONS", default_value_t = 2000)]
    pub turn_max_allocations: usize,

    /// External TURN servers to list too (e.g. `turn:turn1.example.org:3478`; repeatable: the
    /// relay scales out over several coturn boxes), each with credentials minted from the
    /// --external-turn-secret at the same position. One box reached several ways is one entry
    /// with its URLs separated by spaces (`"turn:t1:3478 turn:t1:3478?transport=tcp
    /// turns:t1:443?transport=tcp"`), so networks that block UDP reach it over TCP or TLS.
    #[arg(
        long,
        env = "BURROW_EXTERNAL_TURN",
        value_delimiter = ',',
        requires = "external_turn_secret"
    )]
    pub external_turn: Vec<String>,

    /// Each external TURN server's `static-auth-secret`, in the order of --external-turn (one
    /// secret for all of them is accepted too).
    #[arg(
        long,
        env = "BURROW_EXTERNAL_TURN_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub external_turn_secret: Vec<String>,

    /// Most TURN allocations from one client IP at once, whichever peers' credentials they use.
    #[arg(long, env = "BURROW_TURN_MAX_PER_IP", default_value_t = 64)]
    pub turn_max_per_ip: usize,

    /// Relayed bytes per second allowed to one peer (all its allocations, both directions, a
    /// token bucket; so also per allocation); 0 means no cap (like coturn's max-bps).
    #[arg(long, env = "BURROW_TURN_MAX_BPS", default_value_t = 0)]
    pub turn_max_bps: u64,

    /// Unauthenticated TURN answers (401/438/400) per second to one client network (IPv4 /24,
    /// IPv6 /48): they are larger than the requests, so spoofed sources could use the relay as
    /// a reflector. 0 means no limit.
    #[arg(long, env = "BURROW_TURN_UNAUTHENTICATED_RATE", default_value_t = 100)]
    pub turn_unauthenticated_rate: u32,

    /// Longest TURN allocation lifetime granted; a requested LIFETIME is clamped to it.
    #[arg(long, env = "BURROW_TURN_MAX_LIFETIME", default_value = "600s", value_parser = parse_duration)]
    pub turn_max_lifetime: Duration,
}

impl Config {
    /// The defaults, as if run with no flags (for tests and embedding).
    pub fn defaults() -> Config {
        Config::parse_from(["signal-server"])
    }

    /// The host to put in ICE server URLs for a client that reached us at `request_host`.
    pub fn ice_host(&self, request_host: Option<&str>) -> String {
        if let Some(h) = &self.public_host {
            return h.clone();
        }
        let fallback = || match self.listen.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            ip => host_for_url(ip),
        };
        request_host.map(strip_port).unwrap_or_else(fallback)
    }
}

/// An IP written as a URL host (IPv6 in brackets).
pub fn host_for_url(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Whether `host` (with or without a port) is a plain host name or address: not empty, only
/// letters, digits and `.-[]:` (no user info, path, spaces or anything a header could smuggle).
pub(crate) fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
}

/// `example.org:8080` → `example.org`, `[::1]:80` → `[::1]`.
pub(crate) fn strip_port(host: &str) -> String {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => host[..=end].to_string(),
            None => host.to_string(),
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => host.to_string(),
    }
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 500ms, 10s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("'{s}': unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn ice_host_comes_from_the_request_unless_configured() {
        let mut c = Config::defaults();
        assert_eq!(c.ice_host(Some("example.org:8080")), "example.org");
        assert_eq!(c.ice_host(Some("[::1]:8080")), "[::1]");
        assert_eq!(c.ice_host(None), "127.0.0.1");
        c.public_host = Some("burrow.example".into());
        assert_eq!(c.ice_host(Some("example.org:8080")), "burrow.example");
    }
}
