//! The per-peer driver: perfect negotiation *performed*, once for both peers.
//!
//! [`crate::negotiation::Negotiator`] decides; the [`Driver`] carries the decision out over a
//! small [`Connection`] trait that each platform implements over its own peer connection (the
//! `webrtc` crate natively, `RTCPeerConnection` in the page): roll back, set the remote
//! description, answer, buffer candidates that came before the description, roll back a lost
//! offer before an ICE restart. Nothing here knows a socket or a browser; the tests below drive
//! two drivers against each other through a fake connection.

use std::sync::Mutex;

use signal_protocol::PeerSignal;

use crate::negotiation::{candidate_placement, DescriptionKind, Negotiator, RemoteAction};

/// Where a connection's offer/answer exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signaling {
    /// Nothing pending.
    Stable,
    /// Our offer is set and unanswered.
    LocalOffer,
    /// Anything else (the peer's offer is set and we have not answered yet).
    Other,
}

/// The steps of a peer connection the driver performs; each platform implements it.
#[allow(async_fn_in_trait)]
pub trait Connection {
    /// The platform's error.
    type Error;
    /// A remote candidate in the platform's form, ready to add.
    type Candidate;

    /// Where the offer/answer exchange stands.
    async fn signaling(&self) -> Signaling;
    /// Rolls our pending local offer back.
    async fn rollback(&self) -> Result<(), Self::Error>;
    /// Sets the peer's description.
    async fn set_remote(&self, kind: DescriptionKind, sdp: String) -> Result<(), Self::Error>;
    /// Creates an offer, sets it locally and returns its SDP.
    async fn create_offer(&self) -> Result<String, Self::Error>;
    /// Creates an answer, sets it locally and returns its SDP.
    async fn create_answer(&self) -> Result<String, Self::Error>;
    /// Makes the next offer carry new ICE credentials.
    async fn restart_ice(&self) -> Result<(), Self::Error>;
    /// Adds a remote candidate (one that cannot be used is not an error: others may work).
    async fn add_candidate(&self, candidate: Self::Candidate);
    /// The platform's form of a remote candidate (its placement already normalised).
    fn candidate(
        &self,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_m_line_index: Option<u16>,
    ) -> Self::Candidate;
    /// Sends a signal to this peer (through the server).
    fn send(&self, signal: PeerSignal);
}

/// What became of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// An offer was applied and answered.
    Answered,
    /// An offer collided with ours and we are impolite: it was dropped.
    Ignored,
    /// Anything else (an answer applied, a candidate added or kept for later).
    Applied,
}

/// Perfect negotiation for one remote peer over connection `C`.
pub struct Driver<C: Connection> {
    conn: C,
    // Never held across an await: the platform may offer while a signal is being applied.
    negotiator: Mutex<Negotiator<C::Candidate>>,
}

impl<C: Connection> Driver<C> {
    /// The driver for the pair (`me`, `them`) over `conn`.
    pub fn new(conn: C, me: &str, them: &str) -> Driver<C> {
        Driver {
            conn,
            negotiator: Mutex::new(Negotiator::new(me, them)),
        }
    }

    /// The connection it drives.
    pub fn connection(&self) -> &C {
        &self.conn
    }

    fn negotiator(&self) -> std::sync::MutexGuard<'_, Negotiator<C::Candidate>> {
        // A panic elsewhere cannot leave the negotiator half-updated: take it as it is.
        self.negotiator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates, sets and sends an offer (the first one, a renegotiation, or an ICE restart).
    pub async fn offer(&self) -> Result<(), C::Error> {
        self.negotiator().offer_started();
        let result = self.conn.create_offer().await;
        self.negotiator().offer_finished();
        self.conn.send(PeerSignal::Offer { sdp: result? });
        Ok(())
    }

    /// Restarts ICE (the link stayed down): an offer with new credentials. An offer of ours
    /// still unanswered is rolled back first (a repeat means it was lost); while the peer's
    /// offer is being answered, nothing is done.
    pub async fn restart_ice(&self) -> Result<(), C::Error> {
        match self.conn.signaling().await {
            Signaling::Stable => {}
            Signaling::LocalOffer => self.conn.rollback().await?,
            Signaling::Other => return Ok(()),
        }
        self.conn.restart_ice().await?;
        self.offer().await
    }

    /// Handles one signal from the peer (the platform hands them over one at a time, in order).
    pub async fn on_signal(&self, signal: PeerSignal) -> Result<Handled, C::Error> {
        match signal {
            PeerSignal::Offer { sdp } => self.on_description(DescriptionKind::Offer, sdp).await,
            PeerSignal::Answer { sdp } => self.on_description(DescriptionKind::Answer, sdp).await,
            PeerSignal::Candidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            } => {
                let (mid, index) = candidate_placement(sdp_mid, sdp_m_line_index);
                let candidate = self.conn.candidate(candidate, mid, index);
                let ready = self.negotiator().on_remote_candidate(candidate);
                if let Some(candidate) = ready {
                    self.conn.add_candidate(candidate).await;
                }
                Ok(Handled::Applied)
            }
            PeerSignal::EndOfCandidates => Ok(Handled::Applied),
        }
    }

    async fn on_description(
        &self,
        kind: DescriptionKind,
        sdp: String,
    ) -> Result<Handled, C::Error> {
        let stable = self.conn.signaling().await == Signaling::Stable;
        let action = self.negotiator().on_remote_description(kind, stable);
        let RemoteAction::Apply {
            rollback_first,
            then_answer,
        } = action
        else {
            return Ok(Handled::Ignored);
        };
        if rollback_first {
            self.conn.rollback().await?;
        }
        self.conn.set_remote(kind, sdp).await?;
        let waiting = self.negotiator().remote_applied();
        for candidate in waiting {
            self.conn.add_candidate(candidate).await;
        }
        if !then_answer {
            return Ok(Handled::Applied);
        }
        let answer = self.conn.create_answer().await?;
        self.conn.send(PeerSignal::Answer { sdp: answer });
        Ok(Handled::Answered)
    }
}

#[cfg(test)]
mod tests {
    //! Two drivers wired to each other through a fake connection that keeps the signaling
    //! state machine of RFC 8829 (what a real one refuses, it refuses too).

    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::future::Future;
    use std::pin::pin;
    use std::rc::Rc;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Runs a future whose every step is ready at once (the fake never waits).
    fn run<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[derive(Default)]
    struct State {
        signaling: Option<DescriptionKind>, // the pending description's kind, if any
        local_is_pending: bool,
        remote_set: bool,
        restart: bool,
        offers: u32,
        remote: Vec<String>,
        added: Vec<String>,
        outbox: VecDeque<PeerSignal>,
    }

    struct Fake {
        name: &'static str,
        state: RefCell<State>,
    }

    impl Fake {
        fn new(name: &'static str) -> Fake {
            Fake {
                name,
                state: RefCell::default(),
            }
        }
    }

    impl Connection for Rc<Fake> {
        type Error = String;
        type Candidate = String;

        async fn signaling(&self) -> Signaling {
            let s = self.state.borrow();
            match (s.signaling, s.local_is_pending) {
                (None, _) => Signaling::Stable,
                (Some(DescriptionKind::Offer), true) => Signaling::LocalOffer,
                _ => Signaling::Other,
            }
        }
        async fn rollback(&self) -> Result<(), String> {
            let mut s = self.state.borrow_mut();
            if !s.local_is_pending {
                return Err("nothing to roll back".into());
            }
            s.signaling = None;
            s.local_is_pending = false;
            Ok(())
        }
        async fn set_remote(&self, kind: DescriptionKind, sdp: String) -> Result<(), String> {
            let mut s = self.state.borrow_mut();
            match (kind, s.signaling, s.local_is_pending) {
                (DescriptionKind::Offer, None, _) => {
                    s.signaling = Some(DescriptionKind::Offer);
                    s.local_is_pending = false;
                }
                (DescriptionKind::Answer, Some(DescriptionKind::Offer), true) => {
                    s.signaling = None;
                    s.local_is_pending = false;
                }
                _ => return Err(format!("{}: cannot set remote {kind:?} now", self.name)),
            }
            s.remote_set = true;
            s.remote.push(sdp);
            Ok(())
        }
        async fn create_offer(&self) -> Result<String, String> {
            let mut s = self.state.borrow_mut();
            if s.signaling.is_some() && !s.local_is_pending {
                return Err(format!("{}: cannot offer while answering", self.name));
            }
            s.offers += 1;
            s.signaling = Some(DescriptionKind::Offer);
            s.local_is_pending = true;
            let restart = if std::mem::take(&mut s.restart) {
                " (restart)"
            } else {
                ""
            };
            Ok(format!("offer {} from {}{restart}", s.offers, self.name))
        }
        async fn create_answer(&self) -> Result<String, String> {
            let mut s = self.state.borrow_mut();
            if s.signaling != Some(DescriptionKind::Offer) || s.local_is_pending {
                return Err(format!("{}: no offer to answer", self.name));
            }
            s.signaling = None;
            Ok(format!("answer from {}", self.name))
        }
        async fn restart_ice(&self) -> Result<(), String> {
            self.state.borrow_mut().restart = true;
            Ok(())
        }
        async fn add_candidate(&self, candidate: String) {
            let mut s = self.state.borrow_mut();
            assert!(s.remote_set, "a candidate added before any description");
            s.added.push(candidate);
        }
        fn candidate(&self, c: String, mid: Option<String>, index: Option<u16>) -> String {
            format!("{c}@{}:{}", mid.unwrap_or_default(), index.unwrap_or(99))
        }
        fn send(&self, signal: PeerSignal) {
            self.state.borrow_mut().outbox.push_back(signal);
        }
    }

    fn pair() -> (Driver<Rc<Fake>>, Driver<Rc<Fake>>) {
        // "a" < "b": a is impolite, b polite.
        (
            Driver::new(Rc::new(Fake::new("a")), "a", "b"),
            Driver::new(Rc::new(Fake::new("b")), "b", "a"),
        )
    }

    /// Delivers everything `from` sent to `to`, returning what became of each.
    fn deliver(from: &Driver<Rc<Fake>>, to: &Driver<Rc<Fake>>) -> Vec<Handled> {
        let mut out = Vec::new();
        loop {
            let next = from.connection().state.borrow_mut().outbox.pop_front();
            let Some(signal) = next else { return out };
            out.push(run(to.on_signal(signal)).unwrap());
        }
    }

    fn stable(d: &Driver<Rc<Fake>>) -> bool {
        run(d.connection().signaling()) == Signaling::Stable
    }

    fn candidate(c: &str) -> PeerSignal {
        PeerSignal::Candidate {
            candidate: c.into(),
            sdp_mid: Some(String::new()),
            sdp_m_line_index: None,
        }
    }

    #[test]
    fn an_offer_is_answered_and_the_pair_settles() {
        let (a, b) = pair();
        run(a.offer()).unwrap();
        assert_eq!(deliver(&a, &b), [Handled::Answered]);
        assert_eq!(deliver(&b, &a), [Handled::Applied]);
        assert!(stable(&a) && stable(&b));
        assert_eq!(b.connection().state.borrow().remote, ["offer 1 from a"]);
    }

    #[test]
    fn glare_on_both_sides_ends_with_the_impolite_offer() {
        let (a, b) = pair();
        run(a.offer()).unwrap();
        run(b.offer()).unwrap();
        // Both offers cross: the impolite side (a) ignores b's; the polite side rolls back its
        // own and answers a's.
        assert_eq!(deliver(&b, &a), [Handled::Ignored]);
        assert_eq!(deliver(&a, &b), [Handled::Answered]);
        assert_eq!(deliver(&b, &a), [Handled::Applied]);
        assert!(stable(&a) && stable(&b));
        assert_eq!(a.connection().state.borrow().remote, ["answer from b"]);
    }

    #[test]
    fn candidates_before_the_description_wait_for_it() {
        let (a, b) = pair();
        run(a.offer()).unwrap();
        let offer = a
            .connection()
            .state
            .borrow_mut()
            .outbox
            .pop_front()
            .unwrap();
        for c in ["c1", "c2"] {
            assert_eq!(run(b.on_signal(candidate(c))).unwrap(), Handled::Applied);
        }
        assert!(b.connection().state.borrow().added.is_empty());
        run(b.on_signal(offer)).unwrap();
        // Added right after the description, in order, placed by the one rule.
        assert_eq!(b.connection().state.borrow().added, ["c1@:0", "c2@:0"]);
        run(b.on_signal(candidate("c3"))).unwrap();
        assert_eq!(b.connection().state.borrow().added.len(), 3);
    }

    #[test]
    fn the_candidates_of_an_ignored_offer_are_dropped() {
        let (a, b) = pair();
        run(a.offer()).unwrap();
        run(b.offer()).unwrap();
        b.connection().send(candidate("of-the-ignored-offer"));
        assert_eq!(deliver(&b, &a), [Handled::Ignored, Handled::Applied]);
        assert!(a.connection().state.borrow().added.is_empty());
    }

    #[test]
    fn a_restart_rolls_back_a_lost_offer_and_waits_while_answering() {
        let (a, b) = pair();
        run(a.offer()).unwrap();
        a.connection().state.borrow_mut().outbox.clear(); // the offer was lost
        run(a.restart_ice()).unwrap();
        let sent = a.connection().state.borrow_mut().outbox.pop_front();
        assert_eq!(
            sent,
            Some(PeerSignal::Offer {
                sdp: "offer 2 from a (restart)".into()
            })
        );
        // b has the restart offer set and not answered yet: its own restart does nothing.
        let mut offer = VecDeque::from([sent.unwrap()]);
        let s = offer.pop_front().unwrap();
        let PeerSignal::Offer { sdp } = s else {
            unreachable!()
        };
        run(b.connection().set_remote(DescriptionKind::Offer, sdp)).unwrap();
        run(b.restart_ice()).unwrap();
        assert!(b.connection().state.borrow().outbox.is_empty());
    }
}
