//! Authentication and permissions. Every route declares its [`Access`] in the route table
//! (`routes.rs`); [`authorize`] enforces it before the handler runs: no or unknown or revoked
//! key → 401, a role without the permission → 403. Authenticated requests count against
//! their key's rate limit, the others (public routes, failed authentication) against their
//! client address's ([`crate::limits`]), answering 429 past it. The key decides the
//! organisation every query is scoped to, so another organisation's resource is simply not
//! found (404).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, request::Parts};
use axum::middleware::Next;
use axum::response::Response;
use pidgr_store::Permission;

use crate::{ApiError, AppState};

/// What a route requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No key needed (health, readiness, the OpenAPI document).
    Public,
    /// Any live key of any role.
    Authenticated,
    /// A key whose role holds this permission.
    Requires(Permission),
    /// The server operator's own token, never an API key: for powers over every organisation
    /// (the codec server, [`crate::codec`], which checks the token itself).
    Operator,
}

/// The authenticated caller, available to handlers of non-public routes.
#[derive(Clone, Debug)]
pub struct Caller {
    pub org_id: String,
    pub key_id: String,
    pub role_id: String,
    pub permissions: BTreeSet<Permission>,
}

impl Caller {
    /// Refuses to hand out what the caller does not hold: a role or key can never carry a
    /// permission its creator lacks.
    pub fn may_grant<'a>(
        &self,
        permissions: impl IntoIterator<Item = &'a Permission>,
    ) -> Result<(), ApiError> {
        let lacking: Vec<&str> = permissions
            .into_iter()
            .filter(|p| !self.permissions.contains(p))
            .map(|p| p.as_str())
            .collect();
        if lacking.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(lacking.join("`, `")))
        }
    }
}

/// The middleware every route goes through, with the access its table entry declares.
pub async fn authorize(
    State(state): State<AppState>,
    access: Access,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>();
    if access == Access::Public {
        state.limiters.charge_address(address)?;
    } else {
        let secret = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let found = match secret {
            // A read; `last_used_at` is written at most once a minute per key, and never for
            // a secret that matches no live key.
            Some(secret) => state.store.authenticate(secret.trim()).await?,
            None => None,
        };
        let Some(found) = found else {
            // Too many failures from one address: 429 rather than 401.
            state.limiters.charge_address(address)?;
            return Err(ApiError::Unauthorized);
        };
        state.limiters.charge_key(&found.key.id)?;
        match access {
            Access::Requires(permission) if !found.permissions.contains(&permission) => {
                return Err(ApiError::Forbidden(permission.as_str().to_owned()));
            }
            // No API key holds an operator's power, whatever its role.
            Access::Operator => return Err(ApiError::Forbidden("operator".to_owned())),
            _ => {}
        }
        request.extensions_mut().insert(Caller {
            org_id: found.key.org_id,
            key_id: found.key.id,
            role_id: found.key.role,
            permissions: found.permissions,
        });
    }
    Ok(next.run(request).await)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("a public route asked for the caller".into()))
    }
}
