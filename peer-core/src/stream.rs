//! One TCP-like stream over a `burrow-stream` channel, as a state machine both peers use.
//!
//! The dialing side (the page's service worker, `burrow forward`) sends `open`, then waits for
//! `accepted` or `refused`; the answering side (`burrow expose`) reads that first `open`, lets
//! its gate decide, and answers. Once accepted, either side's text means the same: `end` is a
//! half-close (the other direction carries on), `reset` aborts. The platform moves the bytes
//! (binary messages) and the sockets; this decides what each text message means, once.

use crate::channels::StreamMessage;

/// Where a stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `open` sent (dialing) or awaited (answering).
    Opening,
    /// Accepted: bytes flow.
    Open,
    /// The peer ended its direction; ours may still send.
    PeerEnded,
    /// Refused, reset, or closed: nothing more happens.
    Over,
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
}

impl Stream {
    /// The dialing side: returns the `open` message to send once the channel is open.
    pub fn dial(service: &str, token: Option<String>) -> (Stream, StreamMessage) {
        let open = StreamMessage::Open {
            service: service.to_string(),
            token,
        };
        (
            Stream {
                dialing: true,
                phase: Phase::Opening,
            },
            open,
        )
    }

    /// The answering side of a channel the peer opened: its first text message is the request.
    pub fn answer() -> Stream {
        Stream {
            dialing: false,
            phase: Phase::Opening,
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
                self.phase = Phase::Over;
                Heard::Refused(crate::text::safe_line(&reason))
            }
            (Phase::Opening, false, StreamMessage::Open { service, token }) => {
                Heard::Open { service, token }
            }
            (Phase::Open, _, StreamMessage::End) => {
                self.phase = Phase::PeerEnded;
                Heard::Ended
            }
            (Phase::Open | Phase::PeerEnded, _, StreamMessage::Reset { reason }) => {
                self.phase = Phase::Over;
                Heard::Reset(crate::text::safe_line(&reason))
            }
            _ => Heard::Ignored,
        }
    }

    /// The answering side's verdict on the request: `accepted`, or `refused` with `reason`.
    pub fn decide(&mut self, verdict: Result<(), String>) -> StreamMessage {
        match verdict {
            Ok(()) => {
                self.phase = Phase::Open;
                StreamMessage::Accepted
            }
            Err(reason) => {
                self.phase = Phase::Over;
                StreamMessage::Refused { reason }
            }
        }
    }

    /// Whether bytes may flow (accepted, and not reset).
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::PeerEnded)
    }

    /// The channel closed: whether that cut the stream short (it was not refused, reset or
    /// ended by the peer before). Called once; later calls say `false`.
    pub fn on_closed(&mut self) -> bool {
        let cut = matches!(self.phase, Phase::Opening | Phase::Open);
        self.phase = Phase::Over;
        cut
    }

    /// We abort (our socket failed, or our user closed it): the `reset` to send, unless the
    /// stream is already over.
    pub fn reset(&mut self, reason: &str) -> Option<StreamMessage> {
        if self.phase == Phase::Over {
            return None;
        }
        self.phase = Phase::Over;
        Some(StreamMessage::Reset {
            reason: reason.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_opened_accepted_ended_both_ways() {
        let (mut dialer, open) = Stream::dial("web", Some("t".into()));
        let mut answerer = Stream::answer();
        assert_eq!(
            answerer.on_text(&open.encode()),
            Heard::Open {
                service: "web".into(),
                token: Some("t".into())
            }
        );
        let verdict = answerer.decide(Ok(()));
        assert_eq!(dialer.on_text(&verdict.encode()), Heard::Accepted);
        assert!(dialer.is_open() && answerer.is_open());
        // A second "accepted" means nothing; "end" is a half-close, once.
        assert_eq!(dialer.on_text(&verdict.encode()), Heard::Ignored);
        assert_eq!(answerer.on_text(&StreamMessage::End.encode()), Heard::Ended);
        assert_eq!(
            answerer.on_text(&StreamMessage::End.encode()),
            Heard::Ignored
        );
        assert!(answerer.is_open(), "our direction may still send");
        assert!(
            !answerer.on_closed(),
            "both ended: the close cuts nothing short"
        );
    }

    #[test]
    fn a_refusal_a_reset_and_a_cut_are_told_once() {
        let (mut dialer, _) = Stream::dial("web", None);
        let no = Stream::answer().decide(Err("no service named 'x'\u{1b}[2J".into()));
        assert_eq!(
            dialer.on_text(&no.encode()),
            Heard::Refused("no service named 'x'[2J".into())
        );
        assert!(!dialer.on_closed());
        assert_eq!(dialer.reset("late"), None);

        let (mut dialer, _) = Stream::dial("web", None);
        dialer.on_text(&StreamMessage::Accepted.encode());
        let reset = StreamMessage::Reset {
            reason: "connection reset".into(),
        };
        assert_eq!(
            dialer.on_text(&reset.encode()),
            Heard::Reset("connection reset".into())
        );
        assert_eq!(dialer.on_text(&reset.encode()), Heard::Ignored);
        assert!(!dialer.on_closed());

        let (mut cut, _) = Stream::dial("web", None);
        cut.on_text(&StreamMessage::Accepted.encode());
        assert!(cut.on_closed(), "closed while open: the stream was cut");
        assert!(!cut.on_closed());
    }

    #[test]
    fn the_answering_side_takes_only_an_open_and_only_first() {
        let mut answerer = Stream::answer();
        assert_eq!(answerer.on_text("{"), Heard::Ignored);
        assert_eq!(
            answerer.on_text(&StreamMessage::Accepted.encode()),
            Heard::Ignored
        );
        assert_eq!(
            answerer.on_text(&StreamMessage::End.encode()),
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
    }
}
