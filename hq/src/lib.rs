//! hq-ingest: receives, verifies, decrypts and stores kiosk records in PostgreSQL; HQ is also
//! the witness of every kiosk's audit log and runs retention.
//!
//! In-process use (tests, the daemon's local-HQ demo): build a pool with [`db::pool`], run
//! [`db::migrate`], register kiosks with [`db::register_kiosk`], then [`server::start`] with an
//! [`ingest::Ingestor`] and [`tls::server_config`]. [`dev_pki::generate`] writes demo keys and
//! certificates; [`pg_cluster::TempCluster`] starts a throwaway PostgreSQL. [`ca`] is the CA
//! issuing applicants' certificates (EST), enabled with [`server::start_with_ca`].
//! [`enroll`] provisions new kiosks with one-time codes. [`service`] runs everything a [`config::HqConfig`] file describes as a systemd service.

pub mod ca;
pub mod ca_audit;
pub mod config;
pub mod db;
pub mod dev_pki;
pub mod dev_queue;
pub mod enroll;
pub mod ingest;
pub mod keys;
pub mod kiosk_revocation;
pub mod local;
pub mod metrics;
pub mod pg_cluster;
pub mod policy;
pub mod retention;
pub mod server;
pub mod service;
pub mod tls;

/// The kiosk-side mTLS client (one implementation, in `records` behind its `client` feature).
pub use records::client;
