//! Unit tests of request preparation, answer parsing and the consent check.

use serde_json::Value;

use super::*;
use crate::privacy::consent::Scope;
use crate::store::Store;

// Synthetic identity (not a real person).
const NAME: &str = "测试甲";
const ID: &str = "11010120000101002X";
const MOBILE: &str = "13900000001";

fn body_json(p: &PreparedRequest) -> Value {
    serde_json::from_slice(&p.body).unwrap()
}

fn field_names(v: &Value) -> Vec<String> {
    v["fields"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn only_declared_fields_are_encoded_and_extra_ones_are_dropped() {
    let catalog = Catalog::embedded();
    let request = VerificationRequest::new("carrier_3factor")
        .with(Personal::new("address", "测试省测试市1号"))
        .with(Personal::new("id_number", ID))
        .with(Personal::new("name", NAME))
        .with(PersonalBytes::new("face_image", vec![1, 2, 3]))
        .with(Personal::new("mobile", MOBILE));
    let prepared = prepare(&catalog, &request).unwrap();
    let v = body_json(&prepared);
    assert_eq!(field_names(&v), ["id_number", "mobile", "name"]);
    assert_eq!(v["fields"]["name"], NAME);
    assert_eq!(v["method"], "carrier_3factor");
    assert_eq!(v["request_id"], request.request_id.as_str());
    assert_eq!(v.as_object().unwrap().len(), 3);
    let text = String::from_utf8(prepared.body.to_vec()).unwrap();
    assert!(
        !text.contains("address") && !text.contains("测试省"),
        "{text}"
    );
    assert_eq!(prepared.recipient, "carrier");
    assert_eq!(prepared.items, ["name", "mobile", "id_number"]);
    assert!(!format!("{prepared:?}").contains(ID));
}

#[test]
fn a_missing_field_is_refused_naming_it() {
    let catalog = Catalog::embedded();
    let request = VerificationRequest::new("bank_card_4factor")
        .with(Personal::new("name", NAME))
        .with(Personal::new("id_number", ID))
        .with(Personal::new("bank_card", "6222000000000000000"));
    let err = prepare(&catalog, &request).unwrap_err();
    assert_eq!(
        err,
        VerifyError::MissingField {
            method: "bank_card_4factor".into(),
            item: "bank_mobile".into()
        }
    );
    assert!(err.to_string().contains("bank_mobile"), "{err}");
    assert!(err.handover().is_none());
}

#[test]
fn photos_are_base64_and_must_be_bytes() {
    let catalog = Catalog::embedded();
    let photo = vec![0xff, 0xd8, 0xff, 0x00, 0x10];
    let face = vec![0x89, b'P', b'N', b'G'];
    let base = VerificationRequest::new("biometric_compare")
        .with(Personal::new("name", NAME))
        .with(Personal::new("id_number", ID));
    let ok = base
        .clone()
        .with(PersonalBytes::new("id_photo", photo.clone()))
        .with(PersonalBytes::new("face_image", face.clone()));
    let v = body_json(&prepare(&catalog, &ok).unwrap());
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        b64.decode(v["fields"]["id_photo"].as_str().unwrap())
            .unwrap(),
        photo
    );
    assert_eq!(
        b64.decode(v["fields"]["face_image"].as_str().unwrap())
            .unwrap(),
        face
    );
    let text_photo = base
        .clone()
        .with(Personal::new("id_photo", "not bytes"))
        .with(PersonalBytes::new("face_image", face.clone()));
    assert!(matches!(
        prepare(&catalog, &text_photo),
        Err(VerifyError::WrongKind { item, expected: "bytes" }) if item == "id_photo"
    ));
    let bytes_name = VerificationRequest::new("carrier_3factor")
        .with(PersonalBytes::new("name", b"x".to_vec()))
        .with(Personal::new("id_number", ID))
        .with(Personal::new("mobile", MOBILE));
    assert!(matches!(
        prepare(&catalog, &bytes_name),
        Err(VerifyError::WrongKind {
            expected: "text",
            ..
        })
    ));
    assert!(!format!("{:?}", PersonalBytes::new("face_image", face)).contains("137"));
}

#[test]
fn duplicates_and_unknown_methods_are_refused() {
    let catalog = Catalog::embedded();
    let dup = VerificationRequest::new("carrier_3factor")
        .with(Personal::new("name", NAME))
        .with(Personal::new("name", "测试乙"))
        .with(Personal::new("id_number", ID))
        .with(Personal::new("mobile", MOBILE));
    assert!(matches!(
        prepare(&catalog, &dup),
        Err(VerifyError::DuplicateField { item, .. }) if item == "name"
    ));
    assert!(matches!(
        prepare(&catalog, &VerificationRequest::new("telepathy")),
        Err(VerifyError::Catalog(CatalogError::UnknownMethod(_)))
    ));
}

#[test]
fn answers_are_checked_and_references_must_be_opaque() {
    let a = parse_answer(br#"{"result":"no_match","reference":"ref-1:a_b.c"}"#).unwrap();
    assert_eq!(a.result, Verdict::NoMatch);
    for bad in [
        &br#"{"result":"maybe","reference":"r"}"#[..],
        br#"{"result":"match","reference":""}"#,
        br#"{"result":"match","reference":"13900000001 \u6d4b"}"#,
        br#"{"result":"match","reference":"r","name":"x"}"#,
        br#"{"result":"13900000001","reference":"r"}"#,
        b"not json",
    ] {
        match parse_answer(bad) {
            Err(Failure::BadResponse(why)) => assert!(!why.contains("1390000"), "{why}"),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(bad)),
        }
    }
    let long = format!(
        r#"{{"result":"match","reference":"{}"}}"#,
        "a".repeat(MAX_REFERENCE_CHARS + 1)
    );
    assert!(parse_answer(long.as_bytes()).is_err());
}

#[test]
fn face_hand_over_needs_its_transfer_consent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.sqlite")).unwrap();
    let catalog = Catalog::embedded();
    let ledger = Ledger {
        catalog: &catalog,
        session: "s1",
    };
    let mut conn = store.conn().unwrap();
    let service = "cert_application";
    assert!(matches!(
        require_consents(&ledger, &conn, service, "carrier_3factor"),
        Err(ConsentError::NoPurposeConsent { .. })
    ));
    let tx = conn.transaction().unwrap();
    ledger.grant(&tx, 1, service, None, Scope::Collect).unwrap();
    ledger
        .grant(&tx, 1, service, Some("id_number"), Scope::Collect)
        .unwrap();
    tx.commit().unwrap();
    require_consents(&ledger, &conn, service, "carrier_3factor").unwrap();

    let tx = conn.transaction().unwrap();
    for item in ["id_photo", "face_image"] {
        ledger
            .grant(&tx, 2, service, Some(item), Scope::Collect)
            .unwrap();
    }
    tx.commit().unwrap();
    assert!(matches!(
        require_consents(&ledger, &conn, service, "biometric_compare"),
        Err(ConsentError::TransferConsentRequired { item, .. }) if item == "face_image"
    ));
    let tx = conn.transaction().unwrap();
    ledger
        .grant(
            &tx,
            3,
            service,
            Some("face_image"),
            Scope::Transfer(Destination::Verifier),
        )
        .unwrap();
    tx.commit().unwrap();
    require_consents(&ledger, &conn, service, "biometric_compare").unwrap();
}
