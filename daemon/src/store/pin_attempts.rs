//! PIN attempts counted per token serial, in the store.
//!
//! An attempt is *reserved* before the PIN goes to the token: inside one write transaction
//! (`BEGIN IMMEDIATE`, behind the store's connection lock) the counter is read, refused when
//! the limit is reached, else incremented. The caller then tries the PIN once and
//! [`settle`]s: a good PIN clears the counter, a wrong one stays counted, an attempt that
//! never reached the PIN check (token gone, busy) is given back. Because the count is taken
//! before the attempt and lives in the database, neither concurrent requests, a new session
//! nor a restart of kioskd gets more tries than the limit. Failures expire `window_ms` after
//! the last one (the back-off).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// Whose token is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A staff UKEY (staff login).
    Staff,
    /// An applicant's UKEY (holder login).
    Ukey,
    /// An applicant's UKEY, its SO PIN (staff unblocking it at the desk).
    UkeySo,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Staff => "staff",
            Kind::Ukey => "ukey",
            Kind::UkeySo => "ukey_so",
        }
    }
}

/// How many failures are allowed before attempts pause, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max_failures: u32,
    pub window_ms: i64,
}

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Go ahead: this attempt is number `attempt` (1-based) of `max_failures`.
    Granted { attempt: u32 },
    /// The limit is reached; try again in `retry_after_ms`.
    Refused { retry_after_ms: i64 },
}

/// How a reserved attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The PIN was right: the counter is cleared.
    Success,
    /// The PIN was wrong (or the token refused it as locked): it stays counted.
    Failure,
    /// The PIN never reached the token: the reservation is given back.
    NotTried,
}

/// Reserve one attempt on token `serial`.
pub fn reserve(
    conn: &mut Connection,
    kind: Kind,
    serial: &str,
    now_ms: i64,
    limit: Limit,
) -> rusqlite::Result<Reservation> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row: Option<(i64, i64)> = tx
        .query_row(
            "SELECT failures, last_at FROM pin_attempts WHERE kind = ?1 AND serial = ?2",
            params![kind.as_str(), serial],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let failures = match row {
        Some((f, last)) if now_ms.saturating_sub(last) < limit.window_ms => f.max(0) as u32,
        _ => 0,
    };
    if failures >= limit.max_failures {
        let last = row.map(|(_, l)| l).unwrap_or(now_ms);
        return Ok(Reservation::Refused {
            retry_after_ms: (last + limit.window_ms - now_ms).max(1),
        });
    }
    let attempt = failures + 1;
    tx.execute(
        "INSERT INTO pin_attempts (kind, serial, failures, last_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(kind, serial) DO UPDATE SET failures = excluded.failures, last_at = excluded.last_at",
        params![kind.as_str(), serial, attempt, now_ms],
    )?;
    tx.commit()?;
    Ok(Reservation::Granted { attempt })
}

/// Record how a granted attempt ended.
pub fn settle(
    conn: &Connection,
    kind: Kind,
    serial: &str,
    outcome: Outcome,
) -> rusqlite::Result<()> {
    match outcome {
        Outcome::Success => {
            conn.execute(
                "DELETE FROM pin_attempts WHERE kind = ?1 AND serial = ?2",
                params![kind.as_str(), serial],
            )?;
        }
        Outcome::Failure => {}
        Outcome::NotTried => {
            conn.execute(
                "UPDATE pin_attempts SET failures = max(failures - 1, 0) WHERE kind = ?1 AND serial = ?2",
                params![kind.as_str(), serial],
            )?;
        }
    }
    Ok(())
}

/// Failures currently counted against `serial` (0 once the window has passed).
pub fn failures(
    conn: &Connection,
    kind: Kind,
    serial: &str,
    now_ms: i64,
    limit: Limit,
) -> rusqlite::Result<u32> {
    let row: Option<(i64, i64)> = conn
        .query_row(
            "SELECT failures, last_at FROM pin_attempts WHERE kind = ?1 AND serial = ?2",
            params![kind.as_str(), serial],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((f, last)) if now_ms.saturating_sub(last) < limit.window_ms => f.max(0) as u32,
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const LIMIT: Limit = Limit {
        max_failures: 5,
        window_ms: 60_000,
    };

    /// Threat: many simultaneous wrong-PIN requests all pass a check-then-count limiter.
    /// Reservations from 64 threads at once grant exactly the limit.
    #[test]
    fn concurrent_pin_attempts_cannot_exceed_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kiosk.sqlite")).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(64));
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = reserve(&mut store.conn().unwrap(), Kind::Ukey, "SN1", 1_000, LIMIT)
                        .unwrap();
                    if matches!(r, Reservation::Granted { .. }) {
                        settle(&store.conn().unwrap(), Kind::Ukey, "SN1", Outcome::Failure)
                            .unwrap();
                    }
                    r
                })
            })
            .collect();
        let granted = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|r| matches!(r, Reservation::Granted { .. }))
            .count();
        assert_eq!(granted, 5);
    }

    /// Threat: reopening the store (a restart) or another token resets the count.
    #[test]
    fn the_count_survives_a_restart_is_per_serial_and_expires_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiosk.sqlite");
        {
            let store = Store::open(&path).unwrap();
            for i in 1..=5 {
                assert_eq!(
                    reserve(&mut store.conn().unwrap(), Kind::Staff, "A", 1_000, LIMIT).unwrap(),
                    Reservation::Granted { attempt: i }
                );
            }
        }
        let store = Store::open(&path).unwrap();
        let mut conn = store.conn().unwrap();
        assert_eq!(
            reserve(&mut conn, Kind::Staff, "A", 2_000, LIMIT).unwrap(),
            Reservation::Refused {
                retry_after_ms: 59_000
            }
        );
        // Another token, and the same serial of the other kind, are not affected.
        assert!(matches!(
            reserve(&mut conn, Kind::Staff, "B", 2_000, LIMIT).unwrap(),
            Reservation::Granted { attempt: 1 }
        ));
        assert!(matches!(
            reserve(&mut conn, Kind::Ukey, "A", 2_000, LIMIT).unwrap(),
            Reservation::Granted { attempt: 1 }
        ));
        // After the window the back-off is over; a success clears; a not-tried gives back.
        assert!(matches!(
            reserve(&mut conn, Kind::Staff, "A", 61_000, LIMIT).unwrap(),
            Reservation::Granted { attempt: 1 }
        ));
        settle(&conn, Kind::Staff, "A", Outcome::NotTried).unwrap();
        assert_eq!(failures(&conn, Kind::Staff, "A", 61_000, LIMIT).unwrap(), 0);
        reserve(&mut conn, Kind::Staff, "B", 2_001, LIMIT).unwrap();
        settle(&conn, Kind::Staff, "B", Outcome::Success).unwrap();
        assert_eq!(failures(&conn, Kind::Staff, "B", 2_002, LIMIT).unwrap(), 0);
    }
}
