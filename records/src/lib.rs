//! The contract between kiosk and HQ: minimized record types, the signed and encrypted envelope, batches, acks and audit checkpoints.
