//! Byte-level codecs of the kiosk device protocols (ID-card SAM frames, EF01 fingerprint packets) and device-side simulators as pure state machines. No I/O here.
