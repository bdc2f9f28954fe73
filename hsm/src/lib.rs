//! Everything kioskd does with keys, behind one `Token` trait: PKCS#11 (cryptoki) for UKEYs and HSMs and a soft token as the embedded default.
