//! kioskd: the daemon's subsystems (api, workflow, privacy, store, sync, audit).
