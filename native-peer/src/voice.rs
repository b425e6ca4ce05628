//! Voice for `burrow`, without a sound card: `--voice-play FILE.ogg` sends an Ogg/Opus file as our
//! audio track to every peer (looped, paced in real time), and `--voice-record DIR` writes what
//! each peer says to `DIR/<peer>.ogg` (Ogg/Opus, closed when the peer's track ends or on quit).
//!
//! The file is read once at start (Opus packets and their durations, see
//! [`peer_core::voice`]); one task paces it and writes each packet to the track of every peer
//! connection. Each connection gets its own track: the negotiated payload type may differ.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::media::io::ogg_writer::OggWriter;
use rtc::media::io::Writer;
use rtc::media::Sample;
use rtc::rtp_transceiver::rtp_sender::RTCRtpEncodingParameters;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodecParameters, RTCRtpCodingParameters};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::MediaEngine;
use webrtc::rtp_transceiver::RtpSender;

/// Largest file `--voice-play` reads (about 4 hours at 32 kbit/s).
const MAX_FILE: u64 = 64 * 1024 * 1024;

const MIME_TYPE_OPUS: &str = "audio/opus";

/// What `--voice-play` and `--voice-record` asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The Ogg/Opus file to send, looped.
    pub play: Option<PathBuf>,
    /// The folder for recordings.
    pub record: Option<PathBuf>,
}

impl Options {
    /// Whether voice is on at all.
    pub fn on(&self) -> bool {
        self.play.is_some() || self.record.is_some()
    }
}

/// The Opus packets of an Ogg/Opus file, each with its duration.
pub struct Clip(Vec<(Bytes, Duration)>);

impl Clip {
    /// Reads `path`, refusing anything that is not Ogg/Opus with a clear error.
    pub fn load(path: &Path) -> anyhow::Result<Clip> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?
            .len();
        anyhow::ensure!(
            size <= MAX_FILE,
            "{shown} is larger than {} MiB",
            MAX_FILE >> 20
        );
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
        let not_opus = || anyhow::anyhow!("{shown} is not an Ogg/Opus file");
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes));
        let head = reader.read_packet().map_err(|_| not_opus())?;
        if !head.is_some_and(|p| peer_core::voice::is_opus_head(&p.data)) {
            return Err(not_opus());
        }
        let mut packets = Vec::new();
        while let Some(p) = reader
            .read_packet()
            .map_err(|e| anyhow::anyhow!("{shown}: broken Ogg stream: {e}"))?
        {
            if peer_core::voice::is_opus_tags(&p.data) {
                continue;
            }
            let duration = peer_core::voice::opus_packet_duration(&p.data)
                .ok_or_else(|| anyhow::anyhow!("{shown}: an Opus packet is malformed"))?;
            packets.push((Bytes::from(p.data), duration));
        }
        anyhow::ensure!(!packets.is_empty(), "{shown} holds no audio");
        Ok(Clip(packets))
    }
}

/// A media engine that knows Opus, for connections that carry voice.
pub fn media_engine() -> webrtc::error::Result<MediaEngine> {
    let mut engine = MediaEngine::default();
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    Ok(engine)
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: peer_core::voice::OPUS_CLOCK_RATE,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A fresh audio track for one peer connection.
pub fn new_track() -> webrtc::error::Result<Arc<TrackLocalStaticSample>> {
    let ssrc = rand::random::<u32>();
    let track = MediaStreamTrack::new(
        "burrow-voice".to_owned(),
        format!("burrow-voice-{ssrc:08x}"),
        "voice".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus(),
            ..Default::default()
        }],
    );
    Ok(Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        track,
    )?))
}

#[derive(Clone)]
struct Target {
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    /// The negotiated payload type, once known.
    payload_type: Option<u8>,
}

/// Sends the clip, looped, to every peer's track.
pub struct Player {
    targets: Arc<Mutex<HashMap<String, Target>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Player {
    /// Starts pacing `clip`.
    pub fn start(clip: Clip) -> Player {
        let targets: Arc<Mutex<HashMap<String, Target>>> = Arc::default();
        let (stop, mut stopped) = watch::channel(false);
        let shared = targets.clone();
        let task = tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            for (data, duration) in clip.0.iter().cycle() {
                let batch: Vec<Target> = {
                    let map = shared.lock().unwrap_or_else(|p| p.into_inner());
                    map.values().cloned().collect()
                };
                for Target {
                    track,
                    sender,
                    ssrc,
                    payload_type: pt,
                } in batch
                {
                    let pt = match pt {
                        Some(pt) => pt,
                        None => match negotiated_payload_type(&sender).await {
                            Some(pt) => {
                                let mut map = shared.lock().unwrap_or_else(|p| p.into_inner());
                                for t in map.values_mut().filter(|t| t.ssrc == ssrc) {
                                    t.payload_type = Some(pt);
                                }
                                pt
                            }
                            None => continue,
                        },
                    };
                    let sample = Sample {
                        data: data.clone(),
                        duration: *duration,
                        ..Sample::new(Instant::now())
                    };
                    let _ = track.sample_writer(ssrc, pt).write_sample(&sample).await;
                }
                next += *duration;
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    _ = stopped.changed() => break,
                }
            }
        });
        Player {
            targets,
            stop,
            task,
        }
    }

    /// Sends to `peer` on `track`, which `sender` carries.
    pub async fn add(
        &self,
        peer: &str,
        track: Arc<TrackLocalStaticSample>,
        sender: Arc<dyn RtpSender>,
    ) {
        use webrtc::media_stream::Track;
        let Some(ssrc) = track.ssrcs().await.first().copied() else {
            return;
        };
        let mut map = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            peer.to_string(),
            Target {
                track,
                sender,
                ssrc,
                payload_type: None,
            },
        );
    }

    /// Stops sending to `peer`.
    pub fn remove(&self, peer: &str) {
        let mut map = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(peer);
    }

    /// Stops the pacing task and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params.rtp_parameters.codecs.first().map(|c| c.payload_type)
}

/// What a recording may take: a peer decides what it sends, not what we keep (a hostile one
/// sent 8.4 MiB/s, real voice is about 5 KiB/s, and filled a disk in 26 s).
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    /// Largest recording of one peer's track, in bytes: there it is closed, saying so.
    pub max_bytes: u64,
    /// Most payload bytes a second kept, with a second's worth of burst; packets beyond are
    /// dropped and counted (Opus tops out at 510 kbit/s, about 62 KiB/s).
    pub max_rate: u64,
}

impl Default for RecordLimits {
    /// The flags' defaults: 64 MiB (an hour and more of real voice), 128 KiB/s (twice what Opus
    /// can send).
    fn default() -> RecordLimits {
        RecordLimits {
            max_bytes: 64 << 20,
            max_rate: 128 << 10,
        }
    }
}

/// Largest Opus packet kept: RFC 6716 §3.2.5 allows 120 ms of at most 1,275-byte frames
/// (about 61 KB); the Ogg writer could not page a larger one (255 × 255 bytes), and would
/// break the file from there on.
pub const MAX_PACKET: usize = 61_440;

/// What a recording received, as a receiver's RTP statistics (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Received {
    /// Packets received.
    pub packets: u64,
    /// Packets not written: over the rate limit, or larger than any Opus packet.
    pub dropped: u64,
    /// Why the recording stopped before the track ended, if it did (its size limit, a write
    /// error): what was written until then is a playable file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Packets missing from the sequence.
    pub lost: u64,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: f64,
    /// From the first packet to the last, seconds.
    pub secs: f64,
}

/// Counts what arrives, as an RTP receiver does.
#[derive(Default)]
struct Counter {
    received: Received,
    first: Option<Instant>,
    /// Highest sequence number seen, extended past wrap-arounds.
    last_seq: Option<u64>,
    /// Expected count from the first to the highest sequence number.
    base_seq: u64,
    /// Previous transit time, in RTP clock units.
    transit: Option<f64>,
    jitter: f64,
}

impl Counter {
    fn packet(&mut self, seq: u16, timestamp: u32) {
        let now = Instant::now();
        let first = *self.first.get_or_insert(now);
        let arrival =
            now.duration_since(first).as_secs_f64() * f64::from(peer_core::voice::OPUS_CLOCK_RATE);
        let transit = arrival - f64::from(timestamp);
        if let Some(prev) = self.transit {
            let d = (transit - prev).abs();
            // Timestamps wrap too; a jump that large is a wrap or a new stream, not jitter.
            if d < f64::from(peer_core::voice::OPUS_CLOCK_RATE) {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.transit = Some(transit);
        let extended = match self.last_seq {
            None => {
                self.base_seq = u64::from(seq);
                u64::from(seq)
            }
            Some(last) => {
                let cycle = last & !0xffff;
                let candidate = cycle | u64::from(seq);
                if candidate + 0x8000 < last {
                    candidate + 0x1_0000
                } else {
                    candidate
                }
            }
        };
        self.last_seq = Some(self.last_seq.map_or(extended, |l| l.max(extended)));
        self.received.packets += 1;
        self.received.secs = now.duration_since(first).as_secs_f64();
    }

    fn done(mut self) -> Received {
        if let Some(last) = self.last_seq {
            let expected = last - self.base_seq + 1;
            self.received.lost = expected.saturating_sub(self.received.packets);
        }
        self.received.jitter_ms =
            self.jitter * 1000.0 / f64::from(peer_core::voice::OPUS_CLOCK_RATE);
        self.received
    }
}

/// Writes what arrives on `track` to `path` until the track ends, `stop` turns true, or a
/// limit is reached; returns what was received.
pub fn record(
    track: Arc<dyn TrackRemote>,
    path: PathBuf,
    limits: RecordLimits,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<anyhow::Result<Received>> {
    tokio::spawn(async move {
        let file = std::fs::File::create(&path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        let mut writer = OggWriter::new(file, peer_core::voice::OPUS_CLOCK_RATE, 2)?;
        let mut counter = Counter::default();
        let mut bucket = Bucket::new(limits.max_rate);
        let mut written: u64 = 0;
        let mut stopped = None;
        loop {
            tokio::select! {
                event = track.poll() => match event {
                    Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                        let len = packet.payload.len();
                        if len == 0 {
                            continue;
                        }
                        counter.packet(packet.header.sequence_number, packet.header.timestamp);
                        if len > MAX_PACKET || !bucket.take(len as u64, Instant::now()) {
                            counter.received.dropped += 1;
                            continue;
                        }
                        // A page header (27 bytes) and its segment table come with each packet.
                        let cost = len as u64 + 27 + len as u64 / 255 + 1;
                        if written + cost > limits.max_bytes {
                            let why = format!(
                                "reached its size limit ({}, --voice-record-max)",
                                bytesize::ByteSize::b(limits.max_bytes)
                            );
                            tracing::warn!("recording {}: {why}", path.display());
                            stopped = Some(why);
                            break;
                        }
                        if let Err(e) = writer.write_rtp(&packet) {
                            let why = format!("cannot write: {e}");
                            tracing::warn!("recording {}: {why}", path.display());
                            stopped = Some(why);
                            break;
                        }
                        written += cost;
                    }
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => {}
                },
                _ = stop.changed() => break,
            }
        }
        if let Err(e) = writer.close() {
            stopped.get_or_insert(format!("cannot finish the file: {e}"));
        }
        let mut received = counter.done();
        received.stopped = stopped;
        Ok(received)
    })
}

/// A token bucket of payload bytes: `rate` a second, at most a second's worth saved up.
struct Bucket {
    rate: u64,
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            rate,
            tokens: rate as f64,
            at: None,
        }
    }

    /// Whether `bytes` may pass at `now` (they are taken if so).
    fn take(&mut self, bytes: u64, now: Instant) -> bool {
        if let Some(at) = self.at {
            let refill = now.duration_since(at).as_secs_f64() * self.rate as f64;
            self.tokens = (self.tokens + refill).min(self.rate as f64);
        }
        self.at = Some(now);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// Where the recording of `peer` goes in `dir`: `<peer>.ogg`, or `<peer>-2.ogg`… when taken.
pub fn recording_path(dir: &Path, peer: &str) -> PathBuf {
    let name = peer_core::transfer::safe_file_name(peer);
    let mut path = dir.join(format!("{name}.ogg"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{name}-{n}.ogg"));
        n += 1;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_passes_its_rate_and_a_second_of_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000);
        assert!(b.take(1000, t0), "a second's worth at once");
        assert!(!b.take(1, t0), "then nothing");
        assert!(
            b.take(500, t0 + Duration::from_millis(500)),
            "refilled at the rate"
        );
        assert!(!b.take(100, t0 + Duration::from_millis(500)));
        assert!(
            !b.take(1001, t0 + Duration::from_secs(60)),
            "never more than a second saved up"
        );
    }

    #[test]
    fn losses_are_counted_across_a_sequence_wrap() {
        let mut c = Counter::default();
        for seq in [65_533u16, 65_534, 65_535, 0, 2, 3] {
            c.packet(seq, u32::from(seq) * 960);
        }
        let r = c.done();
        assert_eq!((r.packets, r.lost), (6, 1));
    }
}
