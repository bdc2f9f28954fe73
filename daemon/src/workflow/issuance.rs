//! Issuing a certificate onto the applicant's UKEY and what it leaves behind: the subject
//! name (the ID number only as a keyed digest, REQUIREMENTS §4), the application form the
//! holder signs with the new key, and the minimized record and certificate event that enter
//! the outbox in one transaction with the audit entry.

use kiosk_config::{Catalog, Destination};
use records::wire::{CertificateEvent, CertificateEventKind, KeyedDigest, OpaqueBytes, Record};
use rusqlite::Transaction;
use serde_json::json;

use crate::audit::{self, Actor, AuditEvent};
use crate::keys::KeyVault;
use crate::privacy::Personal;
use crate::privacy::minimize::{HqSealer, minimize};
use crate::store::outbox::{self, Outgoing};

/// Why the issuance could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    #[error("the name cannot go into a certificate subject (it holds , + = or quotes)")]
    UnusableName,
    #[error("the card's {0} is missing from the session")]
    Missing(&'static str),
    #[error("sealing the record to HQ: {0}")]
    Keys(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
}

/// A value that can stand in an RFC 4514 string without escaping.
fn is_plain_rdn(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && !v
            .chars()
            .any(|c| matches!(c, ',' | '+' | '=' | '"' | '\\' | '<' | '>' | ';'))
}

/// The certificate subject for the holder: their name, the keyed digest of their ID number
/// as `serialNumber` (never the number itself) and the country.
pub fn subject_name(
    values: &[Personal],
    subject_digest: &[u8; 32],
) -> Result<String, IssuanceError> {
    let name = values
        .iter()
        .find(|p| p.item() == "name")
        .ok_or(IssuanceError::Missing("name"))?;
    let n = name.expose();
    if !is_plain_rdn(n) {
        return Err(IssuanceError::UnusableName);
    }
    let organization = match values.iter().find(|p| p.item() == "enterprise_name") {
        Some(o) if is_plain_rdn(o.expose()) => format!(",O={}", o.expose()),
        Some(_) => return Err(IssuanceError::UnusableName),
        None => String::new(),
    };
    Ok(format!(
        "CN={n},serialNumber={}{organization},C=CN",
        hex::encode(&subject_digest[..16])
    ))
}

/// The application form the holder signs with their new key: what was applied for, with
/// which certificate, at which kiosk and under which privacy policy — no personal value in
/// clear (the subject appears as its keyed digest).
pub fn application_form(
    service: &str,
    kiosk_id: &str,
    policy_version: &str,
    serial_hex: &str,
    subject_digest: &[u8; 32],
    at_ms: i64,
) -> Vec<u8> {
    json!({
        "form": "kioskd.application.v1",
        "service": service,
        "kiosk": kiosk_id,
        "policy_version": policy_version,
        "certificate_serial": serial_hex,
        "subject_ref": hex::encode(subject_digest),
        "signed_at_ms": at_ms,
    })
    .to_string()
    .into_bytes()
}

/// What the issuance step hands to [`enqueue_issued`].
pub struct Issued<'a> {
    pub session: &'a str,
    pub service: &'a str,
    pub subject_id: &'a str,
    pub subject_digest: [u8; 32],
    pub digest_algorithm: &'a str,
    /// The card's stored items plus what the applicant typed, plus the certificate, the
    /// signature and the digest of the signed form (the minimizer decides what leaves).
    pub values: Vec<Personal>,
    pub serial_hex: &'a str,
    pub not_after_unix: i64,
    pub kind: CertificateEventKind,
    pub at_ms: i64,
}

/// Minimize the applicant's values for HQ and enqueue the applicant record and the
/// certificate event with the audit entry, inside `tx`.
pub fn enqueue_issued(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    vault: &dyn KeyVault,
    sealer: &HqSealer,
    issued: &Issued<'_>,
) -> Result<u64, IssuanceError> {
    let subject_ref = KeyedDigest {
        algorithm: issued.digest_algorithm.to_string(),
        key_id: "kiosk-keyed-digest".into(),
        digest: OpaqueBytes(issued.subject_digest.to_vec()),
    };
    let minimized = minimize(catalog, Destination::Hq, &issued.values, vault, sealer)?;
    let dropped = minimized.dropped().to_vec();
    let record = minimized.into_applicant_record(
        subject_ref.clone(),
        issued.service,
        &catalog.version,
        issued.subject_id.to_string(),
    );
    outbox::enqueue(tx, issued.at_ms, &record)?;
    let event = CertificateEvent {
        subject_ref,
        serial_hex: issued.serial_hex.to_string(),
        kind: issued.kind,
        government_use: false,
        not_after: issued.not_after_unix,
        occurred_at: issued.at_ms / 1000,
    };
    let last = enqueue_event(
        tx,
        issued.session,
        event,
        issued.subject_digest,
        issued.at_ms,
    )?;
    audit::append(
        tx,
        issued.at_ms,
        &AuditEvent {
            actor: Actor::Applicant(issued.session.to_string()),
            action: "certificate.issued",
            subject: Some(issued.subject_digest),
            detail: json!({
                "serial": issued.serial_hex,
                "service": issued.service,
                "withheld_from_hq": dropped,
            }),
        },
    )?;
    Ok(last)
}

/// A certificate lifecycle event for HQ (no personal values), with its audit entry.
pub fn enqueue_event(
    tx: &Transaction<'_>,
    session: &str,
    event: CertificateEvent,
    subject_digest: [u8; 32],
    at_ms: i64,
) -> Result<u64, IssuanceError> {
    let detail = json!({ "serial": event.serial_hex, "event": format!("{:?}", event.kind) });
    let seq = outbox::enqueue(
        tx,
        at_ms,
        &Outgoing::non_personal(Record::Certificate(event))
            .expect("a certificate event is not personal"),
    )?;
    audit::append(
        tx,
        at_ms,
        &AuditEvent {
            actor: Actor::Applicant(session.to_string()),
            action: "certificate.lifecycle",
            subject: Some(subject_digest),
            detail,
        },
    )?;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_carries_the_digest_never_the_id_number() {
        let values = vec![
            Personal::new("name", "测试甲"),
            Personal::new("id_number", "990101199001020013"),
        ];
        let s = subject_name(&values, &[7u8; 32]).unwrap();
        assert!(s.starts_with("CN=测试甲,serialNumber=0707"));
        assert!(!s.contains("990101199001020013"));
        let bad = vec![Personal::new("name", "A,O=Evil")];
        assert!(matches!(
            subject_name(&bad, &[0; 32]),
            Err(IssuanceError::UnusableName)
        ));
    }

    #[test]
    fn the_form_names_the_certificate_and_not_the_person() {
        let form = application_form("cert_application", "k1", "v1", "0a0b", &[1; 32], 5);
        let text = String::from_utf8(form).unwrap();
        assert!(text.contains("\"certificate_serial\":\"0a0b\""));
        assert!(text.contains(&hex::encode([1u8; 32])));
    }
}
