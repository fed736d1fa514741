//! The end-to-end harness: a real Temporal dev server (started from the CLI `make tools`
//! installed), a real SQLite database file, the real API on a loopback port, the real worker
//! (in this process, or as a `pidgr worker` child process that a test can kill), and a real
//! HTTP receiver for webhooks.

use std::collections::VecDeque;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::http::{HeaderMap, StatusCode};
use pidgr::Config;
use pidgr_push::PushEndpoints;
use pidgr_store::Store;
use serde_json::{Value, json};
use temporalio_client::{Client, ClientOptions, WorkflowListOptions};
use temporalio_sdk::testing::{
    EphemeralExe, LocalServer, LocalWorkflowEnvironmentOptions, WorkflowEnvironment,
};
use tokio::sync::{mpsc, watch};

/// How long any awaited condition may take before the test fails with a message saying what
/// it was waiting for. Generous: the machines have two cores and run tests in parallel.
pub const PATIENCE: Duration = Duration::from_secs(120);
/// How often [`until`] asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The example definition of docs/workflow-definitions.md with second-scale durations and a loopback receiver.
pub fn example_definition(first_wait: &str, last_call: &str, webhook_url: &str) -> Value {
    json!({
        "version": 1,
        "start": "notify",
        "steps": [
            { "id": "notify", "type": "SEND_NOTIFICATION",
              "config": { "channels": ["push"], "variables": { "deadline": "Friday" } },
              "transitions": { "next": "wait" } },
            { "id": "wait", "type": "DEADLINE_CHECK", "config": { "duration": first_wait },
              "transitions": { "deadline": "remind", "all_acknowledged": "report" } },
            { "id": "remind", "type": "SEND_REMINDER",
              "config": { "channels": ["push"], "variables": { "deadline": "Friday" } },
              "transitions": { "next": "last-call" } },
            { "id": "last-call", "type": "DEADLINE_CHECK", "config": { "duration": last_call },
              "transitions": { "next": "missed" } },
            { "id": "missed", "type": "MARK_MISSED", "config": {}, "transitions": { "next": "report" } },
            { "id": "report", "type": "CALL_WEBHOOK",
              "config": { "name": "Results to Slack", "url": webhook_url,
                          "headers": { "Authorization": "Bearer s3cret", "X-Custom-Header": "custom-value" } },
              "transitions": {} }
        ]
    })
}

/// A dev server on `port` with the search attributes registered; its state lives in `db` when
/// given (so that it survives a kill), in memory otherwise.
async fn start_temporal(
    port: u16,
    db: Option<PathBuf>,
) -> Result<WorkflowEnvironment<LocalServer>> {
    let server_options = LocalWorkflowEnvironmentOptions::builder()
        .server_executable(EphemeralExe::ExistingPath(temporal_cli()?))
        .port(port)
        .maybe_database_filename(db)
        .client_options(ClientOptions::new("default").build())
        .extra_args(
            pidgr_workflows::search_attributes::ALL
                .iter()
                .flat_map(|(name, kind)| {
                    ["--search-attribute".to_owned(), format!("{name}={kind}")]
                })
                .collect(),
        )
        .build();
    WorkflowEnvironment::start_local(server_options)
        .await
        .context("starting the Temporal dev server")
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An executable the build provides: `$var`, else `default` relative to the workspace.
fn executable(var: &str, default: &str, how_to_get_it: &str) -> Result<PathBuf> {
    let path = std::env::var(var).map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(default)
    });
    if !path.exists() {
        bail!("{} does not exist; {how_to_get_it}", path.display());
    }
    Ok(path)
}

/// The Temporal CLI the Makefile installed.
fn temporal_cli() -> Result<String> {
    let path = executable(
        "PIDGR_TEMPORAL_CLI",
        ".tools/py/bin/temporal",
        "run `make tools` (or `make test`)",
    )?;
    Ok(path.display().to_string())
}

/// The `pidgr` binary (`make test` builds it first).
pub fn pidgr_binary() -> Result<PathBuf> {
    executable(
        "PIDGR_BIN",
        "target/debug/pidgr",
        "run `cargo build -p pidgr` (make test does)",
    )
}

/// Knobs a scenario may change before the system starts.
#[derive(Clone, Debug)]
pub struct Options {
    pub signal_interval_ms: u64,
    pub max_signals_per_run: u32,
    pub webhook_max_attempts: u32,
    /// Run the worker in this process (false: the test starts `pidgr worker` processes itself).
    pub in_process_worker: bool,
    /// Give every member `start_campaign` creates an FCM device, whose pushes the `log`
    /// provider records (the system runs with `PIDGR_PUSH_LOG`).
    pub auto_devices: bool,
    /// Provider endpoints (the local fakes); the real ones otherwise.
    pub push_urls: Option<PushUrls>,
    /// The outbound client's name resolution (API and in-process worker); by default a table
    /// in which only `hooks.example.com` resolves (to a public address).
    pub resolver: Option<pidgr::Resolver>,
    /// The production SSRF rules (no plain HTTP, no loopback receivers).
    pub strict_urls: bool,
    /// Audience positions per fan-out range: small, so tests exercise several ranges.
    pub fanout_range_size: u64,
    /// History events after which a run continues as new.
    pub max_history_events: u32,
    /// Deliveries per CALL_WEBHOOK POST: small, for a test to see several parts.
    pub webhook_part_size: i64,
    /// A fresh PostgreSQL database at `PIDGR_TEST_POSTGRES_URL` instead of a SQLite file
    /// (callers check [`postgres_configured`] first).
    pub postgres: bool,
    /// The most recipients a campaign may have (API and worker).
    pub max_recipients: u64,
    /// How often a DEADLINE_CHECK wait re-counts from the database without a signal.
    pub wait_recount_interval_ms: u64,
    /// How often the API starts the workflows of ACTIVE campaigns that have none.
    pub reconcile_interval_ms: u64,
    /// The dev server keeps its state in a file, so [`System::kill_temporal`] and
    /// [`System::restart_temporal`] can kill it and bring it back with everything it had.
    pub restartable_temporal: bool,
    /// The codec server is on (`config.codec_token` holds the operator's token).
    pub codec_server: bool,
    /// The API serves this system's metrics (its in-process worker's too) on a loopback port
    /// of its own (`config.metrics_listen`).
    pub metrics: bool,
}

/// The mobile apps every test system's app-link files name.
pub const E2E_IOS_APP_ID: &str = "ABCDE12345.dev.pidgr.e2e";
pub const E2E_ANDROID_PACKAGE: &str = "dev.pidgr.e2e";
pub const E2E_ANDROID_FINGERPRINT: &str = "14:6D:E9:83:C5:73:06:50:D8:EE:B9:95:2F:34:FC:64:16:A0:83:42:E6:1D:BE:A8:8A:04:96:B2:3F:CF:44:E5";

/// Whether end-to-end tests can run on PostgreSQL; says so when they cannot.
pub fn postgres_configured(test: &str) -> bool {
    let configured = std::env::var(pidgr_store::testing::POSTGRES_URL_VAR).is_ok();
    if !configured {
        eprintln!(
            "{test}: PostgreSQL SKIPPED ({} is not set)",
            pidgr_store::testing::POSTGRES_URL_VAR
        );
    }
    configured
}

#[derive(Clone, Debug)]
pub struct PushUrls {
    pub fcm: String,
    pub fcm_token: String,
    pub apns: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            signal_interval_ms: 1000,
            max_signals_per_run: 500,
            webhook_max_attempts: 3,
            in_process_worker: true,
            auto_devices: true,
            push_urls: None,
            resolver: None,
            strict_urls: false,
            fanout_range_size: 25,
            max_history_events: 2_000,
            webhook_part_size: 10_000,
            postgres: false,
            max_recipients: pidgr_api::DEFAULT_MAX_RECIPIENTS,
            wait_recount_interval_ms: 300_000,
            reconcile_interval_ms: 60_000,
            restartable_temporal: false,
            codec_server: true,
            metrics: false,
        }
    }
}

pub struct System {
    env: Option<WorkflowEnvironment<LocalServer>>,
    temporal_port: u16,
    temporal_db: Option<PathBuf>,
    pub temporal_address: String,
    pub client: Client,
    pub store: Store,
    pub config: Config,
    pub api: String,
    pub http: reqwest::Client,
    pub key: String,
    pub org_id: String,
    auto_devices: bool,
    stop: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl System {
    pub async fn start(options: Options) -> Result<System> {
        // reqwest is built without a default TLS provider; the tests speak plain HTTP anyway.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("pidgr-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let port = free_port();
        let temporal_db = options
            .restartable_temporal
            .then(|| dir.join("temporal.db"));
        let env = start_temporal(port, temporal_db.clone()).await?;
        let listen = StdListener::bind("127.0.0.1:0")?;
        let api_addr = listen.local_addr()?;
        let push_urls = options.push_urls.as_ref();
        let database_url = if options.postgres {
            let base = std::env::var(pidgr_store::testing::POSTGRES_URL_VAR)
                .context("PostgreSQL requested but not configured")?;
            pidgr_store::testing::fresh_postgres_database(&base).await?
        } else {
            format!("sqlite://{}", dir.join("pidgr.db").display())
        };
        let config = Config {
            database_url,
            environment: "development".into(),
            migrate_at_boot: false,
            allow_insecure_webhooks: !options.strict_urls,
            task_queue: format!("pidgr-e2e-{}", uuid::Uuid::new_v4().simple()),
            listen: api_addr,
            public_url: None,
            temporal_ui_url: Some("http://127.0.0.1:8233".into()),
            temporal_namespace: "default".into(),
            console_session_hours: 8,
            signal_interval_ms: options.signal_interval_ms,
            max_signals_per_run: options.max_signals_per_run,
            webhook_max_attempts: options.webhook_max_attempts,
            webhook_initial_retry_ms: 100,
            fanout_page_size: 50,
            fanout_concurrency: 8,
            fanout_range_size: options.fanout_range_size,
            fanout_parallel_ranges: 4,
            // A killed worker's range goes to another worker within seconds.
            fanout_heartbeat_timeout_ms: 5_000,
            max_history_events: options.max_history_events,
            max_recipients: options.max_recipients,
            wait_recount_interval_ms: options.wait_recount_interval_ms,
            reconcile_interval_ms: options.reconcile_interval_ms,
            webhook_part_size: options.webhook_part_size,
            channel_concurrency: 8,
            webhook_secret_overlap_hours: 24,
            secret_key: Some(pidgr_store::SecretKey::generate().to_hex()),
            previous_secret_keys: Vec::new(),
            // The operator's codec token (a fresh one per system: 64 hex characters).
            codec_token: options
                .codec_server
                .then(|| pidgr_store::SecretKey::generate().to_hex()),
            // Both app-link files served (a test clears these on an extra server for the 404).
            ios_app_ids: vec![E2E_IOS_APP_ID.to_owned()],
            android_package: Some(E2E_ANDROID_PACKAGE.to_owned()),
            android_cert_fingerprints: vec![E2E_ANDROID_FINGERPRINT.to_owned()],
            app_url_scheme: None,
            fcm_url: push_urls.map_or(PushEndpoints::FCM, |u| &u.fcm).to_owned(),
            fcm_token_url: push_urls
                .map_or(PushEndpoints::FCM_TOKEN, |u| &u.fcm_token)
                .to_owned(),
            apns_url: push_urls
                .map_or(PushEndpoints::APNS_PRODUCTION, |u| &u.apns)
                .to_owned(),
            apns_sandbox_url: push_urls
                .map_or(PushEndpoints::APNS_SANDBOX, |u| &u.apns)
                .to_owned(),
            push_log: options.push_urls.is_none(),
            rate_limit_per_key: 5_000,
            rate_limit_per_key_burst: 10_000,
            // Every client of a test shares the loopback address, and the permission matrix alone
            // sends hundreds of requests without a valid key: limits.rs tests the limits.
            rate_limit_per_address: 100_000,
            rate_limit_per_address_burst: 100_000,
            max_concurrent_requests: 1_024,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            log_format: pidgr::LogFormat::Text,
            metrics_listen: options
                .metrics
                .then(|| std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))),
            temporal_metrics_listen: None,
            // A registry of this system's own: the tests of one process run side by side.
            metrics: Default::default(),
            resolver: Some(options.resolver.clone().unwrap_or_else(|| {
                pidgr::Resolver(Arc::new(pidgr_outbound::StaticResolver::new().with(
                    "hooks.example.com",
                    ["93.184.215.14".parse().expect("an address")],
                )))
            })),
        };
        // Every payload encrypted, as in production: the API, the worker and the tests' own
        // Temporal calls share this client and so its codec.
        let mut client = env.client().clone();
        client.options_mut().data_converter = pidgr::data_converter(&config)?;
        let store = config.store().await?;
        store.migrate().await?;
        let org = store.create_organisation("E2E").await?;
        let key = store
            .create_api_key(&org.id, "e2e", pidgr_store::SUPER_ADMIN)
            .await?
            .secret;

        let (stop, stop_rx) = watch::channel(false);
        listen.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listen)?;
        let mut shutdown = stop_rx.clone();
        let (api_store, api_client, api_config) = (store.clone(), client.clone(), config.clone());
        tokio::spawn(async move {
            pidgr::serve_api(listener, api_store, api_client, &api_config, async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await
        });
        let mut system = System {
            env: Some(env),
            temporal_port: port,
            temporal_db,
            temporal_address: format!("127.0.0.1:{port}"),
            client,
            store,
            config,
            api: format!("http://{api_addr}"),
            http: reqwest::Client::new(),
            key,
            org_id: org.id,
            auto_devices: options.auto_devices,
            stop,
            workers: Vec::new(),
            dir,
        };
        if options.in_process_worker {
            system.start_in_process_worker()?;
        }
        Ok(system)
    }

    /// Runs the worker on a thread of its own (the SDK's worker future is not `Send`).
    pub fn start_in_process_worker(&mut self) -> Result<()> {
        let (config, store, client, stop) = (
            self.config.clone(),
            self.store.clone(),
            self.client.clone(),
            self.stop.subscribe(),
        );
        self.workers.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime
                .block_on(pidgr::run_worker(&config, store, client, stop))
                .expect("the worker failed");
        }));
        Ok(())
    }

    /// A `pidgr worker` child process configured like this system; killed when dropped.
    pub fn spawn_worker_process(&self) -> Result<tokio::process::Child> {
        self.spawn_worker_process_with(&[])
    }

    /// [`System::spawn_worker_process`] with some settings changed, e.g. another `DATABASE_URL`.
    pub fn spawn_worker_process_with(&self, env: &[(&str, &str)]) -> Result<tokio::process::Child> {
        let mut command = self.pidgr_command("worker")?;
        command.envs(env.iter().copied());
        Ok(command.spawn()?)
    }

    /// SIGKILLs the Temporal dev server (started with [`Options::restartable_temporal`]).
    pub async fn kill_temporal(&mut self) -> Result<()> {
        let env = self.env.take().context("the dev server is not running")?;
        env.shutdown().await.context("killing the dev server")?;
        Ok(())
    }

    /// Starts the dev server again on the same port and database file: the clients of the API
    /// and the workers reconnect by themselves.
    pub async fn restart_temporal(&mut self) -> Result<()> {
        ensure!(
            self.temporal_db.is_some(),
            "start the system with restartable_temporal"
        );
        ensure!(self.env.is_none(), "kill the dev server first");
        self.env = Some(start_temporal(self.temporal_port, self.temporal_db.clone()).await?);
        Ok(())
    }

    /// A `pidgr api` child process configured like this system, listening on `listen`, with
    /// the worker settings the API passes to workflows; killed when dropped.
    pub fn spawn_api_process(&self, listen: &str) -> Result<tokio::process::Child> {
        let c = &self.config;
        Ok(self
            .pidgr_command("api")?
            .env("PIDGR_LISTEN", listen)
            .env("PIDGR_SIGNAL_INTERVAL_MS", c.signal_interval_ms.to_string())
            .env(
                "PIDGR_MAX_SIGNALS_PER_RUN",
                c.max_signals_per_run.to_string(),
            )
            .env(
                "PIDGR_WEBHOOK_MAX_ATTEMPTS",
                c.webhook_max_attempts.to_string(),
            )
            .env("PIDGR_FANOUT_RANGE_SIZE", c.fanout_range_size.to_string())
            .env(
                "PIDGR_FANOUT_PARALLEL_RANGES",
                c.fanout_parallel_ranges.to_string(),
            )
            .env(
                "PIDGR_FANOUT_HEARTBEAT_TIMEOUT_MS",
                c.fanout_heartbeat_timeout_ms.to_string(),
            )
            .env("PIDGR_MAX_HISTORY_EVENTS", c.max_history_events.to_string())
            .env(
                "PIDGR_WAIT_RECOUNT_INTERVAL_MS",
                c.wait_recount_interval_ms.to_string(),
            )
            .env(
                "PIDGR_RECONCILE_INTERVAL_MS",
                c.reconcile_interval_ms.to_string(),
            )
            .spawn()?)
    }

    /// Another API server beside this system's (same database and Temporal) with `tweak`ed
    /// settings, serving until the test ends; its base URL.
    pub async fn api_server_with(&self, tweak: impl FnOnce(&mut Config)) -> Result<String> {
        let mut config = self.config.clone();
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        config.listen = listener.local_addr()?;
        let url = format!("http://{}", config.listen);
        let (store, client) = (self.store.clone(), self.client.clone());
        tokio::spawn(async move {
            pidgr::serve_api(listener, store, client, &config, std::future::pending()).await
        });
        Ok(url)
    }

    /// `pidgr <subcommand>` with this system's settings in its environment.
    pub fn pidgr_command(&self, subcommand: &str) -> Result<tokio::process::Command> {
        let c = &self.config;
        let mut command = tokio::process::Command::new(pidgr_binary()?);
        command
            .arg(subcommand)
            .env("PIDGR_ENVIRONMENT", &c.environment)
            .env("DATABASE_URL", &c.database_url)
            .env(
                "PIDGR_ALLOW_INSECURE_WEBHOOKS",
                c.allow_insecure_webhooks.to_string(),
            )
            .env("PIDGR_TASK_QUEUE", &c.task_queue)
            .env("PIDGR_FANOUT_PAGE_SIZE", c.fanout_page_size.to_string())
            .env("PIDGR_WEBHOOK_PART_SIZE", c.webhook_part_size.to_string())
            .env("PIDGR_FANOUT_CONCURRENCY", c.fanout_concurrency.to_string())
            .env("PIDGR_MAX_RECIPIENTS", c.max_recipients.to_string())
            .env(
                "PIDGR_SECRET_KEY",
                c.secret_key.as_deref().unwrap_or_default(),
            )
            .env("PIDGR_PUSH_LOG", c.push_log.to_string())
            .env("PIDGR_FCM_URL", &c.fcm_url)
            .env("PIDGR_FCM_TOKEN_URL", &c.fcm_token_url)
            .env("PIDGR_APNS_URL", &c.apns_url)
            .env("PIDGR_APNS_SANDBOX_URL", &c.apns_sandbox_url)
            .env("TEMPORAL_ADDRESS", &self.temporal_address)
            .env("TEMPORAL_NAMESPACE", "default")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        Ok(command)
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for worker in self.workers.drain(..) {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
        if let Some(env) = self.env.take() {
            let _ = env.shutdown().await;
        }
        self.store.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    // ---- the API, as a client sees it ----

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        self.call_as(Some(&self.key), method, path, body).await
    }

    /// A request with `key` (or none); answers the status and the JSON body (null if empty).
    pub async fn call_as(
        &self,
        key: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.api));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = StatusCode::from_u16(response.status().as_u16())?;
        let text = response.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| text.clone())?
        };
        Ok((status, value))
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await?;
        if !status.is_success() {
            bail!("GET {path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// Creates and starts a campaign for `users` (external ids); returns its id. The members
    /// are written straight to the store (thousands of them in one test) and put in a group;
    /// the template and the campaign go through the API.
    pub async fn start_campaign(&self, users: &[&str], definition: Value) -> Result<String> {
        let group = self.group_of(users).await?;
        self.start_campaign_for(&group, definition).await
    }

    /// A new group of the members with these external ids (created when missing).
    pub async fn group_of(&self, users: &[&str]) -> Result<String> {
        let group = self
            .store
            .create_set(
                &self.org_id,
                pidgr_store::SetKind::Group,
                &format!("group-{}", uuid::Uuid::new_v4()),
            )
            .await?;
        for member in self.members(users).await? {
            self.store
                .add_set_member(
                    &self.org_id,
                    pidgr_store::SetKind::Group,
                    &group.id,
                    &member.id,
                )
                .await?;
        }
        Ok(group.id)
    }

    /// The members with these external ids, created when missing (with an FCM device for the
    /// `log` provider unless the system runs without `auto_devices`).
    pub async fn members(&self, users: &[&str]) -> Result<Vec<pidgr_store::Member>> {
        let mut members = Vec::new();
        for user in users {
            let member = match self
                .store
                .find_member_by_external_id(&self.org_id, user)
                .await?
            {
                Some(member) => member,
                None => {
                    let member = self
                        .store
                        .create_member(
                            &self.org_id,
                            pidgr_store::NewMember {
                                external_id: (*user).to_owned(),
                                email: format!("{user}@example.com"),
                                display_name: format!("User {user}"),
                                attributes: [("team".to_owned(), format!("team-{user}"))].into(),
                                role_id: "member".into(),
                                manager_id: None,
                            },
                        )
                        .await?;
                    if self.auto_devices {
                        self.store
                            .register_device(
                                &self.org_id,
                                &member.id,
                                pidgr_store::Platform::Fcm,
                                &format!("phone-{user}"),
                            )
                            .await?;
                    }
                    member
                }
            };
            members.push(member);
        }
        Ok(members)
    }

    /// Creates a campaign for the group `group_id` through the API, and starts it.
    pub async fn start_campaign_for(&self, group_id: &str, definition: Value) -> Result<String> {
        let id = self.create_campaign_for(group_id, definition).await?;
        self.start_draft(&id).await?;
        Ok(id)
    }

    /// Creates a draft campaign for the group `group_id` through the API (template
    /// "Security update for {{name}}" / "... by **{{deadline}}**, {{team}}."); returns its id.
    pub async fn create_campaign_for(&self, group_id: &str, definition: Value) -> Result<String> {
        let template = self
            .create(
                "/v1/templates",
                json!({
                    "name": format!("template-{}", uuid::Uuid::new_v4()),
                    "title": "Security update for {{name}}",
                    "body": "Please read and acknowledge by **{{deadline}}**, {{team}}.",
                }),
            )
            .await?;
        let created = self
            .create(
                "/v1/campaigns",
                json!({
                    "name": "Q1 Security Update",
                    "title": "Q1 Security Update",
                    "template_id": template["id"],
                    "audience": { "groups": [group_id] },
                    "definition": definition,
                }),
            )
            .await?;
        Ok(created["id"].as_str().context("campaign id")?.to_owned())
    }

    /// Starts a draft and waits until its deliveries are written.
    pub async fn start_draft(&self, id: &str) -> Result<()> {
        let (status, started) = self
            .post(&format!("/v1/campaigns/{id}/start"), json!({}))
            .await?;
        if status != StatusCode::ACCEPTED {
            bail!("start answered {status}: {started}");
        }
        self.deliveries_written(id).await
    }

    /// Waits until the workflow of a started campaign has written a delivery for every
    /// recipient the start counted.
    pub async fn deliveries_written(&self, campaign: &str) -> Result<()> {
        until(
            &format!("the deliveries of campaign {campaign}"),
            || async {
                let view = self.get(&format!("/v1/campaigns/{campaign}")).await?;
                let written =
                    view["recipients"].as_u64().is_some() && view["total"] == view["recipients"];
                Ok(written.then_some(()))
            },
        )
        .await
    }

    /// POSTs to a creating route and expects 201 Created; returns the body.
    pub async fn create(&self, path: &str, body: Value) -> Result<Value> {
        let (status, created) = self.post(path, body).await?;
        if status != StatusCode::CREATED {
            bail!("POST {path} answered {status}: {created}");
        }
        Ok(created)
    }

    /// Every delivery of the campaign (all pages).
    pub async fn deliveries(&self, campaign: &str) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .get(&format!(
                    "/v1/campaigns/{campaign}/deliveries?after={after}&limit=500"
                ))
                .await?;
            all.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => after = next.to_owned(),
                None => return Ok(all),
            }
        }
    }

    pub async fn activity(&self, campaign: &str) -> Result<Vec<Value>> {
        Ok(self
            .get(&format!("/v1/campaigns/{campaign}/activity?limit=500"))
            .await?["items"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    pub async fn campaign(&self, campaign: &str) -> Result<Value> {
        self.get(&format!("/v1/campaigns/{campaign}")).await
    }

    /// Waits until the campaign's status is `status`.
    pub async fn until_status(&self, campaign: &str, status: &str) -> Result<Value> {
        until(&format!("campaign {campaign} to be {status}"), || async {
            let view = self.campaign(campaign).await?;
            Ok((view["status"] == status).then_some(view))
        })
        .await
    }

    /// Waits until the campaign is in `step` and every delivery has been notified.
    pub async fn until_waiting(&self, campaign: &str, step: &str) -> Result<()> {
        until(
            &format!("campaign {campaign} to wait in {step}"),
            || async {
                let view = self.campaign(campaign).await?;
                Ok((view["current_step"] == step && view["counts"]["pending"] == 0).then_some(()))
            },
        )
        .await
    }

    /// `temporal workflow show --workflow-id … --output json` against this system's dev server,
    /// with `extra` arguments (a codec endpoint, say); its standard output.
    pub async fn workflow_show(&self, workflow_id: &str, extra: &[&str]) -> Result<String> {
        let output = tokio::process::Command::new(temporal_cli()?)
            .args(["workflow", "show", "--workflow-id", workflow_id])
            .args(["--output", "json", "--address", &self.temporal_address])
            .args(extra)
            .output()
            .await
            .context("running temporal workflow show")?;
        ensure!(
            output.status.success(),
            "temporal workflow show failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    }

    /// History length of each run of the campaign's workflow, oldest first.
    pub async fn history_lengths(&self, campaign: &str) -> Result<Vec<i64>> {
        use futures_util::StreamExt;
        let query = format!("WorkflowId = '{}'", pidgr_workflows::workflow_id(campaign));
        let mut runs: Vec<_> = self
            .client
            .list_workflows(query, WorkflowListOptions::default())
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        runs.sort_by_key(|r: &temporalio_client::WorkflowExecution| r.start_time());
        Ok(runs.iter().map(|r| r.history_length()).collect())
    }
}

/// Polls `check` until it yields a value, failing after [`PATIENCE`] with what it waited for.
/// Polling stands in for a notification the system does not offer; it asserts nothing by time.
pub async fn until<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let mut every = tokio::time::interval(POLL_INTERVAL);
    let poll = async {
        loop {
            every.tick().await;
            if let Some(value) = check().await? {
                return Ok(value);
            }
        }
    };
    tokio::time::timeout(PATIENCE, poll)
        .await
        .with_context(|| format!("gave up waiting for {what}"))?
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
    /// The body exactly as it arrived (signatures are over these bytes).
    pub raw: axum::body::Bytes,
    pub at: std::time::Instant,
}

/// A webhook receiver on loopback. Answers the first `failures` requests with 500 (all of them
/// when `failures` is `None`), then 200; hands every request to the test over a channel.
pub struct Receiver {
    pub url: String,
    pub requests: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    pub async fn start(failures: Option<usize>) -> Result<Receiver> {
        let (tx, requests) = mpsc::unbounded_channel();
        let plan: Arc<Mutex<VecDeque<StatusCode>>> = Arc::new(Mutex::new(match failures {
            Some(n) => std::iter::repeat_n(StatusCode::INTERNAL_SERVER_ERROR, n).collect(),
            None => VecDeque::new(),
        }));
        let always_fail = failures.is_none();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                let plan = plan.clone();
                async move {
                    let at = std::time::Instant::now();
                    let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let _ = tx.send(Received {
                        headers,
                        body: parsed,
                        raw: body,
                        at,
                    });
                    let planned = plan.lock().expect("plan").pop_front();
                    match planned {
                        Some(status) => status,
                        None if always_fail => StatusCode::SERVICE_UNAVAILABLE,
                        None => StatusCode::OK,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { url, requests })
    }

    pub async fn next(&mut self) -> Result<Received> {
        tokio::time::timeout(PATIENCE, self.requests.recv())
            .await
            .context("waiting for a webhook request")?
            .context("receiver closed")
    }
}

/// A TCP proxy on loopback that a test can cut: while it is down, the connections it carried
/// are closed and new ones are closed as soon as they are accepted — what a process sees when
/// its database becomes unreachable.
pub struct TcpProxy {
    pub port: u16,
    down: watch::Sender<bool>,
    refused: Arc<std::sync::atomic::AtomicU64>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> Result<TcpProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (down, watch_down) = watch::channel(false);
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = refused.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watch_down.borrow() {
                    // Dropped: closed at once.
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                let mut cut = watch_down.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Ok(TcpProxy {
            port,
            down,
            refused,
        })
    }

    /// Connections closed unserved while the proxy was down: how often the other side tried.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Cuts every connection and refuses new ones (`true`), or carries them again (`false`).
    pub fn set_down(&self, down: bool) {
        let _ = self.down.send(down);
    }
}
