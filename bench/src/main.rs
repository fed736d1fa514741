//! `pidgr-bench` (`make bench`): measures pidgr on this machine against the limits of the same
//! machine, side by side in one run, and prints a table and writes `bench/results.json`.
//!
//! - P1 fan-out recipients/s ÷ the raw rate of pidgr-push's client at the same concurrency
//!   against the same FCM/APNs fakes (per-request latency 20 ms unless `--latency-ms`).
//! - P6 wall time from the start request to the last delivery sent (or failed) for
//!   `--recipients` (100,000; `--million`), read from the campaign's counts: delivery rows may
//!   be written after the start request answers.
//! - P3 ACKs/s through the API from `--ack-clients` (64) clients with p50/p99, per campaign
//!   size (`--ack-sizes`), ÷ raw signals/s to one workflow from as many senders (measured
//!   first, so each ACK row is written with its ratio).
//! - P4 history events and signals per run and runs per campaign, the ACKs arriving while the
//!   fan-out runs.
//! - P5 peak RSS of `pidgr api` and `pidgr worker` (separate processes) and database size per
//!   100,000 deliveries: the growth of the SQLite files from just after the directory import
//!   to just after the ACK phases, each measured with the WAL checkpointed.
//! - P2 tiny campaigns (notify, MARK_MISSED) completed/s ÷ a one-activity workflow's rate.
//!
//! The directory is written with `pidgr members import`, the product's own bulk path. Every
//! wait and phase is bounded; a phase that runs out of time reports what it measured. The run
//! fails only when something does not work (a measurement that cannot be read included), never
//! on a figure: CI runs `make bench-smoke` (`--smoke`, results in target/bench-smoke.json).

mod system;
mod trivial;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use pidgr_push::{
    ApnsCredentials, ApnsEnvironment, FcmCredentials, Notification, PushClient, PushEndpoints,
    PushSettings,
};
use pidgr_store::Store;
use reqwest::Method;
use serde_json::{Value, json};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowGetResultOptions,
    WorkflowSignalOptions, WorkflowStartOptions,
};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::system::{Api, Fakes, Temporal, peak_rss, run, spawn, sqlite_size, until};
use crate::trivial::{BenchActivities, OneActivity, SignalSink};

#[derive(Parser, Debug)]
#[command(
    name = "pidgr-bench",
    about = "Measures pidgr against this machine's limits."
)]
struct Args {
    /// CI size: 1,000 recipients, small baselines, short phases.
    #[arg(long)]
    smoke: bool,
    /// Recipients of the P6/P1 fan-out campaign.
    #[arg(long, default_value_t = 100_000)]
    recipients: u64,
    /// 1,000,000 recipients (overrides --recipients).
    #[arg(long)]
    million: bool,
    /// Campaign sizes the ACK intake (P3, P4) is measured at.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000])]
    ack_sizes: Vec<u64>,
    /// Concurrent ACK clients, and concurrent signal senders for the baseline.
    #[arg(long, default_value_t = 64)]
    ack_clients: usize,
    /// The longest an ACK phase runs; what it reached by then is reported.
    #[arg(long, default_value_t = 120)]
    ack_seconds: u64,
    /// Per-request latency of the push fakes, in milliseconds (0 allowed).
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Sends in flight: the worker's PIDGR_FANOUT_CONCURRENCY and the raw client's.
    #[arg(long, default_value_t = 256)]
    push_concurrency: usize,
    /// Tiny campaigns for P2 (and one-activity workflows for its baseline).
    #[arg(long, default_value_t = 40)]
    tiny_campaigns: usize,
    /// A database for pidgr (must be empty); a fresh SQLite file by default.
    #[arg(long)]
    database_url: Option<String>,
    /// The longest any single wait (a fan-out, a completion) may take.
    #[arg(long, default_value_t = 1800)]
    timeout_seconds: u64,
    /// Where the results go.
    #[arg(long, default_value = "bench/results.json")]
    out: PathBuf,
    /// The folder with the release `pidgr` and `pidgr-push-fakes` (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The Temporal CLI (default: $PIDGR_TEMPORAL_CLI, else .tools/py/bin/temporal).
    #[arg(
        long,
        env = "PIDGR_TEMPORAL_CLI",
        default_value = ".tools/py/bin/temporal"
    )]
    temporal_cli: PathBuf,
}

impl Args {
    fn settle(&mut self) {
        if self.million {
            self.recipients = 1_000_000;
        }
        if self.smoke {
            self.recipients = 1_000;
            self.ack_sizes = vec![1_000];
            self.ack_seconds = self.ack_seconds.min(20);
            self.tiny_campaigns = self.tiny_campaigns.min(5);
            self.timeout_seconds = self.timeout_seconds.min(300);
        }
    }

    fn wait_limit(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}

const TASK_QUEUE: &str = "pidgr-bench";
const BENCH_QUEUE: &str = "pidgr-bench-baselines";
const POLL: Duration = Duration::from_millis(200);

/// One figure of the table: pidgr's, the baseline's, and what the pair means.
#[derive(Debug, serde::Serialize)]
struct Row {
    id: &'static str,
    measure: String,
    value: String,
    baseline: String,
    ratio: Option<f64>,
}

#[derive(Default, serde::Serialize)]
struct Results {
    rows: Vec<Row>,
    raw: BTreeMap<String, Value>,
}

impl Results {
    fn row(
        &mut self,
        id: &'static str,
        measure: String,
        value: String,
        baseline: String,
        ratio: Option<f64>,
    ) {
        println!(
            "  {id} {measure}: {value}{}",
            if baseline.is_empty() {
                String::new()
            } else {
                format!(" (baseline {baseline})")
            }
        );
        self.rows.push(Row {
            id,
            measure,
            value,
            baseline,
            ratio,
        });
    }

    fn raw(&mut self, key: &str, value: Value) {
        self.raw.insert(key.to_owned(), value);
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    args.settle();
    match bench(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pidgr-bench failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Everything the phases share.
struct Bench {
    args: Args,
    api: Api,
    client: Client,
    fakes: Fakes,
    temporal_address: String,
    template_id: String,
    teams: BTreeMap<u64, String>,
}

async fn bench(args: Args) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark's folder")?
            .to_path_buf(),
    };
    let pidgr = bin_dir.join("pidgr");
    let fakes_bin = bin_dir.join("pidgr-push-fakes");
    for binary in [&pidgr, &fakes_bin, &args.temporal_cli] {
        ensure!(
            binary.exists(),
            "{} is missing: run `make bench`",
            binary.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("pidgr-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    println!("==> pidgr-bench: work folder {}", dir.display());
    let started = Instant::now();

    let temporal = Temporal::start(&args.temporal_cli, &dir).await?;
    let fakes = Fakes::start(&fakes_bin, args.latency_ms).await?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("pidgr.db").display()));
    let api_port = system::free_port()?;
    let largest = args
        .ack_sizes
        .iter()
        .copied()
        .chain([args.recipients])
        .max()
        .unwrap_or(1);
    let env: Vec<(String, String)> = [
        ("PIDGR_ENVIRONMENT", "development".into()),
        ("DATABASE_URL", database_url.clone()),
        ("PIDGR_LISTEN", format!("127.0.0.1:{api_port}")),
        ("TEMPORAL_ADDRESS", temporal.address.clone()),
        ("TEMPORAL_NAMESPACE", "default".into()),
        ("PIDGR_TASK_QUEUE", TASK_QUEUE.into()),
        (
            "PIDGR_SECRET_KEY",
            uuid::Uuid::new_v4().simple().to_string().repeat(2),
        ),
        ("PIDGR_FCM_URL", fakes.url("fcm_url")),
        ("PIDGR_FCM_TOKEN_URL", fakes.url("fcm_token_url")),
        ("PIDGR_APNS_URL", fakes.url("apns_url")),
        ("PIDGR_APNS_SANDBOX_URL", fakes.url("apns_url")),
        (
            "PIDGR_FANOUT_CONCURRENCY",
            args.push_concurrency.to_string(),
        ),
        ("PIDGR_MAX_RECIPIENTS", largest.max(100_000).to_string()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    run(&pidgr, &["migrate"], &env).await?;
    let key = run(&pidgr, &["org", "create", "Bench"], &env)
        .await?
        .trim()
        .to_owned();
    let mut results = Results::default();

    // The directory, through the product's bulk path, before any process holds the database.
    let file = dir.join("members.jsonl");
    let sizes: Vec<u64> = args
        .ack_sizes
        .iter()
        .copied()
        .chain([args.recipients, 1])
        .collect();
    write_directory(&file, largest, &sizes)?;
    let import_started = Instant::now();
    let summary = run(
        &pidgr,
        &[
            "members",
            "import",
            &file.display().to_string(),
            "--org",
            "Bench",
        ],
        &env,
    )
    .await?;
    let import_seconds = import_started.elapsed().as_secs_f64();
    println!("    {}", summary.trim());
    results.row(
        "--",
        format!("`pidgr members import` of {largest} members"),
        format!(
            "{import_seconds:.1} s ({:.0} members/s)",
            largest as f64 / import_seconds
        ),
        String::new(),
        None,
    );

    // P5's baseline: the database with its directory, before any campaign.
    let sqlite = match sqlite_size(&database_url) {
        Some(_) => Some(
            Store::connect(&database_url)
                .await
                .context("opening the database to measure it")?,
        ),
        None => None,
    };
    let size_after_import = database_size(sqlite.as_ref(), &database_url).await?;

    let mut api_process = spawn(&pidgr, &["api"], &env, &dir.join("api.log"))?;
    let mut worker_process = spawn(&pidgr, &["worker"], &env, &dir.join("worker.log"))?;
    let api = Api::new(
        format!("http://127.0.0.1:{api_port}"),
        key,
        args.ack_clients * 2,
    )?;
    until("the API", Duration::from_secs(60), POLL, || async {
        Ok(matches!(
            api.call(Method::GET, "/v1/organisation", None).await,
            Ok((200, _))
        )
        .then_some(()))
    })
    .await?;
    api.expect(
        Method::PUT,
        "/v1/integrations/push/fcm",
        Some(&fakes.ready["fcm_credentials"]),
        200,
    )
    .await?;
    api.expect(
        Method::PUT,
        "/v1/integrations/push/apns",
        Some(&fakes.ready["apns_credentials"]),
        200,
    )
    .await?;
    let template = api
        .expect(
            Method::POST,
            "/v1/templates",
            Some(&json!({
                "name": "Bench notice",
                "title": "Notice for {{name}}",
                "body": "Please read and acknowledge by **{{deadline}}** ({{site}}).",
            })),
            201,
        )
        .await?;
    let teams = team_ids(&api).await?;
    let connection = Connection::connect(
        ConnectionOptions::new(Url::parse(&format!("http://{}", temporal.address))?).build(),
    )
    .await?;
    let client = Client::new(connection, ClientOptions::new("default").build())?;
    let baseline_worker = start_baseline_worker(client.clone());

    let mut bench = Bench {
        args,
        api,
        client,
        fakes,
        temporal_address: temporal.address.clone(),
        template_id: template["id"].as_str().context("template id")?.to_owned(),
        teams,
    };

    println!("==> P2 tiny campaigns and one-activity workflows");
    p2_tiny(&mut bench, &mut results).await?;
    println!("==> P1/P6 fan-out of {} recipients", bench.args.recipients);
    p1_p6_fan_out(&mut bench, &mut results).await?;
    println!("==> P3 baseline: signals to one workflow");
    let signal_rate = p3_signal_baseline(&mut bench, &mut results).await?;
    for size in bench.args.ack_sizes.clone() {
        println!("==> P3/P4 ACKs into a campaign of {size}");
        p3_p4_acks(&mut bench, &mut results, size, signal_rate).await?;
    }
    let size_after_acks = database_size(sqlite.as_ref(), &database_url).await?;

    // P5: peaks over the whole run.
    let mb =
        |bytes: Option<u64>| bytes.map_or("?".to_owned(), |b| format!("{:.0} MB", b as f64 / 1e6));
    let (api_rss, worker_rss) = (
        api_process.id().and_then(peak_rss),
        worker_process.id().and_then(peak_rss),
    );
    results.row(
        "P5",
        "peak RSS, `pidgr api`".into(),
        mb(api_rss),
        String::new(),
        None,
    );
    results.row(
        "P5",
        "peak RSS, `pidgr worker`".into(),
        mb(worker_rss),
        String::new(),
        None,
    );
    results.raw("api_peak_rss_bytes", json!(api_rss));
    results.raw("worker_peak_rss_bytes", json!(worker_rss));
    let total_deliveries: u64 = results
        .raw
        .get("deliveries_written")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    match (size_after_import, size_after_acks) {
        (Some(before), Some(after)) if total_deliveries > 0 => {
            let grown = after.saturating_sub(before);
            let per = grown as f64 * 100_000.0 / total_deliveries as f64;
            results.row(
                "P5",
                format!(
                    "database size per 100,000 deliveries ({total_deliveries} written; SQLite files' growth after the directory import, WAL checkpointed)"
                ),
                format!("{:.0} MB", per / 1e6),
                String::new(),
                None,
            );
            results.raw("database_bytes", json!(after));
            results.raw("database_bytes_after_import", json!(before));
        }
        _ => results.raw("database_bytes", Value::Null),
    }

    let _ = api_process.start_kill();
    let _ = worker_process.start_kill();
    drop(baseline_worker);
    results.raw("machine", machine());
    results.raw("args", json!(format!("{:?}", bench.args)));
    results.raw("total_seconds", json!(started.elapsed().as_secs()));
    print_table(&results);
    if let Some(parent) = bench
        .args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&bench.args.out, serde_json::to_string_pretty(&results)?)?;
    println!("wrote {}", bench.args.out.display());
    drop(temporal);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The SQLite database's size on disk with its write-ahead log emptied first (a log's size
/// says how long since the last checkpoint, not how much is stored); `None` when the database
/// is not a SQLite file. A checkpoint the running API and worker keep postponing is retried
/// for up to a minute, then fails the run rather than report a size that includes the log.
async fn database_size(store: Option<&Store>, url: &str) -> Result<Option<u64>> {
    let Some(store) = store else { return Ok(None) };
    until(
        "a checkpoint of the database's WAL",
        Duration::from_secs(60),
        POLL,
        || async { Ok(store.checkpoint_wal().await?.then_some(())) },
    )
    .await?;
    Ok(sqlite_size(url))
}

/// Members `b-0` … as JSON lines: three in four with an FCM token, the rest APNs; member `i`
/// in team `first-K` for every size `K > i`, so each measured campaign has a team of its size.
fn write_directory(path: &Path, members: u64, sizes: &[u64]) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    for i in 0..members {
        let teams: Vec<String> = sizes
            .iter()
            .filter(|k| i < **k)
            .map(|k| format!("first-{k}"))
            .collect();
        let device = if i % 4 == 3 {
            json!({ "apns_token": format!("{i:064x}") })
        } else {
            json!({ "fcm_token": format!("fcm-bench-{i}") })
        };
        let mut line = json!({
            "external_id": format!("b-{i}"),
            "email": format!("b{i}@bench.test"),
            "display_name": format!("Member {i}"),
            "attributes": { "site": format!("site-{}", i % 50) },
            "teams": teams,
        });
        line.as_object_mut()
            .context("an object")?
            .extend(device.as_object().cloned().unwrap_or_default());
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// Team sizes by name `first-K`.
async fn team_ids(api: &Api) -> Result<BTreeMap<u64, String>> {
    let page = api.get("/v1/teams?limit=500").await?;
    let mut teams = BTreeMap::new();
    for team in page["items"].as_array().cloned().unwrap_or_default() {
        if let (Some(name), Some(id)) = (team["name"].as_str(), team["id"].as_str())
            && let Some(size) = name.strip_prefix("first-").and_then(|s| s.parse().ok())
        {
            teams.insert(size, id.to_owned());
        }
    }
    Ok(teams)
}

impl Bench {
    /// Creates a campaign for the team of `size` with `definition`; answers its id.
    async fn create_campaign(&self, size: u64, definition: Value) -> Result<String> {
        let team = self
            .teams
            .get(&size)
            .with_context(|| format!("no team of {size}"))?;
        let created = self
            .api
            .expect(
                Method::POST,
                "/v1/campaigns",
                Some(&json!({
                    "name": format!("bench {size} {}", uuid::Uuid::new_v4().simple()),
                    "title": "Bench notice",
                    "template_id": self.template_id,
                    "audience": { "teams": [team] },
                    "definition": definition,
                })),
                201,
            )
            .await?;
        Ok(created["id"].as_str().context("campaign id")?.to_owned())
    }

    async fn start(&self, campaign: &str) -> Result<Duration> {
        let at = Instant::now();
        self.api
            .expect(
                Method::POST,
                &format!("/v1/campaigns/{campaign}/start"),
                Some(&json!({})),
                202,
            )
            .await?;
        Ok(at.elapsed())
    }

    async fn counts(&self, campaign: &str) -> Result<Value> {
        self.api.get(&format!("/v1/campaigns/{campaign}")).await
    }

    async fn cancel(&self, campaign: &str) -> Result<()> {
        let (status, body) = self
            .api
            .call(
                Method::POST,
                &format!("/v1/campaigns/{campaign}/cancel"),
                None,
            )
            .await?;
        // 409: it had ended already.
        ensure!(
            matches!(status, 200 | 202 | 409),
            "cancel answered {status}: {body}"
        );
        Ok(())
    }
}

/// Notify, wait up to two hours (ended early when everyone acknowledged), mark the rest missed.
fn waiting_definition() -> Value {
    json!({ "version": 1, "start": "notify", "steps": [
        { "id": "notify", "type": "SEND_NOTIFICATION",
          "config": { "channels": ["push"], "variables": { "deadline": "Friday" } },
          "transitions": { "next": "wait" } },
        { "id": "wait", "type": "DEADLINE_CHECK", "config": { "duration": "2h" },
          "transitions": { "deadline": "missed", "all_acknowledged": "missed" } },
        { "id": "missed", "type": "MARK_MISSED", "config": {}, "transitions": {} }
    ]})
}

fn tiny_definition() -> Value {
    json!({ "version": 1, "start": "notify", "steps": [
        { "id": "notify", "type": "SEND_NOTIFICATION",
          "config": { "channels": ["push"], "variables": { "deadline": "Friday" } },
          "transitions": { "next": "missed" } },
        { "id": "missed", "type": "MARK_MISSED", "config": {}, "transitions": {} }
    ]})
}

/// P2: tiny campaigns completed per second, started together (created beforehand), against
/// one-activity workflows started the same way on the same server.
async fn p2_tiny(bench: &mut Bench, results: &mut Results) -> Result<()> {
    let n = bench.args.tiny_campaigns;
    let mut campaigns = Vec::with_capacity(n);
    for _ in 0..n {
        campaigns.push(bench.create_campaign(1, tiny_definition()).await?);
    }
    let started = Instant::now();
    futures_util::future::try_join_all(campaigns.iter().map(|c| bench.start(c))).await?;
    for campaign in &campaigns {
        until(
            &format!("tiny campaign {campaign} to complete"),
            bench.args.wait_limit(),
            Duration::from_millis(50),
            || async {
                let view = bench.counts(campaign).await?;
                ensure!(
                    view["status"] != "FAILED",
                    "campaign {campaign} failed: {view}"
                );
                Ok((view["status"] == "COMPLETED").then_some(()))
            },
        )
        .await?;
    }
    let tiny_rate = n as f64 / started.elapsed().as_secs_f64();
    add_deliveries(results, n as u64);

    let started = Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    futures_util::future::try_join_all((0..n).map(|i| {
        let client = bench.client.clone();
        let run_id = run_id.clone();
        async move {
            let handle = client
                .start_workflow(
                    OneActivity::run,
                    format!("tiny {i}"),
                    WorkflowStartOptions::new(BENCH_QUEUE, format!("bench-one-{run_id}-{i}"))
                        .build(),
                )
                .await?;
            handle
                .get_result(WorkflowGetResultOptions::default())
                .await?;
            anyhow::Ok(())
        }
    }))
    .await?;
    let trivial_rate = n as f64 / started.elapsed().as_secs_f64();
    results.row(
        "P2",
        format!("tiny campaigns completed/s ({n} at once)"),
        format!("{tiny_rate:.1}/s"),
        format!("{trivial_rate:.1}/s one-activity workflows"),
        Some(tiny_rate / trivial_rate),
    );
    Ok(())
}

/// P1 and P6: one campaign of `--recipients`, from the start request until no delivery is
/// pending; then the raw client at the same concurrency against the same fakes.
async fn p1_p6_fan_out(bench: &mut Bench, results: &mut Results) -> Result<()> {
    let n = bench.args.recipients;
    let campaign = bench.create_campaign(n, waiting_definition()).await?;
    let started = Instant::now();
    let start_request = bench.start(&campaign).await?;
    // Polled by hand rather than with `until`: the poll also notes when every row existed.
    let mut rows_at = None;
    let deadline = started + bench.args.wait_limit();
    let view = loop {
        let view = bench.counts(&campaign).await?;
        ensure!(
            view["status"] != "FAILED",
            "campaign {campaign} failed: {view}"
        );
        let total = view["total"].as_u64().unwrap_or(0);
        if total == n && rows_at.is_none() {
            rows_at = Some(started.elapsed());
        }
        if total == n && view["counts"]["pending"].as_u64() == Some(0) {
            break view;
        }
        ensure!(
            Instant::now() < deadline,
            "campaign {campaign} did not notify {n} in time: {view}"
        );
        tokio::time::sleep(POLL).await;
    };
    let wall = started.elapsed();
    let notified = view["counts"]["sent"].as_u64().unwrap_or(0);
    let failed = view["counts"]["failed"].as_u64().unwrap_or(0);
    ensure!(failed == 0, "{failed} of {n} deliveries failed: {view}");
    bench.cancel(&campaign).await?;
    add_deliveries(results, n);

    let raw_n = n.min(if bench.args.smoke { 1_000 } else { 50_000 });
    let raw_rate = raw_push_rate(bench, raw_n).await?;
    let fan_out_rate = n as f64 / wall.as_secs_f64();
    results.row(
        "P1",
        format!(
            "fan-out recipients/s ({n}, fakes at {} ms)",
            bench.args.latency_ms
        ),
        format!("{fan_out_rate:.0}/s"),
        format!(
            "{raw_rate:.0}/s raw client, {} in flight",
            bench.args.push_concurrency
        ),
        Some(fan_out_rate / raw_rate),
    );
    results.row(
        "P6",
        format!("start request → last delivery sent, {n} recipients"),
        format!("{:.1} s", wall.as_secs_f64()),
        format!(
            "start request {:.2} s; all rows written after {:.1} s",
            start_request.as_secs_f64(),
            rows_at.unwrap_or(wall).as_secs_f64()
        ),
        None,
    );
    results.raw(
        "p6",
        json!({ "recipients": n, "wall_seconds": wall.as_secs_f64(), "sent": notified,
                "start_request_seconds": start_request.as_secs_f64(),
                "rows_written_seconds": rows_at.map(|d| d.as_secs_f64()) }),
    );
    Ok(())
}

fn add_deliveries(results: &mut Results, n: u64) {
    let before = results
        .raw
        .get("deliveries_written")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    results.raw("deliveries_written", json!(before + n));
}

/// pidgr-push's own client, `--push-concurrency` sends in flight, the same mix of FCM and APNs
/// tokens as the directory, against the same fakes.
async fn raw_push_rate(bench: &Bench, n: u64) -> Result<f64> {
    let ready = &bench.fakes.ready;
    let client = PushClient::new(PushSettings {
        endpoints: PushEndpoints {
            fcm_base_url: bench.fakes.url("fcm_url"),
            fcm_token_url: bench.fakes.url("fcm_token_url"),
            apns_production_url: bench.fakes.url("apns_url"),
            apns_sandbox_url: bench.fakes.url("apns_url"),
        },
        ..Default::default()
    })?;
    let fcm = Arc::new(FcmCredentials::from_service_account_json(
        &ready["fcm_credentials"]["service_account"].to_string(),
    )?);
    let a = &ready["apns_credentials"];
    let apns = Arc::new(ApnsCredentials::new(
        a["team_id"].as_str().unwrap_or_default(),
        a["key_id"].as_str().unwrap_or_default(),
        a["bundle_id"].as_str().unwrap_or_default(),
        ApnsEnvironment::Production,
        a["private_key"].as_str().unwrap_or_default(),
    )?);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..bench.args.push_concurrency).map(|_| {
        let (client, fcm, apns, next) = (client.clone(), fcm.clone(), apns.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                if i >= n {
                    return anyhow::Ok(());
                }
                let delivery = format!("raw-{i}");
                let notification = Notification {
                    title: "Notice for Member",
                    body: "Please read and acknowledge by Friday (site-1).",
                    deeplink: "http://127.0.0.1/c/raw",
                    campaign_id: "raw",
                    delivery_id: &delivery,
                    collapse_id: None,
                };
                if i % 4 == 3 {
                    client
                        .send_apns(&apns, &format!("{i:064x}"), &notification)
                        .await?;
                } else {
                    client
                        .send_fcm(&fcm, &format!("fcm-raw-{i}"), &notification)
                        .await?;
                }
            }
        })
    });
    for worker in futures_util::future::join_all(workers).await {
        worker??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// P3 and P4: a campaign of `size` started, and as soon as its deliveries exist, ACKs from
/// `--ack-clients` clients (during the fan-out, as a real audience would) for at most
/// `--ack-seconds`; then its workflow history.
async fn p3_p4_acks(
    bench: &mut Bench,
    results: &mut Results,
    size: u64,
    signal_rate: f64,
) -> Result<()> {
    let campaign = bench.create_campaign(size, waiting_definition()).await?;
    bench.start(&campaign).await?;
    add_deliveries(results, size);
    until(
        &format!("campaign {campaign}'s {size} deliveries"),
        bench.args.wait_limit(),
        POLL,
        || async {
            let view = bench.counts(&campaign).await?;
            Ok((view["total"].as_u64() == Some(size)).then_some(()))
        },
    )
    .await?;
    let mut ids = Vec::with_capacity(size as usize);
    let mut after = String::new();
    loop {
        let page = bench
            .api
            .get(&format!(
                "/v1/campaigns/{campaign}/deliveries?limit=500&after={after}"
            ))
            .await?;
        for item in page["items"].as_array().cloned().unwrap_or_default() {
            ids.push(item["id"].as_str().context("delivery id")?.to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    ensure!(
        ids.len() as u64 == size,
        "{} deliveries listed of {size}",
        ids.len()
    );
    let pending_at_start = bench.counts(&campaign).await?["counts"]["pending"]
        .as_u64()
        .unwrap_or(0);

    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(bench.args.ack_seconds);
    let started = Instant::now();
    let clients = (0..bench.args.ack_clients).map(|_| {
        let (api, ids, next) = (bench.api.clone(), ids.clone(), next.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut refused = BTreeMap::<u16, u64>::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                let at = Instant::now();
                let (status, _) = api
                    .call(
                        Method::POST,
                        &format!("/v1/deliveries/{id}/ack"),
                        Some(&json!({ "source": "inbox" })),
                    )
                    .await?;
                if status == 200 {
                    latencies.push(at.elapsed());
                } else {
                    *refused.entry(status).or_default() += 1;
                }
            }
            anyhow::Ok((latencies, refused))
        })
    });
    let mut latencies = Vec::new();
    let mut refused = BTreeMap::<u16, u64>::new();
    for client in futures_util::future::join_all(clients).await {
        let (mine, theirs) = client??;
        latencies.extend(mine);
        for (status, count) in theirs {
            *refused.entry(status).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    ensure!(
        !latencies.is_empty(),
        "no ACK was accepted (refusals by status: {refused:?})"
    );
    latencies.sort_unstable();
    let quantile =
        |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    let (p50, p99) = (quantile(0.5), quantile(0.99));
    let acked = latencies.len();
    let rate = acked as f64 / elapsed;
    let view = bench.counts(&campaign).await?;
    let pending_at_end = view["counts"]["pending"].as_u64().unwrap_or(0);
    results.row(
        "P3",
        format!(
            "ACKs/s through the API, campaign of {size}, {} clients",
            bench.args.ack_clients
        ),
        format!("{rate:.0}/s, p50 {p50:.0} ms, p99 {p99:.0} ms ({acked} ACKs in {elapsed:.0} s)"),
        format!("{signal_rate:.0}/s raw signals"),
        Some(rate / signal_rate),
    );
    results.raw(
        &format!("p3_{size}"),
        json!({ "acks": acked, "seconds": elapsed, "per_second": rate, "p50_ms": p50, "p99_ms": p99,
                "refused": refused, "pending_when_acks_began": pending_at_start,
                "pending_when_acks_ended": pending_at_end }),
    );

    // P4, while the campaign is still running (or just done): every run of its workflow.
    let history = history(bench, &pidgr_workflows::workflow_id(&campaign)).await?;
    let runs = history.len();
    let max_events = history.iter().map(|r| r.0).max().unwrap_or(0);
    let max_signals = history.iter().map(|r| r.1).max().unwrap_or(0);
    let signals: u64 = history.iter().map(|r| r.1).sum();
    results.row(
        "P4",
        format!(
            "history, campaign of {size} ({} ACKs during the fan-out)",
            if pending_at_start > 0 { "with" } else { "without" }
        ),
        format!("{runs} run(s); at most {max_events} events and {max_signals} signals in a run; {signals} signals in all"),
        String::new(),
        None,
    );
    results.raw(&format!("p4_{size}"), json!({ "runs": history.iter().map(|(e, s)| json!({"events": e, "signals": s})).collect::<Vec<_>>() }));
    bench.cancel(&campaign).await?;
    Ok(())
}

/// Events and signals of every run of a workflow, oldest first, through the Temporal CLI.
async fn history(bench: &Bench, workflow_id: &str) -> Result<Vec<(u64, u64)>> {
    let address = bench.temporal_address.clone();
    let cli = bench.args.temporal_cli.clone();
    let query = format!("WorkflowId = '{workflow_id}'");
    let listed = run(
        &cli,
        &[
            "workflow",
            "list",
            "--address",
            &address,
            "--query",
            &query,
            "--output",
            "json",
        ],
        &[],
    )
    .await?;
    // Every step fails loudly: a listing not understood must not read as "0 run(s)".
    let listed: Value = serde_json::from_str(&listed)
        .with_context(|| format!("temporal workflow list --output json answered {listed:?}"))?;
    let listed = listed
        .as_array()
        .with_context(|| format!("temporal workflow list: not a JSON array: {listed}"))?;
    let mut runs = listed
        .iter()
        .map(|r| {
            let run_id = r["execution"]["runId"]
                .as_str()
                .with_context(|| format!("temporal workflow list: a run without runId: {r}"))?;
            let start = r["startTime"]
                .as_str()
                .with_context(|| format!("temporal workflow list: a run without startTime: {r}"))?;
            Ok((start.to_owned(), run_id.to_owned()))
        })
        .collect::<Result<Vec<(String, String)>>>()?;
    ensure!(
        !runs.is_empty(),
        "temporal workflow list found no run of {workflow_id}"
    );
    runs.sort();
    let mut out = Vec::new();
    for (_, run_id) in runs {
        let shown = run(
            &cli,
            &[
                "workflow",
                "show",
                "--address",
                &address,
                "--workflow-id",
                workflow_id,
                "--run-id",
                &run_id,
                "--output",
                "json",
            ],
            &[],
        )
        .await?;
        let shown: Value =
            serde_json::from_str(&shown).context("temporal workflow show --output json")?;
        let events = shown["events"].as_array().with_context(|| {
            format!("temporal workflow show: no events array for run {run_id} of {workflow_id}")
        })?;
        ensure!(
            !events.is_empty(),
            "temporal workflow show: run {run_id} of {workflow_id} has no events"
        );
        let signals = events
            .iter()
            .filter(|e| {
                e["eventType"]
                    .as_str()
                    .is_some_and(|t| t.contains("SIGNALED") && t.contains("WORKFLOW_EXECUTION"))
            })
            .count();
        out.push((events.len() as u64, signals as u64));
    }
    Ok(out)
}

/// P3's baseline: signals to one running workflow from `--ack-clients` senders at once;
/// answers the rate, which the ACK rows are divided by.
async fn p3_signal_baseline(bench: &mut Bench, results: &mut Results) -> Result<f64> {
    let n: u64 = if bench.args.smoke { 300 } else { 3_000 };
    let id = format!("bench-sink-{}", uuid::Uuid::new_v4().simple());
    let handle = bench
        .client
        .start_workflow(
            SignalSink::run,
            n,
            WorkflowStartOptions::new(BENCH_QUEUE, id.clone()).build(),
        )
        .await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders = (0..bench.args.ack_clients).map(|_| {
        let (client, next, id) = (bench.client.clone(), next.clone(), id.clone());
        tokio::spawn(async move {
            let handle = client.get_workflow_handle::<SignalSink>(id);
            while (next.fetch_add(1, Ordering::Relaxed) as u64) < n {
                handle
                    .signal(SignalSink::poke, 1, WorkflowSignalOptions::default())
                    .await?;
            }
            anyhow::Ok(())
        })
    });
    for sender in futures_util::future::join_all(senders).await {
        sender??;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    handle
        .get_result(WorkflowGetResultOptions::default())
        .await?;
    results.raw("signals_per_second", json!(rate));
    results.row(
        "P3",
        format!(
            "baseline: signals/s to one workflow, {} senders",
            bench.args.ack_clients
        ),
        format!("{rate:.0}/s ({n} signals)"),
        String::new(),
        None,
    );
    Ok(rate)
}

/// The baselines' worker, on a thread of its own (the SDK's worker future is not `Send`);
/// stops when the returned guard is dropped.
fn start_baseline_worker(client: Client) -> BaselineWorker {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let sdk = Runtime::from_current_tokio(Default::default()).expect("the SDK runtime");
            let options = WorkerOptions::new(BENCH_QUEUE)
                .register_workflow::<OneActivity>()
                .and_then(|o| o.register_workflow::<SignalSink>())
                .expect("the baseline workflows register")
                .register_activities(BenchActivities)
                .build();
            let mut worker = Worker::new(&sdk, client, options).expect("the baseline worker");
            let shutdown = worker.shutdown_handle();
            let run = worker.run();
            tokio::pin!(run);
            tokio::select! {
                _ = &mut run => return,
                _ = stopped.wait_for(|s| *s) => shutdown(),
            }
            let _ = run.await;
        });
    });
    BaselineWorker {
        stop,
        thread: Some(thread),
    }
}

struct BaselineWorker {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for BaselineWorker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // Not joined: the process is ending, and a worker that takes long to drain must not
        // hold the results back.
        self.thread.take();
    }
}

/// What the figures were measured on.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GB", kib as f64 / 1024.0 / 1024.0));
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": memory,
        "os": std::env::consts::OS,
    })
}

fn print_table(results: &Results) {
    println!();
    println!("| | measure | pidgr | baseline | ratio |");
    println!("|---|---|---|---|---|");
    for row in &results.rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            row.id,
            row.measure,
            row.value,
            row.baseline,
            row.ratio.map_or(String::new(), |r| format!("{r:.2}"))
        );
    }
    println!();
    println!(
        "machine: {}",
        results.raw.get("machine").cloned().unwrap_or_default()
    );
}
