//! The one SSRF-safe HTTP client every outbound POST in Pidgr goes through (the rules are in the README, "SSRF rules").
//!
//! Webhook URLs are typed in by organisation admins, so a careless or hostile URL must not let
//! Pidgr reach into its own network (cloud metadata, databases, admin ports). Every call to
//! [`OutboundClient::post_json`]:
//!
//! 1. runs the static URL check again ([`check_url`]: scheme, userinfo, literal addresses in
//!    every spelling, `localhost` names), even if the URL was checked when it was saved, because
//!    the policy or the rules may have changed since;
//! 2. for a literal address, connects to exactly that address;
//! 3. for a host name, resolves it through the client's [`NameResolver`], applies
//!    [`classify_ip`] to **every** address of the answer and refuses the call if any one is
//!    forbidden (a mixed answer is what a rebinding attack looks like, so picking the "good"
//!    address would be the wrong kindness);
//! 4. connects only to those checked addresses: the HTTP library is given a resolver that knows
//!    just this one name and these addresses and fails for anything else, so there is no second
//!    DNS lookup that could be rebound between check and connect. The URL keeps the original host
//!    name, so the `Host` header and the TLS server name (SNI, certificate check) are unchanged.
//!    Connections are pooled per checked destination — scheme, host, port and the exact set of
//!    checked addresses — so a send reuses a connection only when this send's own check yielded
//!    the same addresses the connection was made to; a name that now resolves differently gets a
//!    fresh HTTP client (and fresh connections) for its new, checked addresses;
//! 5. never follows redirects (a redirect could point anywhere, past every check above); a 3xx
//!    answer is a non-retryable [`OutboundError::Status`];
//! 6. ignores proxy settings from the environment, uses rustls with the `ring` provider and the
//!    platform certificate verifier, bounds the whole exchange by the given timeout and reads at
//!    most `max_response_bytes` of the answer.
//!
//! Header values are secrets (they typically carry tokens): they are marked sensitive, never
//! logged and never put into error messages.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pidgr_workflows::definition::{
    CheckedUrl, Host, RESERVED_HEADERS, UrlPolicy, UrlRejection, check_url, classify_ip,
};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

pub mod channel_event;
mod error;
mod redact;
mod resolver;

pub use error::OutboundError;
pub use redact::redacted_url;
pub use resolver::{NameResolver, ResolveFuture, StaticResolver, SystemResolver};

/// The default limit on how much of an answer is read: 64 KiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The most characters of an error answer kept in [`OutboundError::Status`].
pub const MAX_EXCERPT_CHARS: usize = 200;

/// Checked destinations whose HTTP client (and its idle connections) is kept; beyond that the
/// least recently used one is dropped, so an organisation cycling through URLs cannot grow the
/// pool without bound.
pub const MAX_POOLED_DESTINATIONS: usize = 256;

/// How long an idle connection, and a destination nobody sent to, is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections kept per destination: enough for the webhook channel's concurrent sends.
const MAX_IDLE_PER_DESTINATION: usize = 64;

/// How the client behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboundConfig {
    /// Which destinations are allowed. [`UrlPolicy::STRICT`] in production;
    /// [`UrlPolicy::DEVELOPMENT`] additionally allows plain HTTP and loopback receivers.
    pub policy: UrlPolicy,
    /// The most bytes of an answer that are read; the rest is never downloaded.
    pub max_response_bytes: usize,
}

impl Default for OutboundConfig {
    /// Strict policy, 64 KiB answers.
    fn default() -> Self {
        OutboundConfig {
            policy: UrlPolicy::STRICT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// A successful (2xx) answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundResponse {
    pub status: u16,
    /// The answer's body, cut off after `max_response_bytes`.
    pub body: Vec<u8>,
    /// From the start of the call (name resolution included) to the end of reading the body.
    pub elapsed: Duration,
}

/// The SSRF-safe client. Cheap to clone; clones share the resolver and TLS configuration.
#[derive(Clone)]
pub struct OutboundClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: OutboundConfig,
    resolver: Arc<dyn NameResolver>,
    /// rustls configuration (ring provider, platform verifier, ALPN h2 + http/1.1). Cloning it is
    /// cheap and keeps the shared TLS session cache, so resumption works across requests.
    tls: rustls::ClientConfig,
    /// One HTTP client per checked destination, each pinned to that destination's addresses.
    clients: Mutex<ClientCache<reqwest::Client>>,
}

impl fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl OutboundClient {
    /// A client that resolves names with the operating system's resolver.
    ///
    /// Fails when the TLS configuration cannot be built, for example when the system has no CA
    /// certificates; better to fail at start-up than at the first webhook.
    pub fn new(config: OutboundConfig) -> Result<Self, OutboundError> {
        Self::with_resolver(config, Arc::new(SystemResolver))
    }

    /// A client that resolves names with `resolver` (tests inject names this way).
    pub fn with_resolver(
        config: OutboundConfig,
        resolver: Arc<dyn NameResolver>,
    ) -> Result<Self, OutboundError> {
        let client = OutboundClient {
            inner: Arc::new(Inner {
                config,
                resolver,
                tls: tls_config()?,
                clients: Mutex::new(ClientCache::new(MAX_POOLED_DESTINATIONS, POOL_IDLE_TIMEOUT)),
            }),
        };
        // Build one throw-away HTTP client now, so that a configuration the HTTP library
        // rejects (for instance a TLS configuration of a mismatched rustls version) shows at
        // start-up rather than at the first send.
        client.http_client(None)?;
        Ok(client)
    }

    /// The SSRF policy this client enforces.
    pub fn policy(&self) -> UrlPolicy {
        self.inner.config.policy
    }

    /// POSTs `body` (already-serialized JSON, sent with `Content-Type: application/json`) and
    /// the extra `headers` to `url`.
    ///
    /// `Ok` only for a 2xx answer; any other status is [`OutboundError::Status`]. `timeout`
    /// bounds the whole call: name resolution, connecting, sending and reading the answer.
    /// The headers must not include the ones Pidgr sets itself (`Host`, `Content-Type`,
    /// `Content-Length`, `Transfer-Encoding`, `Connection`, `Upgrade`); such a header, or an
    /// invalid name or value, fails the call with [`OutboundError::Other`] before anything is
    /// sent.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &BTreeMap<String, String>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<OutboundResponse, OutboundError> {
        let started = Instant::now();
        let checked = check_url(url, &self.inner.config.policy).map_err(|rejection| {
            tracing::warn!(reason = %rejection, "outbound POST blocked");
            OutboundError::BlockedUrl(rejection)
        })?;
        let headers = header_map(headers)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let result = self
            .send(&checked, headers, body, timeout, deadline)
            .await
            .map(|(status, body)| OutboundResponse {
                status,
                body,
                elapsed: started.elapsed(),
            });
        match &result {
            Ok(response) => tracing::debug!(
                host = %checked.host,
                port = checked.port,
                status = response.status,
                elapsed_ms = response.elapsed.as_millis() as u64,
                "outbound POST answered"
            ),
            Err(error @ OutboundError::BlockedAddress { .. }) => tracing::warn!(
                host = %checked.host,
                port = checked.port,
                reason = %error,
                detail = error.blocked_detail().unwrap_or_default(),
                "outbound POST blocked"
            ),
            Err(error) => tracing::debug!(
                host = %checked.host,
                port = checked.port,
                error = %error,
                "outbound POST failed"
            ),
        }
        result
    }

    /// The checks of a send without the send: the static URL rules and, for a host name, the
    /// rules on every address it resolves to now. Used when a URL is saved, so that a name that
    /// already points somewhere forbidden is refused at once (every send checks again).
    pub async fn check_destination(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Result<CheckedUrl, OutboundError> {
        let checked = check_url(url, &self.inner.config.policy).map_err(|rejection| {
            tracing::warn!(reason = %rejection, "URL refused when saved");
            OutboundError::BlockedUrl(rejection)
        })?;
        if let Host::Domain(name) = &checked.host {
            let resolved = tokio::time::timeout(timeout, self.checked_addrs(name, checked.port))
                .await
                .unwrap_or_else(|_| {
                    Err(OutboundError::Dns {
                        host: name.clone(),
                        message: format!("no answer within {} s", timeout.as_secs()),
                    })
                });
            if let Err(error @ OutboundError::BlockedAddress { .. }) = &resolved {
                tracing::warn!(
                    host = %name,
                    reason = %error,
                    detail = error.blocked_detail().unwrap_or_default(),
                    "URL refused when saved"
                );
            }
            resolved?;
        }
        Ok(checked)
    }

    /// Resolves, checks, connects, sends and reads, all before `deadline`.
    async fn send(
        &self,
        checked: &CheckedUrl,
        headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<(u16, Vec<u8>), OutboundError> {
        let timed_out = |_| OutboundError::TimedOut(timeout);
        let pinned = match &checked.host {
            Host::Ip(_) => None,
            Host::Domain(name) => {
                let addrs =
                    tokio::time::timeout_at(deadline, self.checked_addrs(name, checked.port))
                        .await
                        .map_err(timed_out)??;
                Some(PinnedName {
                    name: name.clone(),
                    addrs,
                })
            }
        };
        let url = request_url(checked)?;
        let client = self.pooled_client(checked, pinned)?;
        let request = client
            .post(url)
            .headers(headers)
            .body(body)
            .timeout(timeout);
        let response = tokio::time::timeout_at(deadline, request.send())
            .await
            .map_err(timed_out)?
            .map_err(|error| from_reqwest(error, timeout))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            let body = tokio::time::timeout_at(
                deadline,
                read_limited(response, self.inner.config.max_response_bytes),
            )
            .await
            .map_err(timed_out)?
            .map_err(|error| from_reqwest(error, timeout))?;
            Ok((status, body))
        } else {
            // The excerpt is a courtesy for logs: a receiver that stalls or breaks while
            // sending it does not turn its clear status answer into a timeout.
            let limit = self
                .inner
                .config
                .max_response_bytes
                .min(4 * MAX_EXCERPT_CHARS);
            let body = tokio::time::timeout_at(deadline, read_limited(response, limit))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            Err(OutboundError::Status {
                status,
                body_excerpt: excerpt(&body),
            })
        }
    }

    /// Resolves `name` and returns its addresses, each with the URL's port, if every one of
    /// them may be contacted. Runs at every send, so a name that was harmless when the URL was
    /// saved and has been re-pointed since is caught.
    async fn checked_addrs(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, OutboundError> {
        let dns_error = |message: String| OutboundError::Dns {
            host: name.to_string(),
            message,
        };
        let answer = self
            .inner
            .resolver
            .resolve(name, port)
            .await
            .map_err(|error| dns_error(error.to_string()))?;
        let mut addrs: Vec<SocketAddr> = Vec::with_capacity(answer.len());
        for addr in answer {
            let ip = addr.ip();
            if let Err(reason) = classify_ip(ip, &self.inner.config.policy) {
                return Err(OutboundError::BlockedAddress {
                    host: name.to_string(),
                    ip,
                    reason,
                });
            }
            let addr = SocketAddr::new(ip, port);
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(dns_error("the name has no addresses".to_string()));
        }
        Ok(addrs)
    }

    /// The HTTP client for this checked destination, built on first use and kept (with its
    /// idle connections) while it is used. The key holds every checked address, so a client is
    /// shared only by sends whose own check produced exactly the addresses its resolver knows:
    /// its connections can only be to addresses that passed this send's check.
    fn pooled_client(
        &self,
        checked: &CheckedUrl,
        pinned: Option<PinnedName>,
    ) -> Result<reqwest::Client, OutboundError> {
        let mut addrs = pinned
            .as_ref()
            .map(|pinned| pinned.addrs.clone())
            .unwrap_or_default();
        addrs.sort();
        let key = DestinationKey {
            scheme: checked.scheme.clone(),
            host: checked.host.to_string(),
            port: checked.port,
            addrs,
        };
        let mut clients = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        clients.get_or_try_insert(key, Instant::now(), || self.http_client(pinned))
    }

    /// An HTTP client whose resolver knows only `pinned` (nothing at all for a literal address,
    /// which the connector uses directly).
    fn http_client(&self, pinned: Option<PinnedName>) -> Result<reqwest::Client, OutboundError> {
        reqwest::Client::builder()
            .tls_backend_preconfigured(self.inner.tls.clone())
            .dns_resolver(Arc::new(PinnedResolve(pinned)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(!self.inner.config.policy.allow_insecure_loopback)
            .referer(false)
            .pool_max_idle_per_host(MAX_IDLE_PER_DESTINATION)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("Pidgr/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| {
                OutboundError::Other(format!(
                    "the HTTP client could not be set up: {}",
                    chain(&error)
                ))
            })
    }
}

/// The rustls configuration: the `ring` provider chosen explicitly (the build has no default
/// provider), certificates checked by the platform verifier, HTTP/2 offered before HTTP/1.1.
pub fn tls_config() -> Result<rustls::ClientConfig, OutboundError> {
    use rustls_platform_verifier::BuilderVerifierExt;

    let tls_error = |error: rustls::Error| {
        OutboundError::Other(format!(
            "the TLS configuration could not be set up: {error}"
        ))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_platform_verifier()
        .map_err(tls_error)?
        .with_no_client_auth();
    // A preconfigured rustls configuration is used as it is, so ALPN must be set here.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What a pooled HTTP client is for: a destination and the exact checked addresses its
/// resolver answers with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct DestinationKey {
    scheme: String,
    /// The checked host as the request URL spells it (a literal address decoded).
    host: String,
    port: u16,
    /// Sorted; empty for a literal address.
    addrs: Vec<SocketAddr>,
}

/// A bounded map of checked destination to HTTP client: entries unused for `idle` are dropped,
/// and when it is full the least recently used one makes room.
struct ClientCache<C> {
    max: usize,
    idle: Duration,
    entries: HashMap<DestinationKey, (C, Instant)>,
}

impl<C: Clone> ClientCache<C> {
    fn new(max: usize, idle: Duration) -> Self {
        ClientCache {
            max: max.max(1),
            idle,
            entries: HashMap::new(),
        }
    }

    fn get_or_try_insert<E>(
        &mut self,
        key: DestinationKey,
        now: Instant,
        build: impl FnOnce() -> Result<C, E>,
    ) -> Result<C, E> {
        if let Some((client, used)) = self.entries.get_mut(&key) {
            *used = now;
            return Ok(client.clone());
        }
        let idle = self.idle;
        self.entries
            .retain(|_, (_, used)| now.saturating_duration_since(*used) < idle);
        if self.entries.len() >= self.max
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone())
        {
            self.entries.remove(&oldest);
        }
        let client = build()?;
        self.entries.insert(key, (client.clone(), now));
        Ok(client)
    }
}

/// The one name a pooled HTTP client may resolve, and its checked addresses.
struct PinnedName {
    name: String,
    addrs: Vec<SocketAddr>,
}

/// The HTTP library's resolver: answers the pinned name with its checked addresses and refuses
/// every other lookup, so the library can never fall back to system DNS. Literal addresses never
/// reach a resolver (the connector uses them directly).
struct PinnedResolve(Option<PinnedName>);

impl reqwest::dns::Resolve for PinnedResolve {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let answer: Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> =
            match &self.0 {
                Some(pinned) if pinned.name == name.as_str() => {
                    Ok(Box::new(pinned.addrs.clone().into_iter()))
                }
                _ => Err(format!(
                    "the name {} was not checked, so it is not looked up",
                    name.as_str()
                )
                .into()),
            };
        Box::pin(std::future::ready(answer))
    }
}

/// The URL handed to the HTTP library: rebuilt from the checked parts (so a literal address is
/// in its decoded form), and verified to parse back to the same host and port, so that the
/// library cannot read the address differently from the check.
fn request_url(checked: &CheckedUrl) -> Result<reqwest::Url, OutboundError> {
    let differs = || {
        OutboundError::BlockedUrl(UrlRejection::Malformed(
            "is read differently by the HTTP client than by the address check",
        ))
    };
    let url = reqwest::Url::parse(&checked.normalized()).map_err(|_| differs())?;
    let host = url.host_str().ok_or_else(differs)?;
    let parsed = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Host::Ip(IpAddr::V6(v6.parse::<Ipv6Addr>().map_err(|_| differs())?))
    } else if let Ok(v4) = host.parse::<Ipv4Addr>() {
        Host::Ip(IpAddr::V4(v4))
    } else {
        Host::Domain(host.to_string())
    };
    if parsed != checked.host || url.port_or_known_default() != Some(checked.port) {
        return Err(differs());
    }
    Ok(url)
}

/// The caller's headers as a header map, values marked sensitive (kept out of `Debug` output
/// and out of HTTP/2 header compression tables), plus `Content-Type: application/json`.
fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, OutboundError> {
    let mut map = HeaderMap::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(OutboundError::Other(format!(
                "the header {name:?} is set by Pidgr and cannot be configured"
            )));
        }
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| OutboundError::Other(format!("the header name {name:?} is not valid")))?;
        // Never quote the value: header values are secrets.
        let mut header_value = HeaderValue::from_str(value).map_err(|_| {
            OutboundError::Other(format!(
                "the value of the header {name:?} is not valid (it contains line breaks or \
                 other characters a header cannot carry)"
            ))
        })?;
        header_value.set_sensitive(true);
        map.append(header_name, header_value);
    }
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(map)
}

/// Reads the body up to `limit` bytes, then stops; the rest is never downloaded.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    while body.len() < limit {
        let Some(chunk) = response.chunk().await? else {
            break;
        };
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(body)
}

/// At most [`MAX_EXCERPT_CHARS`] characters of an answer, control characters replaced by
/// spaces so a receiver cannot forge log lines.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(MAX_EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Maps a transport error. The URL is dropped from the message (its path or query may carry a
/// token); the cause chain is kept, since "error sending request" alone explains nothing.
fn from_reqwest(error: reqwest::Error, timeout: Duration) -> OutboundError {
    let error = error.without_url();
    // reqwest's own message ("error sending request") says nothing the causes don't.
    let message = match std::error::Error::source(&error) {
        Some(cause) => chain(cause),
        None => chain(&error),
    };
    if error.is_timeout() {
        OutboundError::TimedOut(timeout)
    } else if error.is_connect() {
        OutboundError::Connect(message)
    } else {
        OutboundError::Other(message)
    }
}

/// An error and its causes, joined with ": ", repeated messages left out.
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16, addrs: &[&str]) -> DestinationKey {
        DestinationKey {
            scheme: "https".into(),
            host: "hooks.example.com".into(),
            port,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_destination_is_built_once_and_another_address_set_is_another_destination() {
        let mut cache = ClientCache::new(8, Duration::from_secs(90));
        let now = Instant::now();
        let mut built = 0;
        let mut get = |cache: &mut ClientCache<u32>, key| {
            cache
                .get_or_try_insert(key, now, || {
                    built += 1;
                    Ok::<_, ()>(built)
                })
                .unwrap()
        };
        let first = get(&mut cache, key(443, &["93.184.215.14:443"]));
        assert_eq!(get(&mut cache, key(443, &["93.184.215.14:443"])), first);
        let moved = get(&mut cache, key(443, &["93.184.215.15:443"]));
        assert_ne!(moved, first, "a re-pointed name never shares connections");
        let grown = get(
            &mut cache,
            key(443, &["93.184.215.14:443", "93.184.215.15:443"]),
        );
        assert_ne!(grown, first);
        assert_ne!(get(&mut cache, key(8443, &["93.184.215.14:443"])), first);
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_idle_destinations() {
        let start = Instant::now();
        let mut cache = ClientCache::new(2, Duration::from_secs(90));
        let put = |cache: &mut ClientCache<u16>, port: u16, at: Instant| {
            cache
                .get_or_try_insert(key(port, &[]), at, || Ok::<_, ()>(port))
                .unwrap();
        };
        put(&mut cache, 1, start);
        put(&mut cache, 2, start + Duration::from_secs(1));
        put(&mut cache, 1, start + Duration::from_secs(2)); // used again: now the newest
        put(&mut cache, 3, start + Duration::from_secs(3)); // full: 2 is the oldest
        let mut ports: Vec<u16> = cache.entries.keys().map(|k| k.port).collect();
        ports.sort();
        assert_eq!(ports, [1, 3]);
        put(&mut cache, 4, start + Duration::from_secs(200)); // 1 and 3 idled out
        assert_eq!(
            cache.entries.keys().map(|k| k.port).collect::<Vec<_>>(),
            [4]
        );
    }

    #[test]
    fn excerpt_is_short_and_single_line() {
        let body = format!("line one\nline two\r\n{}", "é".repeat(500));
        let text = excerpt(body.as_bytes());
        assert!(text.chars().count() <= MAX_EXCERPT_CHARS);
        assert!(!text.contains(['\n', '\r']));
        assert!(text.starts_with("line one line two"));
        assert_eq!(excerpt(b"  \n"), "");
        assert_eq!(excerpt(&[0xff, b'o', b'k']), "\u{fffd}ok");
    }

    #[test]
    fn request_url_keeps_the_checked_host() {
        let policy = UrlPolicy::STRICT;
        for (given, want) in [
            ("https://0x8.0x8.010.8/a?b=c", "https://8.8.8.8/a?b=c"),
            (
                "https://Hooks.Example.COM.:8443/x",
                "https://hooks.example.com:8443/x",
            ),
            ("https://[::ffff:8.8.8.8]/", "https://[::ffff:808:808]/"),
            (
                "https://[2606:4700::1111]:443/",
                "https://[2606:4700::1111]/",
            ),
        ] {
            let checked = check_url(given, &policy).unwrap();
            assert_eq!(request_url(&checked).unwrap().as_str(), want, "{given}");
        }
    }

    #[test]
    fn reserved_and_invalid_headers_are_refused_without_quoting_values() {
        for (name, value) in [
            ("Host", "elsewhere.example"),
            ("content-type", "text/plain"),
            ("Transfer-Encoding", "chunked"),
            ("bad name", "x"),
            ("X-Token", "secret\r\nX-Injected: 1"),
        ] {
            let headers = BTreeMap::from([(name.to_string(), value.to_string())]);
            let error = header_map(&headers).unwrap_err();
            assert!(matches!(error, OutboundError::Other(_)), "{name}");
            assert!(!error.to_string().contains(value), "{name}: {error}");
        }
        let headers = BTreeMap::from([("Authorization".to_string(), "Bearer s3cret".to_string())]);
        let map = header_map(&headers).unwrap();
        assert!(map["authorization"].is_sensitive());
        assert!(!format!("{map:?}").contains("s3cret"));
        assert_eq!(map[CONTENT_TYPE], "application/json");
    }
}
