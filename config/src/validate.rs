//! Semantic validation of a parsed [`Config`]: paths that must exist or be
//! writable, combinations that must go together, values in range.

use std::path::{Path, PathBuf};

use crate::{
    CameraMode, Config, HqMode, KioskMode, Problem, SerialDeviceSection, SerialMode, TokenProvider,
};

/// Baud rates the SAM and EF01 modules support.
pub const SUPPORTED_BAUDS: [u32; 5] = [9600, 19200, 38400, 57600, 115200];

struct Collector<'a> {
    file: Option<&'a Path>,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn push(&mut self, key: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.map(Path::to_path_buf),
            line: locate_key(self.text, key),
            key: key.to_string(),
            message: message.into(),
            fix: fix.into(),
        });
    }
}

pub(crate) fn validate(config: &Config, file: Option<&Path>, text: &str) -> Vec<Problem> {
    let mut c = Collector {
        file,
        text,
        problems: Vec::new(),
    };
    check_kiosk(config, &mut c);
    check_api(config, &mut c);
    check_serial("devices.idcard", &config.devices.idcard, &mut c);
    check_serial("devices.fingerprint", &config.devices.fingerprint, &mut c);
    check_camera(config, &mut c);
    check_checkpoints(config, &mut c);
    check_token(config, &mut c);
    check_ukey(config, &mut c);
    check_store(config, &mut c);
    check_hq(config, &mut c);
    check_endpoint("ca.url", config.ca.url.as_deref(), &mut c);
    if let Some(ca) = &config.staff.ca_cert {
        require_file(config, "staff.ca_cert", ca, &mut c);
    }
    if let Some(crl) = &config.staff.crl {
        require_file(config, "staff.crl", crl, &mut c);
    }
    if !is_dotted_oid(&config.staff.policy_oid) {
        c.push(
            "staff.policy_oid",
            format!("{:?} is not a dotted OID", config.staff.policy_oid),
            "write the staff certificate policy as digits and dots, e.g. 1.2.156.xxx",
        );
    }
    if config.staff.session_max_secs == 0 {
        c.push(
            "staff.session_max_secs",
            "must be greater than 0",
            "set an absolute lifetime such as 28800 (one shift)",
        );
    }
    if config.staff.max_failures == 0 {
        c.push(
            "staff.max_failures",
            "must be greater than 0",
            "set a limit such as 5",
        );
    }
    for (name, ep) in [
        ("carrier_3factor", &config.verifiers.carrier_3factor),
        ("bank_card_4factor", &config.verifiers.bank_card_4factor),
        ("biometric_compare", &config.verifiers.biometric_compare),
    ] {
        check_endpoint(&format!("verifiers.{name}.url"), ep.url.as_deref(), &mut c);
        if ep.timeout_ms == 0 {
            c.push(
                &format!("verifiers.{name}.timeout_ms"),
                "must be greater than 0",
                "set a timeout such as 5000",
            );
        }
    }
    if let Some(catalog) = &config.privacy.catalog {
        let path = config.resolve(catalog);
        if path.is_file() {
            if let Err(e) = crate::Catalog::load(Some(&path)) {
                c.problems.extend(match e {
                    crate::ConfigError::Invalid(p) => p,
                    other => vec![Problem {
                        file: Some(path.clone()),
                        line: None,
                        key: "privacy.catalog".into(),
                        message: other.to_string(),
                        fix: "make the catalog readable".into(),
                    }],
                });
            }
        } else {
            require_file(config, "privacy.catalog", catalog, &mut c);
        }
    }
    check_production(config, &mut c);
    c.problems
}

/// In production mode every demo stand-in is a problem (all of them, not the first).
fn check_production(config: &Config, c: &mut Collector<'_>) {
    if config.kiosk.mode != KioskMode::Production {
        return;
    }
    for f in crate::demo_features(config) {
        c.push(
            &f.key,
            format!("not allowed in production mode: {}", f.what),
            f.fix,
        );
    }
    if let Some(path) = &config.token.device_pin_file
        && let Err(e) = crate::read_private(&config.resolve(path))
    {
        c.push(
            "token.device_pin_file",
            e.to_string(),
            "put the PIN in a file of mode 0600 owned by the kioskd user (or use a systemd credential)",
        );
    }
}

fn is_dotted_oid(s: &str) -> bool {
    let arcs: Vec<&str> = s.split('.').collect();
    arcs.len() >= 2
        && arcs
            .iter()
            .all(|a| !a.is_empty() && a.chars().all(|ch| ch.is_ascii_digit()))
}

fn check_kiosk(config: &Config, c: &mut Collector<'_>) {
    let id = &config.kiosk.id;
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        c.push(
            "kiosk.id",
            format!("{id:?} is not a valid kiosk id"),
            "use 1 to 64 characters from A-Z a-z 0-9 - _ .",
        );
    }
    let dir = &config.kiosk.data_dir;
    if let Err(why) = ensure_writable_dir(dir) {
        c.push(
            "kiosk.data_dir",
            format!("directory {} is not writable: {why}", dir.display()),
            "create it with write permission for the kioskd user, or pass --data-dir",
        );
    }
}

fn check_api(config: &Config, c: &mut Collector<'_>) {
    let api = &config.api;
    if api.listen.is_none() && api.unix_socket.is_none() {
        c.push(
            "api.listen",
            "no API listener is configured",
            "set api.listen to a loopback address or api.unix_socket to a path",
        );
    }
    if let Some(addr) = api.listen
        && !addr.ip().is_loopback()
    {
        c.push(
            "api.listen",
            format!("{addr} is not a loopback address"),
            "bind the local API to 127.0.0.1 or [::1]; it must not be reachable from the network",
        );
    }
    if api.allowed_hosts.is_empty() {
        c.push(
            "api.allowed_hosts",
            "no host name is allowed",
            "list the names the kiosk browser uses, e.g. [\"localhost\"]",
        );
    }
    if api.session_idle_secs == 0 {
        c.push(
            "api.session_idle_secs",
            "must be greater than 0",
            "set a timeout such as 120",
        );
    }
    if api.max_body_bytes < 1024 {
        c.push(
            "api.max_body_bytes",
            "must be at least 1024",
            "set a limit such as 262144",
        );
    }
}

fn check_serial(prefix: &str, dev: &SerialDeviceSection, c: &mut Collector<'_>) {
    match dev.mode {
        SerialMode::Simulated => {}
        SerialMode::Serial => {
            if dev.port.is_none() {
                c.push(
                    &format!("{prefix}.port"),
                    "mode \"serial\" needs a port",
                    "set port = \"/dev/ttyUSB0\" (or the device's stable /dev/serial/by-id path)",
                );
            }
        }
        SerialMode::Tcp => match &dev.tcp {
            None => c.push(
                &format!("{prefix}.tcp"),
                "mode \"tcp\" needs an address",
                "set tcp = \"host:port\" of the serial server",
            ),
            Some(addr) if !addr.contains(':') => c.push(
                &format!("{prefix}.tcp"),
                format!("{addr:?} has no port"),
                "write it as host:port",
            ),
            Some(_) => {}
        },
    }
    if let Some(baud) = dev.baud
        && !SUPPORTED_BAUDS.contains(&baud)
    {
        c.push(
            &format!("{prefix}.baud"),
            format!("{baud} is not a baud rate these modules support"),
            "use one of 9600, 19200, 38400, 57600, 115200, or remove it to probe",
        );
    }
    if dev.timeout_ms == 0 {
        c.push(
            &format!("{prefix}.timeout_ms"),
            "must be greater than 0",
            "set a timeout such as 3000",
        );
    }
}

fn check_checkpoints(config: &Config, c: &mut Collector<'_>) {
    if !(1..=86_400).contains(&config.store.checkpoint_secs) {
        c.push(
            "store.checkpoint_secs",
            "must be between 1 and 86400 seconds",
            "set a value such as 60",
        );
    }
}

fn check_camera(config: &Config, c: &mut Collector<'_>) {
    let cam = &config.devices.camera;
    match cam.mode {
        CameraMode::Synthetic => {}
        CameraMode::Fixture => match &cam.fixture_dir {
            None => c.push(
                "devices.camera.fixture_dir",
                "mode \"fixture\" needs a directory of images",
                "set fixture_dir",
            ),
            Some(dir) if !config.resolve(dir).is_dir() => c.push(
                "devices.camera.fixture_dir",
                format!("directory {} does not exist", config.resolve(dir).display()),
                "create it or correct the path",
            ),
            Some(_) => {}
        },
        CameraMode::V4l2 => {
            if cam.device.is_none() {
                c.push(
                    "devices.camera.device",
                    "mode \"v4l2\" needs a device",
                    "set device = \"/dev/video0\"",
                );
            }
        }
    }
    if let Some(model) = &cam.detector_model {
        if !config.resolve(model).is_file() {
            c.push(
                "devices.camera.detector_model",
                format!(
                    "model file {} does not exist",
                    config.resolve(model).display()
                ),
                "install the SeetaFace model (seeta_fd_frontal_v1.0.bin) or correct the path",
            );
        }
    }
    if !(16..=4096).contains(&cam.width) || !(16..=4096).contains(&cam.height) {
        c.push(
            "devices.camera.width",
            "width and height must be between 16 and 4096",
            "set 640 and 480",
        );
    }
    if cam.frames_per_capture == 0 || cam.frames_per_capture > 120 {
        c.push(
            "devices.camera.frames_per_capture",
            "must be between 1 and 120",
            "set a value such as 8",
        );
    }
}

fn check_token(config: &Config, c: &mut Collector<'_>) {
    let t = &config.token;
    match t.provider {
        TokenProvider::Soft => {
            if t.soft_secret.expose().len() < 16 {
                c.push(
                    "token.soft_secret",
                    "is shorter than 16 characters",
                    "use a long random secret (the key-encryption key is derived from it)",
                );
            }
        }
        TokenProvider::Pkcs11 => match &t.module {
            None => c.push(
                "token.module",
                "provider \"pkcs11\" needs a module",
                "set module to the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so",
            ),
            Some(m) => require_file(config, "token.module", m, c),
        },
    }
    // GM/T 0003: ENTL_A is two bytes counting bits, so the ID is at most 8191 bytes.
    if t.sm2_distid.len() > 8191 {
        c.push(
            "token.sm2_distid",
            "is longer than 8191 bytes",
            "use the ID your CA specifies, usually 1234567812345678",
        );
    }
    for (i, id) in t.usb_ids.iter().enumerate() {
        if parse_usb_id(id).is_none() {
            c.push(
                &format!("token.usb_ids[{i}]"),
                format!("{id:?} is not a VID:PID pair"),
                "write it as four hex digits, a colon, four hex digits: \"096e:0703\"",
            );
        }
    }
    if t.call_timeout_ms == 0 {
        c.push(
            "token.call_timeout_ms",
            "must be greater than 0",
            "set a timeout such as 10000",
        );
    }
}

fn check_ukey(config: &Config, c: &mut Collector<'_>) {
    let u = &config.ukey;
    match u.provider {
        TokenProvider::Soft if u.soft_secret.expose().len() < 16 => c.push(
            "ukey.soft_secret",
            "is shorter than 16 characters",
            "use a long random secret (the key-encryption key is derived from it)",
        ),
        TokenProvider::Soft => {}
        TokenProvider::Pkcs11 => match &u.module {
            None => c.push(
                "ukey.module",
                "provider \"pkcs11\" needs a module",
                "set module to the UKEY vendor's PKCS#11 library",
            ),
            Some(m) => require_file(config, "ukey.module", m, c),
        },
    }
    if u.key_label.is_empty() {
        c.push(
            "ukey.key_label",
            "is empty",
            "name the holder's key, e.g. holder-sign",
        );
    }
    if u.call_timeout_ms == 0 {
        c.push(
            "ukey.call_timeout_ms",
            "must be greater than 0",
            "set a timeout such as 30000",
        );
    }
    if !(1..=1000).contains(&u.poll_ms) {
        c.push(
            "ukey.poll_ms",
            format!("{} is not between 1 and 1000", u.poll_ms),
            "poll the slot list at most a second apart, e.g. 500",
        );
    }
}

/// Parse `"096e:0703"` into (vendor id, product id).
pub fn parse_usb_id(s: &str) -> Option<(u16, u16)> {
    let (v, p) = s.split_once(':')?;
    if v.len() != 4 || p.len() != 4 {
        return None;
    }
    Some((
        u16::from_str_radix(v, 16).ok()?,
        u16::from_str_radix(p, 16).ok()?,
    ))
}

fn check_store(config: &Config, c: &mut Collector<'_>) {
    let path = config.resolve(&config.store.path);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir != config.kiosk.data_dir
        && let Err(why) = ensure_writable_dir(&dir)
    {
        c.push(
            "store.path",
            format!("directory {} is not writable: {why}", dir.display()),
            "point store.path into a directory kioskd may write",
        );
    }
    if path.is_dir() {
        c.push(
            "store.path",
            format!("{} is a directory", path.display()),
            "name a file, e.g. kiosk.sqlite",
        );
    }
}

fn check_hq(config: &Config, c: &mut Collector<'_>) {
    let hq = &config.hq;
    if hq.mode == HqMode::Remote {
        match &hq.url {
            None => c.push(
                "hq.url",
                "mode \"remote\" needs a URL",
                "set url = \"https://hq.example:8443\"",
            ),
            Some(url) if !url.starts_with("https://") => c.push(
                "hq.url",
                format!("{url:?} is not https"),
                "records leave the kiosk only over TLS: use an https:// URL",
            ),
            Some(_) => {}
        }
        for (key, value) in [
            ("hq.ca_cert", &hq.ca_cert),
            ("hq.client_cert", &hq.client_cert),
            ("hq.record_key", &hq.record_key),
        ] {
            match value {
                None => c.push(
                    key,
                    "mode \"remote\" needs it",
                    "set the path of the PEM file",
                ),
                Some(p) => require_file(config, key, p, c),
            }
        }
    }
    if let Some(key) = &hq.client_key {
        require_file(config, "hq.client_key", key, c);
        if hq.client_cert.is_none() {
            c.push(
                "hq.client_key",
                "a client key without hq.client_cert",
                "set client_cert to the certificate of this key, or remove client_key",
            );
        }
    }
    if hq.batch_records == 0 {
        c.push(
            "hq.batch_records",
            "must be greater than 0",
            "set a value such as 500",
        );
    }
    if hq.batch_bytes < 4096 {
        c.push(
            "hq.batch_bytes",
            "must be at least 4096",
            "set a value such as 4194304",
        );
    }
    if hq.retry_min_ms == 0 || hq.retry_min_ms > hq.retry_max_ms {
        c.push(
            "hq.retry_min_ms",
            format!(
                "must be greater than 0 and not above hq.retry_max_ms ({})",
                hq.retry_max_ms
            ),
            "set retry_min_ms = 500 and retry_max_ms = 60000",
        );
    }
}

/// Personal data leaves only over TLS; plain http is allowed to loopback stand-ins only.
fn check_endpoint(key: &str, url: Option<&str>, c: &mut Collector<'_>) {
    let Some(url) = url else { return };
    let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|p| url.starts_with(p));
    if !url.starts_with("https://") && !loopback {
        c.push(
            key,
            format!("{url:?} is neither https nor a loopback stand-in"),
            "use an https:// URL (plain http only to 127.0.0.1 for stand-ins)",
        );
    }
}

/// Whether `problem` is [`require_file`]'s "file does not exist".
pub(crate) fn is_missing_file(problem: &Problem) -> bool {
    problem.message.starts_with("file ") && problem.message.ends_with(MISSING_FILE)
}

const MISSING_FILE: &str = " does not exist";

fn require_file(config: &Config, key: &str, path: &Path, c: &mut Collector<'_>) {
    let full = config.resolve(path);
    if !full.is_file() {
        c.push(
            key,
            format!("file {}{MISSING_FILE}", full.display()),
            "correct the path or install the file",
        );
    }
}

/// Create `dir` if needed and prove it writable by creating and removing a probe file.
fn ensure_writable_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let probe: PathBuf = dir.join(format!(".kioskd-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Find the 1-based line that sets dotted `key` (`store.path`) in a TOML text,
/// following `[table]` headers. Array indices in the key are ignored.
pub(crate) fn locate_key(text: &str, key: &str) -> Option<usize> {
    let key = key.split('[').next().unwrap_or(key);
    let (table, leaf) = match key.rsplit_once('.') {
        Some((t, l)) => (t, l),
        None => ("", key),
    };
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix('[') {
            current = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        let full = if current.is_empty() {
            k.to_string()
        } else {
            format!("{current}.{k}")
        };
        if full == format!("{table}.{leaf}") || (table.is_empty() && full == leaf) {
            return Some(i + 1);
        }
    }
    None
}
