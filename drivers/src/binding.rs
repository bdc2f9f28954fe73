//! Person-to-card binding traits.
