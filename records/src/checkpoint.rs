//! C2SP tlog-checkpoint bodies as signed notes (c2sp.org/signed-note), signed by a
//! [`RecordSigner`], plus HQ's witness cosignature.
//!
//! Body: `origin\n<size>\n<base64 root>\n`. Note: body, a blank line, then signature lines
//! `— <key name> <base64(key id ‖ signature)>`. Signed-note key types only define Ed25519 and
//! friends, so SM2 / ECDSA P-256 use the unassigned type byte `0xff`: key id = first 4 bytes of
//! `SM3(name ‖ "\n" ‖ 0xff ‖ algorithm name ‖ SEC1 public key)`. A cosignature signs
//! `"kioskd-cosignature/v1\n" ‖ body` so it can never be confused with the kiosk's signature.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::merkle::{Hash, sm3_hash};
use crate::signing::{PublicVerifier, RecordSigner, SignatureAlgorithm, SignatureError};

const MAX_NOTE_LEN: usize = 16 * 1024;
const COSIGNATURE_PREFIX: &str = "kioskd-cosignature/v1\n";
const SIGNATURE_DASH: &str = "\u{2014} ";

/// Checkpoint parsing or verification failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// Malformed note or body.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature line from the expected key.
    #[error("no signature from key {0:?}")]
    MissingSignature(String),
    /// Signature failure.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// A tree head: origin, size and root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log origin, e.g. `kioskd/<ca>/<kiosk-id>`.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body text.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parse a body (first three lines; extension lines are kept out of scope and rejected).
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let mut lines = body.split_terminator('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(CheckpointError::Malformed("missing origin"))?;
        let size = lines
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(CheckpointError::Malformed("bad tree size"))?;
        let root_bytes = lines
            .next()
            .and_then(|r| B64.decode(r).ok())
            .ok_or(CheckpointError::Malformed("bad root hash"))?;
        let root = Hash::try_from(root_bytes.as_slice())
            .map_err(|_| CheckpointError::Malformed("root hash is not 32 bytes"))?;
        if lines.next().is_some() || !body.ends_with('\n') {
            return Err(CheckpointError::Malformed("unexpected extension lines"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// Key id of a named key (see module docs).
pub fn key_id(name: &str, algorithm: SignatureAlgorithm, sec1: &[u8]) -> [u8; 4] {
    let mut data = Vec::with_capacity(name.len() + 2 + 20 + sec1.len());
    data.extend_from_slice(name.as_bytes());
    data.push(b'\n');
    data.push(0xff);
    data.extend_from_slice(algorithm.name().as_bytes());
    data.extend_from_slice(sec1);
    let h = sm3_hash(&data);
    [h[0], h[1], h[2], h[3]]
}

fn signature_line(
    name: &str,
    signer: &dyn RecordSigner,
    message: &[u8],
) -> Result<String, CheckpointError> {
    let id = key_id(name, signer.algorithm(), &signer.public_key_sec1());
    let sig = signer.sign(message)?;
    let mut blob = id.to_vec();
    blob.extend_from_slice(&sig);
    Ok(format!("{SIGNATURE_DASH}{name} {}\n", B64.encode(blob)))
}

/// A parsed signed note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Signature lines: (key name, key id ‖ signature bytes).
    pub signatures: Vec<(String, Vec<u8>)>,
}

/// Sign a checkpoint as a note with one signature line from `signer` under `key_name`.
pub fn sign_checkpoint(
    checkpoint: &Checkpoint,
    key_name: &str,
    signer: &dyn RecordSigner,
) -> Result<String, CheckpointError> {
    let body = checkpoint.body();
    let line = signature_line(key_name, signer, body.as_bytes())?;
    Ok(format!("{body}\n{line}"))
}

impl SignedNote {
    /// Parse a note (bounded size; no signature checked yet).
    pub fn parse(note: &str) -> Result<Self, CheckpointError> {
        if note.len() > MAX_NOTE_LEN {
            return Err(CheckpointError::Malformed("note too large"));
        }
        let (body, sigs) = note.split_once("\n\n").ok_or(CheckpointError::Malformed(
            "no blank line before signatures",
        ))?;
        let checkpoint = Checkpoint::parse_body(&format!("{body}\n"))?;
        let mut signatures = Vec::new();
        for line in sigs.split_terminator('\n') {
            let rest = line
                .strip_prefix(SIGNATURE_DASH)
                .ok_or(CheckpointError::Malformed("signature line without em dash"))?;
            let (name, blob) = rest.split_once(' ').ok_or(CheckpointError::Malformed(
                "signature line without key name",
            ))?;
            let blob = B64
                .decode(blob)
                .map_err(|_| CheckpointError::Malformed("signature is not base64"))?;
            if blob.len() < 5 {
                return Err(CheckpointError::Malformed("signature too short"));
            }
            signatures.push((name.to_owned(), blob));
        }
        Ok(Self {
            checkpoint,
            signatures,
        })
    }

    fn find(&self, key_name: &str, verifier: &PublicVerifier) -> Result<&[u8], CheckpointError> {
        let id = key_id(key_name, verifier.algorithm, &verifier.sec1);
        self.signatures
            .iter()
            .find(|(name, blob)| name == key_name && blob.starts_with(&id))
            .and_then(|(_, blob)| blob.get(4..))
            .ok_or_else(|| CheckpointError::MissingSignature(key_name.to_owned()))
    }

    /// Verify the signature by `key_name` with `verifier`.
    pub fn verify(&self, key_name: &str, verifier: &PublicVerifier) -> Result<(), CheckpointError> {
        let sig = self.find(key_name, verifier)?;
        verifier.verify(self.checkpoint.body().as_bytes(), sig)?;
        Ok(())
    }
}

/// HQ's cosignature line over a checkpoint (witness role).
pub fn cosign(
    checkpoint: &Checkpoint,
    witness_name: &str,
    witness: &dyn RecordSigner,
) -> Result<String, CheckpointError> {
    let message = format!("{COSIGNATURE_PREFIX}{}", checkpoint.body());
    signature_line(witness_name, witness, message.as_bytes())
}

/// Verify a cosignature line produced by [`cosign`].
pub fn verify_cosignature(
    checkpoint: &Checkpoint,
    signature_line: &str,
    witness_name: &str,
    witness: &PublicVerifier,
) -> Result<(), CheckpointError> {
    let note = format!("{}\n{signature_line}", checkpoint.body());
    let parsed = SignedNote::parse(&note)?;
    let sig = parsed.find(witness_name, witness)?;
    let message = format!("{COSIGNATURE_PREFIX}{}", checkpoint.body());
    witness.verify(message.as_bytes(), sig)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{SM2_DEFAULT_DISTID, SoftSigner};

    fn sample() -> Checkpoint {
        Checkpoint {
            origin: "kioskd/example-ca/kiosk-0001".into(),
            size: 42,
            root: sm3_hash(b"root"),
        }
    }

    #[test]
    fn note_round_trip_and_verify() {
        let signer = SoftSigner::generate_sm2(SM2_DEFAULT_DISTID).unwrap();
        let note = sign_checkpoint(&sample(), "kiosk-0001", &signer).unwrap();
        assert!(note.starts_with("kioskd/example-ca/kiosk-0001\n42\n"));
        let parsed = SignedNote::parse(&note).unwrap();
        assert_eq!(parsed.checkpoint, sample());
        parsed.verify("kiosk-0001", &signer.verifier()).unwrap();
        let other = SoftSigner::generate_sm2(SM2_DEFAULT_DISTID).unwrap();
        assert!(matches!(
            parsed.verify("kiosk-0001", &other.verifier()),
            Err(CheckpointError::MissingSignature(_))
        ));
        let tampered = note.replacen("\n42\n", "\n43\n", 1);
        assert!(
            SignedNote::parse(&tampered)
                .unwrap()
                .verify("kiosk-0001", &signer.verifier())
                .is_err()
        );
    }

    #[test]
    fn cosignature_is_domain_separated() {
        let witness = SoftSigner::generate_p256();
        let line = cosign(&sample(), "hq-witness", &witness).unwrap();
        verify_cosignature(&sample(), &line, "hq-witness", &witness.verifier()).unwrap();
        let note = format!("{}\n{line}", sample().body());
        assert!(
            SignedNote::parse(&note)
                .unwrap()
                .verify("hq-witness", &witness.verifier())
                .is_err(),
            "a cosignature must not pass as the log's own signature"
        );
    }

    #[test]
    fn malformed_notes_rejected() {
        for bad in [
            "",
            "origin\n1\n",
            "origin\nx\nAAAA\n\n",
            "origin\n1\nAAAA\n\n\u{2014} k AAAA\n",
        ] {
            assert!(SignedNote::parse(bad).is_err(), "{bad:?}");
        }
    }
}
