//! Voice: what both peers need to know about Opus audio, independent of how it is sent.
//!
//! A peer in voice sends one Opus audio track per peer connection (added by renegotiation on the
//! connection that already carries the data channels) and tells the peer with
//! [`crate::channels::ControlMessage::Voice`]. The native peer plays an Ogg/Opus file instead of
//! a microphone; pacing it needs each packet's duration, read from its TOC byte (RFC 6716 §3.1).

use std::time::Duration;

/// The Opus RTP clock rate, whatever the audio's own rate.
pub const OPUS_CLOCK_RATE: u32 = 48_000;

/// Whether an Ogg packet is an Opus identification header (`OpusHead`, RFC 7845 §5.1): the first
/// packet of an Ogg/Opus stream.
pub fn is_opus_head(packet: &[u8]) -> bool {
    packet.len() >= 19 && packet.starts_with(b"OpusHead")
}

/// Whether an Ogg packet is the Opus comment header (`OpusTags`), the stream's second packet.
pub fn is_opus_tags(packet: &[u8]) -> bool {
    packet.starts_with(b"OpusTags")
}

/// How much audio one Opus packet holds (`None`: not a valid packet).
pub fn opus_packet_duration(packet: &[u8]) -> Option<Duration> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame size in microseconds, by configuration (SILK, hybrid, CELT).
    let frame_us: u64 = match config {
        0..=11 => [10_000, 20_000, 40_000, 60_000][usize::from(config % 4)],
        12..=15 => [10_000, 20_000][usize::from(config % 2)],
        _ => [2_500, 5_000, 10_000, 20_000][usize::from(config % 4)],
    };
    let frames: u64 = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(*packet.get(1)? & 0x3f),
    };
    let total = frame_us * frames;
    // RFC 6716: a packet holds at most 120 ms.
    (frames > 0 && total <= 120_000).then(|| Duration::from_micros(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_toc_byte() {
        // CELT fullband 20 ms, one frame (config 31, code 0): what libopus makes by default.
        assert_eq!(
            opus_packet_duration(&[31 << 3, 0xff]),
            Some(Duration::from_millis(20))
        );
        // SILK 60 ms, two frames (code 1).
        assert_eq!(
            opus_packet_duration(&[(3 << 3) | 1]),
            Some(Duration::from_millis(120))
        );
        // Code 3: the count in the next byte; 6 × 20 ms is the most allowed.
        assert_eq!(
            opus_packet_duration(&[(31 << 3) | 3, 6]),
            Some(Duration::from_millis(120))
        );
        assert_eq!(opus_packet_duration(&[(31 << 3) | 3, 7]), None);
        assert_eq!(opus_packet_duration(&[(31 << 3) | 3, 0]), None);
        assert_eq!(opus_packet_duration(&[(31 << 3) | 3]), None);
        assert_eq!(opus_packet_duration(&[]), None);
    }

    #[test]
    fn headers_are_recognised() {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2, 0x38, 1, 0x80, 0xbb, 0, 0, 0, 0, 0]);
        assert!(is_opus_head(&head));
        assert!(!is_opus_head(b"OpusHead"));
        assert!(!is_opus_head(b"\x01vorbis......................"));
        assert!(is_opus_tags(b"OpusTags\x00"));
    }
}
