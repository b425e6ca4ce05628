//! The fuzz targets: what each feeds, what it checks, and its seeds (valid, canonical inputs).

use peer_core::channels::{ControlMessage, FileMessage, StreamMessage};
use peer_core::link::{LinkError, RoomLink};
use peer_core::text::safe_line;
use peer_core::transfer::{safe_file_name, Incoming, TransferError};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use signal_protocol::{validate_room_id, ClientMessage, ServerMessage, MAX_ROOM_ID_LEN};

use crate::Target;

/// Every target, in the order `burrow-fuzz` runs them.
pub static TARGETS: &[Target] = &[
    Target {
        name: "client_message",
        about: "signal_protocol::ClientMessage::parse: no panic; what parses round-trips",
        seeds: || seeds(CLIENT_SEEDS),
        dictionary: JSON_TOKENS,
        check: check_client_message,
    },
    Target {
        name: "server_message",
        about: "ServerMessage from JSON (what every client reads): no panic; round trip",
        seeds: || seeds(SERVER_SEEDS),
        dictionary: JSON_TOKENS,
        check: |data| check_json::<ServerMessage>(data),
    },
    Target {
        name: "room_id",
        about: "signal_protocol::validate_room_id: accepts exactly 1-64 of [A-Za-z0-9_-]",
        seeds: || seeds(&["abc", "a-B_9", "x", "room-with-a-long-name_0123456789"]),
        dictionary: &["a", "Z", "9", "-", "_", ".", "/", "é", " ", "\u{0}"],
        check: check_room_id,
    },
    Target {
        name: "control_message",
        about: "peer_core ControlMessage::decode (chat, services): no panic; round trip",
        seeds: || seeds(CONTROL_SEEDS),
        dictionary: JSON_TOKENS,
        check: |data| check_json::<ControlMessage>(data),
    },
    Target {
        name: "stream_message",
        about: "peer_core StreamMessage::decode (stream framing): no panic; round trip",
        seeds: || seeds(STREAM_SEEDS),
        dictionary: JSON_TOKENS,
        check: |data| check_json::<StreamMessage>(data),
    },
    Target {
        name: "file_message",
        about: "peer_core FileMessage::decode (file framing): no panic; round trip",
        seeds: || seeds(FILE_SEEDS),
        dictionary: JSON_TOKENS,
        check: |data| check_json::<FileMessage>(data),
    },
    Target {
        name: "file_transfer",
        about:
            "a whole received file (header, chunks, end) through transfer::Incoming: checks hold",
        seeds: transfer_seeds,
        dictionary: JSON_TOKENS,
        check: check_file_transfer,
    },
    Target {
        name: "file_name",
        about: "transfer::safe_file_name: a plain, visible base name; idempotent",
        seeds: || seeds(&["report.pdf", "../../etc/passwd", ".hidden", "报告 (1).txt"]),
        dictionary: TEXT_TOKENS,
        check: check_file_name,
    },
    Target {
        name: "room_link",
        about:
            "link::RoomLink::parse (LINK, or LINK\\nSERVER): no panic; its URLs parse back to it",
        seeds: || {
            seeds(&[
                "http://127.0.0.1:8080/r/abc123",
                "wss://example.org/ws/x_y-z",
                "abc\nhttp://h:1",
                "abc\nh:1",
                "http://[::1]:8080/r/a?x=1#frag",
                "https://burrow.example/r/demo/",
            ])
        },
        dictionary: &[
            "http://", "https://", "ws://", "wss://", "ftp://", "://", "/r/", "/ws/", "r/", "/",
            "?", "#", ":", "[", "]", "[::1]", "@", "%2F", " ", "\n", ".", "..", "\u{202e}",
        ],
        check: check_room_link,
    },
    Target {
        name: "stun_message",
        about: "the relay's STUN/TURN decoding (signal_server::wire), ChannelData framing, \
                nonce check and peer policy on every address: no panic; seeds check out",
        seeds: stun_seeds,
        dictionary: STUN_TOKENS,
        check: check_stun_message,
    },
    Target {
        name: "text",
        about: "text::safe_line: no control or bidi character out; idempotent; the rest kept",
        seeds: || {
            seeds(&[
                "hello",
                "hi\x1b]0;owned\x07",
                "\x1b[2K\r* alice joined",
                "\x1b]52;c;b3duZWQ=\x07",
                "\u{9b}31m red",
                "invoice\u{202e}fdp.exe",
                "你好，世界 🦀",
                "a\tb\nc\u{2028}d",
            ])
        },
        dictionary: TEXT_TOKENS,
        check: check_text,
    },
];

/// Canonical client messages (as `serde_json` writes them: `encode(decode(x)) == x`).
const CLIENT_SEEDS: &[&str] = &[
    r#"{"type":"hello","version":1,"name":"alice"}"#,
    r#"{"type":"hello","version":1}"#,
    r#"{"type":"hello","version":1,"resume":{"peer_id":"k3J9xQ2m","token":"q0dAvJ3kUu9c7Fq-wmSkAPi5dT2M1vHn0aZ7S2yW8xE"}}"#,
    r#"{"type":"leave"}"#,
    r#"{"type":"signal","to":"k3J9xQ2m","data":{"kind":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}}"#,
    r#"{"type":"signal","to":"k3J9xQ2m","data":{"kind":"answer","sdp":"v=0\r\n"}}"#,
    r#"{"type":"signal","to":"abc","data":{"kind":"candidate","candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdp_mid":"0","sdp_m_line_index":0}}"#,
    r#"{"type":"signal","to":"abc","data":{"kind":"end_of_candidates"}}"#,
];

/// Canonical server messages.
const SERVER_SEEDS: &[&str] = &[
    r#"{"type":"welcome","version":1,"peer_id":"k3J9xQ2m","room":"demo","peers":[{"id":"Zp0aL7wE","name":"alice"},{"id":"x","name":null}],"ice_servers":[{"urls":["stun:203.0.113.7:3478"]},{"urls":["turn:203.0.113.7:3478?transport=udp"],"username":"1700000000:k3J9xQ2m","credential":"cGFzcw=="}],"resume_token":"q0dAvJ3kUu9c7Fq-wmSkAPi5dT2M1vHn0aZ7S2yW8xE","resumed":true}"#,
    r#"{"type":"peer_joined","peer":{"id":"Zp0aL7wE","name":null}}"#,
    r#"{"type":"peer_left","peer_id":"Zp0aL7wE"}"#,
    r#"{"type":"signal","from":"Zp0aL7wE","data":{"kind":"answer","sdp":"v=0\r\n"}}"#,
    r#"{"type":"error","code":"room_full","message":"room 'demo' is full"}"#,
];

/// Canonical control-channel messages.
const CONTROL_SEEDS: &[&str] = &[
    r#"{"t":"chat","text":"hi"}"#,
    // serde escapes C0 controls but writes U+202E as it is.
    "{\"t\":\"chat\",\"text\":\"hi \\u001b]0;x\\u0007 你好 \u{202e}\"}",
    r#"{"t":"services","services":[{"name":"web","kind":"http","protected":false},{"name":"db","kind":"tcp","protected":true}]}"#,
];

/// Canonical stream-channel messages.
const STREAM_SEEDS: &[&str] = &[
    r#"{"t":"open","service":"web"}"#,
    r#"{"t":"open","service":"web","token":"s3cret"}"#,
    r#"{"t":"accepted"}"#,
    r#"{"t":"refused","reason":"wrong or missing access token"}"#,
    r#"{"t":"end"}"#,
    r#"{"t":"reset","reason":"connection reset by peer"}"#,
];

/// Canonical file-channel messages.
const FILE_SEEDS: &[&str] = &[
    r#"{"t":"header","name":"a.bin","size":3}"#,
    r#"{"t":"header","name":"photo.jpg","size":1048576,"mime":"image/jpeg"}"#,
    r#"{"t":"end","sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}"#,
    r#"{"t":"received","sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}"#,
    r#"{"t":"refused","reason":"this peer does not accept files"}"#,
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn seeds(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Tokens of the JSON messages: punctuation, the tags and field names in use, escapes that
/// serde must handle (surrogates, controls), and values at the edges.
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "null",
    "true",
    "false",
    "\"\"",
    "{}",
    "[]",
    "\"type\":",
    "\"t\":",
    "\"kind\":",
    "\"hello\"",
    "\"signal\"",
    "\"welcome\"",
    "\"peer_joined\"",
    "\"peer_left\"",
    "\"error\"",
    "\"offer\"",
    "\"answer\"",
    "\"candidate\"",
    "\"end_of_candidates\"",
    "\"chat\"",
    "\"services\"",
    "\"open\"",
    "\"accepted\"",
    "\"refused\"",
    "\"end\"",
    "\"reset\"",
    "\"header\"",
    "\"received\"",
    "\"version\":",
    "\"name\":",
    "\"to\":",
    "\"from\":",
    "\"data\":",
    "\"sdp\":",
    "\"peer\":",
    "\"peers\":",
    "\"peer_id\":",
    "\"ice_servers\":",
    "\"urls\":",
    "\"code\":",
    "\"message\":",
    "\"text\":",
    "\"service\":",
    "\"token\":",
    "\"reason\":",
    "\"size\":",
    "\"mime\":",
    "\"sha256\":",
    "\"protected\":",
    "\"http\"",
    "\"tcp\"",
    "\"room_full\"",
    "\"sdp_m_line_index\":",
    "\\u0000",
    "\\u001b",
    "\\ud800",
    "\\udc00",
    "\\ud83e\\udd80",
    "\\n",
    "\\\"",
    "-1",
    "1e999",
    "18446744073709551616",
    "65536",
    "\u{9b}",
    "\u{202e}",
    "\u{1b}",
];

/// Characters that text cleaning must handle: every kind of control, bidi, breaks, and
/// ordinary text that must survive.
const TEXT_TOKENS: &[&str] = &[
    "\x1b",
    "\x07",
    "\x1b]0;",
    "\x1b[2K",
    "\x1b]52;c;",
    "\r",
    "\n",
    "\t",
    "\x0b",
    "\x0c",
    "\0",
    "\x7f",
    "\u{80}",
    "\u{85}",
    "\u{9b}",
    "\u{9d}",
    "\u{9f}",
    "\u{a0}",
    "\u{200b}",
    "\u{200e}",
    "\u{202a}",
    "\u{202e}",
    "\u{2066}",
    "\u{2069}",
    "\u{2028}",
    "\u{2029}",
    "\u{feff}",
    "你好",
    "🦀",
    "é",
    "/",
    "\\",
    ".",
    "..",
    " ",
    "\u{3000}",
];

/// The common property of every JSON message type: decoding never panics, and what decodes
/// encodes to a canonical form that decodes to the same value and re-encodes to itself.
fn round_trip<T>(text: &str) -> Result<T, serde_json::Error>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let value: T = serde_json::from_str(text)?;
    let encoded = match serde_json::to_string(&value) {
        Ok(e) => e,
        Err(e) => panic!("{value:?} decoded but does not encode: {e}"),
    };
    let again: T = match serde_json::from_str(&encoded) {
        Ok(v) => v,
        Err(e) => panic!("{value:?} encodes to {encoded:?}, which does not decode: {e}"),
    };
    assert_eq!(
        again, value,
        "round trip through {encoded:?} changed the value"
    );
    let re_encoded = serde_json::to_string(&again).unwrap_or_default();
    assert_eq!(re_encoded, encoded, "encoding is not canonical");
    Ok(value)
}

/// A short class for an outcome: the value's kind, or the error's message up to its first
/// specific detail (a quoted name or a position), so classes stay few.
fn outcome<T: Serialize>(result: &Result<T, impl std::fmt::Display>) -> String {
    match result {
        Ok(value) => {
            let v = serde_json::to_value(value).unwrap_or_default();
            let tag = ["type", "t", "kind"]
                .iter()
                .find_map(|k| v.get(k).and_then(|t| t.as_str()))
                .unwrap_or("?");
            format!("ok:{tag}")
        }
        Err(e) => {
            let text = e.to_string();
            let cut = text.find([
                '`', '\'', '"', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
            ]);
            format!("err:{}", &text[..cut.unwrap_or(text.len())])
        }
    }
}

fn check_json<T>(data: &[u8]) -> String
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = String::from_utf8_lossy(data);
    outcome(&round_trip::<T>(&text))
}

fn check_client_message(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let parsed = ClientMessage::parse(&text);
    // `parse` must agree with plain decoding, and what parses must round-trip.
    let plain = round_trip::<ClientMessage>(&text);
    match (&parsed, &plain) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("parse and decoding disagree: {parsed:?} vs {plain:?}"),
    }
    match &parsed {
        Ok(_) => outcome(&plain),
        Err(e) => format!("{}:{}", e.code, outcome(&plain)),
    }
}

fn check_room_id(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let ok = validate_room_id(&text).is_ok();
    let expected = !text.is_empty()
        && text.len() <= MAX_ROOM_ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    assert_eq!(ok, expected, "validate_room_id({text:?})");
    format!("{ok}:{}", text.len().min(MAX_ROOM_ID_LEN + 1))
}

/// Whether `c` must never reach a terminal (the oracle, written apart from `peer_core::text`).
fn forbidden(c: char) -> bool {
    c.is_control()
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

fn check_text(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let out = safe_line(&text);
    assert!(
        !out.chars()
            .any(|c| forbidden(c) || c == '\u{2028}' || c == '\u{2029}'),
        "{out:?} still holds a control, bidi or line-break character"
    );
    assert_eq!(safe_line(&out), out, "not idempotent");
    // Nothing else is touched: the visible characters come out in order.
    let visible = |s: &str| -> String {
        s.chars()
            .filter(|c| !forbidden(*c) && *c != ' ' && *c != '\u{2028}' && *c != '\u{2029}')
            .collect()
    };
    assert_eq!(visible(&out), visible(&text), "visible text changed");
    let changed = out != text;
    format!("{changed}:{}", out.len().min(8))
}

fn check_file_name(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let name = safe_file_name(&text);
    assert_name_is_plain(&name);
    assert_eq!(safe_file_name(&name), name, "not idempotent");
    format!(
        "{}:{}:{}:{}",
        name == "received-file",
        name.len() == text.len(),
        text.contains(['/', '\\']),
        name.chars().count().min(201) / 50
    )
}

fn assert_name_is_plain(name: &str) {
    assert!(!name.is_empty(), "empty file name");
    assert!(
        name.len() <= peer_core::transfer::MAX_NAME_BYTES,
        "{name:?} is too long"
    );
    assert!(
        !name.contains(['\u{200B}', '\u{200D}', '\u{FEFF}', '\u{AD}', '\u{2215}', '\u{FF0F}']),
        "{name:?} keeps an invisible character or a look-alike slash"
    );
    assert!(!name.contains(['/', '\\']), "{name:?} names a folder");
    assert!(
        !name.starts_with(|c: char| c == '.' || c.is_whitespace()),
        "{name:?} is hidden or starts blank"
    );
    assert!(
        !name
            .chars()
            .any(|c| forbidden(c) || c == '\u{2028}' || c == '\u{2029}'),
        "{name:?} holds a control or bidi character"
    );
    assert!(name != "." && name != "..");
}

/// Seeds for `file_transfer`: a header line, chunks separated by 0xFF, the end message last.
fn transfer_seeds() -> Vec<Vec<u8>> {
    let make = |name: &str, chunks: &[&[u8]], size: Option<u64>| {
        let total: Vec<u8> = chunks.concat();
        let header = FileMessage::Header {
            name: name.into(),
            size: size.unwrap_or(total.len() as u64),
            mime: None,
        };
        let end = FileMessage::End {
            sha256: hex::encode(Sha256::digest(&total)),
        };
        let mut input = header.encode().into_bytes();
        input.push(b'\n');
        for c in chunks {
            input.extend_from_slice(c);
            input.push(0xff);
        }
        input.extend_from_slice(end.encode().as_bytes());
        input
    };
    vec![
        make("a.txt", &[b"abc"], None),
        make("../x.bin", &[b"hello ", b"world"], None),
        make("empty", &[], None),
        make("short", &[b"ab"], Some(3)),
    ]
}

fn check_file_transfer(data: &[u8]) -> String {
    let (head, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(first) = FileMessage::decode(&String::from_utf8_lossy(head)) else {
        return "bad header".into();
    };
    let mut file = match Incoming::start(&first) {
        Ok(f) => f,
        Err(e) => {
            assert!(
                !matches!(first, FileMessage::Header { .. }),
                "a header refused: {e}"
            );
            return "not a header".into();
        }
    };
    assert_name_is_plain(&file.name);
    let mut pieces: Vec<&[u8]> = rest.split(|b| *b == 0xff).collect();
    let end = pieces.pop().unwrap_or_default();
    let mut hash = Sha256::new();
    let mut total = 0u64;
    for chunk in pieces {
        total += chunk.len() as u64;
        match file.on_chunk(chunk) {
            Ok(()) => {
                assert!(total <= file.size, "accepted more than announced");
                assert_eq!(file.received(), total);
                hash.update(chunk);
            }
            Err(TransferError::TooLong { expected }) => {
                assert!(
                    total > expected,
                    "refused as too long at {total} of {expected}"
                );
                return "too long".into();
            }
            Err(e) => panic!("unexpected chunk error: {e}"),
        }
    }
    let Ok(end) = FileMessage::decode(&String::from_utf8_lossy(end)) else {
        return "bad end".into();
    };
    let size = file.size;
    let abandoned = file.abandoned();
    assert!(matches!(abandoned, TransferError::Abandoned { got, .. } if got == total));
    let real = hex::encode(hash.finalize());
    match file.finish(&end) {
        Ok(sha) => {
            assert_eq!(total, size, "accepted a file of the wrong size");
            assert_eq!(sha, real, "accepted a file whose hash does not match");
            "received".into()
        }
        Err(TransferError::TooShort { got, expected }) => {
            assert!(got == total && expected == size && got < size);
            "too short".into()
        }
        Err(TransferError::HashMismatch { .. }) => {
            assert!(
                !matches!(&end, FileMessage::End { sha256 } if sha256.eq_ignore_ascii_case(&real))
            );
            "hash mismatch".into()
        }
        Err(TransferError::NoHeader) => {
            assert!(!matches!(end, FileMessage::End { .. }));
            "no end".into()
        }
        Err(e) => panic!("unexpected end error: {e}"),
    }
}

fn check_room_link(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let (link, server) = match text.split_once('\n') {
        Some((l, s)) => (l, Some(s)),
        None => (text.as_ref(), None),
    };
    let parsed = RoomLink::parse(link, server);
    if let Ok(l) = &parsed {
        assert!(
            validate_room_id(&l.room).is_ok(),
            "{l:?}: bad room accepted"
        );
        assert!(
            l.ws_base.starts_with("ws://") || l.ws_base.starts_with("wss://"),
            "{l:?}"
        );
        assert!(
            l.http_base.starts_with("http://") || l.http_base.starts_with("https://"),
            "{l:?}"
        );
        let _ = l.host();
        for url in [l.page_url(), l.ws_url()] {
            assert_eq!(
                RoomLink::parse(&url, None).as_ref(),
                Ok(l),
                "{url:?} does not parse back to the link"
            );
        }
    }
    match parsed {
        Ok(l) => format!("ok:{}:{}", &l.ws_base[..3], server.is_some()),
        Err(LinkError::NotALink(_)) => format!("not a link:{}", server.is_some()),
        Err(LinkError::BadRoom { reason, .. }) => format!("bad room:{reason}"),
    }
}

/// Bytes of STUN/TURN headers and attribute types: the magic cookie, methods, USERNAME, REALM,
/// NONCE, MESSAGE-INTEGRITY, FINGERPRINT, XOR-PEER-ADDRESS, LIFETIME, a channel number.
const STUN_TOKENS: &[&str] = &[
    "\u{21}\u{12}\u{a4}\u{42}",
    "\u{0}\u{1}",
    "\u{0}\u{3}",
    "\u{0}\u{8}",
    "\u{0}\u{9}",
    "\u{0}\u{6}",
    "\u{0}\u{14}",
    "\u{0}\u{15}",
    "\u{0}\u{12}",
    "\u{0}\u{d}",
    "\u{0}\u{c}",
    "\u{40}\u{0}",
    "\u{0}\u{0}",
    "\u{ff}\u{ff}",
];

/// The key the seeds are signed with (as the relay derives one from a credential).
const STUN_KEY: &[u8] = b"fuzz-long-term-key";

/// Valid messages the relay sees: a Binding request, an authenticated Allocate, a
/// CreatePermission, a ChannelBind, a Send indication, and ChannelData.
fn stun_seeds() -> Vec<Vec<u8>> {
    use signal_server::wire::{Builder, Class};
    let tid = [7u8; 12];
    let peer: std::net::SocketAddr = "203.0.113.7:40000"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    let nonce = signal_server::nonce::Nonces::with_key(b"k").mint(peer);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    Builder::new(&mut buf, 0x001, Class::Request, tid).fingerprint();
    out.push(buf.clone());
    Builder::new(&mut buf, 0x003, Class::Request, tid)
        .attr(0x0019, &[17, 0, 0, 0])
        .attr(0x0006, b"1999999999:peer")
        .attr(0x0014, b"burrow")
        .attr(0x0015, nonce.as_bytes())
        .u32_attr(0x000D, 600)
        .integrity(STUN_KEY)
        .fingerprint();
    out.push(buf.clone());
    Builder::new(&mut buf, 0x008, Class::Request, tid)
        .xor_address(0x0012, peer)
        .attr(0x0006, b"1999999999:peer")
        .integrity(STUN_KEY);
    out.push(buf.clone());
    Builder::new(&mut buf, 0x009, Class::Request, tid)
        .attr(0x000C, &[0x40, 0x00, 0, 0])
        .xor_address(0x0012, "[2001:db8::1]:9".parse().unwrap_or(peer))
        .integrity(STUN_KEY);
    out.push(buf.clone());
    Builder::new(&mut buf, 0x006, Class::Indication, tid)
        .xor_address(0x0012, peer)
        .attr(0x0013, b"hello");
    out.push(buf.clone());
    out.push(vec![
        0x40, 0x00, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', 0, 0, 0,
    ]);
    out
}

fn check_stun_message(data: &[u8]) -> String {
    use signal_server::turn_guard::PeerPolicy;
    use signal_server::wire::{channel_data, Message};
    if let Some((number, payload)) = channel_data(data) {
        assert!(
            payload.len() + 4 <= data.len(),
            "ChannelData payload within the datagram"
        );
        return format!("chan:{}", signal_server::wire::is_channel_number(number));
    }
    let Some(msg) = Message::parse(data) else {
        return "none".into();
    };
    let mut total = 0usize;
    for (_, value) in msg.attributes() {
        total += value.len();
        assert!(total <= data.len(), "attributes stay inside the message");
    }
    let client: std::net::SocketAddr = "198.51.100.1:5000"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    let policy = PeerPolicy::default();
    let mut peers = 0;
    for typ in [0x0012u16, 0x0020, 0x0016] {
        if let Some(addrs) = msg.xor_addresses(typ) {
            for a in addrs {
                let _ = policy.judge(a);
                peers += 1;
            }
        }
    }
    let _ = msg.u32_attr(0x000D);
    if let Some(n) = msg.get(0x0015) {
        let _ = signal_server::nonce::Nonces::with_key(b"k").check(n, client);
    }
    let signed = msg.has_integrity() && msg.integrity_matches(STUN_KEY);
    let fp = msg.fingerprint_ok();
    format!(
        "stun:{}:{:?}:peers{}:signed{signed}:fp{fp}",
        msg.method(),
        msg.class(),
        peers.min(3)
    )
}
