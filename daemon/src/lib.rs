//! kioskd: the daemon's subsystems.
//!
//! - [`app`] wires configuration, store, API and background tasks together and
//!   owns the process lifecycle (ready, watchdog, graceful shutdown).
//! - [`api`] the local HTTP API (loopback TCP and Unix socket).
//! - [`store`] the kiosk's SQLite store.
//! - [`systemd`] sd_notify readiness and watchdog.
//! - [`logging`] structured `tracing` output.

pub mod api;
pub mod app;
pub mod logging;
pub mod store;
pub mod systemd;
