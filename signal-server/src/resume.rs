//! Resume tokens: how a peer whose connection was lost proves, when it comes back, that an id is
//! its own, so the room keeps it (see `Hello.resume` in the protocol).
//!
//! A token is an HMAC of the room and the peer id under the server's resume secret, so checking
//! one needs no state. The secret comes from `--resume-secret-file` (created if missing), from
//! Redis when instances share rooms (so any instance accepts another's tokens), or is made at
//! start-up. In that last case a restart forgets it, and a client that comes back after the
//! restart cannot prove its id; the server then gives the id back anyway when it is free and the
//! server started less than a grace period ago, so a deploy keeps every peer's identity. Outside
//! that window an unprovable claim just gets a new id.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use ring::hmac;

/// Mints and checks resume tokens.
pub struct ResumeTokens {
    key: hmac::Key,
    /// The secret outlives this process (file or Redis): only genuine tokens are accepted.
    durable: bool,
    started: Instant,
    grace: Duration,
}

impl ResumeTokens {
    /// Tokens under `secret`; `durable` when the secret survives a restart.
    pub fn new(secret: &[u8], durable: bool, grace: Duration) -> ResumeTokens {
        ResumeTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            durable,
            started: Instant::now(),
            grace,
        }
    }

    /// A secret kept in `path`: read it, or create it (random, readable by the owner only).
    pub fn secret_from_file(path: &Path) -> anyhow::Result<Vec<u8>> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() >= 16 => return Ok(bytes),
            Ok(_) => anyhow::bail!(
                "--resume-secret-file {}: shorter than 16 bytes; delete it to make a new one",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot read --resume-secret-file {}: {e}", path.display()),
        }
        let secret = crate::secrets::resume_key();
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        file.write_all(&secret)?;
        Ok(secret)
    }

    /// The token proving `peer` of `room`.
    pub fn mint(&self, room: &str, peer: &str) -> String {
        let tag = hmac::sign(&self.key, &message(room, peer));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// The tag of a client address in `room` ([`signal_protocol::PeerInfo::client`]): the
    /// same for every join from `ip` (already cut to its /64) to `room`, on every instance that
    /// shares the secret; unlinkable across rooms, and not the address.
    pub fn client_tag(&self, room: &str, ip: std::net::IpAddr) -> String {
        let message = format!("client-tag\0{room}\0{ip}");
        let tag = hmac::sign(&self.key, message.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..9])
    }

    /// What a client presenting `token` for `peer` in `room` may have.
    pub fn check(&self, room: &str, peer: &str, token: &str) -> Claim {
        let genuine = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|tag| hmac::verify(&self.key, &message(room, peer), &tag).is_ok());
        if genuine {
            Claim::Proven
        } else if !self.durable && self.started.elapsed() < self.grace {
            Claim::IfFree
        } else {
            Claim::Refused
        }
    }
}

/// How far a resume token goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Genuine: the id is the client's, even if a (dead) connection still holds it.
    Proven,
    /// Not checkable (the server restarted without a durable secret): the id is given back only
    /// if nobody holds it.
    IfFree,
    /// A new id.
    Refused,
}

fn message(room: &str, peer: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(room.len() + peer.len() + 1);
    m.extend_from_slice(room.as_bytes());
    m.push(0);
    m.extend_from_slice(peer.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_genuine_tokens_pass_a_durable_secret() {
        let t = ResumeTokens::new(b"0123456789abcdef", true, Duration::from_secs(30));
        let token = t.mint("room", "peer");
        assert_eq!(t.check("room", "peer", &token), Claim::Proven);
        assert_eq!(t.check("room", "other", &token), Claim::Refused);
        assert_eq!(t.check("other", "peer", &token), Claim::Refused);
        assert_eq!(t.check("room", "peer", "forged"), Claim::Refused);
        let other = ResumeTokens::new(b"fedcba9876543210", true, Duration::from_secs(30));
        assert_eq!(other.check("room", "peer", &token), Claim::Refused);
    }

    #[test]
    fn a_restarted_server_without_a_durable_secret_takes_claims_for_a_grace_period() {
        let fresh = ResumeTokens::new(
            &crate::secrets::resume_key(),
            false,
            Duration::from_secs(30),
        );
        let token = fresh.mint("room", "peer");
        assert_eq!(fresh.check("room", "peer", &token), Claim::Proven);
        assert_eq!(fresh.check("room", "peer", "from-before"), Claim::IfFree);
        let old = ResumeTokens::new(&crate::secrets::resume_key(), false, Duration::ZERO);
        assert_eq!(old.check("room", "peer", "from-before"), Claim::Refused);
    }
}
