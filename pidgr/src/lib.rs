//! The pidgr binary's wiring: configuration (the only place that reads the environment), and
//! functions that start the API and the worker. The end-to-end tests call these too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use pidgr_activities::{ActivitySettings, CampaignActivitiesImpl, PushSender};
use pidgr_api::{ApiSettings, AppState, CodecToken, Rate, ServerLimits};
use pidgr_outbound::{NameResolver, OutboundClient, OutboundConfig};
use pidgr_push::{PushClient, PushEndpoints, PushSettings};
use pidgr_store::{Keyring, SecretKey, Store};
use pidgr_workflows::definition::UrlPolicy;
use pidgr_workflows::{CampaignWorkflow, EngineSettings};
use temporalio_client::envconfig::LoadClientConfigProfileOptions;
use temporalio_client::{Client, ClientOptions, Connection};
use temporalio_common::data_converters::{
    DataConverter, DefaultFailureConverter, PayloadConverter,
};
use temporalio_common::telemetry::metrics::CoreMeter;
use temporalio_common::telemetry::{
    PrometheusExporterOptions, TelemetryOptions, start_prometheus_metric_exporter,
};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio::net::TcpListener;

pub mod check;
pub mod telemetry;
pub mod temporal_setup;

pub use telemetry::LogFormat;

/// Where the embedded development database lives unless `DATABASE_URL` says otherwise.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://.data/pidgr.db";

/// Settings shared by every subcommand that touches the database or Temporal.
#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Database URL: `sqlite://path` (embedded, the default) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// `development` or `production`; required, so that a forgotten setting never runs a
    /// server with development allowances. Production refuses development-only settings.
    #[arg(
        long,
        env = "PIDGR_ENVIRONMENT",
        value_name = "development|production",
        value_parser = ["development", "production"]
    )]
    pub environment: String,
    /// Whether `serve`, `api` and `worker` apply pending migrations when they start. Development
    /// always does; in production migrations are a deploy step (`pidgr migrate`) and processes
    /// refuse to start while any is pending, unless this is `true`.
    #[arg(long, env = "PIDGR_MIGRATE_AT_BOOT", default_value_t = false)]
    pub migrate_at_boot: bool,
    /// Development only: allow plain-HTTP webhook URLs to loopback receivers (`127.0.0.0/8`,
    /// `::1`, `localhost`), for local receivers. Every other host still needs `https://` and a
    /// public address.
    #[arg(long, env = "PIDGR_ALLOW_INSECURE_WEBHOOKS", default_value_t = false)]
    pub allow_insecure_webhooks: bool,
    /// Task queue of campaign workflows and activities.
    #[arg(long, env = "PIDGR_TASK_QUEUE", default_value = pidgr_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Address the API listens on.
    #[arg(long, env = "PIDGR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Public base URL of the API, used to build recipients' deeplinks.
    #[arg(long, env = "PIDGR_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The Temporal Web UI's base address (e.g. `http://localhost:8233`): the console links each
    /// campaign to its run there. No links without it.
    #[arg(long, env = "PIDGR_TEMPORAL_UI_URL")]
    pub temporal_ui_url: Option<String>,
    /// The Temporal namespace campaigns run in, for those links (the client's own setting).
    #[arg(long, env = "TEMPORAL_NAMESPACE", default_value = "default")]
    pub temporal_namespace: String,
    /// How long a console sign-in lasts, in hours.
    #[arg(long, env = "PIDGR_CONSOLE_SESSION_HOURS", default_value_t = 8)]
    pub console_session_hours: u64,
    /// At most one progress signal per campaign per this many milliseconds.
    #[arg(long, env = "PIDGR_SIGNAL_INTERVAL_MS", default_value_t = 1000)]
    pub signal_interval_ms: u64,
    /// Signals one workflow run takes before it continues as new.
    #[arg(long, env = "PIDGR_MAX_SIGNALS_PER_RUN", default_value_t = 500)]
    pub max_signals_per_run: u32,
    /// CALL_WEBHOOK attempts in all (first included).
    #[arg(long, env = "PIDGR_WEBHOOK_MAX_ATTEMPTS", default_value_t = 5)]
    pub webhook_max_attempts: u32,
    /// Delay before the first CALL_WEBHOOK retry, doubling after each.
    #[arg(long, env = "PIDGR_WEBHOOK_INITIAL_RETRY_MS", default_value_t = 1000)]
    pub webhook_initial_retry_ms: u64,
    /// 64 hex characters (32 bytes): the key that encrypts stored secrets (webhook signing
    /// secrets) at rest. Required in production; `make dev` generates one into .data/.
    #[arg(long, env = "PIDGR_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Earlier secret keys, comma-separated (64 hex characters each): they still open what they
    /// sealed, never seal anything, while `pidgr secrets rotate-key` re-seals it all with
    /// PIDGR_SECRET_KEY; then they can be removed.
    #[arg(
        long,
        env = "PIDGR_PREVIOUS_SECRET_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub previous_secret_keys: Vec<String>,
    /// The operator's token for the codec server (`/codec/…`), which decrypts every
    /// organisation's Temporal payloads and encrypts anything under the server's key: at least
    /// 32 URL-safe characters (`openssl rand -hex 32`). Without it the codec routes answer 404;
    /// no API key opens them, whatever its role.
    #[arg(long, env = "PIDGR_CODEC_TOKEN", hide_env_values = true)]
    pub codec_token: Option<String>,
    /// iOS apps that open recipients' deeplinks, comma-separated `TEAMID.bundle.id`: served
    /// in `/.well-known/apple-app-site-association` (404 without any).
    #[arg(long, env = "PIDGR_IOS_APP_IDS", value_delimiter = ',')]
    pub ios_app_ids: Vec<String>,
    /// The Android app that opens recipients' deeplinks (its package name), served in
    /// `/.well-known/assetlinks.json` with PIDGR_ANDROID_CERT_FINGERPRINTS (404 without both).
    #[arg(long, env = "PIDGR_ANDROID_PACKAGE")]
    pub android_package: Option<String>,
    /// SHA-256 fingerprints of the Android app's signing certificates, comma-separated
    /// (`AB:CD:…`, 32 bytes each).
    #[arg(long, env = "PIDGR_ANDROID_CERT_FINGERPRINTS", value_delimiter = ',')]
    pub android_cert_fingerprints: Vec<String>,
    /// A URL scheme the app registers (`acme-pidgr`): the deeplink landing page's "Open in the
    /// app" button opens `<scheme>://c/<code>`; without one it is the deeplink itself.
    #[arg(long, env = "PIDGR_APP_URL_SCHEME")]
    pub app_url_scheme: Option<String>,
    /// Recipients per fan-out page (progress is checkpointed per page).
    #[arg(long, env = "PIDGR_FANOUT_PAGE_SIZE", default_value_t = 1000)]
    pub fanout_page_size: i64,
    /// Recipients one fan-out range notifies at once (over pooled HTTP/2 connections).
    #[arg(long, env = "PIDGR_FANOUT_CONCURRENCY", default_value_t = 256)]
    pub fanout_concurrency: usize,
    /// Audience positions per fan-out range; each range is an activity any worker may take.
    #[arg(long, env = "PIDGR_FANOUT_RANGE_SIZE", default_value_t = 10_000)]
    pub fanout_range_size: u64,
    /// Fan-out ranges of one step running at once, across all workers.
    #[arg(long, env = "PIDGR_FANOUT_PARALLEL_RANGES", default_value_t = 8)]
    pub fanout_parallel_ranges: u32,
    /// A fan-out range whose worker has not heartbeated for this long goes to another worker.
    #[arg(
        long,
        env = "PIDGR_FANOUT_HEARTBEAT_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub fanout_heartbeat_timeout_ms: u64,
    /// History events after which a campaign's run continues as new at its next chance.
    #[arg(long, env = "PIDGR_MAX_HISTORY_EVENTS", default_value_t = 2_000)]
    pub max_history_events: u32,
    /// A DEADLINE_CHECK wait asks the database this often whether everything is resolved, so
    /// a lost progress signal delays an early end by at most this long.
    #[arg(
        long,
        env = "PIDGR_WAIT_RECOUNT_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub wait_recount_interval_ms: u64,
    /// How often the API looks for ACTIVE campaigns without a workflow (a start whose workflow
    /// could not be started) and starts theirs; also once when the API boots.
    #[arg(long, env = "PIDGR_RECONCILE_INTERVAL_MS", default_value_t = 60_000)]
    pub reconcile_interval_ms: u64,
    /// The most recipients one campaign may have (checked at creation and at start).
    #[arg(long, env = "PIDGR_MAX_RECIPIENTS", default_value_t = pidgr_api::DEFAULT_MAX_RECIPIENTS)]
    pub max_recipients: u64,
    /// Deliveries per CALL_WEBHOOK POST; a campaign with more is reported in several parts.
    #[arg(long, env = "PIDGR_WEBHOOK_PART_SIZE", default_value_t = 10_000)]
    pub webhook_part_size: i64,
    /// Webhook channel events one sender POSTs at once (over pooled connections).
    #[arg(long, env = "PIDGR_CHANNEL_CONCURRENCY", default_value_t = 64)]
    pub channel_concurrency: usize,
    /// Hours after a webhook secret rotation during which `webhook-signature` carries the
    /// previous secret's signature beside the new one's (`X-Pidgr-Signature` uses the new one
    /// at once).
    #[arg(long, env = "PIDGR_WEBHOOK_SECRET_OVERLAP_HOURS", default_value_t = 24)]
    pub webhook_secret_overlap_hours: u64,
    /// Firebase Cloud Messaging HTTP v1 base URL.
    #[arg(long, env = "PIDGR_FCM_URL", default_value = PushEndpoints::FCM)]
    pub fcm_url: String,
    /// OAuth2 token endpoint FCM service-account tokens are exchanged at (the `token_uri` of a
    /// stored service account is ignored: where we send signed assertions is ours to decide).
    #[arg(long, env = "PIDGR_FCM_TOKEN_URL", default_value = PushEndpoints::FCM_TOKEN)]
    pub fcm_token_url: String,
    /// APNs base URL for credentials of the `production` environment.
    #[arg(long, env = "PIDGR_APNS_URL", default_value = PushEndpoints::APNS_PRODUCTION)]
    pub apns_url: String,
    /// APNs base URL for credentials of the `sandbox` environment.
    #[arg(long, env = "PIDGR_APNS_SANDBOX_URL", default_value = PushEndpoints::APNS_SANDBOX)]
    pub apns_sandbox_url: String,
    /// Development only: a device whose platform has no credentials gets its pushes recorded by
    /// the `log` provider (database and log) instead of failing. Refused in production.
    #[arg(long, env = "PIDGR_PUSH_LOG", default_value_t = false)]
    pub push_log: bool,
    /// Requests one API key may make per second, sustained (a token bucket refilled at this
    /// rate).
    #[arg(long, env = "PIDGR_RATE_LIMIT_PER_KEY", default_value_t = 5_000)]
    pub rate_limit_per_key: u32,
    /// Requests one API key may make at once above the sustained rate (the bucket's size).
    #[arg(long, env = "PIDGR_RATE_LIMIT_PER_KEY_BURST", default_value_t = 10_000)]
    pub rate_limit_per_key_burst: u32,
    /// Requests without a valid key (public routes, missing or unknown keys) one client address
    /// may make per second, sustained.
    #[arg(long, env = "PIDGR_RATE_LIMIT_PER_ADDRESS", default_value_t = 20)]
    pub rate_limit_per_address: u32,
    /// Requests without a valid key one client address may make at once above that rate.
    #[arg(
        long,
        env = "PIDGR_RATE_LIMIT_PER_ADDRESS_BURST",
        default_value_t = 100
    )]
    pub rate_limit_per_address_burst: u32,
    /// Requests the API handles at once; more are answered 503 with `Retry-After` at once.
    #[arg(long, env = "PIDGR_MAX_CONCURRENT_REQUESTS", default_value_t = 1_024)]
    pub max_concurrent_requests: usize,
    /// A request still running after this many milliseconds is abandoned with a 503.
    #[arg(long, env = "PIDGR_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// A connection that has not sent a complete request head (request line and headers) this
    /// many milliseconds after it opened or after its previous answer is closed.
    #[arg(long, env = "PIDGR_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// `text` (for people; coloured on a terminal) or `json` (one object per line). Levels
    /// follow `RUST_LOG` (default `info`).
    #[arg(long, env = "PIDGR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Where this process serves its Prometheus metrics (`GET /metrics`), e.g.
    /// `127.0.0.1:9464`; off when unset. Served by `serve`, `api` and `worker` alike.
    #[arg(long, env = "PIDGR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where a worker serves the Temporal SDK's own metrics (task slots, poll and schedule
    /// latencies, sticky cache…), from the SDK's exporter; off when unset.
    #[arg(long, env = "PIDGR_TEMPORAL_METRICS_LISTEN")]
    pub temporal_metrics_listen: Option<SocketAddr>,
    /// The process's metrics registry, shared by the API and the worker of one process. Not a
    /// setting: each process (each end-to-end system) gets its own.
    #[arg(skip)]
    pub metrics: pidgr_metrics::Metrics,
    /// Name resolution for outbound webhook calls; the system resolver when `None`. Not a
    /// setting: embedders (the end-to-end tests) inject one to play DNS.
    #[arg(skip)]
    pub resolver: Option<Resolver>,
}

/// A [`NameResolver`] for [`Config::resolver`].
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn NameResolver>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver(..)")
    }
}

impl Config {
    /// The SSRF policy; the insecure allowance is refused in production.
    pub fn url_policy(&self) -> anyhow::Result<UrlPolicy> {
        match (self.environment.as_str(), self.allow_insecure_webhooks) {
            ("production", true) => bail!(
                "PIDGR_ALLOW_INSECURE_WEBHOOKS is a development setting and is refused when PIDGR_ENVIRONMENT=production"
            ),
            ("production" | "development", allow) => Ok(UrlPolicy {
                allow_insecure_loopback: allow,
            }),
            (other, _) => {
                bail!("PIDGR_ENVIRONMENT must be development or production, not {other:?}")
            }
        }
    }

    /// The SSRF-safe client for every POST to a URL a user configured.
    pub fn outbound(&self) -> anyhow::Result<OutboundClient> {
        let config = OutboundConfig {
            policy: self.url_policy()?,
            ..Default::default()
        };
        Ok(match &self.resolver {
            Some(resolver) => OutboundClient::with_resolver(config, resolver.0.clone())?,
            None => OutboundClient::new(config)?,
        })
    }

    /// The push sender: FCM and APNs at the configured endpoints, and the `log` provider when
    /// allowed.
    pub fn push_sender(&self, store: Store) -> anyhow::Result<PushSender> {
        if self.push_log && self.environment == "production" {
            bail!(
                "PIDGR_PUSH_LOG is a development setting and is refused when PIDGR_ENVIRONMENT=production"
            );
        }
        let client = PushClient::new(PushSettings {
            endpoints: PushEndpoints {
                fcm_base_url: self.fcm_url.clone(),
                fcm_token_url: self.fcm_token_url.clone(),
                apns_production_url: self.apns_url.clone(),
                apns_sandbox_url: self.apns_sandbox_url.clone(),
            },
            ..Default::default()
        })?;
        Ok(PushSender::new(store, client, self.push_log).with_metrics(self.metrics.clone()))
    }

    pub fn engine(&self) -> EngineSettings {
        EngineSettings {
            webhook_max_attempts: self.webhook_max_attempts.max(1),
            webhook_initial_retry_ms: self.webhook_initial_retry_ms,
            max_signals_per_run: self.max_signals_per_run.max(1),
            max_history_events: self.max_history_events.max(100),
            fan_out_range_size: self.fanout_range_size.max(1),
            fan_out_parallel_ranges: self.fanout_parallel_ranges.max(1),
            fan_out_heartbeat_timeout_ms: self.fanout_heartbeat_timeout_ms.max(1_000),
            wait_recount_interval_ms: self.wait_recount_interval_ms.max(100),
        }
    }

    pub fn api_settings(&self) -> anyhow::Result<ApiSettings> {
        self.check_request_timeout()?;
        Ok(ApiSettings {
            task_queue: self.task_queue.clone(),
            url_policy: self.url_policy()?,
            engine: self.engine(),
            signal_interval: Duration::from_millis(self.signal_interval_ms),
            deeplink_base: self.link_base("/c/"),
            max_recipients: self.max_recipients,
            limits: self.server_limits(),
            codec_token: self.codec_token()?,
            app_links: self.app_links()?,
            webhook_secret_overlap: self.webhook_secret_overlap(),
        })
    }

    /// The mobile apps of the app-link files and the landing page, checked: a malformed value
    /// would publish a file the phones silently ignore.
    fn app_links(&self) -> anyhow::Result<pidgr_api::AppLinks> {
        let listed = |values: &[String]| -> Vec<String> {
            values
                .iter()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let ios_app_ids = listed(&self.ios_app_ids);
        for id in &ios_app_ids {
            let valid = id.split_once('.').is_some_and(|(team, bundle)| {
                team.len() == 10
                    && team.chars().all(|c| c.is_ascii_alphanumeric())
                    && !bundle.is_empty()
                    && bundle
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
            });
            if !valid {
                bail!(
                    "PIDGR_IOS_APP_IDS: {id:?} is not TEAMID.bundle.id (a 10-character team id, a dot, a bundle id)"
                );
            }
        }
        let android_package = self
            .android_package
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        if let Some(package) = &android_package {
            let valid = package.split('.').count() >= 2
                && package.split('.').all(|part| {
                    part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                        && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            if !valid {
                bail!(
                    "PIDGR_ANDROID_PACKAGE: {package:?} is not an Android package name (com.example.app)"
                );
            }
        }
        let mut android_cert_fingerprints = Vec::new();
        for fingerprint in listed(&self.android_cert_fingerprints) {
            let bytes: Vec<&str> = fingerprint.split(':').collect();
            if bytes.len() != 32
                || !bytes
                    .iter()
                    .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()))
            {
                bail!(
                    "PIDGR_ANDROID_CERT_FINGERPRINTS: {fingerprint:?} is not a SHA-256 fingerprint (32 hex bytes separated by colons)"
                );
            }
            android_cert_fingerprints.push(fingerprint.to_ascii_uppercase());
        }
        let url_scheme = self
            .app_url_scheme
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase);
        if let Some(scheme) = &url_scheme {
            // RFC 3986: a letter, then letters, digits, `+`, `-` or `.`.
            let valid = scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if !valid || ["http", "https", "javascript", "data", "file"].contains(&scheme.as_str())
            {
                bail!("PIDGR_APP_URL_SCHEME: {scheme:?} is not an app's own URL scheme");
            }
        }
        Ok(pidgr_api::AppLinks {
            ios_app_ids,
            android_package,
            android_cert_fingerprints,
            url_scheme,
        })
    }

    /// The codec server's token, checked; none (the codec routes off) when unset or empty.
    fn codec_token(&self) -> anyhow::Result<Option<CodecToken>> {
        match self.codec_token.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(token) => CodecToken::new(token)
                .map(Some)
                .map_err(|why| anyhow::anyhow!("PIDGR_CODEC_TOKEN: {why}")),
        }
    }

    /// A request the timeout abandons gives up its Idempotency-Key, but one still running when
    /// its claim may be taken over would let a retry run it a second time alongside it.
    fn check_request_timeout(&self) -> anyhow::Result<()> {
        let takeover_ms = pidgr_store::IDEMPOTENCY_CLAIM_TIMEOUT.num_milliseconds();
        if i64::try_from(self.request_timeout_ms).unwrap_or(i64::MAX) >= takeover_ms {
            bail!(
                "PIDGR_REQUEST_TIMEOUT_MS must be below {takeover_ms} (the time after which a retry may take over an unanswered Idempotency-Key), not {}",
                self.request_timeout_ms
            );
        }
        Ok(())
    }

    pub fn console_settings(&self) -> pidgr_console::ConsoleSettings {
        pidgr_console::ConsoleSettings {
            temporal_ui_url: self
                .temporal_ui_url
                .as_deref()
                .map(|url| url.trim_end_matches('/').to_owned()),
            temporal_namespace: self.temporal_namespace.clone(),
            session_lifetime: Duration::from_secs(self.console_session_hours.max(1) * 3600),
            secure_cookies: self
                .public_url
                .as_deref()
                .is_some_and(|url| url.starts_with("https://")),
            public_origin: self.public_url.as_deref().and_then(origin_of),
        }
    }

    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            per_key: Rate {
                per_second: self.rate_limit_per_key,
                burst: self.rate_limit_per_key_burst,
            },
            per_address: Rate {
                per_second: self.rate_limit_per_address,
                burst: self.rate_limit_per_address_burst,
            },
            max_concurrent_requests: self.max_concurrent_requests.max(1),
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms.max(1)),
        }
    }

    /// A link under the server's public URL (`http://<listen>` without one) that a code is
    /// appended to: recipients' deeplinks are `<public URL>/c/<code>`, resolved by the API's
    /// `/c/{code}`; a manager's escalation link is `<public URL>/v1/escalations/<code>`,
    /// resolved with a key like the mobile backend's deeplinks.
    fn link_base(&self, path: &str) -> String {
        let base = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen));
        format!("{}{path}", base.trim_end_matches('/'))
    }

    pub fn activity_settings(&self) -> ActivitySettings {
        ActivitySettings {
            page_size: self.fanout_page_size.max(1),
            send_concurrency: self.fanout_concurrency.max(1),
            deeplink_base: self.link_base("/c/"),
            escalation_link_base: self.link_base("/v1/escalations/"),
            webhook_part_size: self.webhook_part_size.max(1),
            channel_concurrency: self.channel_concurrency.max(1),
            max_recipients: self.max_recipients,
            webhook_secret_overlap: self.webhook_secret_overlap(),
        }
    }

    fn webhook_secret_overlap(&self) -> Duration {
        Duration::from_secs(self.webhook_secret_overlap_hours.saturating_mul(3600))
    }

    /// The keys of `PIDGR_PREVIOUS_SECRET_KEYS`: they open stored secrets and payloads sealed
    /// before a rotation, and never seal.
    fn previous_keys(&self) -> anyhow::Result<Vec<SecretKey>> {
        self.previous_secret_keys
            .iter()
            .filter(|hex| !hex.trim().is_empty())
            .map(|hex| SecretKey::from_hex(hex))
            .collect::<Result<Vec<_>, _>>()
            .context("reading PIDGR_PREVIOUS_SECRET_KEYS")
    }

    /// Whether processes apply pending migrations when they start (see
    /// [`Config::migrate_at_boot`]).
    pub fn migrates_at_boot(&self) -> bool {
        self.environment != "production" || self.migrate_at_boot
    }

    /// The `log` push provider is a development allowance.
    pub fn push_log_allowed(&self) -> anyhow::Result<()> {
        if self.push_log && self.environment == "production" {
            bail!(
                "PIDGR_PUSH_LOG is a development setting and is refused when PIDGR_ENVIRONMENT=production"
            );
        }
        Ok(())
    }

    /// Opens the database with its secret keys, refusing (for an embedded SQLite file that does
    /// not exist) unless `missing` allows creating it.
    pub async fn open_store(&self, missing: check::MissingDatabase) -> anyhow::Result<Store> {
        let store = self.connect_database(missing).await?;
        self.with_secret_keys(store)
    }

    /// Opens the database without its secret keys. An embedded SQLite file that does not exist
    /// is refused unless `missing` allows creating it (then its folder is created first): a
    /// command run from the wrong directory must not quietly work on a new empty database.
    pub async fn connect_database(&self, missing: check::MissingDatabase) -> anyhow::Result<Store> {
        if missing == check::MissingDatabase::Refuse
            && let Some(file) = check::missing_sqlite_file(&self.database_url)
        {
            let here = std::env::current_dir()
                .map(|dir| dir.display().to_string())
                .unwrap_or_else(|_| "?".into());
            bail!(
                "the SQLite database {file} does not exist (DATABASE_URL={}, looked for from \
                 {here}): run this from the directory `make dev` runs in (the repository's root), \
                 set DATABASE_URL to the database's path (sqlite:///absolute/path/pidgr.db), or \
                 create it with `pidgr migrate`",
                self.database_url
            );
        }
        if let Some(path) = self.database_url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(file)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        Store::connect(&self.database_url).await.with_context(|| {
            format!(
                "cannot open the database at {} (check DATABASE_URL: host, port, user, password \
                 and database name)",
                redact(&self.database_url)
            )
        })
    }

    /// Opens the database, creating an embedded SQLite file when missing, with its secret keys.
    pub async fn store(&self) -> anyhow::Result<Store> {
        self.open_store(check::MissingDatabase::Create).await
    }

    /// The store sealing and opening secrets with PIDGR_SECRET_KEY (and the previous keys).
    pub fn with_secret_keys(&self, store: Store) -> anyhow::Result<Store> {
        let previous = self.previous_keys()?;
        match &self.secret_key {
            Some(hex) => Ok(store.with_keyring(Keyring::new(
                SecretKey::from_hex(hex.trim()).context("reading PIDGR_SECRET_KEY")?,
                previous,
            ))),
            None if !previous.is_empty() => bail!(
                "PIDGR_PREVIOUS_SECRET_KEYS is set but PIDGR_SECRET_KEY is not: previous keys only open secrets, the current key seals them"
            ),
            None if self.environment == "production" => bail!(
                "PIDGR_SECRET_KEY is required in production (64 hex characters; e.g. `openssl rand -hex 32`)"
            ),
            None => Ok(store),
        }
    }
}

/// `scheme://host[:port]` of a URL (what a browser sends as `Origin`), without path or slash.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// A database URL with any password removed, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Connects to Temporal as configured by the standard `TEMPORAL_*` environment variables and
/// config file (address `localhost:7233`, namespace `default` unless set), with every payload
/// encrypted by [`data_converter`]. The worker built on this client uses the same converter.
pub async fn temporal_client(config: &Config) -> anyhow::Result<Client> {
    let (connection_options, mut client_options) =
        ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
            .map_err(|e| anyhow::anyhow!("reading the Temporal client configuration: {e}"))?;
    client_options.data_converter = data_converter(config)?;
    let target = connection_options.target.to_string();
    let connection = Connection::connect(connection_options)
        .await
        .with_context(|| {
            format!(
                "connecting to Temporal at {target} (is the dev server running? try `make dev`)"
            )
        })?;
    Ok(Client::new(connection, client_options)?)
}

/// The SDK's JSON payloads, each encrypted by the payload codec before it reaches Temporal
/// (and decrypted when read back): workflow and activity inputs carry campaign data.
pub fn data_converter(config: &Config) -> anyhow::Result<DataConverter> {
    Ok(encrypting_data_converter(payload_cipher(config)?))
}

/// The SDK's default converters with `cipher` as the payload codec.
pub fn encrypting_data_converter(cipher: pidgr_codec::PayloadCipher) -> DataConverter {
    DataConverter::new(
        PayloadConverter::default(),
        DefaultFailureConverter::default(),
        cipher,
    )
}

/// The payload codec, keyed from the server's secret key (and the previous ones of a rotation).
/// Every process needs the key: the API encrypts workflow inputs, the worker decrypts them, so
/// there is no keyless mode.
pub fn payload_cipher(config: &Config) -> anyhow::Result<pidgr_codec::PayloadCipher> {
    let hex = config.secret_key.as_deref().context(
        "PIDGR_SECRET_KEY is required: Temporal payloads are encrypted with a key derived from it \
         (64 hex characters; e.g. `openssl rand -hex 32`; `make dev` generates one)",
    )?;
    let key = SecretKey::from_hex(hex.trim()).context("reading PIDGR_SECRET_KEY")?;
    // Payloads encrypted before a rotation are still read while the old key is listed.
    Ok(cipher_for(&key, &config.previous_keys()?))
}

/// The payload codec of these server keys: each one's payload key is derived for the codec
/// alone and named by the server key's id; `current` encrypts, `previous` keys only decrypt.
pub fn cipher_for(current: &SecretKey, previous: &[SecretKey]) -> pidgr_codec::PayloadCipher {
    let codec_key = |key: &SecretKey| {
        pidgr_codec::CodecKey::new(key.key_id(), key.derive(pidgr_codec::KEY_PURPOSE))
    };
    pidgr_codec::PayloadCipher::new(codec_key(current), previous.iter().map(codec_key))
}

/// How often a running API or worker refreshes the planner's statistics and empties SQLite's
/// write-ahead log (see [`Store::optimize`] and [`Store::checkpoint_wal`]).
pub const DB_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(300);

/// Stops the maintenance task of [`spawn_db_maintenance`] when dropped (after the pass under
/// way, if any: a pass is never cut off halfway).
pub struct DbMaintenance {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Keeps query cost flat while the process runs: every `every`, fresh planner statistics (a
/// campaign's deliveries written since make a table many times larger), a purge of expired
/// idempotency keys, and a checkpoint that empties SQLite's log (steady ACK traffic can keep
/// the automatic checkpoints from ever resetting it). All are cheap when there is nothing to
/// do, and failures are only logged:
/// they cost speed, never correctness. The API and the worker each run one, so `serve` runs two.
pub fn spawn_db_maintenance(store: Store, every: Duration) -> DbMaintenance {
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stop => return,
            }
            if let Err(error) = store.optimize().await {
                tracing::warn!(%error, "could not refresh the database's planner statistics");
            }
            // Expired idempotency keys (and the answers they kept, member data included).
            match store.purge_idempotency_keys().await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "expired idempotency keys purged"),
                Err(error) => tracing::warn!(%error, "could not purge expired idempotency keys"),
            }
            match store.checkpoint_wal().await {
                Ok(true) => {}
                Ok(false) => tracing::debug!("WAL checkpoint postponed: the database was busy"),
                Err(error) => tracing::warn!(%error, "could not checkpoint the database's WAL"),
            }
        }
    });
    DbMaintenance { _stop: stop_tx }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve_api(
    listener: TcpListener,
    store: Store,
    temporal: Client,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _maintenance = spawn_db_maintenance(store.clone(), DB_MAINTENANCE_INTERVAL);
    // The API's process serves the metrics (its worker's too, under `serve`).
    let _metrics = telemetry::start_metrics_server(config, &store).await?;
    let settings = config.api_settings()?;
    let header_read_timeout = settings.limits.header_read_timeout;
    let state = AppState::new(store, temporal, settings, config.outbound()?)
        .with_metrics(config.metrics.clone());
    let _reconciler = pidgr_api::reconcile::spawn(
        state.clone(),
        Duration::from_millis(config.reconcile_interval_ms.max(100)),
    );
    let console = pidgr_console::router(pidgr_console::Console::new(
        state.clone(),
        config.console_settings(),
    ));
    let app = pidgr_api::app_with(state, console);
    pidgr_api::serve(listener, app, header_read_timeout, shutdown).await?;
    Ok(())
}

/// Builds the campaign worker: the workflow and every step activity on the configured queue.
pub fn build_worker(config: &Config, store: Store, temporal: Client) -> anyhow::Result<Worker> {
    let runtime = Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .telemetry_options(temporal_telemetry(config)?)
            .build()
            .map_err(|why| anyhow::anyhow!("the Temporal runtime's options: {why}"))?,
    )?;
    let push = config.push_sender(store.clone())?;
    let activities =
        CampaignActivitiesImpl::new(store, push, config.outbound()?, config.activity_settings())
            .with_metrics(config.metrics.clone());
    let options = WorkerOptions::new(config.task_queue.clone())
        // No eager activities: a workflow task would hand the fan-out ranges it schedules to the
        // worker that ran it, so one campaign's ranges would pile onto one worker instead of
        // spreading over every worker polling the queue.
        .max_eager_activity_reservations_per_workflow_task(0)
        .register_workflow::<CampaignWorkflow>()?
        .register_activities(activities)
        .build();
    Ok(Worker::new(&runtime, temporal, options)?)
}

/// The SDK's telemetry: its Prometheus exporter on `PIDGR_TEMPORAL_METRICS_LISTEN` when set.
/// The exporter keeps a registry and a listener of its own (the SDK exposes neither to share),
/// hence an address of its own; it serves until the process ends.
fn temporal_telemetry(config: &Config) -> anyhow::Result<TelemetryOptions> {
    let Some(address) = config.temporal_metrics_listen else {
        return Ok(TelemetryOptions::default());
    };
    let exporter = start_prometheus_metric_exporter(
        PrometheusExporterOptions::builder()
            .socket_addr(address)
            .counters_total_suffix(true)
            .use_seconds_for_durations(true)
            .unit_suffix(true)
            .build(),
    )
    .with_context(|| format!("listening on PIDGR_TEMPORAL_METRICS_LISTEN={address}"))?;
    tracing::info!(address = %exporter.bound_addr, "Temporal SDK metrics listening at /metrics");
    Ok(TelemetryOptions::builder()
        .metrics(exporter.meter as Arc<dyn CoreMeter>)
        .build())
}

/// Runs the campaign worker until `stop` turns true, then shuts it down gracefully (in-flight
/// activities finish or are handed back). The SDK's worker future is not `Send`: await this on
/// the task that owns it (the binary's main task, or a thread of its own).
pub async fn run_worker(
    config: &Config,
    store: Store,
    temporal: Client,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let _maintenance = spawn_db_maintenance(store.clone(), DB_MAINTENANCE_INTERVAL);
    let mut worker = build_worker(config, store, temporal)?;
    let shutdown = worker.shutdown_handle();
    tracing::info!(task_queue = %config.task_queue, "worker started");
    let run = worker.run();
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result.context("worker"),
        _ = stop.wait_for(|s| *s) => shutdown(),
    }
    run.await.context("worker")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_public_origin_is_what_a_browser_sends_as_origin() {
        assert_eq!(
            origin_of("https://pidgr.example.com/c/").as_deref(),
            Some("https://pidgr.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("pidgr.example.com"), None);
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn config_with_request_timeout(ms: i64) -> Config {
        Cli::try_parse_from([
            "pidgr".to_owned(),
            "--environment=development".to_owned(),
            format!("--request-timeout-ms={ms}"),
        ])
        .unwrap()
        .config
    }

    #[test]
    fn a_request_timeout_at_or_above_the_idempotency_takeover_is_refused() {
        let takeover = pidgr_store::IDEMPOTENCY_CLAIM_TIMEOUT.num_milliseconds();
        for ms in [takeover, takeover + 1] {
            let error = config_with_request_timeout(ms).api_settings().unwrap_err();
            assert!(
                error.to_string().contains("PIDGR_REQUEST_TIMEOUT_MS"),
                "{error}"
            );
        }
        config_with_request_timeout(takeover - 1)
            .api_settings()
            .unwrap();
        config_with_request_timeout(30_000).api_settings().unwrap();
    }

    fn app_links(args: &[&str]) -> anyhow::Result<pidgr_api::AppLinks> {
        let mut argv = vec!["pidgr", "--environment=development"];
        argv.extend(args);
        Ok(Cli::try_parse_from(argv)?.config.api_settings()?.app_links)
    }

    #[test]
    fn app_link_settings_are_checked_and_normalised() {
        let fingerprint = ["ab"; 32].join(":");
        let links = app_links(&[
            "--ios-app-ids=ABCDE12345.com.acme.app, FGHIJ67890.com.acme.other",
            "--android-package=com.acme.app",
            &format!("--android-cert-fingerprints={fingerprint}"),
            "--app-url-scheme=Acme-Pidgr",
        ])
        .unwrap();
        assert_eq!(
            links.ios_app_ids,
            ["ABCDE12345.com.acme.app", "FGHIJ67890.com.acme.other"]
        );
        assert_eq!(links.android_package.as_deref(), Some("com.acme.app"));
        assert_eq!(links.android_cert_fingerprints, [["AB"; 32].join(":")]);
        assert_eq!(links.url_scheme.as_deref(), Some("acme-pidgr"));
        // Nothing configured: no app links, and no error.
        let none = app_links(&[]).unwrap();
        assert!(none.ios_app_ids.is_empty() && none.android_package.is_none());
        for (bad, setting) in [
            ("--ios-app-ids=com.acme.app", "PIDGR_IOS_APP_IDS"),
            ("--android-package=acme", "PIDGR_ANDROID_PACKAGE"),
            (
                "--android-cert-fingerprints=AB:CD",
                "PIDGR_ANDROID_CERT_FINGERPRINTS",
            ),
            ("--app-url-scheme=https", "PIDGR_APP_URL_SCHEME"),
            ("--app-url-scheme=javascript", "PIDGR_APP_URL_SCHEME"),
            ("--app-url-scheme=1app", "PIDGR_APP_URL_SCHEME"),
        ] {
            let error = app_links(&[bad]).unwrap_err().to_string();
            assert!(error.contains(setting), "{bad}: {error}");
        }
    }
}
