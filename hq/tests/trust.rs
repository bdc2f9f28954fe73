//! HQ's side of the trust boundaries (issue 13, findings 2 and 6), each test named after the
//! threat it stops: the CA signs only what the issuance policy allows, a kiosk acts only on
//! certificates of holders it proves, subscriber certificates never pass as kiosks, kiosk
//! certificates need clientAuth, only registered kiosks reach the CA; refusals are audited.

mod common;

use common::ca_harness::*;
use hq_ingest::dev_pki;
use x509_parser::prelude::*;

const PERSONAL: &str = "cert_application";

/// Refusals in HQ's CA audit with `code` (by `actor`).
async fn refusals(hq: &CaHarness, actor: &str, code: &str) -> i64 {
    hq.db()
        .await
        .query_one(
            "SELECT count(*) FROM ca_audit WHERE outcome = 'refused' AND actor = $1 AND code = $2",
            &[&actor, &code],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_with_a_subject_outside_the_issuance_policy_is_refused_and_audited() {
    let hq = CaHarness::start("policy", false).await;
    let h = holder("applicant-policy");
    let serial_number = hex::encode(&h[..16]);
    // An extra OU (as a compromised kiosk would ask for "Administrators").
    let (with_ou, _) = csr(&[
        (rcgen::DnType::CommonName, "Synthetic Holder".into()),
        (
            rcgen::DnType::OrganizationalUnitName,
            "Administrators".into(),
        ),
        (serial_number_type(), serial_number.clone()),
        (rcgen::DnType::CountryName, "CN".into()),
    ]);
    let answer = hq
        .enroll(hq.kiosk(), &with_ou, &enroll_headers(PERSONAL, &h))
        .await;
    assert_eq!(
        answer.status,
        400,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["code"], "subject_outside_policy");
    assert_eq!(answer.json()["attribute"], "OU");
    assert!(answer.json()["message"].as_str().unwrap().contains("OU"));
    // O is for enterprise services only.
    let (with_o, _) = csr(&[
        (rcgen::DnType::CommonName, "Synthetic Holder".into()),
        (serial_number_type(), serial_number.clone()),
        (rcgen::DnType::OrganizationName, "Any Corp".into()),
        (rcgen::DnType::CountryName, "CN".into()),
    ]);
    let answer = hq
        .enroll(hq.kiosk(), &with_o, &enroll_headers(PERSONAL, &h))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["attribute"], "O");
    // A serialNumber that is not the named holder's.
    let other = holder("someone-else");
    let (not_theirs, _) = personal_csr("Synthetic Holder", &other);
    let answer = hq
        .enroll(hq.kiosk(), &not_theirs, &enroll_headers(PERSONAL, &h))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], "subject_invalid");
    assert_eq!(answer.json()["attribute"], "serialNumber");
    // Nothing was issued; each refusal is in HQ's audit.
    assert_eq!(hq.count("SELECT count(*) FROM ca_certificates").await, 0);
    let actor = format!("kiosk:{}", dev_pki::DEMO_KIOSK_ID);
    assert_eq!(refusals(&hq, &actor, "subject_outside_policy").await, 2);
    assert_eq!(refusals(&hq, &actor, "subject_invalid").await, 1);
    // The same holder with a subject inside the policy is issued.
    let (good, _) = personal_csr("Synthetic Holder", &h);
    issued(
        &hq.enroll(hq.kiosk(), &good, &enroll_headers(PERSONAL, &h))
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_kiosk_cannot_revoke_hold_or_release_a_holders_certificate() {
    let hq = CaHarness::start("holder", false).await;
    let h = holder("applicant-holder");
    let (request, _) = personal_csr("Synthetic Holder", &h);
    let cert = issued(
        &hq.enroll(hq.kiosk(), &request, &enroll_headers(PERSONAL, &h))
            .await,
    );
    let serial = serial_of(&cert);
    let other = hq.kiosk_named(OTHER_KIOSK);
    let path = |op: &str| format!("/ca/v1/certificates/{serial}/{op}");
    let json = || vec![("content-type", "application/json".to_owned())];
    let with = |extra: Vec<(&'static str, String)>| {
        let mut h = json();
        h.extend(extra);
        h
    };
    let stranger = holder("not-the-holder");
    for (op, headers, body) in [
        ("revoke", json(), br#"{"reason":"keyCompromise"}"#.to_vec()),
        (
            "revoke",
            with(holder_header(&stranger)),
            br#"{"reason":"keyCompromise"}"#.to_vec(),
        ),
        ("hold", json(), vec![]),
        ("hold", with(holder_header(&stranger)), vec![]),
        ("release", json(), vec![]),
    ] {
        let answer = hq
            .call(other.clone(), "POST", &path(op), &headers, body)
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            403,
            "{op}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["code"], "not_holder", "{op}");
    }
    // The certificate is untouched.
    let status = hq
        .call(
            hq.kiosk(),
            "GET",
            &format!("/ca/v1/certificates/{serial}"),
            &[],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status.json()["status"], "good");
    let actor = format!("kiosk:{OTHER_KIOSK}");
    assert_eq!(refusals(&hq, &actor, "not_holder").await, 5);
    // The holder, verified again at any kiosk, may suspend their certificate there.
    let answer = hq
        .call(
            other.clone(),
            "POST",
            &path("hold"),
            &with(holder_header(&h)),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["status"], "held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applicants_certificate_never_carries_client_auth_and_cannot_pass_as_a_kiosk() {
    // Where trust roots are shared: HQ also trusts the issuing CA for client certificates.
    let hq = CaHarness::start("subscriber", true).await;
    let h = holder("applicant-subscriber");
    let (request, key) = personal_csr("Synthetic Holder", &h);
    let cert = issued(
        &hq.enroll(hq.kiosk(), &request, &enroll_headers(PERSONAL, &h))
            .await,
    );
    let (_, parsed) = X509Certificate::from_der(&cert).unwrap();
    let eku = parsed
        .extended_key_usage()
        .unwrap()
        .expect("a subscriber certificate states its extended key usage")
        .value;
    assert!(!eku.client_auth, "never clientAuth");
    assert!(!eku.server_auth && !eku.any);
    assert!(
        eku.other
            .iter()
            .any(|o| o.to_id_string() == "1.3.6.1.5.5.7.3.36"),
        "document signing"
    );
    let policies = parsed
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::CertificatePolicies(p) => Some(p),
            _ => None,
        })
        .expect("the certificate names its policy");
    assert!(policies.iter().any(|p| {
        p.policy_id
            .to_id_string()
            .starts_with("1.3.6.1.4.1.99999.13.")
    }));
    // The applicant's certificate and key presented as a TLS client are refused ...
    let cert_pem = ::pem::encode(&::pem::Pem::new("CERTIFICATE", cert.clone()));
    let applicant = hq.tls_as(cert_pem.as_bytes(), key.serialize_pem().as_bytes());
    let result = hq
        .call(applicant, "GET", "/.well-known/est/cacerts", &[], vec![])
        .await;
    assert!(
        result.is_err(),
        "an applicant's certificate passed as a kiosk: {:?}",
        result.map(|a| a.status)
    );
    // ... while the kiosk is served on the same listener.
    let answer = hq
        .call(hq.kiosk(), "GET", "/.well-known/est/cacerts", &[], vec![])
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_certificate_without_client_auth_is_refused_at_the_tls_layer() {
    let hq = CaHarness::start("noclientauth", false).await;
    // From HQ's own kiosk CA, naming a registered kiosk, but without any EKU.
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(&hq.pki.ca_key).unwrap()).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kioskd demo HQ CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, OTHER_KIOSK);
    let no_eku = params.signed_by(&key, &issuer).unwrap();
    let config = hq.tls_as(no_eku.pem().as_bytes(), key.serialize_pem().as_bytes());
    let result = hq
        .call(config, "GET", "/.well-known/est/cacerts", &[], vec![])
        .await;
    assert!(
        result.is_err(),
        "a kiosk certificate without clientAuth was admitted: {:?}",
        result.map(|a| a.status)
    );
    // The same kiosk with clientAuth is admitted.
    let answer = hq
        .call(
            hq.kiosk_named(OTHER_KIOSK),
            "GET",
            "/.well-known/est/cacerts",
            &[],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_kiosk_certificate_does_not_reach_the_ca() {
    let hq = CaHarness::start("unregistered", false).await;
    let stranger = hq.kiosk_named("kiosk-not-registered");
    let h = holder("applicant-unregistered");
    let (request, _) = personal_csr("Synthetic Holder", &h);
    let answer = hq
        .enroll(stranger.clone(), &request, &enroll_headers(PERSONAL, &h))
        .await;
    assert_eq!(
        answer.status,
        403,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["code"], "kiosk_not_registered");
    assert_eq!(hq.count("SELECT count(*) FROM ca_certificates").await, 0);
    assert_eq!(
        refusals(&hq, "kiosk:kiosk-not-registered", "kiosk_not_registered").await,
        1
    );
}
