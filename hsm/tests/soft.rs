//! The soft provider: sealed keys, persisted PIN counter and lockout, SO unblock, SM2 and
//! P-256 signing cross-checked with OpenSSL 3, SM2 CSR, HMAC-SM3/SHA256 and key wrapping.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::openssl;
use hsm::soft::{SoftOptions, SoftProvider};
use hsm::{KeyAlgorithm, Pin, PinState, SecretKeyKind, Token, TokenError, TokenProvider, UserKind};
use zeroize::Zeroizing;

const DISTID: &str = "1234567812345678";

fn provider(dir: &Path, secret: &str) -> Arc<SoftProvider> {
    SoftProvider::open(SoftOptions {
        dir: dir.to_path_buf(),
        secret: Zeroizing::new(secret.to_owned()),
        sm2_distid: DISTID.into(),
        max_tries: 3,
    })
    .unwrap()
}

async fn token(provider: &SoftProvider, label: &str) -> Arc<dyn Token> {
    provider
        .init_token(label, &Pin::new("88888888"), &Pin::new("1234"))
        .await
        .unwrap();
    let token = provider.open_token(label).await.unwrap();
    token
        .login(UserKind::User, &Pin::new("1234"))
        .await
        .unwrap();
    token
}

#[tokio::test]
async fn sm2_signature_verifies_with_openssl_and_openssl_signature_verifies_here() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path(), "secret");
    let token = token(&provider, "kiosk").await;
    let key = token
        .generate_key_pair("device-key", KeyAlgorithm::Sm2)
        .await
        .unwrap();
    let message = b"audit checkpoint 42\n";
    let sig = token.sign("device-key", message).await.unwrap();
    hsm::soft_crypto::verify(
        KeyAlgorithm::Sm2,
        &key.public_key,
        DISTID,
        message,
        &sig.raw,
    )
    .unwrap();

    let p = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(p("msg"), message).unwrap();
    std::fs::write(p("sig.der"), sig.to_der().unwrap()).unwrap();
    std::fs::write(
        p("pub.pem"),
        hsm::soft_crypto::public_key_pem(KeyAlgorithm::Sm2, &key.public_key).unwrap(),
    )
    .unwrap();
    let verify = |distid: &str| {
        let opt = format!("distid:{distid}");
        openssl(&[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            &p("pub.pem"),
            "-in",
            &p("msg"),
            "-sigfile",
            &p("sig.der"),
            "-rawin",
            "-digest",
            "sm3",
            "-pkeyopt",
            &opt,
        ])
    };
    let ok = verify(DISTID);
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        !verify("ALICE123@YAHOO.COM").status.success(),
        "a different distid must not verify"
    );

    // The other way: OpenSSL signs with the default id, we verify.
    assert!(
        openssl(&["genpkey", "-algorithm", "SM2", "-out", &p("o.key")])
            .status
            .success()
    );
    assert!(
        openssl(&[
            "pkey",
            "-in",
            &p("o.key"),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            &p("o.pub.der")
        ])
        .status
        .success()
    );
    let signed = openssl(&[
        "pkeyutl",
        "-sign",
        "-inkey",
        &p("o.key"),
        "-in",
        &p("msg"),
        "-rawin",
        "-digest",
        "sm3",
        "-pkeyopt",
        &format!("distid:{DISTID}"),
        "-out",
        &p("o.sig"),
    ]);
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let spki = std::fs::read(p("o.pub.der")).unwrap();
    // SubjectPublicKeyInfo of an EC key ends with the 65-byte uncompressed point.
    let point = &spki[spki.len() - 65..];
    let raw = hsm::soft_crypto::der_signature_to_raw(
        KeyAlgorithm::Sm2,
        &std::fs::read(p("o.sig")).unwrap(),
    )
    .unwrap();
    hsm::soft_crypto::verify(KeyAlgorithm::Sm2, point, DISTID, message, &raw).unwrap();
    assert!(hsm::soft_crypto::verify(KeyAlgorithm::Sm2, point, "", message, &raw).is_err());
}

#[tokio::test]
async fn sm2_and_p256_csrs_verify_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path(), "secret");
    let token = token(&provider, "ukey").await;
    for (label, algorithm) in [("sm2", KeyAlgorithm::Sm2), ("p256", KeyAlgorithm::P256)] {
        token.generate_key_pair(label, algorithm).await.unwrap();
        let csr = hsm::csr::build_csr(
            token.as_ref(),
            label,
            "CN=Applicant 0002,O=Synthetic Org,C=CN",
        )
        .await
        .unwrap();
        let path = dir.path().join(format!("{label}.csr"));
        std::fs::write(&path, &csr.pem).unwrap();
        let mut args = vec!["req", "-verify", "-noout", "-in", path.to_str().unwrap()];
        let vfy = format!("distid:{DISTID}");
        if algorithm == KeyAlgorithm::Sm2 {
            args.extend(["-vfyopt", vfy.as_str()]);
        }
        let out = openssl(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("verify OK"),
            "{label}: {text}"
        );
    }
    assert!(matches!(
        hsm::csr::build_csr(token.as_ref(), "sm2", "not a dn").await,
        Err(TokenError::InvalidInput(_))
    ));
}

#[tokio::test]
async fn wrong_pins_lock_after_the_limit_persist_across_restarts_and_so_unblocks() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path(), "secret");
    let token = token(&provider, "lockme").await;
    token.logout().await.unwrap();
    let wrong = Pin::new("0000");
    assert!(matches!(
        token.login(UserKind::User, &wrong).await,
        Err(TokenError::PinIncorrect {
            retries_left: Some(2)
        })
    ));
    assert_eq!(token.info().await.unwrap().pin_state, PinState::CountLow);
    assert!(matches!(
        token.login(UserKind::User, &wrong).await,
        Err(TokenError::PinIncorrect {
            retries_left: Some(1)
        })
    ));
    assert_eq!(token.info().await.unwrap().pin_state, PinState::FinalTry);

    // A restarted daemon sees the same counter (persisted), and the final try locks.
    let restarted = self::provider(dir.path(), "secret");
    let again = restarted.open_token("lockme").await.unwrap();
    assert_eq!(again.info().await.unwrap().user_retries_left, Some(1));
    assert!(matches!(
        again.login(UserKind::User, &wrong).await,
        Err(TokenError::PinLocked)
    ));
    // Locked: even the right PIN is refused, without touching any counter.
    assert!(matches!(
        again.login(UserKind::User, &Pin::new("1234")).await,
        Err(TokenError::PinLocked)
    ));
    assert_eq!(again.info().await.unwrap().pin_state, PinState::Locked);

    assert!(matches!(
        again
            .unblock_user_pin(&Pin::new("wrong-so"), &Pin::new("5678"))
            .await,
        Err(TokenError::PinIncorrect {
            retries_left: Some(2)
        })
    ));
    again
        .unblock_user_pin(&Pin::new("88888888"), &Pin::new("5678"))
        .await
        .unwrap();
    assert_eq!(again.info().await.unwrap().pin_state, PinState::Ok);
    again
        .login(UserKind::User, &Pin::new("5678"))
        .await
        .unwrap();
    again
        .change_pin(UserKind::User, &Pin::new("5678"), &Pin::new("9012"))
        .await
        .unwrap();
    again.logout().await.unwrap();
    again
        .login(UserKind::User, &Pin::new("9012"))
        .await
        .unwrap();
    assert!(matches!(
        again
            .change_pin(UserKind::User, &Pin::new("9012"), &Pin::new("1"))
            .await,
        Err(TokenError::PinInvalid(_))
    ));
}

#[tokio::test]
async fn keys_are_sealed_at_rest_and_need_login_and_the_right_secret() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path(), "right secret");
    let token = token(&provider, "sealed").await;
    let key = token
        .generate_key_pair("k", KeyAlgorithm::P256)
        .await
        .unwrap();
    token
        .generate_secret_key("digest", SecretKeyKind::HmacSm3)
        .await
        .unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(!text.contains("1234"), "no PIN on disk");

    token.logout().await.unwrap();
    assert!(matches!(
        token.sign("k", b"x").await,
        Err(TokenError::NotLoggedIn)
    ));

    let wrong = self::provider(dir.path(), "wrong secret");
    let other = wrong.open_token("sealed").await.unwrap();
    // A wrong configured secret is reported as such and does not burn PIN retries.
    for _ in 0..4 {
        let err = other
            .login(UserKind::User, &Pin::new("1234"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::Store(m) if m.contains("soft_secret")),
            "{err:?}"
        );
    }

    let restarted = self::provider(dir.path(), "right secret");
    let back = restarted.open_token("sealed").await.unwrap();
    back.login(UserKind::User, &Pin::new("1234")).await.unwrap();
    let sig = back.sign("k", b"after restart").await.unwrap();
    hsm::soft_crypto::verify(
        KeyAlgorithm::P256,
        &key.public_key,
        "",
        b"after restart",
        &sig.raw,
    )
    .unwrap();
    assert_eq!(back.hmac("digest", b"id").await.unwrap().len(), 32);

    // Tampering with a sealed key is detected.
    let tampered = text.replacen("\"sealed\": \"", "\"sealed\": \"00", 1);
    std::fs::write(&files[0], tampered).unwrap();
    back.logout().await.unwrap();
    back.login(UserKind::User, &Pin::new("1234")).await.unwrap();
    assert!(matches!(
        back.sign("k", b"x").await,
        Err(TokenError::Store(_))
    ));
}

#[tokio::test]
async fn hmac_sm3_and_sha256_and_wrapping_in_the_soft_token() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path(), "secret");
    let token = token(&provider, "secrets").await;
    token
        .generate_secret_key("sm3", SecretKeyKind::HmacSm3)
        .await
        .unwrap();
    token
        .generate_secret_key("sha", SecretKeyKind::HmacSha256)
        .await
        .unwrap();
    token
        .generate_secret_key("wrap", SecretKeyKind::Aes256Wrap)
        .await
        .unwrap();
    assert!(matches!(
        token
            .generate_secret_key("sm3", SecretKeyKind::HmacSm3)
            .await,
        Err(TokenError::KeyExists(_))
    ));
    let a = token.hmac("sm3", b"13800000000").await.unwrap();
    let b = token.hmac("sha", b"13800000000").await.unwrap();
    assert_ne!(a, b);
    assert_eq!(a, token.hmac("sm3", b"13800000000").await.unwrap());
    let wrapped = token.wrap_key("wrap", &[9u8; 16]).await.unwrap();
    assert_eq!(
        token.unwrap_key("wrap", &wrapped).await.unwrap().as_slice(),
        &[9u8; 16]
    );
    assert!(token.unwrap_key("wrap", &wrapped[..20]).await.is_err());
    assert!(matches!(
        token.wrap_key("sm3", b"k").await,
        Err(TokenError::InvalidInput(_))
    ));
}

#[tokio::test]
async fn listing_and_certificate_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path(), "secret");
    let token = token(&provider, "certs").await;
    token
        .generate_key_pair("k", KeyAlgorithm::P256)
        .await
        .unwrap();
    let csr = hsm::csr::build_csr(token.as_ref(), "k", "CN=Synthetic Holder")
        .await
        .unwrap();
    let cert = common::issue_with_openssl(dir.path(), &csr.pem);
    token.write_certificate("k", &cert).await.unwrap();
    assert_eq!(token.read_certificate("k").await.unwrap(), Some(cert));
    let listed = provider.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].label, "certs");
    assert!(matches!(
        provider.open_token("missing").await,
        Err(TokenError::TokenNotPresent(_))
    ));
    assert!(matches!(
        provider
            .init_token("certs", &Pin::new("88888888"), &Pin::new("1234"))
            .await,
        Err(TokenError::TokenExists(_))
    ));
}

#[tokio::test]
async fn open_from_config_opens_the_soft_device_token() {
    let data_dir = tempfile::tempdir().unwrap();
    let section = kiosk_config::TokenSection::default();
    let err = hsm::open_from_config(&section, data_dir.path())
        .await
        .err()
        .expect("no token yet");
    assert!(matches!(err, TokenError::TokenNotPresent(_)), "{err}");
    let provider = hsm::open_provider(&section, data_dir.path()).unwrap();
    provider
        .init_token(
            &section.device_token,
            &Pin::new("88888888"),
            &Pin::new("1234"),
        )
        .await
        .unwrap();
    let device = hsm::open_from_config(&section, data_dir.path())
        .await
        .unwrap();
    device
        .token
        .login(UserKind::User, &Pin::new("1234"))
        .await
        .unwrap();
    let key = device
        .token
        .generate_key_pair(&device.key_label, KeyAlgorithm::Sm2)
        .await
        .unwrap();
    let sig = device
        .token
        .sign(&device.key_label, b"envelope")
        .await
        .unwrap();
    hsm::soft_crypto::verify(
        KeyAlgorithm::Sm2,
        &key.public_key,
        &section.sm2_distid,
        b"envelope",
        &sig.raw,
    )
    .unwrap();
    assert!(data_dir.path().join(&section.soft_dir).is_dir());
}
