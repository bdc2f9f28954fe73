//! The minimizer: the only path from personal data to anything that leaves the
//! kiosk. Each item is transformed as the catalog says for the destination
//! (`encrypt`, `keyed_digest`, `mask`, `drop`, `plain`); an item the catalog
//! does not declare is dropped, never sent.

use std::collections::BTreeMap;

use kiosk_config::{Catalog, Destination, Transfer};
use records::wire;

use super::Personal;
use crate::keys::{KeyError, KeyVault};
use crate::store::outbox::Outgoing;

/// A field as it leaves the kiosk. Its `Debug` shows the kind and size, never the value.
#[derive(Clone, PartialEq, Eq)]
pub enum MinimizedValue {
    /// Keyed digest (HMAC-SM3 by default) for matching.
    Digest([u8; 32]),
    /// Masked display form.
    Masked(String),
    /// Sealed to the destination (the envelope encrypts it again in transit).
    Sealed(Vec<u8>),
    /// Clear, for items the catalog allows to travel as they are.
    Plain(String),
}

impl std::fmt::Debug for MinimizedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinimizedValue::Digest(d) => write!(f, "Digest({} bytes)", d.len()),
            MinimizedValue::Masked(m) => write!(f, "Masked({} chars)", m.chars().count()),
            MinimizedValue::Sealed(b) => write!(f, "Sealed({} bytes)", b.len()),
            MinimizedValue::Plain(p) => write!(f, "Plain({} bytes)", p.len()),
        }
    }
}

/// Seals an item's value for the destination (for HQ: the record envelope's
/// recipient; the store's field cipher otherwise).
pub trait ItemSealer {
    fn seal(&self, item: &str, value: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// The fields that may leave, and the ones that were withheld (names only).
/// Only [`minimize`] builds one, and only a `Minimized` becomes an applicant
/// record in the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Minimized {
    fields: BTreeMap<String, MinimizedValue>,
    dropped: Vec<String>,
}

impl Minimized {
    pub fn fields(&self) -> &BTreeMap<String, MinimizedValue> {
        &self.fields
    }

    pub fn dropped(&self) -> &[String] {
        &self.dropped
    }

    /// The HQ record of a subject, ready for the outbox.
    pub fn into_applicant_record(
        self,
        subject_ref: wire::KeyedDigest,
        service: &str,
        catalog_version: &str,
        subject_id: String,
    ) -> Outgoing {
        let fields = self
            .fields
            .into_iter()
            .map(|(item, v)| wire::MinimizedField {
                item,
                value: match v {
                    MinimizedValue::Digest(d) => wire::FieldValue::KeyedDigest(wire::KeyedDigest {
                        algorithm: subject_ref.algorithm.clone(),
                        key_id: subject_ref.key_id.clone(),
                        digest: wire::OpaqueBytes(d.to_vec()),
                    }),
                    MinimizedValue::Masked(m) => wire::FieldValue::Masked(wire::MaskedString(m)),
                    MinimizedValue::Sealed(c) => wire::FieldValue::Ciphertext(wire::OpaqueBytes(c)),
                    MinimizedValue::Plain(p) => wire::FieldValue::Plain(p),
                },
            })
            .collect();
        Outgoing::applicant(
            wire::ApplicantRecord {
                subject_ref,
                service: service.to_string(),
                catalog_version: catalog_version.to_string(),
                fields,
            },
            subject_id,
        )
    }
}

/// Apply the catalog's transfer rules for `dest` to `values`.
pub fn minimize(
    catalog: &Catalog,
    dest: Destination,
    values: &[Personal],
    keys: &dyn KeyVault,
    sealer: &dyn ItemSealer,
) -> Result<Minimized, KeyError> {
    let mut out = Minimized::default();
    for v in values {
        let item = v.item();
        let transformed = match catalog.transfer(item, dest) {
            Transfer::Drop => None,
            Transfer::KeyedDigest => Some(MinimizedValue::Digest(
                keys.keyed_digest(item, v.expose().as_bytes())?,
            )),
            Transfer::Mask => Some(MinimizedValue::Masked(v.masked(catalog))),
            Transfer::Encrypt => Some(MinimizedValue::Sealed(
                sealer.seal(item, v.expose().as_bytes())?,
            )),
            Transfer::Plain => Some(MinimizedValue::Plain(v.expose().to_string())),
        };
        match transformed {
            Some(t) => {
                out.fields.insert(item.to_string(), t);
            }
            None => out.dropped.push(item.to_string()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SoftKeyVault;

    struct Tag;
    impl ItemSealer for Tag {
        fn seal(&self, item: &str, value: &[u8]) -> Result<Vec<u8>, KeyError> {
            // Stand-in: a reversible-free marker; the real sealer encrypts.
            Ok(format!("sealed:{item}:{}", value.len()).into_bytes())
        }
    }

    #[test]
    fn hq_gets_only_transformed_items_and_never_biometrics() {
        let catalog = Catalog::embedded();
        let keys = SoftKeyVault::random();
        let values = vec![
            Personal::new("name", "张三"),
            Personal::new("id_number", "11010519491231002X"),
            Personal::new("mobile", "13812341234"),
            Personal::new("face_image", "jpeg-bytes"),
            Personal::new("fingerprint", "template"),
            Personal::new("nation", "汉"),
            Personal::new("undeclared_thing", "secret"),
        ];
        let m = minimize(&catalog, Destination::Hq, &values, &keys, &Tag).unwrap();
        assert!(matches!(m.fields["name"], MinimizedValue::Sealed(_)));
        assert_eq!(
            m.fields["id_number"],
            MinimizedValue::Digest(
                keys.keyed_digest("id_number", b"11010519491231002X")
                    .unwrap()
            )
        );
        assert!(matches!(m.fields["mobile"], MinimizedValue::Digest(_)));
        for gone in ["face_image", "fingerprint", "nation", "undeclared_thing"] {
            assert!(!m.fields.contains_key(gone), "{gone} left the kiosk");
            assert!(m.dropped.contains(&gone.to_string()));
        }
        let dump = format!("{m:?}");
        for secret in [
            "张三",
            "11010519491231002X",
            "13812341234",
            "jpeg-bytes",
            "secret",
        ] {
            assert!(!dump.contains(secret), "{secret} in {dump}");
        }
    }
}

/// Seals items to HQ's record key (catalog rule `encrypt` towards HQ): the
/// value is encrypted at the kiosk, so it never sits in the outbox in clear.
pub struct HqSealer {
    pub suite: records::envelope::Suite,
    pub recipient: records::envelope::RecipientPublicKeys,
}

impl ItemSealer for HqSealer {
    fn seal(&self, item: &str, value: &[u8]) -> Result<Vec<u8>, KeyError> {
        records::envelope::seal_field(self.suite, &self.recipient, item, value)
            .map_err(|e| KeyError::Unavailable(format!("sealing to HQ: {e}")))
    }
}

#[cfg(test)]
mod outbox_tests {
    use super::*;
    use crate::audit::Actor;
    use crate::keys::SoftKeyVault;
    use crate::store::Store;
    use crate::store::crypto::FieldCipherKind;
    use crate::store::outbox;
    use crate::store::subjects::Subjects;
    use records::envelope::{SoftRecipient, Suite, open_field};

    #[test]
    fn neither_the_store_file_nor_the_outbox_holds_a_personal_value_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.sqlite");
        let store = Store::open(&path).unwrap();
        let catalog = Catalog::embedded();
        let keys = SoftKeyVault::random();
        let hq = SoftRecipient::generate();
        let sealer = HqSealer {
            suite: Suite::Gm,
            recipient: hq.public_keys(),
        };
        let person = [
            Personal::new("name", "测试戊"),
            Personal::new("id_number", "990101199001020013"),
            Personal::new("mobile", "13800138000"),
            Personal::new("address", "测试省示例市样本区模拟路9号"),
            Personal::new("birth_date", "1990-01-02"),
            Personal::new("face_image", "FACE-IMAGE-BYTES"),
        ];
        let subjects = Subjects {
            catalog: &catalog,
            keys: &keys,
            cipher: FieldCipherKind::Sm4Gcm,
        };
        let digest = subjects.digest_of(&person[1]).unwrap();
        let stored: Vec<Personal> = person
            .iter()
            .filter(|p| p.item() != "face_image")
            .cloned()
            .collect();
        let m = minimize(&catalog, Destination::Hq, &person, &keys, &sealer).unwrap();
        assert!(m.dropped().contains(&"face_image".to_string()));
        {
            let mut conn = store.conn().unwrap();
            let tx = conn.transaction().unwrap();
            let sid = subjects
                .create(&tx, 1, &Actor::System, "s", digest, &stored)
                .unwrap();
            let subject_ref = wire::KeyedDigest {
                algorithm: "hmac-sm3".into(),
                key_id: "kiosk-keyed-digest".into(),
                digest: wire::OpaqueBytes(digest.to_vec()),
            };
            let out =
                m.into_applicant_record(subject_ref, "cert_application", &catalog.version, sid);
            outbox::enqueue(&tx, 1, &out).unwrap();
            tx.commit().unwrap();
        }
        let bodies: Vec<Vec<u8>> = {
            let conn = store.conn().unwrap();
            let mut stmt = conn.prepare("SELECT body FROM outbox").unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        store.flush().unwrap();
        let file = std::fs::read(&path).unwrap();
        for p in &person {
            let needle = p.expose().as_bytes();
            assert!(
                !file.windows(needle.len()).any(|w| w == needle),
                "{} in the store file",
                p.item()
            );
            for b in &bodies {
                assert!(
                    !b.windows(needle.len()).any(|w| w == needle),
                    "{} in the outbox",
                    p.item()
                );
            }
        }
        // HQ can open what it is meant to.
        let record: wire::Record = records::codec::from_slice(&bodies[0]).unwrap();
        let wire::Record::Applicant(a) = record else {
            panic!("applicant record")
        };
        let name = a.fields.iter().find(|f| f.item == "name").unwrap();
        let wire::FieldValue::Ciphertext(ct) = &name.value else {
            panic!("name is sealed")
        };
        assert_eq!(
            &open_field(&hq, "name", &ct.0).unwrap()[..],
            "测试戊".as_bytes()
        );
        assert!(matches!(
            a.fields
                .iter()
                .find(|f| f.item == "id_number")
                .unwrap()
                .value,
            wire::FieldValue::KeyedDigest(_)
        ));
        assert!(a.fields.iter().all(|f| f.item != "face_image"));
    }
}
