//! Staff authentication with two factors: possession of a staff UKEY whose
//! certificate the staff CA issued, and its PIN. Login opens the token, logs in
//! once with the PIN (never retried), reads the staff certificate, checks it
//! against the staff CA and its validity, and makes the token sign a fresh
//! challenge that verifies under the certificate's key. Failed logins are
//! rate-limited per kiosk. Every staff action is audited by the caller.
//!
//! With no staff CA configured (the embedded defaults), a demo staff CA and one
//! demo staff token are created under the data directory — for demonstrations
//! only, and said so in the log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsm::{KeyAlgorithm, Pin, TokenError, TokenProvider, UserKind};
use sha2::{Digest, Sha256};

/// Why a staff login or request fails.
#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    #[error("no staff UKEY with that label is present")]
    NoToken,
    #[error("wrong PIN ({} tries left)", retries_left.map(|n| n.to_string()).unwrap_or_else(|| "unknown".into()))]
    WrongPin { retries_left: Option<u32> },
    #[error("the staff UKEY's PIN is locked: ask an administrator to unblock it")]
    PinLocked,
    #[error("the UKEY holds no staff certificate")]
    NoCertificate,
    #[error("the staff certificate is not valid: {0}")]
    BadCertificate(String),
    #[error("too many failed logins: try again in {0} seconds")]
    RateLimited(u64),
    #[error("not logged in as staff, or the staff session expired")]
    Unauthorized,
    #[error("staff token: {0}")]
    Token(TokenError),
    #[error("staff CA: {0}")]
    Ca(String),
}

impl From<TokenError> for StaffError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::TokenNotPresent(_) => StaffError::NoToken,
            TokenError::PinIncorrect { retries_left } => StaffError::WrongPin { retries_left },
            TokenError::PinLocked => StaffError::PinLocked,
            TokenError::NoSuchCertificate(_) | TokenError::NoSuchKey(_) => {
                StaffError::NoCertificate
            }
            other => StaffError::Token(other),
        }
    }
}

/// A logged-in staff member.
#[derive(Debug, Clone)]
pub struct StaffSession {
    /// The staff certificate's subject (who), for the audit log.
    pub staff_id: String,
    /// Its serial number.
    pub serial: String,
    last_seen: Instant,
}

struct Limiter {
    failures: Vec<Instant>,
}

/// Staff logins and sessions.
pub struct StaffAuth {
    provider: Arc<dyn TokenProvider>,
    ca_der: Vec<u8>,
    key_label: String,
    idle: Duration,
    max_failures: usize,
    window: Duration,
    sessions: Mutex<HashMap<[u8; 32], StaffSession>>,
    limiter: Mutex<Limiter>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl StaffAuth {
    pub fn new(
        provider: Arc<dyn TokenProvider>,
        ca_der: Vec<u8>,
        section: &kiosk_config::StaffSection,
    ) -> Self {
        Self {
            provider,
            ca_der,
            key_label: section.key_label.clone(),
            idle: Duration::from_secs(section.session_idle_secs),
            max_failures: section.max_failures as usize,
            window: Duration::from_secs(section.lockout_secs),
            sessions: Mutex::new(HashMap::new()),
            limiter: Mutex::new(Limiter {
                failures: Vec::new(),
            }),
        }
    }

    fn check_rate(&self) -> Result<(), StaffError> {
        let mut l = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        l.failures.retain(|t| t.elapsed() < self.window);
        if l.failures.len() >= self.max_failures {
            let wait = self.window.saturating_sub(l.failures[0].elapsed());
            return Err(StaffError::RateLimited(wait.as_secs().max(1)));
        }
        Ok(())
    }

    fn note_failure(&self) {
        let mut l = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        l.failures.push(Instant::now());
    }

    /// Log in with the staff UKEY `label` and its PIN; returns the session and its bearer token.
    pub async fn login(
        &self,
        label: &str,
        pin: &Pin,
    ) -> Result<(StaffSession, String), StaffError> {
        self.check_rate()?;
        let result = self.try_login(label, pin).await;
        if result.is_err() {
            self.note_failure();
        }
        let session = result?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| StaffError::Ca(e.to_string()))?;
        let token = hex::encode(raw);
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest(&token), session.clone());
        Ok((session, token))
    }

    async fn try_login(&self, label: &str, pin: &Pin) -> Result<StaffSession, StaffError> {
        let token = self.provider.open_token(label).await?;
        token.login(UserKind::User, pin).await?;
        let outcome = async {
            let cert = token
                .read_certificate(&self.key_label)
                .await?
                .ok_or(StaffError::NoCertificate)?;
            let (staff_id, serial, key, algorithm) = self.check_certificate(&cert)?;
            let mut challenge = [0u8; 32];
            getrandom::fill(&mut challenge).map_err(|e| StaffError::Ca(e.to_string()))?;
            let sig = token.sign(&self.key_label, &challenge).await?;
            hsm::soft_crypto::verify(algorithm, &key, token.sm2_distid(), &challenge, &sig.raw)
                .map_err(|_| {
                    StaffError::BadCertificate(
                        "the UKEY's key does not match its certificate".into(),
                    )
                })?;
            Ok::<_, StaffError>(StaffSession {
                staff_id,
                serial,
                last_seen: Instant::now(),
            })
        }
        .await;
        // The staff UKEY is not kept logged in: its PIN proved presence once.
        let _ = token.logout().await;
        outcome
    }

    /// Check the certificate against the staff CA and the clock; returns
    /// (subject, serial, public key, algorithm).
    fn check_certificate(
        &self,
        cert_der: &[u8],
    ) -> Result<(String, String, Vec<u8>, KeyAlgorithm), StaffError> {
        use x509_parser::prelude::*;
        let bad = |m: String| StaffError::BadCertificate(m);
        let (_, ca) =
            parse_x509_certificate(&self.ca_der).map_err(|e| StaffError::Ca(e.to_string()))?;
        let (_, cert) = parse_x509_certificate(cert_der).map_err(|e| bad(e.to_string()))?;
        cert.verify_signature(Some(ca.public_key()))
            .map_err(|_| bad("not issued by the staff CA".into()))?;
        if !cert.validity().is_valid() {
            return Err(bad("expired or not yet valid".into()));
        }
        let algorithm = match cert
            .public_key()
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
        {
            Some(oid) if oid.to_id_string() == "1.2.840.10045.3.1.7" => KeyAlgorithm::P256,
            Some(oid) if oid.to_id_string() == "1.2.156.10197.1.301" => KeyAlgorithm::Sm2,
            _ => return Err(bad("unsupported key algorithm".into())),
        };
        Ok((
            cert.subject().to_string(),
            cert.raw_serial_as_string(),
            cert.public_key().subject_public_key.data.to_vec(),
            algorithm,
        ))
    }

    /// The staff session behind a bearer token (refreshing its idle timer).
    pub fn authenticate(&self, token: Option<&str>) -> Result<StaffSession, StaffError> {
        let token = token.ok_or(StaffError::Unauthorized)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let key = digest(token);
        let idle = self.idle;
        sessions.retain(|_, s| s.last_seen.elapsed() < idle);
        let s = sessions.get_mut(&key).ok_or(StaffError::Unauthorized)?;
        s.last_seen = Instant::now();
        Ok(s.clone())
    }

    pub fn logout(&self, token: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&digest(token))
            .is_some()
    }
}

/// The embedded defaults' demo staff CA and token: created once under
/// `dir`, returning the CA certificate (DER).
pub async fn demo_setup(
    provider: &Arc<dyn TokenProvider>,
    dir: &Path,
    section: &kiosk_config::StaffSection,
) -> Result<Vec<u8>, StaffError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_err = |e: rcgen::Error| StaffError::Ca(e.to_string());
    let io_err = |e: std::io::Error| StaffError::Ca(e.to_string());
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let key_path = dir.join("demo-staff-ca.key.pem");
    let cert_path = dir.join("demo-staff-ca.pem");
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(ca_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kioskd DEMO staff CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = if key_path.exists() {
        KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io_err)?).map_err(ca_err)?
    } else {
        tracing::warn!(dir = %dir.display(), "no staff CA configured: creating a DEMO staff CA and token (not for production)");
        let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
        write_private(&key_path, k.serialize_pem().as_bytes()).map_err(io_err)?;
        k
    };
    let ca_cert = params.self_signed(&ca_key).map_err(ca_err)?;
    if !cert_path.exists() {
        std::fs::write(&cert_path, ca_cert.pem()).map_err(io_err)?;
    }
    let ca_der = rustls_pem_to_der(&std::fs::read_to_string(&cert_path).map_err(io_err)?)?;

    let pin = Pin::new(section.demo_pin.expose().to_string());
    let token = match provider.open_token(&section.demo_token).await {
        Ok(t) => t,
        Err(TokenError::TokenNotPresent(_)) => {
            let so = Pin::new(format!("{}-so", section.demo_pin.expose()));
            provider.init_token(&section.demo_token, &so, &pin).await?;
            provider.open_token(&section.demo_token).await?
        }
        Err(e) => return Err(e.into()),
    };
    token.login(UserKind::User, &pin).await?;
    let result = async {
        match token.read_certificate(&section.key_label).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) | Err(TokenError::NoSuchKey(_) | TokenError::NoSuchCertificate(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if token.key(&section.key_label).await.is_err() {
            token
                .generate_key_pair(&section.key_label, KeyAlgorithm::P256)
                .await?;
        }
        let csr = hsm::csr::build_csr(
            token.as_ref(),
            &section.key_label,
            "CN=Demo Staff 001,O=kioskd demo branch",
        )
        .await?;
        let csr_params =
            CertificateSigningRequestParams::from_der(&csr.der.clone().into()).map_err(ca_err)?;
        let issuer = Issuer::new(params.clone(), &ca_key);
        let cert = csr_params.signed_by(&issuer).map_err(ca_err)?;
        token
            .write_certificate(&section.key_label, cert.der())
            .await?;
        Ok::<_, StaffError>(())
    }
    .await;
    let _ = token.logout().await;
    result?;
    Ok(ca_der)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// DER of the first certificate in a PEM text.
pub fn rustls_pem_to_der(pem: &str) -> Result<Vec<u8>, StaffError> {
    hsm::csr::certificate_der(pem.as_bytes()).map_err(|e| StaffError::Ca(e.to_string()))
}
