//! Staff authentication with two factors: possession of a staff UKEY whose
//! certificate the staff CA issued for staff login, and its PIN.
//!
//! Token roles: staff login never opens the kiosk's own device token (refused by label and by
//! serial before anything touches it), never a token another login of this process holds (an
//! applicant's UKEY in use), and never keeps a login: the PIN proves presence once and the
//! token is logged out again. Where the token shows its certificate without a login (public
//! certificate objects), a token without a staff certificate is refused before its PIN is
//! tried. The PIN is tried once per request, after an attempt was reserved for that token's
//! serial in the store ([`crate::store::pin_attempts`]): failures are counted and backed off
//! per staff token, survive restarts, and cannot be raced past the limit; one token's
//! failures never lock out another.
//!
//! The certificate must chain to the staff CA, be within its validity, not be a CA, carry
//! the clientAuth EKU and the staff policy OID, and not be listed in the staff CA's CRL when
//! one is configured (a CRL that is not the staff CA's, or is past its nextUpdate, refuses
//! every login). The token then signs a fresh challenge that must verify under the
//! certificate's key. A staff session ends after `session_idle_secs` without a request,
//! `session_max_secs` after login whatever happens, and as soon as the staff UKEY leaves the
//! kiosk ([`StaffAuth::sweep_absent`], run every two seconds and on token events).
//!
//! With no staff CA configured (demo mode only), a demo staff CA and one demo staff token are
//! created under the data directory, and said so in the log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsm::{KeyAlgorithm, Pin, TokenError, TokenProvider, UserKind};
use sha2::{Digest, Sha256};

use crate::store::Store;
use crate::store::pin_attempts::{self, Kind, Limit, Outcome, Reservation};

/// The clientAuth extended key usage.
const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

/// Why a staff login or request fails.
#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    #[error("no staff UKEY with that label is present")]
    NoToken,
    #[error("that token is not a staff UKEY")]
    NotStaffToken,
    #[error("that UKEY is in use by another session; remove it and insert the staff UKEY")]
    TokenBusy,
    #[error("wrong PIN ({} tries left)", retries_left.map(|n| n.to_string()).unwrap_or_else(|| "unknown".into()))]
    WrongPin { retries_left: Option<u32> },
    #[error("the staff UKEY's PIN is locked: ask an administrator to unblock it")]
    PinLocked,
    #[error("the UKEY holds no staff certificate")]
    NoCertificate,
    #[error("the staff certificate is not valid: {0}")]
    BadCertificate(String),
    #[error("too many failed logins on this staff UKEY: try again in {0} seconds")]
    RateLimited(u64),
    #[error("not logged in as staff, or the staff session expired")]
    Unauthorized,
    #[error("staff token: {0}")]
    Token(TokenError),
    #[error("staff CA: {0}")]
    Ca(String),
    #[error("staff login bookkeeping: {0}")]
    Store(String),
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
    /// Serial of the staff UKEY (the session ends when it leaves the kiosk).
    pub token_serial: String,
    created: Instant,
    last_seen: Instant,
}

/// Tokens staff login must never open: the kiosk's device token.
#[derive(Debug, Clone, Default)]
pub struct ReservedTokens {
    pub labels: Vec<String>,
    pub serials: Vec<String>,
}

/// Where the staff CA and its policy come from.
#[derive(Debug, Clone)]
pub struct StaffPolicy {
    /// The staff CA certificate (DER).
    pub ca_der: Vec<u8>,
    /// The staff CA's CRL file (PEM or DER), re-read at every login.
    pub crl: Option<PathBuf>,
    /// The certificate policy OID a staff certificate must carry.
    pub policy_oid: String,
}

/// Staff logins and sessions.
pub struct StaffAuth {
    provider: Arc<dyn TokenProvider>,
    policy: StaffPolicy,
    reserved: ReservedTokens,
    store: Store,
    key_label: String,
    idle: Duration,
    max_age: Duration,
    limit: Limit,
    sessions: Mutex<HashMap<[u8; 32], StaffSession>>,
    /// One login at a time per token serial.
    token_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The verified facts of a staff certificate.
struct StaffCertificate {
    subject: String,
    serial: String,
    public_key: Vec<u8>,
    algorithm: KeyAlgorithm,
}

impl StaffAuth {
    pub fn new(
        provider: Arc<dyn TokenProvider>,
        policy: StaffPolicy,
        reserved: ReservedTokens,
        store: Store,
        section: &kiosk_config::StaffSection,
    ) -> Self {
        Self {
            provider,
            policy,
            reserved,
            store,
            key_label: section.key_label.clone(),
            idle: Duration::from_secs(section.session_idle_secs),
            max_age: Duration::from_secs(section.session_max_secs),
            limit: Limit {
                max_failures: section.max_failures,
                window_ms: section.lockout_secs.saturating_mul(1000) as i64,
            },
            sessions: Mutex::new(HashMap::new()),
            token_locks: Mutex::new(HashMap::new()),
        }
    }

    fn token_lock(&self, serial: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.token_locks)
            .entry(serial.to_string())
            .or_default()
            .clone()
    }

    async fn reserve(&self, serial: &str) -> Result<(), StaffError> {
        let (store, serial, limit) = (self.store.clone(), serial.to_string(), self.limit);
        let r = tokio::task::spawn_blocking(move || {
            let mut conn = store.conn().map_err(|e| StaffError::Store(e.to_string()))?;
            pin_attempts::reserve(
                &mut conn,
                Kind::Staff,
                &serial,
                crate::clock::now_ms(),
                limit,
            )
            .map_err(|e| StaffError::Store(e.to_string()))
        })
        .await
        .map_err(|e| StaffError::Store(e.to_string()))??;
        match r {
            Reservation::Granted { .. } => Ok(()),
            Reservation::Refused { retry_after_ms } => Err(StaffError::RateLimited(
                (retry_after_ms as u64).div_ceil(1000).max(1),
            )),
        }
    }

    async fn settle(&self, serial: &str, outcome: Outcome) {
        let (store, serial) = (self.store.clone(), serial.to_string());
        let done = tokio::task::spawn_blocking(move || {
            let conn = store.conn().map_err(|e| e.to_string())?;
            pin_attempts::settle(&conn, Kind::Staff, &serial, outcome).map_err(|e| e.to_string())
        })
        .await;
        if !matches!(done, Ok(Ok(()))) {
            tracing::warn!("recording the outcome of a staff login failed");
        }
    }

    /// Log in with the staff UKEY `label` and its PIN; returns the session and its bearer token.
    pub async fn login(
        &self,
        label: &str,
        pin: &Pin,
    ) -> Result<(StaffSession, String), StaffError> {
        if self.reserved.labels.iter().any(|l| l == label) {
            return Err(StaffError::NotStaffToken);
        }
        let info = self
            .provider
            .list_tokens()
            .await?
            .into_iter()
            .find(|t| t.label == label && t.initialized)
            .ok_or(StaffError::NoToken)?;
        if self.reserved.serials.contains(&info.serial) {
            return Err(StaffError::NotStaffToken);
        }
        let serial = info.serial;
        let token_lock = self.token_lock(&serial);
        let _one_at_a_time = token_lock.lock().await;
        let token = self.provider.open_token(label).await?;
        if token.info().await?.serial != serial || token.is_logged_in() {
            // Another login of this process holds the token (an applicant's UKEY in use):
            // neither its login state nor its PIN counter is ours to touch.
            return Err(StaffError::TokenBusy);
        }
        // Where the certificate is readable without a login, a token that carries no staff
        // certificate never sees the PIN.
        match token.read_certificate(&self.key_label).await {
            Ok(Some(cert)) => {
                self.check_certificate(&cert)?;
            }
            Ok(None) => return Err(StaffError::NotStaffToken),
            // The soft token shows its objects without a login: no staff key is final. A
            // PKCS#11 token hides private keys until the login, so there it is checked after.
            Err(TokenError::NoSuchKey(_) | TokenError::NoSuchCertificate(_))
                if self.provider.describe().starts_with("soft:") =>
            {
                return Err(StaffError::NotStaffToken);
            }
            Err(_) => {}
        }
        self.reserve(&serial).await?;
        let session = match token.login(UserKind::User, pin).await {
            Ok(()) => {
                let outcome = self.prove(token.as_ref(), &serial).await;
                // The staff UKEY is not kept logged in: its PIN proved presence once.
                let _ = token.logout().await;
                outcome
            }
            Err(e) => {
                let outcome = match e {
                    TokenError::PinIncorrect { .. } | TokenError::PinLocked => Outcome::Failure,
                    _ => Outcome::NotTried,
                };
                self.settle(&serial, outcome).await;
                return Err(e.into());
            }
        };
        let session = match session {
            Ok(s) => {
                self.settle(&serial, Outcome::Success).await;
                s
            }
            Err(e) => {
                self.settle(&serial, Outcome::Failure).await;
                return Err(e);
            }
        };
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| StaffError::Ca(e.to_string()))?;
        let bearer = hex::encode(raw);
        lock(&self.sessions).insert(digest(&bearer), session.clone());
        Ok((session, bearer))
    }

    /// With the token logged in: its staff certificate checks out and its key signs a fresh
    /// challenge that verifies under the certificate.
    async fn prove(
        &self,
        token: &dyn hsm::Token,
        token_serial: &str,
    ) -> Result<StaffSession, StaffError> {
        let cert = token
            .read_certificate(&self.key_label)
            .await?
            .ok_or(StaffError::NoCertificate)?;
        let cert = self.check_certificate(&cert)?;
        let mut challenge = [0u8; 32];
        getrandom::fill(&mut challenge).map_err(|e| StaffError::Ca(e.to_string()))?;
        let sig = token.sign(&self.key_label, &challenge).await?;
        hsm::soft_crypto::verify(
            cert.algorithm,
            &cert.public_key,
            token.sm2_distid(),
            &challenge,
            &sig.raw,
        )
        .map_err(|_| {
            StaffError::BadCertificate("the UKEY's key does not match its certificate".into())
        })?;
        let now = Instant::now();
        Ok(StaffSession {
            staff_id: cert.subject,
            serial: cert.serial,
            token_serial: token_serial.to_string(),
            created: now,
            last_seen: now,
        })
    }

    /// Check a certificate against the staff CA, its CRL, the clock and the staff policy.
    fn check_certificate(&self, cert_der: &[u8]) -> Result<StaffCertificate, StaffError> {
        use x509_parser::prelude::*;
        let bad = |m: &str| StaffError::BadCertificate(m.to_string());
        let (_, ca) = parse_x509_certificate(&self.policy.ca_der)
            .map_err(|e| StaffError::Ca(e.to_string()))?;
        let (_, cert) = parse_x509_certificate(cert_der).map_err(|_| StaffError::NotStaffToken)?;
        if cert.verify_signature(Some(ca.public_key())).is_err() {
            return Err(StaffError::NotStaffToken);
        }
        if !cert.validity().is_valid() {
            return Err(bad("expired or not yet valid"));
        }
        if cert.is_ca() {
            return Err(bad("a CA certificate is not a staff certificate"));
        }
        let client_auth = cert.extended_key_usage().ok().flatten().is_some_and(|eku| {
            eku.value.client_auth
                || eku
                    .value
                    .other
                    .iter()
                    .any(|o| o.to_id_string() == CLIENT_AUTH)
        });
        if !client_auth {
            return Err(bad("it does not carry the clientAuth extended key usage"));
        }
        if !has_policy(cert_der, &self.policy.policy_oid) {
            return Err(bad("it does not carry the staff certificate policy"));
        }
        if let Some(path) = &self.policy.crl {
            check_crl(path, &ca, cert.raw_serial())?;
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
            _ => return Err(bad("unsupported key algorithm")),
        };
        Ok(StaffCertificate {
            subject: cert.subject().to_string(),
            serial: cert.raw_serial_as_string(),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            algorithm,
        })
    }

    /// The staff session behind a bearer token (refreshing its idle timer).
    pub fn authenticate(&self, token: Option<&str>) -> Result<StaffSession, StaffError> {
        let token = token.ok_or(StaffError::Unauthorized)?;
        let mut sessions = lock(&self.sessions);
        let key = digest(token);
        let (idle, max_age) = (self.idle, self.max_age);
        sessions.retain(|_, s| s.last_seen.elapsed() < idle && s.created.elapsed() < max_age);
        let s = sessions.get_mut(&key).ok_or(StaffError::Unauthorized)?;
        s.last_seen = Instant::now();
        Ok(s.clone())
    }

    /// Whether the staff session of `token` is still open (not logged out, not expired, its
    /// UKEY not pulled), without counting as activity: an open event stream does not keep a
    /// staff session alive.
    pub fn is_active(&self, token: &str) -> bool {
        let sessions = lock(&self.sessions);
        sessions.get(&digest(token)).is_some_and(|s| {
            s.last_seen.elapsed() < self.idle && s.created.elapsed() < self.max_age
        })
    }

    /// The serials of the staff UKEYs behind open staff sessions (a staff UKEY in the kiosk is
    /// not an applicant's).
    pub fn token_serials(&self) -> Vec<String> {
        lock(&self.sessions)
            .values()
            .map(|s| s.token_serial.clone())
            .collect()
    }

    pub fn logout(&self, token: &str) -> bool {
        lock(&self.sessions).remove(&digest(token)).is_some()
    }

    /// End every staff session whose staff UKEY is no longer present. Returns how many ended.
    pub async fn sweep_absent(&self) -> usize {
        if lock(&self.sessions).is_empty() {
            return 0;
        }
        let _ = self.provider.refresh().await;
        let present: Vec<String> = match self.provider.list_tokens().await {
            Ok(list) => list.into_iter().map(|t| t.serial).collect(),
            // The provider cannot say: the staff UKEYs cannot be shown present.
            Err(_) => Vec::new(),
        };
        let mut sessions = lock(&self.sessions);
        let before = sessions.len();
        sessions.retain(|_, s| present.contains(&s.token_serial));
        let ended = before - sessions.len();
        if ended > 0 {
            tracing::info!(ended, "staff UKEY removed: its staff session ended");
        }
        ended
    }

    /// Watch for staff UKEYs leaving the kiosk until `stop`: on every token event and every
    /// two seconds (providers without hot-plug events).
    pub async fn watch_tokens(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut events = self.provider.events();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                _ = events.recv() => {}
            }
            self.sweep_absent().await;
        }
    }
}

/// The certificate with `serial` is not revoked by the staff CA's CRL at `path`.
fn check_crl(
    path: &Path,
    ca: &x509_parser::certificate::X509Certificate<'_>,
    serial: &[u8],
) -> Result<(), StaffError> {
    use x509_parser::prelude::*;
    let bad = |m: String| StaffError::BadCertificate(m);
    let raw = std::fs::read(path).map_err(|e| {
        bad(format!(
            "the staff CRL {} cannot be read: {e}",
            path.display()
        ))
    })?;
    let der = if raw.starts_with(b"-----BEGIN") {
        x509_parser::pem::parse_x509_pem(&raw)
            .map_err(|_| bad("the staff CRL is not valid PEM".into()))?
            .1
            .contents
    } else {
        raw
    };
    let (_, crl) =
        parse_x509_crl(&der).map_err(|_| bad("the staff CRL cannot be parsed".into()))?;
    if crl.verify_signature(ca.public_key()).is_err() {
        return Err(bad("the staff CRL is not signed by the staff CA".into()));
    }
    match crl.next_update() {
        Some(next) if next.timestamp() > ::time::OffsetDateTime::now_utc().unix_timestamp() => {}
        _ => return Err(bad("the staff CRL is out of date".into())),
    }
    if crl
        .iter_revoked_certificates()
        .any(|r| r.raw_serial() == serial)
    {
        return Err(bad("it has been revoked".into()));
    }
    Ok(())
}

/// A staff token to create with [`DemoStaffCa::issue_token`].
#[derive(Clone, Copy)]
pub struct StaffTokenSpec<'a> {
    pub label: &'a str,
    pub pin: &'a Pin,
    pub so_pin: &'a Pin,
    pub key_label: &'a str,
    pub subject: &'a str,
    /// The staff policy to certify, or `None` for a bare certificate (tests of the check).
    pub policy_oid: Option<&'a str>,
}

/// The demo staff CA of demo mode: its certificate and key under a directory.
pub struct DemoStaffCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    /// The CA certificate (DER).
    pub cert_der: Vec<u8>,
}

impl DemoStaffCa {
    /// Load the demo staff CA under `dir`, creating it on first use.
    pub fn open(dir: &Path) -> Result<Self, StaffError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
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
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = if key_path.exists() {
            KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io_err)?)
                .map_err(ca_err)?
        } else {
            let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
            write_private(&key_path, k.serialize_pem().as_bytes()).map_err(io_err)?;
            k
        };
        if !cert_path.exists() {
            let ca_cert = params.self_signed(&key).map_err(ca_err)?;
            std::fs::write(&cert_path, ca_cert.pem()).map_err(io_err)?;
        }
        let cert_der = rustls_pem_to_der(&std::fs::read_to_string(&cert_path).map_err(io_err)?)?;
        Ok(Self {
            params,
            key,
            cert_der,
        })
    }

    /// Sign a certificate for the key of a CSR: the staff profile (clientAuth and the staff
    /// policy `policy_oid`) when `policy_oid` is given, else a bare certificate (tests of the
    /// policy check). Returns the certificate DER.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        policy_oid: Option<&str>,
    ) -> Result<Vec<u8>, StaffError> {
        use der::Encode;
        use rcgen::{CertificateSigningRequestParams, CustomExtension, ExtendedKeyUsagePurpose};
        let ca_err = |e: rcgen::Error| StaffError::Ca(e.to_string());
        let mut csr =
            CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()).map_err(ca_err)?;
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(|e| StaffError::Ca(e.to_string()))?;
        serial[0] &= 0x7f;
        csr.params.serial_number = Some(serial.to_vec().into());
        if let Some(oid) = policy_oid {
            csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let policy_id =
                der::asn1::ObjectIdentifier::new(oid).map_err(|e| StaffError::Ca(e.to_string()))?;
            // certificatePolicies ::= SEQUENCE OF PolicyInformation { policyIdentifier }
            let content = vec![vec![policy_id]]
                .to_der()
                .map_err(|e| StaffError::Ca(e.to_string()))?;
            csr.params
                .custom_extensions
                .push(CustomExtension::from_oid_content(&[2, 5, 29, 32], content));
        }
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        Ok(csr.signed_by(&issuer).map_err(ca_err)?.der().to_vec())
    }

    /// A CRL of the demo staff CA revoking `serials` (raw serial bytes), valid for a day.
    pub fn crl_pem(&self, serials: &[Vec<u8>]) -> Result<String, StaffError> {
        use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams};
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(1),
            crl_number: vec![1].into(),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: s.clone().into(),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        params
            .signed_by(&issuer)
            .and_then(|c| c.pem())
            .map_err(|e| StaffError::Ca(e.to_string()))
    }

    /// Create (or complete) the staff token `label` with user PIN `pin`: a P-256 key
    /// `key_label` and a certificate for `subject` signed by this CA (with the staff policy
    /// `policy_oid`, or without it when `None`).
    pub async fn issue_token(
        &self,
        provider: &Arc<dyn TokenProvider>,
        spec: &StaffTokenSpec<'_>,
    ) -> Result<(), StaffError> {
        let StaffTokenSpec {
            label,
            pin,
            so_pin,
            key_label,
            subject,
            policy_oid,
        } = *spec;
        let token = match provider.open_token(label).await {
            Ok(t) => t,
            Err(TokenError::TokenNotPresent(_)) => {
                provider.init_token(label, so_pin, pin).await?;
                provider.open_token(label).await?
            }
            Err(e) => return Err(e.into()),
        };
        token.login(UserKind::User, pin).await?;
        let result = async {
            match token.read_certificate(key_label).await {
                // A demo certificate from before the staff profile is issued again.
                Ok(Some(cert)) if policy_oid.is_none_or(|oid| has_policy(&cert, oid)) => {
                    return Ok(());
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(TokenError::NoSuchKey(_) | TokenError::NoSuchCertificate(_)) => {}
                Err(e) => return Err(e.into()),
            }
            if token.key(key_label).await.is_err() {
                token
                    .generate_key_pair(key_label, KeyAlgorithm::P256)
                    .await?;
            }
            let csr = hsm::csr::build_csr(token.as_ref(), key_label, subject).await?;
            let cert = self.sign_csr(&csr.der, policy_oid)?;
            token.write_certificate(key_label, &cert).await?;
            Ok::<_, StaffError>(())
        }
        .await;
        let _ = token.logout().await;
        result
    }
}

/// The demo mode's staff CA and token: created once under `dir`, returning the CA
/// certificate (DER).
pub async fn demo_setup(
    provider: &Arc<dyn TokenProvider>,
    dir: &Path,
    section: &kiosk_config::StaffSection,
) -> Result<Vec<u8>, StaffError> {
    if !dir.join("demo-staff-ca.key.pem").exists() {
        tracing::warn!(dir = %dir.display(), "no staff CA configured: creating a DEMO staff CA and token (not for production)");
    }
    let ca = DemoStaffCa::open(dir)?;
    let pin = Pin::new(section.demo_pin.expose().to_string());
    let so = Pin::new(format!("{}-so", section.demo_pin.expose()));
    ca.issue_token(
        provider,
        &StaffTokenSpec {
            label: &section.demo_token,
            pin: &pin,
            so_pin: &so,
            key_label: &section.key_label,
            subject: "CN=Demo Staff 001,O=kioskd demo branch",
            policy_oid: Some(&section.policy_oid),
        },
    )
    .await?;
    Ok(ca.cert_der)
}

/// Whether a certificate carries the certificate policy `oid`.
fn has_policy(cert_der: &[u8], oid: &str) -> bool {
    use x509_parser::prelude::*;
    parse_x509_certificate(cert_der).is_ok_and(|(_, cert)| {
        cert.extensions().iter().any(|ext| {
            matches!(ext.parsed_extension(), ParsedExtension::CertificatePolicies(p)
                if p.iter().any(|i| i.policy_id.to_id_string() == oid))
        })
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE_PIN: &str = "device-pin-1234";
    const STAFF_PIN: &str = "staff-demo-pin";

    struct Fixture {
        dir: tempfile::TempDir,
        provider: Arc<dyn TokenProvider>,
        ca: DemoStaffCa,
        store: Store,
        section: kiosk_config::StaffSection,
        device_serial: String,
    }

    async fn fixture(section: kiosk_config::StaffSection) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let token = kiosk_config::TokenSection {
            soft_dir: dir.path().join("soft"),
            ..Default::default()
        };
        let provider = hsm::open_provider(&token, dir.path()).unwrap();
        let device = provider
            .init_token(
                "kiosk-device",
                &Pin::new("device-so-1234"),
                &Pin::new(DEVICE_PIN),
            )
            .await
            .unwrap();
        demo_setup(&provider, &dir.path().join("demo-staff"), &section)
            .await
            .unwrap();
        let ca = DemoStaffCa::open(&dir.path().join("demo-staff")).unwrap();
        let store = Store::open(&dir.path().join("kiosk.sqlite")).unwrap();
        Fixture {
            dir,
            provider,
            ca,
            store,
            section,
            device_serial: device.serial,
        }
    }

    impl Fixture {
        fn auth(&self, crl: Option<PathBuf>) -> StaffAuth {
            StaffAuth::new(
                self.provider.clone(),
                StaffPolicy {
                    ca_der: self.ca.cert_der.clone(),
                    crl,
                    policy_oid: self.section.policy_oid.clone(),
                },
                ReservedTokens {
                    labels: vec!["kiosk-device".into()],
                    serials: vec![self.device_serial.clone()],
                },
                self.store.clone(),
                &self.section,
            )
        }

        async fn retries_left(&self, label: &str) -> Option<u32> {
            let t = self.provider.open_token(label).await.unwrap();
            t.info().await.unwrap().user_retries_left
        }

        async fn second_token(&self, label: &str, policy: Option<&str>) {
            let (pin, so_pin) = (Pin::new(STAFF_PIN), Pin::new("staff-two-so-pin"));
            let spec = StaffTokenSpec {
                label,
                pin: &pin,
                so_pin: &so_pin,
                key_label: &self.section.key_label,
                subject: "CN=Staff 002,O=branch",
                policy_oid: policy,
            };
            self.ca.issue_token(&self.provider, &spec).await.unwrap();
        }
    }

    fn section(max_failures: u32) -> kiosk_config::StaffSection {
        kiosk_config::StaffSection {
            max_failures,
            ..Default::default()
        }
    }

    /// Finding 1: staff login opened the device token through the device provider: a wrong
    /// PIN counted down the device PIN, a failed login logged kioskd out of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staff_login_never_touches_the_device_token() {
        let f = fixture(section(5)).await;
        let device = f.provider.open_token("kiosk-device").await.unwrap();
        device
            .login(UserKind::User, &Pin::new(DEVICE_PIN))
            .await
            .unwrap();
        let auth = f.auth(None);
        for pin in ["000000", DEVICE_PIN] {
            let e = auth
                .login("kiosk-device", &Pin::new(pin))
                .await
                .unwrap_err();
            assert!(matches!(e, StaffError::NotStaffToken), "{e}");
        }
        // Reached under another label (the serial is reserved too): still refused.
        let mut aliased = f.auth(None);
        aliased.reserved.labels.clear();
        let e = aliased
            .login("kiosk-device", &Pin::new("000000"))
            .await
            .unwrap_err();
        assert!(matches!(e, StaffError::NotStaffToken), "{e}");
        assert!(device.is_logged_in(), "kioskd keeps its device login");
        assert_eq!(f.retries_left("kiosk-device").await, Some(5));
        // Staff are not locked out by those attempts.
        auth.login("staff-demo", &Pin::new(STAFF_PIN))
            .await
            .unwrap();
    }

    /// Token roles: a token another login of this process holds (an applicant's UKEY in
    /// use) is refused without touching its login state or its PIN counter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_staff_login_never_changes_another_tokens_login_state() {
        let f = fixture(section(5)).await;
        f.provider
            .init_token("applicant", &Pin::new("applicant-so"), &Pin::new("246810"))
            .await
            .unwrap();
        let applicant = f.provider.open_token("applicant").await.unwrap();
        applicant
            .login(UserKind::User, &Pin::new("246810"))
            .await
            .unwrap();
        let e = f
            .auth(None)
            .login("applicant", &Pin::new("000000"))
            .await
            .unwrap_err();
        assert!(matches!(e, StaffError::TokenBusy), "{e}");
        assert!(applicant.is_logged_in());
        assert_eq!(f.retries_left("applicant").await, Some(5));
        // Not in use and without a staff certificate: refused before its PIN is tried.
        applicant.logout().await.unwrap();
        let e = f
            .auth(None)
            .login("applicant", &Pin::new("000000"))
            .await
            .unwrap_err();
        assert!(matches!(e, StaffError::NotStaffToken), "{e}");
        assert_eq!(f.retries_left("applicant").await, Some(5));
    }

    /// Finding 5: one person's bad logins paused logins for all staff.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_staff_tokens_failures_do_not_lock_out_another() {
        let f = fixture(section(3)).await;
        f.second_token("staff-two", Some(&f.section.policy_oid))
            .await;
        let auth = f.auth(None);
        for _ in 0..3 {
            let e = auth
                .login("staff-demo", &Pin::new("000000"))
                .await
                .unwrap_err();
            assert!(matches!(e, StaffError::WrongPin { .. }), "{e}");
        }
        let e = auth
            .login("staff-demo", &Pin::new(STAFF_PIN))
            .await
            .unwrap_err();
        assert!(matches!(e, StaffError::RateLimited(_)), "{e}");
        let (s, _) = auth.login("staff-two", &Pin::new(STAFF_PIN)).await.unwrap();
        assert!(s.staff_id.contains("Staff 002"));
    }

    /// Finding 5: check-then-count let simultaneous logins all reach the token.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_staff_logins_cannot_exceed_the_failure_limit() {
        let f = fixture(section(3)).await;
        let auth = Arc::new(f.auth(None));
        let tasks: Vec<_> = (0..24)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.login("staff-demo", &Pin::new("000000")).await })
            })
            .collect();
        let mut tried = 0;
        for t in tasks {
            match t.await.unwrap() {
                Err(StaffError::RateLimited(_)) => {}
                Err(StaffError::WrongPin { .. }) => tried += 1,
                other => panic!("unexpected {:?}", other.map(|_| ())),
            }
        }
        assert_eq!(tried, 3);
        assert_eq!(f.retries_left("staff-demo").await, Some(2));
    }

    /// Finding 5: the failure count lived in memory; a restart gave a fresh set of guesses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staff_login_failures_survive_a_restart() {
        let f = fixture(section(2)).await;
        for _ in 0..2 {
            let _ = f.auth(None).login("staff-demo", &Pin::new("000000")).await;
        }
        let reopened = Store::open(&f.dir.path().join("kiosk.sqlite")).unwrap();
        let mut auth = f.auth(None);
        auth.store = reopened;
        let e = auth
            .login("staff-demo", &Pin::new(STAFF_PIN))
            .await
            .unwrap_err();
        assert!(matches!(e, StaffError::RateLimited(_)), "{e}");
    }

    async fn staff_demo_serial(f: &Fixture) -> Vec<u8> {
        use x509_parser::prelude::*;
        let t = f.provider.open_token("staff-demo").await.unwrap();
        let der = t
            .read_certificate(&f.section.key_label)
            .await
            .unwrap()
            .unwrap();
        parse_x509_certificate(&der)
            .unwrap()
            .1
            .raw_serial()
            .to_vec()
    }

    /// Finding 7: staff certificates were never checked for revocation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoked_staff_certificate_cannot_log_in() {
        let f = fixture(section(5)).await;
        let crl = f.dir.path().join("staff.crl");
        std::fs::write(&crl, f.ca.crl_pem(&[vec![0x42]]).unwrap()).unwrap();
        f.auth(Some(crl.clone()))
            .login("staff-demo", &Pin::new(STAFF_PIN))
            .await
            .expect("not listed: logs in");
        let serial = staff_demo_serial(&f).await;
        std::fs::write(&crl, f.ca.crl_pem(&[serial]).unwrap()).unwrap();
        let e = f
            .auth(Some(crl.clone()))
            .login("staff-demo", &Pin::new(STAFF_PIN))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
        // A CRL another CA signed is not the staff CA's word: refused, not ignored.
        let other = DemoStaffCa::open(&f.dir.path().join("other-ca")).unwrap();
        std::fs::write(&crl, other.crl_pem(&[]).unwrap()).unwrap();
        let e = f
            .auth(Some(crl))
            .login("staff-demo", &Pin::new(STAFF_PIN))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not signed by the staff CA"), "{e}");
    }

    /// Finding 7: any certificate from the staff CA was a staff login certificate; now it
    /// needs the staff policy and clientAuth, checked before the PIN is tried.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_staff_ca_certificate_without_the_staff_policy_is_refused() {
        let f = fixture(section(5)).await;
        f.second_token("no-policy", None).await;
        let e = f
            .auth(None)
            .login("no-policy", &Pin::new("000000"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("clientAuth"), "{e}");
        assert_eq!(
            f.retries_left("no-policy").await,
            Some(5),
            "PIN never tried"
        );
    }

    /// Finding 7: a staff session survived pulling the staff UKEY.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_staff_session_ends_when_its_ukey_is_pulled() {
        let f = fixture(section(5)).await;
        let auth = f.auth(None);
        let (_, bearer) = auth
            .login("staff-demo", &Pin::new(STAFF_PIN))
            .await
            .unwrap();
        assert_eq!(auth.sweep_absent().await, 0);
        auth.authenticate(Some(&bearer)).unwrap();
        let file = f
            .dir
            .path()
            .join("soft")
            .join(format!("{}.token.json", hex::encode("staff-demo")));
        std::fs::rename(&file, f.dir.path().join("pulled")).unwrap();
        assert_eq!(auth.sweep_absent().await, 1);
        assert!(matches!(
            auth.authenticate(Some(&bearer)),
            Err(StaffError::Unauthorized)
        ));
    }

    /// Finding 7: a busy staff session never ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_staff_session_has_an_absolute_lifetime() {
        let mut s = section(5);
        s.session_max_secs = 1;
        let f = fixture(s).await;
        let auth = f.auth(None);
        let (_, bearer) = auth
            .login("staff-demo", &Pin::new(STAFF_PIN))
            .await
            .unwrap();
        for _ in 0..3 {
            auth.authenticate(Some(&bearer)).unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(matches!(
            auth.authenticate(Some(&bearer)),
            Err(StaffError::Unauthorized)
        ));
    }
}
