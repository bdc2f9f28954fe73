//! The CA that certifies applicants' UKEY keys, served on HQ's mTLS listener to authenticated
//! kiosks only:
//!
//! - EST (RFC 7030): `POST /.well-known/est/simpleenroll` and `/simplereenroll` (body: base64
//!   DER PKCS#10, answer: base64 PKCS#7 certs-only holding the issued certificate) and
//!   `GET /.well-known/est/cacerts`.
//! - Status changes EST lacks: `POST /ca/v1/certificates/{serial}/revoke` (JSON `{"reason"}`),
//!   `/hold`, `/release`, `GET /ca/v1/certificates/{serial}` (JSON status) and
//!   `GET /ca/v1/crl` (DER CRL of revoked and held certificates, signed on request).
//!
//! Requests are checked here (DER, PKCS#10 version, ECDSA-P256-SHA256 or SM2-with-SM3 with the
//! signer ID `1234567812345678`, the key's curve matching the signature algorithm) and their
//! signature verified with `records`' verifiers before anything is issued. Certificates are
//! built with `x509-cert`'s builder and signed by the issuing CA key ([`Issuer`]: P-256 or SM2,
//! PKCS#8 PEM); serials are 16 random bytes, positive. Issued certificates and their status
//! (good / held / revoked with a reason) live in PostgreSQL (`ca_certificates`), so any number
//! of hq-ingest instances can serve the CA. Enrolling the same request twice returns the same
//! certificate (a kiosk retrying after a lost answer gets no second certificate).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use const_oid::ObjectIdentifier;
use deadpool_postgres::Pool;
use der::asn1::OctetString;
use der::{Decode, Encode};
use records::{PublicVerifier, SM2_DEFAULT_DISTID, SignatureAlgorithm};
use sha2::Digest;
use spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::Certificate;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder, CrlBuilder};
use x509_cert::crl::RevokedCert;
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies, ExtendedKeyUsage, KeyUsage,
    KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::pkix::{CrlNumber, CrlReason};
use x509_cert::ext::{Extension as X509Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, Version};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use crate::ca_audit;
use crate::db::DbError;
use crate::policy::IssuancePolicy;
use crate::tls::KioskIdentity;

/// ecdsa-with-SHA256 (RFC 5758).
pub const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// SM2-with-SM3 (GM/T 0006).
pub const SM2_WITH_SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");
/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 (RFC 5480).
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// sm2p256v1 (GM/T 0006).
const SM2P256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");

/// Largest PKCS#10 request accepted (base64 body up to 4/3 of that plus line breaks).
pub const MAX_CSR_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = MAX_CSR_BYTES * 2;
/// Default validity of an issued certificate.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Largest serial accepted in a URL (20 octets, RFC 5280).
const MAX_SERIAL_HEX: usize = 40;

/// EST answer type of enroll and cacerts.
pub const PKCS7_CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";

/// Why the CA refused or failed; each has a stable code and an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The issuing key or certificate could not be loaded.
    #[error("CA {what} {path}: {reason}")]
    Load {
        /// Which file.
        what: &'static str,
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
    /// No client certificate on the connection.
    #[error("a kiosk client certificate is required")]
    Unauthenticated,
    /// The body is not a base64 DER PKCS#10 request.
    #[error("malformed certification request: {0}")]
    BadRequest(String),
    /// Key or signature algorithm not offered.
    #[error("unsupported algorithm: {0}")]
    Unsupported(String),
    /// The request's signature does not verify with its own key.
    #[error("the certification request's signature does not verify")]
    BadSignature,
    /// Not a serial number.
    #[error("a serial number is 1 to 40 hexadecimal digits")]
    BadSerial,
    /// Not a revocation reason this CA takes.
    #[error(
        "unknown revocation reason (keyCompromise, superseded, cessationOfOperation, affiliationChanged, unspecified)"
    )]
    BadReason,
    /// No such certificate.
    #[error("no certificate with this serial number")]
    UnknownCertificate,
    /// A revoked certificate cannot be held or released.
    #[error("the certificate is revoked")]
    Revoked,
    /// Re-enrollment without a current (unrevoked, unexpired) certificate of that subject.
    #[error("re-enrollment needs a current certificate with the same subject")]
    NoCurrentCertificate,
    /// The request's subject is outside the service's issuance policy (names the attribute).
    #[error("{0}")]
    SubjectOutsidePolicy(#[from] crate::policy::SubjectError),
    /// The issuance policy has no profile for the named service (or none was named).
    #[error("the issuance policy has no profile for service {0:?}")]
    UnknownService(String),
    /// The request does not name the holder (`Kioskd-Holder`: the keyed digest, 64 hex).
    #[error("the request must name the holder's keyed digest (Kioskd-Holder: 64 hex digits)")]
    HolderRequired,
    /// The requesting kiosk did not prove that the certificate is its holder's.
    #[error("the certificate does not belong to the holder this kiosk named")]
    NotHolder,
    /// The kiosk reached its issuance limit.
    #[error("issuance limit reached: {limit} certificates per {window_seconds} s for this kiosk")]
    RateLimited {
        /// Certificates per window.
        limit: u32,
        /// Window.
        window_seconds: u64,
    },
    /// The client certificate's CN is not a registered kiosk.
    #[error("this kiosk is not registered at HQ")]
    KioskNotRegistered,
    /// The kiosk was revoked at HQ.
    #[error("this kiosk is revoked at HQ")]
    KioskRevoked,
    /// Building or signing the certificate failed.
    #[error("issuing failed: {0}")]
    Issue(String),
    /// The database is unreachable or failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for CaError {
    fn from(e: tokio_postgres::Error) -> Self {
        CaError::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for CaError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        CaError::Db(e.into())
    }
}

impl CaError {
    /// Stable code (JSON `code` of error answers).
    pub fn code(&self) -> &'static str {
        match self {
            CaError::Load { .. } => "ca_misconfigured",
            CaError::Unauthenticated => "client_certificate_required",
            CaError::BadRequest(_) => "bad_csr",
            CaError::Unsupported(_) => "unsupported_algorithm",
            CaError::BadSignature => "bad_csr_signature",
            CaError::BadSerial => "bad_serial",
            CaError::BadReason => "bad_reason",
            CaError::UnknownCertificate => "unknown_certificate",
            CaError::Revoked => "certificate_revoked",
            CaError::NoCurrentCertificate => "no_current_certificate",
            CaError::SubjectOutsidePolicy(crate::policy::SubjectError::NotAllowed { .. }) => {
                "subject_outside_policy"
            }
            CaError::SubjectOutsidePolicy(crate::policy::SubjectError::Invalid { .. }) => {
                "subject_invalid"
            }
            CaError::UnknownService(_) => "unknown_service",
            CaError::HolderRequired => "holder_required",
            CaError::NotHolder => "not_holder",
            CaError::RateLimited { .. } => "issuance_rate_limited",
            CaError::KioskNotRegistered => "kiosk_not_registered",
            CaError::KioskRevoked => "kiosk_revoked",
            CaError::Issue(_) => "issue_failed",
            CaError::Db(_) => "ca_unavailable",
        }
    }

    /// HTTP status of the answer.
    pub fn http_status(&self) -> StatusCode {
        match self {
            CaError::Unauthenticated => StatusCode::UNAUTHORIZED,
            CaError::BadRequest(_)
            | CaError::Unsupported(_)
            | CaError::BadSignature
            | CaError::BadSerial
            | CaError::BadReason
            | CaError::SubjectOutsidePolicy(_)
            | CaError::UnknownService(_)
            | CaError::HolderRequired => StatusCode::BAD_REQUEST,
            CaError::NotHolder | CaError::KioskNotRegistered | CaError::KioskRevoked => {
                StatusCode::FORBIDDEN
            }
            CaError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            CaError::UnknownCertificate => StatusCode::NOT_FOUND,
            CaError::Revoked | CaError::NoCurrentCertificate => StatusCode::CONFLICT,
            CaError::Load { .. } | CaError::Issue(_) => StatusCode::INTERNAL_SERVER_ERROR,
            CaError::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for CaError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "CA request failed");
        }
        let mut body = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        if let CaError::SubjectOutsidePolicy(e) = &self {
            body["attribute"] = e.attribute().into();
        }
        let mut response = (status, axum::Json(body)).into_response();
        if let CaError::RateLimited { window_seconds, .. } = self
            && let Ok(v) = header::HeaderValue::from_str(&window_seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// Key algorithm of a verified request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256.
    P256,
    /// SM2.
    Sm2,
}

/// A PKCS#10 request whose signature verified with its own key.
#[derive(Clone, Debug)]
pub struct VerifiedCsr {
    /// Subject as requested (the kiosk already minimized it).
    pub subject: Name,
    /// DER of the subject.
    pub subject_der: Vec<u8>,
    /// The key to certify.
    pub public_key: SubjectPublicKeyInfoOwned,
    /// DER of the key.
    pub public_key_der: Vec<u8>,
    /// Key algorithm.
    pub kind: KeyKind,
    /// SHA-256 of the request's DER (the same request enrolled twice gets one certificate).
    pub digest: [u8; 32],
}

fn curve_of(spki: &SubjectPublicKeyInfoOwned) -> Result<ObjectIdentifier, CaError> {
    if spki.algorithm.oid != EC_PUBLIC_KEY {
        return Err(CaError::Unsupported(format!(
            "key algorithm {}",
            spki.algorithm.oid
        )));
    }
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or_else(|| CaError::Unsupported("EC key without a named curve".into()))
}

/// Decode a PKCS#10 request and verify its signature (ECDSA P-256 with SHA-256, or SM2 with SM3
/// and the signer ID `1234567812345678`).
pub fn verify_csr(der_bytes: &[u8]) -> Result<VerifiedCsr, CaError> {
    if der_bytes.len() > MAX_CSR_BYTES {
        return Err(CaError::BadRequest(format!(
            "larger than {MAX_CSR_BYTES} bytes"
        )));
    }
    let request = CertReq::from_der(der_bytes).map_err(|e| CaError::BadRequest(e.to_string()))?;
    if request.info.version != Version::V1 {
        return Err(CaError::BadRequest("version must be 1 (v1)".into()));
    }
    let curve = curve_of(&request.info.public_key)?;
    let (kind, algorithm, distid) = match (request.algorithm.oid, curve) {
        (ECDSA_WITH_SHA256, SECP256R1) => {
            (KeyKind::P256, SignatureAlgorithm::EcdsaP256Sha256, None)
        }
        (SM2_WITH_SM3, SM2P256V1) => (
            KeyKind::Sm2,
            SignatureAlgorithm::Sm2Sm3,
            Some(SM2_DEFAULT_DISTID.to_owned()),
        ),
        (sig, curve) => {
            return Err(CaError::Unsupported(format!(
                "signature {sig} with a key on curve {curve} (supported: ecdsa-with-SHA256 on P-256, SM2-with-SM3 on SM2)"
            )));
        }
    };
    if request.info.subject.is_empty() {
        return Err(CaError::BadRequest("empty subject".into()));
    }
    let point = request
        .info
        .public_key
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| CaError::BadRequest("public key is not whole bytes".into()))?;
    let signature_der = request.signature.as_bytes().ok_or(CaError::BadSignature)?;
    let raw = records::signing::raw_signature_from_der(algorithm, signature_der)
        .map_err(|_| CaError::BadSignature)?;
    let message = request
        .info
        .to_der()
        .map_err(|e| CaError::BadRequest(e.to_string()))?;
    let verifier = PublicVerifier {
        algorithm,
        sec1: point.to_vec(),
        distid,
    };
    verifier
        .verify(&message, &raw)
        .map_err(|_| CaError::BadSignature)?;
    let encode = |e: der::Error| CaError::BadRequest(e.to_string());
    Ok(VerifiedCsr {
        subject_der: request.info.subject.to_der().map_err(encode)?,
        public_key_der: request.info.public_key.to_der().map_err(encode)?,
        subject: request.info.subject,
        public_key: request.info.public_key,
        kind,
        digest: sha2::Sha256::digest(der_bytes).into(),
    })
}

// ---------------------------------------------------------------------------------------------
// Issuing

/// SM2 signer for `x509-cert`'s builder: X.509 carries SM2 signatures DER-encoded
/// (`SEQUENCE { r, s }`, GM/T 0015), while `sm2`'s key signs raw `r ‖ s`.
struct Sm2DerSigner(sm2::dsa::SigningKey);

impl signature::Keypair for Sm2DerSigner {
    type VerifyingKey = sm2::dsa::VerifyingKey;

    fn verifying_key(&self) -> Self::VerifyingKey {
        self.0.verifying_key().clone()
    }
}

impl spki::DynSignatureAlgorithmIdentifier for Sm2DerSigner {
    fn signature_algorithm_identifier(&self) -> spki::Result<spki::AlgorithmIdentifierOwned> {
        Ok(spki::AlgorithmIdentifierOwned {
            oid: SM2_WITH_SM3,
            parameters: None,
        })
    }
}

impl signature::Signer<sm2::dsa::DerSignature> for Sm2DerSigner {
    fn try_sign(&self, message: &[u8]) -> Result<sm2::dsa::DerSignature, signature::Error> {
        let raw: sm2::dsa::Signature = self.0.try_sign(message)?;
        Ok(raw.into())
    }
}

enum IssuerKey {
    P256(p256::ecdsa::SigningKey),
    Sm2(Sm2DerSigner),
}

/// The issuing CA: its key (P-256 or SM2) and certificate.
pub struct Issuer {
    key: IssuerKey,
    certificate: Certificate,
    certificate_der: Vec<u8>,
    key_identifier: Vec<u8>,
    validity: Duration,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("algorithm", &self.algorithm())
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// What the issued certificate carries besides subject and key, all from the service's
/// issuance profile ([`crate::policy::Profile`]): not a CA, the profile's key usage, extended
/// key usage (never clientAuth) and certificate policy, key identifiers. A kiosk's own TLS
/// client certificate ([`Issuer::issue_kiosk_client`], signed by the kiosk CA, never by the
/// issuing CA of applicants) has clientAuth and no certificate policy.
struct SubscriberProfile {
    issuer: Name,
    subject: Name,
    authority_key_identifier: Vec<u8>,
    key_usage: Vec<KeyUsages>,
    extended_key_usage: Vec<ObjectIdentifier>,
    policy_oid: Option<ObjectIdentifier>,
}

impl BuilderProfile for SubscriberProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    // Each extension is encoded against those before it (duplicates are refused).
    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<X509Extension>> {
        let mut extensions: Vec<X509Extension> = Vec::new();
        extensions.push(
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            }
            .to_extension(tbs.subject(), &extensions)?,
        );
        let mut bits = self.key_usage.iter().copied();
        let first = bits.next().unwrap_or(KeyUsages::DigitalSignature);
        let usage = bits.fold(KeyUsage(first.into()), |u, b| KeyUsage(u.0 | b));
        extensions.push(usage.to_extension(tbs.subject(), &extensions)?);
        extensions.push(
            ExtendedKeyUsage(self.extended_key_usage.clone())
                .to_extension(tbs.subject(), &extensions)?,
        );
        if let Some(policy_oid) = self.policy_oid {
            extensions.push(
                CertificatePolicies(vec![PolicyInformation {
                    policy_identifier: policy_oid,
                    policy_qualifiers: None,
                }])
                .to_extension(tbs.subject(), &extensions)?,
            );
        }
        extensions
            .push(SubjectKeyIdentifier::try_from(spk)?.to_extension(tbs.subject(), &extensions)?);
        extensions.push(
            AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(self.authority_key_identifier.clone())?),
                ..Default::default()
            }
            .to_extension(tbs.subject(), &extensions)?,
        );
        Ok(extensions)
    }
}

fn pem_contents(pem_text: &str, label: &str) -> Result<Vec<u8>, String> {
    let parsed = pem::parse(pem_text).map_err(|e| e.to_string())?;
    if parsed.tag() != label {
        return Err(format!("expected {label}, found {}", parsed.tag()));
    }
    Ok(parsed.into_contents())
}

impl Issuer {
    /// Load the CA certificate and its PKCS#8 private key (both PEM) from files.
    pub fn load(cert: &Path, key: &Path, validity: Duration) -> Result<Self, CaError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read_to_string(path).map_err(|e| CaError::Load {
                what,
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        let (cert_pem, key_pem) = (read("certificate", cert)?, read("key", key)?);
        Self::from_pem(&cert_pem, &key_pem, validity).map_err(|e| match e {
            CaError::Load { what, reason, .. } => CaError::Load {
                what,
                path: if what == "key" { key } else { cert }.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// From PEM text: a `CERTIFICATE` and a PKCS#8 `PRIVATE KEY` (P-256 or SM2) that belongs to
    /// it.
    pub fn from_pem(cert_pem: &str, key_pem: &str, validity: Duration) -> Result<Self, CaError> {
        let load = |what: &'static str, reason: String| CaError::Load {
            what,
            path: String::new(),
            reason,
        };
        let certificate_der =
            pem_contents(cert_pem, "CERTIFICATE").map_err(|r| load("certificate", r))?;
        let certificate = Certificate::from_der(&certificate_der)
            .map_err(|e| load("certificate", e.to_string()))?;
        use p256::pkcs8::DecodePrivateKey;
        let key = match p256::ecdsa::SigningKey::from_pkcs8_pem(key_pem) {
            Ok(k) => IssuerKey::P256(k),
            Err(_) => {
                let secret = sm2::SecretKey::from_pkcs8_pem(key_pem)
                    .map_err(|_| load("key", "not a PKCS#8 P-256 or SM2 private key".into()))?;
                let signing = sm2::dsa::SigningKey::new(SM2_DEFAULT_DISTID, &secret)
                    .map_err(|e| load("key", e.to_string()))?;
                IssuerKey::Sm2(Sm2DerSigner(signing))
            }
        };
        let public_key_der =
            match &key {
                IssuerKey::P256(k) => spki::EncodePublicKey::to_public_key_der(k.verifying_key())
                    .map(|d| d.into_vec()),
                IssuerKey::Sm2(k) => spki::EncodePublicKey::to_public_key_der(k.0.verifying_key())
                    .map(|d| d.into_vec()),
            }
            .map_err(|e| load("key", e.to_string()))?;
        let tbs = certificate.tbs_certificate();
        let certificate_error = |e: der::Error| load("certificate", e.to_string());
        if tbs
            .subject_public_key_info()
            .to_der()
            .map_err(certificate_error)?
            != public_key_der
        {
            return Err(load("key", "does not belong to the CA certificate".into()));
        }
        let key_identifier = match tbs
            .get_extension::<SubjectKeyIdentifier>()
            .map_err(certificate_error)?
        {
            Some((_, ski)) => ski.0.as_bytes().to_vec(),
            None => SubjectKeyIdentifier::try_from(der::referenced::OwnedToRef::owned_to_ref(
                tbs.subject_public_key_info(),
            ))
            .map_err(certificate_error)?
            .0
            .as_bytes()
            .to_vec(),
        };
        Ok(Self {
            key,
            certificate,
            certificate_der,
            key_identifier,
            validity,
        })
    }

    /// DER of the CA certificate.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// `"P-256"` or `"SM2"`: what the CA signs with.
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            IssuerKey::P256(_) => "P-256",
            IssuerKey::Sm2(_) => "SM2",
        }
    }

    /// Issue a certificate for a verified request under `profile`, with `subject` (built by
    /// [`crate::policy::Profile::check_subject`]); `serial` is used as given (see
    /// [`random_serial`]). Returns the certificate's DER.
    pub fn issue(
        &self,
        csr: &VerifiedCsr,
        subject: &Name,
        profile: &crate::policy::Profile,
        serial: &[u8],
    ) -> Result<Vec<u8>, CaError> {
        let built = SubscriberProfile {
            issuer: self.certificate.tbs_certificate().subject().clone(),
            subject: subject.clone(),
            authority_key_identifier: self.key_identifier.clone(),
            key_usage: profile.key_usage.clone(),
            extended_key_usage: profile.extended_key_usage.clone(),
            policy_oid: Some(profile.policy_oid),
        };
        // The profile's validity, capped by the issuer's (`serve --ca-validity-days`).
        self.build(csr, built, profile.validity.min(self.validity), serial)
    }

    /// Issue a kiosk's TLS client certificate (this issuer being the kiosk CA that HQ's mTLS
    /// listener trusts): subject `CN=<kiosk_id>`, digitalSignature, clientAuth, valid for the
    /// issuer's validity. `kiosk_id` must already be checked ([`crate::enroll::valid_kiosk_id`]).
    pub fn issue_kiosk_client(
        &self,
        csr: &VerifiedCsr,
        kiosk_id: &str,
        serial: &[u8],
    ) -> Result<Vec<u8>, CaError> {
        use std::str::FromStr as _;
        let subject = Name::from_str(&format!("CN={kiosk_id}"))
            .map_err(|e| CaError::Issue(format!("kiosk subject: {e}")))?;
        let built = SubscriberProfile {
            issuer: self.certificate.tbs_certificate().subject().clone(),
            subject,
            authority_key_identifier: self.key_identifier.clone(),
            key_usage: vec![KeyUsages::DigitalSignature],
            extended_key_usage: vec![crate::policy::EKU_CLIENT_AUTH],
            policy_oid: None,
        };
        self.build(csr, built, self.validity, serial)
    }

    fn build(
        &self,
        csr: &VerifiedCsr,
        profile: SubscriberProfile,
        lifetime: Duration,
        serial: &[u8],
    ) -> Result<Vec<u8>, CaError> {
        let issue = |e: &dyn std::fmt::Display| CaError::Issue(e.to_string());
        let now = SystemTime::now();
        // A little slack for clocks of relying parties that run behind.
        let not_before = now.checked_sub(Duration::from_secs(300)).unwrap_or(now);
        let not_after = now
            .checked_add(lifetime)
            .ok_or_else(|| issue(&"validity"))?;
        let validity = Validity::new(
            Time::try_from(not_before).map_err(|e| issue(&e))?,
            Time::try_from(not_after).map_err(|e| issue(&e))?,
        );
        let builder = CertificateBuilder::new(
            profile,
            SerialNumber::new(serial).map_err(|e| issue(&e))?,
            validity,
            csr.public_key.clone(),
        )
        .map_err(|e| issue(&e))?;
        let certificate = match &self.key {
            IssuerKey::P256(k) => builder.build::<_, p256::ecdsa::DerSignature>(k),
            IssuerKey::Sm2(k) => builder.build::<_, sm2::dsa::DerSignature>(k),
        }
        .map_err(|e| issue(&e))?;
        certificate.to_der().map_err(|e| issue(&e))
    }
}

impl Issuer {
    /// A CRL (DER) listing `entries` (`(serial, revocation time, reason)`), valid for a day.
    pub fn crl(&self, entries: &[(Vec<u8>, SystemTime, CrlReason)]) -> Result<Vec<u8>, CaError> {
        let issue = |e: &dyn std::fmt::Display| CaError::Issue(e.to_string());
        let now = SystemTime::now();
        // Seconds since the epoch: grows with every CRL whichever HQ instance signs it.
        let number = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|e| issue(&e))?
            .as_secs();
        let issuer_name = self.certificate.tbs_certificate().subject().clone();
        let mut revoked: Vec<RevokedCert> = Vec::with_capacity(entries.len());
        for (serial, at, reason) in entries {
            revoked.push(RevokedCert {
                serial_number: SerialNumber::new(serial).map_err(|e| issue(&e))?,
                revocation_date: Time::try_from(*at).map_err(|e| issue(&e))?,
                crl_entry_extensions: Some(vec![
                    reason
                        .to_extension(&issuer_name, &[])
                        .map_err(|e| issue(&e))?,
                ]),
            });
        }
        let next = now
            .checked_add(Duration::from_secs(24 * 3600))
            .ok_or_else(|| issue(&"next update"))?;
        let builder = CrlBuilder::new(
            &self.certificate,
            CrlNumber::try_from(number).map_err(|e| issue(&e))?,
        )
        .map_err(|e| issue(&e))?
        .with_next_update(Some(Time::try_from(next).map_err(|e| issue(&e))?))
        .with_certificates(revoked.into_iter());
        let crl = match &self.key {
            IssuerKey::P256(k) => builder.build::<_, p256::ecdsa::DerSignature>(k),
            IssuerKey::Sm2(k) => builder.build::<_, sm2::dsa::DerSignature>(k),
        }
        .map_err(|e| issue(&e))?;
        crl.to_der().map_err(|e| issue(&e))
    }
}

/// The CRL reason of an RFC 5280 reason name (`unspecified` when unknown).
pub fn crl_reason(name: Option<&str>) -> CrlReason {
    match name {
        Some("keyCompromise") => CrlReason::KeyCompromise,
        Some("affiliationChanged") => CrlReason::AffiliationChanged,
        Some("superseded") => CrlReason::Superseded,
        Some("cessationOfOperation") => CrlReason::CessationOfOperation,
        Some("certificateHold") => CrlReason::CertificateHold,
        _ => CrlReason::Unspecified,
    }
}

/// 16 random bytes, first octet in 0x40..=0x7f: positive, always 16 octets in DER.
pub fn random_serial() -> Result<[u8; 16], CaError> {
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(|e| CaError::Issue(format!("random serial: {e}")))?;
    serial[0] = (serial[0] & 0x3f) | 0x40;
    Ok(serial)
}

/// A base64 PKCS#7 certs-only message holding `certificates` (DER), as EST answers.
pub fn certs_only_base64(certificates: &[&[u8]]) -> Result<String, CaError> {
    let issue = |e: der::Error| CaError::Issue(e.to_string());
    let path = certificates
        .iter()
        .map(|der| Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(issue)?;
    let info = cms::content_info::ContentInfo::try_from(path).map_err(issue)?;
    Ok(BASE64.encode(info.to_der().map_err(issue)?))
}

// ---------------------------------------------------------------------------------------------
// Status

/// Status of an issued certificate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CertificateStatus {
    /// Lower-case hex serial.
    pub serial: String,
    /// `good`, `held` or `revoked`.
    pub status: String,
    /// Revocation reason (revoked) or `certificateHold` (held).
    pub reason: Option<String>,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Milliseconds since the Unix epoch.
    pub not_after_ms: i64,
    /// When the status last changed (RFC 3339), if it did.
    pub status_changed_at: Option<String>,
    /// Serial of the certificate this one re-enrolled, if any.
    pub replaces: Option<String>,
}

/// Revocation reasons taken (RFC 5280 names).
pub const REVOCATION_REASONS: &[&str] = &[
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
];

/// A status change.
#[derive(Clone, Copy, Debug)]
pub enum StatusChange<'a> {
    /// Revoke for a reason from [`REVOCATION_REASONS`] (final).
    Revoke(&'a str),
    /// Suspend (certificate hold).
    Hold,
    /// Resume a held certificate.
    Release,
}

impl StatusChange<'_> {
    /// `revoke`, `hold` or `release` (the audit's action).
    pub fn action(&self) -> &'static str {
        match self {
            StatusChange::Revoke(_) => "revoke",
            StatusChange::Hold => "hold",
            StatusChange::Release => "release",
        }
    }
}

/// Check a serial from a URL (1..=40 hex digits) and lower-case it.
pub fn normalize_serial(serial: &str) -> Result<String, CaError> {
    if serial.is_empty()
        || serial.len() > MAX_SERIAL_HEX
        || !serial.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(CaError::BadSerial);
    }
    Ok(serial.to_ascii_lowercase())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn offset_time(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

// ---------------------------------------------------------------------------------------------
// Service

/// The CA service: issuer, issuance policy, database, routes.
#[derive(Clone)]
pub struct CaService {
    issuer: Arc<Issuer>,
    policy: Arc<IssuancePolicy>,
    pool: Pool,
    cacerts: Arc<String>,
}

const STATUS_COLUMNS: &str = "serial_hex, status, revocation_reason, not_before, not_after, \
     status_changed_at, replaces";

fn status_from_row(row: &tokio_postgres::Row) -> CertificateStatus {
    let not_after: time::OffsetDateTime = row.get(4);
    CertificateStatus {
        serial: row.get(0),
        status: row.get(1),
        reason: row.get(2),
        not_before: rfc3339(row.get(3)),
        not_after: rfc3339(not_after),
        not_after_ms: (not_after.unix_timestamp_nanos() / 1_000_000) as i64,
        status_changed_at: row.get::<_, Option<time::OffsetDateTime>>(5).map(rfc3339),
        replaces: row.get(6),
    }
}

/// Who asks the CA for something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A kiosk (its client certificate's CN); must be registered and not revoked, and must
    /// prove the holder for status changes.
    Kiosk(String),
    /// An HQ operator (command line on HQ's side): may change any certificate's status.
    HqStaff(String),
}

impl Actor {
    fn label(&self) -> String {
        match self {
            Actor::Kiosk(k) => format!("kiosk:{k}"),
            Actor::HqStaff(s) => format!("hq-staff:{s}"),
        }
    }
}

/// What the kiosk states with an enrollment (EST has no place for it: HTTP headers
/// `Kioskd-Service`, `Kioskd-Holder`, `Kioskd-Application`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnrollContext {
    /// The kiosk service the certificate is for (selects the issuance profile; a
    /// re-enrollment keeps the service of the certificate it replaces).
    pub service: Option<String>,
    /// The holder's keyed digest (32 bytes; its first 16 are the subject's `serialNumber`).
    pub holder: Option<[u8; 32]>,
    /// The kiosk's application (session) id: the synced application record and certificate
    /// event carry the serial, so HQ joins them on (kiosk, serial) and finds this id too.
    pub application: Option<String>,
}

/// Header naming the service of an enrollment.
pub const SERVICE_HEADER: &str = "kioskd-service";
/// Header carrying the holder's keyed digest (64 hex digits).
pub const HOLDER_HEADER: &str = "kioskd-holder";
/// Header carrying the kiosk's application id.
pub const APPLICATION_HEADER: &str = "kioskd-application";

/// The holder's keyed digest from 64 hex digits.
pub fn parse_holder(text: &str) -> Result<[u8; 32], CaError> {
    let bytes = hex::decode(text.trim()).map_err(|_| CaError::HolderRequired)?;
    bytes.try_into().map_err(|_| CaError::HolderRequired)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn holder_of(headers: &HeaderMap) -> Result<Option<[u8; 32]>, CaError> {
    header_text(headers, HOLDER_HEADER)
        .map(|h| parse_holder(&h))
        .transpose()
}

impl EnrollContext {
    fn from_headers(headers: &HeaderMap) -> Result<Self, CaError> {
        let application = header_text(headers, APPLICATION_HEADER);
        if application
            .as_deref()
            .is_some_and(|a| a.len() > 128 || !a.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(CaError::BadRequest(
                "Kioskd-Application is 1 to 128 printable ASCII characters".into(),
            ));
        }
        Ok(Self {
            service: header_text(headers, SERVICE_HEADER),
            holder: holder_of(headers)?,
            application,
        })
    }
}

/// Advisory lock namespace of the per-kiosk issuance counter.
const RATE_LOCK_NAMESPACE: i64 = 7_270_018;

impl CaService {
    /// A CA over `pool` (migrated) issuing with `issuer` under the embedded issuance policy.
    pub fn new(issuer: Issuer, pool: Pool) -> Result<Self, CaError> {
        Self::with_policy(issuer, pool, IssuancePolicy::embedded())
    }

    /// A CA issuing under `policy`.
    pub fn with_policy(
        issuer: Issuer,
        pool: Pool,
        policy: IssuancePolicy,
    ) -> Result<Self, CaError> {
        let cacerts = certs_only_base64(&[issuer.certificate_der()])?;
        Ok(Self {
            issuer: Arc::new(issuer),
            policy: Arc::new(policy),
            pool,
            cacerts: Arc::new(cacerts),
        })
    }

    /// The issuer.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The issuance policy.
    pub fn policy(&self) -> &IssuancePolicy {
        &self.policy
    }

    /// A kiosk may use the CA only when registered at HQ and not revoked.
    async fn check_actor(&self, actor: &Actor) -> Result<(), CaError> {
        let Actor::Kiosk(kiosk) = actor else {
            return Ok(());
        };
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT revoked_at IS NOT NULL FROM kiosks WHERE kiosk_id = $1",
                &[kiosk],
            )
            .await?
            .ok_or(CaError::KioskNotRegistered)?;
        if row.get::<_, bool>(0) {
            return Err(CaError::KioskRevoked);
        }
        Ok(())
    }

    /// Record a refusal in HQ's CA audit (its own transaction: the refused action's rolled
    /// back). Database failures are not audited (nothing was done, and the audit is down too).
    pub async fn audit_refusal(
        &self,
        actor: &Actor,
        action: &str,
        target: Option<&str>,
        error: &CaError,
    ) {
        if matches!(error, CaError::Db(_)) {
            return;
        }
        let mut detail = serde_json::json!({ "message": error.to_string() });
        if let CaError::SubjectOutsidePolicy(e) = error {
            detail["attribute"] = e.attribute().into();
        }
        let entry = ca_audit::Entry {
            actor: &actor.label(),
            action,
            target,
            outcome: ca_audit::Outcome::Refused,
            code: Some(error.code()),
            detail,
        };
        let written = async {
            let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
            ca_audit::append_alone(&mut client, &entry)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = written {
            tracing::error!(error = %e, action, code = error.code(), "CA refusal not audited");
        }
        tracing::info!(actor = %actor.label(), action, code = error.code(), "CA request refused");
    }

    /// Verify `csr_der`, check it against the issuance policy and issue (or return the
    /// certificate already issued for this very request). `reenroll`: the holder must hold a
    /// current certificate, which the new one is recorded as replacing (it stays valid; revoke
    /// it as `superseded` if wanted) and whose service it keeps.
    pub async fn enroll(
        &self,
        kiosk: &str,
        csr_der: &[u8],
        reenroll: bool,
        context: &EnrollContext,
    ) -> Result<Vec<u8>, CaError> {
        self.check_actor(&Actor::Kiosk(kiosk.to_owned())).await?;
        let csr = verify_csr(csr_der)?;
        let holder = context.holder.ok_or(CaError::HolderRequired)?;
        let mut client = self.pool.get().await?;
        // A re-enrollment replaces the holder's current certificate; its idempotency key names
        // that certificate too, so a retry gets the same answer while a later renewal with the
        // same key (ECDSA CSRs may be byte-identical) gets a new certificate.
        let (replaces, service): (Option<String>, String) = if reenroll {
            let row = client
                .query_opt(
                    "SELECT serial_hex, service FROM ca_certificates
                     WHERE holder_digest = $1 AND status <> 'revoked' AND not_after > now()
                     ORDER BY issued_at DESC LIMIT 1",
                    &[&holder.as_slice()],
                )
                .await?
                .ok_or(CaError::NoCurrentCertificate)?;
            let service: Option<String> = row.get(1);
            (
                Some(row.get(0)),
                service.ok_or_else(|| CaError::UnknownService(String::new()))?,
            )
        } else {
            (
                None,
                context
                    .service
                    .clone()
                    .ok_or_else(|| CaError::UnknownService(String::new()))?,
            )
        };
        let profile = self
            .policy
            .profile(&service)
            .ok_or_else(|| CaError::UnknownService(service.clone()))?
            .clone();
        let subject = profile.check_subject(&csr.subject, &holder)?;
        let digest = match &replaces {
            None => csr.digest.to_vec(),
            Some(old) => {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                h.update(b"reenroll\0");
                h.update(csr.digest);
                h.update(old.as_bytes());
                h.finalize().to_vec()
            }
        };
        if let Some(row) = client
            .query_opt(
                "SELECT certificate FROM ca_certificates WHERE csr_digest = $1",
                &[&digest],
            )
            .await?
        {
            return Ok(row.get(0));
        }
        let tx = client.transaction().await?;
        // The per-kiosk limit: one lock per kiosk (shared by every HQ replica) held until this
        // transaction ends, then a count of what the kiosk was issued within the window.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1::integer, hashtext($2))",
            &[&(RATE_LOCK_NAMESPACE as i32), &kiosk],
        )
        .await?;
        let limit = self.policy.rate_limit;
        let window_seconds = limit.window.as_secs_f64();
        let issued: i64 = tx
            .query_one(
                "SELECT count(*) FROM ca_certificates
                 WHERE issued_by_kiosk = $1 AND issued_at > now() - make_interval(secs => $2)",
                &[&kiosk, &window_seconds],
            )
            .await?
            .get(0);
        if issued >= i64::from(limit.per_kiosk) {
            return Err(CaError::RateLimited {
                limit: limit.per_kiosk,
                window_seconds: limit.window.as_secs(),
            });
        }
        let serial = random_serial()?;
        let serial_hex = hex::encode(serial);
        let issuer = self.issuer.clone();
        let certificate = tokio::task::spawn_blocking({
            let csr = csr.clone();
            let subject = subject.clone();
            let profile = profile.clone();
            move || issuer.issue(&csr, &subject, &profile, &serial)
        })
        .await
        .map_err(|e| CaError::Issue(e.to_string()))??;
        let (_, parsed) = x509_parser::parse_x509_certificate(&certificate)
            .map_err(|e| CaError::Issue(e.to_string()))?;
        let not_before = offset_time(parsed.validity().not_before.to_datetime().into());
        let not_after = offset_time(parsed.validity().not_after.to_datetime().into());
        let subject_der = subject
            .to_der()
            .map_err(|e| CaError::Issue(e.to_string()))?;
        let inserted = tx
            .execute(
                "INSERT INTO ca_certificates (serial_hex, csr_digest, subject_der, public_key_der,
                     certificate, not_before, not_after, status, replaces, issued_by_kiosk,
                     service, holder_digest, application_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'good', $8, $9, $10, $11, $12)
                 ON CONFLICT (csr_digest) DO NOTHING",
                &[
                    &serial_hex,
                    &digest,
                    &subject_der,
                    &csr.public_key_der,
                    &certificate,
                    &not_before,
                    &not_after,
                    &replaces,
                    &kiosk,
                    &service,
                    &holder.as_slice(),
                    &context.application,
                ],
            )
            .await?;
        if inserted == 0 {
            // The same request was issued concurrently: hand out that certificate.
            let row = tx
                .query_one(
                    "SELECT certificate FROM ca_certificates WHERE csr_digest = $1",
                    &[&digest],
                )
                .await?;
            return Ok(row.get(0));
        }
        ca_audit::append(
            &tx,
            &ca_audit::Entry {
                actor: &Actor::Kiosk(kiosk.to_owned()).label(),
                action: if reenroll { "reenroll" } else { "enroll" },
                target: Some(&serial_hex),
                outcome: ca_audit::Outcome::Done,
                code: None,
                detail: serde_json::json!({
                    "service": service,
                    "policy_version": self.policy.version,
                    "policy_oid": profile.policy_oid.to_string(),
                    "application": context.application,
                    "replaces": replaces,
                    "key": format!("{:?}", csr.kind),
                }),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            serial = %serial_hex,
            kiosk,
            key = ?csr.kind,
            reenroll,
            service = %service,
            "certificate issued"
        );
        Ok(certificate)
    }

    /// The current CRL (DER): revoked and held certificates that have not expired.
    pub async fn crl(&self) -> Result<Vec<u8>, CaError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT serial_hex, status_changed_at, revocation_reason FROM ca_certificates
                 WHERE status IN ('revoked', 'held') AND not_after > now()
                 ORDER BY serial_hex",
                &[],
            )
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let serial = hex::decode(row.get::<_, &str>(0))
                .map_err(|e| CaError::Issue(format!("stored serial: {e}")))?;
            let at: Option<time::OffsetDateTime> = row.get(1);
            let at = at.map_or_else(SystemTime::now, SystemTime::from);
            entries.push((serial, at, crl_reason(row.get(2))));
        }
        let issuer = self.issuer.clone();
        tokio::task::spawn_blocking(move || issuer.crl(&entries))
            .await
            .map_err(|e| CaError::Issue(e.to_string()))?
    }

    /// Status of a certificate.
    pub async fn status(&self, serial: &str) -> Result<CertificateStatus, CaError> {
        let serial = normalize_serial(serial)?;
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {STATUS_COLUMNS} FROM ca_certificates WHERE serial_hex = $1"),
                &[&serial],
            )
            .await?
            .ok_or(CaError::UnknownCertificate)?;
        Ok(status_from_row(&row))
    }

    /// Revoke, hold or release. A kiosk must name the certificate's holder (`holder`: the
    /// keyed digest recorded when it was issued); HQ staff may act on any certificate.
    /// Revoking a revoked certificate and holding a held one (or releasing a good one) change
    /// nothing and succeed, so a retried call is harmless.
    pub async fn change_status(
        &self,
        actor: &Actor,
        serial: &str,
        change: StatusChange<'_>,
        holder: Option<&[u8; 32]>,
    ) -> Result<CertificateStatus, CaError> {
        self.check_actor(actor).await?;
        let serial = normalize_serial(serial)?;
        if let StatusChange::Revoke(reason) = change
            && !REVOCATION_REASONS.contains(&reason)
        {
            return Err(CaError::BadReason);
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT status, holder_digest FROM ca_certificates WHERE serial_hex = $1
                 FOR UPDATE",
                &[&serial],
            )
            .await?
            .ok_or(CaError::UnknownCertificate)?;
        let current: String = row.get(0);
        let stored_holder: Option<Vec<u8>> = row.get(1);
        if let Actor::Kiosk(_) = actor {
            use subtle::ConstantTimeEq;
            let proven = match (holder, stored_holder.as_deref()) {
                (Some(given), Some(stored)) if stored.len() == 32 => {
                    bool::from(given.as_slice().ct_eq(stored))
                }
                _ => false,
            };
            if !proven {
                return Err(CaError::NotHolder);
            }
        }
        let next: Option<(&str, Option<&str>)> = match (current.as_str(), change) {
            ("revoked", StatusChange::Revoke(_)) => None,
            ("revoked", _) => return Err(CaError::Revoked),
            (_, StatusChange::Revoke(reason)) => Some(("revoked", Some(reason))),
            ("held", StatusChange::Hold) | ("good", StatusChange::Release) => None,
            (_, StatusChange::Hold) => Some(("held", Some("certificateHold"))),
            (_, StatusChange::Release) => Some(("good", None)),
        };
        let by = actor.label();
        if let Some((status, reason)) = next {
            tx.execute(
                "UPDATE ca_certificates SET status = $2, revocation_reason = $3,
                     status_changed_at = now(), status_changed_by = $4
                 WHERE serial_hex = $1",
                &[&serial, &status, &reason, &by],
            )
            .await?;
            tracing::info!(serial = %serial, actor = %by, status, reason, "certificate status changed");
        }
        ca_audit::append(
            &tx,
            &ca_audit::Entry {
                actor: &by,
                action: change.action(),
                target: Some(&serial),
                outcome: ca_audit::Outcome::Done,
                code: None,
                detail: serde_json::json!({
                    "from": current,
                    "to": next.map(|(s, _)| s),
                    "reason": next.and_then(|(_, r)| r),
                }),
            },
        )
        .await?;
        let row = tx
            .query_one(
                &format!("SELECT {STATUS_COLUMNS} FROM ca_certificates WHERE serial_hex = $1"),
                &[&serial],
            )
            .await?;
        tx.commit().await?;
        Ok(status_from_row(&row))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn kiosk_of(identity: Option<Extension<KioskIdentity>>) -> Result<String, CaError> {
    identity
        .map(|Extension(KioskIdentity(k))| k)
        .ok_or(CaError::Unauthenticated)
}

/// The registered kiosk behind the connection (refusals are audited).
async fn registered_kiosk(
    service: &CaService,
    identity: Option<Extension<KioskIdentity>>,
    action: &str,
) -> Result<Actor, CaError> {
    let actor = Actor::Kiosk(kiosk_of(identity)?);
    if let Err(e) = service.check_actor(&actor).await {
        service.audit_refusal(&actor, action, None, &e).await;
        return Err(e);
    }
    Ok(actor)
}

fn certs_only_response(body: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, PKCS7_CERTS_ONLY),
            (
                header::HeaderName::from_static("content-transfer-encoding"),
                "base64",
            ),
        ],
        body,
    )
        .into_response()
}

/// The request DER from an EST body: base64 (line breaks allowed), or raw DER.
fn csr_from_body(body: &[u8]) -> Result<Vec<u8>, CaError> {
    if body.first() == Some(&0x30) {
        return Ok(body.to_vec());
    }
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    BASE64
        .decode(&compact)
        .map_err(|_| CaError::BadRequest("body is not base64".into()))
}

async fn enroll_route(
    service: CaService,
    identity: Option<Extension<KioskIdentity>>,
    headers: &HeaderMap,
    body: &[u8],
    reenroll: bool,
) -> Result<Response, CaError> {
    let action = if reenroll { "reenroll" } else { "enroll" };
    let actor = registered_kiosk(&service, identity, action).await?;
    let Actor::Kiosk(kiosk) = &actor else {
        return Err(CaError::Unauthenticated);
    };
    let result = async {
        if let Some(ct) = headers.get(header::CONTENT_TYPE)
            && !ct.to_str().is_ok_and(|v| {
                v.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/pkcs10")
            })
        {
            return Err(CaError::BadRequest(
                "Content-Type must be application/pkcs10".into(),
            ));
        }
        let context = EnrollContext::from_headers(headers)?;
        let csr = csr_from_body(body)?;
        service.enroll(kiosk, &csr, reenroll, &context).await
    }
    .await;
    match result {
        Ok(certificate) => Ok(certs_only_response(certs_only_base64(&[&certificate])?)),
        Err(e) => {
            service.audit_refusal(&actor, action, None, &e).await;
            Err(e)
        }
    }
}

async fn simple_enroll(
    State(service): State<CaService>,
    identity: Option<Extension<KioskIdentity>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CaError> {
    enroll_route(service, identity, &headers, &body, false).await
}

async fn simple_reenroll(
    State(service): State<CaService>,
    identity: Option<Extension<KioskIdentity>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CaError> {
    enroll_route(service, identity, &headers, &body, true).await
}

async fn cacerts(
    State(service): State<CaService>,
    identity: Option<Extension<KioskIdentity>>,
) -> Result<Response, CaError> {
    registered_kiosk(&service, identity, "cacerts").await?;
    Ok(certs_only_response(service.cacerts.as_ref().clone()))
}

async fn crl(
    State(service): State<CaService>,
    identity: Option<Extension<KioskIdentity>>,
) -> Result<Response, CaError> {
    registered_kiosk(&service, identity, "crl").await?;
    let der = service.crl().await?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response())
}

async fn certificate_status(
    State(service): State<CaService>,
    identity: Option<Extension<KioskIdentity>>,
    UrlPath(serial): UrlPath<String>,
) -> Result<Response, CaError> {
    registered_kiosk(&service, identity, "status").await?;
    Ok(axum::Json(service.status(&serial).await?).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: String,
}

async fn status_route(
    service: CaService,
    identity: Option<Extension<KioskIdentity>>,
    headers: &HeaderMap,
    serial: &str,
    change: Result<StatusChange<'_>, CaError>,
    action: &str,
) -> Result<Response, CaError> {
    let actor = registered_kiosk(&service, identity, action).await?;
    let result = async {
        let change = change?;
        let holder = holder_of(headers)?;
        service
            .change_status(&actor, serial, change, holder.as_ref())
            .await
    }
    .await;
    match result {
        Ok(status) => Ok(axum::Json(status).into_response()),
        Err(e) => {
            let target = normalize_serial(serial).ok();
            service
                .audit_refusal(&actor, action, target.as_deref(), &e)
                .await;
            Err(e)
        }
    }
}

async fn revoke(
    State(service): State<CaService>,
    identity: Option<Extension<KioskIdentity>>,
    UrlPath(serial): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CaError> {
    let parsed: Result<RevokeBody, CaError> =
        serde_json::from_slice(&body).map_err(|_| CaError::BadReason);
    let change = parsed
        .as_ref()
        .map(|b| StatusChange::Revoke(b.reason.as_str()))
        .map_err(|_| CaError::BadReason);
    status_route(service, identity, &headers, &serial, change, "revoke").await
}

async fn hold(
    State(service): State<CaService>,
    identity: Option<Extension<KioskIdentity>>,
    UrlPath(serial): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, CaError> {
    status_route(
        service,
        identity,
        &headers,
        &serial,
        Ok(StatusChange::Hold),
        "hold",
    )
    .await
}

async fn release(
    State(service): State<CaService>,
    identity: Option<Extension<KioskIdentity>>,
    UrlPath(serial): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, CaError> {
    status_route(
        service,
        identity,
        &headers,
        &serial,
        Ok(StatusChange::Release),
        "release",
    )
    .await
}

/// The CA's routes (merged into HQ's router by `server::start_with_ca`; this module does not
/// depend on `server`).
pub fn routes(service: CaService) -> Router {
    Router::new()
        .route("/.well-known/est/simpleenroll", post(simple_enroll))
        .route("/.well-known/est/simplereenroll", post(simple_reenroll))
        .route("/.well-known/est/cacerts", get(cacerts))
        .route("/ca/v1/certificates/{serial}", get(certificate_status))
        .route("/ca/v1/crl", get(crl))
        .route("/ca/v1/certificates/{serial}/revoke", post(revoke))
        .route("/ca/v1/certificates/{serial}/hold", post(hold))
        .route("/ca/v1/certificates/{serial}/release", post(release))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(service)
}

/// A self-signed SM2 issuing CA for demos and tests (a production CA key lives in an HSM):
/// returns `(certificate PEM, PKCS#8 private key PEM)` for [`Issuer::from_pem`] or
/// `hq-ingest serve --ca-cert --ca-key`. `subject` is RFC 4514 with CN, O and C, in that order.
pub fn generate_sm2_ca(
    subject: &str,
    validity: Duration,
) -> Result<(String, zeroize::Zeroizing<String>), CaError> {
    use der::EncodePem;
    use p256::pkcs8::EncodePrivateKey;
    let issue = |e: &dyn std::fmt::Display| CaError::Issue(e.to_string());
    let soft = records::SoftSigner::generate_sm2(SM2_DEFAULT_DISTID).map_err(|e| issue(&e))?;
    let secret = sm2::SecretKey::from_slice(&soft.secret_bytes()).map_err(|e| issue(&e))?;
    let key_pem = secret
        .to_pkcs8_pem(der::pem::LineEnding::LF)
        .map_err(|e| issue(&e))?;
    let signer = Sm2DerSigner(
        sm2::dsa::SigningKey::new(SM2_DEFAULT_DISTID, &secret).map_err(|e| issue(&e))?,
    );
    let name = std::str::FromStr::from_str(subject).map_err(|e: der::Error| issue(&e))?;
    let profile =
        x509_cert::builder::profile::cabf::Root::new(false, name).map_err(|e| issue(&e))?;
    let public_key =
        SubjectPublicKeyInfoOwned::from_key(signer.0.verifying_key()).map_err(|e| issue(&e))?;
    let certificate = CertificateBuilder::new(
        profile,
        SerialNumber::new(&random_serial()?).map_err(|e| issue(&e))?,
        Validity::from_now(validity).map_err(|e| issue(&e))?,
        public_key,
    )
    .map_err(|e| issue(&e))?
    .build::<_, sm2::dsa::DerSignature>(&signer)
    .map_err(|e| issue(&e))?;
    let cert_pem = certificate
        .to_pem(der::pem::LineEnding::LF)
        .map_err(|e| issue(&e))?;
    Ok((cert_pem, key_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p256_csr(common_name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    /// Verify `cert_der`'s signature with SM2 key `issuer_point` (SEC1).
    fn verify_sm2_signed(cert_der: &[u8], issuer_point: &[u8]) -> Result<(), String> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| e.to_string())?;
        if cert.signature_algorithm.algorithm.to_id_string() != SM2_WITH_SM3.to_string() {
            return Err("not SM2-with-SM3".into());
        }
        let raw = records::signing::raw_signature_from_der(
            SignatureAlgorithm::Sm2Sm3,
            &cert.signature_value.data,
        )
        .map_err(|e| e.to_string())?;
        PublicVerifier {
            algorithm: SignatureAlgorithm::Sm2Sm3,
            sec1: issuer_point.to_vec(),
            distid: Some(SM2_DEFAULT_DISTID.into()),
        }
        .verify(cert.tbs_certificate.as_ref(), &raw)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn an_sm2_issuing_ca_signs_with_sm2_and_sm3() {
        let (cert_pem, key_pem) =
            generate_sm2_ca("CN=Test SM2 CA,O=Synthetic Test Org,C=CN", DEFAULT_VALIDITY).unwrap();
        let issuer = Issuer::from_pem(&cert_pem, &key_pem, DEFAULT_VALIDITY).unwrap();
        assert_eq!(issuer.algorithm(), "SM2");
        let (_, ca) = x509_parser::parse_x509_certificate(issuer.certificate_der()).unwrap();
        let ca_point = ca.public_key().subject_public_key.data.to_vec();
        verify_sm2_signed(issuer.certificate_der(), &ca_point).expect("self-signed");

        let csr = verify_csr(&p256_csr("Synthetic Holder")).unwrap();
        assert_eq!(csr.kind, KeyKind::P256);
        let serial = random_serial().unwrap();
        let policy = crate::policy::IssuancePolicy::embedded();
        let profile = policy.profile("cert_application").unwrap();
        let leaf = issuer.issue(&csr, &csr.subject, profile, &serial).unwrap();
        verify_sm2_signed(&leaf, &ca_point).expect("signed by the SM2 CA");
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        assert_eq!(parsed.raw_serial(), serial);
        assert_eq!(parsed.issuer(), ca.subject());
        // A different key does not verify it.
        let (other_pem, other_key) =
            generate_sm2_ca("CN=Other CA,O=Synthetic Test Org,C=CN", DEFAULT_VALIDITY).unwrap();
        let other = Issuer::from_pem(&other_pem, &other_key, DEFAULT_VALIDITY).unwrap();
        let (_, other_ca) = x509_parser::parse_x509_certificate(other.certificate_der()).unwrap();
        assert!(verify_sm2_signed(&leaf, &other_ca.public_key().subject_public_key.data).is_err());
        // A key that does not match the certificate is refused.
        assert!(matches!(
            Issuer::from_pem(&cert_pem, &other_key, DEFAULT_VALIDITY),
            Err(CaError::Load { .. })
        ));
    }

    #[test]
    fn serials_are_positive_sixteen_octets() {
        for _ in 0..64 {
            let serial = random_serial().unwrap();
            assert!((0x40..=0x7f).contains(&serial[0]));
        }
        assert_eq!(normalize_serial("7F0A").unwrap(), "7f0a");
        for bad in ["", "xyz", "7f/0a", &"a".repeat(41)] {
            assert!(normalize_serial(bad).is_err(), "{bad}");
        }
    }
}
