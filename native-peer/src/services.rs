//! What `burrow expose` offers, from its command line: the positional service
//! (`burrow expose ADDR LINK`, named by `--service NAME`, of `--kind`), and any number of
//! `--service NAME=KIND:ADDR` (KIND `http`, `tcp` or `udp`), each a service of its own; or from
//! a config file (`--config FILE`, TOML), read again when it changes or on SIGHUP:
//!
//! ```toml
//! [services.site]
//! kind = "http"
//! addr = "127.0.0.1:8080"
//! token_file = "/etc/burrow/site.token"   # or: token = "…"
//! max_rate = "2MiB"                         # a second, each way, all its streams together
//! max_streams = 100                          # open at once, all peers together (default 1024)
//!
//! [services.dns]
//! kind = "udp"
//! addr = "127.0.0.1:53"
//! ```

use std::net::SocketAddr;

use peer_core::channels::{ServiceInfo, ServiceKind};

use crate::meter::{Limits, DEFAULT_MAX_STREAMS};
use crate::streams::Exposed;

/// Why the services asked for cannot be offered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// A `--service NAME=KIND:ADDR` that does not read.
    #[error("--service {0}: {1}")]
    Bad(String, String),
    /// Two services with one name.
    #[error("two services are named '{0}'")]
    Twice(String),
    /// Nothing to expose.
    #[error("nothing to expose: give ADDR, or --service NAME=KIND:ADDR")]
    Nothing,
}

/// A service kind by its name.
pub fn kind(name: &str) -> Option<ServiceKind> {
    match name {
        "http" => Some(ServiceKind::Http),
        "tcp" => Some(ServiceKind::Tcp),
        "udp" => Some(ServiceKind::Udp),
        _ => None,
    }
}

/// The default name of a service of `kind`.
fn default_name(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Http => "web",
        ServiceKind::Tcp => "tcp",
        ServiceKind::Udp => "udp",
    }
}

/// Whether `name` may name a service: 1 to 64 letters, digits, `.`, `_` or `-` (it is shown on
/// the page and in terminals, and typed after `--service`).
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// One `NAME=KIND:ADDR`.
fn parse_spec(spec: &str) -> Result<(String, ServiceKind, SocketAddr), SpecError> {
    let bad = |why: &str| SpecError::Bad(spec.to_string(), why.to_string());
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=KIND:ADDR"))?;
    let (kind_name, addr) = rest
        .split_once(':')
        .ok_or_else(|| bad("expected NAME=KIND:ADDR"))?;
    if !valid_name(name) {
        return Err(bad("a name is 1 to 64 letters, digits, '.', '_' or '-'"));
    }
    let kind = kind(kind_name).ok_or_else(|| bad("KIND is http, tcp or udp"))?;
    let addr = addr
        .parse()
        .map_err(|_| bad("ADDR is an IP address and port, like 127.0.0.1:8080"))?;
    Ok((name.to_string(), kind, addr))
}

/// A bandwidth cap as written: a size a second, like `2MiB`, `500KB` or `2MiB/s`.
pub fn rate(text: &str) -> Result<u64, String> {
    let size = text.trim().trim_end_matches("/s");
    let bytes = size
        .parse::<bytesize::ByteSize>()
        .map_err(|_| format!("{text:?} is not a rate like 2MiB or 500KB (a second)"))?
        .as_u64();
    if bytes == 0 {
        return Err("a rate of 0 would carry nothing".into());
    }
    Ok(bytes)
}

/// The services of one `burrow expose`: `positional` (with `kind`, named by the one `--service`
/// without `=`, if any) and each `--service NAME=KIND:ADDR`; every one with `token` and capped
/// by `limits`.
pub fn from_cli(
    positional: Option<SocketAddr>,
    kind: ServiceKind,
    service_flags: &[String],
    token: Option<&str>,
    limits: Limits,
) -> Result<Vec<Exposed>, SpecError> {
    let (specs, names): (Vec<&String>, Vec<&String>) =
        service_flags.iter().partition(|s| s.contains('='));
    let mut services = Vec::new();
    if let Some(addr) = positional {
        let name = match names.as_slice() {
            [] => default_name(kind).to_string(),
            [name] if valid_name(name) => name.to_string(),
            [name] => {
                return Err(SpecError::Bad(
                    name.to_string(),
                    "a name is 1 to 64 letters, digits, '.', '_' or '-'".into(),
                ))
            }
            [_, second, ..] => {
                return Err(SpecError::Bad(
                    second.to_string(),
                    "only one --service NAME names ADDR; others are NAME=KIND:ADDR".into(),
                ))
            }
        };
        services.push((name, kind, addr));
    } else if let Some(name) = names.first() {
        return Err(SpecError::Bad(
            name.to_string(),
            "expected NAME=KIND:ADDR (no ADDR was given for a plain name)".into(),
        ));
    }
    for spec in specs {
        services.push(parse_spec(spec)?);
    }
    if services.is_empty() {
        return Err(SpecError::Nothing);
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _, _) in &services {
        if !seen.insert(name.clone()) {
            return Err(SpecError::Twice(name.clone()));
        }
    }
    Ok(services
        .into_iter()
        .map(|(name, kind, addr)| {
            let info = ServiceInfo {
                name,
                kind,
                protected: token.is_some(),
                down: false,
            };
            Exposed::new(info, addr, token.map(str::to_string), limits)
        })
        .collect())
}

/// Why a config file cannot be used (the services offered stay as they were).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read.
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    /// It is not the TOML asked for.
    #[error("{0}: {1}")]
    Toml(String, String),
    /// A service in it is wrong.
    #[error("{0}: {1}")]
    Service(String, SpecError),
    /// A token file cannot be read.
    #[error("{0}: service '{1}': cannot read its token file {2}: {3}")]
    Token(String, String, String, std::io::Error),
    /// A `max_rate` that does not read.
    #[error("{0}: service '{1}': max_rate: {2}")]
    Rate(String, String, String),
}

/// The file's shape.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    services: std::collections::BTreeMap<String, Entry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    kind: String,
    addr: String,
    token: Option<String>,
    token_file: Option<std::path::PathBuf>,
    max_rate: Option<String>,
    max_streams: Option<usize>,
}

/// The services a config file names (in name order); a token file's first line is its token.
pub fn from_file(path: &std::path::Path) -> Result<Vec<Exposed>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(shown.clone(), e))?;
    let file: File =
        toml::from_str(&text).map_err(|e| ConfigError::Toml(shown.clone(), e.to_string()))?;
    let mut services = Vec::new();
    for (name, entry) in file.services {
        let spec = format!("{name}={}:{}", entry.kind, entry.addr);
        let (name, kind, addr) =
            parse_spec(&spec).map_err(|e| ConfigError::Service(shown.clone(), e))?;
        let token = match (entry.token, entry.token_file) {
            (_, Some(file)) => {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    ConfigError::Token(shown.clone(), name.clone(), file.display().to_string(), e)
                })?;
                Some(text.lines().next().unwrap_or("").to_string())
            }
            (token, None) => token,
        };
        let max_rate = entry
            .max_rate
            .map(|r| rate(&r).map_err(|e| ConfigError::Rate(shown.clone(), name.clone(), e)))
            .transpose()?;
        let info = ServiceInfo {
            name,
            kind,
            protected: token.is_some(),
            down: false,
        };
        let limits = Limits {
            max_rate,
            max_streams: entry.max_streams.unwrap_or(DEFAULT_MAX_STREAMS).max(1),
        };
        services.push(Exposed::new(info, addr, token, limits));
    }
    if services.is_empty() {
        return Err(ConfigError::Service(shown, SpecError::Nothing));
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[Exposed]) -> Vec<(&str, ServiceKind, String)> {
        v.iter()
            .map(|s| (s.info.name.as_str(), s.info.kind, s.addr.to_string()))
            .collect()
    }

    #[test]
    fn the_positional_service_and_named_ones() {
        let addr = Some("127.0.0.1:8080".parse().unwrap());
        let flags = vec!["dns=udp:127.0.0.1:53".to_string(), "site".to_string()];
        let got = from_cli(
            addr,
            ServiceKind::Http,
            &flags,
            Some("k"),
            Limits {
                max_rate: Some(1 << 20),
                ..Limits::default()
            },
        )
        .unwrap();
        assert_eq!(
            names(&got),
            vec![
                ("site", ServiceKind::Http, "127.0.0.1:8080".into()),
                ("dns", ServiceKind::Udp, "127.0.0.1:53".into()),
            ]
        );
        assert!(got
            .iter()
            .all(|s| s.token.as_deref() == Some("k") && s.info.protected));
        assert!(got.iter().all(|s| s.meter.max_rate() == Some(1 << 20)));
        let one = from_cli(addr, ServiceKind::Tcp, &[], None, Limits::default()).unwrap();
        assert_eq!(
            names(&one),
            vec![("tcp", ServiceKind::Tcp, "127.0.0.1:8080".into())]
        );
        let ipv6 = from_cli(
            None,
            ServiceKind::Http,
            &["v6=tcp:[::1]:22".into()],
            None,
            Limits::default(),
        )
        .unwrap();
        assert_eq!(
            names(&ipv6),
            vec![("v6", ServiceKind::Tcp, "[::1]:22".into())]
        );
    }

    #[test]
    fn a_config_file_names_services_with_tokens() {
        let dir = std::env::temp_dir().join(format!("burrow-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("site.token");
        std::fs::write(&token, "s3cret\nignored\n").unwrap();
        let config = dir.join("burrow.toml");
        let text = format!(
            "[services.site]\nkind = \"http\"\naddr = \"127.0.0.1:8080\"\ntoken_file = {:?}\n\
             max_rate = \"2MiB/s\"\nmax_streams = 3\n[services.dns]\nkind = \"udp\"\naddr = \"127.0.0.1:53\"\n",
            token.display().to_string()
        );
        std::fs::write(&config, text).unwrap();
        let got = from_file(&config).unwrap();
        assert_eq!(
            names(&got),
            vec![
                ("dns", ServiceKind::Udp, "127.0.0.1:53".into()),
                ("site", ServiceKind::Http, "127.0.0.1:8080".into()),
            ]
        );
        assert_eq!(got[1].token.as_deref(), Some("s3cret"));
        assert_eq!(got[1].meter.max_rate(), Some(2 << 20));
        assert_eq!(got[0].meter.max_rate(), None);
        assert_eq!(got[1].meter.limits().max_streams, 3);
        assert_eq!(got[0].meter.limits().max_streams, DEFAULT_MAX_STREAMS);
        std::fs::write(
            &config,
            "[services.x]\nkind = \"tcp\"\naddr = \"127.0.0.1:21\"\nmax_rate = \"fast\"\n",
        )
        .unwrap();
        let e = from_file(&config).unwrap_err().to_string();
        assert!(e.contains("max_rate") && e.contains("fast"), "{e}");
        assert!(got[0].token.is_none() && !got[0].info.protected);
        std::fs::write(
            &config,
            "[services.x]\nkind = \"ftp\"\naddr = \"127.0.0.1:21\"\n",
        )
        .unwrap();
        let e = from_file(&config).unwrap_err().to_string();
        assert!(e.contains("KIND is http, tcp or udp"), "{e}");
        std::fs::write(
            &config,
            "[services.x]\nkind = \"tcp\"\nadr = \"127.0.0.1:21\"\n",
        )
        .unwrap();
        let e = from_file(&config).unwrap_err().to_string();
        assert!(e.contains("adr"), "an unknown field is named: {e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let bad = |flags: &[&str]| {
            let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
            from_cli(None, ServiceKind::Http, &flags, None, Limits::default()).unwrap_err()
        };
        assert_eq!(rate("2MiB"), Ok(2 << 20));
        assert_eq!(rate("500KB/s"), Ok(500_000));
        assert!(rate("0").is_err() && rate("fast").is_err());
        assert_eq!(bad(&[]), SpecError::Nothing);
        assert!(
            matches!(bad(&["x=ftp:127.0.0.1:21"]), SpecError::Bad(_, why) if why.contains("KIND"))
        );
        assert!(
            matches!(bad(&["x=tcp:localhost"]), SpecError::Bad(_, why) if why.contains("ADDR"))
        );
        assert!(
            matches!(bad(&["a b=tcp:127.0.0.1:1"]), SpecError::Bad(_, why) if why.contains("name"))
        );
        assert!(
            matches!(bad(&["web"]), SpecError::Bad(..)),
            "a plain name needs ADDR"
        );
        assert_eq!(
            bad(&["a=tcp:127.0.0.1:1", "a=udp:127.0.0.1:2"]),
            SpecError::Twice("a".into())
        );
    }
}
