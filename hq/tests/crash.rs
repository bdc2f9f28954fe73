//! Crash safety: a kiosk sender draining a durable file queue and the hq-ingest service, both
//! real processes, are killed with SIGKILL at random points for 20+ rounds; afterwards HQ holds
//! every record exactly once and the kiosk's progress matches HQ's.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hq_ingest::dev_pki::DEMO_KIOSK_ID;
use hq_ingest::dev_queue;
use records::Suite;

const BATCHES: u64 = 30;
const RECORDS_PER_BATCH: u8 = 40;
const ROUNDS: usize = 24;

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Procs<'a> {
    hq: &'a Hq,
    queue: &'a std::path::Path,
    port: u16,
}

impl Procs<'_> {
    fn bin() -> Command {
        Command::new(env!("CARGO_BIN_EXE_hq-ingest"))
    }

    fn start_hq(&self) -> Child {
        let p = &self.hq.pki;
        Self::bin()
            .arg("serve")
            .arg("--database-url")
            .arg(&self.hq.url)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--kiosk-ca")
            .arg(&p.ca_cert)
            .arg("--cert")
            .arg(&p.server_cert)
            .arg("--key")
            .arg(&p.server_key)
            .arg("--record-key")
            .arg(&p.record_key)
            .arg("--witness-key")
            .arg(&p.witness_key)
            .arg("--pool-size")
            .arg("2")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn start_kiosk(&self) -> Child {
        let p = &self.hq.pki;
        Self::bin()
            .arg("dev-kiosk-send")
            .arg("--queue")
            .arg(self.queue)
            .arg("--hq")
            .arg(format!("127.0.0.1:{}", self.port))
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
            .unwrap()
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_kill_9_of_kiosk_and_hq() {
    let hq = Hq::start("crash", 0).await;
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    hq.register(&kiosk).await;
    let queue = tempfile::tempdir().unwrap();
    for b in 1..=BATCHES {
        let env = kiosk.seal_next((0..RECORDS_PER_BATCH).map(applicant).collect());
        dev_queue::write_atomic(&dev_queue::batch_path(queue.path(), b), &env).unwrap();
    }
    let procs = Procs {
        hq: &hq,
        queue: queue.path(),
        port: free_port(),
    };

    let mut hq_proc = procs.start_hq();
    let mut kiosk_proc = procs.start_kiosk();
    let mut kills = (0, 0);
    for _ in 0..ROUNDS {
        // Random kill point; whichever process is chosen is killed mid-flight.
        std::thread::sleep(Duration::from_millis(20 + random_below(250)));
        match random_below(3) {
            0 => {
                kill(&mut hq_proc);
                hq_proc = procs.start_hq();
                kills.0 += 1;
            }
            1 => {
                kill(&mut kiosk_proc);
                kiosk_proc = procs.start_kiosk();
                kills.1 += 1;
            }
            _ => {
                kill(&mut hq_proc);
                kill(&mut kiosk_proc);
                hq_proc = procs.start_hq();
                kiosk_proc = procs.start_kiosk();
                kills = (kills.0 + 1, kills.1 + 1);
            }
        }
        if let Ok(Some(_)) = kiosk_proc.try_wait() {
            // Drained early: restart so later kills still hit a running sender.
            kiosk_proc = procs.start_kiosk();
        }
    }
    // Let both run to completion (deadline, not a fixed sleep).
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = kiosk_proc.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kiosk sender did not drain");
        std::thread::sleep(Duration::from_millis(50));
    };
    kill(&mut hq_proc);
    assert!(status.success(), "sender failed: {status:?}");
    assert!(
        kills.0 > 0 && kills.1 > 0,
        "both sides were killed: {kills:?}"
    );

    let total = BATCHES as i64 * i64::from(RECORDS_PER_BATCH);
    assert_eq!(dev_queue::acked(queue.path()).unwrap(), BATCHES);
    assert_eq!(hq.count("SELECT count(*) FROM records").await, total);
    assert_eq!(
        hq.count("SELECT count(DISTINCT seq) FROM records").await,
        total
    );
    assert_eq!(hq.count("SELECT max(seq) FROM records").await, total);
    assert_eq!(
        hq.count("SELECT count(*) FROM batches").await,
        BATCHES as i64
    );
}
