//! The embedded TURN relay refuses what it must (NAT lab case 7), spoken to in raw STUN/TURN
//! messages from a UDP socket on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use burrow_tests::server::ServerProcess;
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageClass, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST,
    CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_CREATE_PERMISSION,
};
use stun::textattrs::TextAttribute;
use tokio::net::UdpSocket;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;

const SECRET: &str = "lab-secret";

/// The TURN REST API password for `username`.
fn password(username: &str) -> String {
    use base64::Engine;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, username.as_bytes()))
}

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    realm: String,
    nonce: String,
}

impl Client {
    async fn new(server: SocketAddr) -> Client {
        Client {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            realm: String::new(),
            nonce: String::new(),
        }
    }

    async fn exchange(&self, req: &Message) -> Message {
        let mut buf = [0u8; 1500];
        for _ in 0..5 {
            self.sock.send_to(&req.raw, self.server).await.unwrap();
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_secs(2), self.sock.recv_from(&mut buf)).await
            {
                let mut resp = Message::new();
                resp.raw = buf[..n].to_vec();
                resp.decode().expect("a STUN response");
                assert_eq!(resp.transaction_id, req.transaction_id);
                return resp;
            }
        }
        panic!("no TURN response");
    }

    fn request(
        &self,
        method: stun::message::Method,
        mut attrs: Vec<Box<dyn Setter>>,
        auth: Option<(&str, &str)>,
    ) -> Message {
        let mut all: Vec<Box<dyn Setter>> = vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        all.append(&mut attrs);
        if let Some((user, pass)) = auth {
            all.push(Box::new(TextAttribute::new(ATTR_USERNAME, user.into())));
            all.push(Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())));
            all.push(Box::new(TextAttribute::new(ATTR_NONCE, self.nonce.clone())));
            all.push(Box::new(MessageIntegrity::new_long_term_integrity(
                user.into(),
                self.realm.clone(),
                pass.into(),
            )));
        }
        all.push(Box::new(FINGERPRINT));
        let mut m = Message::new();
        m.build(&all).unwrap();
        m
    }

    /// An Allocate without credentials: the server challenges (401) with realm and nonce.
    async fn allocate_anonymously(&mut self) -> Message {
        let req = self.request(
            METHOD_ALLOCATE,
            vec![Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            })],
            None,
        );
        let resp = self.exchange(&req).await;
        if let Ok(realm) = TextAttribute::get_from_as(&resp, ATTR_REALM) {
            self.realm = realm.text;
        }
        if let Ok(nonce) = TextAttribute::get_from_as(&resp, ATTR_NONCE) {
            self.nonce = nonce.text;
        }
        resp
    }

    async fn allocate(&self, user: &str, pass: &str) -> Message {
        let req = self.request(
            METHOD_ALLOCATE,
            vec![Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            })],
            Some((user, pass)),
        );
        self.exchange(&req).await
    }

    async fn permit(&self, user: &str, pass: &str, peer: SocketAddr) -> Message {
        let req = self.request(
            METHOD_CREATE_PERMISSION,
            vec![Box::new(PeerAddress {
                ip: peer.ip(),
                port: peer.port(),
            })],
            Some((user, pass)),
        );
        self.exchange(&req).await
    }
}

fn class(m: &Message) -> MessageClass {
    m.typ.class
}

fn code(m: &Message) -> u16 {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).expect("an ERROR-CODE");
    e.code.0
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn turn_refuses_without_credentials_with_expired_ones_and_to_loopback() {
    let server = ServerProcess::start(&["--turn-secret", SECRET]);
    let mut c = Client::new(server.stun).await;

    // No credentials: refused, with a challenge.
    let r = c.allocate_anonymously().await;
    assert_eq!(class(&r), CLASS_ERROR_RESPONSE);
    assert_eq!(code(&r), 401);
    assert!(!c.realm.is_empty() && !c.nonce.is_empty());

    // Expired credentials (correctly signed, expiry in the past): refused.
    let old = format!("{}:ghost", now() - 60);
    let r = c.allocate(&old, &password(&old)).await;
    assert_eq!(
        class(&r),
        CLASS_ERROR_RESPONSE,
        "expired credentials must not allocate"
    );
    assert!([400, 401].contains(&code(&r)), "code {}", code(&r));

    // A wrong password: refused.
    let fresh = format!("{}:alice", now() + 600);
    let r = c.allocate(&fresh, "not-the-password").await;
    assert_eq!(class(&r), CLASS_ERROR_RESPONSE);

    // Valid, unexpired credentials: allocated.
    let r = c.allocate(&fresh, &password(&fresh)).await;
    assert_eq!(
        class(&r),
        CLASS_SUCCESS_RESPONSE,
        "valid credentials allocate"
    );

    // A permission toward loopback: 403 Forbidden. Toward the server's own port: 403 too.
    let r = c
        .permit(&fresh, &password(&fresh), "127.0.0.1:9".parse().unwrap())
        .await;
    assert_eq!(class(&r), CLASS_ERROR_RESPONSE);
    assert_eq!(code(&r), 403);
    let r = c
        .permit(&fresh, &password(&fresh), "169.254.0.1:9".parse().unwrap())
        .await;
    assert_eq!(code(&r), 403);
    let r = c
        .permit(
            &fresh,
            &password(&fresh),
            "224.0.0.251:5353".parse().unwrap(),
        )
        .await;
    assert_eq!(code(&r), 403);
    // An ordinary peer address is permitted.
    let r = c
        .permit(
            &fresh,
            &password(&fresh),
            "203.0.113.5:40000".parse().unwrap(),
        )
        .await;
    assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE);
}

#[tokio::test]
async fn the_welcome_hands_out_working_turn_credentials() {
    use burrow_tests::ws::WsClient;
    use signal_protocol::ServerMessage;
    let server = ServerProcess::start(&["--turn-secret", SECRET]);
    let (_ws, welcome) = WsClient::join(&server.ws_url("turn"), None).await;
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
    assert_eq!(
        turn.urls[0],
        format!("turn:127.0.0.1:{}?transport=udp", server.stun.port())
    );
    let user = turn.username.clone().unwrap();
    let pass = turn.credential.clone().unwrap();
    assert!(user.ends_with(&format!(":{peer_id}")), "{user}");
    assert_eq!(pass, password(&user), "coturn-compatible REST credential");
    let mut c = Client::new(server.stun).await;
    c.allocate_anonymously().await;
    let r = c.allocate(&user, &pass).await;
    assert_eq!(class(&r), CLASS_SUCCESS_RESPONSE);
}

#[tokio::test]
async fn allocations_per_peer_are_capped() {
    let server = ServerProcess::start(&[
        "--turn-secret",
        SECRET,
        "--turn-max-allocations-per-peer",
        "1",
    ]);
    let user = format!("{}:bob", now() + 600);
    let mut first = Client::new(server.stun).await;
    first.allocate_anonymously().await;
    assert_eq!(
        class(&first.allocate(&user, &password(&user)).await),
        CLASS_SUCCESS_RESPONSE
    );
    let mut second = Client::new(server.stun).await;
    second.allocate_anonymously().await;
    let r = second.allocate(&user, &password(&user)).await;
    assert_eq!(class(&r), CLASS_ERROR_RESPONSE);
    assert_eq!(code(&r), 486, "Allocation Quota Reached");
}
