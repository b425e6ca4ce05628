//! How a browser connection goes: the selected candidate pair from `getStats()`.

use js_sys::Reflect;
use peer_core::path::{CandidateType, Endpoint};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use web_sys::RtcPeerConnection;

/// The selected pair's types and RTT (the description shared with the native peer).
pub type PathInfo = peer_core::path::SelectedPath;

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn get_str(obj: &JsValue, key: &str) -> Option<String> {
    get(obj, key).as_string()
}

/// Reads the selected candidate pair from the connection's stats.
pub async fn path_info(pc: &RtcPeerConnection) -> Option<PathInfo> {
    let report = JsFuture::from(pc.get_stats()).await.ok()?;
    // RTCStatsReport is map-like: iterating yields [id, stats] pairs.
    let entries: Vec<JsValue> = js_sys::try_iter(&report)
        .ok()??
        .filter_map(Result::ok)
        .map(|pair| js_sys::Array::from(&pair).get(1))
        .collect();
    let by_id = |id: &str| {
        entries
            .iter()
            .find(|e| get_str(e, "id").as_deref() == Some(id))
            .cloned()
    };
    let selected = entries
        .iter()
        .find(|e| get_str(e, "type").as_deref() == Some("transport"))
        .and_then(|t| get_str(t, "selectedCandidatePairId"))
        .and_then(|id| by_id(&id))
        .or_else(|| {
            entries
                .iter()
                .find(|e| {
                    get_str(e, "type").as_deref() == Some("candidate-pair")
                        && get_str(e, "state").as_deref() == Some("succeeded")
                        && get(e, "nominated").as_bool() == Some(true)
                })
                .cloned()
        })?;
    let endpoint = |key: &str| {
        let id = get_str(&selected, key)?;
        let cand = by_id(&id)?;
        Some(Endpoint {
            kind: CandidateType::parse(&get_str(&cand, "candidateType")?)?,
            ip: get_str(&cand, "address").and_then(|a| a.parse().ok()),
        })
    };
    let local = endpoint("localCandidateId")?;
    let remote = endpoint("remoteCandidateId")?;
    let rtt_ms = get(&selected, "currentRoundTripTime")
        .as_f64()
        .map(|s| s * 1000.0);
    // How the browser reaches its relay (`udp`, `tcp`, `tls`), for a relayed local candidate.
    let relay_over = get_str(&selected, "localCandidateId")
        .and_then(|id| by_id(&id))
        .and_then(|c| get_str(&c, "relayProtocol"))
        .and_then(|p| peer_core::path::RelayOver::parse(&p));
    Some(PathInfo::between(local, remote, rtt_ms).relayed_over(relay_over))
}

/// What arrives on the connection's audio (all its audio receivers together): packets, the
/// energy, and the level now (for the speaking indicator and the voice tests).
pub async fn audio_in(pc: &RtcPeerConnection) -> Option<(f64, f64, f64)> {
    let report = JsFuture::from(pc.get_stats()).await.ok()?;
    let mut found = None;
    for e in js_sys::try_iter(&report)
        .ok()??
        .filter_map(Result::ok)
        .map(|pair| js_sys::Array::from(&pair).get(1))
    {
        if get_str(&e, "type").as_deref() != Some("inbound-rtp")
            || get_str(&e, "kind").as_deref() != Some("audio")
        {
            continue;
        }
        let (p, en, l) = found.unwrap_or((0.0, 0.0, 0.0_f64));
        found = Some((
            p + get(&e, "packetsReceived").as_f64().unwrap_or(0.0),
            en + get(&e, "totalAudioEnergy").as_f64().unwrap_or(0.0),
            l.max(get(&e, "audioLevel").as_f64().unwrap_or(0.0)),
        ));
    }
    found
}
