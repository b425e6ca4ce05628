//! Stateless nonces for the TURN long-term credential mechanism (RFC 8489 §9.2).
//!
//! A TURN server answers an unauthenticated request with 401 and a NONCE the client must echo.
//! Remembering each nonce handed out (as the `turn` crate did) lets anyone grow the server's
//! memory with 20-byte datagrams: 400,000 of them cost 38 MiB that was never given back. Here a
//! nonce carries its own proof instead:
//!
//! ```text
//! nonce = hex(timestamp, 8 bytes) ‖ hex(HMAC-SHA256(server key, timestamp ‖ client ip ‖ port)[..16])
//! ```
//!
//! The key is random per server start and never leaves the process, so only this server can
//! mint a nonce that checks out, and only for the client address it was given to. A nonce older
//! than [`NONCE_LIFETIME`] is stale: the client gets 438 Stale Nonce with a fresh one and
//! retries. Nothing is stored per request.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

/// How long a nonce stays valid.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(600);

/// How far in the future a nonce's timestamp may be (clock steps) before it is refused.
const FUTURE_SLACK_SECS: u64 = 60;

/// Bytes of the HMAC kept in a nonce.
const TAG_LEN: usize = 16;

/// Length of a nonce: 16 hex digits of timestamp, 32 of tag.
pub const NONCE_LEN: usize = 16 + 2 * TAG_LEN;

/// Mints and checks nonces with a per-start secret key.
pub struct Nonces {
    key: hmac::Key,
}

/// Why a nonce was refused; each is answered with 438 Stale Nonce and a fresh nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Not a nonce this server could have made.
    #[error("malformed nonce")]
    Malformed,
    /// Well-formed, but not minted by this server (this start) for this client address.
    #[error("nonce not issued to this client by this server")]
    Foreign,
    /// Minted here for this client, but too long ago.
    #[error("nonce expired")]
    Stale,
}

impl Nonces {
    /// Nonces under a fresh random key.
    pub fn new() -> Nonces {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Nonces::with_key(&key)
    }

    /// Nonces under a given key (for tests).
    pub fn with_key(key: &[u8]) -> Nonces {
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// A nonce for `client`, valid from now.
    pub fn mint(&self, client: SocketAddr) -> String {
        self.mint_at(now_secs(), client)
    }

    /// A nonce for `client` stamped `timestamp` (Unix seconds).
    pub fn mint_at(&self, timestamp: u64, client: SocketAddr) -> String {
        let tag = self.tag(timestamp, client);
        let mut s = String::with_capacity(NONCE_LEN);
        s.push_str(&hex::encode(timestamp.to_be_bytes()));
        s.push_str(&hex::encode(&tag.as_ref()[..TAG_LEN]));
        s
    }

    /// Whether `nonce` (as received) is valid now for `client`.
    pub fn check(&self, nonce: &[u8], client: SocketAddr) -> Result<(), NonceError> {
        self.check_at(nonce, client, now_secs())
    }

    /// Whether `nonce` is valid at `now` (Unix seconds) for `client`.
    pub fn check_at(&self, nonce: &[u8], client: SocketAddr, now: u64) -> Result<(), NonceError> {
        if nonce.len() != NONCE_LEN {
            return Err(NonceError::Malformed);
        }
        let mut ts = [0u8; 8];
        let mut tag = [0u8; TAG_LEN];
        unhex(&nonce[..16], &mut ts)?;
        unhex(&nonce[16..], &mut tag)?;
        let timestamp = u64::from_be_bytes(ts);
        let want = self.tag(timestamp, client);
        let diff = want.as_ref()[..TAG_LEN]
            .iter()
            .zip(&tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(NonceError::Foreign);
        }
        let too_old = now.saturating_sub(timestamp) > NONCE_LIFETIME.as_secs();
        let from_future = timestamp > now.saturating_add(FUTURE_SLACK_SECS);
        if too_old || from_future {
            return Err(NonceError::Stale);
        }
        Ok(())
    }

    fn tag(&self, timestamp: u64, client: SocketAddr) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&timestamp.to_be_bytes());
        match client.ip().to_canonical() {
            IpAddr::V4(v4) => ctx.update(&v4.octets()),
            IpAddr::V6(v6) => ctx.update(&v6.octets()),
        }
        ctx.update(&client.port().to_be_bytes());
        ctx.sign()
    }
}

impl Default for Nonces {
    fn default() -> Self {
        Nonces::new()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Lower-case hex → bytes: exactly `out.len()` bytes of it, or the nonce is malformed.
fn unhex(text: &[u8], out: &mut [u8]) -> Result<(), NonceError> {
    if text.iter().any(|c| c.is_ascii_uppercase()) {
        return Err(NonceError::Malformed);
    }
    hex::decode_to_slice(text, out).map_err(|_| NonceError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_fresh_nonce_checks_out_for_its_client() {
        let n = Nonces::with_key(b"k");
        let client = addr("198.51.100.1:5000");
        let nonce = n.mint_at(1_000_000, client);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert!(nonce.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(n.check_at(nonce.as_bytes(), client, 1_000_000), Ok(()));
        assert_eq!(n.check_at(nonce.as_bytes(), client, 1_000_599), Ok(()));
        // Round trip through the real clock too.
        let now = n.mint(client);
        assert_eq!(n.check(now.as_bytes(), client), Ok(()));
    }

    #[test]
    fn an_old_nonce_is_stale() {
        let n = Nonces::with_key(b"k");
        let client = addr("198.51.100.1:5000");
        let nonce = n.mint_at(1_000_000, client);
        assert_eq!(
            n.check_at(nonce.as_bytes(), client, 1_000_000 + 601),
            Err(NonceError::Stale)
        );
        assert_eq!(
            n.check_at(nonce.as_bytes(), client, 1_000_000 - 3600),
            Err(NonceError::Stale),
            "from the future"
        );
    }

    #[test]
    fn a_nonce_is_bound_to_the_client_address_and_the_server_key() {
        let n = Nonces::with_key(b"k");
        let client = addr("198.51.100.1:5000");
        let nonce = n.mint_at(1_000_000, client);
        for other in [
            "198.51.100.1:5001",
            "198.51.100.2:5000",
            "[2001:db8::1]:5000",
        ] {
            assert_eq!(
                n.check_at(nonce.as_bytes(), addr(other), 1_000_000),
                Err(NonceError::Foreign),
                "{other}"
            );
        }
        let restarted = Nonces::with_key(b"another key");
        assert_eq!(
            restarted.check_at(nonce.as_bytes(), client, 1_000_000),
            Err(NonceError::Foreign)
        );
        // A forged timestamp breaks the tag.
        let mut forged = nonce.clone().into_bytes();
        forged[15] = if forged[15] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            n.check_at(&forged, client, 1_000_000),
            Err(NonceError::Foreign)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let n = Nonces::with_key(b"k");
        let client = addr("198.51.100.1:5000");
        assert_eq!(n.check_at(b"", client, 0), Err(NonceError::Malformed));
        assert_eq!(
            n.check_at(&[b'z'; NONCE_LEN], client, 0),
            Err(NonceError::Malformed)
        );
        assert_eq!(
            n.check_at(&[0xFF; NONCE_LEN], client, 0),
            Err(NonceError::Malformed)
        );
    }
}
