//! The embedded TURN relay, spoken to in raw STUN/TURN messages from UDP sockets on loopback:
//! what it refuses (NAT lab case 7, and one test per row of the hostile-user audit), and that
//! it relays both ways, by Send/Data indications and by ChannelData.
//!
//! Credentials are bound to a live signaling session, so every test that allocates first joins
//! a room over the WebSocket and takes the TURN credentials from its welcome.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use burrow_tests::server::ServerProcess;
use burrow_tests::ws::WsClient;
use signal_protocol::ServerMessage;
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageClass, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_INDICATION,
    CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, METHOD_SEND,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
use turn::proto::chandata::ChannelData;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;

const SECRET: &str = "lab-secret";

/// The TURN REST API password for `username`.
fn password(username: &str) -> String {
    use base64::Engine;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, username.as_bytes()))
}

/// TURN credentials from a welcome.
#[derive(Clone)]
struct Creds {
    user: String,
    pass: String,
}

/// Joins `room` over the WebSocket; returns the open socket (the session: keep it), the TURN
/// credentials of the welcome and the peer id.
async fn join(server: &ServerProcess, room: &str) -> (WsClient, Creds, String) {
    let (ws, welcome) = WsClient::join(&server.ws_url(room), None).await;
    let ServerMessage::Welcome {
        ice_servers,
        peer_id,
        ..
    } = welcome
    else {
        panic!("welcome");
    };
    let turn = ice_servers
        .iter()
        .find(|s| s.urls[0].starts_with("turn:"))
        .expect("a TURN entry");
    let creds = Creds {
        user: turn.username.clone().expect("a username"),
        pass: turn.credential.clone().expect("a credential"),
    };
    (ws, creds, peer_id)
}

/// What a client receives from the relay on behalf of a peer.
#[derive(Debug, PartialEq, Eq)]
enum Relayed {
    /// A Data indication: from `peer`, `data`.
    Indication(SocketAddr, Vec<u8>),
    /// ChannelData on channel `number`.
    Channel(u16, Vec<u8>),
}

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    realm: String,
    nonce: String,
    /// Over TCP instead (TURN over TCP on the STUN port): the connection, and bytes read
    /// beyond the last whole frame.
    tcp: Option<Tcp>,
}

struct Tcp {
    read: tokio::sync::Mutex<(tokio::net::tcp::OwnedReadHalf, Vec<u8>)>,
    write: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
}

/// The length of the frame at the start of `buf` (STUN, or ChannelData padded to 4), if whole.
fn tcp_frame(buf: &[u8]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]));
    let whole = if buf[0] & 0xC0 == 0x40 {
        4 + len.div_ceil(4) * 4
    } else {
        20 + len
    };
    (buf.len() >= whole).then_some(whole)
}

impl Client {
    async fn new(server: SocketAddr) -> Client {
        Client {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            realm: String::new(),
            nonce: String::new(),
            tcp: None,
        }
    }

    /// A client over TCP, challenged as [`Client::challenged`].
    async fn challenged_over_tcp(server: SocketAddr) -> Client {
        let (read, write) = tokio::net::TcpStream::connect(server)
            .await
            .expect("TURN over TCP on the STUN port")
            .into_split();
        let mut c = Client::new(server).await;
        c.tcp = Some(Tcp {
            read: tokio::sync::Mutex::new((read, Vec::new())),
            write: tokio::sync::Mutex::new(write),
        });
        let r = c.allocate_anonymously().await;
        assert_eq!(code(&r), 401);
        c
    }

    async fn send(&self, bytes: &[u8]) {
        match &self.tcp {
            Some(tcp) => {
                use tokio::io::AsyncWriteExt;
                tcp.write.lock().await.write_all(bytes).await.unwrap();
            }
            None => {
                self.sock.send_to(bytes, self.server).await.unwrap();
            }
        }
    }

    /// A client with realm and nonce learnt from a first, anonymous Allocate.
    async fn challenged(server: SocketAddr) -> Client {
        let mut c = Client::new(server).await;
        let r = c.allocate_anonymously().await;
        assert_eq!(code(&r), 401);
        c
    }

    /// The next datagram within `wait`.
    async fn recv_raw(&self, wait: Duration) -> Option<Vec<u8>> {
        if let Some(tcp) = &self.tcp {
            use tokio::io::AsyncReadExt;
            let mut guard = tcp.read.lock().await;
            let (read, pending) = &mut *guard;
            let deadline = Instant::now() + wait;
            loop {
                if let Some(n) = tcp_frame(pending) {
                    return Some(pending.drain(..n).collect());
                }
                let left = deadline.checked_duration_since(Instant::now())?;
                let mut chunk = [0u8; 8192];
                match tokio::time::timeout(left, read.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            }
        }
        let mut buf = vec![0u8; 65_536];
        match tokio::time::timeout(wait, self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                buf.truncate(n);
                Some(buf)
            }
            _ => None,
        }
    }

    /// Sends `req` (again, up to five times) until its response arrives; other datagrams
    /// (relayed data) are skipped.
    async fn exchange(&self, req: &Message) -> Message {
        for _ in 0..5 {
            self.send(&req.raw).await;
            let deadline = Instant::now() + Duration::from_secs(1);
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let Some(raw) = self.recv_raw(left).await else {
                    break;
                };
                let mut resp = Message::new();
                resp.raw = raw;
                if resp.decode().is_ok() && resp.transaction_id == req.transaction_id {
                    return resp;
                }
            }
        }
        panic!("no TURN response");
    }

    fn request(
        &self,
        method: stun::message::Method,
        mut attrs: Vec<Box<dyn Setter>>,
        auth: Option<&Creds>,
    ) -> Message {
        let mut all: Vec<Box<dyn Setter>> = vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        all.append(&mut attrs);
        if let Some(c) = auth {
            all.push(Box::new(TextAttribute::new(ATTR_USERNAME, c.user.clone())));
            all.push(Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())));
            all.push(Box::new(TextAttribute::new(ATTR_NONCE, self.nonce.clone())));
            all.push(Box::new(MessageIntegrity::new_long_term_integrity(
                c.user.clone(),
                self.realm.clone(),
                c.pass.clone(),
            )));
        }
        all.push(Box::new(FINGERPRINT));
        let mut m = Message::new();
        m.build(&all).unwrap();
        m
    }

    /// An Allocate without credentials: the server challenges (401) with realm and nonce.
    async fn allocate_anonymously(&mut self) -> Message {
        let req = self.request(METHOD_ALLOCATE, vec![udp()], None);
        let resp = self.exchange(&req).await;
        if let Ok(realm) = TextAttribute::get_from_as(&resp, ATTR_REALM) {
            self.realm = realm.text;
        }
        if let Ok(nonce) = TextAttribute::get_from_as(&resp, ATTR_NONCE) {
            self.nonce = nonce.text;
        }
        resp
    }

    async fn allocate(&self, c: &Creds) -> Message {
        let req = self.request(METHOD_ALLOCATE, vec![udp()], Some(c));
        self.exchange(&req).await
    }

    /// Allocates, and returns the relayed address.
    async fn allocated(&self, c: &Creds) -> SocketAddr {
        let r = self.allocate(c).await;
        assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE, "allocate: {}", show(&r));
        let mut relayed = RelayedAddress::default();
        relayed.get_from(&r).expect("XOR-RELAYED-ADDRESS");
        SocketAddr::new(relayed.ip, relayed.port)
    }

    async fn refresh(&self, c: &Creds, lifetime: Duration) -> Message {
        let req = self.request(METHOD_REFRESH, vec![Box::new(Lifetime(lifetime))], Some(c));
        self.exchange(&req).await
    }

    async fn permit(&self, c: &Creds, peer: SocketAddr) -> Message {
        let req = self.request(
            METHOD_CREATE_PERMISSION,
            vec![Box::new(PeerAddress {
                ip: peer.ip(),
                port: peer.port(),
            })],
            Some(c),
        );
        self.exchange(&req).await
    }

    async fn bind_channel(&self, c: &Creds, number: u16, peer: SocketAddr) -> Message {
        let req = self.request(
            METHOD_CHANNEL_BIND,
            vec![
                Box::new(ChannelNumber(number)),
                Box::new(PeerAddress {
                    ip: peer.ip(),
                    port: peer.port(),
                }),
            ],
            Some(c),
        );
        self.exchange(&req).await
    }

    async fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
            Box::new(PeerAddress {
                ip: peer.ip(),
                port: peer.port(),
            }),
            Box::new(Data(data.to_vec())),
            Box::new(FINGERPRINT),
        ])
        .unwrap();
        self.send(&m.raw).await;
    }

    async fn send_channel_data(&self, number: u16, data: &[u8]) {
        let mut cd = ChannelData {
            data: data.to_vec(),
            number: ChannelNumber(number),
            ..Default::default()
        };
        cd.encode(); // padded, as RFC 5766 clients do: the server must accept it
        self.send(&cd.raw).await;
    }

    /// The next relayed datagram within `wait` (responses are skipped).
    async fn recv_relayed(&self, wait: Duration) -> Option<Relayed> {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let raw = self.recv_raw(left).await?;
            if ChannelData::is_channel_data(&raw) {
                let mut cd = ChannelData {
                    raw,
                    ..Default::default()
                };
                cd.decode().expect("valid ChannelData");
                return Some(Relayed::Channel(cd.number.0, cd.data));
            }
            let mut m = Message::new();
            m.raw = raw;
            if m.decode().is_ok() && m.typ == MessageType::new(METHOD_DATA, CLASS_INDICATION) {
                let mut peer = PeerAddress::default();
                peer.get_from(&m).expect("XOR-PEER-ADDRESS");
                let mut data = Data::default();
                data.get_from(&m).expect("DATA");
                return Some(Relayed::Indication(
                    SocketAddr::new(peer.ip, peer.port),
                    data.0,
                ));
            }
        }
        None
    }
}

fn udp() -> Box<dyn Setter> {
    Box::new(RequestedTransport {
        protocol: PROTO_UDP,
    })
}

fn class(m: &Message) -> MessageClass {
    m.typ.class
}

fn code(m: &Message) -> u16 {
    let mut e = ErrorCodeAttribute::default();
    match e.get_from(m) {
        Ok(()) => e.code.0,
        Err(_) => 0,
    }
}

fn show(m: &Message) -> String {
    format!("{} (code {})", m.typ, code(m))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn turn_refuses_without_credentials_with_expired_ones_and_to_loopback() {
    let server = ServerProcess::start(&["--turn-secret", SECRET]);
    let (_ws, creds, peer_id) = join(&server, "refusals").await;
    let mut c = Client::new(server.stun).await;

    // No credentials: refused, with a challenge.
    let r = c.allocate_anonymously().await;
    assert_eq!(class(&r), CLASS_ERROR_RESPONSE);
    assert_eq!(code(&r), 401);
    assert!(!c.realm.is_empty() && !c.nonce.is_empty());
    assert_eq!(c.realm, "burrow");

    // Expired credentials (correctly signed, expiry in the past): refused.
    let old = format!("{}:{peer_id}", now() - 60);
    let expired = Creds {
        pass: password(&old),
        user: old,
    };
    let r = c.allocate(&expired).await;
    assert_eq!(class(&r), CLASS_ERROR_RESPONSE, "expired must not allocate");
    assert_eq!(code(&r), 401);

    // A wrong password: refused.
    let wrong = Creds {
        user: creds.user.clone(),
        pass: "not-the-password".into(),
    };
    let r = c.allocate(&wrong).await;
    assert_eq!((class(&r), code(&r)), (CLASS_ERROR_RESPONSE, 401));

    // Correctly signed, unexpired, but for a peer id no session holds: refused.
    let stranger = format!("{}:nobody", now() + 600);
    let r = c
        .allocate(&Creds {
            pass: password(&stranger),
            user: stranger,
        })
        .await;
    assert_eq!((class(&r), code(&r)), (CLASS_ERROR_RESPONSE, 401));

    // The session's credentials: allocated.
    let r = c.allocate(&creds).await;
    assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE, "{}", show(&r));
    // Signed and fingerprinted, as browsers check.
    let key = MessageIntegrity::new_long_term_integrity(
        creds.user.clone(),
        c.realm.clone(),
        creds.pass.clone(),
    );
    let mut signed = r.clone();
    key.check(&mut signed)
        .expect("MESSAGE-INTEGRITY checks out");
    FINGERPRINT.check(&r).expect("FINGERPRINT checks out");
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&r).expect("XOR-MAPPED-ADDRESS");
    assert_eq!(
        SocketAddr::new(mapped.ip, mapped.port),
        c.sock.local_addr().unwrap()
    );
    let mut life = Lifetime::default();
    life.get_from(&r).expect("LIFETIME");
    assert_eq!(life.0, Duration::from_secs(600));

    // A second Allocate on the same 5-tuple (new transaction): 437 Allocation Mismatch.
    let r = c.allocate(&creds).await;
    assert_eq!(code(&r), 437);

    // Permissions toward loopback, link-local, multicast, the server's own ports: 403.
    for peer in [
        "127.0.0.1:9".to_string(),
        "169.254.0.1:9".to_string(),
        "224.0.0.251:5353".to_string(),
        server.stun.to_string(),
        server.stun_alt.to_string(),
        server.http.to_string(),
    ] {
        let r = c.permit(&creds, addr(&peer)).await;
        assert_eq!(
            (class(&r), code(&r)),
            (CLASS_ERROR_RESPONSE, 403),
            "toward {peer}"
        );
    }
    // An ordinary peer address is permitted.
    let r = c.permit(&creds, addr("203.0.113.5:40000")).await;
    assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE, "{}", show(&r));

    // Refresh, then delete with lifetime 0; after that the allocation is gone.
    let r = c.refresh(&creds, Duration::from_secs(60)).await;
    assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE);
    let r = c.refresh(&creds, Duration::ZERO).await;
    assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE);
    let r = c.refresh(&creds, Duration::from_secs(60)).await;
    assert_eq!(code(&r), 437);
}

#[tokio::test]
async fn the_welcome_hands_out_working_turn_credentials() {
    let server = ServerProcess::start(&["--turn-secret", SECRET]);
    let (_ws, creds, peer_id) = join(&server, "turn").await;
    let (ws2, welcome) = WsClient::join(&server.ws_url("turn"), None).await;
    drop(ws2);
    let ServerMessage::Welcome { ice_servers, .. } = welcome else {
        panic!("welcome");
    };
    let turn = ice_servers
        .iter()
        .find(|s| s.urls[0].starts_with("turn:"))
        .expect("a TURN entry");
    assert_eq!(
        turn.urls[0],
        format!("turn:127.0.0.1:{}?transport=udp", server.stun.port())
    );
    assert!(
        creds.user.ends_with(&format!(":{peer_id}")),
        "{}",
        creds.user
    );
    assert_eq!(
        creds.pass,
        password(&creds.user),
        "coturn-compatible REST credential"
    );
    let c = Client::challenged(server.stun).await;
    let r = c.allocate(&creds).await;
    assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE);
}

#[tokio::test]
async fn allocations_per_peer_and_per_ip_are_capped() {
    let server = ServerProcess::start(&[
        "--turn-secret",
        SECRET,
        "--turn-max-allocations-per-peer",
        "1",
        "--turn-max-per-ip",
        "2",
    ]);
    let (_ws, bob, _) = join(&server, "caps").await;
    let first = Client::challenged(server.stun).await;
    first.allocated(&bob).await;
    let second = Client::challenged(server.stun).await;
    let r = second.allocate(&bob).await;
    assert_eq!(
        (class(&r), code(&r)),
        (CLASS_ERROR_RESPONSE, 486),
        "Allocation Quota Reached (per peer)"
    );
    // Another peer from the same IP: one more fits, then the per-IP quota (2) is reached.
    let (_ws2, carol, _) = join(&server, "caps").await;
    second.allocated(&carol).await;
    let (_ws3, dave, _) = join(&server, "caps").await;
    let third = Client::challenged(server.stun).await;
    let r = third.allocate(&dave).await;
    assert_eq!(
        (class(&r), code(&r)),
        (CLASS_ERROR_RESPONSE, 486),
        "Allocation Quota Reached (per IP)"
    );
}

#[tokio::test]
async fn binding_is_answered_on_both_ports_even_without_turn() {
    for flags in [&["--turn-secret", SECRET][..], &["--no-turn"][..]] {
        let server = ServerProcess::start(flags);
        let c = Client::new(server.stun).await;
        for port in [server.stun, server.stun_alt] {
            let mut req = Message::new();
            req.build(&[
                Box::new(TransactionId::new()),
                Box::new(MessageType::new(METHOD_BINDING, CLASS_REQUEST)),
                Box::new(FINGERPRINT),
            ])
            .unwrap();
            let c = Client::new(port).await;
            let r = c.exchange(&req).await;
            assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE);
            let mut mapped = XorMappedAddress::default();
            mapped.get_from(&r).expect("XOR-MAPPED-ADDRESS");
            assert_eq!(
                SocketAddr::new(mapped.ip, mapped.port),
                c.sock.local_addr().unwrap()
            );
            FINGERPRINT.check(&r).expect("FINGERPRINT");
        }
        if flags == ["--no-turn"] {
            let mut c = c;
            let r = c.allocate_anonymously().await;
            assert_eq!(
                class(&r),
                CLASS_ERROR_RESPONSE,
                "--no-turn refuses Allocate"
            );
        }
    }
}

/// A requested LIFETIME is clamped to `--turn-max-lifetime`, and an allocation nobody refreshes
/// is gone once it has passed.
#[tokio::test]
async fn lifetimes_are_clamped_and_unrefreshed_allocations_expire() {
    let server = ServerProcess::start(&["--turn-secret", SECRET, "--turn-max-lifetime", "2s"]);
    let (_ws, creds, _) = join(&server, "lifetime").await;
    let c = Client::challenged(server.stun).await;
    let req = c.request(
        METHOD_ALLOCATE,
        vec![udp(), Box::new(Lifetime(Duration::from_secs(3600)))],
        Some(&creds),
    );
    let r = c.exchange(&req).await;
    assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE, "{}", show(&r));
    let mut life = Lifetime::default();
    life.get_from(&r).expect("LIFETIME");
    assert_eq!(life.0, Duration::from_secs(2));
    let r = c.refresh(&creds, Duration::from_secs(3600)).await;
    life.get_from(&r).expect("LIFETIME");
    assert_eq!(life.0, Duration::from_secs(2), "a Refresh is clamped too");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(code(&c.refresh(&creds, Duration::from_secs(1)).await), 437);
}

/// Audit row 1: 2,000 Allocates carrying a well-formed USERNAME (a live peer's, even) but a
/// zeroed MESSAGE-INTEGRITY used to fill the quota before authentication. Now they are all
/// refused and count for nothing: the genuine allocation still succeeds, on a server whose
/// total quota is 4.
#[tokio::test]
async fn audit1_forged_usernames_do_not_lock_the_relay() {
    let server = ServerProcess::start(&[
        "--turn-secret",
        SECRET,
        // Every forged request is answered, so the test sees each one refused.
        "--turn-unauthenticated-rate",
        "0",
        "--turn-max-allocations",
        "4",
        "--turn-max-per-ip",
        "4",
    ]);
    let (_ws, victim, _) = join(&server, "audit1").await;
    let attacker = Client::challenged(server.stun).await;
    let forged = |i: usize| -> Vec<u8> {
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            udp(),
            Box::new(TextAttribute::new(
                ATTR_USERNAME,
                if i.is_multiple_of(2) {
                    victim.user.clone()
                } else {
                    format!("{}:forged{i}", now() + 600)
                },
            )),
            Box::new(TextAttribute::new(ATTR_REALM, attacker.realm.clone())),
            Box::new(TextAttribute::new(ATTR_NONCE, attacker.nonce.clone())),
            Box::new(MessageIntegrity::new_short_term_integrity("x".into())),
        ])
        .unwrap();
        // Zero the HMAC (the last 20 bytes).
        let n = m.raw.len();
        m.raw[n - 20..].fill(0);
        m.raw
    };
    let mut refused = 0;
    for batch in 0..20 {
        for i in 0..100 {
            attacker
                .sock
                .send_to(&forged(batch * 100 + i), server.stun)
                .await
                .unwrap();
        }
        while let Some(raw) = attacker.recv_raw(Duration::from_millis(300)).await {
            let mut m = Message::new();
            m.raw = raw;
            if m.decode().is_ok() && class(&m) == CLASS_ERROR_RESPONSE && code(&m) == 401 {
                refused += 1;
            }
            if refused == (batch + 1) * 100 {
                break;
            }
        }
    }
    assert!(
        refused >= 1900,
        "only {refused} of 2,000 forged Allocates answered 401"
    );
    // The genuine peer still gets its allocation, and so do others up to the quota.
    let genuine = Client::challenged(server.stun).await;
    genuine.allocated(&victim).await;
}

/// Reads a process's resident memory, in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Sends `count` bare 20-byte Allocate requests (no attributes, so no credentials), 250 at a
/// time, reading the answers between batches; returns how many were answered 401.
async fn blast(sock: &UdpSocket, server: SocketAddr, from: u32, count: u32) -> u32 {
    let bare = |i: u32| -> [u8; 20] {
        let mut h = [0u8; 20];
        h[1] = 0x03; // Allocate request, length 0
        h[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
        h[8..12].copy_from_slice(&i.to_be_bytes());
        h
    };
    let mut buf = vec![0u8; 2048];
    let mut answered = 0u32;
    let end = from + count;
    for start in (from..end).step_by(250) {
        let stop = (start + 250).min(end);
        for i in start..stop {
            sock.send_to(&bare(i), server).await.unwrap();
        }
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
        {
            let mut m = Message::new();
            m.raw = buf[..n].to_vec();
            if m.decode().is_ok() && code(&m) == 401 {
                answered += 1;
            }
            if answered == stop - from {
                break;
            }
        }
    }
    answered
}

/// Audit row 2: credential-less Allocates (bare 20-byte headers) used to leave a stored nonce
/// each. Nonces are stateless now: 50,000 of them, each answered 401, grow the server's
/// resident memory by less than 2 MiB.
#[tokio::test]
async fn audit2_credential_less_allocates_cost_no_memory() {
    // Every request answered (each mints a nonce): the memory figure covers the answering path.
    let server =
        ServerProcess::start(&["--turn-secret", SECRET, "--turn-unauthenticated-rate", "0"]);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Warm up (allocator arenas, buffers), then measure.
    blast(&sock, server.stun, 0, 5_000).await;
    let before = rss_kib(server.pid());
    let started = Instant::now();
    let answered = blast(&sock, server.stun, 5_000, 50_000).await;
    let after = rss_kib(server.pid());
    eprintln!(
        "50,000 bare Allocates: {answered} answered 401 in {:?}; RSS {before} KiB -> {after} KiB",
        started.elapsed()
    );
    assert!(answered >= 45_000, "only {answered} answered");
    assert!(
        after < before + 2 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// Audit row 3: permissions toward private, CGNAT and loopback addresses are refused by
/// default; `--turn-allowed-peer` opens exactly the range it names.
#[tokio::test]
async fn audit3_private_ranges_are_denied_unless_allowed() {
    let server = ServerProcess::start(&["--turn-secret", SECRET]);
    let (_ws, creds, _) = join(&server, "audit3").await;
    let c = Client::challenged(server.stun).await;
    c.allocated(&creds).await;
    for peer in [
        "10.0.0.1:9",
        "172.16.0.1:9",
        "192.168.1.1:9",
        "100.64.0.1:9",
        "127.0.0.1:9",
    ] {
        let r = c.permit(&creds, addr(peer)).await;
        assert_eq!(
            (class(&r), code(&r)),
            (CLASS_ERROR_RESPONSE, 403),
            "CreatePermission toward {peer}"
        );
        let r = c.bind_channel(&creds, 0x4000, addr(peer)).await;
        assert_eq!(
            (class(&r), code(&r)),
            (CLASS_ERROR_RESPONSE, 403),
            "ChannelBind toward {peer}"
        );
    }
    // Several peers in one request: one forbidden refuses them all.
    let req = c.request(
        METHOD_CREATE_PERMISSION,
        vec![
            Box::new(PeerAddress {
                ip: "203.0.113.7".parse().unwrap(),
                port: 9,
            }),
            Box::new(PeerAddress {
                ip: "192.168.0.7".parse().unwrap(),
                port: 9,
            }),
        ],
        Some(&creds),
    );
    assert_eq!(code(&c.exchange(&req).await), 403);

    let lan = ServerProcess::start(&[
        "--turn-secret",
        SECRET,
        "--turn-allowed-peer",
        "10.1.0.0/16",
    ]);
    let (_ws, creds, _) = join(&lan, "audit3").await;
    let c = Client::challenged(lan.stun).await;
    c.allocated(&creds).await;
    let r = c.permit(&creds, addr("10.1.2.3:9")).await;
    assert_eq!(
        class(&r),
        CLASS_SUCCESS_RESPONSE,
        "10.1.2.3 is allowed: {}",
        show(&r)
    );
    for peer in ["10.2.0.1:9", "192.168.1.1:9", "127.0.0.1:9"] {
        let r = c.permit(&creds, addr(peer)).await;
        assert_eq!(code(&r), 403, "{peer} is still denied");
    }
}

/// Audit row 4: credentials died only with their 12 h expiry, long after the peer left. Now
/// they die with the peer's place in the room: a WebSocket closed without `leave` keeps them
/// for the grace period (a relayed link survives a signaling blip; here 1 s), then the
/// allocation is closed (a Refresh on it fails) and a new Allocate with the same credentials is
/// refused.
#[tokio::test]
async fn audit4_credentials_die_with_the_websocket() {
    let server = ServerProcess::start(&["--turn-secret", SECRET, "--resume-grace", "1s"]);
    let (ws, creds, _) = join(&server, "audit4").await;
    let holder = Client::challenged(server.stun).await;
    holder.allocated(&creds).await;
    assert_eq!(
        class(&holder.refresh(&creds, Duration::from_secs(600)).await),
        CLASS_SUCCESS_RESPONSE
    );
    drop(ws);
    let r = refused_within(&holder, &creds, Duration::from_secs(10))
        .await
        .expect("the allocation outlived its session");
    assert!([401, 437].contains(&code(&r)), "{}", show(&r));
    let newcomer = Client::challenged(server.stun).await;
    let r = newcomer.allocate(&creds).await;
    assert_eq!(
        (class(&r), code(&r)),
        (CLASS_ERROR_RESPONSE, 401),
        "a departed peer's credentials allocate nothing"
    );
}

/// A peer dropped because it stopped reading (its queue overflowed: announced as left) loses
/// its relay with its place, like a peer that left: once its connection is ended (here the 1 s
/// write deadline), its allocation is closed and its credentials allocate nothing.
#[tokio::test]
async fn audit5_a_peer_dropped_for_a_full_queue_loses_its_relay() {
    let server = ServerProcess::start(&[
        "--turn-secret",
        SECRET,
        "--write-timeout",
        "1s",
        "--ping-interval",
        "60s",
        "--ping-timeout",
        "120s",
    ]);
    let (mut a, _, _) = join(&server, "audit5").await;
    let (_stalled, creds, b) = join(&server, "audit5").await; // never read again
    let holder = Client::challenged(server.stun).await;
    holder.allocated(&creds).await;
    let left = burrow_tests::ws::flood_until_left(&mut a, &b, Duration::from_secs(15)).await;
    assert!(left, "the stalled peer is dropped and announced as left");
    refused_within(&holder, &creds, Duration::from_secs(10))
        .await
        .expect("the dropped peer's allocation outlived it");
    let newcomer = Client::challenged(server.stun).await;
    let r = newcomer.allocate(&creds).await;
    assert_eq!(
        (class(&r), code(&r)),
        (CLASS_ERROR_RESPONSE, 401),
        "a dropped peer's credentials allocate nothing"
    );
}

/// Refreshes `holder`'s allocation until the relay refuses it (the allocation was closed):
/// the refusal, or `None` if it still lived after `within`.
async fn refused_within(holder: &Client, creds: &Creds, within: Duration) -> Option<Message> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let r = holder.refresh(creds, Duration::from_secs(600)).await;
        if class(&r) == CLASS_ERROR_RESPONSE {
            return Some(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Two allocations relay to each other (the relay-to-relay path two peers behind symmetric
/// NATs use) both ways, by Send/Data indications and by ChannelData; a peer without a
/// permission is not heard.
#[tokio::test]
async fn two_allocations_relay_both_ways() {
    let server = ServerProcess::start(&["--turn-secret", SECRET]);
    let (_wa, alice, _) = join(&server, "relay").await;
    let (_wb, bob, _) = join(&server, "relay").await;
    let a = Client::challenged(server.stun).await;
    let b = Client::challenged(server.stun).await;
    let ra = a.allocated(&alice).await;
    let rb = b.allocated(&bob).await;
    const WAIT: Duration = Duration::from_secs(5);

    // Without permissions nothing passes.
    a.send_indication(rb, b"too early").await;
    assert_eq!(b.recv_relayed(Duration::from_millis(300)).await, None);

    assert_eq!(class(&a.permit(&alice, rb).await), CLASS_SUCCESS_RESPONSE);
    assert_eq!(class(&b.permit(&bob, ra).await), CLASS_SUCCESS_RESPONSE);
    a.send_indication(rb, b"ping").await;
    assert_eq!(
        b.recv_relayed(WAIT).await,
        Some(Relayed::Indication(ra, b"ping".to_vec()))
    );
    b.send_indication(ra, b"pong!").await;
    assert_eq!(
        a.recv_relayed(WAIT).await,
        Some(Relayed::Indication(rb, b"pong!".to_vec()))
    );

    assert_eq!(
        class(&a.bind_channel(&alice, 0x4000, rb).await),
        CLASS_SUCCESS_RESPONSE
    );
    assert_eq!(
        class(&b.bind_channel(&bob, 0x7FFF, ra).await),
        CLASS_SUCCESS_RESPONSE
    );
    // A channel number outside 0x4000–0x7FFF, or a second peer on a bound number: 400.
    assert_eq!(code(&a.bind_channel(&alice, 0x3FFF, rb).await), 400);
    assert_eq!(
        code(&a.bind_channel(&alice, 0x4000, addr("203.0.113.9:9")).await),
        400
    );
    let big: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();
    a.send_channel_data(0x4000, &big).await;
    assert_eq!(
        b.recv_relayed(WAIT).await,
        Some(Relayed::Channel(0x7FFF, big.clone()))
    );
    b.send_channel_data(0x7FFF, b"odd").await;
    assert_eq!(
        a.recv_relayed(WAIT).await,
        Some(Relayed::Channel(0x4000, b"odd".to_vec()))
    );
    // An unbound channel number is dropped.
    a.send_channel_data(0x4001, b"nowhere").await;
    assert_eq!(b.recv_relayed(Duration::from_millis(300)).await, None);

    // Deleting b's allocation closes its relay address: a's datagrams go nowhere.
    assert_eq!(
        class(&b.refresh(&bob, Duration::ZERO).await),
        CLASS_SUCCESS_RESPONSE
    );
    a.send_channel_data(0x4000, b"after").await;
    assert_eq!(b.recv_relayed(Duration::from_millis(300)).await, None);
}

/// With loopback allowed (`--turn-allowed-peer 127.0.0.1/32`), a plain UDP peer exchanges
/// datagrams with a client through the relay; a peer IP without a permission (127.0.0.2) is
/// not heard.
#[tokio::test]
async fn a_plain_peer_is_heard_only_with_a_permission() {
    let server = ServerProcess::start(&[
        "--turn-secret",
        SECRET,
        "--turn-allowed-peer",
        "127.0.0.1/32",
    ]);
    let (_ws, creds, _) = join(&server, "plain").await;
    let c = Client::challenged(server.stun).await;
    let relayed = c.allocated(&creds).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    assert_eq!(
        class(&c.permit(&creds, peer_addr).await),
        CLASS_SUCCESS_RESPONSE
    );
    assert_eq!(
        code(&c.permit(&creds, stranger.local_addr().unwrap()).await),
        403,
        "127.0.0.2 is outside the allowed /32"
    );
    c.send_indication(peer_addr, b"to the peer").await;
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
        .await
        .expect("relayed to the peer")
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"to the peer"[..], relayed));
    stranger.send_to(b"unsolicited", relayed).await.unwrap();
    peer.send_to(b"from the peer", relayed).await.unwrap();
    assert_eq!(
        c.recv_relayed(Duration::from_secs(5)).await,
        Some(Relayed::Indication(peer_addr, b"from the peer".to_vec())),
        "the unpermitted stranger's datagram is dropped, the peer's arrives"
    );
}

/// Not a check but a measurement (run with `--ignored --nocapture`): ChannelData of 1,200
/// bytes blasted for 2 s from one allocation to another, relay to relay, on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn relay_throughput_on_loopback() {
    let server = ServerProcess::start(&["--turn-secret", SECRET]);
    let (_wa, alice, _) = join(&server, "blast").await;
    let (_wb, bob, _) = join(&server, "blast").await;
    let a = Client::challenged(server.stun).await;
    let b = Client::challenged(server.stun).await;
    let ra = a.allocated(&alice).await;
    let rb = b.allocated(&bob).await;
    a.permit(&alice, rb).await;
    b.permit(&bob, ra).await;
    a.bind_channel(&alice, 0x4000, rb).await;
    b.bind_channel(&bob, 0x4000, ra).await;
    let b = std::sync::Arc::new(b);
    let receiver = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut got = 0usize;
            let mut buf = vec![0u8; 2048];
            while let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(500), b.sock.recv_from(&mut buf)).await
            {
                got += n.saturating_sub(4);
            }
            got
        })
    };
    let mut cd = ChannelData {
        data: vec![7u8; 1200],
        number: ChannelNumber(0x4000),
        ..Default::default()
    };
    cd.encode();
    // BURROW_BLAST_MBPS paces the sender (MB/s); unset, it sends as fast as it can.
    let pace: Option<f64> = std::env::var("BURROW_BLAST_MBPS")
        .ok()
        .and_then(|v| v.parse().ok());
    let started = Instant::now();
    let mut sent = 0usize;
    while started.elapsed() < Duration::from_secs(2) {
        if let Some(mbps) = pace {
            let due = Duration::from_secs_f64(sent as f64 / (mbps * 1e6));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        for _ in 0..16 {
            a.sock.send_to(&cd.raw, server.stun).await.unwrap();
            sent += 1200;
        }
        tokio::task::yield_now().await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let got = receiver.await.unwrap();
    eprintln!(
        "relayed {:.1} MB/s ({:.1} MB/s offered, {:.1}% delivered)",
        got as f64 / elapsed / 1e6,
        sent as f64 / elapsed / 1e6,
        100.0 * got as f64 / sent as f64
    );
}

/// Unauthenticated answers are larger than the requests (a 20-byte Allocate draws a ~110-byte
/// 401): with spoofed sources the relay would be a reflector. One client network gets at most
/// `--turn-unauthenticated-rate` of them a second; the rest go unanswered.
#[tokio::test]
async fn unauthenticated_answers_are_rate_limited_per_network() {
    let server =
        ServerProcess::start(&["--turn-secret", SECRET, "--turn-unauthenticated-rate", "50"]);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let answered = blast(&sock, server.stun, 0, 1_000).await;
    let secs = started.elapsed().as_secs() + 1;
    eprintln!("1,000 bare Allocates in {secs} s (rounded up): {answered} answered");
    assert!(
        answered >= 1,
        "some are answered: genuine clients get their challenge"
    );
    assert!(
        u64::from(answered) <= 50 * (secs + 1),
        "{answered} answers in {secs} s: over the budget of 50/s"
    );
}

/// A client that comes back with its resume token while its old connection still looks open
/// (the client saw the loss first) takes its place over: the old connection is closed, the
/// peer keeps its relay (its allocation still refreshes) and is not announced as gone.
#[tokio::test]
async fn a_takeover_by_resume_keeps_the_relay() {
    let server = ServerProcess::start(&["--turn-secret", SECRET]);
    let url = server.ws_url("takeover");
    let (mut old, welcome) = WsClient::join(&url, None).await;
    let ServerMessage::Welcome {
        ice_servers,
        peer_id,
        resume_token,
        ..
    } = welcome
    else {
        panic!("welcome");
    };
    let turn = ice_servers
        .iter()
        .find(|s| s.urls[0].starts_with("turn:"))
        .expect("a TURN entry");
    let creds = Creds {
        user: turn.username.clone().expect("a username"),
        pass: turn.credential.clone().expect("a credential"),
    };
    let holder = Client::challenged(server.stun).await;
    holder.allocated(&creds).await;

    let mut new = WsClient::connect(&url).await;
    new.send(&signal_protocol::ClientMessage::Hello {
        version: signal_protocol::PROTOCOL_VERSION,
        name: None,
        resume: Some(signal_protocol::Resume {
            peer_id: peer_id.clone(),
            token: resume_token,
        }),
        kind: Default::default(),
    })
    .await;
    assert!(
        matches!(
            new.recv().await,
            ServerMessage::Welcome { resumed: true, .. }
        ),
        "the new connection takes the place over"
    );
    assert!(old.closed_within(Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = holder.refresh(&creds, Duration::from_secs(600)).await;
    assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE, "{}", show(&r));
}

/// Reach issue: a client over TCP (as behind a network that drops UDP) allocates, relays both
/// ways with a client over UDP (Send and Data indications, ChannelData padded to 4 bytes on
/// its TCP leg), loses its allocation with its connection, and is held to the TCP limits:
/// connections per IP, and bytes that are neither STUN nor ChannelData.
#[tokio::test]
async fn turn_over_tcp_relays_and_holds_its_limits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = ServerProcess::start(&["--turn-secret", SECRET, "--turn-tcp-max-per-ip", "3"]);
    let (_wa, alice, _) = join(&server, "tcp").await;
    let (_wb, bob, _) = join(&server, "tcp").await;
    let a = Client::challenged_over_tcp(server.stun).await;
    let b = Client::challenged(server.stun).await;
    let ra = a.allocated(&alice).await;
    let rb = b.allocated(&bob).await;
    const WAIT: Duration = Duration::from_secs(5);
    assert_eq!(class(&a.permit(&alice, rb).await), CLASS_SUCCESS_RESPONSE);
    assert_eq!(class(&b.permit(&bob, ra).await), CLASS_SUCCESS_RESPONSE);
    a.send_indication(rb, b"over tcp").await;
    assert_eq!(
        b.recv_relayed(WAIT).await,
        Some(Relayed::Indication(ra, b"over tcp".to_vec()))
    );
    b.send_indication(ra, b"back over udp").await;
    assert_eq!(
        a.recv_relayed(WAIT).await,
        Some(Relayed::Indication(rb, b"back over udp".to_vec()))
    );
    assert_eq!(
        class(&a.bind_channel(&alice, 0x4000, rb).await),
        CLASS_SUCCESS_RESPONSE
    );
    assert_eq!(
        class(&b.bind_channel(&bob, 0x4001, ra).await),
        CLASS_SUCCESS_RESPONSE
    );
    a.send_channel_data(0x4000, b"odd").await;
    assert_eq!(
        b.recv_relayed(WAIT).await,
        Some(Relayed::Channel(0x4001, b"odd".to_vec()))
    );
    let big: Vec<u8> = (0..1201u32).map(|i| i as u8).collect();
    b.send_channel_data(0x4001, &big).await;
    assert_eq!(
        a.recv_relayed(WAIT).await,
        Some(Relayed::Channel(0x4000, big)),
        "a padded ChannelData frame, whole"
    );

    // Its connection closed, its allocation is gone at once (bob's stays).
    let live = || async {
        let m = burrow_tests::http::get(server.http, "/metrics").await;
        String::from_utf8_lossy(&m.body)
            .lines()
            .find_map(|l| l.strip_prefix("burrow_turn_allocations "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert_eq!(live().await, Some(2.0));
    drop(a);
    let mut left = None;
    for _ in 0..50 {
        left = live().await;
        if left == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        left,
        Some(1.0),
        "the TCP client's allocation ended with its connection"
    );
    let again = Client::challenged_over_tcp(server.stun).await;

    // Three connections from one IP at most: a fourth is closed unanswered.
    let _held: Vec<_> =
        futures_util::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(server.stun)))
            .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = tokio::net::TcpStream::connect(server.stun).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, fourth.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    drop(again);
    drop(_held);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Bytes that are neither STUN nor ChannelData (a TLS hello): closed.
    let mut tls = tokio::net::TcpStream::connect(server.stun).await.unwrap();
    tls.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0x03, 0x03])
        .await
        .unwrap();
    let read = tokio::time::timeout(WAIT, tls.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}

/// A TCP client that begins a message and trickles it (a byte every 3 s, never whole) is
/// closed once the message is 10 s old: it cannot hold a connection slot with no credentials.
#[tokio::test]
async fn a_tcp_client_that_never_finishes_a_message_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = ServerProcess::start(&[]);
    let mut tcp = tokio::net::TcpStream::connect(server.stun).await.unwrap();
    // A Binding request's header claiming a 65,532-byte body.
    tcp.write_all(&[0x00, 0x01, 0xFF, 0xFC, 0x21, 0x12, 0xA4, 0x42])
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let closed = loop {
        if tcp.write_all(&[0]).await.is_err() {
            break true;
        }
        match tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            _ if started.elapsed() > Duration::from_secs(20) => break false,
            _ => {}
        }
    };
    assert!(closed, "still open after {:?}", started.elapsed());
}
