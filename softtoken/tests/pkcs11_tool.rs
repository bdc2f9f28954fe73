//! OpenSC's `pkcs11-tool` against the module, each command its own process (so the store
//! on disk is what carries tokens, keys and PIN counters between them), judged by `openssl`.

mod common;

use std::path::Path;

use common::*;

struct Tool<'a> {
    module: String,
    dir: &'a Path,
}

impl Tool<'_> {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--module", self.module.as_str()];
        all.extend_from_slice(args);
        run("pkcs11-tool", &all, &[("KIOSK_SOFTTOKEN_DIR", self.dir)])
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "pkcs11-tool {args:?}: {}", text(&o));
        text(&o)
    }

    /// `--init-token` then `--init-pin` with an SO login, as staff do with a blank UKEY.
    fn init(&self, label: &str) {
        self.ok(&["--init-token", "--label", label, "--so-pin", SO_PIN]);
        self.ok(&[
            "--token-label",
            label,
            "--init-pin",
            "--login",
            "--login-type",
            "so",
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ]);
    }

    fn flags(&self) -> String {
        self.ok(&["-L"])
            .lines()
            .find(|l| l.contains("token flags"))
            .unwrap_or_default()
            .to_owned()
    }
}

#[test]
fn pkcs11_tool_initialises_generates_p256_and_signs_what_openssl_verifies() {
    let store = store_dir("slots = 2\nkdf_iterations = 20000\n");
    let tool = Tool {
        module: module_path().display().to_string(),
        dir: store.path(),
    };
    assert!(tool.ok(&["-L"]).contains("uninitialized"));
    tool.init("branch-ukey");
    let flags = tool.flags();
    assert!(
        flags.contains("token initialized") && flags.contains("PIN initialized"),
        "{flags}"
    );

    let keygen = tool.ok(&[
        "--token-label",
        "branch-ukey",
        "-l",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "a1",
        "--label",
        "device-key",
    ]);
    assert!(keygen.contains("never extractable"), "{keygen}");

    let work = store.path();
    let (pub_der, pub_pem, msg, sig) = (
        work.join("pub.der"),
        work.join("pub.pem"),
        work.join("msg.txt"),
        work.join("sig.der"),
    );
    tool.ok(&[
        "--token-label",
        "branch-ukey",
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        "a1",
        "-o",
        pub_der.to_str().unwrap(),
    ]);
    let o = openssl(&[
        "pkey",
        "-pubin",
        "-inform",
        "DER",
        "-in",
        pub_der.to_str().unwrap(),
        "-out",
        pub_pem.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    std::fs::write(&msg, b"certificate application 2026-0042").unwrap();
    tool.ok(&[
        "--token-label",
        "branch-ukey",
        "-l",
        "--pin",
        USER_PIN,
        "--sign",
        "-m",
        "ECDSA-SHA256",
        "--signature-format",
        "openssl",
        "--id",
        "a1",
        "-i",
        msg.to_str().unwrap(),
        "-o",
        sig.to_str().unwrap(),
    ]);
    let verify = |m: &Path| {
        openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            pub_pem.to_str().unwrap(),
            "-signature",
            sig.to_str().unwrap(),
            m.to_str().unwrap(),
        ])
    };
    let o = verify(&msg);
    assert!(
        o.status.success(),
        "openssl rejects the signature: {}",
        text(&o)
    );
    let other = work.join("other.txt");
    std::fs::write(&other, b"certificate application 2026-0043").unwrap();
    assert!(
        !verify(&other).status.success(),
        "a signature over another message verified"
    );

    // Listed as pkcs11-tool sees it: sensitive and never extractable.
    let listed = tool.ok(&[
        "--token-label",
        "branch-ukey",
        "-l",
        "--pin",
        USER_PIN,
        "-O",
    ]);
    assert!(
        listed.contains("sensitive") && listed.contains("never extractable"),
        "{listed}"
    );
}

#[test]
fn wrong_pins_lock_the_token_within_the_configured_count_and_so_unlock_restores_it() {
    let store = store_dir("slots = 1\nkdf_iterations = 20000\nuser_pin_max_attempts = 4\n");
    let tool = Tool {
        module: module_path().display().to_string(),
        dir: store.path(),
    };
    tool.init("lockme");
    let login = |pin: &str| tool.run(&["--token-label", "lockme", "-l", "--pin", pin, "-O"]);

    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let o = login("000000");
        assert!(!o.status.success());
        outcomes.push(text(&o));
        if outcomes.len() == 1 {
            assert!(
                tool.flags().contains("user PIN count low"),
                "{}",
                tool.flags()
            );
        }
    }
    assert!(outcomes[0].contains("CKR_PIN_INCORRECT"), "{}", outcomes[0]);
    assert!(
        outcomes[3].contains("CKR_PIN_LOCKED"),
        "4th wrong PIN of 4 must lock: {}",
        outcomes[3]
    );
    assert!(tool.flags().contains("user PIN locked"), "{}", tool.flags());
    // Locked: the right PIN fails too, and the counter lives on disk (new processes).
    let o = login(USER_PIN);
    assert!(text(&o).contains("CKR_PIN_LOCKED"), "{}", text(&o));

    // A wrong SO PIN as unblock code does not unlock.
    let o = tool.run(&[
        "--token-label",
        "lockme",
        "--unlock-pin",
        "--puk",
        "11111111",
        "--new-pin",
        "654321",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(login(USER_PIN).status.code() != Some(0));

    // pkcs11-tool --unlock-pin sends the SO PIN (as --puk) in a public session.
    tool.ok(&[
        "--token-label",
        "lockme",
        "--unlock-pin",
        "--puk",
        SO_PIN,
        "--new-pin",
        "654321",
    ]);
    assert!(!tool.flags().contains("locked"), "{}", tool.flags());
    let o = login("654321");
    assert!(o.status.success(), "{}", text(&o));
    assert!(!login(USER_PIN).status.success(), "the old PIN still works");

    // Locked again, then the SO way of --init-pin also restores it.
    for _ in 0..4 {
        let _ = login("000000");
    }
    assert!(tool.flags().contains("user PIN locked"));
    tool.ok(&[
        "--token-label",
        "lockme",
        "--init-pin",
        "--login",
        "--login-type",
        "so",
        "--so-pin",
        SO_PIN,
        "--pin",
        "777777",
    ]);
    assert!(login("777777").status.success());
}
