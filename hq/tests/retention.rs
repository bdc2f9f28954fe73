//! Retention job with fixed clocks: 5 years after revocation, 10 years after expiry for
//! government-use certificates, erasure 6 months after account cancellation unless a legal
//! retention applies, kiosk deletion notices, and notices recorded for propagation.

mod common;

use common::*;
use hq_ingest::dev_pki::DEMO_KIOSK_ID;
use hq_ingest::retention::{self, RetentionPolicy};
use records::Suite;
use records::wire::*;
use time::{Duration, OffsetDateTime};

fn cert_event(
    subject_n: u8,
    serial: &str,
    kind: CertificateEventKind,
    gov: bool,
    not_after: OffsetDateTime,
) -> Record {
    Record::Certificate(CertificateEvent {
        subject_ref: subject(subject_n),
        serial_hex: serial.into(),
        kind,
        government_use: gov,
        not_after: not_after.unix_timestamp(),
        occurred_at: 0,
    })
}

async fn run_at(hq: &Hq, now: OffsetDateTime) -> retention::RetentionReport {
    retention::run(&mut hq.db().await, now, &RetentionPolicy::default())
        .await
        .unwrap()
}

async fn subject_rows(hq: &Hq, n: u8) -> i64 {
    hq.db()
        .await
        .query_one(
            "SELECT count(*) FROM records WHERE subject_ref = $1",
            &[&vec![n; 32]],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_periods_and_cancellation_with_fixed_clocks() {
    let hq = Hq::start("retention", 1).await;
    let t0 = *hq.clock.0.lock().unwrap();
    let year = Duration::days(365);
    let mut kiosk = KioskSim::new(DEMO_KIOSK_ID, hq.recipient_public.clone(), Suite::Gm);
    hq.register(&kiosk).await;
    let client = hq.client(0);
    let cancel = |n: u8| {
        Record::RightsRequest(RightsRequestEvent {
            subject_ref: subject(n),
            request_id: format!("rr-{n}"),
            kind: RightsRequestKind::AccountCancellation,
            received_at: 0,
            deadline: 0,
        })
    };
    let batch = vec![
        // 1: ordinary certificate, revoked now (HQ clock t0), expiring in 2 years.
        applicant(1),
        cert_event(1, "01", CertificateEventKind::Issued, false, t0 + 2 * year),
        cert_event(1, "01", CertificateEventKind::Revoked, false, t0 + 2 * year),
        // 2: government-use certificate expiring in 1 year.
        applicant(2),
        cert_event(2, "02", CertificateEventKind::Issued, true, t0 + year),
        // 3: account cancelled, no certificate.
        applicant(3),
        cancel(3),
        // 4: account cancelled but holds a certificate valid for 2 more years.
        applicant(4),
        cert_event(4, "04", CertificateEventKind::Issued, false, t0 + 2 * year),
        cancel(4),
        // 5: deletion requested at the kiosk.
        applicant(5),
        Record::DeletionNotice(DeletionNotice {
            subject_ref: subject(5),
            reason: "consent_withdrawn".into(),
            items: vec![],
            requested_at: 0,
        }),
    ];
    client.send_envelope(kiosk.seal_next(batch)).await.unwrap();

    // Cancelled subjects are unsearchable at once.
    assert_eq!(
        hq.count("SELECT count(*) FROM searchable_records WHERE subject_ref IN ('\\x0303030303030303030303030303030303030303030303030303030303030303'::bytea)").await,
        0
    );
    assert_eq!(subject_rows(&hq, 3).await, 2, "but still stored");

    // Next day: only the kiosk deletion request (no legal retention) is executed.
    let r = run_at(&hq, t0 + Duration::days(1)).await;
    assert_eq!((r.subjects_erased, r.notices_issued), (1, 0), "{r:?}");
    assert_eq!(subject_rows(&hq, 5).await, 0);
    assert_eq!(r.deferred_by_legal_retention, 0);

    // 5 months: cancellation not yet due.
    let r = run_at(&hq, t0 + Duration::days(150)).await;
    assert_eq!(r.subjects_erased, 0, "{r:?}");
    assert_eq!(subject_rows(&hq, 3).await, 2);

    // 7 months: subject 3 erased with a notice; subject 4 deferred by legal retention.
    let r = run_at(&hq, t0 + Duration::days(212)).await;
    assert_eq!((r.subjects_erased, r.notices_issued), (1, 1), "{r:?}");
    assert_eq!(r.deferred_by_legal_retention, 1);
    assert_eq!(subject_rows(&hq, 3).await, 0);
    assert_eq!(subject_rows(&hq, 4).await, 3);

    // Just under 5 years after revocation: subject 1 kept.
    run_at(&hq, t0 + 5 * year - Duration::days(2)).await;
    assert_eq!(subject_rows(&hq, 1).await, 3);
    // Just over: erased.
    run_at(&hq, t0 + 5 * year + Duration::days(3)).await;
    assert_eq!(subject_rows(&hq, 1).await, 0);
    // Subject 4's certificate expired at 2 years: erased at 7 years, not before.
    assert_eq!(subject_rows(&hq, 4).await, 3);
    run_at(&hq, t0 + 7 * year + Duration::days(3)).await;
    assert_eq!(subject_rows(&hq, 4).await, 0);

    // Government certificate expired after 1 year: still kept at 1+5 and 1+9 years...
    run_at(&hq, t0 + 10 * year - Duration::days(5)).await;
    assert_eq!(subject_rows(&hq, 2).await, 2);
    // ...erased only after 1+10 years.
    run_at(&hq, t0 + 11 * year + Duration::days(5)).await;
    assert_eq!(subject_rows(&hq, 2).await, 0);

    // Every erasure is queued for propagation; kiosk and HQ notices alike.
    let db = hq.db().await;
    let pending = retention::pending_notices(&db, 100).await.unwrap();
    let mut sources: Vec<_> = pending
        .iter()
        .map(|n| (n.subject_ref[0], n.source.clone()))
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        vec![
            (1, "hq-retention".to_owned()),
            (2, "hq-retention".to_owned()),
            (3, "hq-retention".to_owned()),
            (4, "hq-retention".to_owned()),
            (5, format!("kiosk:{DEMO_KIOSK_ID}")),
        ]
    );
    let ids: Vec<i64> = pending.iter().map(|n| n.id).collect();
    let marked = retention::mark_propagated(&db, &ids, t0 + 12 * year)
        .await
        .unwrap();
    assert_eq!(marked, 5);
    assert!(
        retention::pending_notices(&db, 100)
            .await
            .unwrap()
            .is_empty()
    );
}
