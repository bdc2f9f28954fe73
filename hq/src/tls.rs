//! rustls configuration of HQ's end of the kiosk↔HQ link: TLS 1.3 only, client certificates
//! required and verified against the kiosk CA, and extraction of the kiosk id (client
//! certificate CN). The kiosk's end and the shared PEM helpers are in [`records::client::tls`]
//! (re-exported here).
//!
//! Kiosk certificates are checked by rustls' `WebPkiClientVerifier` (chain to the kiosk CA,
//! validity, and the kiosk CRL written by `hq-ingest revoke-kiosk`, reloaded whenever the file
//! changes) and, on top, must carry the clientAuth extended key usage: webpki accepts a
//! certificate without any EKU, and a subscriber's certificate (document signing) must never
//! pass as a kiosk's even where trust roots are shared.

/// The authenticated kiosk of a connection: the CN of its verified client certificate, put
/// into each request's extensions by [`crate::server`] and read by the ingest and CA handlers.
#[derive(Clone, Debug)]
pub struct KioskIdentity(pub String);

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

pub use records::client::tls::{
    ClientKey, TlsError, TlsSignCallback, certs_from_pem, client_config, key_from_pem, provider,
    roots,
};

/// HQ server config: TLS 1.3 only, client certificates required, verified against the kiosk
/// CA and required to carry clientAuth (no CRL: see [`server_config_with_crl`]).
pub fn server_config(
    kiosk_ca_pem: &[u8],
    server_cert_pem: &[u8],
    server_key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_with_crl(kiosk_ca_pem, server_cert_pem, server_key_pem, None)
}

/// [`server_config`], also refusing kiosk certificates listed on the CRL at `kiosk_crl` (DER
/// or PEM; read again whenever the file changes; none yet = nothing revoked).
pub fn server_config_with_crl(
    kiosk_ca_pem: &[u8],
    server_cert_pem: &[u8],
    server_key_pem: &[u8],
    kiosk_crl: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = KioskClientVerifier::new(roots(kiosk_ca_pem)?, kiosk_crl.map(Path::to_owned))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            certs_from_pem(server_cert_pem, "server certificate")?,
            key_from_pem(server_key_pem, "server key")?,
        )
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The enrollment listener's config ([`crate::enroll`]): TLS 1.3 with HQ's server
/// certificate and no client authentication (a kiosk enrolling has no certificate yet).
pub fn enroll_server_config(
    server_cert_pem: &[u8],
    server_key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(
            certs_from_pem(server_cert_pem, "server certificate")?,
            key_from_pem(server_key_pem, "server key")?,
        )
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Identity of the CRL file last loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// CRLs in a file: DER, or PEM `X509 CRL` blocks.
pub fn crls_from_file(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = std::fs::read(path)
        .map_err(|e| TlsError::Config(format!("kiosk CRL {}: {e}", path.display())))?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = pem::parse_many(&bytes)
        .map_err(|e| TlsError::Config(format!("kiosk CRL {}: {e}", path.display())))?
        .into_iter()
        .filter(|p| p.tag() == "X509 CRL")
        .map(|p| CertificateRevocationListDer::from(p.into_contents()))
        .collect();
    Ok(crls)
}

struct Loaded {
    stamp: Option<FileStamp>,
    inner: Arc<dyn ClientCertVerifier>,
}

/// rustls' webpki verifier over the kiosk CA and the kiosk CRL, rebuilt when the CRL file
/// changes, plus the clientAuth EKU requirement.
pub struct KioskClientVerifier {
    roots: Arc<rustls::RootCertStore>,
    crl_path: Option<PathBuf>,
    hints: Vec<DistinguishedName>,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for KioskClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KioskClientVerifier")
            .field("crl_path", &self.crl_path)
            .finish_non_exhaustive()
    }
}

impl KioskClientVerifier {
    /// Verifier over `roots`, with the CRL at `crl_path` when given.
    pub fn new(
        roots: Arc<rustls::RootCertStore>,
        crl_path: Option<PathBuf>,
    ) -> Result<Self, TlsError> {
        let stamp = crl_path.as_deref().and_then(stamp);
        let inner = Self::build(&roots, crl_path.as_deref(), stamp.is_some())?;
        Ok(Self {
            hints: inner.root_hint_subjects().to_vec(),
            roots,
            crl_path,
            loaded: RwLock::new(Loaded { stamp, inner }),
        })
    }

    fn build(
        roots: &Arc<rustls::RootCertStore>,
        crl_path: Option<&Path>,
        exists: bool,
    ) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        let mut builder =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
        if let (Some(path), true) = (crl_path, exists) {
            builder = builder
                .with_crls(crls_from_file(path)?)
                .only_check_end_entity_revocation()
                // Certificates from roots other than the one that signs the CRL (never
                // kiosks') have no known status; they still need clientAuth to pass.
                .allow_unknown_revocation_status();
        }
        builder.build().map_err(|e| TlsError::Config(e.to_string()))
    }

    /// The current verifier, rebuilt first if the CRL file changed. A CRL that cannot be read
    /// keeps the last good one (and is logged).
    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        let Some(path) = &self.crl_path else {
            return self
                .loaded
                .read()
                .map(|l| l.inner.clone())
                .unwrap_or_else(|p| p.into_inner().inner.clone());
        };
        let now = stamp(path);
        {
            let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
            if loaded.stamp == now {
                return loaded.inner.clone();
            }
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        if loaded.stamp != now {
            match Self::build(&self.roots, Some(path), now.is_some()) {
                Ok(inner) => {
                    tracing::info!(path = %path.display(), "kiosk CRL loaded");
                    *loaded = Loaded { stamp: now, inner };
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "kiosk CRL unusable; keeping the last one");
                }
            }
        }
        loaded.inner.clone()
    }
}

/// Whether a DER certificate carries the clientAuth extended key usage.
pub fn has_client_auth(cert: &CertificateDer<'_>) -> bool {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    matches!(parsed.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth)
}

impl ClientCertVerifier for KioskClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .current()
            .verify_client_cert(end_entity, intermediates, now)?;
        if !has_client_auth(end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurpose,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// Common name of a DER certificate (the kiosk id).
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}

/// Serial number of a DER certificate: lower-case hex of the INTEGER's content octets as
/// encoded (what a CRL entry must carry to match it).
pub fn serial_hex(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(hex::encode(parsed.raw_serial()))
}
