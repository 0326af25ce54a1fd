//! HTTPS for the listener: rustls (with the ring provider) from a PEM
//! certificate chain and key. Read once at start; a file that cannot be
//! read or used is a start error naming it.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    let named =
        |path: &std::path::Path, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| named(&config.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| named(&config.cert, &e))?;
    if certs.is_empty() {
        return Err(named(&config.cert, &"no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| named(&config.key, &e))?;
    let mut server = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {}: {e}",
                config.cert.display(),
                config.key.display()
            )
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
