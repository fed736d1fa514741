//! Authentication and permissions. Every route declares its [`Access`] in the route table
//! (`routes.rs`); [`authorize`] enforces it before the handler runs: no or unknown or revoked
//! key → 401, a role without the permission → 403. Authenticated requests count against
//! their key's rate limit, the others (public routes, failed authentication) against their
//! client address's ([`crate::limits`]), answering 429 past it. A key this server has not seen
//! authenticate is charged to its address before the database is asked ([`identify`]), so an
//! address over its limit costs no lookup. Health and readiness probes count against nothing.
//! The key decides the organisation every query is scoped to, so another organisation's
//! resource is simply not found (404).

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, request::Parts};
use axum::middleware::Next;
use axum::response::Response;
use pidgr_store::{Authenticated, Permission, StoreError};

use crate::limits::{Limiters, is_probe};
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
    /// Two answers at one address: a request with an `Authorization` header (or a console
    /// session's) is an API call and needs a key whose role holds this permission (refused
    /// 401/403 like [`Access::Requires`]); a request without one is a person's browser and gets
    /// a public page that reveals nothing (the recipient's deeplink, `GET /c/{code}`), charged
    /// to its client address.
    KeyOrPublicPage(Permission),
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

/// The key a console session acts as. The console puts it on the requests it hands to this
/// router in-process; request extensions cannot come from the network, so only the console's
/// own session check (the cookie and its CSRF token) leads here. The key is re-read on every
/// request, so a revoked key or a changed role takes effect at once, and the request counts
/// against the key's own rate limit like any other.
#[derive(Clone, Debug)]
pub struct SessionKey {
    pub org_id: String,
    pub key_id: String,
}

impl SessionKey {
    async fn authenticate(&self, state: &AppState) -> Result<Authenticated, ApiError> {
        let found = state
            .store
            .authenticate_key_id(&self.org_id, &self.key_id)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        state.limiters.charge_key(&self.key_id)?;
        Ok(found)
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
    let public = match access {
        Access::Public => true,
        // Neither an API key nor a console session: a person's browser.
        Access::KeyOrPublicPage(_) => {
            !request.headers().contains_key(header::AUTHORIZATION)
                && request.extensions().get::<SessionKey>().is_none()
        }
        _ => false,
    };
    if public {
        if !is_probe(request.uri().path()) {
            state.limiters.charge_address(address)?;
        }
    } else {
        let found = match request.extensions().get::<SessionKey>() {
            Some(session) => session.authenticate(&state).await?,
            None => {
                let secret = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                // A read; `last_used_at` is written at most once a minute per key, and never
                // for a secret that matches no live key.
                let store = &state.store;
                identify(&state.limiters, address, secret, |secret| async move {
                    store.authenticate(&secret).await
                })
                .await?
            }
        };
        match access {
            Access::Requires(permission) | Access::KeyOrPublicPage(permission)
                if !found.permissions.contains(&permission) =>
            {
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

/// Who calls with `secret`, charging the right bucket before the database is asked: a key seen
/// to authenticate on this server is charged to its own bucket, anything else (no key, a key
/// never seen) to the client's address, refunded once the key proves valid. So an address over
/// its limit is answered 429 without a lookup however many made-up keys it sends, and a valid
/// key's requests never count against its address. The price: a valid key's first request from
/// an address that is over its limit is refused too, until the address's bucket refills.
pub(crate) async fn identify<Lookup, Found>(
    limiters: &Limiters,
    address: Option<&ConnectInfo<SocketAddr>>,
    secret: Option<&str>,
    lookup: Lookup,
) -> Result<Authenticated, ApiError>
where
    Lookup: FnOnce(String) -> Found,
    Found: Future<Output = Result<Option<Authenticated>, StoreError>>,
{
    let Some(secret) = secret else {
        limiters.charge_address(address)?;
        return Err(ApiError::Unauthorized);
    };
    let known = limiters.known_key(secret);
    match &known {
        Some(key_id) => limiters.charge_key(key_id)?,
        None => limiters.charge_address(address)?,
    }
    let Some(found) = lookup(secret.to_owned()).await? else {
        if known.is_some() {
            // Revoked since it was seen: from now on it counts against its address like any
            // other key that does not authenticate.
            limiters.forget_key(secret);
            limiters.charge_address(address)?;
        }
        return Err(ApiError::Unauthorized);
    };
    if known.is_none() {
        limiters.refund_address(address);
        limiters.remember_key(secret, &found.key.id);
        limiters.charge_key(&found.key.id)?;
    }
    Ok(found)
}

/// The caller of a route that also answers without a key ([`Access::KeyOrPublicPage`]): `None`
/// for a request [`authorize`] let through as public.
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned())
    }
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

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use pidgr_store::ApiKey;

    use super::*;
    use crate::{Rate, ServerLimits};

    /// A clock that never moves, so that no bucket refills during a test.
    fn frozen() -> Instant {
        static T0: OnceLock<Instant> = OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn limiters(per_address_burst: u32) -> Limiters {
        Limiters::with_clock(
            &ServerLimits {
                per_address: Rate {
                    per_second: 1,
                    burst: per_address_burst,
                },
                ..ServerLimits::default()
            },
            frozen,
        )
    }

    fn client(ip: &str) -> ConnectInfo<SocketAddr> {
        ConnectInfo(SocketAddr::new(ip.parse().unwrap(), 40_000))
    }

    const VALID: &str = "pidgr_the-valid-one";

    fn authenticated() -> Authenticated {
        Authenticated {
            key: ApiKey {
                id: "key-1".into(),
                org_id: "org-1".into(),
                name: "backend".into(),
                role: "super_admin".into(),
                prefix: "pidgr_th".into(),
                created_at: chrono::Utc::now(),
                last_used_at: None,
                revoked_at: None,
            },
            permissions: BTreeSet::new(),
        }
    }

    /// A database of one live key (while `live` holds), counting the lookups it answers.
    struct Database {
        lookups: AtomicUsize,
        live: std::sync::atomic::AtomicBool,
    }

    impl Database {
        fn new() -> Self {
            Database {
                lookups: AtomicUsize::new(0),
                live: true.into(),
            }
        }

        async fn call(
            &self,
            limiters: &Limiters,
            address: &ConnectInfo<SocketAddr>,
            secret: &str,
        ) -> Result<Authenticated, ApiError> {
            identify(limiters, Some(address), Some(secret), |secret| async move {
                self.lookups.fetch_add(1, Ordering::SeqCst);
                let live = self.live.load(Ordering::SeqCst);
                Ok((live && secret == VALID).then(authenticated))
            })
            .await
        }

        fn lookups(&self) -> usize {
            self.lookups.load(Ordering::SeqCst)
        }
    }

    fn is_limited(result: &Result<Authenticated, ApiError>) -> bool {
        matches!(result, Err(ApiError::TooManyRequests { .. }))
    }

    #[tokio::test]
    async fn made_up_keys_from_an_address_over_its_limit_are_refused_without_a_lookup() {
        let limiters = limiters(5);
        let database = Database::new();
        let flood = client("198.51.100.7");
        let mut limited = 0;
        for attempt in 0..200 {
            let result = database
                .call(&limiters, &flood, &format!("pidgr_made-up-{attempt}"))
                .await;
            if is_limited(&result) {
                limited += 1;
            } else {
                assert!(matches!(result, Err(ApiError::Unauthorized)), "{result:?}");
            }
        }
        assert_eq!(limited, 195);
        assert_eq!(
            database.lookups(),
            5,
            "only the address's burst reached the database"
        );
        // Requests without any key count against the same bucket, also without a lookup.
        let none = identify(&limiters, Some(&flood), None, |_| async {
            panic!("a request without a key is never looked up")
        })
        .await;
        assert!(is_limited(&none), "{none:?}");
        // Another address has its own bucket.
        let other = database
            .call(&limiters, &client("203.0.113.9"), "pidgr_made-up")
            .await;
        assert!(matches!(other, Err(ApiError::Unauthorized)), "{other:?}");
    }

    #[tokio::test]
    async fn a_valid_key_costs_its_address_nothing_and_once_known_passes_an_exhausted_address() {
        let limiters = limiters(2);
        let database = Database::new();
        let shared = client("192.0.2.1");
        // Its first request is charged to the address and refunded when the key proves valid.
        for _ in 0..10 {
            database.call(&limiters, &shared, VALID).await.unwrap();
        }
        assert_eq!(database.lookups(), 10);
        // The address still has its whole burst for requests without a valid key.
        for attempt in 0..2 {
            let result = database
                .call(&limiters, &shared, &format!("pidgr_bad-{attempt}"))
                .await;
            assert!(matches!(result, Err(ApiError::Unauthorized)), "{result:?}");
        }
        let result = database.call(&limiters, &shared, "pidgr_bad").await;
        assert!(is_limited(&result), "{result:?}");
        // The known key is charged to its own bucket, not the exhausted address.
        database.call(&limiters, &shared, VALID).await.unwrap();

        // Revoked, it is refused, forgotten, and counts against its address from then on.
        database.live.store(false, Ordering::SeqCst);
        let lookups = database.lookups();
        let revoked = database.call(&limiters, &client("192.0.2.2"), VALID).await;
        assert!(
            matches!(revoked, Err(ApiError::Unauthorized)),
            "{revoked:?}"
        );
        let revoked = database.call(&limiters, &shared, VALID).await;
        assert!(is_limited(&revoked), "{revoked:?}");
        assert_eq!(database.lookups(), lookups + 1);
    }
}
