//! Synthetic applicants for tests and benchmarks (`kioskctl outbox fill`, the sync benches):
//! made-up people pass through the real minimizer with the catalog's HQ transfer rules, their
//! storable items go to the encrypted subject store, and the minimized record goes to the
//! outbox with its audit entries, as an applicant session would leave them. Keyed digests come
//! from a throwaway key (synthetic: they match nothing); the subject store's data keys are
//! wrapped by that throwaway key too, so the rows exercise purge-on-ack but nobody can read
//! them back. Every value is obviously synthetic (region code 99, numbers from 199).

use kiosk_config::catalog::LocalRetention;
use kiosk_config::{Catalog, Destination};
use records::envelope::{RecipientPublicKeys, Suite};
use records::wire::{KeyedDigest, OpaqueBytes};

use crate::audit::Actor;
use crate::keys::{KeyError, SoftKeyVault};
use crate::privacy::Personal;
use crate::privacy::minimize::{ItemSealer, minimize};
use crate::store::Store;
use crate::store::crypto::FieldCipherKind;
use crate::store::outbox;
use crate::store::subjects::Subjects;

/// Items every synthetic applicant presents, including ones the catalog keeps from HQ.
pub const PRESENTED_ITEMS: &[&str] = &[
    "name",
    "id_number",
    "mobile",
    "sex",
    "nation",
    "birth_date",
    "address",
    "face_image",
    "fingerprint",
];

#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Subject(#[from] crate::store::subjects::SubjectError),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error(transparent)]
    Catalog(#[from] kiosk_config::CatalogError),
}

/// Seals items to HQ's record key (`records::seal_field`, item bound as AAD).
pub struct HqFieldSealer {
    pub suite: Suite,
    pub recipient: RecipientPublicKeys,
}

impl ItemSealer for HqFieldSealer {
    fn seal(&self, item: &str, value: &[u8]) -> Result<Vec<u8>, KeyError> {
        records::seal_field(self.suite, &self.recipient, item, value)
            .map_err(|e| KeyError::Unavailable(format!("sealing to HQ: {e}")))
    }
}

/// The synthetic values of applicant `n` of run `tag`.
pub fn applicant(tag: &str, n: u64) -> Vec<Personal> {
    let birth = 19_700_101 + (n % 28);
    PRESENTED_ITEMS
        .iter()
        .map(|item| {
            let value = match *item {
                "name" => format!("合成{tag}{n}"),
                "id_number" => format!("99{:04}{birth}{:03}X", n % 10_000, n % 1000),
                "mobile" => format!("199{:08}", n % 100_000_000),
                "sex" => "9".to_string(),
                "nation" => "合成族".to_string(),
                "birth_date" => birth.to_string(),
                "address" => format!("合成路{n}号"),
                "face_image" => format!("synthetic-face-frame-{n}"),
                "fingerprint" => format!("synthetic-fingerprint-template-{n}"),
                _ => String::new(),
            };
            Personal::new(*item, value)
        })
        .collect()
}

/// Write `count` synthetic applicants (numbered from `first`), `per_tx` per transaction.
/// Returns the outbox sequence number of the last one.
pub fn fill(
    store: &Store,
    catalog: &Catalog,
    sealer: &HqFieldSealer,
    tag: &str,
    first: u64,
    count: u64,
    per_tx: u64,
) -> Result<u64, SyntheticError> {
    let keys = SoftKeyVault::random();
    let subjects = Subjects {
        catalog,
        keys: &keys,
        cipher: FieldCipherKind::Sm4Gcm,
    };
    let mut last = 0;
    let mut conn = store.conn()?;
    let mut n = first;
    while n < first + count {
        let tx = conn.transaction()?;
        let end = (n + per_tx.max(1)).min(first + count);
        for i in n..end {
            let values = applicant(tag, i);
            let at = crate::clock::now_ms();
            let id = values
                .iter()
                .find(|v| v.item() == "id_number")
                .cloned()
                .unwrap_or_else(|| Personal::new("id_number", ""));
            let digest = subjects.digest_of(&id)?;
            let mut storable = Vec::new();
            for v in &values {
                if catalog.item(v.item())?.retention == LocalRetention::UntilHqAck {
                    storable.push(v.clone());
                }
            }
            let subject_id =
                subjects.create(&tx, at, &Actor::System, "synthetic", digest, &storable)?;
            let minimized = minimize(catalog, Destination::Hq, &values, &keys, sealer)?;
            let subject_ref = KeyedDigest {
                algorithm: "hmac-sm3".into(),
                key_id: "synthetic".into(),
                digest: OpaqueBytes(digest.to_vec()),
            };
            let out = minimized.into_applicant_record(
                subject_ref,
                "cert_application",
                &catalog.version,
                subject_id,
            );
            last = outbox::enqueue(&tx, at, &out)?;
        }
        tx.commit()?;
        n = end;
    }
    Ok(last)
}
