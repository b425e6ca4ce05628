//! What one exposed service carries: its bytes each way, its streams, whether its health check
//! finds it answering, and its limits (`max_rate`, each direction on its own; `max_streams`
//! open at once), shared by every stream and UDP session of the service, whichever peer opened
//! it.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Which way bytes go, seen from the exposing side.
#[derive(Debug, Clone, Copy)]
pub enum Way {
    /// From a peer to the local service.
    In,
    /// From the local service to a peer.
    Out,
}

/// What one service may carry, all its peers together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes a second, each way (none: no cap).
    pub max_rate: Option<u64>,
    /// Streams (connections, UDP sessions) open at once; beyond, new ones are refused, saying
    /// so: many peers together cannot make the exposer hold more sockets to the service.
    pub max_streams: usize,
}

/// Streams one service may have open at once unless told otherwise (`--max-streams-per-service`,
/// `max_streams` in `--config`): four peers' full pools.
pub const DEFAULT_MAX_STREAMS: usize = 4 * peer_core::stream::POOL_MAX;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_rate: None,
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }
}

/// The counters and the limits of one service.
#[derive(Debug, Default)]
pub struct Meter {
    max_rate: Option<u64>,
    max_streams: usize,
    caps: Option<[DefaultDirectRateLimiter; 2]>,
    bytes: [AtomicU64; 2],
    open: AtomicUsize,
    streams: AtomicU64,
    dropped: AtomicU64,
    down: AtomicBool,
}

/// The cap counts bytes in cells of this many (the limiter's clock has nanosecond steps: in
/// single bytes, rates above a few hundred MB/s would round off).
const CELL: u64 = 64;

/// Cells for `n` bytes.
fn cells(n: usize) -> u32 {
    u32::try_from((n as u64).div_ceil(CELL)).unwrap_or(u32::MAX)
}

/// The most cells let through at once above the rate (`rate` in cells a second): a tenth of a
/// second's worth, and at least one chunk (what one read or one datagram can be).
fn burst(rate: u32) -> NonZeroU32 {
    let chunk = cells(peer_core::transfer::CHUNK_SIZE.max(peer_core::datagram::MAX_DATAGRAM));
    NonZeroU32::new((rate / 10).max(chunk)).unwrap_or(NonZeroU32::MIN)
}

/// A rate in bytes a second as cells a second.
fn rate_cells(rate: u64) -> u32 {
    u32::try_from((rate / CELL).max(1)).unwrap_or(u32::MAX)
}

/// A snapshot of a meter, for `burrow status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    /// Bytes from peers to the service.
    pub bytes_in: u64,
    /// Bytes from the service to peers.
    pub bytes_out: u64,
    /// Streams (or UDP sessions) open now.
    pub open: usize,
    /// Streams (or UDP sessions) opened so far.
    pub streams: u64,
    /// Datagrams dropped for going over the cap.
    pub dropped: u64,
}

impl Meter {
    /// A meter holding a service to `limits`.
    pub fn new(limits: Limits) -> Meter {
        let max_rate = limits.max_rate;
        let caps = max_rate.map(|rate| {
            let rate = rate_cells(rate);
            let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
                .allow_burst(burst(rate));
            [RateLimiter::direct(quota), RateLimiter::direct(quota)]
        });
        Meter {
            max_rate,
            max_streams: limits.max_streams,
            caps,
            ..Meter::default()
        }
    }

    /// The limits this meter was made with.
    pub fn limits(&self) -> Limits {
        Limits {
            max_rate: self.max_rate,
            max_streams: self.max_streams,
        }
    }

    /// The bandwidth cap this meter was made with.
    pub fn max_rate(&self) -> Option<u64> {
        self.max_rate
    }

    /// Why a new stream may not open now (the service has `max_streams` open), if so.
    pub fn full(&self) -> Option<String> {
        (self.open.load(Ordering::Relaxed) >= self.max_streams).then(|| {
            format!(
                "this service has too many streams open (at most {}); try again later",
                self.max_streams
            )
        })
    }

    fn index(way: Way) -> usize {
        match way {
            Way::In => 0,
            Way::Out => 1,
        }
    }

    /// Waits until `n` bytes may go `way` (at once without a cap), and counts them.
    pub async fn pace(&self, way: Way, n: usize) {
        self.bytes[Self::index(way)].fetch_add(n as u64, Ordering::Relaxed);
        let Some(caps) = &self.caps else {
            return;
        };
        let cap = &caps[Self::index(way)];
        let most = burst(rate_cells(self.max_rate.unwrap_or(0))).get();
        let mut left = cells(n);
        while let Some(now) = NonZeroU32::new(left.min(most)) {
            // `now` is within the burst, so it always fits eventually.
            let _ = cap.until_n_ready(now).await;
            left -= now.get();
        }
    }

    /// Whether one datagram of `n` bytes may go `way` now (over the cap it is dropped, as a
    /// router policing a rate would); counted either way.
    pub fn admit(&self, way: Way, n: usize) -> bool {
        let fits = match (&self.caps, NonZeroU32::new(cells(n))) {
            (Some(caps), Some(n)) => matches!(caps[Self::index(way)].check_n(n), Ok(Ok(()))),
            _ => true,
        };
        if fits {
            self.bytes[Self::index(way)].fetch_add(n as u64, Ordering::Relaxed);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        fits
    }

    /// A stream (or session) of this service opened; it counts as open while the guard lives.
    pub fn opened(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.streams.fetch_add(1, Ordering::Relaxed);
        Open(self)
    }

    /// Records what the health check found; `true` if that is a change.
    pub fn set_down(&self, down: bool) -> bool {
        self.down.swap(down, Ordering::Relaxed) != down
    }

    /// Whether the last health check found the service not answering.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// The counters now.
    pub fn read(&self) -> Reading {
        Reading {
            bytes_in: self.bytes[0].load(Ordering::Relaxed),
            bytes_out: self.bytes[1].load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// One open stream of a service, counted while this lives.
pub struct Open<'a>(&'a Meter);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_over_the_cap_are_dropped_and_counted() {
        let m = Meter::new(Limits {
            max_rate: Some(100_000),
            ..Limits::default()
        });
        // The burst (at least one largest datagram) goes at once; then the cap holds.
        let sent = (0..100).filter(|_| m.admit(Way::Out, 1_200)).count();
        assert!((50..100).contains(&sent), "{sent} of 100 let through");
        let r = m.read();
        assert_eq!(r.bytes_out, sent as u64 * 1_200);
        assert_eq!(r.dropped, 100 - sent as u64);
        assert!(Meter::new(Limits::default()).admit(Way::In, 65_507));
    }

    #[test]
    fn streams_count_while_open_and_health_flips_once() {
        let m = Meter::default();
        {
            let _a = m.opened();
            let _b = m.opened();
            assert_eq!(m.read().open, 2);
        }
        assert_eq!((m.read().open, m.read().streams), (0, 2));
        assert!(m.set_down(true));
        assert!(!m.set_down(true));
        assert!(m.is_down());
        assert!(m.set_down(false));
    }

    #[tokio::test]
    async fn pacing_holds_a_stream_to_the_cap() {
        let m = Meter::new(Limits {
            max_rate: Some(1_000_000),
            ..Limits::default()
        });
        let start = std::time::Instant::now();
        for _ in 0..40 {
            m.pace(Way::In, 16 * 1024).await;
        }
        // 655,360 bytes at 1 MB/s, less the first burst (100,000 bytes): at least 0.5 s.
        let took = start.elapsed().as_secs_f64();
        assert!(took > 0.5, "took {took} s");
        assert_eq!(m.read().bytes_in, 40 * 16 * 1024);
    }
}
