//! The enterprise declaration: for an enterprise certificate, the agent — read and verified
//! as an individual first — declares the enterprise's name, unified social credit code
//! (GB 32100, its check character verified) and legal representative. They are taken as
//! declared, kept in the session's memory and go with the record through the minimizer.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::plan::{ENTERPRISE_ITEMS, ENTERPRISE_SERVICE, Step};
use super::{Error, Kiosk, Result};
use crate::audit::Actor;
use crate::privacy::Personal;
use crate::session::ApplicantSession;

/// What the agent declares; wiped when dropped.
#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    pub enterprise_name: String,
    pub credit_code: String,
    pub legal_rep_name: String,
}

/// The declared values, masked.
#[derive(Serialize)]
pub struct Declared {
    pub declared: serde_json::Map<String, serde_json::Value>,
}

/// The characters of a unified social credit code (GB 32100-2015: no I, O, S, V, Z).
const CREDIT_CHARSET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
const CREDIT_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// Whether `code` is a well-formed unified social credit code with the right check character.
pub fn is_credit_code(code: &str) -> bool {
    let values: Option<Vec<u32>> = code
        .chars()
        .map(|c| CREDIT_CHARSET.find(c).map(|i| i as u32))
        .collect();
    let Some(values) = values else {
        return false;
    };
    if values.len() != 18 {
        return false;
    }
    let sum: u32 = values[..17]
        .iter()
        .zip(CREDIT_WEIGHTS)
        .map(|(v, w)| v * w)
        .sum();
    (31 - sum % 31) % 31 == values[17]
}

fn plain_text(v: &str) -> bool {
    let n = v.chars().count();
    (1..=100).contains(&n) && !v.chars().any(char::is_control)
}

/// The declaration's fields checked for form.
fn check(body: &Declaration) -> Result<()> {
    let invalid = |item: &str, why: &str| {
        Error::unprocessable("invalid_field", why.to_string()).with_details(json!({ "item": item }))
    };
    if !plain_text(&body.enterprise_name) {
        return Err(invalid(
            "enterprise_name",
            "the enterprise name is 1 to 100 characters",
        ));
    }
    if !plain_text(&body.legal_rep_name) {
        return Err(invalid(
            "legal_rep_name",
            "the representative's name is 1 to 100 characters",
        ));
    }
    if !is_credit_code(&body.credit_code) {
        return Err(invalid(
            "credit_code",
            "not a unified social credit code (18 characters, check character per GB 32100)",
        ));
    }
    Ok(())
}

impl Kiosk {
    /// Take the enterprise's declared fields into the session.
    pub async fn declare_enterprise(
        &self,
        session: &ApplicantSession,
        body: Declaration,
    ) -> Result<Declared> {
        Self::require_service(
            session,
            ENTERPRISE_SERVICE,
            "enterprise fields belong to the enterprise certificate application",
        )?;
        self.require_ready(session, Step::Enterprise)?;
        check(&body)?;
        self.require_consent(session, &ENTERPRISE_ITEMS).await?;
        let declared = vec![
            Personal::new("enterprise_name", body.enterprise_name.as_str()),
            Personal::new("credit_code", body.credit_code.as_str()),
            Personal::new("legal_rep_name", body.legal_rep_name.as_str()),
        ];
        let shown = declared
            .iter()
            .map(|p| (p.item().to_string(), json!(p.masked(&self.catalog))))
            .collect();
        let mut typed = self.memory.typed(&session.id);
        typed.retain(|p| !ENTERPRISE_ITEMS.contains(&p.item()));
        typed.extend(declared);
        self.memory.put_typed(&session.id, typed);
        self.memory.complete(&session.id, Step::Enterprise);
        self.record_event(
            Actor::Applicant(session.id.clone()),
            "enterprise.declared",
            None,
            json!({ "items": ENTERPRISE_ITEMS }),
        )
        .await?;
        Ok(Declared { declared: shown })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_codes_are_checked_by_their_check_character() {
        // Built from 17 characters with the GB 32100 weights, then every other final character.
        let body = "91350100M000100Y4";
        let check = (0..31)
            .find(|c| is_credit_code(&format!("{body}{}", &CREDIT_CHARSET[*c..*c + 1])))
            .expect("one check character fits");
        let good = format!("{body}{}", &CREDIT_CHARSET[check..check + 1]);
        assert!(is_credit_code(&good));
        let wrong = format!(
            "{body}{}",
            &CREDIT_CHARSET[(check + 1) % 31..(check + 1) % 31 + 1]
        );
        assert!(!is_credit_code(&wrong));
        assert!(!is_credit_code("91350100M000100Y4"), "too short");
        assert!(
            !is_credit_code("91350100M000100YIO"),
            "I and O are not in the charset"
        );
    }
}
