//! PKCS#10 certification requests signed by a token key (the private key never leaves the
//! token: the `CertificationRequestInfo` is encoded here and signed through [`Token::sign`]),
//! and certificate parsing with `x509-parser`.
//!
//! The subject is given as an RFC 4514 string; the caller builds it from the applicant's
//! verified data as the privacy catalog allows (ID and mobile numbers only de-identified).

use std::str::FromStr;

use const_oid::ObjectIdentifier;
use der::asn1::BitString;
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};

use crate::soft_crypto;
use crate::token::Token;
use crate::types::KeyAlgorithm;
use crate::{Result, TokenError};

/// ecdsa-with-SHA256 (RFC 5758).
pub const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// SM2-with-SM3 (GM/T 0006).
pub const SM2_WITH_SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");

/// A finished request.
#[derive(Debug, Clone)]
pub struct Csr {
    pub der: Vec<u8>,
    pub pem: String,
}

/// Signature algorithm identifier for a key algorithm.
pub fn signature_algorithm(algorithm: KeyAlgorithm) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: match algorithm {
            KeyAlgorithm::P256 => ECDSA_WITH_SHA256,
            KeyAlgorithm::Sm2 => SM2_WITH_SM3,
        },
        parameters: None,
    }
}

/// Builds a CSR for `key_label` with an RFC 4514 subject (`CN=…,O=…`), signed on the token.
pub async fn build_csr(token: &dyn Token, key_label: &str, subject: &str) -> Result<Csr> {
    let subject = subject.trim();
    if subject.is_empty() || subject.len() > 1024 {
        return Err(TokenError::InvalidInput(
            "subject must be 1..=1024 bytes".into(),
        ));
    }
    let name =
        Name::from_str(subject).map_err(|e| TokenError::InvalidInput(format!("subject: {e}")))?;
    let key = token.key(key_label).await?;
    let spki_der = soft_crypto::public_key_spki_der(key.algorithm, &key.public_key)?;
    let public_key = SubjectPublicKeyInfoOwned::from_der(&spki_der)?;
    let info = CertReqInfo {
        version: Version::V1,
        subject: name,
        public_key,
        attributes: Default::default(),
    };
    let to_sign = info.to_der()?;
    let signature = token.sign(key_label, &to_sign).await?.to_der()?;
    let request = CertReq {
        info,
        algorithm: signature_algorithm(key.algorithm),
        signature: BitString::from_bytes(&signature)?,
    };
    let der = request.to_der()?;
    let pem = pem::encode_config(
        &pem::Pem::new("CERTIFICATE REQUEST", der.clone()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    Ok(Csr { der, pem })
}

/// What kioskd needs from a certificate.
#[derive(Debug, Clone)]
pub struct ParsedCertificate {
    /// DER of the subject name (CKA_SUBJECT).
    pub subject_der: Vec<u8>,
    /// RFC 4514 rendering of the subject.
    pub subject: String,
    pub issuer: String,
    pub serial_hex: String,
    /// Subject public key as an uncompressed SEC1 point.
    pub public_key: Vec<u8>,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

/// DER of a certificate given as PEM or DER.
pub fn certificate_der(input: &[u8]) -> Result<Vec<u8>> {
    if input.starts_with(b"-----BEGIN") {
        let parsed = pem::parse(input).map_err(|e| TokenError::Encoding(e.to_string()))?;
        if parsed.tag() != "CERTIFICATE" {
            return Err(TokenError::Encoding(format!(
                "expected a CERTIFICATE, found {}",
                parsed.tag()
            )));
        }
        Ok(parsed.into_contents())
    } else {
        Ok(input.to_vec())
    }
}

/// Parses a DER (or PEM) certificate.
pub fn parse_certificate(input: &[u8]) -> Result<ParsedCertificate> {
    let der = certificate_der(input)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| TokenError::Encoding(format!("certificate: {e}")))?;
    let tbs = &cert.tbs_certificate;
    Ok(ParsedCertificate {
        subject_der: tbs.subject.as_raw().to_vec(),
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        serial_hex: tbs.raw_serial_as_string(),
        public_key: tbs.subject_pki.subject_public_key.data.to_vec(),
        not_before_unix: tbs.validity.not_before.timestamp(),
        not_after_unix: tbs.validity.not_after.timestamp(),
    })
}
