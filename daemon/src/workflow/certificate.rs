//! The certificate on the applicant's UKEY: issuance (key pair on the token → CSR →
//! certificate from the CA → written next to the key → application form signed with the new
//! key → minimized record and certificate event to the outbox), certificate use (signing a
//! document, verified in software before it is returned) and the lifecycle (renew, revoke,
//! suspend, resume, after the holder is verified again and only for their own certificate).
//! Progress goes to the events stream.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hsm::{KeyAlgorithm, Pin, PinState, Token, TokenError, UserKind};
use records::wire::{CertificateEvent, CertificateEventKind, KeyedDigest, OpaqueBytes};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use zeroize::Zeroizing;

use super::issuance::{self, Issued};
use super::plan::{ENTERPRISE_SERVICE, Step};
use super::ukey::{Holder, algorithm_of};
use super::{Error, ErrorKind, Kiosk, Result, blocking};
use crate::audit::Actor;
use crate::ca_client::{CaClient, IssuedCertificate};
use crate::clock::now_ms;
use crate::privacy::Personal;
use crate::privacy::minimize::HqSealer;
use crate::session::ApplicantSession;

/// How long the issuance waits for the link to HQ / the CA to come up.
const LINK_WAIT: Duration = Duration::from_secs(20);

/// Revocation reasons the CA takes (RFC 5280 names).
pub const REVOCATION_REASONS: [&str; 5] = [
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
];

/// The holder's PIN for the issuance; wiped when dropped.
#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
pub struct IssueInput {
    pub pin: String,
    /// The holder's own PIN, replacing the initial one (required when the UKEY says its PIN
    /// is to be changed, as after staff issuance).
    #[serde(default)]
    pub new_pin: Option<String>,
}

#[derive(Serialize)]
pub struct CertificateView {
    pub serial: String,
    /// The subject with the holder's name masked.
    pub subject: String,
    pub issuer: String,
    pub not_after: i64,
    pub algorithm: &'static str,
}

#[derive(Serialize)]
pub struct FormSignature {
    pub algorithm: &'static str,
    pub verified: bool,
}

/// A certificate issued onto the UKEY, the signed application form, the record queued.
#[derive(Serialize)]
pub struct IssueOutcome {
    pub certificate: CertificateView,
    pub form_signature: FormSignature,
    pub record_queued: bool,
}

/// A document signed by the holder's key, verified in software.
#[derive(Serialize)]
pub struct Signed {
    pub algorithm: &'static str,
    pub signature_b64: String,
    pub document_digest: String,
    pub certificate_serial: String,
    pub verified: bool,
}

/// What the holder asks of their certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleAction {
    Renew,
    Revoke,
    Suspend,
    Resume,
}

impl LifecycleAction {
    /// The action named in a request.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "renew" => Self::Renew,
            "revoke" => Self::Revoke,
            "suspend" => Self::Suspend,
            "resume" => Self::Resume,
            _ => {
                return Err(Error::not_found_code(
                    "unknown_action",
                    "the action is one of renew, revoke, suspend, resume",
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Renew => "renew",
            Self::Revoke => "revoke",
            Self::Suspend => "suspend",
            Self::Resume => "resume",
        }
    }
}

/// The holder's PIN and, for a revocation, its reason; wiped when dropped.
#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
pub struct LifecycleInput {
    pub pin: String,
    /// Revocation reason (`keyCompromise`, `superseded`, `cessationOfOperation`, `unspecified`).
    pub reason: Option<String>,
}

#[derive(Serialize)]
pub struct LifecycleOutcome {
    pub serial: String,
    pub status: &'static str,
    pub action: &'static str,
}

/// The revocation reason of a lifecycle request (`unspecified` when absent), checked before
/// anything is done: an unknown one is the applicant's mistake, not a CA failure.
fn revocation_reason(reason: Option<&str>) -> Result<&'static str> {
    let Some(given) = reason else {
        return Ok("unspecified");
    };
    REVOCATION_REASONS
        .iter()
        .copied()
        .find(|r| *r == given)
        .ok_or_else(|| {
            Error::unprocessable(
                "invalid_reason",
                format!("the reason is one of {}", REVOCATION_REASONS.join(", ")),
            )
        })
}

/// The certificate subject from the holder's verified values, or why it cannot be one.
fn holder_subject(values: &[Personal], digest: &[u8; 32]) -> Result<String> {
    issuance::subject_name(values, digest)
        .map_err(|e| Error::unprocessable("unusable_name", e.to_string()))
}

/// Digest of a signed document for the record (SM3 for SM2 keys, SHA-256 for P-256).
fn document_digest(algorithm: KeyAlgorithm, document: &[u8]) -> String {
    match algorithm {
        KeyAlgorithm::Sm2 => hex::encode(sm3::Sm3::digest(document)),
        KeyAlgorithm::P256 => hex::encode(sha2::Sha256::digest(document)),
    }
}

/// A certificate serial as the CA names it: lower-case hex without separators.
fn plain_serial(rendered: &str) -> String {
    rendered.replace(':', "").to_ascii_lowercase()
}

/// The subject as the screen may show it: the name masked like everywhere else.
fn mask_subject(subject: &str) -> String {
    subject
        .split(',')
        .map(|part| match part.trim().split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("CN") => {
                let first: String = v.chars().take(1).collect();
                format!(
                    "CN={first}{}",
                    "*".repeat(v.chars().count().saturating_sub(1))
                )
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the token part of the issuance produced.
struct OnToken {
    cert: IssuedCertificate,
    form: Vec<u8>,
    signature: Vec<u8>,
    algorithm: KeyAlgorithm,
}

impl Kiosk {
    /// Issue a certificate onto the inserted UKEY for the verified holder.
    pub async fn issue_certificate(
        &self,
        session: &ApplicantSession,
        mut input: IssueInput,
    ) -> Result<IssueOutcome> {
        self.check_issuance_steps(session)?;
        // Everything that can be missing is checked before the token is touched.
        let recipient = self.hq_recipient.get(LINK_WAIT).await.ok_or_else(|| {
            Error::unavailable(
                "hq_key_unavailable",
                "HQ's record key is not known yet; try again in a moment",
            )
        })?;
        let ca = self.ca.client(LINK_WAIT).await?;
        let mut holder = self.holder_values(session).await?;
        // What the applicant typed or declared (mobile, the enterprise's fields) goes with it.
        holder.values.extend(self.memory.typed(&session.id));
        let subject = holder_subject(&holder.values, &holder.digest)?;
        let (token, info) = self.find_ukey().await?;
        self.events.device("ukey", true);
        let new_pin = input.new_pin.take().map(Zeroizing::new);
        if info.pin_state == PinState::ToBeChanged && new_pin.is_none() {
            return Err(Error::conflict(
                "pin_change_required",
                "this UKEY still has its initial PIN: choose your own PIN",
            ));
        }
        let old_pin = Zeroizing::new(std::mem::take(&mut input.pin));
        self.login_holder(session, &token, old_pin.clone()).await?;
        if let Some(new_pin) = new_pin {
            let changed = token
                .change_pin(
                    UserKind::User,
                    &Pin::new(old_pin.as_str()),
                    &Pin::new(new_pin.as_str()),
                )
                .await;
            if let Err(e) = changed {
                let _ = token.logout().await;
                return Err(e.into());
            }
        }
        let result = self
            .issue_on_token(session, &token, &ca, &subject, &holder.digest)
            .await;
        let _ = token.logout().await;
        let done = result?;
        self.record_issuance(session, holder, &done, recipient)
            .await?;
        self.events.step(&session.id, "ukey", "done", 100);
        let parsed = hsm::csr::parse_certificate(&done.cert.der)?;
        Ok(IssueOutcome {
            certificate: CertificateView {
                serial: done.cert.serial_hex,
                subject: mask_subject(&parsed.subject),
                issuer: parsed.issuer,
                not_after: parsed.not_after_unix,
                algorithm: done.algorithm.name(),
            },
            form_signature: FormSignature {
                algorithm: done.algorithm.name(),
                verified: true,
            },
            record_queued: true,
        })
    }

    /// The service issues a certificate and its steps before the UKEY are done.
    fn check_issuance_steps(&self, session: &ApplicantSession) -> Result<()> {
        let plan = super::plan::steps(&session.service, false, false);
        if !plan.contains(&Step::Ukey) {
            return Err(Error::conflict(
                "wrong_service",
                "this service does not issue a certificate",
            ));
        }
        self.require_ready(session, Step::Ukey)?;
        let declared = self
            .memory
            .progress(&session.id)
            .done
            .contains(&Step::Enterprise);
        if session.service == ENTERPRISE_SERVICE && !declared {
            return Err(Error::conflict(
                "step_out_of_order",
                "declare the enterprise's fields first",
            )
            .with_details(serde_json::json!({ "missing": "enterprise" })));
        }
        Ok(())
    }

    /// The minimized, sealed record and the certificate event, in one transaction, unless
    /// the session ended meanwhile.
    async fn record_issuance(
        &self,
        session: &ApplicantSession,
        mut holder: Holder,
        done: &OnToken,
        recipient: records::envelope::RecipientPublicKeys,
    ) -> Result<()> {
        holder.values.push(Personal::new(
            "certificate",
            base64::engine::general_purpose::STANDARD.encode(&done.cert.der),
        ));
        holder.values.push(Personal::new(
            "signature_value",
            hex::encode(&done.signature),
        ));
        holder.values.push(Personal::new(
            "document_digest",
            document_digest(done.algorithm, &done.form),
        ));
        let st = self.clone();
        let s = session.clone();
        let serial = done.cert.serial_hex.clone();
        let not_after = done.cert.not_after_ms / 1000;
        let sealer = HqSealer {
            suite: match self.config.hq.suite {
                kiosk_config::EnvelopeSuite::Gm => records::envelope::Suite::Gm,
                kiosk_config::EnvelopeSuite::Nist => records::envelope::Suite::Nist,
            },
            recipient,
        };
        let queued = blocking(move || {
            let mut conn = st.store.conn()?;
            if !st.sessions.is_open(&s.id) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    "session_not_found",
                    "the session ended during the issuance",
                ));
            }
            let tx = conn.transaction()?;
            let seq = issuance::enqueue_issued(
                &tx,
                &st.catalog,
                st.keys.vault.as_ref(),
                &sealer,
                &Issued {
                    session: &s.id,
                    service: &s.service,
                    subject_id: &holder.subject_id,
                    subject_digest: holder.digest,
                    digest_algorithm: st.keys.digest_algorithm,
                    values: holder.values,
                    serial_hex: &serial,
                    not_after_unix: not_after,
                    kind: CertificateEventKind::Issued,
                    at_ms: now_ms(),
                },
            )
            .map_err(|e| {
                tracing::error!(error = %e, "recording the issuance failed");
                Error::internal("the issuance could not be recorded")
            })?;
            tx.commit()?;
            Ok(seq)
        })
        .await?;
        let serial = done.cert.serial_hex.clone();
        self.memory.update_progress(&session.id, |p| {
            p.done.insert(Step::Ukey);
            p.done.insert(Step::Done);
            p.certificate_serial = Some(serial);
        });
        tracing::info!(session = %session.id, serial = %done.cert.serial_hex, outbox_seq = queued, "certificate issued onto the UKEY");
        Ok(())
    }

    /// The token part of the issuance, logged in: the key (a leftover of an unfinished
    /// issuance on this UKEY is reused; a key with a certificate means the UKEY is in use),
    /// the CSR, the certificate (revoked again if it cannot be written), the signed form.
    async fn issue_on_token(
        &self,
        session: &ApplicantSession,
        token: &Arc<dyn Token>,
        ca: &CaClient,
        subject: &str,
        subject_digest: &[u8; 32],
    ) -> Result<OnToken> {
        let label = self.config.ukey.key_label.clone();
        let step = |phase: &str, pct: u8| self.events.step(&session.id, "ukey", phase, pct);
        step("generating_key", 15);
        let key = match token.key(&label).await {
            Ok(existing) => {
                if token.read_certificate(&label).await?.is_some() {
                    return Err(Error::conflict(
                        "ukey_in_use",
                        "this UKEY already holds a certificate; use the lifecycle services",
                    ));
                }
                existing
            }
            Err(TokenError::NoSuchKey(_)) => {
                token
                    .generate_key_pair(&label, algorithm_of(&self.config))
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
        // The key the CSR is made with is checked before anything goes to the CA: a test
        // signature as the UKEY's vendor profile says, verified in software.
        token.probe(Some(&label)).await?;
        step("requesting_certificate", 45);
        let csr = hsm::csr::build_csr(token.as_ref(), &label, subject).await?;
        let holder = crate::ca_client::Holder {
            digest: subject_digest,
            service: &session.service,
            application: &session.id,
        };
        let cert = ca.enroll(&csr.der, &holder).await?;
        let written = async {
            let parsed = hsm::csr::parse_certificate(&cert.der)?;
            if parsed.public_key != key.public_key {
                return Err(TokenError::Encoding("the CA certified another key".into()));
            }
            step("writing_certificate", 70);
            token.write_certificate(&label, &cert.der).await?;
            step("signing_form", 85);
            let form = issuance::application_form(
                &session.service,
                &self.config.kiosk.id,
                &self.catalog.policy_version,
                &cert.serial_hex,
                subject_digest,
                now_ms(),
            );
            let signature = token.sign(&label, &form).await?;
            hsm::soft_crypto::verify(
                key.algorithm,
                &key.public_key,
                token.sm2_distid(),
                &form,
                &signature.raw,
            )?;
            Ok((form, signature.to_der()?))
        }
        .await;
        match written {
            Ok((form, signature)) => Ok(OnToken {
                cert,
                form,
                signature,
                algorithm: key.algorithm,
            }),
            Err(e) => {
                // Nothing half-written: the certificate that did not reach the UKEY is revoked.
                if let Err(revoke) = ca
                    .revoke(&cert.serial_hex, "cessationOfOperation", &holder)
                    .await
                {
                    tracing::warn!(serial = %cert.serial_hex, error = %revoke, "revoking an unwritten certificate failed");
                }
                Err(e.into())
            }
        }
    }

    /// Certificate use: sign `document` with the holder's key after their PIN; verified in
    /// software before it is returned.
    pub async fn sign_document(
        &self,
        session: &ApplicantSession,
        pin: Zeroizing<String>,
        document: &[u8],
    ) -> Result<Signed> {
        Self::require_service(
            session,
            "certificate_use",
            "signing is the certificate_use service",
        )?;
        if document.is_empty() {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "bad_document",
                "the document is empty",
            ));
        }
        // The purpose consent of certificate use comes first, like every service.
        self.require_consent(session, &["document_digest"]).await?;
        let token = self.holder_ukey(session, pin).await?;
        let label = self.config.ukey.key_label.clone();
        let signed = async {
            let key = token.key(&label).await?;
            let cert = token
                .read_certificate(&label)
                .await?
                .ok_or_else(|| TokenError::NoSuchCertificate(label.clone()))?;
            let parsed = hsm::csr::parse_certificate(&cert)?;
            let signature = token.sign(&label, document).await?;
            hsm::soft_crypto::verify(
                key.algorithm,
                &key.public_key,
                token.sm2_distid(),
                document,
                &signature.raw,
            )?;
            Ok::<_, TokenError>((
                key.algorithm,
                plain_serial(&parsed.serial_hex),
                signature.to_der()?,
            ))
        }
        .await;
        let _ = token.logout().await;
        let (algorithm, serial, der) = signed.map_err(|e| match e {
            TokenError::NoSuchKey(_) | TokenError::NoSuchCertificate(_) => Error::conflict(
                "no_certificate",
                "this UKEY holds no certificate to sign with",
            ),
            other => other.into(),
        })?;
        let digest = document_digest(algorithm, document);
        self.record_event(
            Actor::Applicant(session.id.clone()),
            "certificate.sign",
            None,
            serde_json::json!({ "serial": serial, "document_digest": digest }),
        )
        .await?;
        self.memory.complete(&session.id, Step::Sign);
        Ok(Signed {
            algorithm: algorithm.name(),
            signature_b64: base64::engine::general_purpose::STANDARD.encode(&der),
            document_digest: digest,
            certificate_serial: serial,
            verified: true,
        })
    }

    /// Renew, revoke, suspend or resume the certificate on the inserted UKEY, once the
    /// holder has read their card and been verified again, and only if the certificate is
    /// theirs.
    pub async fn certificate_lifecycle(
        &self,
        session: &ApplicantSession,
        action: &str,
        mut input: LifecycleInput,
    ) -> Result<LifecycleOutcome> {
        Self::require_service(
            session,
            "lifecycle",
            "certificate actions are the lifecycle service",
        )?;
        let action = LifecycleAction::parse(action)?;
        let reason = revocation_reason(input.reason.as_deref())?;
        self.require_ready(session, Step::Lifecycle)?;
        let ca = self.ca.client(LINK_WAIT).await?;
        let holder = self.holder_values(session).await?;
        let subject = holder_subject(&holder.values, &holder.digest)?;
        let pin = Zeroizing::new(std::mem::take(&mut input.pin));
        let token = self.holder_ukey(session, pin).await?;
        let label = self.config.ukey.key_label.clone();
        let ca_holder = crate::ca_client::Holder {
            digest: &holder.digest,
            service: &session.service,
            application: &session.id,
        };
        let done =
            lifecycle_on_token(&token, &ca, &label, action, &ca_holder, &subject, reason).await;
        let _ = token.logout().await;
        let (serial, status, not_after, kind) = done?;
        self.record_lifecycle(session, holder.digest, &serial, not_after, kind)
            .await?;
        self.memory.update_progress(&session.id, |p| {
            p.done.insert(Step::Lifecycle);
            p.done.insert(Step::Done);
            p.certificate_serial = Some(serial.clone());
        });
        Ok(LifecycleOutcome {
            serial,
            status,
            action: action.as_str(),
        })
    }

    /// The certificate event of a lifecycle action, to the outbox.
    async fn record_lifecycle(
        &self,
        session: &ApplicantSession,
        digest: [u8; 32],
        serial: &str,
        not_after: i64,
        kind: CertificateEventKind,
    ) -> Result<()> {
        let st = self.clone();
        let s = session.clone();
        let event_serial = serial.to_string();
        blocking(move || {
            let mut conn = st.store.conn()?;
            let tx = conn.transaction()?;
            let event = CertificateEvent {
                subject_ref: KeyedDigest {
                    algorithm: st.keys.digest_algorithm.to_string(),
                    key_id: "kiosk-keyed-digest".into(),
                    digest: OpaqueBytes(digest.to_vec()),
                },
                serial_hex: event_serial,
                kind,
                government_use: false,
                not_after,
                occurred_at: now_ms() / 1000,
            };
            issuance::enqueue_event(&tx, &s.id, event, digest, now_ms())
                .map_err(|e| Error::internal(e.to_string()))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// The certificate on the token must name the verified holder (its `serialNumber` is the
/// keyed digest of their ID number); then the CA does the action.
async fn lifecycle_on_token(
    token: &Arc<dyn Token>,
    ca: &CaClient,
    label: &str,
    action: LifecycleAction,
    holder: &crate::ca_client::Holder<'_>,
    subject: &str,
    reason: &str,
) -> Result<(String, &'static str, i64, CertificateEventKind)> {
    let digest = holder.digest;
    let cert = token
        .read_certificate(label)
        .await?
        .ok_or_else(|| Error::conflict("no_certificate", "this UKEY holds no certificate"))?;
    let parsed = hsm::csr::parse_certificate(&cert)?;
    let expected = format!("serialNumber={}", hex::encode(&digest[..16]));
    if !parsed
        .subject
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case(&expected))
    {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "not_holder",
            "the certificate on this UKEY belongs to someone else",
        ));
    }
    let serial = plain_serial(&parsed.serial_hex);
    let not_after = parsed.not_after_unix;
    match action {
        LifecycleAction::Renew => {
            let csr = hsm::csr::build_csr(token.as_ref(), label, subject).await?;
            let renewed = ca.reenroll(&csr.der, holder).await?;
            token.write_certificate(label, &renewed.der).await?;
            if let Err(e) = ca.revoke(&serial, "superseded", holder).await {
                tracing::warn!(error = %e, "revoking the superseded certificate failed");
            }
            Ok((
                renewed.serial_hex,
                "good",
                renewed.not_after_ms / 1000,
                CertificateEventKind::Renewed,
            ))
        }
        LifecycleAction::Revoke => {
            ca.revoke(&serial, reason, holder).await?;
            Ok((serial, "revoked", not_after, CertificateEventKind::Revoked))
        }
        LifecycleAction::Suspend => {
            ca.hold(&serial, holder).await?;
            Ok((serial, "held", not_after, CertificateEventKind::Suspended))
        }
        LifecycleAction::Resume => {
            ca.release(&serial, holder).await?;
            // Resumed: reported to HQ as a renewal of the same serial (the record type has no
            // "resumed" kind; HQ reads the serial's status from the CA).
            Ok((serial, "good", not_after, CertificateEventKind::Renewed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_reason_defaults_to_unspecified_and_refuses_unknown_names() {
        assert_eq!(revocation_reason(None).unwrap(), "unspecified");
        assert_eq!(
            revocation_reason(Some("keyCompromise")).unwrap(),
            "keyCompromise"
        );
        for bad in ["", "KEYCOMPROMISE", "certificateHold", "removeFromCRL", "x"] {
            let e = revocation_reason(Some(bad)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unprocessable, "{bad:?}");
            assert_eq!(e.code, "invalid_reason", "{bad:?}");
        }
    }
}
