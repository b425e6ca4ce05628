//! Random ids and secrets, made in one place so every kind is named for what it is: room ids
//! (also the cluster's instance ids), the resume tokens' key, the per-start TURN secret.

use base64::Engine;
use rand::RngCore;

/// A fresh room id: 22 URL-safe characters from 16 random bytes (unguessable, so a room link
/// is its own invitation).
pub fn new_room_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// 32 random bytes: the resume tokens' key when none is configured or shared.
pub fn resume_key() -> Vec<u8> {
    let mut secret = vec![0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// 32 random bytes, base64: a per-start TURN secret when none is configured.
pub fn turn_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_room_ids_are_valid_and_distinct() {
        let a = new_room_id();
        let b = new_room_id();
        assert_eq!(a.len(), 22);
        assert!(signal_protocol::validate_room_id(&a).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn secrets_are_long_and_distinct() {
        assert_eq!(resume_key().len(), 32);
        assert_ne!(resume_key(), resume_key());
        assert_ne!(turn_secret(), turn_secret());
    }
}
