//! Applicant workflows, step by step. Each step checks the session's consent
//! against the catalog before it collects anything, states the purpose at the
//! moment it asks for an ID, mobile or bank number, and records what it did in
//! the audit log in the same transaction as the data it stores.

pub mod idcard;
pub mod issuance;
pub mod plan;
