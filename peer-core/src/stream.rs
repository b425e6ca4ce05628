//! TCP-like streams over `burrow-stream` channels, as state machines both peers use: one
//! [`Stream`] per TCP connection, and a [`Pool`] of channels kept open and reused, one stream at
//! a time each.
//!
//! **Why a pool.** A channel per connection, opened and closed each time, lost streams under
//! churn: the `webrtc` crate hands a new channel the lowest free SCTP stream id as soon as the
//! old channel's `close()` is called, while the old stream's reset is still in flight, so the
//! peer's reset of the old channel closes the new one (about one connection in seven when
//! connections open right after others close). Each open also cost a round trip (the channel
//! handshake) before the first byte. Channels that stay open never reuse an id, and a reused
//! channel needs no handshake: a new connection's bytes leave at once.
//!
//! **One stream on a channel.** The dialing side (the page's service worker, `burrow forward`)
//! sends `open` and may send bytes right behind it, without waiting for an answer: the first
//! request reaches the exposing side in one trip. The answering side (`burrow expose`) reads
//! `open`, lets its gate decide, and answers `accepted` (then its bytes) or `refused`; bytes that
//! arrived before a refusal are dropped, never passed to the service. Once accepted, either
//! side's `end` is a half-close (the other direction carries on) and `reset` aborts.
//!
//! **Reuse.** Each side sends exactly one *final* message per stream in its direction (`end`,
//! `reset`, or the answering side's `refused`) and nothing of that stream after it. A side that
//! hears a reset or refusal answers with its own final (a `reset`) if it has not sent one. A
//! channel carries its next stream once both finals are sent and heard
//! ([`Stream::is_finished`]): since a channel is ordered, everything of the old stream is then
//! behind both sides, and the next `open` is unambiguous.

use crate::channels::StreamMessage;

/// Where a stream stands, as far as the peer's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `open` sent (dialing) or awaited (answering).
    Opening,
    /// The answering side has the request and has not decided yet.
    Deciding,
    /// Accepted: bytes flow.
    Open,
    /// The peer's direction is over (its final heard); ours may still send if not over.
    PeerDone,
}

/// What a text message from the peer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// The answering side connected to its service: bytes may flow (dialing side only).
    Accepted,
    /// The answering side will not connect (dialing side only).
    Refused(String),
    /// The peer will send no more bytes (half-close).
    Ended,
    /// The peer aborted the stream.
    Reset(String),
    /// The dialing side asks for a service (answering side only, first message).
    Open {
        /// The service asked for.
        service: String,
        /// Its access token, if any.
        token: Option<String>,
        /// For a UDP service, the session's number.
        session: Option<u32>,
    },
    /// Not a message for this phase (a second `accepted`, an `end` after a reset, garbage):
    /// dropped.
    Ignored,
}

/// One stream's protocol state, for either side.
#[derive(Debug)]
pub struct Stream {
    dialing: bool,
    phase: Phase,
    /// Our final message for this stream is sent: nothing more goes out.
    sent_final: bool,
    /// We aborted (reset, or refused): bytes the peer still sends are dropped.
    aborted: bool,
}

impl Stream {
    /// The dialing side: returns the `open` message to send first; bytes may follow it at once.
    pub fn dial(service: &str, token: Option<String>) -> (Stream, StreamMessage) {
        Stream::dial_session(service, token, None)
    }

    /// The dialing side of a UDP session numbered `session` (its datagrams go on `burrow-udp`;
    /// the stream carries no bytes, only the session's opening and end).
    pub fn dial_session(
        service: &str,
        token: Option<String>,
        session: Option<u32>,
    ) -> (Stream, StreamMessage) {
        let open = StreamMessage::Open {
            service: service.to_string(),
            token,
            session,
        };
        (Stream::new(true), open)
    }

    /// The answering side of a channel: its next text message is the request.
    pub fn answer() -> Stream {
        Stream::new(false)
    }

    fn new(dialing: bool) -> Stream {
        Stream {
            dialing,
            phase: Phase::Opening,
            sent_final: false,
            aborted: false,
        }
    }

    /// Reads one text message from the peer.
    pub fn on_text(&mut self, text: &str) -> Heard {
        let Ok(message) = StreamMessage::decode(text) else {
            return Heard::Ignored;
        };
        match (self.phase, self.dialing, message) {
            (Phase::Opening, true, StreamMessage::Accepted) => {
                self.phase = Phase::Open;
                Heard::Accepted
            }
            (Phase::Opening, true, StreamMessage::Refused { reason }) => {
                self.phase = Phase::PeerDone;
                Heard::Refused(crate::text::safe_line(&reason))
            }
            (
                Phase::Opening,
                false,
                StreamMessage::Open {
                    service,
                    token,
                    session,
                },
            ) => {
                self.phase = Phase::Deciding;
                Heard::Open {
                    service,
                    token,
                    session,
                }
            }
            // The dialing side's direction may end before the answer (a request sent whole).
            (Phase::Open | Phase::Deciding, _, StreamMessage::End) => {
                self.phase = Phase::PeerDone;
                Heard::Ended
            }
            (Phase::Open | Phase::Deciding, _, StreamMessage::Reset { reason }) => {
                self.phase = Phase::PeerDone;
                Heard::Reset(crate::text::safe_line(&reason))
            }
            _ => Heard::Ignored,
        }
    }

    /// Whether a binary message from the peer belongs to this stream's bytes: the stream is
    /// open (or being decided: the platform holds those bytes until the verdict), the peer's
    /// direction is not over, and we did not abort. Other bytes are dropped: the tail of a
    /// stream we reset or refused, or of one before it (sent while our reset crossed it).
    pub fn takes_data(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Deciding) && !self.aborted
    }

    /// The answering side's verdict on the request: `accepted`, or `refused` with `reason`
    /// (our final: the dialing side's bytes are dropped from then on).
    pub fn decide(&mut self, verdict: Result<(), String>) -> StreamMessage {
        match verdict {
            Ok(()) => {
                if self.phase == Phase::Deciding {
                    self.phase = Phase::Open;
                }
                StreamMessage::Accepted
            }
            Err(reason) => {
                self.sent_final = true;
                self.aborted = true;
                StreamMessage::Refused { reason }
            }
        }
    }

    /// Whether bytes may be sent: not refused or reset, and our direction not ended. (The
    /// dialing side may send right after `open`.)
    pub fn may_send(&self) -> bool {
        !self.sent_final && !self.aborted
    }

    /// Our direction is done: the `end` to send (a half-close), unless our final was sent.
    pub fn end(&mut self) -> Option<StreamMessage> {
        if self.sent_final {
            return None;
        }
        self.sent_final = true;
        Some(StreamMessage::End)
    }

    /// We abort (our socket failed, our user closed it, or the peer reset or refused and we
    /// answer): the `reset` to send, unless our final was sent. Bytes the peer still sends are
    /// dropped from then on.
    pub fn reset(&mut self, reason: &str) -> Option<StreamMessage> {
        self.aborted = true;
        if self.sent_final {
            return None;
        }
        self.sent_final = true;
        Some(StreamMessage::Reset {
            reason: reason.to_string(),
        })
    }

    /// Whether the answering side's verdict was heard (dialing side; always true answering):
    /// until then, a silent peer is waited for at most [`ANSWER_WAIT`].
    pub fn answered(&self) -> bool {
        !(self.dialing && self.phase == Phase::Opening)
    }

    /// Whether we aborted (reset or refused): the peer owes its final, and nothing else counts.
    pub fn aborted(&self) -> bool {
        self.aborted
    }

    /// Whether the peer's direction is over (its `end`, `reset` or `refused` was heard).
    pub fn peer_done(&self) -> bool {
        self.phase == Phase::PeerDone
    }

    /// Both finals are sent and heard: the channel may carry the next stream.
    pub fn is_finished(&self) -> bool {
        self.sent_final && self.phase == Phase::PeerDone
    }

    /// The channel closed: whether that cut the stream short (it was not finished).
    pub fn on_closed(&mut self) -> bool {
        let cut = !self.is_finished() && !self.aborted;
        self.aborted = true;
        self.sent_final = true;
        self.phase = Phase::PeerDone;
        cut
    }
}

/// The channels a dialing side keeps open toward one peer, idle between streams: a new stream
/// takes one (no handshake, no id reuse) or, when none is idle and fewer than the cap exist,
/// has the platform open a new one. Generic over the platform's channel handle.
#[derive(Debug)]
pub struct Pool<C> {
    idle: Vec<C>,
    /// Channels this pool handed out or holds (idle + in use).
    live: usize,
}

/// Longest a dialing side waits for the answer to its `open`: the answering side answers as
/// soon as its service's connect succeeds or fails (it gives up connecting sooner), so a longer
/// silence means the channel is broken, and the stream fails with a clear error instead of
/// hanging.
pub const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Longest the answering side tries to connect to its service before it refuses the stream
/// ("the service is not answering").
pub const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most stream channels one side keeps toward one peer: as many concurrent streams; further
/// streams wait for one to finish.
pub const POOL_MAX: usize = 256;

/// Channels opened toward a peer as soon as it offers a service, so even the first connections
/// skip the channel handshake.
pub const POOL_WARM: usize = 4;

/// What a dialing side does for a new stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Take<C> {
    /// Use this idle channel now.
    Idle(C),
    /// Open a new channel (counted as live already).
    Open,
    /// At the cap: wait for a stream to finish, then ask again.
    Wait,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Pool {
            idle: Vec::new(),
            live: 0,
        }
    }
}

impl<C> Pool<C> {
    /// A channel for a new stream.
    pub fn take(&mut self) -> Take<C> {
        if let Some(c) = self.idle.pop() {
            return Take::Idle(c);
        }
        if self.live < POOL_MAX {
            self.live += 1;
            return Take::Open;
        }
        Take::Wait
    }

    /// A stream on `c` finished cleanly: `c` waits for the next one.
    pub fn give_back(&mut self, c: C) {
        self.idle.push(c);
    }

    /// A channel handed out is gone (closed, failed, or never opened).
    pub fn lost(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// How many channels to open now so [`POOL_WARM`] wait idle (counted as live already).
    pub fn warm_up(&mut self) -> usize {
        let want = POOL_WARM.saturating_sub(self.idle.len());
        let room = POOL_MAX - self.live.min(POOL_MAX);
        let n = want.min(room);
        self.live += n;
        n
    }

    /// Channels open (idle or in use).
    pub fn live(&self) -> usize {
        self.live
    }

    /// Channels waiting for a stream.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted() -> String {
        StreamMessage::Accepted.encode()
    }
    fn end() -> String {
        StreamMessage::End.encode()
    }
    fn reset() -> String {
        StreamMessage::Reset {
            reason: "connection reset".into(),
        }
        .encode()
    }

    #[test]
    fn a_stream_is_opened_accepted_ended_both_ways_and_finishes() {
        let (mut dialer, open) = Stream::dial("web", Some("t".into()));
        assert!(dialer.may_send(), "bytes may follow the open at once");
        let mut answerer = Stream::answer();
        assert_eq!(
            answerer.on_text(&open.encode()),
            Heard::Open {
                service: "web".into(),
                token: Some("t".into()),
                session: None,
            }
        );
        assert!(answerer.takes_data(), "held until the verdict");
        assert!(answerer.answered() && !dialer.answered());
        let verdict = answerer.decide(Ok(()));
        assert_eq!(dialer.on_text(&verdict.encode()), Heard::Accepted);
        assert!(dialer.answered());
        assert!(dialer.takes_data() && answerer.takes_data());
        // A second "accepted" means nothing; "end" is a half-close, once.
        assert_eq!(dialer.on_text(&verdict.encode()), Heard::Ignored);
        assert_eq!(dialer.end(), Some(StreamMessage::End));
        assert_eq!(dialer.end(), None);
        assert_eq!(answerer.on_text(&end()), Heard::Ended);
        assert_eq!(answerer.on_text(&end()), Heard::Ignored);
        assert!(answerer.may_send(), "our direction may still send");
        assert!(!answerer.is_finished());
        assert_eq!(answerer.end(), Some(StreamMessage::End));
        assert!(answerer.is_finished());
        assert!(!dialer.is_finished(), "the answerer's end is not heard yet");
        assert_eq!(dialer.on_text(&end()), Heard::Ended);
        assert!(dialer.is_finished());
        assert!(!dialer.on_closed(), "finished: a close cuts nothing short");
    }

    #[test]
    fn a_request_sent_whole_before_the_answer_is_kept() {
        let (mut dialer, open) = Stream::dial("web", None);
        let mut answerer = Stream::answer();
        answerer.on_text(&open.encode());
        assert!(dialer.end().is_some());
        assert_eq!(answerer.on_text(&end()), Heard::Ended, "end before verdict");
        answerer.decide(Ok(()));
        assert!(answerer.may_send());
        assert!(!answerer.takes_data());
        assert!(answerer.end().is_some());
        assert!(answerer.is_finished());
    }

    #[test]
    fn a_refusal_drops_the_bytes_behind_the_open_and_both_sides_finish() {
        let (mut dialer, open) = Stream::dial("web", None);
        let mut answerer = Stream::answer();
        answerer.on_text(&open.encode());
        let no = answerer.decide(Err("no service named 'x'\u{1b}[2J".into()));
        assert!(
            !answerer.takes_data(),
            "bytes behind a refused open are dropped"
        );
        assert!(!answerer.may_send());
        assert_eq!(
            dialer.on_text(&no.encode()),
            Heard::Refused("no service named 'x'[2J".into())
        );
        assert!(!dialer.takes_data());
        // The dialing side answers with its final; then both may reuse the channel.
        let answer = dialer.reset("refused").expect("our final");
        assert!(dialer.is_finished());
        assert!(!answerer.is_finished());
        assert!(matches!(
            answerer.on_text(&answer.encode()),
            Heard::Reset(_)
        ));
        assert!(answerer.is_finished());
    }

    #[test]
    fn a_reset_is_answered_and_the_tail_of_the_stream_is_dropped() {
        let (mut dialer, open) = Stream::dial("web", None);
        let mut answerer = Stream::answer();
        answerer.on_text(&open.encode());
        dialer.on_text(&answerer.decide(Ok(())).encode());
        // The answering side's socket fails: it resets; the dialer's bytes in flight drop.
        let r = answerer.reset("connection reset").expect("reset");
        assert!(!answerer.takes_data());
        assert_eq!(
            dialer.on_text(&r.encode()),
            Heard::Reset("connection reset".into())
        );
        assert_eq!(dialer.on_text(&reset()), Heard::Ignored, "told once");
        assert!(dialer.reset("peer reset").is_some());
        assert!(dialer.is_finished());
        answerer.on_text(&reset());
        assert!(answerer.is_finished());
        // A side that half-closed before the peer's reset has sent its final already.
        let (mut d, _) = Stream::dial("web", None);
        d.on_text(&accepted());
        d.end();
        d.on_text(&reset());
        assert_eq!(d.reset("x"), None);
        assert!(d.is_finished());
    }

    #[test]
    fn a_cut_is_told_once() {
        let (mut cut, _) = Stream::dial("web", None);
        cut.on_text(&accepted());
        assert!(cut.on_closed(), "closed while open: the stream was cut");
        assert!(!cut.on_closed());
    }

    #[test]
    fn the_answering_side_takes_only_an_open_and_only_first() {
        let mut answerer = Stream::answer();
        assert!(!answerer.takes_data(), "bytes before open are dropped");
        assert_eq!(answerer.on_text("{"), Heard::Ignored);
        assert_eq!(answerer.on_text(&accepted()), Heard::Ignored);
        assert_eq!(
            answerer.on_text(&end()),
            Heard::Ignored,
            "no half-close before the stream is open"
        );
        let (_, open) = Stream::dial("web", None);
        assert!(matches!(
            answerer.on_text(&open.encode()),
            Heard::Open { .. }
        ));
        answerer.decide(Err("no".into()));
        assert_eq!(answerer.on_text(&open.encode()), Heard::Ignored);
        assert_eq!(answerer.reset("x"), None);
        // The dialing side never takes an open.
        let (mut dialer, open) = Stream::dial("web", None);
        assert_eq!(dialer.on_text(&open.encode()), Heard::Ignored);
        assert!(!dialer.takes_data(), "bytes before the answer are dropped");
    }

    #[test]
    fn the_pool_reuses_idle_channels_and_stops_at_its_cap() {
        let mut pool: Pool<u32> = Pool::default();
        assert_eq!(pool.warm_up(), POOL_WARM);
        assert_eq!(pool.live(), POOL_WARM);
        for c in 0..POOL_WARM as u32 {
            pool.give_back(c);
        }
        assert_eq!(pool.warm_up(), 0, "enough idle");
        assert_eq!(pool.take(), Take::Idle(3));
        for _ in 0..POOL_WARM - 1 {
            assert!(matches!(pool.take(), Take::Idle(_)));
        }
        let mut opened = 0;
        while pool.take() == Take::Open {
            opened += 1;
        }
        assert_eq!(opened, POOL_MAX - POOL_WARM);
        assert_eq!(pool.take(), Take::Wait);
        pool.lost();
        assert_eq!(pool.take(), Take::Open, "a lost channel frees a place");
        pool.give_back(7);
        assert_eq!(pool.take(), Take::Idle(7));
        assert_eq!(pool.idle(), 0);
    }
}
