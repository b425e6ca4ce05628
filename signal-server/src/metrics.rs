//! What the server is doing, for operators: `/metrics` in the Prometheus text format.
//!
//! Counters only ever go up (Prometheus computes rates from them); gauges (rooms, peers, open
//! connections) are read from the live state when the page is scraped, so they cannot drift.
//! Every name starts with `burrow_`. Built on `prometheus-client`, the Prometheus project's own
//! Rust client.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use signal_protocol::ErrorCode;

/// One label, e.g. `[("code", "room_full")]`.
type Label = [(&'static str, &'static str); 1];

/// Every metric the server keeps, and the registry that writes them out.
pub struct Metrics {
    registry: Registry,
    rooms: Gauge,
    peers: Gauge,
    connections: Gauge,
    /// Peers that joined a room.
    pub joins: Counter,
    /// Peers that came back within the grace period and took their place again.
    pub resumes: Counter,
    /// Clients that came back presenting a valid resume token (resumed, or re-joined with their
    /// old id after a restart).
    pub reconnects: Counter,
    /// Peers that left a room (closed, timed out, or dropped); shared with the rooms.
    pub leaves: Counter,
    /// Signals relayed from one peer to another.
    pub signals: Counter,
    /// Error replies sent, by protocol error code.
    pub errors: Family<Label, Counter>,
    /// Frames refused by the per-connection rate limiter.
    pub rate_limited: Counter,
    /// Connections closed by the server for misbehaviour, by reason.
    pub closed: Family<Label, Counter>,
    /// TCP connections refused by the connection limits, by limit.
    pub connections_refused: Family<Label, Counter>,
    /// WebSocket upgrades refused for their `Origin`.
    pub origin_refused: Counter,
    turn_allocations: Gauge,
    away_bytes: Gauge,
    /// STUN Binding requests answered.
    pub stun_requests: Counter,
    /// TURN requests refused, by error code (401 challenges, the normal first step, excluded).
    pub turn_refused: Family<Label, Counter>,
    /// Bytes the TURN relay forwarded (to peers and to clients).
    pub turn_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics at zero, registered under their names.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("burrow");
        let m = Metrics {
            rooms: Gauge::default(),
            peers: Gauge::default(),
            connections: Gauge::default(),
            joins: Counter::default(),
            resumes: Counter::default(),
            reconnects: Counter::default(),
            leaves: Counter::default(),
            signals: Counter::default(),
            errors: Family::default(),
            rate_limited: Counter::default(),
            closed: Family::default(),
            connections_refused: Family::default(),
            origin_refused: Counter::default(),
            turn_allocations: Gauge::default(),
            away_bytes: Gauge::default(),
            stun_requests: Counter::default(),
            turn_refused: Family::default(),
            turn_bytes: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("rooms", "Rooms open now", m.rooms.clone());
        registry.register("peers", "Peers in rooms now", m.peers.clone());
        registry.register(
            "connections",
            "TCP connections open now (HTTP and WebSocket)",
            m.connections.clone(),
        );
        registry.register("joins", "Peers that joined a room", m.joins.clone());
        registry.register(
            "resumes",
            "Peers that came back within the grace period and kept their place",
            m.resumes.clone(),
        );
        registry.register(
            "reconnects",
            "Clients that came back with a valid resume token",
            m.reconnects.clone(),
        );
        registry.register("leaves", "Peers that left a room", m.leaves.clone());
        registry.register(
            "signals_relayed",
            "Signals relayed between peers",
            m.signals.clone(),
        );
        registry.register("errors", "Error replies sent, by code", m.errors.clone());
        registry.register(
            "rate_limited_frames",
            "Frames refused by the rate limiter",
            m.rate_limited.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed by the server for misbehaviour, by reason",
            m.closed.clone(),
        );
        registry.register(
            "connections_refused",
            "TCP connections refused by the connection limits, by limit",
            m.connections_refused.clone(),
        );
        registry.register(
            "origin_refused",
            "WebSocket upgrades refused for their Origin",
            m.origin_refused.clone(),
        );
        registry.register(
            "turn_allocations",
            "TURN allocations live now",
            m.turn_allocations.clone(),
        );
        registry.register(
            "away_bytes",
            "Bytes kept for peers whose connection was lost, until they come back",
            m.away_bytes.clone(),
        );
        registry.register(
            "stun_requests",
            "STUN Binding requests answered",
            m.stun_requests.clone(),
        );
        registry.register(
            "turn_refused",
            "TURN requests refused, by error code (401 challenges not counted)",
            m.turn_refused.clone(),
        );
        registry.register(
            "turn_relayed_bytes",
            "Bytes the TURN relay forwarded",
            m.turn_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts an error reply.
    pub fn error(&self, code: ErrorCode) {
        self.errors.get_or_create(&[("code", code.as_str())]).inc();
    }

    /// Counts a refused TURN request by its error code.
    pub fn turn_refusal(&self, code: u16) {
        let code = match code {
            400 => "400",
            401 => "401",
            403 => "403",
            437 => "437",
            438 => "438",
            442 => "442",
            486 => "486",
            508 => "508",
            _ => "other",
        };
        self.turn_refused.get_or_create(&[("code", code)]).inc();
    }

    /// The text exposition, with the gauges set from the live counts first.
    pub fn render(&self, now: Live) -> String {
        self.rooms.set(clamp(now.rooms));
        self.peers.set(clamp(now.peers));
        self.connections.set(clamp(now.connections));
        self.turn_allocations.set(clamp(now.turn_allocations));
        self.away_bytes.set(clamp(now.away_bytes));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The live counts the gauges show, read when `/metrics` is scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    /// Rooms open.
    pub rooms: usize,
    /// Peers in rooms.
    pub peers: usize,
    /// TCP connections open.
    pub connections: usize,
    /// TURN allocations live.
    pub turn_allocations: usize,
    /// Bytes kept for away peers.
    pub away_bytes: usize,
}

fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.joins.inc();
        m.error(ErrorCode::RoomFull);
        let text = m.render(Live {
            rooms: 3,
            peers: 5,
            connections: 7,
            turn_allocations: 1,
            away_bytes: 0,
        });
        assert!(text.contains("burrow_joins_total 1"), "{text}");
        assert!(
            text.contains("burrow_errors_total{code=\"room_full\"} 1"),
            "{text}"
        );
        assert!(text.contains("burrow_rooms 3"), "{text}");
        assert!(text.contains("burrow_peers 5"), "{text}");
        assert!(text.contains("burrow_turn_allocations 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
