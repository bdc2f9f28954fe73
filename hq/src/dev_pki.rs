//! Development/demo PKI: an HQ CA, the HQ server certificate, kiosk client certificates
//! (CN = kiosk id), HQ's record-encryption key pair, HQ's witness key and the issuing CA that
//! certifies applicants' UKEY keys (module [`crate::ca`]). Not for production:
//! production keys live on HSMs/tokens and certificates come from the CA's real issuance flow.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use records::{RecordSigner, SM2_DEFAULT_DISTID, SoftRecipient, SoftSigner};

use crate::keys;

/// Kiosk id of the client certificate [`generate`] issues.
pub const DEMO_KIOSK_ID: &str = "kiosk-demo-0001";

/// Failure to create the demo PKI.
#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Key generation failed.
    #[error("key generation: {0}")]
    Key(String),
}

/// The key type of the demo issuing CA (the kiosk's `[ukey] algorithm`: a CA issuing SM2
/// certificates signs with SM2 itself, as Chinese CAs do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IssuingAlgorithm {
    #[default]
    P256,
    Sm2,
}

impl std::str::FromStr for IssuingAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "p256" => Ok(Self::P256),
            "sm2" => Ok(Self::Sm2),
            other => Err(format!("no issuing CA algorithm {other:?} (p256 or sm2)")),
        }
    }
}

/// Paths of everything [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct DevPki {
    /// HQ CA certificate (trust anchor for both the server and kiosk certificates).
    pub ca_cert: PathBuf,
    /// HQ CA private key (PEM) so more kiosk certificates can be issued.
    pub ca_key: PathBuf,
    /// HQ server certificate (SAN `localhost`, `127.0.0.1`, `::1`).
    pub server_cert: PathBuf,
    /// HQ server private key.
    pub server_key: PathBuf,
    /// Kiosk client certificate (CN = [`DEMO_KIOSK_ID`]).
    pub kiosk_cert: PathBuf,
    /// Kiosk client private key (ECDSA P-256, PKCS#8 PEM).
    pub kiosk_key: PathBuf,
    /// HQ record-decryption key (secret; hex).
    pub record_key: PathBuf,
    /// HQ record-encryption public keys kiosks encrypt to (JSON, hex fields).
    pub record_public: PathBuf,
    /// HQ witness signing key (secret; hex SM2 scalar).
    pub witness_key: PathBuf,
    /// HQ witness public key (JSON).
    pub witness_public: PathBuf,
    /// Issuing CA certificate for applicants' certificates (separate from the HQ TLS CA);
    /// created on first use by [`DevPki::issuing_ca`].
    pub issuing_ca_cert: PathBuf,
    /// Its private key (ECDSA P-256, PKCS#8 PEM).
    pub issuing_ca_key: PathBuf,
}

fn write(path: &Path, contents: &[u8], secret: bool) -> Result<(), DevPkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| DevPkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)
}

fn ca_params() -> Result<CertificateParams, DevPkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kioskd demo HQ CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Issue a kiosk client certificate signed by the CA at `ca_cert`/`ca_key` (PEM); returns
/// `(certificate PEM, private key PEM)`.
pub fn issue_kiosk_cert(ca_key_pem: &str, kiosk_id: &str) -> Result<(String, String), DevPkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, kiosk_id);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn paths(dir: &Path) -> DevPki {
    DevPki {
        ca_cert: dir.join("hq-ca.pem"),
        ca_key: dir.join("hq-ca-key.pem"),
        server_cert: dir.join("hq-server.pem"),
        server_key: dir.join("hq-server-key.pem"),
        kiosk_cert: dir.join(format!("{DEMO_KIOSK_ID}.pem")),
        kiosk_key: dir.join(format!("{DEMO_KIOSK_ID}-key.pem")),
        record_key: dir.join("hq-record-key.hex"),
        record_public: dir.join("hq-record-public.json"),
        witness_key: dir.join("hq-witness-key.hex"),
        witness_public: dir.join("hq-witness-public.json"),
        issuing_ca_cert: dir.join("hq-issuing-ca.pem"),
        issuing_ca_key: dir.join("hq-issuing-ca-key.pem"),
    }
}

impl DevPki {
    fn files(&self) -> [&Path; 10] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
            &self.kiosk_cert,
            &self.kiosk_key,
            &self.record_key,
            &self.record_public,
            &self.witness_key,
            &self.witness_public,
        ]
    }

    /// The issuing CA of applicants' certificates (`hq-issuing-ca.pem` and its P-256 key),
    /// created the first time (kept afterwards: issued certificates chain to it). Returns
    /// `(cert, key)` paths.
    pub fn issuing_ca(&self) -> Result<(PathBuf, PathBuf), DevPkiError> {
        let (cert, key) = (&self.issuing_ca_cert, &self.issuing_ca_key);
        if !(cert.is_file() && key.is_file()) {
            let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, "kioskd demo");
            dn.push(DnType::CommonName, "kioskd demo issuing CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
            params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
            let ca_cert = params.self_signed(&ca_key)?;
            write(key, ca_key.serialize_pem().as_bytes(), true)?;
            write(cert, ca_cert.pem().as_bytes(), false)?;
        }
        Ok((cert.clone(), key.clone()))
    }

    /// The issuing CA of applicants' certificates for `algorithm`: the P-256 one of
    /// [`DevPki::issuing_ca`], or an SM2 one (`hq-issuing-ca-sm2.pem`, its key PKCS#8 PEM,
    /// signing SM2-with-SM3 with the default distinguishing id), each created the first time
    /// and kept. Returns `(cert, key)` paths.
    pub fn issuing_ca_for(
        &self,
        algorithm: IssuingAlgorithm,
    ) -> Result<(PathBuf, PathBuf), DevPkiError> {
        if algorithm == IssuingAlgorithm::P256 {
            return self.issuing_ca();
        }
        let dir = self.issuing_ca_cert.parent().unwrap_or(Path::new("."));
        let (cert, key) = (
            dir.join("hq-issuing-ca-sm2.pem"),
            dir.join("hq-issuing-ca-sm2-key.pem"),
        );
        if !(cert.is_file() && key.is_file()) {
            let (cert_pem, key_pem) = crate::ca::generate_sm2_ca(
                "CN=kioskd demo SM2 issuing CA,O=kioskd demo,C=CN",
                std::time::Duration::from_secs(3650 * 24 * 3600),
            )
            .map_err(|e| DevPkiError::Key(e.to_string()))?;
            write(&key, key_pem.as_bytes(), true)?;
            write(&cert, cert_pem.as_bytes(), false)?;
        }
        Ok((cert, key))
    }

    /// The client certificate and key of `kiosk_id` (`kiosk-<id>.pem`, `kiosk-<id>-key.pem`
    /// next to the CA), issued by the demo CA the first time. Returns `(cert, key)` paths.
    pub fn kiosk_files(&self, kiosk_id: &str) -> Result<(PathBuf, PathBuf), DevPkiError> {
        let dir = self.ca_cert.parent().unwrap_or(Path::new("."));
        let safe: String = kiosk_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let cert = dir.join(format!("kiosk-{safe}.pem"));
        let key = dir.join(format!("kiosk-{safe}-key.pem"));
        if !(cert.is_file() && key.is_file()) {
            let ca_key =
                std::fs::read_to_string(&self.ca_key).map_err(|source| DevPkiError::Io {
                    path: self.ca_key.clone(),
                    source,
                })?;
            let (cert_pem, key_pem) = issue_kiosk_cert(&ca_key, kiosk_id)?;
            write(&key, key_pem.as_bytes(), true)?;
            write(&cert, cert_pem.as_bytes(), false)?;
        }
        Ok((cert, key))
    }
}

/// The demo PKI in `dir`: the files already there if complete (keys stay the same across
/// restarts: kiosks hold batches sealed to them), else a new one from [`generate`].
pub fn load_or_generate(dir: &Path) -> Result<DevPki, DevPkiError> {
    let pki = paths(dir);
    if pki.files().iter().all(|f| f.is_file()) {
        return Ok(pki);
    }
    generate(dir)
}

/// Write a complete demo PKI into `dir` (created if missing). Returns the file paths.
pub fn generate(dir: &Path) -> Result<DevPki, DevPkiError> {
    std::fs::create_dir_all(dir).map_err(|source| DevPkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let pki = paths(dir);
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let ca_cert = ca_params()?.self_signed(&ca_key)?;
    write(&pki.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write(&pki.ca_key, ca_key.serialize_pem().as_bytes(), true)?;
    let issuer = Issuer::new(ca_params()?, ca_key);

    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned()])?;
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    server
        .distinguished_name
        .push(DnType::CommonName, "hq-ingest");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer)?;
    write(&pki.server_cert, server_cert.pem().as_bytes(), false)?;
    write(&pki.server_key, server_key.serialize_pem().as_bytes(), true)?;

    let (kiosk_cert, kiosk_key) = issue_kiosk_cert(
        &std::fs::read_to_string(&pki.ca_key).map_err(|source| DevPkiError::Io {
            path: pki.ca_key.clone(),
            source,
        })?,
        DEMO_KIOSK_ID,
    )?;
    write(&pki.kiosk_cert, kiosk_cert.as_bytes(), false)?;
    write(&pki.kiosk_key, kiosk_key.as_bytes(), true)?;

    let recipient = SoftRecipient::generate();
    write(
        &pki.record_key,
        hex::encode(recipient.to_secret_bytes()).as_bytes(),
        true,
    )?;
    write(
        &pki.record_public,
        keys::recipient_public_to_json(&recipient.public_keys()).as_bytes(),
        false,
    )?;

    let witness = SoftSigner::generate_sm2(SM2_DEFAULT_DISTID)
        .map_err(|e| DevPkiError::Key(e.to_string()))?;
    write(
        &pki.witness_key,
        hex::encode(witness.secret_bytes()).as_bytes(),
        true,
    )?;
    write(
        &pki.witness_public,
        keys::verifier_to_json(&witness.verifier()).as_bytes(),
        false,
    )?;
    debug_assert_eq!(witness.sm2_distid(), Some(SM2_DEFAULT_DISTID));
    pki.issuing_ca()?;
    Ok(pki)
}
