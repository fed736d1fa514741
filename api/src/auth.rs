//! `Authorization: Bearer <api key>`: the key decides the organisation every query is scoped to.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};

use crate::{ApiError, AppState};

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub org_id: String,
    pub role: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        let key = state
            .store
            .authenticate(secret.trim())
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller {
            org_id: key.org_id,
            role: key.role,
        })
    }
}
