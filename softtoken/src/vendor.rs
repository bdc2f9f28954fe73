//! How the module spells SM2: the vendor numberings it can present (chosen per slot in the
//! directory's configuration by the name of a `hsm` vendor profile), and what each signing
//! mechanism consumes and returns. Numbers come from public vendor headers (see
//! `hsm/src/profiles.toml`); the module's own test checks they agree with that file.

use cryptoki_sys::CK_ULONG;

/// What an SM2 signing mechanism is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sm2Input {
    /// The 32-byte e = SM3(Z_A ‖ M), computed by the caller.
    Digest,
    /// The message; the token computes e = SM3(Z_A ‖ M) with the default (or given) id.
    MessageWithZ,
    /// The message; the token computes e = SM3(M) (no Z_A: the vendor's plain `SM3_SM2`).
    MessageNoZ,
}

/// How an SM2 signature leaves the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigFormat {
    /// r ‖ s, 64 bytes.
    Raw,
    /// GM/T 0009 `SEQUENCE { r INTEGER, s INTEGER }`.
    Der,
}

/// One vendor SM2 signing mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sm2SignMechanism {
    pub ckm: CK_ULONG,
    pub name: &'static str,
    pub input: Sm2Input,
    pub format: SigFormat,
}

/// A vendor's SM2 numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sm2Family {
    pub name: &'static str,
    pub ckk_sm2: CK_ULONG,
    pub ckm_keygen: CK_ULONG,
    pub sign: &'static [Sm2SignMechanism],
}

const fn mech(
    ckm: CK_ULONG,
    name: &'static str,
    input: Sm2Input,
    format: SigFormat,
) -> Sm2SignMechanism {
    Sm2SignMechanism {
        ckm,
        name,
        input,
        format,
    }
}

/// The `0x8000_8xxx` family of the public `swpkcs11.h` header (Sansec; TASS shares the block).
pub const SANSEC: Sm2Family = Sm2Family {
    name: "sansec",
    ckk_sm2: 0x8000_0004,
    ckm_keygen: 0x8000_8001,
    sign: &[
        mech(
            0x8000_8100,
            "CKM_SM3_SM2",
            Sm2Input::MessageNoZ,
            SigFormat::Raw,
        ),
        mech(
            0x8000_8101,
            "CKM_SM3_SM2_DER",
            Sm2Input::MessageNoZ,
            SigFormat::Der,
        ),
        mech(
            0x8000_8102,
            "CKM_SM3_SM2_APPID1",
            Sm2Input::MessageWithZ,
            SigFormat::Raw,
        ),
        mech(
            0x8000_8103,
            "CKM_SM3_SM2_APPID1_DER",
            Sm2Input::MessageWithZ,
            SigFormat::Der,
        ),
        mech(
            0x8000_8104,
            "CKM_SM2_SIGN",
            Sm2Input::Digest,
            SigFormat::Raw,
        ),
    ],
};

/// The UKEY header with the "Bgi-compatible" comment (CKK VD+1, keygen VD+3, CKM_SM2 VD+4).
pub const BGI: Sm2Family = Sm2Family {
    name: "bgi-ukey",
    ckk_sm2: 0x8000_0001,
    ckm_keygen: 0x8000_0003,
    sign: &[mech(
        0x8000_0004,
        "CKM_SM2",
        Sm2Input::Digest,
        SigFormat::Raw,
    )],
};

/// IBM's block (CKK_IBM_SM2, CKM_IBM_SM2 on digests, CKM_IBM_SM2_SM3 on messages).
pub const IBM: Sm2Family = Sm2Family {
    name: "ibm",
    ckk_sm2: 0x8005_0002,
    ckm_keygen: 0x8005_000A,
    sign: &[
        mech(0x8005_000B, "CKM_IBM_SM2", Sm2Input::Digest, SigFormat::Raw),
        mech(
            0x8005_000C,
            "CKM_IBM_SM2_SM3",
            Sm2Input::MessageWithZ,
            SigFormat::Raw,
        ),
    ],
};

/// The numbering a slot presents, by the `hsm` profile name configured for it. `None` for
/// profiles without SM2 (`generic`, `softhsm2`): the slot offers P-256 only.
pub fn family_for_profile(profile: &str) -> Result<Option<&'static Sm2Family>, String> {
    match profile {
        "sansec" | "sansec-appid1" | "sansec-z-der" => Ok(Some(&SANSEC)),
        "bgi-ukey" => Ok(Some(&BGI)),
        "ibm" => Ok(Some(&IBM)),
        "generic" | "softhsm2" => Ok(None),
        other => Err(format!(
            "unknown vendor profile {other:?} (known: sansec, sansec-appid1, sansec-z-der, \
             bgi-ukey, ibm, generic)"
        )),
    }
}

impl Sm2Family {
    pub fn sign_mechanism(&self, ckm: CK_ULONG) -> Option<&'static Sm2SignMechanism> {
        self.sign.iter().find(|m| m.ckm == ckm)
    }
}
