//! The wall clock every subsystem stamps records with (one definition, no dependencies).

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
