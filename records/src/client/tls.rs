//! rustls configuration of the kiosk's end of the kiosk↔HQ link (TLS 1.3 only, ring provider,
//! HQ's CA pinned, client certificate whose key may stay on a token through a signing
//! callback) and the PEM/provider helpers the HQ server configuration shares.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// TLS setup failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// PEM could not be read.
    #[error("cannot read PEM {what}: {reason}")]
    Pem {
        /// Which file/role.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider both ends use (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parse all certificates of a PEM bundle.
pub fn certs_from_pem(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Parse one private key from PEM.
pub fn key_from_pem(pem: &[u8], what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?
        .ok_or(TlsError::Pem {
            what,
            reason: "no private key found".into(),
        })
}

/// A root store holding only the certificates of `ca_pem` (pinning).
pub fn roots(ca_pem: &[u8]) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, "CA certificate")? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

/// Signs a TLS 1.3 CertificateVerify message: returns a DER ECDSA P-256/SHA-256 signature over
/// `message` (the callee hashes). Implement it over the kiosk's token.
pub type TlsSignCallback = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// The kiosk's TLS client key.
#[derive(Clone)]
pub enum ClientKey {
    /// A software key (PKCS#8 / SEC1 PEM); for demos and tests.
    Pem(Vec<u8>),
    /// An ECDSA P-256 key on a token, reached through a signing callback.
    EcdsaP256Callback(TlsSignCallback),
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::Pem(_) => f.write_str("ClientKey::Pem(..)"),
            ClientKey::EcdsaP256Callback(_) => f.write_str("ClientKey::EcdsaP256Callback(..)"),
        }
    }
}

#[derive(Clone)]
struct CallbackKey(TlsSignCallback);

impl std::fmt::Debug for CallbackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackKey")
    }
}

impl SigningKey for CallbackKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

impl Signer for CallbackKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        (self.0)(message).map_err(rustls::Error::General)
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Kiosk client config: TLS 1.3 only, HQ's CA pinned (no system roots), client certificate.
pub fn client_config(
    hq_ca_pem: &[u8],
    client_cert_chain_pem: &[u8],
    key: &ClientKey,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let chain = certs_from_pem(client_cert_chain_pem, "client certificate")?;
    let signing_key: Arc<dyn SigningKey> = match key {
        ClientKey::Pem(pem) => provider()
            .key_provider
            .load_private_key(key_from_pem(pem, "client key")?)
            .map_err(|e| TlsError::Config(e.to_string()))?,
        ClientKey::EcdsaP256Callback(cb) => Arc::new(CallbackKey(cb.clone())),
    };
    let certified = Arc::new(CertifiedKey::new(chain, signing_key));
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(hq_ca_pem)?)
        .with_client_cert_resolver(Arc::new(FixedClientCert(certified)));
    Ok(Arc::new(config))
}
