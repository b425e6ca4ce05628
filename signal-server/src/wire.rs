//! STUN and TURN messages on the wire (RFC 8489, RFC 8656), read in place and written into a
//! reused buffer.
//!
//! Everything that arrives on the server's UDP sockets comes from anyone on the internet, so
//! reading is defensive: [`Message::parse`] checks the header (leading zero bits, magic cookie,
//! a length that is a multiple of four and fits the datagram) and walks every attribute once,
//! refusing a datagram whose attributes overrun it. After that, getters only slice what the walk
//! proved is there; nothing here panics on any input. Values are borrowed from the datagram, not
//! copied, which keeps the relay's hot paths (Send indications, ChannelData) free of allocation.
//!
//! Writing goes through [`Builder`], which appends attributes (with their padding) to a `Vec`
//! the caller keeps between messages, and finishes with MESSAGE-INTEGRITY (HMAC-SHA1 with the
//! long-term key) and FINGERPRINT (CRC-32) as RFC 8489 §14.5 and §14.7 describe.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ring::hmac;

/// The magic cookie every RFC 5389+ message carries in bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;
/// Size of a ChannelData header (channel number and length).
pub const CHANNEL_HEADER_LEN: usize = 4;

/// STUN/TURN methods this server knows.
pub mod method {
    /// Binding (RFC 8489): "what is my address?".
    pub const BINDING: u16 = 0x001;
    /// Allocate (RFC 8656 §7): reserve a relayed address.
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh: extend or delete an allocation.
    pub const REFRESH: u16 = 0x004;
    /// Send indication: client → peer, through the relay.
    pub const SEND: u16 = 0x006;
    /// Data indication: peer → client, through the relay.
    pub const DATA: u16 = 0x007;
    /// CreatePermission: let a peer IP talk through the allocation.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind: a 4-byte-header shortcut to one peer.
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types this server reads or writes.
pub mod attr {
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME (seconds).
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// FINGERPRINT (CRC-32).
    pub const FINGERPRINT: u16 = 0x8028;
}

/// The class of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request (expects a response).
    Request,
    /// An indication (no response).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// The 16-bit message type for `method` and `class` (RFC 8489 §5: class bits interleaved).
pub fn message_type(method: u16, class: Class) -> u16 {
    let c = class.bits();
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0b01) << 4)
        | ((c & 0b10) << 7)
}

fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = match ((t >> 4) & 0b01) | ((t >> 7) & 0b10) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

/// Rounds `n` up to a multiple of four (attribute padding).
pub const fn padded(n: usize) -> usize {
    (n + 3) & !3
}

/// A STUN message, borrowed from the datagram it arrived in; only built by [`Message::parse`],
/// so every attribute it yields lies inside the datagram.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    method: u16,
    class: Class,
    /// Offset of the first MESSAGE-INTEGRITY attribute's header, if any.
    integrity_at: Option<usize>,
    /// Offset of the FINGERPRINT attribute's header, if it is the last attribute.
    fingerprint_at: Option<usize>,
}

impl<'a> Message<'a> {
    /// Reads a STUN message from a datagram, or `None` if it is not a well-formed one.
    ///
    /// Bytes after the length the header announces are ignored (RFC 8489 §6.3 asks for an exact
    /// match over UDP; being lenient costs nothing and a trailer can never be read as an
    /// attribute).
    pub fn parse(buf: &'a [u8]) -> Option<Message<'a>> {
        if buf.len() < HEADER_LEN || buf[0] & 0xC0 != 0 {
            return None;
        }
        if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if len % 4 != 0 || HEADER_LEN + len > buf.len() {
            return None;
        }
        let raw = &buf[..HEADER_LEN + len];
        let (method, class) = split_type(u16::from_be_bytes([raw[0], raw[1]]));
        let mut integrity_at = None;
        let mut fingerprint_at = None;
        let mut at = HEADER_LEN;
        while at < raw.len() {
            let (typ, vlen) = attr_header(raw, at)?;
            let end = at + 4 + vlen;
            if end > raw.len() {
                return None;
            }
            if fingerprint_at.is_some() {
                return None; // FINGERPRINT must be the last attribute
            }
            match typ {
                attr::MESSAGE_INTEGRITY if integrity_at.is_none() => {
                    if vlen != 20 {
                        return None;
                    }
                    integrity_at = Some(at);
                }
                attr::FINGERPRINT => {
                    if vlen != 4 {
                        return None;
                    }
                    fingerprint_at = Some(at);
                }
                _ => {}
            }
            at = at + 4 + padded(vlen);
        }
        Some(Message {
            raw,
            method,
            class,
            integrity_at,
            fingerprint_at,
        })
    }

    /// The method (see [`method`]).
    pub fn method(&self) -> u16 {
        self.method
    }

    /// The class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The 96-bit transaction ID.
    pub fn transaction_id(&self) -> [u8; 12] {
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&self.raw[8..HEADER_LEN]);
        tid
    }

    /// Whether the message carries MESSAGE-INTEGRITY.
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// The attributes that count: those before MESSAGE-INTEGRITY (RFC 8489 §14.5: anything
    /// after it but FINGERPRINT is ignored), as (type, value).
    pub fn attributes(&self) -> Attributes<'a> {
        let end = self
            .integrity_at
            .or(self.fingerprint_at)
            .unwrap_or(self.raw.len());
        Attributes {
            raw: &self.raw[..end],
            at: HEADER_LEN,
        }
    }

    /// The value of the first attribute of type `typ` (before MESSAGE-INTEGRITY), if any.
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attributes().find(|&(t, _)| t == typ).map(|(_, v)| v)
    }

    /// The first attribute `typ` read as an XOR'd transport address.
    pub fn xor_address(&self, typ: u16) -> Option<SocketAddr> {
        self.get(typ)
            .and_then(|v| decode_xor_address(v, &self.raw[8..HEADER_LEN]))
    }

    /// Every attribute `typ` read as an XOR'd transport address; `None` if one is malformed.
    pub fn xor_addresses(&self, typ: u16) -> Option<Vec<SocketAddr>> {
        let tid = &self.raw[8..HEADER_LEN];
        self.attributes()
            .filter(|&(t, _)| t == typ)
            .map(|(_, v)| decode_xor_address(v, tid))
            .collect()
    }

    /// The first attribute `typ` read as a 32-bit number.
    pub fn u32_attr(&self, typ: u16) -> Option<u32> {
        let v = self.get(typ)?;
        let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    /// Whether MESSAGE-INTEGRITY is present and matches `key` (RFC 8489 §14.5: HMAC-SHA1 over
    /// the message up to the attribute, with the header's length counting up to its end).
    pub fn integrity_matches(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(tag) = self.raw.get(at + 4..at + 24) else {
            return false;
        };
        let expected = integrity_tag(key, &self.raw[..at]);
        constant_time_eq(expected.as_ref(), tag)
    }

    /// `false` only if a FINGERPRINT is present and wrong (its absence is fine).
    pub fn fingerprint_ok(&self) -> bool {
        let Some(at) = self.fingerprint_at else {
            return true;
        };
        let Some(v) = self.raw.get(at + 4..at + 8) else {
            return false;
        };
        let want = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        fingerprint_of(&self.raw[..at]) == want
    }
}

/// Compares two byte strings without an early exit (no timing hint about where they differ).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Iterates over a message's attributes as (type, value); built only over a validated message.
pub struct Attributes<'a> {
    raw: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (typ, vlen) = attr_header(self.raw, self.at)?;
        let value = self.raw.get(self.at + 4..self.at + 4 + vlen)?;
        self.at += 4 + padded(vlen);
        Some((typ, value))
    }
}

fn attr_header(raw: &[u8], at: usize) -> Option<(u16, usize)> {
    let h = raw.get(at..at + 4)?;
    Some((
        u16::from_be_bytes([h[0], h[1]]),
        usize::from(u16::from_be_bytes([h[2], h[3]])),
    ))
}

/// The HMAC-SHA1 MESSAGE-INTEGRITY value for a message whose bytes before the attribute are
/// `before` (its length field is rewritten to end just after the 24-byte attribute).
fn integrity_tag(key: &[u8], before: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    let len = (before.len() + 24 - HEADER_LEN) as u16;
    ctx.update(&before[..2]);
    ctx.update(&len.to_be_bytes());
    ctx.update(&before[4..]);
    ctx.sign()
}

/// FINGERPRINT of a message whose bytes before the attribute are `before` (its length field
/// rewritten to end just after the 8-byte attribute), XOR'd with 0x5354554e.
fn fingerprint_of(before: &[u8]) -> u32 {
    let len = (before.len() + 8 - HEADER_LEN) as u16;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&before[..2]);
    crc.update(&len.to_be_bytes());
    crc.update(&before[4..]);
    crc.finalize() ^ 0x5354_554E
}

/// Reads an XOR-*-ADDRESS value (family, X-Port, X-Address) with transaction ID `tid`.
pub fn decode_xor_address(v: &[u8], tid: &[u8]) -> Option<SocketAddr> {
    let family = *v.get(1)?;
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match family {
        0x01 => {
            let a = v.get(4..8)?;
            let ip = Ipv4Addr::new(
                a[0] ^ cookie[0],
                a[1] ^ cookie[1],
                a[2] ^ cookie[2],
                a[3] ^ cookie[3],
            );
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        0x02 => {
            let a = v.get(4..20)?;
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&cookie);
            mask[4..].copy_from_slice(tid.get(..12)?);
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = a[i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Writes an XOR-*-ADDRESS value for `addr` into `out` (8 bytes for IPv4, 20 for IPv6);
/// returns how many bytes it wrote.
pub fn encode_xor_address(addr: SocketAddr, tid: &[u8; 12], out: &mut [u8; 20]) -> usize {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    out[0] = 0;
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip().to_canonical() {
        IpAddr::V4(v4) => {
            out[1] = 0x01;
            for (i, b) in v4.octets().iter().enumerate() {
                out[4 + i] = b ^ cookie[i];
            }
            8
        }
        IpAddr::V6(v6) => {
            out[1] = 0x02;
            let o = v6.octets();
            for i in 0..16 {
                let m = if i < 4 { cookie[i] } else { tid[i - 4] };
                out[4 + i] = o[i] ^ m;
            }
            20
        }
    }
}

/// Writes STUN messages into a caller-owned buffer (cleared first; its capacity is reused).
pub struct Builder<'b> {
    buf: &'b mut Vec<u8>,
    tid: [u8; 12],
}

impl<'b> Builder<'b> {
    /// Starts a message of `method`/`class` with transaction ID `tid` in `buf`.
    pub fn new(buf: &'b mut Vec<u8>, method: u16, class: Class, tid: [u8; 12]) -> Builder<'b> {
        buf.clear();
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid);
        Builder { buf, tid }
    }

    fn set_length(&mut self, len: usize) {
        let len = (len as u16).to_be_bytes();
        self.buf[2] = len[0];
        self.buf[3] = len[1];
    }

    /// Appends an attribute (padded to four bytes).
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = padded(value.len()) - value.len();
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        let len = self.buf.len() - HEADER_LEN;
        self.set_length(len);
        self
    }

    /// Appends an XOR'd transport address attribute.
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let mut v = [0u8; 20];
        let n = encode_xor_address(addr, &self.tid, &mut v);
        self.attr(typ, &v[..n])
    }

    /// Appends a 32-bit attribute (e.g. LIFETIME).
    pub fn u32_attr(&mut self, typ: u16, value: u32) -> &mut Self {
        self.attr(typ, &value.to_be_bytes())
    }

    /// Appends ERROR-CODE with `code` and a short reason phrase.
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = Vec::with_capacity(4 + reason.len());
        v.extend_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    /// Appends MESSAGE-INTEGRITY computed with the long-term `key`.
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let tag = integrity_tag(key, self.buf);
        self.attr(attr::MESSAGE_INTEGRITY, tag.as_ref())
    }

    /// Appends FINGERPRINT (must come last).
    pub fn fingerprint(&mut self) -> &mut Self {
        let crc = fingerprint_of(self.buf);
        self.attr(attr::FINGERPRINT, &crc.to_be_bytes())
    }
}

/// Reads a ChannelData message: (channel number, application data), or `None` if malformed.
/// Over UDP the data may be followed by padding (or anything): only the announced length counts.
pub fn channel_data(buf: &[u8]) -> Option<(u16, &[u8])> {
    let h = buf.get(..CHANNEL_HEADER_LEN)?;
    let number = u16::from_be_bytes([h[0], h[1]]);
    if !is_channel_number(number) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    Some((
        number,
        buf.get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len)?,
    ))
}

/// Whether `n` is a channel number a client may bind (0x4000–0x7FFF).
pub fn is_channel_number(n: u16) -> bool {
    (0x4000..=0x7FFF).contains(&n)
}

/// Room needed before relayed data to write a Data indication's header in place (IPv6 peer).
pub const DATA_INDICATION_HEADROOM: usize = HEADER_LEN + 4 + 20 + 4;

/// Writes, right-aligned in `head`, the header of a Data indication from `peer` whose DATA is
/// `data_len` bytes (which follow `head` in the same buffer, then `padded(data_len) - data_len`
/// bytes of padding the caller provides); returns where the header starts in `head`.
pub fn data_indication_header(
    head: &mut [u8; DATA_INDICATION_HEADROOM],
    tid: &[u8; 12],
    peer: SocketAddr,
    data_len: usize,
) -> usize {
    let mut addr = [0u8; 20];
    let alen = encode_xor_address(peer, tid, &mut addr);
    let start = DATA_INDICATION_HEADROOM - (HEADER_LEN + 4 + alen + 4);
    let body = 4 + alen + 4 + padded(data_len);
    let h = &mut head[start..];
    h[..2].copy_from_slice(&message_type(method::DATA, Class::Indication).to_be_bytes());
    h[2..4].copy_from_slice(&(body as u16).to_be_bytes());
    h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    h[8..20].copy_from_slice(tid);
    h[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    h[22..24].copy_from_slice(&(alen as u16).to_be_bytes());
    h[24..24 + alen].copy_from_slice(&addr[..alen]);
    let d = 24 + alen;
    h[d..d + 2].copy_from_slice(&attr::DATA.to_be_bytes());
    h[d + 2..d + 4].copy_from_slice(&(data_len as u16).to_be_bytes());
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn message_types_match_the_rfc_table() {
        assert_eq!(message_type(method::BINDING, Class::Request), 0x0001);
        assert_eq!(message_type(method::BINDING, Class::Success), 0x0101);
        assert_eq!(message_type(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(method::SEND, Class::Indication), 0x0016);
        assert_eq!(message_type(method::DATA, Class::Indication), 0x0017);
        assert_eq!(message_type(method::CHANNEL_BIND, Class::Success), 0x0109);
        for m in [1, 3, 4, 6, 7, 8, 9, 0xFFF] {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(split_type(message_type(m, c)), (m, c));
            }
        }
    }

    #[test]
    fn what_we_write_the_stun_crate_reads_and_checks() {
        let key = stun::integrity::MessageIntegrity::new_long_term_integrity(
            "u".into(),
            "burrow".into(),
            "p".into(),
        );
        let peer: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        let peer6: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        let mut buf = Vec::new();
        Builder::new(&mut buf, method::ALLOCATE, Class::Success, TID)
            .xor_address(attr::XOR_RELAYED_ADDRESS, peer)
            .xor_address(attr::XOR_MAPPED_ADDRESS, peer6)
            .u32_attr(attr::LIFETIME, 600)
            .attr(attr::REALM, b"burrow")
            .integrity(&key.0)
            .fingerprint();
        let mut m = stun::message::Message::new();
        m.raw = buf.clone();
        m.decode().unwrap();
        let mut xa = stun::xoraddr::XorMappedAddress::default();
        xa.get_from_as(&m, stun::attributes::ATTR_XOR_RELAYED_ADDRESS)
            .unwrap();
        assert_eq!(SocketAddr::new(xa.ip, xa.port), peer);
        xa.get_from_as(&m, stun::attributes::ATTR_XORMAPPED_ADDRESS)
            .unwrap();
        assert_eq!(SocketAddr::new(xa.ip, xa.port), peer6);
        key.check(&mut m).expect("integrity checks out");
        stun::fingerprint::FINGERPRINT
            .check(&m)
            .expect("fingerprint checks out");
        // And we read back what we wrote.
        let ours = Message::parse(&buf).unwrap();
        assert!(ours.integrity_matches(&key.0));
        assert!(!ours.integrity_matches(b"another key"));
        assert!(ours.fingerprint_ok());
        assert_eq!(ours.xor_address(attr::XOR_MAPPED_ADDRESS), Some(peer6));
        assert_eq!(ours.u32_attr(attr::LIFETIME), Some(600));
    }

    #[test]
    fn what_the_stun_crate_writes_we_read_and_check() {
        let mut m = stun::message::Message::new();
        let integrity = stun::integrity::MessageIntegrity::new_long_term_integrity(
            "1:peer".into(),
            "burrow".into(),
            "pw".into(),
        );
        m.build(&[
            Box::new(stun::agent::TransactionId(TID)),
            Box::new(stun::message::MessageType::new(
                stun::message::METHOD_CREATE_PERMISSION,
                stun::message::CLASS_REQUEST,
            )),
            Box::new(stun::xoraddr::XorMappedAddress {
                ip: "10.1.2.3".parse().unwrap(),
                port: 5,
            }),
            Box::new(stun::textattrs::TextAttribute::new(
                stun::attributes::ATTR_USERNAME,
                "1:peer".into(),
            )),
            Box::new(integrity.clone()),
            Box::new(stun::fingerprint::FINGERPRINT),
        ])
        .unwrap();
        let ours = Message::parse(&m.raw).unwrap();
        assert_eq!(ours.method(), method::CREATE_PERMISSION);
        assert_eq!(ours.class(), Class::Request);
        assert_eq!(ours.transaction_id(), TID);
        assert_eq!(ours.get(attr::USERNAME), Some(&b"1:peer"[..]));
        assert_eq!(
            ours.xor_address(attr::XOR_MAPPED_ADDRESS),
            Some("10.1.2.3:5".parse().unwrap())
        );
        assert!(ours.integrity_matches(&integrity.0));
        assert!(ours.fingerprint_ok());
        let mut bad = m.raw.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(!Message::parse(&bad).unwrap().fingerprint_ok());
    }

    #[test]
    fn hostile_bytes_are_refused_not_panicked_on() {
        assert!(Message::parse(&[]).is_none());
        assert!(Message::parse(&[0u8; 19]).is_none());
        let mut m = Vec::new();
        Builder::new(&mut m, method::BINDING, Class::Request, TID).attr(0x8022, b"abc");
        assert!(Message::parse(&m).is_some());
        // Length beyond the datagram.
        let mut long = m.clone();
        long[3] = 200;
        assert!(Message::parse(&long).is_none());
        // An attribute claiming more than the message holds.
        let mut over = m.clone();
        over[23] = 60;
        assert!(Message::parse(&over).is_none());
        // A wrong cookie, a length not a multiple of four.
        let mut cookie = m.clone();
        cookie[4] = 0;
        assert!(Message::parse(&cookie).is_none());
        let mut odd = m.clone();
        odd[3] = 7;
        assert!(Message::parse(&odd).is_none());
        // Every truncation and every single-byte corruption: no panic.
        for n in 0..m.len() {
            let _ = Message::parse(&m[..n]);
        }
        for i in 0..m.len() {
            for v in [0u8, 0xFF, 0x80, 0x01] {
                let mut x = m.clone();
                x[i] = v;
                if let Some(msg) = Message::parse(&x) {
                    let _ = msg.attributes().count();
                    let _ = msg.integrity_matches(b"k");
                    let _ = msg.fingerprint_ok();
                    let _ = msg.xor_addresses(attr::XOR_PEER_ADDRESS);
                }
            }
        }
        assert_eq!(decode_xor_address(&[0, 1, 0], &TID), None);
        assert_eq!(decode_xor_address(&[0, 2, 0, 0, 1, 2, 3, 4], &TID), None);
        assert_eq!(decode_xor_address(&[0, 9, 0, 0, 1, 2, 3, 4], &TID), None);
    }

    #[test]
    fn channel_data_accepts_padding_and_refuses_short_or_unbound_numbers() {
        assert_eq!(
            channel_data(&[0x40, 0x00, 0, 3, 1, 2, 3]),
            Some((0x4000, &[1u8, 2, 3][..]))
        );
        assert_eq!(
            channel_data(&[0x7F, 0xFF, 0, 3, 1, 2, 3, 0]),
            Some((0x7FFF, &[1u8, 2, 3][..]))
        );
        assert_eq!(channel_data(&[0x40, 0x00, 0, 4, 1, 2, 3]), None);
        assert_eq!(channel_data(&[0x80, 0x00, 0, 0]), None);
        assert_eq!(channel_data(&[0x40, 0x00]), None);
    }

    #[test]
    fn data_indications_written_in_place_parse() {
        for peer in ["198.51.100.7:1234", "[2001:db8::7]:1234"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let payload = b"hello";
            let mut buf = [0u8; DATA_INDICATION_HEADROOM + 8];
            buf[DATA_INDICATION_HEADROOM..DATA_INDICATION_HEADROOM + 5].copy_from_slice(payload);
            let mut head = [0u8; DATA_INDICATION_HEADROOM];
            let start = data_indication_header(&mut head, &TID, peer, payload.len());
            buf[..DATA_INDICATION_HEADROOM].copy_from_slice(&head);
            let end = DATA_INDICATION_HEADROOM + padded(payload.len());
            let m = Message::parse(&buf[start..end]).expect("a Data indication");
            assert_eq!(m.method(), method::DATA);
            assert_eq!(m.class(), Class::Indication);
            assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS), Some(peer));
            assert_eq!(m.get(attr::DATA), Some(&payload[..]));
        }
    }
}
