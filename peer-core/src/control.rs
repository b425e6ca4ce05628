//! One peer's control channel, beyond the socket: what a message from the peer means, what we
//! say first when the channel opens, and what the path readings are worth telling (the user,
//! and the peer: how our side reaches the relay). Both peers keep these rules alike by keeping
//! them here; `burrow` and the page only move the texts and the stats readings.
//!
//! ```text
//!  channel open ──▶ opened(offer) ──▶ messages to send first (voice, services)
//!  text from peer ─▶ on_text ───────▶ Heard (chat, services, voice) — its relay transport kept
//!  path reading ──▶ on_path ────────▶ the report to show, news, a relay message to send
//! ```

use crate::channels::{ControlMessage, FramingError, ServiceInfo};
use crate::path::{PathNews, PathWatch, RelayOver, SelectedPath};

/// What a message on the control channel means for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A chat line, as the peer typed it (clean it before showing: [`crate::text`]).
    Chat(String),
    /// The services the peer offers now (replacing any earlier list).
    Services(Vec<ServiceInfo>),
    /// The peer joined or left voice.
    Voice {
        /// In voice now.
        on: bool,
        /// It sends audio.
        sending: bool,
    },
    /// Nothing to show (the peer told how it reaches its relay: kept for the path labels).
    Nothing,
}

/// What we offer each peer as soon as its control channel opens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offer<'a> {
    /// In voice: `Some(sending)`.
    pub voice: Option<bool>,
    /// The services we expose, if we expose any.
    pub services: Option<&'a [ServiceInfo]>,
}

/// What one path reading is worth: the path to report (the peer's relay transport filled in),
/// whether it is news, and a message to send the peer (our relay transport changed).
#[derive(Debug, Clone, PartialEq)]
pub struct PathReading {
    /// The path, with what the peer told of its side.
    pub path: Option<SelectedPath>,
    /// `Connected` the first time, `Changed` for another pair, else `Same`.
    pub news: PathNews,
    /// To send the peer, if our side's transport to the relay changed.
    pub tell: Option<ControlMessage>,
}

/// One peer's control channel state (see the module's text).
#[derive(Debug, Default)]
pub struct Control {
    opened: bool,
    peer_relay_over: Option<RelayOver>,
    watch: PathWatch,
}

impl Control {
    /// The channel is open (ours or the peer's, whichever is seen first; later ones count for
    /// nothing): the messages to send first, or `None` when it was open already.
    pub fn opened(&mut self, offer: Offer<'_>) -> Option<Vec<ControlMessage>> {
        if std::mem::replace(&mut self.opened, true) {
            return None;
        }
        let mut first = Vec::new();
        if let Some(sending) = offer.voice {
            first.push(ControlMessage::Voice { on: true, sending });
        }
        if let Some(services) = offer.services {
            first.push(ControlMessage::Services {
                services: services.to_vec(),
            });
        }
        Some(first)
    }

    /// Whether the channel opened (the link is up).
    pub fn is_open(&self) -> bool {
        self.opened
    }

    /// A text from the peer: what it means (`Err` for one that does not read, to be dropped).
    pub fn on_text(&mut self, text: &str) -> Result<Heard, FramingError> {
        Ok(match ControlMessage::decode(text)? {
            ControlMessage::Chat { text } => Heard::Chat(text),
            ControlMessage::Services { services } => Heard::Services(services),
            ControlMessage::Voice { on, sending } => Heard::Voice { on, sending },
            ControlMessage::Relay { over } => {
                self.peer_relay_over = over;
                Heard::Nothing
            }
        })
    }

    /// A reading of the path from our side's stats (`None`: no pair named yet).
    pub fn on_path(&mut self, path: Option<SelectedPath>) -> PathReading {
        let path = path.map(|p| p.peer_relayed_over(self.peer_relay_over));
        let tell = self
            .watch
            .to_tell(path.as_ref())
            .map(|over| ControlMessage::Relay { over });
        let news = self.watch.observe(path.as_ref());
        PathReading { path, news, tell }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ServiceKind;
    use crate::path::{CandidateType, PathKind};

    fn relayed(over: Option<RelayOver>) -> SelectedPath {
        SelectedPath {
            kind: PathKind::Relayed,
            local: CandidateType::Relay,
            remote: CandidateType::Relay,
            rtt_ms: Some(1.0),
            relay_over: over,
            peer_relay_over: None,
        }
    }

    #[test]
    fn the_first_open_says_what_we_offer_and_later_ones_nothing() {
        let web = [ServiceInfo {
            name: "web".into(),
            kind: ServiceKind::Http,
            protected: false,
            down: false,
        }];
        let mut c = Control::default();
        assert!(!c.is_open());
        let first = c
            .opened(Offer {
                voice: Some(false),
                services: Some(&web),
            })
            .unwrap();
        assert_eq!(
            first,
            [
                ControlMessage::Voice {
                    on: true,
                    sending: false
                },
                ControlMessage::Services {
                    services: web.to_vec()
                }
            ]
        );
        assert!(c.is_open());
        assert_eq!(c.opened(Offer::default()), None, "the other side's channel");
        assert_eq!(Control::default().opened(Offer::default()), Some(vec![]));
    }

    #[test]
    fn texts_mean_chat_services_voice_and_the_peers_relay_goes_into_the_path() {
        let mut c = Control::default();
        let said = |m: ControlMessage| m.encode();
        assert_eq!(
            c.on_text(&said(ControlMessage::Chat { text: "hi".into() }))
                .unwrap(),
            Heard::Chat("hi".into())
        );
        assert_eq!(
            c.on_text(&said(ControlMessage::Voice {
                on: true,
                sending: true
            }))
            .unwrap(),
            Heard::Voice {
                on: true,
                sending: true
            }
        );
        assert!(c.on_text("{\"t\":\"nonsense\"}").is_err());
        let first = c.on_path(Some(relayed(None)));
        assert_eq!(first.news, PathNews::Connected);
        assert_eq!(first.path.unwrap().label(), "relayed");
        // The peer says it reaches the relay over TCP: the same pair now reads as news.
        assert_eq!(
            c.on_text(&said(ControlMessage::Relay {
                over: Some(RelayOver::Tcp)
            }))
            .unwrap(),
            Heard::Nothing
        );
        let told = c.on_path(Some(relayed(None)));
        assert_eq!(told.news, PathNews::Changed);
        assert_eq!(told.path.unwrap().label(), "relayed (TCP)");
    }

    #[test]
    fn our_relay_transport_is_told_once_per_change() {
        let mut c = Control::default();
        assert_eq!(c.on_path(Some(relayed(Some(RelayOver::Udp)))).tell, None);
        assert_eq!(
            c.on_path(Some(relayed(Some(RelayOver::Tls)))).tell,
            Some(ControlMessage::Relay {
                over: Some(RelayOver::Tls)
            })
        );
        assert_eq!(c.on_path(Some(relayed(Some(RelayOver::Tls)))).tell, None);
        assert_eq!(
            c.on_path(Some(relayed(None))).tell,
            Some(ControlMessage::Relay { over: None }),
            "no longer over TLS"
        );
    }
}
