//! hq-ingest as a systemd service, run as its unit runs it (`hq-ingest --config FILE`): secrets
//! from systemd credentials, `READY=1` on `$NOTIFY_SOCKET` only once migrations are applied and
//! the listeners accept, SIGTERM while a kiosk sends drains and exits 0 within 5 s with every
//! acknowledged batch committed, retention on a schedule with the privacy catalog's periods, and
//! configuration errors that name the file, line and key.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hq_ingest::dev_pki::DEMO_KIOSK_ID;
use hq_ingest::dev_queue;
use records::Suite;

const BIN: &str = env!("CARGO_BIN_EXE_hq-ingest");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration directory as a deployment has it: the file, public certificates beside it,
/// and the secrets in a separate credentials directory (what systemd's `LoadCredential=` makes).
struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
    credentials: PathBuf,
    port: u16,
}

impl Deployment {
    fn new(hq: &Hq, extra: &str) -> Self {
        Self::with_database(hq, &hq.url, extra)
    }

    fn with_database(hq: &Hq, url: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        std::fs::create_dir(&credentials).unwrap();
        let p = &hq.pki;
        for (name, from) in [
            ("server.key", &p.server_key),
            ("record-key", &p.record_key),
            ("witness-key", &p.witness_key),
        ] {
            std::fs::copy(from, credentials.join(name)).unwrap();
        }
        std::fs::copy(&p.ca_cert, dir.path().join("kiosk-ca.pem")).unwrap();
        let port = free_port();
        let config = dir.path().join("hq-ingest.toml");
        std::fs::write(
            &config,
            format!(
                r#"# as /etc/hq-ingest/hq-ingest.toml
[database]
url = "{url}"
pool_size = 4

[listen]
mtls = "127.0.0.1:{port}"

[tls]
kiosk_ca = "kiosk-ca.pem"
cert = "{cert}"
key = "credential:server.key"

[keys]
record_key = "credential:record-key"
witness_key = "credential:witness-key"
{extra}
"#,
                url = url,
                cert = p.server_cert.display(),
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            credentials,
            port,
        }
    }

    /// `ExecStart=/usr/bin/hq-ingest --config /etc/hq-ingest/hq-ingest.toml`, with the
    /// environment systemd gives a `Type=notify` unit with credentials.
    fn start(&self, notify: Option<&Path>) -> Child {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .env("CREDENTIALS_DIRECTORY", &self.credentials)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(socket) = notify {
            cmd.env("NOTIFY_SOCKET", socket);
        }
        cmd.spawn().unwrap()
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// Datagrams received on a notify socket until `want` appears in one (or the deadline).
fn wait_notify(socket: &UnixDatagram, want: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} on the notify socket within {within:?}; got {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_exec_start_reports_ready_after_migrations_and_listeners_then_stops_on_sigterm() {
    let hq = Hq::start("service_ready", 0).await;
    // A fresh database: the service itself migrates before it says READY.
    let fresh = cluster()
        .create_database(&format!("service_ready_fresh_{}", std::process::id()))
        .await
        .unwrap();
    let deployment = Deployment::with_database(&hq, &fresh, "");
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut child = deployment.start(Some(&notify_path));

    let got = wait_notify(&notify, "READY=1", Duration::from_secs(60));
    // At READY the listener accepts and the schema exists.
    std::net::TcpStream::connect(("127.0.0.1", deployment.port))
        .expect("mTLS listener accepts once READY=1 was sent");
    let (db, conn) = tokio_postgres::connect(&fresh, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tables: i64 = db
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('kiosks', 'batches', 'records')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 3, "migrated before READY");
    assert!(
        got.iter().any(|m| m.contains("STATUS=serving kiosks on")),
        "{got:?}"
    );
    assert!(child.try_wait().unwrap().is_none(), "still running");

    sigterm(&child);
    wait_notify(&notify, "STOPPING=1", Duration::from_secs(5));
    let status = wait_exit(&mut child, Duration::from_secs(5)).expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    drop(deployment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_kiosk_sends_exits_zero_within_5s_and_every_acked_batch_is_committed() {
    const BATCHES: u64 = 60;
    const RECORDS: u8 = 40;
    let hq = Hq::start("service_drain", 0).await;
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    hq.register(&kiosk).await;
    let queue = tempfile::tempdir().unwrap();
    for b in 1..=BATCHES {
        let env = kiosk.seal_next((0..RECORDS).map(applicant).collect());
        dev_queue::write_atomic(&dev_queue::batch_path(queue.path(), b), &env).unwrap();
    }
    let deployment = Deployment::new(&hq, "[retention]\nenabled = false\n");
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut service = deployment.start(Some(&notify_path));
    wait_notify(&notify, "READY=1", Duration::from_secs(60));

    let p = &hq.pki;
    let mut sender = Command::new(BIN)
        .arg("dev-kiosk-send")
        .arg("--queue")
        .arg(queue.path())
        .arg("--hq")
        .arg(format!("127.0.0.1:{}", deployment.port))
        .arg("--ca")
        .arg(&p.ca_cert)
        .arg("--cert")
        .arg(&p.kiosk_cert)
        .arg("--key")
        .arg(&p.kiosk_key)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGTERM while the kiosk is sending: some batches acknowledged, not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    while dev_queue::acked(queue.path()).unwrap() < 3 {
        assert!(Instant::now() < deadline, "the kiosk never got an ack");
        std::thread::sleep(Duration::from_millis(5));
    }
    sigterm(&service);
    let signalled = Instant::now();
    let status = wait_exit(&mut service, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("hq-ingest still running 5 s after SIGTERM"));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    let acked_at_exit = dev_queue::acked(queue.path()).unwrap();
    let _ = sender.kill();
    let _ = sender.wait();
    let acked = dev_queue::acked(queue.path()).unwrap();
    eprintln!("stopped {took:?} after SIGTERM; kiosk acked {acked} of {BATCHES} batches");
    assert!(
        acked < BATCHES,
        "SIGTERM came while the kiosk was still sending"
    );
    assert_eq!(acked, acked_at_exit, "no ack after the service exited");

    // Every batch the kiosk holds an ack for is committed, with all its records.
    let db = hq.db().await;
    for seq in 1..=acked as i64 {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM records WHERE kiosk_id = $1 AND batch_seq = $2",
                &[&DEMO_KIOSK_ID, &seq],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            n,
            i64::from(RECORDS),
            "acknowledged batch {seq} committed whole"
        );
    }
    assert!(hq.count("SELECT count(*) FROM batches").await >= acked as i64);
    drop(deployment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_retention_uses_the_privacy_catalogs_periods() {
    let hq = Hq::start("service_retention", 0).await;
    let db = hq.db().await;
    // Cancelled 2 months ago (due under a 1-month catalog, not under the built-in 6 months)
    // and 2 weeks ago (due under neither).
    db.execute(
        "INSERT INTO subjects (subject_ref, cancelled_at) VALUES
         ($1, now() - interval '2 months'), ($2, now() - interval '14 days')",
        &[&vec![1u8; 32], &vec![2u8; 32]],
    )
    .await
    .unwrap();
    let catalog_dir = tempfile::tempdir().unwrap();
    let catalog = catalog_dir.path().join("privacy-catalog.toml");
    let text = kiosk_config::catalog::DEFAULT_CATALOG.replace(
        "anonymize_after_cancellation_months = 6",
        "anonymize_after_cancellation_months = 1",
    );
    assert_ne!(text, kiosk_config::catalog::DEFAULT_CATALOG);
    std::fs::write(&catalog, text).unwrap();
    let deployment = Deployment::new(
        &hq,
        &format!(
            "[retention]\ninterval = \"1h\"\ncatalog = \"{}\"\n",
            catalog.display()
        ),
    );
    let mut service = deployment.start(None);
    let erased = |n: u8| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT erased_at IS NOT NULL FROM subjects WHERE subject_ref = $1",
                &[&vec![n; 32]],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !erased(1).await {
        assert!(
            Instant::now() < deadline,
            "the service's retention run did not erase the subject cancelled 2 months ago"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!erased(2).await, "a subject cancelled 2 weeks ago is kept");
    sigterm(&service);
    assert!(
        wait_exit(&mut service, Duration::from_secs(5))
            .unwrap()
            .success()
    );
    drop(deployment);
}

fn run(args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_name_file_line_and_key_and_check_config_agrees() {
    let hq = Hq::start("service_config", 0).await;
    let deployment = Deployment::new(&hq, "");
    let cfg = deployment.config.to_str().unwrap();

    let (ok, stdout, stderr) = run(&["check-config", cfg], &[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("key = \"credential:server.key\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains("PRIVATE KEY"),
        "secrets are never printed: {stdout}"
    );

    let text = std::fs::read_to_string(&deployment.config).unwrap();
    let bad = deployment.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replace("[keys]\n", "[keys]\nwitness_nmae = \"x\"\n"),
    )
    .unwrap();
    let line = text
        .lines()
        .position(|l| l == "[keys]")
        .map(|i| i + 2)
        .unwrap();
    let want = format!("{}:{line}: keys.witness_nmae: unknown field", bad.display());
    let (ok, _, stderr) = run(&["check-config", bad.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(stderr.contains(&want), "{stderr}");
    // The service refuses the same file with the same message, before touching anything.
    let (ok, _, stderr) = run(
        &["--config", bad.to_str().unwrap()],
        &[("CREDENTIALS_DIRECTORY", &deployment.credentials)],
    );
    assert!(!ok);
    assert!(stderr.contains(&want), "{stderr}");
    assert!(!stderr.contains("Usage:"), "not a usage error: {stderr}");
    // A credential without $CREDENTIALS_DIRECTORY names the fix.
    let (ok, _, stderr) = run(&["--config", cfg], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("tls.key") && stderr.contains("LoadCredential=server.key:"),
        "{stderr}"
    );
}
