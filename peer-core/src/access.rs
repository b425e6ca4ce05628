//! Who may open an exposed service: its access token, checked in constant time, and a limit on
//! wrong guesses per remote peer.
//!
//! Why: a service exposed with `--token` is reachable by anyone holding the room link, so the
//! token is all that stands between it and the room. A comparison that stops at the first wrong
//! byte tells a patient guesser, through timing, how much of a guess was right; and without a
//! limit, guesses cost nothing. [`token_matches`] compares in time that depends on neither the
//! token nor the guess (both are hashed first, so not even the length shows), and
//! [`AttemptLimiter`] refuses a peer every stream for a cool-down after
//! [`LimitPolicy::max_failures`] wrong tokens in a row, growing with each lockout.
//!
//! The limiter is pure logic: the caller passes the time in (any monotonic clock, as a
//! [`Duration`] since an origin of its choice), so it behaves the same in every peer and tests
//! need no waiting.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `given` opens a service whose token is `expected`: always when it has none, else
/// only for exactly that token, compared in constant time.
pub fn token_matches(expected: Option<&str>, given: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    // A missing token is compared like a wrong one, so both take the same time; it never
    // matches, not even an empty token.
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.unwrap_or("").as_bytes());
    // The lengths are equal (32), so `ct_eq` looks at every byte.
    let same: bool = a.as_slice().ct_eq(b.as_slice()).into();
    same && given.is_some()
}

/// How many wrong tokens a peer may send, and how long it is refused after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPolicy {
    /// Wrong tokens in a row that start a cool-down.
    pub max_failures: u32,
    /// The first cool-down; each further one doubles, up to `max_cool_down`.
    pub cool_down: Duration,
    /// The longest cool-down. Also how long a peer's record is kept after its last wrong token
    /// or cool-down: a peer quiet that long starts again from nothing.
    pub max_cool_down: Duration,
}

impl Default for LimitPolicy {
    /// 5 wrong tokens, then 60 s, 120 s, 240 s… up to one hour.
    fn default() -> LimitPolicy {
        LimitPolicy {
            max_failures: 5,
            cool_down: Duration::from_secs(60),
            max_cool_down: Duration::from_secs(3600),
        }
    }
}

/// A refusal: the peer is cooling down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many wrong tokens; retry in {} s", self.retry_in_secs())]
pub struct Blocked {
    /// How long until the peer may try again.
    pub retry_in: Duration,
}

impl Blocked {
    /// [`Blocked::retry_in`] in whole seconds, rounded up (never 0 while blocked).
    pub fn retry_in_secs(&self) -> u64 {
        let secs = self.retry_in.as_secs();
        if self.retry_in.subsec_nanos() > 0 || secs == 0 {
            secs + 1
        } else {
            secs
        }
    }
}

/// One peer's record.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Wrong tokens since the last lockout (or success).
    failures: u32,
    /// Lockouts so far: the next cool-down is `cool_down * 2^lockouts`.
    lockouts: u32,
    /// Refused until then.
    blocked_until: Option<Duration>,
    /// The last wrong token.
    last_failure: Duration,
}

/// Most peers tracked at once; past that, records of peers that are not cooling down are dropped
/// first (a room holds far fewer peers, but ids are cheap: each join gets a new one).
const MAX_TRACKED: usize = 4096;

/// Counts wrong tokens per remote peer and refuses a peer that sent too many (see the module
/// documentation). `K` identifies a peer (the native peer uses the peer id).
#[derive(Debug, Clone)]
pub struct AttemptLimiter<K> {
    policy: LimitPolicy,
    records: HashMap<K, Record>,
}

impl<K: Eq + Hash + Clone> Default for AttemptLimiter<K> {
    fn default() -> Self {
        AttemptLimiter::new(LimitPolicy::default())
    }
}

impl<K: Eq + Hash + Clone> AttemptLimiter<K> {
    /// A limiter with `policy`, knowing no peer yet.
    pub fn new(policy: LimitPolicy) -> AttemptLimiter<K> {
        AttemptLimiter {
            policy,
            records: HashMap::new(),
        }
    }

    /// Whether `peer` may try a token now. Ask before looking at the token: while a peer is
    /// blocked, even the right token is refused, so guessing during a cool-down learns nothing.
    pub fn check(&self, peer: &K, now: Duration) -> Result<(), Blocked> {
        match self.records.get(peer).and_then(|r| r.blocked_until) {
            Some(until) if now < until => Err(Blocked {
                retry_in: until - now,
            }),
            _ => Ok(()),
        }
    }

    /// Counts a wrong token from `peer`. `Err` when this one starts a cool-down.
    pub fn failed(&mut self, peer: &K, now: Duration) -> Result<(), Blocked> {
        self.forget_stale(now);
        let policy = self.policy;
        let record = self.records.entry(peer.clone()).or_insert(Record {
            failures: 0,
            lockouts: 0,
            blocked_until: None,
            last_failure: now,
        });
        if record.blocked_until.is_some_and(|until| now >= until) {
            record.blocked_until = None;
        }
        record.last_failure = now;
        record.failures = record.failures.saturating_add(1);
        if record.failures < policy.max_failures.max(1) {
            return Ok(());
        }
        let factor = 1u32.checked_shl(record.lockouts).unwrap_or(u32::MAX);
        let cool_down = policy
            .cool_down
            .saturating_mul(factor)
            .min(policy.max_cool_down);
        record.failures = 0;
        record.lockouts = record.lockouts.saturating_add(1);
        record.blocked_until = Some(now.saturating_add(cool_down));
        Err(Blocked {
            retry_in: cool_down,
        })
    }

    /// `peer` gave the right token: its record is cleared.
    pub fn succeeded(&mut self, peer: &K) {
        self.records.remove(peer);
    }

    /// How many peers have a record (for tests and diagnostics).
    pub fn tracked(&self) -> usize {
        self.records.len()
    }

    /// Drops records nobody needs: peers not cooling down and quiet for `max_cool_down` since
    /// their last wrong token or cool-down; and, past [`MAX_TRACKED`], every peer not cooling down.
    fn forget_stale(&mut self, now: Duration) {
        let keep_for = self.policy.max_cool_down;
        let cooling = |r: &Record| r.blocked_until.is_some_and(|until| now < until);
        // Quiet since its last wrong token, or since its cool-down ended, whichever is later.
        let quiet = |r: &Record| {
            now.saturating_sub(r.blocked_until.unwrap_or_default().max(r.last_failure))
        };
        self.records
            .retain(|_, r| cooling(r) || quiet(r) < keep_for);
        if self.records.len() >= MAX_TRACKED {
            self.records.retain(|_, r| cooling(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn tokens_are_compared_exactly() {
        assert!(token_matches(None, None));
        assert!(token_matches(None, Some("anything")));
        assert!(token_matches(Some("s3cret"), Some("s3cret")));
        assert!(!token_matches(Some("s3cret"), Some("s3creT")));
        assert!(!token_matches(Some("s3cret"), Some("s3cret ")));
        assert!(!token_matches(Some("s3cret"), Some("")));
        assert!(!token_matches(Some("s3cret"), None));
        // An empty token must still be given (as before: a missing one never matches).
        assert!(token_matches(Some(""), Some("")));
        assert!(!token_matches(Some(""), None));
    }

    #[test]
    fn five_wrong_tokens_start_a_cool_down() {
        let mut l = AttemptLimiter::new(LimitPolicy::default());
        let t0 = Duration::from_secs(1000);
        for i in 0..4 {
            assert!(l.check(&"mallory", t0 + i * S).is_ok());
            assert!(l.failed(&"mallory", t0 + i * S).is_ok());
        }
        let blocked = l.failed(&"mallory", t0 + 4 * S).unwrap_err();
        assert_eq!(blocked.retry_in, 60 * S);
        assert_eq!(blocked.to_string(), "too many wrong tokens; retry in 60 s");
        // Refused during the cool-down, whatever it sends; others are not affected.
        let later = t0 + 30 * S;
        assert_eq!(l.check(&"mallory", later).unwrap_err().retry_in, 34 * S);
        assert!(l.check(&"alice", later).is_ok());
        // After it, allowed again.
        assert!(l.check(&"mallory", t0 + 64 * S).is_ok());
    }

    #[test]
    fn cool_downs_grow_and_are_capped() {
        let policy = LimitPolicy {
            max_failures: 2,
            cool_down: 10 * S,
            max_cool_down: 35 * S,
        };
        let mut l = AttemptLimiter::new(policy);
        let mut now = Duration::ZERO;
        let mut lockouts = Vec::new();
        for _ in 0..4 {
            assert!(l.failed(&1, now).is_ok());
            let b = l.failed(&1, now).unwrap_err();
            lockouts.push(b.retry_in.as_secs());
            now += b.retry_in;
        }
        assert_eq!(lockouts, [10, 20, 35, 35]);
    }

    #[test]
    fn success_clears_and_old_records_are_forgotten() {
        let mut l = AttemptLimiter::new(LimitPolicy::default());
        for _ in 0..4 {
            assert!(l.failed(&"bob", Duration::ZERO).is_ok());
        }
        l.succeeded(&"bob");
        assert_eq!(l.tracked(), 0);
        for _ in 0..4 {
            assert!(l.failed(&"bob", Duration::ZERO).is_ok());
        }
        // An hour later, a new wrong token from someone else forgets bob's stale record.
        assert!(l.failed(&"eve", 3601 * S).is_ok());
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn retry_seconds_round_up() {
        let b = Blocked {
            retry_in: Duration::from_millis(59_001),
        };
        assert_eq!(b.retry_in_secs(), 60);
        let b = Blocked {
            retry_in: Duration::from_millis(1),
        };
        assert_eq!(b.retry_in_secs(), 1);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut l = AttemptLimiter::new(LimitPolicy::default());
        for i in 0..(MAX_TRACKED as u32 * 2) {
            let _ = l.failed(&i, Duration::ZERO);
        }
        assert!(l.tracked() <= MAX_TRACKED);
    }
}
