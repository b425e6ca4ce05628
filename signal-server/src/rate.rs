//! A per-connection token bucket, so one chatty client cannot flood the relay.

use std::time::Instant;

/// Allows `burst` messages at once and `per_sec` sustained.
pub struct RateLimit {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(per_sec: u32, burst: u32) -> RateLimit {
        RateLimit {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one; `false` means the message must be refused.
    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let start = Instant::now();
        let mut r = RateLimit::new(10, 3);
        r.last = start;
        assert!((0..3).all(|_| r.allow_at(start)));
        assert!(!r.allow_at(start));
        assert!(r.allow_at(start + Duration::from_millis(100)));
        assert!(!r.allow_at(start + Duration::from_millis(100)));
    }
}
