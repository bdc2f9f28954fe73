//! kioskd: the daemon's subsystems.
//!
//! - [`app`] wires configuration, store, API and background tasks together and
//!   owns the process lifecycle (ready, watchdog, graceful shutdown).
//! - [`api`] the local HTTP API (loopback TCP and Unix socket): a thin front door.
//! - [`workflow`] the use cases (applicant steps, issuance, staff desk) behind it.
//! - [`client`] a typed client of that API over the Unix socket (`kioskctl staff`, tests).
//! - [`lock`] the daemon's advisory lock on its store directory (one kioskd per store; the
//!   technician CLI refuses the device token while it is held).
//! - [`store`] the kiosk's SQLite store.
//! - [`systemd`] sd_notify readiness and watchdog.
//! - [`logging`] structured `tracing` output.
//! - [`privacy`] catalog enforcement, consent, minors, minimizer, deadlines.
//! - [`audit`] the Merkle audit log and its signed checkpoints.
//! - [`rights`] rights requests with deadlines; [`retention`] the local purge sweeper.
//! - [`sync`] store-and-forward of sealed batches to HQ.
//! - [`keys`] data-key wrapping and keyed digests (keys held on the token).

pub mod api;
pub mod app;
pub mod audit;
pub mod batch;
pub mod ca_client;
pub mod client;
pub mod clock;
pub mod devices;
pub mod events;
pub mod intake;
pub mod keys;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod privacy;
pub mod retention;
pub mod rights;
pub mod session;
pub mod staff;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod token_keys;
pub mod ukey_sim;
pub mod verify;
pub mod workflow;
