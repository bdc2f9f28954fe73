//! The applicant-session API over the real binary: one applicant at a time,
//! bearer tokens, consent per purpose and separately per sensitive item,
//! cancellation, DNS-rebinding and cross-site guards, stable error codes.

mod common;

use common::Kioskd;
use serde_json::json;

#[test]
fn session_consent_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kioskd::start(dir.path(), "");
    let (status, opened) = k.call(
        "POST",
        "/v1/sessions",
        None,
        Some(json!({"service": "cert_application"})),
    );
    assert_eq!(status, 201, "{opened}");
    let id = opened["session_id"].as_str().unwrap().to_string();
    let token = opened["token"].as_str().unwrap().to_string();
    let items = opened["items"].as_array().unwrap();
    let fp = items.iter().find(|i| i["item"] == "fingerprint").unwrap();
    assert_eq!(fp["separate_consent"], true);
    assert_eq!(fp["sensitivity"], "biometric");
    let methods = opened["methods"].as_array().unwrap();
    assert!(
        methods.iter().any(|m| m["biometric"] == false),
        "a non-face method is always offered"
    );

    // A second applicant is refused while the first is active.
    let (status, body) = k.call(
        "POST",
        "/v1/sessions",
        None,
        Some(json!({"service": "cert_application"})),
    );
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "session_busy");

    // Wrong token, unknown fields, undeclared items: refused without side effects.
    let path = format!("/v1/sessions/{id}/consents");
    assert_eq!(
        k.call("POST", &path, Some("nope"), Some(json!({"purpose": true})))
            .0,
        401
    );
    assert_eq!(
        k.call(
            "POST",
            &path,
            Some(&token),
            Some(json!({"purpose": true, "pre_ticked": true}))
        )
        .0,
        422
    );
    let (status, body) = k.call(
        "POST",
        &path,
        Some(&token),
        Some(json!({"purpose": true, "items": ["salary"]})),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "not_declared");
    let (_, view) = k.call("GET", &format!("/v1/sessions/{id}"), Some(&token), None);
    assert_eq!(
        view["consents"].as_array().unwrap().len(),
        0,
        "nothing recorded by refused requests"
    );

    let (status, view) = k.call(
        "POST",
        &path,
        Some(&token),
        Some(json!({"purpose": true, "items": ["fingerprint", "face_image"]})),
    );
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["consents"].as_array().unwrap().len(), 3);
    let (status, view) = k.call(
        "POST",
        &format!("/v1/sessions/{id}/consents/withdraw"),
        Some(&token),
        Some(json!({"items": ["fingerprint"]})),
    );
    assert_eq!(status, 200);
    let withdrawn = view["consents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["withdrawn_at_ms"].is_null())
        .count();
    assert_eq!(withdrawn, 1);

    assert_eq!(
        k.call("DELETE", &format!("/v1/sessions/{id}"), Some(&token), None)
            .0,
        204
    );
    assert_eq!(
        k.call("GET", &format!("/v1/sessions/{id}"), Some(&token), None)
            .0,
        404
    );
    let (status, _) = k.call(
        "POST",
        "/v1/sessions",
        None,
        Some(json!({"service": "lifecycle"})),
    );
    assert_eq!(status, 201, "the kiosk is free again after a cancel");
    k.stop();
}

#[test]
fn foreign_hosts_and_cross_site_posts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kioskd::start(dir.path(), "");
    let agent = Kioskd::agent();
    let url = format!("{}/v1/health", k.base);
    let resp = agent
        .get(&url)
        .header("Host", "attacker.example")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 421);
    let resp = agent
        .post(&format!("{}/v1/sessions", k.base))
        .header("Origin", "http://attacker.example")
        .send_json(json!({"service": "cert_application"}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = agent
        .post(&format!("{}/v1/sessions", k.base))
        .header("Sec-Fetch-Site", "cross-site")
        .send_json(json!({"service": "cert_application"}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    // No permissive CORS.
    let resp = agent
        .get(&url)
        .header("Origin", "http://attacker.example")
        .call()
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // Oversized and malformed bodies are rejected with a code.
    let big = "x".repeat(300 * 1024);
    // kioskd answers 413 once the limit is read and closes with the rest of the body unread;
    // the kernel may then reset the connection before the client has read the answer (a
    // broken pipe while it still sends). Ask again until an answer is read.
    let status = (0..10)
        .find_map(|_| {
            agent
                .post(&format!("{}/v1/sessions", k.base))
                .send_json(json!({"service": big}))
                .ok()
                .map(|r| r.status().as_u16())
        })
        .expect("kioskd answers the oversized body at least once in 10 tries");
    assert_eq!(status, 413);
    let (status, body) = k.call(
        "POST",
        "/v1/sessions",
        None,
        Some(json!({"service": "no_such_service"})),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "unknown_service");
    k.stop();
}

#[test]
fn the_kiosk_page_is_served_embedded_with_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kioskd::start(dir.path(), "");
    let agent = Kioskd::agent();
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/kiosk.js", "text/javascript"),
        ("/assets/kiosk.css", "text/css"),
    ] {
        let mut resp = agent.get(&format!("{}{path}", k.base)).call().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let h = resp.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        let body = resp.body_mut().read_to_string().unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
    k.stop();
}

#[test]
fn the_openapi_document_is_served_and_covers_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kioskd::start(dir.path(), "");
    let (status, doc) = k.call("GET", "/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    // Every documented path answers with something other than the router's fallback.
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "00000000-0000-0000-0000-000000000000");
        for method in ops.as_object().unwrap().keys() {
            let m = method.to_uppercase();
            let (status, body) = k.call(&m, &concrete, Some("x"), Some(json!({})));
            let fallback = status == 404 && body["error"]["message"] == "no such resource";
            assert!(!fallback, "{m} {path} is documented but not routed");
            assert!(status < 500, "{m} {path} -> {status}: {body}");
            if status >= 400 {
                assert!(
                    body["error"]["code"].is_string(),
                    "{m} {path}: error without a code: {body}"
                );
            }
        }
    }
    k.stop();
}

/// A page served by another program on another loopback port is another origin: it must not
/// be able to drive the kiosk's API from the kiosk browser (the port used to be ignored).
#[test]
fn a_page_on_another_local_port_cannot_post() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kioskd::start(dir.path(), "");
    let agent = Kioskd::agent();
    let port: u16 = k.base.rsplit(':').next().unwrap().parse().unwrap();
    let other = format!("http://127.0.0.1:{}", port.wrapping_add(1).max(1));
    let resp = agent
        .post(&format!("{}/v1/sessions", k.base))
        .header("Origin", &other)
        .send_json(json!({"service": "cert_application"}))
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        403,
        "origin {other} was let through"
    );
    let resp = agent
        .post(&format!("{}/v1/sessions", k.base))
        .header("Origin", &k.base)
        .send_json(json!({"service": "cert_application"}))
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    k.stop();
}

/// `KIOSKD_API_ADDR` must not be a way around the loopback-only rule of `api.listen`.
#[test]
fn api_addr_override_off_loopback_is_refused() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::KIOSKD)
        .arg("--data-dir")
        .arg(dir.path())
        .env("KIOSKD_API_ADDR", "0.0.0.0:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let status = status.expect("kioskd kept serving on 0.0.0.0");
    assert!(!status.success());
    assert!(err.contains("not a loopback address"), "{err}");
}

/// `devices.camera.mode = "fixture"`, documented but refused at start before: kioskd starts on
/// a directory of PGM frames, and names the directory when it holds no frame.
#[test]
fn the_fixture_camera_mode_starts_and_an_empty_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let face = drivers::camera::synthetic::face_frame(drivers::camera::synthetic::Scene::default());
    let mut pgm = format!("P5\n{} {}\n255\n", face.width, face.height).into_bytes();
    pgm.extend_from_slice(&face.luma);
    std::fs::write(frames.join("face.pgm"), &pgm).unwrap();
    let config = format!(
        "[devices.camera]\nmode = \"fixture\"\nfixture_dir = {:?}\n",
        frames.display().to_string()
    );
    let k = Kioskd::start(&dir.path().join("kiosk"), &config);
    assert_eq!(k.call("GET", "/v1/health", None, None).0, 200);
    k.stop();

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let cfg = dir.path().join("empty.toml");
    std::fs::write(
        &cfg,
        format!(
            "[devices.camera]\nmode = \"fixture\"\nfixture_dir = {:?}\n",
            empty.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::KIOSKD)
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("kiosk2"))
        .env("KIOSKD_API_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fixture_dir") && err.contains("no .pgm frames"),
        "{err}"
    );
}
