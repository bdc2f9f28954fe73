//! What every handler may use to authenticate a request: the applicant session named in the
//! path (bearer token) and the staff member behind a staff request.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::{ApiError, AppState};
use crate::session::ApplicantSession;
use crate::staff::StaffSession;

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
}

/// The session named in the path, authenticated by its bearer token.
pub fn applicant(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<ApplicantSession, ApiError> {
    Ok(state.sessions.authenticate(id, bearer(headers))?)
}

/// The staff member behind the request.
pub fn staff(state: &AppState, headers: &HeaderMap) -> Result<StaffSession, ApiError> {
    Ok(state.staff.authenticate(bearer(headers))?)
}
