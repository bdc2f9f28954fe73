//! The ID-card step: find, select and read the card; decode its text into
//! the catalog's items; apply the minors rule to the birth date; keep only the
//! items the service declares and the applicant consented to (sensitive ones
//! separately); store them encrypted as the session's subject. The answer shows
//! every value masked by the catalog's display rules. A guardian's card, read
//! before a minor's, is checked for age and its consent recorded.

use drivers::IdCardError;
use firmware_interfaces::sam::text::{CardText, ValidUntil};
use kiosk_config::Catalog;
use kiosk_config::catalog::LocalRetention;
use rusqlite::Connection;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::plan::Step;
use super::{Error, Kiosk, Result, blocking};
use crate::audit::Actor;
use crate::clock::now_ms;
use crate::privacy::Personal;
use crate::privacy::consent::{ConsentError, Ledger};
use crate::privacy::minors::{self, MinorError};
use crate::session::{ApplicantSession, CardBiometrics};
use crate::store::subjects::Subjects;

/// The card's text as catalog items (clear values, never logged).
pub fn card_items(text: &CardText) -> Vec<Personal> {
    let mut out = vec![
        Personal::new("name", text.name().expose()),
        Personal::new("sex", text.sex().as_str()),
        Personal::new("birth_date", text.birth_date().to_string()),
        Personal::new("id_number", text.identity_number().expose()),
        Personal::new(
            "id_validity",
            format!(
                "{}/{}",
                text.valid_from(),
                match text.valid_until() {
                    ValidUntil::Date(d) => d.to_string(),
                    ValidUntil::LongTerm => "long-term".into(),
                }
            ),
        ),
    ];
    if let Some(n) = text.nation() {
        out.push(Personal::new("nation", n.name()));
    }
    if let Some(a) = text.address() {
        out.push(Personal::new("address", a.expose()));
    }
    if let Some(a) = text.authority() {
        out.push(Personal::new("id_authority", a));
    }
    out
}

/// Why the step refused.
#[derive(Debug, thiserror::Error)]
pub enum IdCardStepError {
    #[error(transparent)]
    Device(#[from] IdCardError),
    #[error(transparent)]
    Consent(#[from] ConsentError),
    #[error(transparent)]
    Minor(#[from] MinorError),
}

/// What the step keeps: items to store, items kept for the session only, and
/// items withheld because the applicant did not consent to optional ones.
#[derive(Debug, Default)]
pub struct Selected {
    pub store: Vec<Personal>,
    pub session_only: Vec<Personal>,
    pub withheld: Vec<String>,
}

/// Sort the card's items by consent and retention. A required item without
/// consent fails the step; an optional one is simply not collected.
pub fn select(
    catalog: &Catalog,
    conn: &Connection,
    session: &str,
    service: &str,
    items: Vec<Personal>,
) -> Result<Selected, IdCardStepError> {
    let ledger = Ledger { catalog, session };
    let mut out = Selected::default();
    for p in items {
        match ledger.require(conn, service, None, p.item()) {
            Ok(()) => {}
            Err(ConsentError::Catalog(_)) => {
                out.withheld.push(p.item().to_string());
                continue;
            }
            Err(e) => {
                let required = catalog
                    .service(service)
                    .map(|s| s.required.iter().any(|i| i == p.item()))
                    .unwrap_or(false);
                if required {
                    return Err(e.into());
                }
                out.withheld.push(p.item().to_string());
                continue;
            }
        }
        match catalog.item(p.item()).map(|d| d.retention) {
            Ok(LocalRetention::UntilHqAck) => out.store.push(p),
            _ => out.session_only.push(p),
        }
    }
    Ok(out)
}

/// The minors rule on the card's birth date.
pub fn check_age(
    catalog: &Catalog,
    text: &CardText,
    today: time::Date,
    guardian: Option<&minors::VerifiedGuardian>,
) -> Result<(), MinorError> {
    minors::check(
        text.birth_date().date(),
        today,
        catalog.minors.guardian_required_under,
        guardian,
    )
}

/// The guardian's card as the catalog's guardian items.
pub fn guardian_items(text: &CardText) -> Vec<Personal> {
    vec![
        Personal::new("guardian_name", text.name().expose()),
        Personal::new("guardian_id_number", text.identity_number().expose()),
    ]
}

/// A value read from the card as the screen shows it: masked, with its purpose.
#[derive(Serialize)]
pub struct ItemOut {
    pub value: String,
    pub label: String,
    pub purpose: String,
}

/// The card read: its type, the kept items masked, the items not kept.
#[derive(Serialize)]
pub struct CardOut {
    pub card_type: &'static str,
    pub fields: BTreeMap<String, ItemOut>,
    pub withheld: Vec<String>,
}

#[derive(Serialize)]
pub struct GuardianName {
    pub name: String,
}

/// The guardian was verified as an adult and their consent recorded.
#[derive(Serialize)]
pub struct GuardianOut {
    pub verified: bool,
    pub guardian: GuardianName,
}

fn card_type(text: &CardText) -> &'static str {
    match text {
        CardText::Resident(_) => "resident",
        CardText::HkMacaoTaiwan(_) => "hk_macao_taiwan",
        CardText::ForeignPermanent2017(_) => "foreign_permanent_2017",
        CardText::ForeignPermanent2023(_) => "foreign_permanent_2023",
    }
}

impl Kiosk {
    /// Read the applicant's ID card into the session's subject and answer with every value
    /// masked and the purpose of each item stated.
    pub async fn read_idcard(&self, session: &ApplicantSession) -> Result<CardOut> {
        let card = self.read_card().await?;
        let text = card.text;
        let today = time::OffsetDateTime::now_utc().date();
        let guardian = self.memory.guardian(&session.id);
        check_age(
            &self.catalog,
            &text,
            today,
            guardian.as_ref().map(|g| &g.verified),
        )
        .map_err(IdCardStepError::from)?;
        let card_type = card_type(&text);
        let mut items = card_items(&text);
        if let Some(g) = guardian {
            items.extend(g.items);
        }
        let (shown, withheld) = self.store_card(session, items, card.data).await?;
        let service_label = self
            .catalog
            .service(&session.service)
            .map(|s| s.label.clone())
            .unwrap_or_default();
        let fields = shown
            .iter()
            .map(|p| {
                let label = self
                    .catalog
                    .items
                    .get(p.item())
                    .map(|d| d.label.clone())
                    .unwrap_or_default();
                let out = ItemOut {
                    value: p.masked(&self.catalog),
                    purpose: format!("{label}: {service_label}"),
                    label,
                };
                (p.item().to_string(), out)
            })
            .collect();
        tracing::info!(session = %session.id, card_type, "ID card read");
        Ok(CardOut {
            card_type,
            fields,
            withheld,
        })
    }

    /// Keep what the service declares and the applicant consented to: the stored items as
    /// the session's subject (a second read replaces the first), the biometrics consented
    /// to in memory. Answers what may be shown and what was withheld.
    async fn store_card(
        &self,
        session: &ApplicantSession,
        items: Vec<Personal>,
        card_data: firmware_interfaces::sam::CardData,
    ) -> Result<(Vec<Personal>, Vec<String>)> {
        let st = self.clone();
        let s = session.clone();
        blocking(move || {
            let mut conn = st.store.conn()?;
            if !st.sessions.is_open(&s.id) {
                return Err(Error::not_found_code(
                    "session_not_found",
                    "the session ended while the card was read",
                ));
            }
            let selected = select(&st.catalog, &conn, &s.id, &s.service, items)?;
            let ledger = Ledger {
                catalog: &st.catalog,
                session: &s.id,
            };
            let consented = |item: &str| ledger.require(&conn, &s.service, None, item).is_ok();
            let biometrics = CardBiometrics {
                photo: consented("id_photo").then(|| card_data.photo.clone()),
                fingerprints: if consented("fingerprint") {
                    card_data.fingerprints.clone()
                } else {
                    Vec::new()
                },
            };
            let subjects = st.subjects();
            let id_number = selected
                .store
                .iter()
                .find(|p| p.item() == "id_number")
                .cloned()
                .ok_or_else(|| {
                    Error::unprocessable("consent_required", "the ID-card number needs consent")
                })?;
            let digest = subjects
                .digest_of(&id_number)
                .map_err(Error::token_unavailable)?;
            let tx = conn.transaction()?;
            let previous: Vec<String> = tx
                .prepare(
                    "SELECT subject_id FROM subjects WHERE session_id = ?1 AND purged_at IS NULL",
                )?
                .query_map([&s.id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let actor = Actor::Applicant(s.id.clone());
            for p in previous {
                Subjects::purge(&tx, now_ms(), &actor, &p, "replaced")
                    .map_err(|e| Error::internal(e.to_string()))?;
            }
            subjects
                .create(&tx, now_ms(), &actor, &s.id, digest, &selected.store)
                .map_err(|e| Error::internal(e.to_string()))?;
            tx.commit()?;
            st.memory.put_card(&s.id, biometrics);
            st.memory.complete(&s.id, Step::Idcard);
            let shown = selected
                .store
                .into_iter()
                .chain(selected.session_only)
                .collect();
            Ok((shown, selected.withheld))
        })
        .await
    }

    /// Read the card on the reader, with a bound on the whole operation.
    async fn read_card(&self) -> Result<drivers::CardRead> {
        let mut reader = self.devices.idcard.lock().await;
        Ok(
            tokio::time::timeout(Duration::from_secs(20), reader.read_card())
                .await
                .map_err(|_| {
                    Error::new(
                        super::ErrorKind::Timeout,
                        "device_timeout",
                        "the ID-card reader did not answer",
                    )
                })?
                .map_err(IdCardStepError::from)?,
        )
    }

    /// A guardian places their own ID card before a minor's. They must be an adult; their
    /// consent for the minor is recorded (audited, with their keyed digest only) and held in
    /// the session's memory until the minor's card is read; their name and ID number then go
    /// with the minor's record as the catalog's guardian items.
    pub async fn register_guardian(&self, session: &ApplicantSession) -> Result<GuardianOut> {
        self.require_consent(session, &["guardian_name", "guardian_id_number"])
            .await?;
        let text = self.read_card().await?.text;
        let today = time::OffsetDateTime::now_utc().date();
        let birth = text.birth_date().date();
        if minors::age_on(birth, today) < 18 {
            return Err(Error::new(
                super::ErrorKind::Forbidden,
                "guardian_not_adult",
                "a guardian must be an adult",
            ));
        }
        let items = guardian_items(&text);
        let digest = self.record_guardian_consent(session, &items[1]).await?;
        let masked_name = items[0].masked(&self.catalog);
        self.memory.put_guardian(
            &session.id,
            crate::session::Guardian {
                verified: minors::VerifiedGuardian {
                    birth,
                    subject_digest: digest,
                    consented: true,
                },
                items,
            },
        );
        tracing::info!(session = %session.id, "guardian verified and consented");
        Ok(GuardianOut {
            verified: true,
            guardian: GuardianName { name: masked_name },
        })
    }

    /// The guardian's consent, audited under their keyed digest.
    async fn record_guardian_consent(
        &self,
        session: &ApplicantSession,
        id_item: &Personal,
    ) -> Result<[u8; 32]> {
        let st = self.clone();
        let sid = session.id.clone();
        let id_item = id_item.clone();
        blocking(move || {
            let digest = crate::keys::KeyVault::keyed_digest(
                st.keys.vault.as_ref(),
                "subject",
                id_item.expose().as_bytes(),
            )
            .map_err(Error::token_unavailable)?;
            let mut conn = st.store.conn()?;
            crate::audit::record(
                &mut conn,
                now_ms(),
                &crate::audit::AuditEvent {
                    actor: Actor::Applicant(sid),
                    action: "consent.guardian",
                    subject: Some(digest),
                    detail: serde_json::json!({ "policy": st.catalog.policy_version }),
                },
            )?;
            Ok(digest)
        })
        .await
    }
}
