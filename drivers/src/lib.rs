//! Async device drivers: ID-card reader, fingerprint sensor, camera, USB hot-plug; one trait per device kind with the real driver and a simulator transport behind it.
