//! Whether an exposed service answers, checked as its clients would reach it: a TCP service
//! takes a connection; an `http` one also answers `GET /` with a status below 500 (a 404 is a
//! site that works; a 502 from a proxy whose app died is not). UDP has nothing to ask without
//! knowing its protocol, so a UDP service is never found down.

use std::net::SocketAddr;
use std::time::Duration;

use peer_core::channels::ServiceKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one check may take before the service counts as not answering.
const PATIENCE: Duration = Duration::from_secs(2);

/// The most of an HTTP answer read to find its status line.
const HEAD_MAX: usize = 1024;

/// Checks the service of `kind` at `addr`: `Err` says what is wrong.
pub async fn check(kind: ServiceKind, addr: SocketAddr) -> Result<(), String> {
    match tokio::time::timeout(PATIENCE, ask(kind, addr)).await {
        Ok(found) => found,
        Err(_) => Err(format!("no answer in {} s", PATIENCE.as_secs())),
    }
}

async fn ask(kind: ServiceKind, addr: SocketAddr) -> Result<(), String> {
    if kind == ServiceKind::Udp {
        return Ok(());
    }
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    if kind == ServiceKind::Tcp {
        return Ok(());
    }
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: burrow-health\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("asking {addr}: {e}"))?;
    let mut head = Vec::with_capacity(HEAD_MAX);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < HEAD_MAX {
        let n = tcp
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading {addr}'s answer: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_ok(&head)
}

/// Whether an HTTP answer beginning with `head` says the site works.
fn status_ok(head: &[u8]) -> Result<(), String> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let status = match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(status))) if v.starts_with("HTTP/") => status,
        _ => return Err("it does not answer HTTP".into()),
    };
    if status >= 500 {
        return Err(format!("GET / answers {status}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_answer_is_read_by_its_status() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n").is_ok());
        assert!(status_ok(b"HTTP/1.0 404 Not Found\r\nx").is_ok());
        assert_eq!(
            status_ok(b"HTTP/1.1 502 Bad Gateway\r\n"),
            Err("GET / answers 502".into())
        );
        assert!(status_ok(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(status_ok(b"").is_err());
    }

    #[tokio::test]
    async fn a_closed_port_is_down_and_a_listening_one_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(check(ServiceKind::Tcp, addr).await.is_ok());
        drop(listener);
        let e = check(ServiceKind::Tcp, addr).await.unwrap_err();
        assert!(e.contains("connecting"), "{e}");
        assert!(check(ServiceKind::Udp, addr).await.is_ok());
    }
}
