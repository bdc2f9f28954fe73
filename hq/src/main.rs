//! hq-ingest: receives, verifies, decrypts and stores kiosk records in PostgreSQL.
fn main() {
    println!("hq-ingest {}", env!("CARGO_PKG_VERSION"));
}
