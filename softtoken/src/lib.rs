//! `libkiosk_softtoken.so`: kioskd's own PKCS#11 2.40 module, a soft token with P-256 and SM2
//! that presents SM2 under real vendors' numberings (chosen per slot in its directory's
//! configuration), so that the SM2-over-PKCS#11 paths of `hsm` run against a real module in
//! CI. Its store is the directory named by `KIOSK_SOFTTOKEN_DIR` (see [`store`]).
//!
//! It is a software module: GM/T 0028 level 1 at best. Production keys belong on certified
//! UKEYs and HSMs.

pub mod crypto;
mod ffi;
pub mod module;
pub mod store;
pub mod vendor;

pub use ffi::{C_GetFunctionList, C_GetInterface};
