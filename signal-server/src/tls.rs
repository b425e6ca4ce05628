//! HTTPS and WSS in the server itself (rustls).
//!
//! Browsers give service workers (**Open web**) and the clipboard (**Copy**) only to secure
//! contexts, so a public deployment must serve https. The main listener speaks TLS (the
//! WebSocket becomes `wss://`) with either
//!
//! * a certificate the operator has (`--tls-cert` / `--tls-key`), or
//! * one obtained and renewed automatically over ACME (`--acme-domain`, in the manner of Caddy
//!   and Tailscale's derper): `rustls-acme` answers the TLS-ALPN-01 challenge on the main
//!   listener itself, keeps the account and certificate in `--acme-cache`, and renews before
//!   expiry while the server runs;
//!
//! and `--http-redirect-listen` answers plain HTTP with a redirect to the same path over https.

use std::path::Path;
use std::sync::Arc;

use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The ALPN protocol of TLS-ALPN-01 challenge handshakes: answered, then closed.
pub const ACME_ALPN: &[u8] = b"acme-tls/1";

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("cannot read the certificate chain from {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file could not be read or holds no key.
    #[error("cannot read the private key from {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The ACME directory's CA file could not be used.
    #[error("cannot use {path} as the ACME directory's CA: {reason}")]
    AcmeCa {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The protocols offered in the TLS handshake: HTTP/1.1 only (pages fetch a handful of files,
/// and with HTTP/2 offered Chromium intermittently failed to load a module over it in the tests:
/// not yet understood, so not offered), plus the ACME challenge protocol when ACME is on.
fn alpn(acme: bool) -> Vec<Vec<u8>> {
    let mut protocols = vec![b"http/1.1".to_vec()];
    if acme {
        protocols.push(ACME_ALPN.to_vec());
    }
    protocols
}

/// A TLS acceptor for the PEM certificate chain and key at these paths.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn(false);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What `--acme-domain` needs.
pub struct AcmeOptions<'a> {
    /// The names to certify.
    pub domains: &'a [String],
    /// The ACME directory URL.
    pub directory: &'a str,
    /// Where the account and certificates are cached.
    pub cache: &'a Path,
    /// Account contacts.
    pub contact: &'a [String],
    /// An extra CA to trust for the directory's https.
    pub directory_ca: Option<&'a Path>,
}

/// The work that obtains and renews an ACME certificate: runs until dropped (the server owns
/// it, in its task set).
pub type Renewal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A TLS acceptor whose certificate comes from ACME, and the work that obtains and renews it.
pub fn acme(opts: AcmeOptions<'_>) -> Result<(TlsAcceptor, Renewal), TlsError> {
    use futures_util::StreamExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = opts.directory_ca {
        let ca_err = |reason: String| TlsError::AcmeCa {
            path: path.display().to_string(),
            reason,
        };
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))? {
            let cert = cert.map_err(|e| ca_err(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
        }
    }
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut state = rustls_acme::AcmeConfig::new_with_client_config(opts.domains, Arc::new(client))
        .contact(opts.contact)
        .cache(rustls_acme::caches::DirCache::new(opts.cache.to_path_buf()))
        .directory(opts.directory)
        .state();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(state.resolver());
    config.alpn_protocols = alpn(true);
    let domains = opts.domains.join(", ");
    let task = Box::pin(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => tracing::info!(%domains, "ACME: {ok:?}"),
                Err(e) => tracing::warn!(%domains, "ACME: {e}"),
            }
        }
    });
    Ok((TlsAcceptor::from(Arc::new(config)), task))
}

/// The plain-HTTP answer when TLS is on: a permanent redirect to the same host and path over
/// https on `https_port`.
pub async fn redirect(https_port: u16, headers: axum::http::HeaderMap, uri: Uri) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(crate::config::strip_port);
    let Some(host) = host.filter(|h| crate::config::is_plain_host(h)) else {
        return (StatusCode::BAD_REQUEST, "a Host header is needed\n").into_response();
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
        "this server speaks https\n",
    )
        .into_response()
}
