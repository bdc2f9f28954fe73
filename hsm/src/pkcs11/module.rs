//! One shared, initialised `Pkcs11` context per module path (C_Initialize may run only once
//! per process per module), the mapping of PKCS#11 return values to `TokenError`, and the
//! runner that moves blocking PKCS#11 calls off the async runtime with a timeout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::{Result, TokenError};

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// The process-wide context of the module at `path`, loaded and initialised on first use.
pub fn shared_module(path: &Path) -> Result<Pkcs11> {
    let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut modules = modules.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = modules.get(path) {
        return Ok(ctx.clone());
    }
    let module_err = |e: CkError| TokenError::Module {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let ctx = Pkcs11::new(path).map_err(module_err)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(module_err(e)),
    }
    modules.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// Maps a cryptoki error to the typed error the daemon sees.
pub fn map_error(e: CkError) -> TokenError {
    match e {
        CkError::Pkcs11(rv, function) => match rv {
            RvError::PinIncorrect => TokenError::PinIncorrect { retries_left: None },
            RvError::PinLocked => TokenError::PinLocked,
            RvError::PinLenRange => TokenError::PinInvalid("length out of the token's range"),
            RvError::PinInvalid => TokenError::PinInvalid("characters not accepted by the token"),
            RvError::PinExpired => TokenError::PinInvalid("expired: change it first"),
            RvError::UserNotLoggedIn => TokenError::NotLoggedIn,
            RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::SlotIdInvalid
            | RvError::DeviceError
            | RvError::CryptokiNotInitialized => TokenError::TokenRemoved,
            // SoftHSM2 answers C_GetTokenInfo with CKR_GENERAL_ERROR once the token's store
            // vanished: for that call it means "gone" (the pool resets and re-finds the token).
            RvError::GeneralError if matches!(function, Function::GetTokenInfo) => {
                TokenError::TokenRemoved
            }
            RvError::MechanismInvalid | RvError::MechanismParamInvalid => {
                TokenError::MechanismNotSupported(format!("{function:?}: {rv}"))
            }
            rv => TokenError::Pkcs11 {
                function: format!("{function:?}"),
                rv: format!("{rv:?}"),
            },
        },
        other => TokenError::Pkcs11 {
            function: "-".into(),
            rv: other.to_string(),
        },
    }
}

/// Runs a blocking PKCS#11 call on the blocking pool, failing with `Timeout` if it does not
/// finish in time (the call itself keeps its thread until the module returns).
pub async fn run_blocking<T, F>(timeout: Duration, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let handle = tokio::task::spawn_blocking(f);
    match tokio::time::timeout(timeout, handle).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(TokenError::Pkcs11 {
            function: "worker".into(),
            rv: join.to_string(),
        }),
        Err(_) => Err(TokenError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hung_call_times_out_without_blocking_the_caller() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        // The "module call" blocks until released: the caller must get `Timeout` first.
        let result = run_blocking(Duration::from_millis(50), move || {
            let _ = wait.recv_timeout(Duration::from_secs(10));
            Ok(())
        })
        .await;
        assert!(matches!(result, Err(TokenError::Timeout(_))), "{result:?}");
        release.send(()).ok();
        assert_eq!(
            run_blocking(Duration::from_secs(5), || Ok(7))
                .await
                .unwrap(),
            7
        );
    }

    #[test]
    fn maps_pkcs11_return_values_to_typed_errors() {
        let e = |rv| map_error(CkError::Pkcs11(rv, Function::Sign));
        assert!(matches!(
            e(RvError::PinIncorrect),
            TokenError::PinIncorrect { retries_left: None }
        ));
        assert!(matches!(e(RvError::PinLocked), TokenError::PinLocked));
        assert!(matches!(
            e(RvError::DeviceRemoved),
            TokenError::TokenRemoved
        ));
        assert!(matches!(
            e(RvError::SessionHandleInvalid),
            TokenError::TokenRemoved
        ));
        assert!(matches!(
            e(RvError::UserNotLoggedIn),
            TokenError::NotLoggedIn
        ));
        assert!(matches!(
            e(RvError::MechanismInvalid),
            TokenError::MechanismNotSupported(_)
        ));
        assert!(matches!(
            e(RvError::GeneralError),
            TokenError::Pkcs11 { .. }
        ));
        assert!(matches!(
            map_error(CkError::Pkcs11(
                RvError::GeneralError,
                Function::GetTokenInfo
            )),
            TokenError::TokenRemoved
        ));
    }
}
