//! Async device drivers: ID-card reader, fingerprint sensor, camera; one trait per device
//! kind, protocol engines generic over a byte transport, and simulators on pseudo-terminals.
//!
//! - [`idcard`]: [`IdCardReader`] and the SAM engine [`SamReader`].
//! - [`fingerprint`]: [`FingerprintSensor`] and the EF01 engine [`Ef01Sensor`].
//! - [`link`]: serial / TCP / in-memory transports and connectors.
//! - [`sim`]: simulators behind real ptys (embedded defaults and tests).
//! - [`config`]: opening devices from `kiosk_config::SerialDeviceSection`.
//! - [`binding`]: person ↔ card comparison traits (vendor components) with stand-ins.
//! - [`camera`]: [`camera::Camera`] over a [`camera::FrameSource`], face-capture selection.
//! - [`report`]: masked, display-safe summaries for diagnostics.
//!
//! Benchmark (full card read over a pty paced at 115200 baud, as a ratio to the link's
//! transfer time): `cargo bench -p drivers --bench idcard_read`.

pub mod binding;
pub mod camera;
pub mod config;
pub mod fingerprint;
mod framed;
pub mod idcard;
pub mod link;
pub mod report;
pub mod sim;

pub use fingerprint::{
    Ef01Sensor, Ef01Settings, FingerprintError, FingerprintSensor, SensorInfo, VerifyOutcome,
};
pub use idcard::{CardRead, IdCardError, IdCardReader, SamReader, SamSettings};
pub use link::{Connector, Link, SerialConnector, TcpConnector};
