//! Demo stand-ins and production mode.
//!
//! [`demo_features`] lists everything in a configuration that only a demonstration may use:
//! the soft token, built-in or inline secrets, the demo staff CA, simulated or synthetic
//! devices (and their `/v1/sim` control routes), the stand-in verification services, the
//! local HQ and its demo CA. In `demo` mode kioskd announces each of them in the log once at
//! start-up; in `production` mode each one is a [`crate::Problem`] with its key and fix, all
//! reported together, and kioskd does not start.

use crate::{CameraMode, Config, ConfigSecret, HqMode, KioskMode, SerialMode, TokenProvider};

/// One demo-only thing a configuration uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoFeature {
    /// The dotted key that selects it.
    pub key: String,
    /// What it is (for the log and the problem message).
    pub what: String,
    /// What production uses instead.
    pub fix: String,
}

const SECRET_FIX: &str = "give it as { file = \"/etc/kioskd/NAME\" } (mode 0600, owned by the kioskd user) or as a systemd credential { credential = \"NAME\" } with LoadCredential=NAME:/path in kioskd.service";

fn secret(
    out: &mut Vec<DemoFeature>,
    key: &str,
    value: &ConfigSecret,
    production: bool,
    what: &str,
) {
    if value.is_builtin() {
        out.push(DemoFeature {
            key: key.into(),
            what: format!("{what} is the built-in demo value published with kioskd"),
            fix: SECRET_FIX.into(),
        });
    } else if production && value.is_in_config() {
        out.push(DemoFeature {
            key: key.into(),
            what: format!("{what} is written in the configuration file"),
            fix: SECRET_FIX.into(),
        });
    }
}

/// Every demo-only thing `config` uses (see the module documentation).
pub fn demo_features(config: &Config) -> Vec<DemoFeature> {
    let production = config.kiosk.mode == KioskMode::Production;
    let mut out = Vec::new();
    let mut push = |key: &str, what: &str, fix: &str| {
        out.push(DemoFeature {
            key: key.into(),
            what: what.into(),
            fix: fix.into(),
        })
    };
    if config.token.provider == TokenProvider::Soft {
        push(
            "token.provider",
            "the device key is in the soft token (a file sealed with a secret, no hardware)",
            "set provider = \"pkcs11\" and module = the PKCS#11 library of the kiosk's HSM or device UKEY",
        );
    }
    if config.ukey.provider == TokenProvider::Soft {
        push(
            "ukey.provider",
            "applicants' UKEYs are soft tokens under the data directory",
            "set provider = \"pkcs11\" and module = the UKEY vendor's PKCS#11 library",
        );
    }
    if config.staff.ca_cert.is_none() {
        push(
            "staff.ca_cert",
            "no staff CA is configured: a demo staff CA and a demo staff token (staff-demo) are created",
            "set ca_cert = the PEM certificate of the CA that issues staff certificates",
        );
    }
    if config.staff.policy_oid == crate::STAFF_POLICY_OID {
        push(
            "staff.policy_oid",
            "staff certificates are checked for the demo staff CA's example policy OID",
            "set policy_oid = the certificate policy OID your staff CA puts in staff login certificates",
        );
    }
    for (key, dev) in [
        ("devices.idcard.mode", &config.devices.idcard),
        ("devices.fingerprint.mode", &config.devices.fingerprint),
    ] {
        if dev.mode == SerialMode::Simulated {
            push(
                key,
                "the device is simulated (its /v1/sim control routes are open and the card-binding comparison is scripted)",
                "set mode = \"serial\" with port, or mode = \"tcp\" with tcp",
            );
        }
    }
    if config.devices.camera.mode != CameraMode::V4l2 {
        push(
            "devices.camera.mode",
            "the camera gives synthetic or fixture frames",
            "set mode = \"v4l2\" and device = \"/dev/video0\"",
        );
    }
    if config.devices.camera.detector_model.is_none() {
        push(
            "devices.camera.detector_model",
            "faces are found by the built-in contrast detector, made for demo frames",
            "set detector_model to the SeetaFace model file and build kioskd with the `rustface` feature",
        );
    }
    let v = &config.verifiers;
    let endpoints = [
        ("carrier_3factor", &v.carrier_3factor),
        ("bank_card_4factor", &v.bank_card_4factor),
        ("biometric_compare", &v.biometric_compare),
    ];
    if endpoints.iter().all(|(_, e)| e.url.is_none()) {
        push(
            "verifiers.carrier_3factor.url",
            "no identity verification service is configured (the loopback stand-ins answer instead)",
            "set the https:// URL of at least one verification service",
        );
    }
    for (name, ep) in endpoints {
        if let Some(url) = &ep.url
            && !url.starts_with("https://")
        {
            out.push(DemoFeature {
                key: format!("verifiers.{name}.url"),
                what: format!("{url:?} is a plain-http stand-in, not the verification service"),
                fix: "use the service's https:// URL".into(),
            });
        }
    }
    let mut push = |key: &str, what: &str, fix: &str| {
        out.push(DemoFeature {
            key: key.into(),
            what: what.into(),
            fix: fix.into(),
        })
    };
    if config.hq.mode == HqMode::Local {
        push(
            "hq.mode",
            "records go to a local HQ started beside kioskd (demo PKI, local PostgreSQL)",
            "set mode = \"remote\" with url, ca_cert, client_cert and record_key of the real HQ",
        );
    }
    if config.ca.url.is_none() {
        push(
            "ca.url",
            "certificates are issued by the local HQ's demo CA",
            "set url = the https:// issuing endpoint of the CA and ca_cert",
        );
    }
    if config.hq.client_key.is_some() {
        push(
            "hq.client_key",
            "the TLS client key is a PEM file, not a key held on the device token",
            "remove client_key: the key kiosk-tls on the device token is used",
        );
    }
    let t = &config.token;
    if t.provider == TokenProvider::Soft {
        secret(
            &mut out,
            "token.soft_secret",
            &t.soft_secret,
            production,
            "the soft token's secret",
        );
        secret(
            &mut out,
            "token.device_so_pin",
            &t.device_so_pin,
            production,
            "the device token's SO PIN",
        );
    }
    if t.device_pin_file.is_none() {
        secret(
            &mut out,
            "token.device_pin",
            &t.device_pin,
            production,
            "the device token's PIN",
        );
    }
    if config.ukey.provider == TokenProvider::Soft {
        secret(
            &mut out,
            "ukey.soft_secret",
            &config.ukey.soft_secret,
            production,
            "the soft UKEYs' secret",
        );
    }
    secret(
        &mut out,
        "ukey.factory_so_pin",
        &config.ukey.factory_so_pin,
        production,
        "the blank UKEYs' factory SO PIN",
    );
    if config.staff.ca_cert.is_none() {
        secret(
            &mut out,
            "staff.demo_pin",
            &config.staff.demo_pin,
            production,
            "the demo staff token's PIN",
        );
    }
    out
}
