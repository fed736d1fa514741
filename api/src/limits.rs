//! Bounds on what clients can make the server do: rate limits per API key and per client
//! address, a cap on requests in progress, and a time limit per request. The header-read
//! timeout lives with the connection handling in [`crate::server`].
//!
//! Rate limits are token buckets: each key (or address) may make `burst` requests at once and
//! `per_second` sustained. A request over the limit is answered 429 with `Retry-After`. Only
//! requests without a valid key count against their address, so many clients behind one
//! address (a NAT, the mobile backend's egress) are limited by their keys, never by each other;
//! what counts per address is what an unauthenticated flood consists of.
//!
//! The address is charged before the database is asked about a key this server has not seen
//! authenticate ([`Limiters::known_key`]), and refunded once the key proves valid: an address
//! over its limit is answered 429 without a lookup, however many made-up keys it sends.
//!
//! Health and readiness probes ([`is_probe`]) are exempt from the per-address limit and the
//! concurrency cap: behind a load balancer every client shares the balancer's address, and
//! clients sending bad keys must not get the instance taken out of rotation.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::ApiError;

/// A token bucket's shape: `burst` requests at once, refilled at `per_second`. A `per_second`
/// of 0 turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// What the server accepts before it pushes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Requests per API key (authenticated requests).
    pub per_key: Rate,
    /// Requests per client address that carry no valid key (public routes, failed
    /// authentication).
    pub per_address: Rate,
    /// Requests in progress at once; more are answered 503 with `Retry-After` straight away.
    pub max_concurrent_requests: usize,
    /// A request still running after this long is abandoned with a 503.
    pub request_timeout: Duration,
    /// A connection that has not sent a complete request head this long after it opened (or
    /// after its previous answer) is closed.
    pub header_read_timeout: Duration,
}

impl Default for ServerLimits {
    /// Far above what the mobile backend's ACK traffic needs at the benchmark's rates (about
    /// 1,500 ACKs a second from one key); see the README's configuration table.
    fn default() -> Self {
        ServerLimits {
            per_key: Rate {
                per_second: 5_000,
                burst: 10_000,
            },
            per_address: Rate {
                per_second: 20,
                burst: 100,
            },
            max_concurrent_requests: 1_024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The routes a load balancer or orchestrator polls. They take no key, and are exempt from the
/// per-address limit and the concurrency cap.
pub(crate) fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// The live state of [`ServerLimits`], shared by every request.
pub struct Limiters {
    per_key: RateLimiter<String>,
    per_address: RateLimiter<IpAddr>,
    known_keys: KnownKeys,
    slots: Arc<Semaphore>,
    request_timeout: Duration,
    clock: fn() -> Instant,
}

impl Limiters {
    pub fn new(limits: &ServerLimits) -> Self {
        Self::with_clock(limits, Instant::now)
    }

    /// Limiters whose buckets read the time from `clock` (tests stop it).
    pub(crate) fn with_clock(limits: &ServerLimits, clock: fn() -> Instant) -> Self {
        Limiters {
            per_key: RateLimiter::new(limits.per_key),
            per_address: RateLimiter::new(limits.per_address),
            known_keys: KnownKeys::default(),
            slots: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
            request_timeout: limits.request_timeout,
            clock,
        }
    }

    /// Counts one request of the API key `key_id`.
    pub(crate) fn charge_key(&self, key_id: &str) -> Result<(), ApiError> {
        self.per_key
            .check_at(key_id, (self.clock)())
            .map_err(|wait| too_many("API key", wait))
    }

    /// Counts one request without a valid key from the client at `address` (none when the
    /// server did not say, as in tests that call the router directly).
    pub(crate) fn charge_address(
        &self,
        address: Option<&ConnectInfo<SocketAddr>>,
    ) -> Result<(), ApiError> {
        let Some(ConnectInfo(address)) = address else {
            return Ok(());
        };
        self.per_address
            .check_at(&client_id(address.ip()), (self.clock)())
            .map_err(|wait| too_many("client address", wait))
    }

    /// Gives back what [`Limiters::charge_address`] took, for a request whose key turned out
    /// to be valid: a valid key's requests never count against their address.
    pub(crate) fn refund_address(&self, address: Option<&ConnectInfo<SocketAddr>>) {
        if let Some(ConnectInfo(address)) = address {
            self.per_address.refund(&client_id(address.ip()));
        }
    }

    /// The key id of `secret` if it authenticated on this server before (and was not seen
    /// failing since). Only decides which bucket a request is charged to before the database
    /// is asked; the database still decides whether the key is valid.
    pub(crate) fn known_key(&self, secret: &str) -> Option<String> {
        self.known_keys.lock().get(&fingerprint(secret)).cloned()
    }

    /// Notes that `secret` authenticated as `key_id`.
    pub(crate) fn remember_key(&self, secret: &str, key_id: &str) {
        let mut known = self.known_keys.lock();
        if known.len() >= KNOWN_KEYS_CAP {
            // Forgetting costs a known key one request charged to its address; simpler than
            // tracking which entry is oldest, and only a server with that many live keys pays.
            known.clear();
        }
        known.insert(fingerprint(secret), key_id.to_owned());
    }

    /// Notes that `secret` no longer authenticates (its key was revoked).
    pub(crate) fn forget_key(&self, secret: &str) {
        self.known_keys.lock().remove(&fingerprint(secret));
    }
}

/// Keys known to authenticate, by a digest of their secret (the secret itself is never kept).
/// Only secrets that authenticated get in, so a flood of made-up keys cannot grow it.
#[derive(Default)]
struct KnownKeys(Mutex<HashMap<[u8; 32], String>>);

/// More live keys than one server is expected to see; past it the set starts afresh.
const KNOWN_KEYS_CAP: usize = 10_000;

impl KnownKeys {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn fingerprint(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn too_many(scope: &'static str, wait: Duration) -> ApiError {
    ApiError::TooManyRequests {
        scope,
        retry_after_secs: retry_after_secs(wait),
    }
}

/// `Retry-After` is in whole seconds; never 0, which would invite an immediate retry.
fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Whom a client address stands for: an IPv6 client usually holds a whole /64, so it counts as
/// one; an IPv4-mapped IPv6 address counts as its IPv4 address.
fn client_id(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// The outermost layer: a request either gets one of the configured slots or is answered 503
/// with `Retry-After` at once. Refusing rather than queueing keeps an overloaded server's
/// memory and latency flat: a queue would only hold requests whose clients have timed out by
/// the time they run, and clients that back off on 503 (the mobile backend retries ACKs)
/// recover sooner.
pub(crate) async fn limit_concurrency(
    State(limiters): State<Arc<Limiters>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if is_probe(request.uri().path()) {
        return Ok(next.run(request).await);
    }
    let _slot = limiters
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded {
            retry_after_secs: 1,
        })?;
    Ok(next.run(request).await)
}

/// Abandons a request that runs longer than the configured limit. What it wrote stays written;
/// every write is idempotent or guarded, so the client's retry converges.
pub(crate) async fn limit_duration(
    State(limiters): State<Arc<Limiters>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    tokio::time::timeout(limiters.request_timeout, next.run(request))
        .await
        .map_err(|_| ApiError::TimedOut(limiters.request_timeout.as_millis()))
}

/// Token buckets by key, in shards so that concurrent requests rarely wait on one lock. Idle
/// entries are dropped: a bucket that has refilled completely is the same as no bucket, so
/// forgetting it changes nothing, and memory stays proportional to the keys seen in the last
/// `burst / per_second` seconds.
pub(crate) struct RateLimiter<K> {
    rate: Rate,
    hasher: RandomState,
    shards: Box<[Mutex<Shard<K>>]>,
}

const SHARDS: usize = 16;
/// A shard is swept of idle entries whenever it grows past this many, or past twice what the
/// previous sweep left, whichever is more (so sweeping costs O(1) per insert on average).
const SWEEP_AT_LEAST: usize = 1_024;

struct Shard<K> {
    buckets: HashMap<K, Bucket>,
    sweep_at: usize,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl<K: Hash + Eq> RateLimiter<K> {
    pub(crate) fn new(rate: Rate) -> Self {
        RateLimiter {
            rate: Rate {
                per_second: rate.per_second,
                burst: rate.burst.max(1),
            },
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        sweep_at: SWEEP_AT_LEAST,
                    })
                })
                .collect(),
        }
    }

    /// Gives a token back to `key`'s bucket (never above its burst). A key without a bucket
    /// has a full one already.
    pub(crate) fn refund<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.rate.per_second == 0 {
            return;
        }
        let mut shard = self.shard(key);
        if let Some(bucket) = shard.buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(f64::from(self.rate.burst));
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K>> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a token for `key` as of `now`, or says how long until one is there.
    pub(crate) fn check_at<Q>(&self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.rate.per_second == 0 {
            return Ok(());
        }
        let mut shard = self.shard(key);
        let rate = self.rate;
        if let Some(bucket) = shard.buckets.get_mut(key) {
            return take(bucket, rate, now);
        }
        if shard.buckets.len() >= shard.sweep_at {
            shard
                .buckets
                .retain(|_, bucket| !is_full(bucket, rate, now));
            shard.sweep_at = (2 * shard.buckets.len()).max(SWEEP_AT_LEAST);
        }
        match shard.buckets.entry(key.to_owned()) {
            Entry::Occupied(mut entry) => take(entry.get_mut(), rate, now),
            Entry::Vacant(entry) => take(
                entry.insert(Bucket {
                    tokens: f64::from(rate.burst),
                    updated: now,
                }),
                rate,
                now,
            ),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().buckets.len())
            .sum()
    }
}

fn refill(bucket: &mut Bucket, rate: Rate, now: Instant) {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    bucket.tokens =
        (bucket.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst));
    bucket.updated = now.max(bucket.updated);
}

fn take(bucket: &mut Bucket, rate: Rate, now: Instant) -> Result<(), Duration> {
    refill(bucket, rate, now);
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / f64::from(rate.per_second),
        ))
    }
}

fn is_full(bucket: &Bucket, rate: Rate, now: Instant) -> bool {
    let mut bucket = *bucket;
    refill(&mut bucket, rate, now);
    bucket.tokens >= f64::from(rate.burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 2,
        burst: 3,
    };

    #[test]
    fn a_burst_passes_then_the_sustained_rate_and_no_more() {
        let limiter = RateLimiter::<String>::new(RATE);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at("k", t0), Ok(()));
        }
        let wait = limiter.check_at("k", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.check_at("k", t1), Ok(()));
        assert!(limiter.check_at("k", t1).is_err());
        // Another key has its own bucket.
        assert_eq!(limiter.check_at("other", t1), Ok(()));
    }

    #[test]
    fn idle_buckets_are_forgotten_and_busy_ones_kept() {
        let limiter = RateLimiter::<String>::new(RATE);
        let t0 = Instant::now();
        let keys = SHARDS * SWEEP_AT_LEAST * 2;
        for key in 0..keys {
            limiter.check_at(&key.to_string(), t0).unwrap();
        }
        assert_eq!(limiter.len(), keys, "all still refilling");
        // Two seconds on every bucket is full again; new keys sweep the idle ones away.
        let later = t0 + Duration::from_secs(2);
        let busy = "busy".to_owned();
        for _ in 0..3 {
            limiter.check_at(&busy, later).unwrap();
        }
        for key in 0..keys {
            limiter.check_at(&format!("new-{key}"), later).unwrap();
        }
        // Without forgetting there would be twice as many (and one).
        assert!(limiter.len() < keys * 3 / 2, "{} entries", limiter.len());
        assert!(
            limiter.check_at(&busy, later).is_err(),
            "a busy bucket is kept"
        );
    }

    #[test]
    fn a_refund_gives_one_token_back_and_never_more_than_the_burst() {
        let limiter = RateLimiter::<String>::new(RATE);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check_at("k", t0).unwrap();
        }
        limiter.refund("k");
        assert_eq!(limiter.check_at("k", t0), Ok(()));
        assert!(limiter.check_at("k", t0).is_err());
        // Refunds past a full bucket are lost.
        for _ in 0..10 {
            limiter.refund("other");
            limiter.refund("k");
        }
        for _ in 0..3 {
            assert_eq!(limiter.check_at("k", t0), Ok(()));
        }
        assert!(limiter.check_at("k", t0).is_err());
    }

    #[test]
    fn only_health_and_readiness_are_probes() {
        assert!(is_probe("/healthz") && is_probe("/readyz"));
        assert!(!is_probe("/v1/openapi.json") && !is_probe("/healthz/x"));
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let limiter = RateLimiter::<String>::new(Rate {
            per_second: 0,
            burst: 0,
        });
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(limiter.check_at("k", t0), Ok(()));
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_never_says_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
    }

    #[test]
    fn an_ipv6_client_counts_as_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_id(a), client_id(b));
        assert_ne!(client_id(a), client_id(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_id(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
