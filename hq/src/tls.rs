//! rustls configuration of HQ's end of the kiosk↔HQ link: TLS 1.3 only, client certificates
//! required and verified against the kiosk CA, and extraction of the kiosk id (client
//! certificate CN). The kiosk's end and the shared PEM helpers are in [`records::client::tls`]
//! (re-exported here).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

pub use records::client::tls::{
    ClientKey, TlsError, TlsSignCallback, certs_from_pem, client_config, key_from_pem, provider,
    roots,
};

/// HQ server config: TLS 1.3 only, client certificates required and verified against the
/// kiosk CA.
pub fn server_config(
    kiosk_ca_pem: &[u8],
    server_cert_pem: &[u8],
    server_key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots(kiosk_ca_pem)?,
        provider(),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs_from_pem(server_cert_pem, "server certificate")?,
            key_from_pem(server_key_pem, "server key")?,
        )
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Common name of a DER certificate (the kiosk id).
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}
