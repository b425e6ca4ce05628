//! Building `webrtc` peer connections with Burrow's settings, and reading how one is connected.
//!
//! ICE timing, chosen deliberately (the crate's defaults make even a loopback connection take
//! over half a second):
//! * connectivity checks every 10 ms (RFC 8445 allows a pacing Ta down to 5 ms; its 50 ms default
//!   made the first check and the DTLS start wait a tick each), up to 200 per pair: 2 s of checks,
//!   long enough for the other side's punch packets to open its NAT;
//! * host, server-reflexive and peer-reflexive pairs are accepted as soon as a check succeeds
//!   (any direct path is good); relayed pairs wait [`RELAY_WAIT`] (0.8 s), so a direct path
//!   found meanwhile wins;
//! * the answerer is the DTLS server, so the offerer, which holds the control channel from the
//!   start, can wake the connection's driver when `webrtc` 0.21 leaves a handshake packet queued
//!   (`Peer::nudge`);
//! * remote mDNS `.local` host candidates (how browsers hide local IPs) are resolved when the
//!   network allows multicast and otherwise ignored: the server-reflexive candidates still
//!   connect.
//!
//! Data channels: the send buffer is capped at [`SEND_BUFFER_LIMIT`] so `send` waits for the peer
//! (backpressure) with a long path's bandwidth-delay product in flight, and the SCTP receive
//! window is 8 MiB for throughput.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peer_core::path::{CandidateType, Endpoint, RelayOver};
use signal_protocol::IceServer;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfiguration,
    RTCConfigurationBuilder, RTCIceCandidate, RTCIceServer, RTCIceTransportPolicy, RTCStatsReport,
    RTCStatsReportEntry, SettingEngineBuilder, StatsSelector,
};

/// Most bytes one data channel may hold unsent or unacknowledged before `send` waits: it is
/// also the most a channel keeps in flight, so it caps a transfer at this much per round trip.
/// 1 MiB held `burrow send` to 8 MB/s on a 100 ms path (TCP: 17); 4 MiB reaches TCP's rate at
/// 40 and 100 ms (the `wan` bench) for about 10 MiB more memory after the tunnel bench's load.
pub const SEND_BUFFER_LIMIT: usize = 4 << 20;

/// Where peer connections bind their UDP sockets.
#[derive(Debug, Clone, Copy)]
pub struct Network {
    /// The local IP to bind (`0.0.0.0` for all interfaces).
    pub bind: IpAddr,
    /// Also every IPv6 interface (`[::]`): the machine has a global IPv6 address.
    pub ipv6: bool,
}

impl Network {
    /// Loopback when the server is on loopback (so two peers on one machine meet there, even
    /// with no other interface), all interfaces otherwise.
    pub fn for_server_host(host: &str, bind: Option<IpAddr>) -> Network {
        if let Some(bind) = bind {
            return Network { bind, ipv6: false };
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false);
        Network {
            bind: if loopback {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from([0, 0, 0, 0])
            },
            ipv6: !loopback && has_global_ipv6(),
        }
    }

    /// The addresses the connection's UDP sockets bind (wildcards: one per interface).
    fn udp_addrs(&self) -> Vec<String> {
        let mut addrs = vec![SocketAddr::new(self.bind, 0).to_string()];
        if self.ipv6 {
            addrs.push("[::]:0".into());
        }
        addrs
    }
}

/// Whether this machine routes IPv6 to the internet from a global address (a UDP socket
/// "connected" toward a global address picks one; nothing is sent). Without one, an IPv6
/// wildcard would give no usable candidate.
fn has_global_ipv6() -> bool {
    let Ok(socket) = std::net::UdpSocket::bind("[::]:0") else {
        return false;
    };
    // A documentation-range address: any global route will do, and nothing is sent.
    if socket.connect("[2001:db8::1]:9").is_err() {
        return false;
    }
    match socket.local_addr().map(|a| a.ip()) {
        Ok(IpAddr::V6(v6)) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
        _ => false,
    }
}

pub use ::rtc::rtp_transceiver::rtp_sender::RtpCodecKind as AudioKind;
pub use ::rtc::rtp_transceiver::RTCRtpTransceiverDirection as RtpDirection;
pub use ::rtc::rtp_transceiver::RTCRtpTransceiverInit as RtpTransceiverInit;

/// Which settings a connection uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The `webrtc` crate's own defaults instead of Burrow's tuning (the benchmarks' reference).
    pub crate_defaults: bool,
    /// Use relayed candidates only (benchmarks and tests of the TURN path).
    pub relay_only: bool,
    /// The connection may carry voice (Opus audio).
    pub voice: bool,
}

/// The connection's configuration: the ICE servers (as the welcome gave them) and the policy.
/// Also applied again before an ICE restart, so a restart after the server came back uses its
/// fresh TURN credentials (or another instance's relay).
pub fn configuration(ice_servers: &[IceServer], options: Options) -> RTCConfiguration {
    let servers = ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let mut config = RTCConfigurationBuilder::new().with_ice_servers(servers);
    if options.relay_only {
        config = config.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
    }
    config.build()
}

/// A new peer connection using `ice_servers`, reporting to `handler`.
pub async fn new_connection(
    ice_servers: &[IceServer],
    network: Network,
    handler: Arc<dyn PeerConnectionEventHandler>,
    options: Options,
) -> webrtc::error::Result<Arc<dyn PeerConnection>> {
    let config = configuration(ice_servers, options);
    let settings = if options.crate_defaults {
        SettingEngineBuilder::new()
            .with_include_loopback_candidate(network.bind.is_loopback())
            .with_multicast_dns_mode(mdns_mode())
            .build()
    } else {
        burrow_settings(network)
    };
    let mut builder = PeerConnectionBuilder::new();
    if !options.crate_defaults {
        // Keeps the driver turning while relayed packets are queued in it (see `kick`).
        builder = builder.with_runtime(Arc::new(crate::kick::KickRuntime::new()));
    }
    if options.voice {
        builder = builder.with_media_engine(crate::voice::media_engine()?);
    }
    let pc = builder
        .with_configuration(config)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(network.udp_addrs())
        .with_data_channel_send_buffer_limit(SEND_BUFFER_LIMIT)
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// How long a controlling `burrow` lets direct pairs try before it may nominate a relayed one.
///
/// It nominates once and never moves (the `webrtc` crate has no renomination), so the wait is the
/// price of a relayed connection and the chance a hole gets to be punched: candidates gathered
/// (a STUN round trip), trickled through the server, and checked from both sides take a few
/// round trips, well under this on most paths. `burrow` controls whenever a browser is involved
/// (it offers: see `signal_protocol::PeerKind`).
pub const RELAY_WAIT: Duration = Duration::from_millis(800);

/// Burrow's ICE and SCTP settings (see the module docs).
fn burrow_settings(network: Network) -> webrtc::peer_connection::SettingEngine {
    SettingEngineBuilder::new()
        .with_ice_connection_attempts(Some(Duration::from_millis(10)), Some(200))
        // `None` would mean "the crate's default" (0/0.5/1 s), not "no wait".
        .with_host_acceptance_min_wait(Some(Duration::ZERO))
        .with_srflx_acceptance_min_wait(Some(Duration::ZERO))
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
        .with_relay_acceptance_min_wait(Some(RELAY_WAIT))
        // Consent freshness: a keepalive every second, and a path silent for 3 s is reported
        // (the peer unreachable) well within 5 s of a cable being pulled; failed after 25 s.
        .with_ice_timeouts(
            Some(Duration::from_secs(3)),
            Some(Duration::from_secs(25)),
            Some(Duration::from_secs(1)),
        )
        .with_include_loopback_candidate(network.bind.is_loopback())
        .with_multicast_dns_mode(mdns_mode())
        .with_sctp_max_message_size(
            rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize::Bounded(
                256 * 1024,
            ),
        )
        .with_sctp_max_receive_buffer_size(8 * 1024 * 1024)
        // The answerer is the DTLS server, so the offerer (which holds the control channel from
        // the start) is the DTLS client and SCTP initiator: see `Peer::nudge`.
        .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Server)
        .build()
}

/// Whether remote mDNS (`.local`) candidates can be resolved here: the crate's default
/// (query only) joins the mDNS multicast group, which fails with "No such device" where no route
/// covers multicast (a host with an address but no default route: an isolated LAN), and that
/// failure would make every peer connection fail. Probed once per process.
fn mdns_mode() -> rtc::ice::mdns::MulticastDnsMode {
    use rtc::ice::mdns::MulticastDnsMode;
    static MODE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let multicast = *MODE.get_or_init(|| {
        let group = std::net::Ipv4Addr::new(224, 0, 0, 251);
        let joined = std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.join_multicast_v4(&group, &std::net::Ipv4Addr::UNSPECIFIED));
        if let Err(e) = &joined {
            tracing::info!("no multicast here ({e}): .local candidates will be ignored");
        }
        joined.is_ok()
    });
    if multicast {
        MulticastDnsMode::QueryOnly
    } else {
        MulticastDnsMode::Disabled
    }
}

/// How a connection goes: the shared description from `peer_core`.
pub type PathInfo = peer_core::path::SelectedPath;

/// Relayed addresses our side reaches over TCP or TLS ([`crate::turn_tcp`]), and how.
pub type TcpRelayed =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<SocketAddr, RelayOver>>>;

/// Reads the selected candidate pair, waiting briefly for the stats to name it (just after a
/// channel opens they sometimes do not yet); a relayed local candidate in `tcp` is reached
/// over TCP.
pub async fn path_info(pc: &Arc<dyn PeerConnection>, tcp: &TcpRelayed) -> Option<PathInfo> {
    for _ in 0..20 {
        let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
        if let Some(info) = read_path(&report, selected_endpoints(pc, tcp).await) {
            return Some(info);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
        for entry in report.iter() {
            tracing::debug!("no selected pair; stats: {entry:?}");
        }
    }
    None
}

/// One stats read for a connection's watcher: the selected path (as [`path_info`], without
/// waiting) and its consent reading (see [`consent_answers`]).
pub async fn path_and_consent(
    pc: &Arc<dyn PeerConnection>,
    tcp: &TcpRelayed,
) -> (Option<PathInfo>, Option<(String, u64)>) {
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    let selected = selected_endpoints(pc, tcp).await;
    (read_path(&report, selected), consent_answers(&report))
}

/// What the ICE agent says of its selected pair.
enum AgentPair {
    /// None selected (before the first, during an ICE restart, after a failure): the stats
    /// still name the last one, which is no path now.
    NoPair,
    /// The two ends as the agent knows them, and how our side reaches its relay.
    Ends(Endpoint, Endpoint, Option<RelayOver>),
    /// The agent could not be asked: judge from the stats alone.
    Unknown,
}

/// The two ends of the pair ICE selected, as the agent knows them. Unlike the stats, this names
/// a peer-reflexive remote candidate's address: a peer whose checks arrive before its candidates
/// is learnt as peer-reflexive, and only its address tells a LAN from a hole punched (the
/// browser on the other end, which got our candidates first, sees a host candidate there).
async fn selected_endpoints(pc: &Arc<dyn PeerConnection>, tcp: &TcpRelayed) -> AgentPair {
    let Some(sctp) = pc.sctp().await else {
        return AgentPair::Unknown;
    };
    let ice = sctp.transport().ice_transport();
    let pair = match ice.get_selected_candidate_pair().await {
        Ok(Some(pair)) => pair,
        Ok(None) => return AgentPair::NoPair,
        Err(_) => return AgentPair::Unknown,
    };
    let end = |c: &RTCIceCandidate| {
        Some(Endpoint {
            kind: CandidateType::parse(&c.typ.to_string())?,
            ip: c.address.parse().ok(),
        })
    };
    let (Some(local), Some(mut remote)) = (end(pair.local()), end(pair.remote())) else {
        return AgentPair::Unknown;
    };
    // A peer-reflexive remote at the address of a relay candidate the peer signalled later is
    // that relay: the path is relayed, whatever its address looks like. (Its host address needs
    // no such care: the address itself tells a LAN, and a changed type would read as news.)
    if remote.kind == CandidateType::Prflx {
        let (addr, port) = (&pair.remote().address, pair.remote().port);
        let signalled = ice.get_remote_candidates().await.unwrap_or_default();
        if signalled.iter().any(|c| {
            &c.address == addr
                && c.port == port
                && end(c).is_some_and(|e| e.kind == CandidateType::Relay)
        }) {
            remote.kind = CandidateType::Relay;
        }
    }
    let relay_over = (local.kind == CandidateType::Relay).then(|| {
        let at = pair
            .local()
            .address
            .parse()
            .map(|ip| SocketAddr::new(ip, pair.local().port));
        at.ok()
            .and_then(|at| crate::turn_tcp::tcp_relayed(tcp, at))
            .unwrap_or(RelayOver::Udp)
    });
    AgentPair::Ends(local, remote, relay_over)
}

/// The selected pair (named with the ICE credentials, which an ICE restart changes) and how
/// many answers to our consent checks it has had (see `peer_core::path::Consent`); `None` while
/// the agent is not connected (checking, restarting) or no pair is selected.
fn consent_answers(report: &RTCStatsReport) -> Option<(String, u64)> {
    use rtc::peer_connection::transport::RTCIceTransportState;
    let transport = report.transport()?;
    if !matches!(
        transport.ice_state,
        RTCIceTransportState::Connected | RTCIceTransportState::Completed
    ) {
        return None;
    }
    let pair_id = transport.selected_candidate_pair_id.clone();
    let pair = report.candidate_pairs().find(|p| p.stats.id == pair_id)?;
    let name = format!("{}/{pair_id}", transport.ice_local_username_fragment);
    Some((name, pair.responses_received))
}

fn read_path(report: &RTCStatsReport, agent: AgentPair) -> Option<PathInfo> {
    let pair_id = report.transport()?.selected_candidate_pair_id.clone();
    let pair = report.candidate_pairs().find(|p| p.stats.id == pair_id)?;
    let rtt = pair.current_round_trip_time;
    let rtt = (rtt > 0.0).then_some(rtt * 1000.0);
    match agent {
        AgentPair::NoPair => return None,
        // (An mDNS name is no address: then the stats' fallback below.)
        AgentPair::Ends(local, remote, over) if remote.ip.is_some() => {
            return Some(PathInfo::between(local, remote, rtt).relayed_over(over));
        }
        _ => {}
    }
    // webrtc 0.21 names candidate entries "RTCLocalIceCandidate_<id>" while the pair refers to
    // plain "<id>", so match on the suffix as well.
    let endpoint = |id: &str| {
        let suffix = format!("_{id}");
        report.iter().find_map(|entry| match entry {
            RTCStatsReportEntry::LocalCandidate(c) | RTCStatsReportEntry::RemoteCandidate(c)
                if c.stats.id == id || c.stats.id.ends_with(&suffix) =>
            {
                Some(Endpoint {
                    kind: CandidateType::parse(&c.candidate_type.to_string())?,
                    ip: c.address.as_deref().and_then(|a| a.parse().ok()),
                })
            }
            _ => None,
        })
    };
    let local = endpoint(&pair.local_candidate_id)?;
    // webrtc 0.21 leaves peer-reflexive remote candidates (learnt from checks) out of the report,
    // and mDNS names carry no address: then judge by the peer's public face, its srflx address.
    let remote = endpoint(&pair.remote_candidate_id).unwrap_or(Endpoint {
        kind: CandidateType::Prflx,
        ip: None,
    });
    let remote = match remote.ip {
        Some(_) => remote,
        None => Endpoint {
            ip: report.iter().find_map(|entry| match entry {
                RTCStatsReportEntry::RemoteCandidate(c)
                    if CandidateType::parse(&c.candidate_type.to_string())
                        == Some(CandidateType::Srflx) =>
                {
                    c.address.as_deref().and_then(|a| a.parse().ok())
                }
                _ => None,
            }),
            ..remote
        },
    };
    Some(PathInfo::between(local, remote, rtt))
}
