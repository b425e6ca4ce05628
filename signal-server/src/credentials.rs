//! Ephemeral TURN credentials in the TURN REST API scheme that coturn's `use-auth-secret`
//! understands: username `EXPIRY:PEERID` (expiry in Unix seconds), password
//! `base64(HMAC-SHA1(secret, username))`. Nothing is stored: any server holding the secret can
//! check a credential, and it stops working by itself at its expiry.

use std::net::SocketAddr;
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

/// The `turn` crate's view: the long-term key for a username, or a refusal.
pub struct AuthHandler {
    /// Checks usernames and derives passwords.
    pub minter: Minter,
}

impl turn::auth::AuthHandler for AuthHandler {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        match self.minter.check(username) {
            Ok(password) => Ok(turn::auth::generate_auth_key(username, realm, &password)),
            Err(e) => {
                tracing::debug!(%src_addr, %username, "TURN auth refused: {e}");
                Err(turn::Error::Other(e.to_string()))
            }
        }
    }
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
    }

    #[test]
    fn matches_the_turn_rest_api_scheme() {
        // base64(HMAC-SHA1("secret", "1700000000:alice")), computed independently (Python's
        // hmac module), as coturn's use-auth-secret expects.
        let m = Minter::new("secret", Duration::from_secs(1));
        assert_eq!(
            m.password("1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }
}
