//! Several server instances serving the same rooms, through Redis (`--redis`).
//!
//! Each instance keeps its own WebSocket peers (their outboxes) in its rooms, as a single
//! instance does; the cluster reaches them through [`Local`] (so it needs nothing of the rooms'
//! own code). Redis adds what they must share:
//!
//! * **membership**: a hash per room, `burrow:room:{room}` → `{peer_id: {"name", "inst"}}`,
//!   changed only by Lua scripts, so a room's limit holds across instances (`--max-peers-per-room`)
//!   and so does the number of rooms (`burrow:rooms`, `--max-rooms`);
//! * **routing**: a signal or an announcement for a peer on another instance is published on that
//!   instance's channel, `burrow:inst:{instance}`, as an [`Envelope`]; every instance subscribes to
//!   its own channel and delivers to its local peers;
//! * **liveness**: every instance refreshes `burrow:alive:{instance}` (a key with a TTL,
//!   `--redis-instance-ttl`); when an instance dies its key expires, and every other instance
//!   with peers in the same rooms removes the dead one's peers and announces `peer_left` to its
//!   own peers. A room hash expires too unless a live instance with peers in it refreshes it.
//!
//! Without `--redis` none of this runs: rooms live in one process, as before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use signal_protocol::{PeerInfo, PeerKind};

/// How long a Redis command may take before the request it serves is refused.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// The key set of all rooms (for `--max-rooms` across instances).
const ROOMS_KEY: &str = "burrow:rooms";

/// A message for peers on another instance: the encoded server message and who gets it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The room the recipients are in.
    pub room: String,
    /// The recipients' peer ids.
    pub to: Vec<String>,
    /// The server message, already encoded as JSON text.
    pub text: String,
}

/// What the room hash holds for one member.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    name: Option<String>,
    #[serde(default)]
    kind: PeerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    inst: String,
}

/// A member of a room anywhere in the cluster, and the instance that holds its connection.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its id and name.
    pub info: PeerInfo,
    /// The instance its WebSocket is on.
    pub instance: String,
}

/// Why Redis would not add a member.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinRefused {
    /// The room holds `max` members, counted on every instance.
    #[error("room is full ({0} peers); try again when someone leaves")]
    RoomFull(usize),
    /// The servers hold `max` rooms.
    #[error("the servers hold their maximum of {0} rooms; try later")]
    ServerFull(usize),
    /// Redis did not answer, or answered nonsense.
    #[error("the room directory (Redis) is unreachable; try again")]
    Unreachable,
}

/// This instance's own peers, as the cluster needs them: implemented by the server's rooms.
pub trait Local: Send + Sync + 'static {
    /// Delivers `text` to those of `to` in `room` held here; returns those whose queues were
    /// full (dropped).
    fn deliver(&self, room: &str, to: &[String], text: String) -> Vec<String>;
    /// Removes dropped peers from `room` and tells everyone.
    fn departed(
        &self,
        room: &str,
        ids: Vec<String>,
    ) -> impl std::future::Future<Output = ()> + Send;
    /// The rooms with peers held here.
    fn rooms(&self) -> Vec<String>;
    /// Tells this instance's peers in `room` that `ids` left (they were on a dead instance).
    fn announce_left(&self, room: &str, ids: &[String]);
}

/// This instance's handle on the cluster.
pub struct Cluster {
    instance: String,
    client: redis::Client,
    con: ConnectionManager,
    ttl: Duration,
}

/// Adds a member unless the room or the server is full; returns the members that were there.
/// A member already there (resuming on another instance) just moves: `moved`, no limits.
const JOIN: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  local all = redis.call('HGETALL', KEYS[1])
  local out = {'moved'}
  for i = 1, #all, 2 do
    if all[i] ~= ARGV[1] then
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    end
  end
  return out
end
local n = redis.call('HLEN', KEYS[1])
if n >= tonumber(ARGV[3]) then return {'room_full'} end
if n == 0 and redis.call('SISMEMBER', KEYS[2], ARGV[6]) == 0 then
  if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {'server_full'} end
  redis.call('SADD', KEYS[2], ARGV[6])
end
local all = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
local out = {'ok'}
for i = 1, #all do out[#out + 1] = all[i] end
return out
"#;

/// Removes members; forgets the room when it empties; returns the members left.
const LEAVE: &str = r#"
for i = 1, #ARGV - 1 do redis.call('HDEL', KEYS[1], ARGV[i]) end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[#ARGV])
  return {}
end
return redis.call('HGETALL', KEYS[1])
"#;

fn room_key(room: &str) -> String {
    format!("burrow:room:{room}")
}

fn inst_channel(instance: &str) -> String {
    format!("burrow:inst:{instance}")
}

fn alive_key(instance: &str) -> String {
    format!("burrow:alive:{instance}")
}

/// `[field, value, field, value…]` from HGETALL → members.
fn members_of(flat: &[String]) -> Vec<Member> {
    flat.chunks_exact(2)
        .filter_map(|pair| {
            let entry: Entry = serde_json::from_str(&pair[1]).ok()?;
            Some(Member {
                info: PeerInfo {
                    id: pair[0].clone(),
                    name: entry.name,
                    kind: entry.kind,
                    client: entry.client,
                },
                instance: entry.inst,
            })
        })
        .collect()
}

impl Cluster {
    /// Connects to Redis at `url` as a new instance whose liveness lasts `ttl` unless renewed.
    pub async fn connect(url: &str, ttl: Duration) -> anyhow::Result<Arc<Cluster>> {
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("bad --redis URL {url}: {e}"))?;
        let con = tokio::time::timeout(COMMAND_TIMEOUT, client.get_connection_manager())
            .await
            .map_err(|_| anyhow::anyhow!("cannot reach Redis at {url}: timed out"))?
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at {url}: {e}"))?;
        let instance = crate::secrets::new_room_id();
        let cluster = Cluster {
            instance,
            client,
            con,
            ttl,
        };
        cluster.heartbeat().await;
        Ok(Arc::new(cluster))
    }

    /// The resume secret every instance shares (made by the first instance to ask).
    pub async fn resume_secret(&self) -> anyhow::Result<Vec<u8>> {
        let mut con = self.con.clone();
        let key = "burrow:resume-secret";
        let fresh = crate::secrets::resume_key();
        let ask = async {
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(&fresh)
                .arg("NX")
                .query_async(&mut con)
                .await?;
            con.get::<_, Vec<u8>>(key).await
        };
        let secret = tokio::time::timeout(COMMAND_TIMEOUT, ask)
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer for the resume secret"))??;
        anyhow::ensure!(
            secret.len() >= 16,
            "Redis holds a short burrow:resume-secret"
        );
        Ok(secret)
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether Redis answers now (for `/healthz`).
    pub async fn healthy(&self) -> bool {
        let mut con = self.con.clone();
        matches!(
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                redis::cmd("PING").query_async::<String>(&mut con)
            )
            .await,
            Ok(Ok(_))
        )
    }

    async fn heartbeat(&self) {
        let mut con = self.con.clone();
        let secs = self.ttl.as_secs().max(1);
        let _ = tokio::time::timeout(
            COMMAND_TIMEOUT,
            con.set_ex::<_, _, ()>(alive_key(&self.instance), 1, secs),
        )
        .await;
    }

    /// Adds `info` to `room` (limits checked in Redis); returns every other member, and whether
    /// `info` was a member already (resumed here from another instance).
    pub async fn join(
        &self,
        room: &str,
        info: &PeerInfo,
        max_peers: usize,
        max_rooms: usize,
    ) -> Result<(Vec<Member>, bool), JoinRefused> {
        let entry = Entry {
            name: info.name.clone(),
            kind: info.kind,
            client: info.client.clone(),
            inst: self.instance.clone(),
        };
        let entry = serde_json::to_string(&entry).map_err(|_| JoinRefused::Unreachable)?;
        let mut con = self.con.clone();
        let script = redis::Script::new(JOIN);
        let mut call = script.key(room_key(room));
        call.key(ROOMS_KEY)
            .arg(&info.id)
            .arg(entry)
            .arg(max_peers)
            .arg(max_rooms)
            .arg(self.room_ttl_secs())
            .arg(room);
        let reply: Vec<String> = tokio::time::timeout(COMMAND_TIMEOUT, call.invoke_async(&mut con))
            .await
            .map_err(|_| JoinRefused::Unreachable)?
            .map_err(|e| {
                tracing::warn!("redis join: {e}");
                JoinRefused::Unreachable
            })?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok((members_of(&reply[1..]), false)),
            Some("moved") => Ok((members_of(&reply[1..]), true)),
            Some("room_full") => Err(JoinRefused::RoomFull(max_peers)),
            Some("server_full") => Err(JoinRefused::ServerFull(max_rooms)),
            _ => Err(JoinRefused::Unreachable),
        }
    }

    /// Removes `ids` from `room`; returns the members left.
    pub async fn leave(&self, room: &str, ids: &[String]) -> Vec<Member> {
        let mut con = self.con.clone();
        let script = redis::Script::new(LEAVE);
        let mut call = script.key(room_key(room));
        call.key(ROOMS_KEY);
        for id in ids {
            call.arg(id);
        }
        call.arg(room);
        match tokio::time::timeout(COMMAND_TIMEOUT, call.invoke_async::<Vec<String>>(&mut con))
            .await
        {
            Ok(Ok(flat)) => members_of(&flat),
            Ok(Err(e)) => {
                tracing::warn!("redis leave: {e}");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Every member of `room`, on any instance.
    pub async fn members(&self, room: &str) -> Vec<Member> {
        let mut con = self.con.clone();
        match tokio::time::timeout(
            COMMAND_TIMEOUT,
            con.hgetall::<_, Vec<String>>(room_key(room)),
        )
        .await
        {
            Ok(Ok(flat)) => members_of(&flat),
            _ => Vec::new(),
        }
    }

    /// The member `peer` of `room`, wherever it is (one field read: a signal's hot path).
    pub async fn locate(&self, room: &str, peer: &str) -> Option<Member> {
        let mut con = self.con.clone();
        let raw = tokio::time::timeout(
            COMMAND_TIMEOUT,
            con.hget::<_, _, Option<String>>(room_key(room), peer),
        )
        .await
        .ok()?
        .ok()??;
        let entry: Entry = serde_json::from_str(&raw).ok()?;
        Some(Member {
            info: PeerInfo {
                id: peer.to_string(),
                name: entry.name,
                kind: entry.kind,
                client: entry.client,
            },
            instance: entry.inst,
        })
    }

    /// Sends `text` to the members of `room` among `to` that live on other instances.
    pub async fn publish(&self, room: &str, to: &[Member], text: &str) {
        let mut by_instance: HashMap<&str, Vec<String>> = HashMap::new();
        for m in to.iter().filter(|m| m.instance != self.instance) {
            by_instance
                .entry(m.instance.as_str())
                .or_default()
                .push(m.info.id.clone());
        }
        let mut con = self.con.clone();
        for (instance, ids) in by_instance {
            let envelope = Envelope {
                room: room.to_string(),
                to: ids,
                text: text.to_string(),
            };
            let Ok(payload) = serde_json::to_string(&envelope) else {
                continue;
            };
            let sent = tokio::time::timeout(
                COMMAND_TIMEOUT,
                con.publish::<_, _, ()>(inst_channel(instance), payload),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::warn!(%instance, "redis publish failed");
            }
        }
    }

    fn room_ttl_secs(&self) -> u64 {
        self.ttl.as_secs().max(1) * 4
    }

    /// Runs this instance's share of the cluster until the server stops: delivering envelopes
    /// published for its peers, renewing its liveness, and sweeping dead instances' peers from
    /// the rooms its peers are in.
    pub async fn run(self: Arc<Self>, local: Arc<impl Local>) {
        let deliver = {
            let cluster = self.clone();
            let local = local.clone();
            async move {
                loop {
                    cluster.subscribe_and_deliver(&*local).await;
                    // Redis went away: try again shortly (peers on this instance keep working).
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let upkeep = async move {
            let mut tick = tokio::time::interval(self.ttl / 3);
            loop {
                tick.tick().await;
                self.heartbeat().await;
                self.sweep(&*local).await;
            }
        };
        tokio::join!(deliver, upkeep);
    }

    async fn subscribe_and_deliver(&self, local: &impl Local) {
        let mut pubsub = match self.client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("redis subscribe: {e}");
                return;
            }
        };
        if let Err(e) = pubsub.subscribe(inst_channel(&self.instance)).await {
            tracing::warn!("redis subscribe: {e}");
            return;
        }
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            let Ok(envelope) = serde_json::from_str::<Envelope>(&payload) else {
                continue;
            };
            let dropped = local.deliver(&envelope.room, &envelope.to, envelope.text);
            if !dropped.is_empty() {
                local.departed(&envelope.room, dropped).await;
            }
        }
    }

    /// Removes, from the rooms this instance's peers are in, the members of instances whose
    /// liveness key expired, and tells this instance's peers they left.
    async fn sweep(&self, local: &impl Local) {
        let mut con = self.con.clone();
        let mut alive: HashMap<String, bool> = HashMap::new();
        for room in local.rooms() {
            let members = self.members(&room).await;
            let mut ghosts = Vec::new();
            for m in members.iter().filter(|m| m.instance != self.instance) {
                let live = match alive.get(&m.instance) {
                    Some(v) => *v,
                    None => {
                        let v = matches!(
                            tokio::time::timeout(
                                COMMAND_TIMEOUT,
                                con.exists::<_, bool>(alive_key(&m.instance))
                            )
                            .await,
                            Ok(Ok(true))
                        );
                        alive.insert(m.instance.clone(), v);
                        v
                    }
                };
                if !live {
                    ghosts.push(m.info.id.clone());
                }
            }
            if !ghosts.is_empty() {
                tracing::info!(%room, gone = ghosts.len(), "peers of a dead instance removed");
                self.leave(&room, &ghosts).await;
                local.announce_left(&room, &ghosts);
            }
            let _ = tokio::time::timeout(
                COMMAND_TIMEOUT,
                con.expire::<_, ()>(room_key(&room), self.room_ttl_secs() as i64),
            )
            .await;
        }
    }
}
