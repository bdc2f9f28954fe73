//! The PKCS#11 provider against SoftHSM2: one token per test in a per-process token store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use hsm::{
    KeyAlgorithm, Pin, PinState, Pkcs11Uri, SecretKeyKind, TokenError, TokenEvent, TokenProvider,
    UserKind,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_sign_verify_p256_with_private_key_kept_inside() {
    let provider = provider();
    let token = fresh_token(&provider, "keygen").await;
    let key = token
        .generate_key_pair("device-key", KeyAlgorithm::P256)
        .await
        .unwrap();
    assert_eq!(key.public_key.len(), 65);
    assert!(matches!(
        token
            .generate_key_pair("device-key", KeyAlgorithm::P256)
            .await,
        Err(TokenError::KeyExists(_))
    ));

    let sig = token
        .sign("device-key", b"audit checkpoint 1")
        .await
        .unwrap();
    assert_eq!(sig.raw.len(), 64);
    hsm::soft_crypto::verify(
        KeyAlgorithm::P256,
        &key.public_key,
        "",
        b"audit checkpoint 1",
        &sig.raw,
    )
    .unwrap();
    assert!(
        hsm::soft_crypto::verify(
            KeyAlgorithm::P256,
            &key.public_key,
            "",
            b"audit checkpoint 2",
            &sig.raw
        )
        .is_err()
    );
    let der = sig.to_der().unwrap();
    assert_eq!(
        hsm::soft_crypto::der_signature_to_raw(KeyAlgorithm::P256, &der).unwrap(),
        sig.raw
    );

    // Found by RFC 7512 URI, by label and id; unknown keys are typed errors.
    let info = token.info().await.unwrap();
    let uri = Pkcs11Uri::parse(&format!(
        "pkcs11:token={};object=device-key;type=private",
        info.label
    ))
    .unwrap();
    let found = token.find_keys(&uri).await.unwrap();
    assert_eq!(found, vec![key.clone()]);
    let by_id = Pkcs11Uri {
        id: Some(key.id.clone()),
        ..Pkcs11Uri::default()
    };
    assert_eq!(token.find_keys(&by_id).await.unwrap().len(), 1);
    assert!(matches!(
        token.sign("nope", b"x").await,
        Err(TokenError::NoSuchKey(_))
    ));
    let opened = provider.open_token_by_uri(&uri).await.unwrap();
    assert_eq!(opened.info().await.unwrap().serial, info.serial);

    // The private key is sensitive and not extractable, as the token reports it.
    let ctx = provider.context().clone();
    let slot = cryptoki::slot::Slot::try_from(info.slot.unwrap()).unwrap();
    let attrs = tokio::task::spawn_blocking(move || {
        let session = ctx.open_ro_session(slot).unwrap();
        session
            .login(cryptoki::session::UserType::User, Some(&USER_PIN.into()))
            .ok();
        let handle = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"device-key".to_vec()),
            ])
            .unwrap()[0];
        session
            .get_attributes(
                handle,
                &[AttributeType::Sensitive, AttributeType::Extractable],
            )
            .unwrap()
    })
    .await
    .unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_verifies_with_openssl_and_certificate_round_trips() {
    let provider = provider();
    let token = fresh_token(&provider, "csr").await;
    let key = token
        .generate_key_pair("ukey-sign", KeyAlgorithm::P256)
        .await
        .unwrap();
    let csr = hsm::csr::build_csr(
        token.as_ref(),
        "ukey-sign",
        "CN=Applicant 0001,O=Synthetic Test Org,C=CN",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csr_path = dir.path().join("ukey.csr");
    std::fs::write(&csr_path, &csr.pem).unwrap();
    let out = openssl(&[
        "req",
        "-verify",
        "-noout",
        "-in",
        csr_path.to_str().unwrap(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("verify OK"), "{text}");

    assert_eq!(token.read_certificate("ukey-sign").await.unwrap(), None);
    let cert = issue_with_openssl(dir.path(), &csr.pem);
    token.write_certificate("ukey-sign", &cert).await.unwrap();
    let back = token
        .read_certificate("ukey-sign")
        .await
        .unwrap()
        .expect("stored certificate");
    assert_eq!(back, cert);
    let parsed = hsm::csr::parse_certificate(&back).unwrap();
    assert_eq!(parsed.public_key, key.public_key);
    assert!(
        parsed.subject.contains("Applicant 0001"),
        "{}",
        parsed.subject
    );
    assert_eq!(parsed.issuer, "CN=Test CA");

    // A certificate for another key is refused.
    token
        .generate_key_pair("other", KeyAlgorithm::P256)
        .await
        .unwrap();
    assert!(matches!(
        token.write_certificate("other", &cert).await,
        Err(TokenError::InvalidInput(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_is_typed_never_retried_and_shows_in_pin_state() {
    let provider = provider();
    let token = fresh_token(&provider, "pinstate").await;
    token.logout().await.unwrap();
    assert!(!token.is_logged_in());
    assert_eq!(token.info().await.unwrap().pin_state, PinState::Ok);
    let err = token
        .login(UserKind::User, &Pin::new("000000"))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::PinIncorrect { .. }), "{err:?}");
    // SoftHSM2 raises CKF_USER_PIN_COUNT_LOW after a failure (it never locks the PIN itself).
    assert_eq!(token.info().await.unwrap().pin_state, PinState::CountLow);
    assert!(matches!(
        token.sign("k", b"x").await,
        Err(TokenError::NotLoggedIn | TokenError::NoSuchKey(_))
    ));
    token
        .login(UserKind::User, &Pin::new(USER_PIN))
        .await
        .unwrap();
    assert!(token.is_logged_in());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_pin_and_unblock_with_so_pin() {
    let provider = provider();
    let token = fresh_token(&provider, "unblock").await;
    token
        .change_pin(UserKind::User, &Pin::new(USER_PIN), &Pin::new("222222"))
        .await
        .unwrap();
    token.logout().await.unwrap();
    assert!(matches!(
        token.login(UserKind::User, &Pin::new(USER_PIN)).await,
        Err(TokenError::PinIncorrect { .. })
    ));
    token
        .login(UserKind::User, &Pin::new("222222"))
        .await
        .unwrap();
    token.logout().await.unwrap();

    assert!(matches!(
        token
            .unblock_user_pin(&Pin::new("wrong-so"), &Pin::new("333333"))
            .await,
        Err(TokenError::PinIncorrect { .. })
    ));
    token
        .unblock_user_pin(&Pin::new(SO_PIN), &Pin::new("333333"))
        .await
        .unwrap();
    assert!(
        token
            .login(UserKind::User, &Pin::new("222222"))
            .await
            .is_err()
    );
    token
        .login(UserKind::User, &Pin::new("333333"))
        .await
        .unwrap();
    assert_eq!(token.info().await.unwrap().pin_state, PinState::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_signing_from_eight_tasks() {
    let provider = provider();
    let token = fresh_token(&provider, "concurrent").await;
    let key = token
        .generate_key_pair("k", KeyAlgorithm::P256)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..8u8 {
        let token = Arc::clone(&token);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..16u8 {
                let msg = vec![task, i];
                let sig = token.sign("k", &msg).await.expect("sign");
                out.push((msg, sig.raw));
            }
            out
        }));
    }
    let mut count = 0;
    for task in tasks {
        for (msg, raw) in task.await.unwrap() {
            hsm::soft_crypto::verify(KeyAlgorithm::P256, &key.public_key, "", &msg, &raw).unwrap();
            count += 1;
        }
    }
    assert_eq!(count, 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_keys_hmac_and_wrap_inside_the_token() {
    let provider = provider();
    let token = fresh_token(&provider, "secrets").await;
    token
        .generate_secret_key("digest-key", SecretKeyKind::HmacSha256)
        .await
        .unwrap();
    token
        .generate_secret_key("wrap-key", SecretKeyKind::Aes256Wrap)
        .await
        .unwrap();
    let a = token
        .hmac("digest-key", b"110101199001011234")
        .await
        .unwrap();
    let b = token
        .hmac("digest-key", b"110101199001011234")
        .await
        .unwrap();
    let c = token
        .hmac("digest-key", b"110101199001011235")
        .await
        .unwrap();
    assert_eq!(a.len(), 32);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let data_key = [7u8; 32];
    let wrapped = token.wrap_key("wrap-key", &data_key).await.unwrap();
    assert_ne!(&wrapped[12..44], &data_key[..]);
    assert_eq!(
        token
            .unwrap_key("wrap-key", &wrapped)
            .await
            .unwrap()
            .as_slice(),
        &data_key
    );
    let mut tampered = wrapped.clone();
    tampered[20] ^= 1;
    assert!(token.unwrap_key("wrap-key", &tampered).await.is_err());
    assert!(matches!(
        token.hmac("wrap-key", b"x").await,
        Err(TokenError::InvalidInput(_))
    ));
    assert!(matches!(
        token
            .generate_secret_key("sm3", SecretKeyKind::HmacSm3)
            .await,
        Err(TokenError::MechanismNotSupported(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_profile_startup_check_reports_missing_sm2() {
    let provider = provider();
    let token = fresh_token(&provider, "profile").await;
    let label = token.info().await.unwrap().label;
    provider
        .check_profile(&label)
        .await
        .expect("softhsm2 profile matches SoftHSM2");
    assert!(matches!(
        token.generate_key_pair("sm2-key", KeyAlgorithm::Sm2).await,
        Err(TokenError::MechanismNotSupported(_))
    ));

    let sansec = hsm::pkcs11::Pkcs11Provider::open(&module_path(), options("sansec")).unwrap();
    let err = sansec.check_profile(&label).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TokenError::ProfileMismatch { .. }), "{err:?}");
    assert!(
        text.contains("sansec") && text.contains("SM2 key generation (0x80008001)"),
        "{text}"
    );
    // And asking the token for it anyway is a typed error too.
    let sansec_token = sansec.open_token(&label).await.unwrap();
    sansec_token
        .login(UserKind::User, &Pin::new(USER_PIN))
        .await
        .unwrap();
    assert!(matches!(
        sansec_token
            .generate_key_pair("sm2-key", KeyAlgorithm::Sm2)
            .await,
        Err(TokenError::MechanismNotSupported(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_and_duplicate_init_are_typed_errors() {
    let provider = provider();
    assert!(matches!(
        provider.open_token("no-such-token").await,
        Err(TokenError::TokenNotPresent(_))
    ));
    let token = fresh_token(&provider, "dupinit").await;
    let label = token.info().await.unwrap().label;
    assert!(matches!(
        provider
            .init_token(&label, &Pin::new(SO_PIN), &Pin::new(USER_PIN))
            .await,
        Err(TokenError::TokenExists(_))
    ));
    let listed = provider.list_tokens().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|t| t.label == label && t.pin_state == PinState::Ok)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_poller_reports_new_tokens() {
    let provider = provider();
    let mut events = provider.events();
    let poller = hsm::hotplug::spawn_slot_poller(
        provider.clone() as Arc<dyn TokenProvider>,
        Duration::from_millis(50),
    );
    let label = label("poller");
    provider
        .init_token(&label, &Pin::new(SO_PIN), &Pin::new(USER_PIN))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(TokenEvent::Inserted { label: l, .. }) if l == label => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    poller.abort();
    assert_eq!(seen, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_from_config_checks_the_vendor_profile_at_startup() {
    let provider = provider();
    let token = fresh_token(&provider, "config").await;
    token
        .generate_key_pair("device-key", KeyAlgorithm::P256)
        .await
        .unwrap();
    let label = token.info().await.unwrap().label;
    let data_dir = tempfile::tempdir().unwrap();
    let mut section = kiosk_config::TokenSection {
        provider: kiosk_config::TokenProvider::Pkcs11,
        module: Some(module_path()),
        device_token: label.clone(),
        device_key: "device-key".into(),
        vendor_profile: "softhsm2".into(),
        ..kiosk_config::TokenSection::default()
    };
    let device = hsm::open_from_config(&section, data_dir.path())
        .await
        .unwrap();
    assert_eq!(device.key_label, "device-key");
    assert_eq!(device.token.info().await.unwrap().label, label);

    section.vendor_profile = "sansec".into();
    let err = hsm::open_from_config(&section, data_dir.path())
        .await
        .err()
        .expect("profile mismatch");
    assert!(matches!(err, TokenError::ProfileMismatch { .. }), "{err}");
    section.vendor_profile = "no-such-vendor".into();
    assert!(matches!(
        hsm::open_from_config(&section, data_dir.path()).await,
        Err(TokenError::UnknownProfile(_))
    ));
    // A site profile file overrides the embedded set.
    std::fs::write(
        data_dir.path().join("vendors.toml"),
        "[profiles.site]\ndescription = \"P-256 only\"\n",
    )
    .unwrap();
    section.vendor_profile = "vendors.toml#site".into();
    hsm::open_from_config(&section, data_dir.path())
        .await
        .unwrap();
}
