//! The module's vendor numberings agree with `hsm`'s `profiles.toml`: every embedded profile
//! names a numbering the module can present, with the same key type, key-generation and
//! signing numbers, and the signing mechanism means what the profile says (digest vs message
//! with Z_A, raw vs DER). A profile edited on one side only fails here.

use hsm::profile::{ProfileSet, Sm2SignInput, Sm2SignatureFormat};
use kiosk_softtoken::vendor::{SigFormat, Sm2Input, family_for_profile};

#[test]
fn every_hsm_profile_is_presented_by_the_module_with_the_same_numbers_and_meaning() {
    let set = ProfileSet::embedded().unwrap();
    let mut sm2_profiles = 0;
    for name in set.names() {
        let profile = set.get(name).unwrap();
        let family = family_for_profile(name)
            .unwrap_or_else(|e| panic!("profile {name} has no module numbering: {e}"));
        match (&profile.sm2, family) {
            (None, None) => {}
            (Some(sm2), Some(f)) => {
                sm2_profiles += 1;
                assert_eq!(sm2.ckk_sm2, f.ckk_sm2, "{name}: CKK");
                assert_eq!(sm2.ckm_keygen, f.ckm_keygen, "{name}: keygen");
                let m = f
                    .sign_mechanism(sm2.ckm_sign)
                    .unwrap_or_else(|| panic!("{name}: 0x{:08X} not offered", sm2.ckm_sign));
                let input = match sm2.sign_input {
                    Sm2SignInput::Digest => Sm2Input::Digest,
                    Sm2SignInput::Message => Sm2Input::MessageWithZ,
                };
                assert_eq!(m.input, input, "{name}: input of {}", m.name);
                let format = match sm2.signature {
                    Sm2SignatureFormat::Raw => SigFormat::Raw,
                    Sm2SignatureFormat::Der => SigFormat::Der,
                };
                assert_eq!(m.format, format, "{name}: format of {}", m.name);
            }
            (a, b) => panic!(
                "{name}: hsm SM2 {:?} vs module {:?}",
                a.is_some(),
                b.is_some()
            ),
        }
    }
    assert!(sm2_profiles >= 5, "expected the SM2 profiles to be checked");
}
