//! `--admin`: the session's snapshot for the status page and `burrow status`.

use crate::status::{PeerStatus, ServiceStatus, Status};

use super::Session;

fn kind_name(kind: peer_core::channels::ServiceKind) -> String {
    format!("{kind:?}").to_lowercase()
}

impl Session {
    /// What this session exposes or forwards, and to whom, now.
    pub(super) fn status(&self) -> Status {
        let mode = if self.exposed.is_some() {
            "expose"
        } else if self.forwarding {
            "forward"
        } else {
            "join"
        };
        let services = match &self.exposed {
            Some(gate) => gate
                .services()
                .iter()
                .map(|s| ServiceStatus {
                    name: s.info.name.clone(),
                    kind: kind_name(s.info.kind),
                    addr: Some(s.addr.to_string()),
                    peer: None,
                    down: s.meter.is_down(),
                    protected: s.info.protected,
                    max_rate: s.meter.max_rate(),
                    carried: Some(s.meter.read()),
                })
                .collect(),
            None => self
                .offered
                .iter()
                .flat_map(|(peer, list)| {
                    list.iter().map(move |s| ServiceStatus {
                        name: s.name.clone(),
                        kind: kind_name(s.kind),
                        addr: None,
                        peer: Some(peer.clone()),
                        down: s.down,
                        protected: s.protected,
                        max_rate: None,
                        carried: None,
                    })
                })
                .collect(),
        };
        let mut peers: Vec<PeerStatus> = self
            .peers
            .values()
            .map(|p| PeerStatus {
                id: p.id.clone(),
                name: p.name.clone(),
                connected: p.is_connected(),
                path: p.path.as_ref().map(|path| path.kind.label().to_string()),
                rtt_ms: p.path.as_ref().and_then(|path| path.rtt_ms),
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        Status {
            mode: mode.into(),
            room: self.page_url.clone(),
            peer_id: self.room.me().map(str::to_string),
            services,
            peers,
            carried: self.forwarding.then(|| self.carried.read()),
        }
    }
}
