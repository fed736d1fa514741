//! What bounds the API: rate limits per key and per client address (made-up keys past it never
//! reach the database; health and readiness probes are exempt), the header-read timeout, the cap
//! on requests in progress and the request timeout; who may revoke a key; and what a refused
//! webhook URL does not tell. Bounds are tested on extra API servers with small limits,
//! served beside the system's own on the same database and Temporal.

use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use pidgr::Config;
use pidgr_store::Store;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::harness::{Options, System, until};

/// An extra API server on its own port, with settings of its own; stops when dropped.
struct Api {
    addr: SocketAddr,
    http: reqwest::Client,
    _stop: watch::Sender<bool>,
}

impl Api {
    async fn start(system: &System, tweak: impl FnOnce(&mut Config)) -> Result<Api> {
        Self::start_on(system, system.store.clone(), tweak).await
    }

    /// [`Api::start`] over a store of its own (the same database), which the test may close.
    async fn start_on(
        system: &System,
        store: Store,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<Api> {
        let mut config = system.config.clone();
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        config.listen = addr;
        let (stop, mut stopped) = watch::channel(false);
        let client = system.client.clone();
        tokio::spawn(async move {
            pidgr::serve_api(listener, store, client, &config, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        });
        Ok(Api {
            addr,
            http: reqwest::Client::new(),
            _stop: stop,
        })
    }

    /// GET `path` with `key` (none: no Authorization header); the status, the Retry-After
    /// header and the body.
    async fn get(&self, key: Option<&str>, path: &str) -> Result<(StatusCode, Option<u64>, Value)> {
        let mut request = self.http.get(format!("http://{}{path}", self.addr));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        let status = StatusCode::from_u16(response.status().as_u16())?;
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().parse())
            .transpose()?;
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body: Value = serde_json::from_str(&response.text().await?)?;
        if !status.is_success() {
            ensure!(
                content_type.as_deref() == Some("application/problem+json"),
                "{status} answered as {content_type:?}"
            );
        }
        Ok((status, retry_after, body))
    }

    /// Sends `head` (and whatever body part it carries) on a connection of its own and keeps
    /// the connection open.
    async fn raw(&self, head: &str) -> Result<TcpStream> {
        let mut stream = TcpStream::connect(self.addr).await?;
        stream.write_all(head.as_bytes()).await?;
        stream.flush().await?;
        Ok(stream)
    }
}

/// Sends `GET path` until one is refused with 429, at most `tries` times; the refusal.
async fn until_limited(
    api: &Api,
    key: Option<&str>,
    path: &str,
    tries: usize,
) -> Result<(Option<u64>, Value)> {
    for _ in 0..tries {
        let (status, retry_after, body) = api.get(key, path).await?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Ok((retry_after, body));
        }
    }
    anyhow::bail!("{tries} requests to {path} and none was limited")
}

/// Reads what the server sends until it closes the connection.
async fn read_until_closed(stream: &mut TcpStream) -> Result<String> {
    let mut answer = Vec::new();
    // The test's own bound on its await: the server must close long before.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut answer),
    )
    .await
    .context("the server kept the connection open")??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_a_keys_limit_gets_429_while_other_keys_and_addresses_carry_on() -> Result<()>
{
    let system = System::start(Options::default()).await?;
    let other_key = system
        .create(
            "/v1/api-keys",
            json!({ "name": "another", "role_id": "super_admin" }),
        )
        .await?["secret"]
        .as_str()
        .context("a secret")?
        .to_owned();
    let api = Api::start(&system, |c| {
        c.rate_limit_per_key = 1;
        c.rate_limit_per_key_burst = 5;
        c.rate_limit_per_address = 1;
        c.rate_limit_per_address_burst = 5;
    })
    .await?;

    // One key's burst is used up: 429, Retry-After, a problem document.
    let (retry_after, problem) =
        until_limited(&api, Some(&system.key), "/v1/organisation", 50).await?;
    ensure!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    assert_eq!(problem["type"], "https://pidgr.dev/problems/rate-limited");
    assert_eq!(problem["status"], 429);
    assert!(
        problem["detail"].as_str().unwrap_or("").contains("API key"),
        "{problem}"
    );
    // Another key of the same organisation, from the same address, is not affected.
    let (status, _, _) = api.get(Some(&other_key), "/v1/organisation").await?;
    assert_eq!(status, StatusCode::OK);

    // Requests without a valid key count against their address: made-up keys, then none.
    let (retry_after, problem) =
        until_limited(&api, Some("pidgr_made-up-key"), "/v1/organisation", 50).await?;
    ensure!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("client address"),
        "{problem}"
    );
    // Public routes count too.
    until_limited(&api, None, "/v1/openapi.json", 50).await?;
    // Except the probes: a load balancer sharing the address must not see the instance fail.
    for _ in 0..20 {
        for probe in ["/healthz", "/readyz"] {
            let (status, _, body) = api.get(None, probe).await?;
            assert_eq!(status, StatusCode::OK, "{probe}: {body}");
        }
    }
    // A valid key is never limited by its address (many clients share one behind a NAT).
    let (status, _, _) = api.get(Some(&other_key), "/v1/organisation").await?;
    assert_eq!(status, StatusCode::OK);

    // The system's own server, with the default limits, never noticed.
    let (status, _) = system.call(Method::GET, "/v1/organisation", None).await?;
    assert_eq!(status, StatusCode::OK);
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_keys_past_the_address_limit_are_refused_without_reaching_the_database()
-> Result<()> {
    let system = System::start(Options::default()).await?;
    // The extra server's database connections are its own, so the test can cut them.
    let store = Store::connect(&system.config.database_url).await?;
    let api = Api::start_on(&system, store.clone(), |c| {
        c.rate_limit_per_address = 1;
        c.rate_limit_per_address_burst = 5;
    })
    .await?;
    // A valid key, seen once, is charged to its own bucket from then on.
    let (status, _, _) = api.get(Some(&system.key), "/v1/organisation").await?;
    assert_eq!(status, StatusCode::OK);
    let (_, problem) = until_limited(&api, Some("pidgr_made-up-0"), "/v1/organisation", 50).await?;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("client address"),
        "{problem}"
    );

    // From now on any request that asks the database fails (a 500: the pool is closed).
    store.close().await;
    let (status, _, _) = api.get(None, "/readyz").await?;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the store is cut"
    );
    let started = std::time::Instant::now();
    let (mut limited, mut looked_up) = (0u64, 0u64);
    for attempt in 1..=50 {
        let (status, _, body) = api
            .get(
                Some(&format!("pidgr_made-up-{attempt}")),
                "/v1/organisation",
            )
            .await?;
        match status {
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            StatusCode::INTERNAL_SERVER_ERROR => looked_up += 1,
            other => anyhow::bail!("{other}: {body}"),
        }
    }
    // Only what the address's bucket refilled meanwhile (one a second) may reach the database;
    // before the address was charged first, every one of the 50 did.
    let refilled = started.elapsed().as_secs() + 1;
    ensure!(
        looked_up <= refilled,
        "{looked_up} of 50 made-up keys reached the database ({refilled} tokens refilled)"
    );
    assert_eq!(limited + looked_up, 50);
    // The known key is not held back by its address, and still authenticates against the
    // database (which is why it now fails rather than getting a 429).
    let (status, _, body) = api.get(Some(&system.key), "/v1/organisation").await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_requests_over_the_concurrency_cap_refused() -> Result<()> {
    let system = System::start(Options::default()).await?;

    // A client that never finishes its request head is disconnected after the header timeout.
    let api = Api::start(&system, |c| c.header_read_timeout_ms = 300).await?;
    let mut loris = api
        .raw("GET /healthz HTTP/1.1\r\nHost: pidgr\r\nX-Slow: a")
        .await?;
    let answer = read_until_closed(&mut loris).await?;
    assert!(!answer.contains("200 OK"), "{answer}");
    // A complete request on that server is answered as usual.
    let (status, _, _) = api.get(None, "/healthz").await?;
    assert_eq!(status, StatusCode::OK);

    // One slot: a request whose body never finishes holds it, the next is refused at once.
    let api = Api::start(&system, |c| {
        c.max_concurrent_requests = 1;
        c.rate_limit_per_address = 100_000;
        c.rate_limit_per_address_burst = 100_000;
    })
    .await?;
    let slow_post = format!(
        "POST /v1/members HTTP/1.1\r\nHost: pidgr\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"external_id\": ",
        system.key
    );
    let holder = api.raw(&slow_post).await?;
    let (retry_after, problem) = until("the slot to be taken", || async {
        let (status, retry_after, body) = api.get(None, "/v1/openapi.json").await?;
        Ok((status == StatusCode::SERVICE_UNAVAILABLE).then_some((retry_after, body)))
    })
    .await?;
    assert_eq!(retry_after, Some(1));
    assert_eq!(problem["type"], "https://pidgr.dev/problems/overloaded");
    // The probes take no slot: the instance stays in rotation while it is full.
    for probe in ["/healthz", "/readyz"] {
        let (status, _, body) = api.get(None, probe).await?;
        assert_eq!(status, StatusCode::OK, "{probe}: {body}");
    }
    // The slow client gives up; its slot is free again.
    drop(holder);
    until("the slot to be free again", || async {
        let (status, _, _) = api.get(None, "/v1/openapi.json").await?;
        Ok((status == StatusCode::OK).then_some(()))
    })
    .await?;

    // A request that runs past the request timeout is abandoned with a 503 problem.
    let api = Api::start(&system, |c| c.request_timeout_ms = 300).await?;
    let mut stuck = api
        .raw(&slow_post.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n"))
        .await?;
    let answer = read_until_closed(&mut stuck).await?;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("application/problem+json")
            && answer.contains("https://pidgr.dev/problems/timeout"),
        "{answer}"
    );
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_manager_cannot_revoke_keys_stronger_than_its_own_role() -> Result<()> {
    let system = System::start(Options::default()).await?;
    let role = system
        .create(
            "/v1/roles",
            json!({ "name": "Key manager", "permissions": ["api_keys:manage"] }),
        )
        .await?;
    let role_id = role["id"].as_str().context("role id")?;
    let key_for = |role: &str| {
        let role = role.to_owned();
        let system = &system;
        async move {
            let key = system
                .create("/v1/api-keys", json!({ "name": role, "role_id": role }))
                .await?;
            Ok::<_, anyhow::Error>((
                key["id"].as_str().context("key id")?.to_owned(),
                key["secret"].as_str().context("secret")?.to_owned(),
            ))
        }
    };
    let (manager_id, manager) = key_for(role_id).await?;
    let (admin_id, admin) = key_for("super_admin").await?;
    let (peer_id, _) = key_for(role_id).await?;

    let (status, problem) = system
        .call_as(
            Some(&manager),
            Method::DELETE,
            &format!("/v1/api-keys/{admin_id}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["type"], "https://pidgr.dev/problems/forbidden");
    // The Super Admin key still works.
    let (status, _) = system
        .call_as(Some(&admin), Method::GET, "/v1/organisation", None)
        .await?;
    assert_eq!(status, StatusCode::OK);
    // A key no stronger than the manager's own role may be revoked by it.
    let (status, body) = system
        .call_as(
            Some(&manager),
            Method::DELETE,
            &format!("/v1/api-keys/{peer_id}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // And the Super Admin may revoke the manager's.
    let (status, _) = system
        .call_as(
            Some(&admin),
            Method::DELETE,
            &format!("/v1/api-keys/{manager_id}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    system.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_webhook_url_does_not_say_what_its_host_resolves_to() -> Result<()> {
    let resolver = pidgr_outbound::StaticResolver::new()
        .with("hooks.internal.example.com", ["10.1.2.3".parse()?])
        .with("metadata.example.com", ["169.254.169.254".parse()?]);
    let system = System::start(Options {
        resolver: Some(pidgr::Resolver(std::sync::Arc::new(resolver))),
        ..Options::default()
    })
    .await?;
    for (url, address) in [
        ("https://hooks.internal.example.com/pidgr", "10.1.2.3"),
        ("https://metadata.example.com/latest", "169.254.169.254"),
    ] {
        let (status, answer) = system
            .call(
                Method::PUT,
                "/v1/webhook-channel",
                Some(json!({ "url": url })),
            )
            .await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["errors"][0]["pointer"], "/url");
        let text = answer.to_string();
        assert!(text.contains("private or reserved address"), "{text}");
        assert!(!text.contains(address), "{text}");
    }
    system.shutdown().await;
    Ok(())
}
