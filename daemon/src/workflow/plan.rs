//! Each service's steps in order, which of them are done, and what the screen asks next —
//! with the purpose of every number the next step asks for, stated at that moment
//! (REQUIREMENTS §1). Optional biometric steps are in the plan only when the applicant gave
//! their separate consent; verification is always offered by a non-face method too.

use std::collections::BTreeSet;

use kiosk_config::Catalog;
use serde::Serialize;

/// A step of an applicant workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Consents,
    Idcard,
    Face,
    Fingerprint,
    Verification,
    /// An enterprise applicant's agent declares the enterprise's fields.
    Enterprise,
    Ukey,
    Sign,
    Lifecycle,
    Rights,
    Done,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Consents => "consents",
            Step::Idcard => "idcard",
            Step::Face => "face",
            Step::Fingerprint => "fingerprint",
            Step::Verification => "verification",
            Step::Enterprise => "enterprise",
            Step::Ukey => "ukey",
            Step::Sign => "sign",
            Step::Lifecycle => "lifecycle",
            Step::Rights => "rights",
            Step::Done => "done",
        }
    }
}

/// The service whose applicant is an enterprise, represented by a verified agent.
pub const ENTERPRISE_SERVICE: &str = "enterprise_cert_application";

/// The enterprise's fields, taken as the agent declares them.
pub const ENTERPRISE_ITEMS: [&str; 3] = ["enterprise_name", "credit_code", "legal_rep_name"];

/// Items a verification method asks the applicant to type (the rest come from the card or
/// the camera).
pub const TYPED_ITEMS: [&str; 3] = ["mobile", "bank_card", "bank_mobile"];

/// The steps of `service`, given whether the applicant consented to `face_image` and
/// `fingerprint` (optional steps).
pub fn steps(service: &str, face: bool, fingerprint: bool) -> Vec<Step> {
    let mut plan = vec![Step::Consents];
    match service {
        "certificate_use" => plan.push(Step::Sign),
        _ => {
            plan.push(Step::Idcard);
            if face {
                plan.push(Step::Face);
            }
            if fingerprint {
                plan.push(Step::Fingerprint);
            }
            plan.push(Step::Verification);
            if service == ENTERPRISE_SERVICE {
                plan.push(Step::Enterprise);
            }
            plan.push(match service {
                "lifecycle" => Step::Lifecycle,
                "rights_request" => Step::Rights,
                _ => Step::Ukey,
            });
        }
    }
    plan.push(Step::Done);
    plan
}

/// The first step of `plan` not yet done.
pub fn next(plan: &[Step], done: &BTreeSet<Step>) -> Step {
    plan.iter()
        .copied()
        .find(|s| !done.contains(s))
        .unwrap_or(Step::Done)
}

/// A number the next step asks for, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ask {
    pub item: String,
    pub label: String,
    /// Which method wants it.
    pub method: String,
    pub purpose: String,
}

/// What `step` asks the applicant to type for `service`, each with its purpose.
pub fn asks(catalog: &Catalog, service: &str, step: Step) -> Vec<Ask> {
    if step != Step::Verification {
        return Vec::new();
    }
    let Ok(svc) = catalog.service(service) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in &svc.methods {
        let Ok(method) = catalog.method(m) else {
            continue;
        };
        for item in method
            .fields
            .iter()
            .filter(|f| TYPED_ITEMS.contains(&f.as_str()))
        {
            let label = catalog
                .items
                .get(item)
                .map(|d| d.label.clone())
                .unwrap_or_else(|| item.clone());
            out.push(Ask {
                item: item.clone(),
                label,
                method: m.clone(),
                purpose: format!(
                    "用于{}，核验您的身份以办理{} / used by {} to verify your identity for {}",
                    method.label, svc.label, method.recipient, svc.label
                ),
            });
        }
    }
    out
}

/// Whether `step` may run once `done` holds: a UKEY, a lifecycle action or a rights request
/// needs the card read and the identity verified first.
pub fn ready_for(step: Step, done: &BTreeSet<Step>) -> Result<(), Step> {
    let needs: &[Step] = match step {
        Step::Face | Step::Fingerprint | Step::Verification => &[Step::Idcard],
        Step::Enterprise => &[Step::Idcard, Step::Verification],
        Step::Ukey | Step::Lifecycle | Step::Rights => &[Step::Idcard, Step::Verification],
        _ => &[],
    };
    match needs.iter().find(|s| !done.contains(s)) {
        Some(missing) => Err(*missing),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biometric_steps_only_with_consent_and_verification_before_the_ukey() {
        assert_eq!(
            steps("cert_application", false, false),
            [
                Step::Consents,
                Step::Idcard,
                Step::Verification,
                Step::Ukey,
                Step::Done
            ]
        );
        let full = steps("cert_application", true, true);
        assert!(full.contains(&Step::Face) && full.contains(&Step::Fingerprint));
        assert_eq!(
            steps("certificate_use", true, true),
            [Step::Consents, Step::Sign, Step::Done]
        );
        let mut done = BTreeSet::from([Step::Consents, Step::Idcard]);
        assert_eq!(next(&full, &done), Step::Face);
        assert_eq!(ready_for(Step::Ukey, &done), Err(Step::Verification));
        done.insert(Step::Verification);
        assert_eq!(ready_for(Step::Ukey, &done), Ok(()));
    }

    #[test]
    fn every_typed_number_comes_with_its_purpose() {
        let catalog = Catalog::embedded();
        let asks = asks(&catalog, "cert_application", Step::Verification);
        let items: BTreeSet<&str> = asks.iter().map(|a| a.item.as_str()).collect();
        assert_eq!(
            items,
            BTreeSet::from(["mobile", "bank_card", "bank_mobile"])
        );
        assert!(
            asks.iter()
                .all(|a| a.purpose.contains("carrier") || a.purpose.contains("bank"))
        );
        assert!(super::asks(&catalog, "cert_application", Step::Idcard).is_empty());
        let enterprise = steps(ENTERPRISE_SERVICE, false, false);
        let at = |s: Step| enterprise.iter().position(|x| *x == s).unwrap();
        assert!(
            at(Step::Verification) < at(Step::Enterprise) && at(Step::Enterprise) < at(Step::Ukey)
        );
    }
}
