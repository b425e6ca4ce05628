//! Turning a shared room link into the signaling WebSocket URL.
//!
//! Accepted: `http(s)://host[:port]/r/{room}` (the page's link), `ws(s)://host[:port]/ws/{room}`,
//! or a bare room id together with a server URL.

/// A room on a server, ready to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLink {
    /// `ws://host:port` or `wss://host:port` (no path).
    pub ws_base: String,
    /// `http://host:port` or `https://host:port` (no path), for the page.
    pub http_base: String,
    /// The room id.
    pub room: String,
}

/// Why a link was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a URL of a supported scheme.
    #[error("'{0}' is not a room link (expected http://HOST/r/ROOM, ws://HOST/ws/ROOM, or --server URL with a room id)")]
    NotALink(String),
    /// The room part is not a valid room id.
    #[error("bad room id in '{link}': {reason}")]
    BadRoom {
        /// The link given.
        link: String,
        /// What is wrong with the id.
        reason: signal_protocol::RoomIdError,
    },
}

impl RoomLink {
    /// Parses a link; `server` is used when `link` is a bare room id.
    pub fn parse(link: &str, server: Option<&str>) -> Result<RoomLink, LinkError> {
        let link = link.trim();
        let not_a_link = || LinkError::NotALink(link.to_string());
        let (base, room) = if link.contains("://") {
            let (scheme, rest) = link.split_once("://").ok_or_else(not_a_link)?;
            let (authority, path) = rest.split_once('/').ok_or_else(not_a_link)?;
            if authority.is_empty() {
                return Err(not_a_link());
            }
            let path = path.split(['?', '#']).next().unwrap_or("");
            let room = path
                .strip_prefix("r/")
                .or_else(|| path.strip_prefix("ws/"))
                .ok_or_else(not_a_link)?
                .trim_end_matches('/');
            let base = match scheme {
                "http" | "ws" => format!("http://{authority}"),
                "https" | "wss" => format!("https://{authority}"),
                _ => return Err(not_a_link()),
            };
            (base, room.to_string())
        } else {
            let server = server.ok_or_else(not_a_link)?.trim_end_matches('/');
            let server = if server.contains("://") {
                server.to_string()
            } else {
                format!("http://{server}")
            };
            let parsed = RoomLink::parse(&format!("{server}/r/{link}"), None)?;
            return Ok(parsed);
        };
        signal_protocol::validate_room_id(&room).map_err(|reason| LinkError::BadRoom {
            link: link.to_string(),
            reason,
        })?;
        let ws_base = base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        Ok(RoomLink {
            ws_base,
            http_base: base,
            room,
        })
    }

    /// The server's host, without scheme or port (`[::1]` keeps its brackets).
    pub fn host(&self) -> &str {
        let authority = self
            .http_base
            .split_once("://")
            .map_or(self.http_base.as_str(), |(_, a)| a);
        if authority.starts_with('[') {
            return authority.split_inclusive(']').next().unwrap_or(authority);
        }
        authority.split(':').next().unwrap_or(authority)
    }

    /// The signaling WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("{}/ws/{}", self.ws_base, self.room)
    }

    /// The shareable page link.
    pub fn page_url(&self) -> String {
        format!("{}/r/{}", self.http_base, self.room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse() {
        let l = RoomLink::parse("http://127.0.0.1:8080/r/abc123", None).unwrap();
        assert_eq!(l.ws_url(), "ws://127.0.0.1:8080/ws/abc123");
        assert_eq!(l.page_url(), "http://127.0.0.1:8080/r/abc123");
        let l = RoomLink::parse("wss://example.org/ws/x_y-z", None).unwrap();
        assert_eq!(l.ws_url(), "wss://example.org/ws/x_y-z");
        assert_eq!(l.page_url(), "https://example.org/r/x_y-z");
        let l = RoomLink::parse("abc", Some("http://h:1")).unwrap();
        assert_eq!(l.ws_url(), "ws://h:1/ws/abc");
        let l = RoomLink::parse("abc", Some("h:1")).unwrap();
        assert_eq!(l.ws_url(), "ws://h:1/ws/abc");
        let l = RoomLink::parse("http://h/r/abc?x=1#frag", None).unwrap();
        assert_eq!(l.room, "abc");
        assert_eq!(l.host(), "h");
        let l = RoomLink::parse("http://127.0.0.1:8080/r/a", None).unwrap();
        assert_eq!(l.host(), "127.0.0.1");
        let l = RoomLink::parse("http://[::1]:8080/r/a", None).unwrap();
        assert_eq!(l.host(), "[::1]");
    }

    #[test]
    fn bad_links_are_refused() {
        assert!(matches!(
            RoomLink::parse("abc", None),
            Err(LinkError::NotALink(_))
        ));
        assert!(matches!(
            RoomLink::parse("ftp://h/r/abc", None),
            Err(LinkError::NotALink(_))
        ));
        assert!(matches!(
            RoomLink::parse("http://h/x/abc", None),
            Err(LinkError::NotALink(_))
        ));
        assert!(matches!(
            RoomLink::parse("http://h/r/a.b", None),
            Err(LinkError::BadRoom { .. })
        ));
    }
}
