//! "Perfect negotiation" (W3C WebRTC §10.7) as a sans-IO state machine.
//!
//! Who sends the first offer is the room's rule (`crate::room`). Should both sides offer at once
//! anyway (a renegotiation, a reconnect), each pair has a *polite* and an *impolite* side, chosen
//! without talking: the side with the greater peer id is polite. On a collision the impolite side
//! ignores the incoming offer and the polite side rolls its own back and answers, so the pair
//! never deadlocks.
//!
//! [`crate::driver::Driver`] drives one [`Negotiator`] per remote peer over the platform's
//! connection; nothing here touches a socket.

/// The one rule both peers apply to a candidate's placement, sent or received: an empty mid is
/// no mid, and a candidate without an m-line index belongs to the first m-line (every medium is
/// bundled on one transport, so the first one always exists).
pub fn candidate_placement(
    sdp_mid: Option<String>,
    sdp_m_line_index: Option<u16>,
) -> (Option<String>, Option<u16>) {
    (
        sdp_mid.filter(|m| !m.is_empty()),
        sdp_m_line_index.or(Some(0)),
    )
}

/// Which kind of session description arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptionKind {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
}

/// What to do with a remote description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteAction {
    /// Drop it: we are impolite and our own offer wins the collision.
    Ignore,
    /// Apply it (after rolling back our pending offer when `rollback_first`), then, when
    /// `then_answer`, create and send an answer.
    Apply {
        /// Roll back our own pending local offer before applying.
        rollback_first: bool,
        /// The description is an offer: answer it.
        then_answer: bool,
    },
}

/// One ICE candidate waiting for the remote description, in the platform's own form.
pub type PendingCandidate<C> = C;

/// The negotiation state for one remote peer.
#[derive(Debug)]
pub struct Negotiator<C> {
    polite: bool,
    making_offer: bool,
    ignore_offer: bool,
    have_remote: bool,
    pending: Vec<PendingCandidate<C>>,
}

impl<C> Negotiator<C> {
    /// State for the pair (`me`, `them`); the side with the greater id is polite.
    pub fn new(me: &str, them: &str) -> Negotiator<C> {
        Negotiator {
            polite: me > them,
            making_offer: false,
            ignore_offer: false,
            have_remote: false,
            pending: Vec::new(),
        }
    }

    /// Whether this side yields on a collision.
    pub fn is_polite(&self) -> bool {
        self.polite
    }

    /// Call before creating an offer.
    pub fn offer_started(&mut self) {
        self.making_offer = true;
    }

    /// Call once the offer is set locally and sent (or failed).
    pub fn offer_finished(&mut self) {
        self.making_offer = false;
    }

    /// Decides about a remote description; `signaling_stable` is the connection's signaling
    /// state being `stable` right now.
    pub fn on_remote_description(
        &mut self,
        kind: DescriptionKind,
        signaling_stable: bool,
    ) -> RemoteAction {
        let is_offer = kind == DescriptionKind::Offer;
        let collision = is_offer && (self.making_offer || !signaling_stable);
        self.ignore_offer = !self.polite && collision;
        if self.ignore_offer {
            return RemoteAction::Ignore;
        }
        RemoteAction::Apply {
            rollback_first: collision,
            then_answer: is_offer,
        }
    }

    /// Call once a remote description is applied; returns the candidates that waited for it.
    pub fn remote_applied(&mut self) -> Vec<PendingCandidate<C>> {
        self.have_remote = true;
        self.making_offer = false;
        std::mem::take(&mut self.pending)
    }

    /// Decides about a remote candidate: `Some` to add it now, `None` when it was kept for
    /// later (no remote description yet) or dropped (it belongs to an offer we ignored).
    pub fn on_remote_candidate(&mut self, candidate: C) -> Option<C> {
        if self.ignore_offer {
            return None;
        }
        if !self.have_remote {
            self.pending.push(candidate);
            return None;
        }
        Some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_side_is_polite() {
        let a = Negotiator::<()>::new("aaa", "bbb");
        let b = Negotiator::<()>::new("bbb", "aaa");
        assert!(a.is_polite() != b.is_polite());
    }

    #[test]
    fn glare_resolves_with_one_offer_winning() {
        // Both sides started offers at once.
        let mut a = Negotiator::<()>::new("aaa", "bbb"); // impolite
        let mut b = Negotiator::<()>::new("bbb", "aaa"); // polite
        a.offer_started();
        b.offer_started();
        // Each receives the other's offer while its own is pending.
        assert_eq!(
            a.on_remote_description(DescriptionKind::Offer, false),
            RemoteAction::Ignore
        );
        assert_eq!(
            b.on_remote_description(DescriptionKind::Offer, false),
            RemoteAction::Apply {
                rollback_first: true,
                then_answer: true
            }
        );
        b.remote_applied();
        // a gets b's answer to its offer and applies it.
        a.offer_finished();
        assert_eq!(
            a.on_remote_description(DescriptionKind::Answer, false),
            RemoteAction::Apply {
                rollback_first: false,
                then_answer: false
            }
        );
    }

    #[test]
    fn candidates_wait_for_the_remote_description() {
        let mut n = Negotiator::new("b", "a");
        assert_eq!(n.on_remote_candidate(1), None);
        assert_eq!(n.on_remote_candidate(2), None);
        n.on_remote_description(DescriptionKind::Offer, true);
        assert_eq!(n.remote_applied(), vec![1, 2]);
        assert_eq!(n.on_remote_candidate(3), Some(3));
    }

    #[test]
    fn candidates_of_an_ignored_offer_are_dropped() {
        let mut n = Negotiator::new("a", "b"); // impolite
        n.offer_started();
        assert_eq!(
            n.on_remote_description(DescriptionKind::Offer, false),
            RemoteAction::Ignore
        );
        assert_eq!(n.on_remote_candidate(7), None);
        assert!(n.pending.is_empty());
    }

    #[test]
    fn candidates_are_placed_by_one_rule() {
        assert_eq!(
            candidate_placement(Some(String::new()), None),
            (None, Some(0))
        );
        assert_eq!(
            candidate_placement(Some("1".into()), Some(1)),
            (Some("1".into()), Some(1))
        );
    }
}
