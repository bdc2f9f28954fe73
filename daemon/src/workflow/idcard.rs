//! The ID-card step: find, select and read the card; decode its text into
//! the catalog's items; apply the minors rule to the birth date; keep only the
//! items the service declares and the applicant consented to (sensitive ones
//! separately); store them encrypted as the session's subject. The answer shows
//! every value masked by the catalog's display rules.

use drivers::IdCardError;
use firmware_interfaces::sam::text::{CardText, ValidUntil};
use kiosk_config::Catalog;
use kiosk_config::catalog::LocalRetention;
use rusqlite::Connection;

use crate::privacy::Personal;
use crate::privacy::consent::{ConsentError, Ledger};
use crate::privacy::minors::{self, MinorError};

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
