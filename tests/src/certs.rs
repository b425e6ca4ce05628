//! Certificates made at test time: a private CA and a server certificate it signed.

use std::path::PathBuf;

/// A private CA and a server certificate it signed for `names` (host names or IP addresses),
/// written as PEM files into a fresh folder: (folder, ca.pem, cert.pem, key.pem).
pub fn certificates(tag: &str, names: &[&str]) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = std::env::temp_dir().join(format!("burrow-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let params = CertificateParams::new(names).expect("params");
    let cert = params.signed_by(&key, &ca).expect("cert");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write pem");
        path
    };
    let ca_pem = write("ca.pem", ca.pem());
    let cert_pem = write("cert.pem", cert.pem());
    let key_pem = write("key.pem", key.serialize_pem());
    (dir, ca_pem, cert_pem, key_pem)
}
