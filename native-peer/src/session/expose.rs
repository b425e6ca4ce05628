//! `burrow expose`: the streams peers open on each stream channel are let through the services'
//! gate and connected to theirs, one after another; the services are told to every peer, and,
//! from a config file, read again when it changes (streams already open carry on).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use peer_core::channels::ControlMessage;
use webrtc::data_channel::DataChannel;

use super::{Internal, Session};
use crate::events::{Event, Printer};
use crate::{health, streams};

/// Tells `peer` (on its control channel `dc`) what `gate` offers now.
pub(super) async fn announce(peer: &str, dc: &Arc<dyn DataChannel>, gate: &streams::Gate) {
    let list = ControlMessage::Services {
        services: gate.infos(),
    };
    if let Err(e) = dc.send_text(&list.encode()).await {
        tracing::debug!(%peer, "services not announced: {e}");
    }
}

/// How often the config file's modification time is looked at.
const CONFIG_EVERY: Duration = Duration::from_secs(1);

/// Asks the session to read `path` again on SIGHUP or when its modification time changes.
pub(super) async fn watch_config(path: PathBuf, tx: tokio::sync::mpsc::Sender<Internal>) {
    let stamp = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = stamp(&path);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut every = tokio::time::interval(CONFIG_EVERY);
    loop {
        let hung_up = async {
            match &mut hup {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hung_up => {}
            _ = every.tick() => {
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                last = now;
            }
        }
        if tx.send(Internal::Reload).await.is_err() {
            return;
        }
    }
}

/// How often a service found down is checked again.
const DOWN_EVERY: Duration = Duration::from_secs(1);

/// Checks every service `every` so often: a change (down, or back) is printed, and the
/// session is asked to tell every peer.
pub(super) async fn watch_health(
    gate: Arc<streams::Gate>,
    every: Duration,
    printer: Printer,
    tx: tokio::sync::mpsc::Sender<Internal>,
) {
    let mut first = true;
    loop {
        // While a service is down, it is looked at every second: one that starts late (or
        // comes back) is offered again at once, not a whole period later.
        let any_down = gate.services().iter().any(|s| s.meter.is_down());
        if !first {
            tokio::time::sleep(if any_down {
                DOWN_EVERY.min(every)
            } else {
                every
            })
            .await;
        }
        first = false;
        let services = gate.services();
        let found = futures_util::future::join_all(
            services.iter().map(|s| health::check(s.info.kind, s.addr)),
        )
        .await;
        let mut changed = false;
        for (s, found) in services.iter().zip(found) {
            if !s.meter.set_down(found.is_err()) {
                continue;
            }
            changed = true;
            let service = s.info.name.clone();
            match found {
                Err(reason) => printer.print(Event::ServiceDown { service, reason }),
                Ok(()) => printer.print(Event::ServiceUp { service }),
            }
        }
        if changed && tx.send(Internal::Announce).await.is_err() {
            return;
        }
    }
}

impl Session {
    /// Tells every connected peer what is exposed now.
    pub(super) async fn announce_all(&self) {
        let Some(gate) = &self.exposed else {
            return;
        };
        for (id, peer) in &self.peers {
            if let (true, Some(dc)) = (peer.is_connected(), &peer.control) {
                announce(id, dc, gate).await;
            }
        }
    }

    /// Reads the config file again: the new services replace the old for new streams (open
    /// ones carry on), and every connected peer is told; a file that does not read changes
    /// nothing, and says why.
    pub(super) async fn reload(&mut self) {
        let (Some(path), Some(gate)) = (&self.reload_from, &self.exposed) else {
            return;
        };
        match crate::services::from_file(path) {
            Ok(services) => {
                let names = services.iter().map(|s| s.info.name.clone()).collect();
                let old = gate.services();
                if old.len() == services.len()
                    && old.iter().zip(&services).all(|(a, b)| a.same_as(b))
                {
                    return;
                }
                gate.replace(services);
                self.printer
                    .print(Event::ServicesReloaded { services: names });
                self.announce_all().await;
            }
            Err(e) => self.warn(format!(
                "config not reloaded ({e}); the services stay as they were"
            )),
        }
    }

    /// A peer opened a stream channel: serve its streams in the background (closed at once
    /// when nothing is exposed).
    pub(super) async fn accept_stream(&mut self, id: &str, dc: Arc<dyn DataChannel>) {
        let link = self.peers.get(id).map(|p| p.udp.clone());
        match (&self.exposed, link) {
            (Some(gate), Some(link)) => {
                let gate = gate.clone();
                let printer = self.printer;
                let from = id.to_string();
                // Wrong tokens count against the client's address, whatever id it rejoins as.
                let client = self.client_of(id);
                self.tasks.spawn(async move {
                    let report = |e: streams::StreamError| match e {
                        streams::StreamError::Blocked(blocked) => {
                            printer.print(Event::StreamRefused {
                                peer: from.clone(),
                                reason: "too many wrong tokens".into(),
                                retry_in_secs: blocked.retry_in_secs(),
                            })
                        }
                        e => printer.print(Event::StreamFailed {
                            peer: from.clone(),
                            reason: e.to_string(),
                        }),
                    };
                    streams::serve(
                        dc,
                        gate,
                        link,
                        streams::Who {
                            peer: &from,
                            client: &client,
                        },
                        report,
                    )
                    .await;
                });
            }
            _ => {
                let _ = dc.close().await;
            }
        }
    }
}
