//! The configuration model: every section of `kioskd.toml` as a typed struct.
//!
//! Every struct denies unknown keys and every field has a default, so an empty
//! file is a valid configuration that runs with no hardware at all.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::ConfigSecret;

/// The whole kioskd configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kiosk: KioskSection,
    pub log: LogSection,
    pub api: ApiSection,
    pub devices: DevicesSection,
    pub token: TokenSection,
    pub ukey: UkeySection,
    pub store: StoreSection,
    pub hq: HqSection,
    pub ca: CaSection,
    pub verifiers: VerifiersSection,
    pub staff: StaffSection,
    pub privacy: PrivacySection,
}

/// Whether this kiosk runs as a demonstration or serves real applicants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KioskMode {
    /// The embedded defaults are allowed (soft token, built-in secrets, simulated devices,
    /// stand-in verifiers, local HQ, demo staff CA); each is announced in the log at start.
    #[default]
    Demo,
    /// Every demo stand-in is refused by `kioskd check-config` and at start-up; secrets come
    /// from files readable only by the service or from systemd credentials.
    Production,
}

/// Identity of this kiosk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KioskSection {
    /// `demo` (the default) or `production`.
    pub mode: KioskMode,
    /// Stable identifier of the kiosk (matches the CN of its client certificate at HQ).
    pub id: String,
    /// Branch office the kiosk stands in.
    pub branch: String,
    /// Data directory; relative paths elsewhere in the file are resolved against it.
    /// `--data-dir` on the command line overrides it.
    pub data_dir: PathBuf,
}

impl Default for KioskSection {
    fn default() -> Self {
        Self {
            mode: KioskMode::Demo,
            id: "kiosk-demo-0001".into(),
            branch: "demo-branch".into(),
            data_dir: PathBuf::from("kioskd-data"),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter directive (`info`, `kioskd=debug,warn`); `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

/// The local API: loopback TCP and/or a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Loopback TCP listener (`KIOSKD_API_ADDR` overrides it). Only loopback addresses are accepted.
    pub listen: Option<SocketAddr>,
    /// Unix socket for the staff CLI (relative to the data directory).
    pub unix_socket: Option<PathBuf>,
    /// Group given the Unix socket (mode 0660): the staff who may use `kioskctl`, e.g.
    /// `kioskd-staff`. Absent: the daemon's own group.
    pub unix_socket_group: Option<String>,
    /// Host names the browser may use to reach the API (DNS-rebinding guard).
    pub allowed_hosts: Vec<String>,
    /// An applicant session ends after this many seconds without a request.
    pub session_idle_secs: u64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// In-flight requests get this long to finish on shutdown.
    pub shutdown_grace_secs: u64,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8480))),
            unix_socket: Some(PathBuf::from("kioskd.sock")),
            unix_socket_group: None,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
            session_idle_secs: 120,
            max_body_bytes: 256 * 1024,
            shutdown_grace_secs: 5,
        }
    }
}

/// The peripherals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesSection {
    pub idcard: SerialDeviceSection,
    pub fingerprint: SerialDeviceSection,
    pub camera: CameraSection,
}

/// How a serial peripheral is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialMode {
    /// The device simulator behind a pseudo-terminal, driven by the real serial driver.
    Simulated,
    /// A serial port (`port`).
    Serial,
    /// A serial server on the network (`tcp`).
    Tcp,
}

/// A serial peripheral (ID-card SAM reader, EF01 fingerprint module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SerialDeviceSection {
    pub mode: SerialMode,
    /// Device path for `serial` mode, e.g. `/dev/ttyUSB0`.
    pub port: Option<PathBuf>,
    /// `host:port` of a serial server for `tcp` mode.
    pub tcp: Option<String>,
    /// Fixed baud rate; when absent the driver probes.
    pub baud: Option<u32>,
    /// Per-command timeout in milliseconds.
    pub timeout_ms: u64,
}

impl Default for SerialDeviceSection {
    fn default() -> Self {
        Self {
            mode: SerialMode::Simulated,
            port: None,
            tcp: None,
            baud: None,
            timeout_ms: 3000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraMode {
    /// Synthetic frames generated in process.
    Synthetic,
    /// Still images from `fixture_dir`.
    Fixture,
    /// A V4L2 capture device (`device`).
    V4l2,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraSection {
    pub mode: CameraMode,
    pub device: Option<PathBuf>,
    pub fixture_dir: Option<PathBuf>,
    /// SeetaFace frontal-face model file (`seeta_fd_frontal_v1.0.bin`, shipped with the
    /// `rustface` crate, BSD-2): faces are found with it (kioskd built with the `rustface`
    /// feature). Without it the built-in contrast detector is used (demo frames only).
    pub detector_model: Option<PathBuf>,
    /// Capture size asked of a V4L2 camera (it may answer with another).
    pub width: u32,
    pub height: u32,
    /// How many frames a face capture considers before picking the best.
    pub frames_per_capture: u32,
    pub frame_timeout_ms: u64,
}

impl Default for CameraSection {
    fn default() -> Self {
        Self {
            mode: CameraMode::Synthetic,
            device: None,
            fixture_dir: None,
            detector_model: None,
            width: 640,
            height: 480,
            frames_per_capture: 8,
            frame_timeout_ms: 2000,
        }
    }
}

/// Where keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenProvider {
    /// Pure-Rust software token, keys sealed at rest (GM/T 0028 level 1 at best: demo and tests).
    Soft,
    /// A PKCS#11 module (UKEY middleware or HSM client library).
    Pkcs11,
}

/// Tokens: the kiosk's device key and the applicants' UKEYs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSection {
    pub provider: TokenProvider,
    /// Path of the PKCS#11 module for `pkcs11`.
    pub module: Option<PathBuf>,
    /// Label of the token holding the kiosk's device key.
    pub device_token: String,
    /// Label of the device key on that token.
    pub device_key: String,
    /// Directory of the soft token (relative to the data directory).
    pub soft_dir: PathBuf,
    /// Secret the soft token derives its key-encryption key from.
    pub soft_secret: ConfigSecret,
    /// User PIN of the device token (the demo default; in production give
    /// `device_pin_file`, e.g. a systemd credential under $CREDENTIALS_DIRECTORY).
    pub device_pin: ConfigSecret,
    /// File holding the device token's user PIN; overrides `device_pin`.
    pub device_pin_file: Option<PathBuf>,
    /// SO PIN used only when the embedded soft token is created on first start.
    pub device_so_pin: ConfigSecret,
    /// Vendor profile naming the SM2 mechanism and key-type numbers of the token.
    pub vendor_profile: String,
    /// SM2 distinguishing identifier used for signatures (OpenSSL 3.0 defaults to empty,
    /// GM/T 0009 and most GM tools to `1234567812345678`: never assumed).
    pub sm2_distid: String,
    /// USB VID:PID pairs of UKEYs and HSMs to watch for hot-plug (`"096e:0703"`).
    pub usb_ids: Vec<String>,
    /// Timeout of one PKCS#11 call, in milliseconds.
    pub call_timeout_ms: u64,
}

impl Default for TokenSection {
    fn default() -> Self {
        Self {
            provider: TokenProvider::Soft,
            module: None,
            device_token: "kiosk-device".into(),
            device_key: "device-key".into(),
            soft_dir: PathBuf::from("soft-token"),
            soft_secret: ConfigSecret::new("kioskd-demo-soft-token-secret"),
            device_pin: ConfigSecret::new("kiosk-device-pin"),
            device_pin_file: None,
            device_so_pin: ConfigSecret::new("kiosk-device-so-pin"),
            vendor_profile: "softhsm2".into(),
            sm2_distid: "1234567812345678".into(),
            usb_ids: Vec::new(),
            call_timeout_ms: 10_000,
        }
    }
}

/// Key type generated on applicants' UKEYs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UkeyAlgorithm {
    P256,
    Sm2,
}

/// Applicants' UKEYs (and the blank UKEYs staff issue in batches): where they are reached.
/// In the embedded defaults they are soft tokens under `<data_dir>/ukeys`, "inserted" through
/// the simulator endpoint; in production, the UKEY vendor's PKCS#11 module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UkeySection {
    pub provider: TokenProvider,
    /// PKCS#11 module of the UKEY middleware for `pkcs11` (if it is the device token's module,
    /// the loaded module is shared).
    pub module: Option<PathBuf>,
    /// Directory of the soft UKEYs (relative to the data directory).
    pub soft_dir: PathBuf,
    /// Secret the soft UKEYs derive their key-encryption key from.
    pub soft_secret: ConfigSecret,
    /// Vendor profile naming the SM2 mechanism and key-type numbers.
    pub vendor_profile: String,
    /// SM2 distinguishing identifier for holders' signatures.
    pub sm2_distid: String,
    /// Key type generated for a holder.
    pub algorithm: UkeyAlgorithm,
    /// Label of the holder's signing key on the UKEY.
    pub key_label: String,
    /// SO PIN blank UKEYs ship with from the factory (staff batch issuance replaces it).
    pub factory_so_pin: ConfigSecret,
    /// Timeout of one PKCS#11 call, in milliseconds (key generation can take seconds).
    pub call_timeout_ms: u64,
    /// How often the slot list is re-read (`C_GetSlotList`) to see UKEYs arrive and leave,
    /// in milliseconds (1..=1000: an arrival reaches the screens within a second). Also the
    /// safety net behind the USB watcher of `token.usb_ids`.
    pub poll_ms: u64,
}

impl Default for UkeySection {
    fn default() -> Self {
        Self {
            provider: TokenProvider::Soft,
            module: None,
            soft_dir: PathBuf::from("ukeys"),
            soft_secret: ConfigSecret::new("kioskd-demo-soft-ukey-secret"),
            vendor_profile: "softhsm2".into(),
            sm2_distid: "1234567812345678".into(),
            algorithm: UkeyAlgorithm::P256,
            key_label: "holder-sign".into(),
            factory_so_pin: ConfigSecret::new("12345678"),
            call_timeout_ms: 30_000,
            poll_ms: 500,
        }
    }
}

impl UkeySection {
    /// The same provider settings in the shape `hsm::open_provider` takes.
    pub fn provider_section(&self) -> TokenSection {
        TokenSection {
            provider: self.provider,
            module: self.module.clone(),
            soft_dir: self.soft_dir.clone(),
            soft_secret: self.soft_secret.clone(),
            vendor_profile: self.vendor_profile.clone(),
            sm2_distid: self.sm2_distid.clone(),
            call_timeout_ms: self.call_timeout_ms,
            ..TokenSection::default()
        }
    }
}

/// Encryption of personal fields at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldCipher {
    Sm4Gcm,
    Aes256Gcm,
}

/// The kiosk's local SQLite store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// SQLite file (relative to the data directory).
    pub path: PathBuf,
    pub cipher: FieldCipher,
    /// Below this much free space intake of new applicants stops (sync keeps going).
    pub min_free_bytes: u64,
    /// How often (seconds) the audit log is checkpointed, signed and queued for HQ to
    /// witness when it grew, and the retention sweep runs.
    pub checkpoint_secs: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            path: PathBuf::from("kiosk.sqlite"),
            cipher: FieldCipher::Sm4Gcm,
            min_free_bytes: 64 * 1024 * 1024,
            checkpoint_secs: 60,
        }
    }
}

/// Where records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HqMode {
    /// An HQ receiver started beside kioskd on loopback (demo).
    Local,
    /// A remote `hq-ingest` over mTLS.
    Remote,
}

/// Envelope cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeSuite {
    /// SM2/SM3 signature, SM2-encrypted SM4-GCM key.
    Gm,
    /// ECDSA P-256 signature, HPKE P-256/AES-128-GCM.
    Nist,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HqSection {
    pub mode: HqMode,
    /// `https://host:port` of hq-ingest for `remote`.
    pub url: Option<String>,
    /// The HQ CA certificate (PEM) pinned for the TLS connection.
    pub ca_cert: Option<PathBuf>,
    /// The kiosk's client certificate (PEM).
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key as a PEM file (demo PKI, tests). Absent: the
    /// key is the P-256 key `kiosk-tls` on the device token (rustls has no SM2).
    pub client_key: Option<PathBuf>,
    /// HQ's record-encryption public keys (JSON: `sm2_sec1_hex`, `hpke_p256_hex`).
    pub record_key: Option<PathBuf>,
    /// HQ's witness public key (JSON verifier) that its cosignatures on the kiosk's audit
    /// checkpoints are checked against; the local HQ gives its own. Absent in remote mode:
    /// cosignatures are kept unchecked and the kiosk says so (health `witness.state`).
    pub witness_key: Option<PathBuf>,
    /// The key name HQ's cosignature lines carry.
    pub witness_name: String,
    pub suite: EnvelopeSuite,
    /// Largest batch in records and in bytes (default 2,000 and 4 MiB: a bigger batch spreads
    /// its two synchronous commits and signatures over more records; `cargo bench -p kioskd
    /// --bench sync_drain` measured 500 -> 2,000 at +17% records/s).
    pub batch_records: usize,
    pub batch_bytes: usize,
    /// Retry backoff bounds, in milliseconds.
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for HqSection {
    fn default() -> Self {
        Self {
            mode: HqMode::Local,
            url: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            record_key: None,
            witness_key: None,
            witness_name: "hq-witness".into(),
            suite: EnvelopeSuite::Gm,
            batch_records: 2000,
            batch_bytes: 4 * 1024 * 1024,
            retry_min_ms: 500,
            retry_max_ms: 60_000,
        }
    }
}

/// The certificate authority endpoint that issues applicants' certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaSection {
    /// `https://host:port` of the CA's issuing endpoint; absent: the local HQ's demo CA.
    pub url: Option<String>,
    /// CA certificate (PEM) pinned for the TLS connection and for checking issued certificates.
    pub ca_cert: Option<PathBuf>,
    pub timeout_ms: u64,
}

impl Default for CaSection {
    fn default() -> Self {
        Self {
            url: None,
            ca_cert: None,
            timeout_ms: 10_000,
        }
    }
}

/// One external verification service (carrier, bank, photo comparison).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierEndpoint {
    /// `https://...` (or `http://127.0.0.1:...` for a stand-in on loopback).
    pub url: Option<String>,
    /// CA certificate (PEM) pinned for the service's TLS.
    pub ca_cert: Option<PathBuf>,
    pub timeout_ms: u64,
    /// Further attempts after a transport failure or a 5xx answer.
    pub retries: u32,
}

impl Default for VerifierEndpoint {
    fn default() -> Self {
        Self {
            url: None,
            ca_cert: None,
            timeout_ms: 5_000,
            retries: 2,
        }
    }
}

/// Endpoints of the verification methods declared in the privacy catalog.
/// A method without a URL uses the local HQ's stand-in (demo only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifiersSection {
    pub carrier_3factor: VerifierEndpoint,
    pub bank_card_4factor: VerifierEndpoint,
    pub biometric_compare: VerifierEndpoint,
}

/// The demo staff CA's certificate policy, under the enterprise number IANA reserves for
/// documentation (32473, RFC 5612): for demonstrations only. Production sets the policy OID
/// of its own staff CA.
pub const STAFF_POLICY_OID: &str = "1.3.6.1.4.1.32473.13.1";

/// Staff authentication: a staff UKEY holding a certificate from the staff CA,
/// plus its PIN (two factors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaffSection {
    /// CA certificate (PEM) that issues staff certificates. Absent: kioskd
    /// creates a demo staff CA and one demo staff token (demo mode only).
    pub ca_cert: Option<PathBuf>,
    /// The staff CA's certificate revocation list (PEM or DER), re-read at every login.
    /// When set, a staff certificate listed in it, or a CRL that is not signed by the staff
    /// CA or is past its nextUpdate, refuses the login.
    pub crl: Option<PathBuf>,
    /// Certificate policy OID a staff certificate must carry (besides the clientAuth EKU);
    /// the default is the demo staff CA's example OID, refused in production.
    pub policy_oid: String,
    /// Label of the key (and its certificate) on a staff UKEY.
    pub key_label: String,
    /// A staff session ends after this many seconds without a request.
    pub session_idle_secs: u64,
    /// A staff session ends this many seconds after login, however busy.
    pub session_max_secs: u64,
    /// Failed logins on one staff token before logins on that token pause for
    /// `lockout_secs` (counted per token serial in the store, so a restart keeps them).
    pub max_failures: u32,
    pub lockout_secs: u64,
    /// Label and PIN of the demo staff token created with the demo CA.
    pub demo_token: String,
    pub demo_pin: ConfigSecret,
}

impl Default for StaffSection {
    fn default() -> Self {
        Self {
            ca_cert: None,
            crl: None,
            policy_oid: STAFF_POLICY_OID.into(),
            key_label: "staff-key".into(),
            session_idle_secs: 600,
            session_max_secs: 8 * 3600,
            max_failures: 5,
            lockout_secs: 300,
            demo_token: "staff-demo".into(),
            demo_pin: ConfigSecret::new("staff-demo-pin"),
        }
    }
}

/// The privacy catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySection {
    /// Catalog file; when absent the catalog shipped in the binary is used.
    pub catalog: Option<PathBuf>,
}
