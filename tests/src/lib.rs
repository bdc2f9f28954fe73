//! End-to-end tests of kioskd, hq-ingest, SoftHSM2 and the device simulators live in `tests/`.
