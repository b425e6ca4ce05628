//! Ephemeral TURN credentials in the TURN REST API scheme that coturn's `use-auth-secret`
//! understands: username `EXPIRY:PEERID` (expiry in Unix seconds), password
//! `base64(HMAC-SHA1(secret, username))`. Nothing is stored: any server holding the secret can
//! check a credential, and it stops working by itself at its expiry. The embedded relay is
//! stricter still: it honours a credential only while the peer it names is in a room (see
//! `relay::TurnAccess`), so leaving ends it long before the expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::hmac;

/// The shared secret and how long minted credentials live.
#[derive(Clone)]
pub struct Minter {
    key: hmac::Key,
    ttl: Duration,
}

impl Minter {
    /// A minter for `secret`, minting credentials valid for `ttl`.
    pub fn new(secret: &str, ttl: Duration) -> Minter {
        Minter {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes()),
            ttl,
        }
    }

    /// A (username, password) pair for `peer_id`.
    pub fn mint(&self, peer_id: &str) -> (String, String) {
        let expiry = now_secs() + self.ttl.as_secs();
        let username = format!("{expiry}:{peer_id}");
        let password = self.password(&username);
        (username, password)
    }

    /// The password that belongs to `username`.
    pub fn password(&self, username: &str) -> String {
        let tag = hmac::sign(&self.key, username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    }

    /// The password for `username` if it is well-formed and not expired.
    pub fn check(&self, username: &str) -> Result<String, CredentialError> {
        let expiry: u64 = username
            .split(':')
            .next()
            .and_then(|e| e.parse().ok())
            .ok_or(CredentialError::Malformed)?;
        if expiry < now_secs() {
            return Err(CredentialError::Expired);
        }
        Ok(self.password(username))
    }
}

/// Why a TURN username was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not `EXPIRY:PEERID`.
    #[error("username is not EXPIRY:PEERID")]
    Malformed,
    /// Past its expiry.
    #[error("credential expired")]
    Expired,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The peer id a TURN username names (`EXPIRY:PEERID` → `PEERID`), if well-formed.
pub fn peer_id(username: &str) -> Option<&str> {
    username
        .split_once(':')
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

/// The long-term credential key (RFC 8489 §9.2.2): MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Vec<u8> {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_credentials_check_out_and_expire() {
        let m = Minter::new("s3cret", Duration::from_secs(60));
        let (user, pass) = m.mint("peer1");
        assert!(user.ends_with(":peer1"));
        assert_eq!(m.check(&user), Ok(pass));
        assert_eq!(m.check("1:peer1"), Err(CredentialError::Expired));
        assert_eq!(m.check("peer1"), Err(CredentialError::Malformed));
        assert_eq!(peer_id(&user), Some("peer1"));
        assert_eq!(peer_id("1700000000:a:b"), Some("a:b"));
        assert_eq!(peer_id("1700000000:"), None);
        assert_eq!(peer_id("nocolon"), None);
    }

    #[test]
    fn the_long_term_key_is_md5_of_user_realm_password() {
        // MD5("user:realm:pass"), computed independently (coreutils md5sum).
        let key: String = long_term_key("user", "realm", "pass")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(key, "8493fbc53ba582fb4c044c456bdc40eb");
    }
}
