//! CBOR encoding (RFC 8949 via `ciborium`) shared by every wire type, with the schema-version gate.
//! It owns [`SCHEMA_VERSION`] (re-exported as `wire::SCHEMA_VERSION`); the wire types depend on
//! this module, never the other way round.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The schema version this build writes and the only one it accepts.
pub const SCHEMA_VERSION: u16 = 1;

/// Encoding or decoding failure.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Serialization failed (should not happen for well-formed values).
    #[error("CBOR encoding failed: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed CBOR message: {0}")]
    Decode(String),
    /// The message names a schema version this build does not understand.
    #[error("unsupported schema version {found} (this build supports {supported})")]
    UnsupportedSchemaVersion {
        /// Version found in the message.
        found: u16,
        /// Version this build supports.
        supported: u16,
    },
}

/// Encode a value as CBOR.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decode a CBOR value (ciborium bounds recursion; callers bound the input size).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    ciborium::from_reader(bytes).map_err(|e| CodecError::Decode(e.to_string()))
}

#[derive(Deserialize)]
struct VersionProbe {
    schema_version: u16,
}

/// Read only the `schema_version` field and reject anything but [`SCHEMA_VERSION`].
pub fn check_schema_version(bytes: &[u8]) -> Result<(), CodecError> {
    let probe: VersionProbe = from_slice(bytes)?;
    if probe.schema_version == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(CodecError::UnsupportedSchemaVersion {
            found: probe.schema_version,
            supported: SCHEMA_VERSION,
        })
    }
}
