//! The C entry points. Every one catches panics (nothing unwinds into the caller), checks
//! its pointers, and maps errors to `CK_RV`. State is one `Mutex<Option<Module>>`
//! (`CKF_OS_LOCKING_OK`); signing and verification run outside it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::{Mutex, MutexGuard};

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::module::{AttrValue, Ck, GcmParams, Module, R};

static MODULE: Mutex<Option<Module>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Module>> {
    MODULE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Test fault injection only: while the file named by `KIOSK_SOFTTOKEN_HANG_FILE` exists,
/// every call that reaches the token blocks (as a wedged USB token or HSM link does), and
/// answers once the file is gone. Unset (always, outside tests) it costs one lookup.
pub const HANG_FILE_ENV: &str = "KIOSK_SOFTTOKEN_HANG_FILE";

fn hang_while_fault_file() {
    let Some(path) = std::env::var_os(HANG_FILE_ENV) else {
        return;
    };
    while std::path::Path::new(&path).exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn with<T>(f: impl FnOnce(&mut Module) -> R<T>) -> R<T> {
    hang_while_fault_file();
    let mut guard = lock();
    let module = guard.as_mut().ok_or(Ck(CKR_CRYPTOKI_NOT_INITIALIZED))?;
    f(module)
}

/// Runs an entry point: panics become `CKR_GENERAL_ERROR`.
fn guard(f: impl FnOnce() -> R<()>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(Ck(rv))) => rv,
        Err(_) => CKR_GENERAL_ERROR,
    }
}

fn out<T>(p: *mut T) -> R<&'static mut T> {
    // SAFETY: the caller passes a valid, writable pointer or NULL (checked).
    unsafe { p.as_mut() }.ok_or(Ck(CKR_ARGUMENTS_BAD))
}

fn bytes<'a>(p: *const u8, len: CK_ULONG) -> R<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Ck(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: the caller guarantees `len` readable bytes at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p, len as usize) })
}

fn template(p: *const CK_ATTRIBUTE, count: CK_ULONG) -> R<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Ck(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: the caller guarantees `count` attributes at `p`.
    let attrs = unsafe { std::slice::from_raw_parts(p, count as usize) };
    attrs
        .iter()
        .map(|a| {
            let v = bytes(a.pValue as *const u8, a.ulValueLen)
                .map_err(|_| Ck(CKR_ATTRIBUTE_VALUE_INVALID))?;
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}

fn mechanism(p: *const CK_MECHANISM) -> R<(CK_MECHANISM_TYPE, Vec<u8>)> {
    // SAFETY: a valid CK_MECHANISM or NULL (checked).
    let m = unsafe { p.as_ref() }.ok_or(Ck(CKR_ARGUMENTS_BAD))?;
    let param = bytes(m.pParameter as *const u8, m.ulParameterLen)
        .map_err(|_| Ck(CKR_MECHANISM_PARAM_INVALID))?;
    Ok((m.mechanism, param.to_vec()))
}

fn pad(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    let n = s.len().min(dst.len());
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Writes a variable-length output the PKCS#11 way (NULL buffer: length only).
fn write_output(data: &[u8], buf: *mut u8, len: *mut CK_ULONG) -> R<()> {
    let len = out(len)?;
    if buf.is_null() {
        *len = data.len() as CK_ULONG;
        return Ok(());
    }
    if (*len as usize) < data.len() {
        *len = data.len() as CK_ULONG;
        return Err(Ck(CKR_BUFFER_TOO_SMALL));
    }
    // SAFETY: the caller's buffer holds `*len` >= data.len() bytes.
    unsafe { ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len()) };
    *len = data.len() as CK_ULONG;
    Ok(())
}

/// Writes a list of CK_ULONGs the PKCS#11 way.
fn write_list(items: &[CK_ULONG], buf: *mut CK_ULONG, count: *mut CK_ULONG) -> R<()> {
    let count = out(count)?;
    if buf.is_null() {
        *count = items.len() as CK_ULONG;
        return Ok(());
    }
    if (*count as usize) < items.len() {
        *count = items.len() as CK_ULONG;
        return Err(Ck(CKR_BUFFER_TOO_SMALL));
    }
    // SAFETY: the caller's array holds `*count` >= items.len() entries.
    unsafe { ptr::copy_nonoverlapping(items.as_ptr(), buf, items.len()) };
    *count = items.len() as CK_ULONG;
    Ok(())
}

const VERSION_240: CK_VERSION = CK_VERSION {
    major: 2,
    minor: 40,
};
const MANUFACTURER: &str = "kioskd";

extern "C" fn c_initialize(args: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
        // SAFETY: NULL or a CK_C_INITIALIZE_ARGS (PKCS#11 2.40 §5.4).
        if let Some(a) = unsafe { (args as *const CK_C_INITIALIZE_ARGS).as_ref() } {
            if !a.pReserved.is_null() {
                return Err(Ck(CKR_ARGUMENTS_BAD));
            }
            let set = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if set.iter().any(|s| *s) && !set.iter().all(|s| *s) {
                return Err(Ck(CKR_ARGUMENTS_BAD));
            }
            // Application mutexes only, without OS locking: we cannot use them.
            if set[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Ck(CKR_CANT_LOCK));
            }
        }
        let mut g = lock();
        if g.is_some() {
            return Err(Ck(CKR_CRYPTOKI_ALREADY_INITIALIZED));
        }
        *g = Some(Module::open_from_env()?);
        Ok(())
    })
}

extern "C" fn c_finalize(reserved: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
        if !reserved.is_null() {
            return Err(Ck(CKR_ARGUMENTS_BAD));
        }
        lock()
            .take()
            .map(drop)
            .ok_or(Ck(CKR_CRYPTOKI_NOT_INITIALIZED))
    })
}

extern "C" fn c_get_info(info: *mut CK_INFO) -> CK_RV {
    guard(|| {
        with(|_| Ok(()))?;
        let info = out(info)?;
        info.cryptokiVersion = VERSION_240;
        pad(&mut info.manufacturerID, MANUFACTURER);
        info.flags = 0;
        pad(&mut info.libraryDescription, "kiosk softtoken (P-256, SM2)");
        info.libraryVersion = CK_VERSION { major: 0, minor: 1 };
        Ok(())
    })
}

extern "C" fn c_get_slot_list(
    _token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let n = with(|m| Ok(m.slot_count()))?;
        let slots: Vec<CK_ULONG> = (0..n as CK_ULONG).collect();
        write_list(&slots, list, count)
    })
}

extern "C" fn c_get_slot_info(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    guard(|| {
        let description = with(|m| m.slot_description(slot))?;
        let info = out(info)?;
        pad(&mut info.slotDescription, &description);
        pad(&mut info.manufacturerID, MANUFACTURER);
        info.flags = CKF_TOKEN_PRESENT;
        info.hardwareVersion = CK_VERSION { major: 0, minor: 1 };
        info.firmwareVersion = CK_VERSION { major: 0, minor: 1 };
        Ok(())
    })
}

extern "C" fn c_get_token_info(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    guard(|| {
        let facts = with(|m| m.token_facts(slot))?;
        let info = out(info)?;
        pad(&mut info.label, &facts.label);
        pad(&mut info.manufacturerID, MANUFACTURER);
        pad(&mut info.model, &facts.model);
        pad(&mut info.serialNumber, &facts.serial);
        info.flags = facts.flags;
        info.ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
        info.ulSessionCount = facts.sessions as CK_ULONG;
        info.ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
        info.ulRwSessionCount = facts.rw_sessions as CK_ULONG;
        info.ulMaxPinLen = 64;
        info.ulMinPinLen = facts.min_pin as CK_ULONG;
        info.ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
        info.ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
        info.ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
        info.ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
        info.hardwareVersion = CK_VERSION { major: 0, minor: 1 };
        info.firmwareVersion = CK_VERSION { major: 0, minor: 1 };
        pad(&mut info.utcTime, "");
        Ok(())
    })
}

extern "C" fn c_get_mechanism_list(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let mechs: Vec<CK_ULONG> = with(|m| m.mechanisms(slot))?
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        write_list(&mechs, list, count)
    })
}

extern "C" fn c_get_mechanism_info(
    slot: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    guard(|| {
        let flags = with(|m| m.mechanisms(slot))?
            .into_iter()
            .find(|(m, _)| *m == mech)
            .map(|(_, f)| f)
            .ok_or(Ck(CKR_MECHANISM_INVALID))?;
        let info = out(info)?;
        info.ulMinKeySize = 256;
        info.ulMaxKeySize = 256;
        info.flags = flags;
        Ok(())
    })
}

extern "C" fn c_init_token(
    slot: CK_SLOT_ID,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> CK_RV {
    guard(|| {
        let pin = Zeroizing::new(bytes(pin, pin_len)?.to_vec());
        let label = bytes(label, 32)?;
        let label = std::str::from_utf8(label).map_err(|_| Ck(CKR_ARGUMENTS_BAD))?;
        with(|m| m.init_token(slot, &pin, label))
    })
}

extern "C" fn c_init_pin(h: CK_SESSION_HANDLE, pin: *mut CK_UTF8CHAR, len: CK_ULONG) -> CK_RV {
    guard(|| {
        let pin = Zeroizing::new(bytes(pin, len)?.to_vec());
        with(|m| m.init_pin(h, &pin))
    })
}

extern "C" fn c_set_pin(
    h: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let old = Zeroizing::new(bytes(old, old_len)?.to_vec());
        let new = Zeroizing::new(bytes(new, new_len)?.to_vec());
        with(|m| m.set_pin(h, &old, &new))
    })
}

extern "C" fn c_open_session(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut std::ffi::c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard(|| {
        let session = out(session)?;
        *session = with(|m| m.open_session(slot, flags))?;
        Ok(())
    })
}

extern "C" fn c_close_session(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| with(|m| m.close_session(h)))
}

extern "C" fn c_close_all_sessions(slot: CK_SLOT_ID) -> CK_RV {
    guard(|| with(|m| m.close_all_sessions(slot)))
}

extern "C" fn c_get_session_info(h: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO) -> CK_RV {
    guard(|| {
        let (slot, state, flags) = with(|m| m.session_info(h))?;
        let info = out(info)?;
        info.slotID = slot;
        info.state = state;
        info.flags = flags;
        info.ulDeviceError = 0;
        Ok(())
    })
}

extern "C" fn c_login(
    h: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let pin = Zeroizing::new(bytes(pin, len)?.to_vec());
        with(|m| m.login(h, user, &pin))
    })
}

extern "C" fn c_logout(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| with(|m| m.logout(h)))
}

extern "C" fn c_create_object(
    h: CK_SESSION_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let t = template(tmpl, count)?;
        let object = out(object)?;
        *object = with(|m| m.create_object(h, &t))?;
        Ok(())
    })
}

extern "C" fn c_destroy_object(h: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> CK_RV {
    guard(|| with(|m| m.destroy_object(h, object)))
}

extern "C" fn c_get_attribute_value(
    h: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        if tmpl.is_null() && count > 0 {
            return Err(Ck(CKR_ARGUMENTS_BAD));
        }
        if count == 0 {
            return with(|m| m.get_attributes(h, object, &[]).map(|_| ()));
        }
        // SAFETY: the caller passes `count` attributes at `tmpl`.
        let attrs = unsafe { std::slice::from_raw_parts_mut(tmpl, count as usize) };
        let types: Vec<CK_ATTRIBUTE_TYPE> = attrs.iter().map(|a| a.type_).collect();
        with(|m| {
            let values = m.get_attributes(h, object, &types)?;
            let mut rv = CKR_OK;
            for (a, v) in attrs.iter_mut().zip(values) {
                match v {
                    AttrValue::Sensitive => {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        rv = CKR_ATTRIBUTE_SENSITIVE;
                    }
                    AttrValue::Invalid => {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        rv = CKR_ATTRIBUTE_TYPE_INVALID;
                    }
                    AttrValue::Value(v) => {
                        if a.pValue.is_null() {
                            a.ulValueLen = v.len() as CK_ULONG;
                        } else if (a.ulValueLen as usize) < v.len() {
                            a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                            rv = CKR_BUFFER_TOO_SMALL;
                        } else {
                            // SAFETY: the caller's buffer holds ulValueLen >= v.len() bytes.
                            unsafe {
                                ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len())
                            };
                            a.ulValueLen = v.len() as CK_ULONG;
                        }
                    }
                }
            }
            if rv == CKR_OK { Ok(()) } else { Err(Ck(rv)) }
        })
    })
}

extern "C" fn c_set_attribute_value(
    h: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let t = template(tmpl, count)?;
        with(|m| m.set_attributes(h, object, &t))
    })
}

extern "C" fn c_find_objects_init(
    h: CK_SESSION_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let t = template(tmpl, count)?;
        with(|m| m.find_init(h, &t))
    })
}

extern "C" fn c_find_objects(
    h: CK_SESSION_HANDLE,
    found: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let count = out(count)?;
        if found.is_null() && max > 0 {
            return Err(Ck(CKR_ARGUMENTS_BAD));
        }
        let handles = with(|m| m.find(h, max as usize))?;
        if !handles.is_empty() {
            // SAFETY: the caller's array holds `max` >= handles.len() entries.
            unsafe { ptr::copy_nonoverlapping(handles.as_ptr(), found, handles.len()) };
        }
        *count = handles.len() as CK_ULONG;
        Ok(())
    })
}

extern "C" fn c_find_objects_final(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| with(|m| m.find_final(h)))
}

extern "C" fn c_sign_init(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let (mech, param) = mechanism(mech)?;
        with(|m| m.sign_init(h, mech, &param, key))
    })
}

/// Signs outside the lock; a size query or a short buffer keeps the operation.
fn finish_sign(
    h: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    sig: *mut u8,
    sig_len: *mut CK_ULONG,
) -> R<()> {
    let op = with(|m| m.sign_op(h))?;
    let len = out(sig_len)?;
    if sig.is_null() {
        *len = op.max_len() as CK_ULONG;
        return Ok(());
    }
    if (*len as usize) < op.max_len() {
        *len = op.max_len() as CK_ULONG;
        return Err(Ck(CKR_BUFFER_TOO_SMALL));
    }
    let result = op.sign(data.unwrap_or(&op.buffer));
    with(|m| {
        m.end_sign(h);
        Ok(())
    })?;
    write_output(&result?, sig, len)
}

extern "C" fn c_sign(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let data = bytes(data, data_len)?;
        finish_sign(h, Some(data), sig, sig_len)
    })
}

extern "C" fn c_sign_update(h: CK_SESSION_HANDLE, part: *mut CK_BYTE, len: CK_ULONG) -> CK_RV {
    guard(|| {
        let part = bytes(part, len)?;
        with(|m| m.sign_update(h, part))
    })
}

extern "C" fn c_sign_final(
    h: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| finish_sign(h, None, sig, sig_len))
}

extern "C" fn c_verify_init(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let (mech, param) = mechanism(mech)?;
        with(|m| m.verify_init(h, mech, &param, key))
    })
}

extern "C" fn c_verify(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let data = bytes(data, data_len)?;
        let sig = bytes(sig, sig_len)?;
        let op = with(|m| m.take_verify(h))?;
        op.verify(data, sig)
    })
}

extern "C" fn c_verify_update(h: CK_SESSION_HANDLE, part: *mut CK_BYTE, len: CK_ULONG) -> CK_RV {
    guard(|| {
        let part = bytes(part, len)?;
        with(|m| m.verify_update(h, part))
    })
}

extern "C" fn c_verify_final(h: CK_SESSION_HANDLE, sig: *mut CK_BYTE, len: CK_ULONG) -> CK_RV {
    guard(|| {
        let sig = bytes(sig, len)?;
        let op = with(|m| m.take_verify(h))?;
        op.verify(&op.buffer, sig)
    })
}

extern "C" fn c_generate_key_pair(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    pub_tmpl: *mut CK_ATTRIBUTE,
    pub_count: CK_ULONG,
    priv_tmpl: *mut CK_ATTRIBUTE,
    priv_count: CK_ULONG,
    pub_key: *mut CK_OBJECT_HANDLE,
    priv_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let (mech, _) = mechanism(mech)?;
        let public = template(pub_tmpl, pub_count)?;
        let private = template(priv_tmpl, priv_count)?;
        let (pub_out, priv_out) = (out(pub_key)?, out(priv_key)?);
        let (p, q) = with(|m| m.generate_key_pair(h, mech, &public, &private))?;
        *pub_out = p;
        *priv_out = q;
        Ok(())
    })
}

/// CK_GCM_PARAMS of an AES-GCM mechanism: `(mechanism, iv, aad, tag bits)`.
fn gcm(p: *const CK_MECHANISM) -> R<(CK_MECHANISM_TYPE, GcmParams)> {
    // SAFETY: a valid CK_MECHANISM or NULL (checked).
    let m = unsafe { p.as_ref() }.ok_or(Ck(CKR_ARGUMENTS_BAD))?;
    if m.mechanism != CKM_AES_GCM {
        return Err(Ck(CKR_MECHANISM_INVALID));
    }
    if m.pParameter.is_null() || m.ulParameterLen as usize != std::mem::size_of::<CK_GCM_PARAMS>() {
        return Err(Ck(CKR_MECHANISM_PARAM_INVALID));
    }
    // SAFETY: checked non-NULL and of CK_GCM_PARAMS size.
    let params = unsafe { ptr::read_unaligned(m.pParameter as *const CK_GCM_PARAMS) };
    let iv = bytes(params.pIv, params.ulIvLen).map_err(|_| Ck(CKR_MECHANISM_PARAM_INVALID))?;
    let aad = bytes(params.pAAD, params.ulAADLen).map_err(|_| Ck(CKR_MECHANISM_PARAM_INVALID))?;
    Ok((
        m.mechanism,
        GcmParams {
            iv: iv.to_vec(),
            aad: aad.to_vec(),
            tag_bits: params.ulTagBits,
        },
    ))
}

fn crypt_init(
    h: CK_SESSION_HANDLE,
    encrypt: bool,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> R<()> {
    let (mech, params) = gcm(mech)?;
    with(|m| m.crypt_init(h, encrypt, mech, &params, key))
}

/// Encrypts or decrypts outside the lock; a size query or a short buffer keeps the operation.
fn crypt(
    h: CK_SESSION_HANDLE,
    encrypt: bool,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    out_buf: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> R<()> {
    let data = bytes(data, data_len)?;
    let op = with(|m| m.crypt_op(h, encrypt))?;
    let len = out(out_len)?;
    let need = op.out_len(data.len());
    if out_buf.is_null() {
        *len = need as CK_ULONG;
        return Ok(());
    }
    if (*len as usize) < need {
        *len = need as CK_ULONG;
        return Err(Ck(CKR_BUFFER_TOO_SMALL));
    }
    let result = op.run(data);
    with(|m| {
        m.end_crypt(h);
        Ok(())
    })?;
    write_output(&result?, out_buf, len)
}

extern "C" fn c_encrypt_init(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| crypt_init(h, true, mech, key))
}

extern "C" fn c_decrypt_init(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| crypt_init(h, false, mech, key))
}

extern "C" fn c_encrypt(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    out_buf: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| crypt(h, true, data, data_len, out_buf, out_len))
}

extern "C" fn c_decrypt(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    out_buf: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| crypt(h, false, data, data_len, out_buf, out_len))
}

extern "C" fn c_generate_key(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let (mech, _) = mechanism(mech)?;
        let t = template(tmpl, count)?;
        let key = out(key)?;
        *key = with(|m| m.generate_key(h, mech, &t))?;
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
extern "C" fn c_unwrap_key(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    unwrapping: CK_OBJECT_HANDLE,
    wrapped: *mut CK_BYTE,
    wrapped_len: CK_ULONG,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let (mech, _) = mechanism(mech)?;
        let wrapped = bytes(wrapped, wrapped_len)?;
        let t = template(tmpl, count)?;
        let key = out(key)?;
        *key = with(|m| m.unwrap_key(h, mech, unwrapping, wrapped, &t))?;
        Ok(())
    })
}

extern "C" fn c_generate_random(h: CK_SESSION_HANDLE, buf: *mut CK_BYTE, len: CK_ULONG) -> CK_RV {
    guard(|| {
        with(|m| m.check_session(h))?;
        if len == 0 {
            return Ok(());
        }
        if buf.is_null() {
            return Err(Ck(CKR_ARGUMENTS_BAD));
        }
        // SAFETY: the caller's buffer holds `len` bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(buf, len as usize) };
        getrandom::fill(out).map_err(|_| Ck(CKR_DEVICE_ERROR))
    })
}

extern "C" fn c_seed_random(h: CK_SESSION_HANDLE, _seed: *mut CK_BYTE, _len: CK_ULONG) -> CK_RV {
    guard(|| {
        with(|m| m.check_session(h))?;
        Err(Ck(CKR_RANDOM_SEED_NOT_SUPPORTED))
    })
}

extern "C" fn c_get_function_status(_h: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_PARALLEL
}

extern "C" fn c_cancel_function(_h: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_PARALLEL
}

/// Entry points this module does not offer.
mod unsupported {
    use super::*;
    macro_rules! not_supported {
        ($($name:ident($($arg:ty),*);)*) => {
            $(pub extern "C" fn $name($(_: $arg),*) -> CK_RV { CKR_FUNCTION_NOT_SUPPORTED })*
        };
    }
    type H = CK_SESSION_HANDLE;
    type B = *mut CK_BYTE;
    type L = CK_ULONG;
    type PL = *mut CK_ULONG;
    type M = *mut CK_MECHANISM;
    type O = CK_OBJECT_HANDLE;
    type A = *mut CK_ATTRIBUTE;
    type PO = *mut CK_OBJECT_HANDLE;
    not_supported! {
        get_operation_state(H, B, PL);
        set_operation_state(H, B, L, O, O);
        copy_object(H, O, A, L, PO);
        get_object_size(H, O, PL);
        encrypt_update(H, B, L, B, PL);
        encrypt_final(H, B, PL);
        decrypt_update(H, B, L, B, PL);
        decrypt_final(H, B, PL);
        digest_init(H, M);
        digest(H, B, L, B, PL);
        digest_update(H, B, L);
        digest_key(H, O);
        digest_final(H, B, PL);
        sign_recover_init(H, M, O);
        sign_recover(H, B, L, B, PL);
        verify_recover_init(H, M, O);
        verify_recover(H, B, L, B, PL);
        digest_encrypt_update(H, B, L, B, PL);
        decrypt_digest_update(H, B, L, B, PL);
        sign_encrypt_update(H, B, L, B, PL);
        decrypt_verify_update(H, B, L, B, PL);
        wrap_key(H, M, O, O, B, PL);
        derive_key(H, M, O, A, L, PO);
        wait_for_slot_event(CK_FLAGS, *mut CK_SLOT_ID, *mut std::ffi::c_void);
    }
}

static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: VERSION_240,
    C_Initialize: Some(c_initialize),
    C_Finalize: Some(c_finalize),
    C_GetInfo: Some(c_get_info),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(c_get_slot_list),
    C_GetSlotInfo: Some(c_get_slot_info),
    C_GetTokenInfo: Some(c_get_token_info),
    C_GetMechanismList: Some(c_get_mechanism_list),
    C_GetMechanismInfo: Some(c_get_mechanism_info),
    C_InitToken: Some(c_init_token),
    C_InitPIN: Some(c_init_pin),
    C_SetPIN: Some(c_set_pin),
    C_OpenSession: Some(c_open_session),
    C_CloseSession: Some(c_close_session),
    C_CloseAllSessions: Some(c_close_all_sessions),
    C_GetSessionInfo: Some(c_get_session_info),
    C_GetOperationState: Some(unsupported::get_operation_state),
    C_SetOperationState: Some(unsupported::set_operation_state),
    C_Login: Some(c_login),
    C_Logout: Some(c_logout),
    C_CreateObject: Some(c_create_object),
    C_CopyObject: Some(unsupported::copy_object),
    C_DestroyObject: Some(c_destroy_object),
    C_GetObjectSize: Some(unsupported::get_object_size),
    C_GetAttributeValue: Some(c_get_attribute_value),
    C_SetAttributeValue: Some(c_set_attribute_value),
    C_FindObjectsInit: Some(c_find_objects_init),
    C_FindObjects: Some(c_find_objects),
    C_FindObjectsFinal: Some(c_find_objects_final),
    C_EncryptInit: Some(c_encrypt_init),
    C_Encrypt: Some(c_encrypt),
    C_EncryptUpdate: Some(unsupported::encrypt_update),
    C_EncryptFinal: Some(unsupported::encrypt_final),
    C_DecryptInit: Some(c_decrypt_init),
    C_Decrypt: Some(c_decrypt),
    C_DecryptUpdate: Some(unsupported::decrypt_update),
    C_DecryptFinal: Some(unsupported::decrypt_final),
    C_DigestInit: Some(unsupported::digest_init),
    C_Digest: Some(unsupported::digest),
    C_DigestUpdate: Some(unsupported::digest_update),
    C_DigestKey: Some(unsupported::digest_key),
    C_DigestFinal: Some(unsupported::digest_final),
    C_SignInit: Some(c_sign_init),
    C_Sign: Some(c_sign),
    C_SignUpdate: Some(c_sign_update),
    C_SignFinal: Some(c_sign_final),
    C_SignRecoverInit: Some(unsupported::sign_recover_init),
    C_SignRecover: Some(unsupported::sign_recover),
    C_VerifyInit: Some(c_verify_init),
    C_Verify: Some(c_verify),
    C_VerifyUpdate: Some(c_verify_update),
    C_VerifyFinal: Some(c_verify_final),
    C_VerifyRecoverInit: Some(unsupported::verify_recover_init),
    C_VerifyRecover: Some(unsupported::verify_recover),
    C_DigestEncryptUpdate: Some(unsupported::digest_encrypt_update),
    C_DecryptDigestUpdate: Some(unsupported::decrypt_digest_update),
    C_SignEncryptUpdate: Some(unsupported::sign_encrypt_update),
    C_DecryptVerifyUpdate: Some(unsupported::decrypt_verify_update),
    C_GenerateKey: Some(c_generate_key),
    C_GenerateKeyPair: Some(c_generate_key_pair),
    C_WrapKey: Some(unsupported::wrap_key),
    C_UnwrapKey: Some(c_unwrap_key),
    C_DeriveKey: Some(unsupported::derive_key),
    C_SeedRandom: Some(c_seed_random),
    C_GenerateRandom: Some(c_generate_random),
    C_GetFunctionStatus: Some(c_get_function_status),
    C_CancelFunction: Some(c_cancel_function),
    C_WaitForSlotEvent: Some(unsupported::wait_for_slot_event),
};

/// The PKCS#11 2.40 function list.
///
/// # Safety
/// `list` must be NULL or point to writable storage for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard(|| {
        *out(list)? = &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST;
        Ok(())
    })
}

struct Interface(CK_INTERFACE);
// SAFETY: the interface points to immutable statics only.
unsafe impl Sync for Interface {}

static INTERFACE_NAME: &[u8] = b"PKCS 11\0";
static INTERFACE: Interface = Interface(CK_INTERFACE {
    pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
    pFunctionList: &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut std::ffi::c_void,
    flags: 0,
});

/// PKCS#11 3.0 `C_GetInterface`: only the 2.40 "PKCS 11" interface is offered.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string; `version` NULL or a `CK_VERSION`;
/// `interface` writable storage for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    interface: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    guard(|| {
        let slot = out(interface)?;
        if !name.is_null() {
            // SAFETY: NUL-terminated per the caller's contract.
            let wanted = unsafe { std::ffi::CStr::from_ptr(name as *const std::ffi::c_char) };
            if wanted.to_bytes() != b"PKCS 11" {
                return Err(Ck(CKR_ARGUMENTS_BAD));
            }
        }
        // SAFETY: NULL or a valid CK_VERSION.
        if let Some(v) = unsafe { version.as_ref() } {
            if v.major != 2 || v.minor != 40 {
                return Err(Ck(CKR_ARGUMENTS_BAD));
            }
        }
        if flags != 0 {
            return Err(Ck(CKR_ARGUMENTS_BAD));
        }
        *slot = &INTERFACE.0 as *const CK_INTERFACE as *mut CK_INTERFACE;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_an_entry_point_becomes_ckr_general_error() {
        let rv = guard(|| panic!("must not unwind into C"));
        assert_eq!(rv, CKR_GENERAL_ERROR);
    }

    #[test]
    fn null_pointers_are_refused_not_dereferenced() {
        // SAFETY: NULL is what is being tested; the function checks it.
        assert_eq!(
            unsafe { C_GetFunctionList(ptr::null_mut()) },
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            write_list(&[1, 2], ptr::null_mut(), ptr::null_mut()),
            Err(Ck(CKR_ARGUMENTS_BAD))
        );
        assert_eq!(bytes(ptr::null(), 4), Err(Ck(CKR_ARGUMENTS_BAD)));
        assert_eq!(bytes(ptr::null(), 0), Ok(&[][..]));
        let mut list = ptr::null_mut();
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { C_GetFunctionList(&mut list) }, CKR_OK);
        assert!(!list.is_null());
    }
}
