//! `pidgr`: serve | api | worker | migrate | check | temporal setup | validate | simulate |
//! org create | key create | members import | campaign status | audit verify | dev-key.

mod audit;
mod campaign_status;
mod import;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pidgr::check::{self, MissingDatabase};
use pidgr::{Config, run_worker, serve_api};
use pidgr_store::SUPER_ADMIN;
use pidgr_workflows::definition::parse;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "pidgr",
    version,
    about = "Campaigns that must be read and acknowledged, run as durable Temporal workflows."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API and worker in one process (what `make dev` runs).
    Serve(#[command(flatten)] Config),
    /// The HTTP API only.
    Api(#[command(flatten)] Config),
    /// The campaign worker only.
    Worker(#[command(flatten)] Config),
    /// Applies database migrations and prints which (the deploy step before a rolling
    /// restart; development processes also migrate when they start).
    Migrate(#[command(flatten)] Config),
    /// Checks everything a process needs (settings, the secret key, the database and its
    /// migrations, Temporal, the namespace and its search attributes) and prints `ok` or the fix
    /// for each; exits non-zero when anything fails. `serve`, `api` and `worker` run the same
    /// checks when they start and refuse to start with the same messages.
    Check(#[command(flatten)] Config),
    /// The Temporal namespace Pidgr runs in.
    #[command(subcommand)]
    Temporal(TemporalCommand),
    /// Validates a workflow definition file; exits 1 and lists every problem if it is invalid.
    Validate {
        file: PathBuf,
        #[command(flatten)]
        config: Config,
    },
    /// Dry-runs a workflow definition on a simulated clock: FILE holds `definition`, `audience`
    /// (`{"size": N}` or `{"members": [{"id", "manager"}]}`) and `scenario` (who reads or
    /// acknowledges when). Prints each step's simulated start, end, outcome and who it reached,
    /// then how every delivery ends; exits 1 with every problem when the input is invalid.
    Simulate {
        file: PathBuf,
        /// Print the timeline as JSON (the API's answer) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: Config,
    },
    /// Organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// An organisation's directory.
    #[command(subcommand)]
    Members(MembersCommand),
    /// An organisation's campaigns.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// API keys, for operators (a way back in when an organisation has lost its keys).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Signed audit exports.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Secrets sealed at rest with PIDGR_SECRET_KEY.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Prints a Super Admin API key for the "Development" organisation (created if missing).
    /// With a key file, the key kept there is printed again as long as it still works, so
    /// `make dev` shows the same key every time; otherwise a new key is made (and kept there).
    DevKey {
        /// Where the key is kept between runs (`make dev`: .data/dev.key).
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[command(flatten)]
        config: Config,
    },
}

#[derive(Subcommand)]
enum TemporalCommand {
    /// Registers the search attributes Pidgr sets (PidgrCampaignId, PidgrOrganisationId,
    /// PidgrCampaignStatus, PidgrCampaignName) on the configured namespace, through the operator
    /// service; those already there are left alone. Needs the rights to change the namespace.
    Setup(#[command(flatten)] Config),
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Re-seals every stored secret (webhook channel secrets, push credentials, CALL_WEBHOOK
    /// header values) with PIDGR_SECRET_KEY, opening each with that key or one of
    /// PIDGR_PREVIOUS_SECRET_KEYS, seals the CALL_WEBHOOK header values still stored in clear
    /// (definitions and draft campaigns stored before sealing existed), and prints how many
    /// were changed. Passes repeat until one finds nothing to change; if rows keep changing
    /// (a process still running with the previous key), it exits with an error after a few
    /// passes. Values already current are left alone, so it is safe to run again (after a
    /// crash, say); once it succeeds, the previous keys can be removed.
    RotateKey {
        /// Rows read at a time.
        #[arg(long, default_value_t = 500)]
        batch_size: i64,
        #[command(flatten)]
        config: Config,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Creates an organisation with its four system roles and prints a Super Admin API key —
    /// the only time the key is shown.
    Create {
        name: String,
        #[command(flatten)]
        config: Config,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Creates an API key with the given role and prints its secret — the only time it is
    /// shown.
    Create {
        /// The organisation: its id or its exact name.
        #[arg(long)]
        org: String,
        /// The role's id: `super_admin`, `admin`, `manager`, `member` or a custom role's id.
        #[arg(long)]
        role: String,
        /// What the key is for, as the API lists it.
        #[arg(long, default_value = "created with pidgr key create")]
        name: String,
        #[command(flatten)]
        config: Config,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Checks an audit export (GET /v1/campaigns/{id}/audit, JSON lines or CSV) offline: every
    /// record's hash chained from the first to the signed trailer, and the trailer's Ed25519
    /// signature. Prints `ok` with what the file holds, or the first bad record's line and
    /// why; exits 1 when the file does not verify.
    Verify {
        file: PathBuf,
        /// The organisation's public key in base64 (`public_key` of
        /// GET /v1/organisation/signing-keys).
        #[arg(
            long,
            required_unless_present = "key_file",
            conflicts_with = "key_file"
        )]
        public_key: Option<String>,
        /// A file with the answer of GET /v1/organisation/signing-keys (the trailer's key_id
        /// picks the key), one key object, or a base64 key.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The campaign the file must be the export of: the signed trailer's campaign id is
        /// checked against it (a genuine export of another campaign is refused).
        #[arg(long)]
        campaign: Option<String>,
        #[command(flatten)]
        config: Config,
    },
}

#[derive(Subcommand)]
enum CampaignCommand {
    /// Shows a campaign's status, current step and counts, read from the database. On a
    /// terminal a progress bar (resolved deliveries of all recipients) is redrawn in place;
    /// otherwise each change is one plain line.
    Status {
        /// The campaign's id.
        id: String,
        /// The organisation: its id or its exact name.
        #[arg(long)]
        org: String,
        /// Keeps reading (each second) until the campaign is COMPLETED or CANCELLED.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        config: Config,
    },
}

#[derive(Subcommand)]
enum MembersCommand {
    /// Imports members, their push devices and team memberships from a CSV or JSON-lines file,
    /// in batches. Every line is checked first: a file with any bad line is refused whole, each
    /// rejected row reported with its number (the CSV header is row 1), column and problem.
    /// Progress goes to stderr: redrawn in place on a terminal, a line per batch otherwise.
    /// Idempotent on external_id: importing again updates changed profiles and duplicates
    /// nothing. Devices and team memberships are only ever added, never removed (a line that
    /// leaves one out does not take it away): removals go through the API.
    ///
    /// Columns (CSV header) or fields (one JSON object a line): external_id, email,
    /// display_name (required); attributes (a JSON object of strings); fcm_token, apns_token;
    /// teams (CSV: names separated by `;`, JSON: an array), created when missing.
    Import {
        file: PathBuf,
        /// The organisation: its id or its exact name.
        #[arg(long)]
        org: String,
        /// Lines per transaction.
        #[arg(long, default_value_t = 5000)]
        batch_size: usize,
        #[command(flatten)]
        config: Config,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            if error.kind() == clap::error::ErrorKind::MissingRequiredArgument
                && error.to_string().contains("--environment")
            {
                eprintln!(
                    "error: PIDGR_ENVIRONMENT is not set. Set PIDGR_ENVIRONMENT=development for a \
                     local server with development allowances, or PIDGR_ENVIRONMENT=production \
                     (or pass --environment); nothing runs without one."
                );
                return ExitCode::from(2);
            }
            error.exit()
        }
    };
    // The settings are read first, so that even their own complaints come out in the format
    // asked for.
    let rust_log = std::env::var("RUST_LOG").ok();
    // The standard OpenTelemetry variables, read here like RUST_LOG (they are the exporter's
    // settings, not Pidgr's); unset, nothing is exported and nothing extra runs.
    let traces = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.trim().is_empty())
        .map(|endpoint| pidgr::telemetry::TraceExport {
            endpoint,
            service_name: std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "pidgr".into()),
        });
    let trace_exporter = pidgr::telemetry::init_logging(
        cli.command.config().log_format,
        rust_log.as_deref(),
        traces.as_ref(),
    );
    let code = match run(cli.command).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // Exports the spans still queued before the process exits.
    drop(trace_exporter);
    code
}

impl Command {
    fn config(&self) -> &Config {
        match self {
            Command::Serve(config)
            | Command::Api(config)
            | Command::Worker(config)
            | Command::Migrate(config)
            | Command::Check(config)
            | Command::Temporal(TemporalCommand::Setup(config))
            | Command::DevKey { config, .. }
            | Command::Validate { config, .. }
            | Command::Simulate { config, .. }
            | Command::Org(OrgCommand::Create { config, .. })
            | Command::Members(MembersCommand::Import { config, .. })
            | Command::Campaign(CampaignCommand::Status { config, .. })
            | Command::Key(KeyCommand::Create { config, .. })
            | Command::Audit(AuditCommand::Verify { config, .. })
            | Command::Secrets(SecretsCommand::RotateKey { config, .. }) => config,
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Audit(AuditCommand::Verify {
            file,
            public_key,
            key_file,
            campaign,
            config: _,
        }) => {
            let key = match (&public_key, &key_file) {
                (Some(key), _) => audit::KeySource::Inline(key),
                (None, Some(path)) => audit::KeySource::File(path),
                (None, None) => anyhow::bail!("give --public-key or --key-file"),
            };
            return Ok(match audit::verify_file(&file, key, campaign.as_deref())? {
                Ok(verified) => {
                    println!(
                        "{}: ok: {} events of {} deliveries of campaign {} (organisation {}, {} at export), chained and signed by key {} (final hash {})",
                        file.display(),
                        verified.events,
                        verified.deliveries,
                        verified.campaign_id,
                        verified.org_id,
                        verified.campaign_status,
                        verified.key_id,
                        verified.final_hash
                    );
                    ExitCode::SUCCESS
                }
                Err(fault) => {
                    println!("{}: {fault}", file.display());
                    ExitCode::FAILURE
                }
            });
        }
        Command::Validate { file, config } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            return Ok(match parse(&text, &config.url_policy()?) {
                Ok(validated) => {
                    for warning in &validated.warnings {
                        println!("warning: {warning}");
                    }
                    println!(
                        "{}: the definition is valid ({} steps)",
                        file.display(),
                        validated.definition.steps.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    for problem in &problems {
                        println!("{problem}");
                    }
                    println!(
                        "{}: the definition has {} problem(s)",
                        file.display(),
                        problems.len()
                    );
                    ExitCode::FAILURE
                }
            });
        }
        Command::Simulate { file, json, config } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            return Ok(match simulate::run(&text, &config.url_policy()?)? {
                Ok(timeline) if json => {
                    println!("{}", serde_json::to_string_pretty(&timeline)?);
                    ExitCode::SUCCESS
                }
                Ok(timeline) => {
                    print!("{}", simulate::table(&timeline));
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    for problem in &problems {
                        println!("{problem}");
                    }
                    println!("{}: {} problem(s)", file.display(), problems.len());
                    ExitCode::FAILURE
                }
            });
        }
        Command::Migrate(config) => {
            let store = config.connect_database(MissingDatabase::Create).await?;
            let before = store.migration_status().await?;
            store.migrate().await?;
            let after = store.migration_status().await?;
            let applied: Vec<&str> = before
                .pending()
                .into_iter()
                .filter(|m| after.applied.contains(&m.version))
                .map(|m| m.name.as_str())
                .collect();
            if applied.is_empty() {
                println!("already current: {} migrations", after.known.len());
            } else {
                println!("applied {}", applied.join(", "));
            }
        }
        Command::Check(config) => {
            let checked = check::run(&config, MissingDatabase::Refuse, false).await;
            print!("{}", checked.report);
            return Ok(if checked.report.passed() {
                println!("every check passed");
                ExitCode::SUCCESS
            } else {
                println!(
                    "{} check(s) failed: fix them, then run `pidgr check` again",
                    checked.report.failures().count()
                );
                ExitCode::FAILURE
            });
        }
        Command::Temporal(TemporalCommand::Setup(_config)) => {
            for line in pidgr::temporal_setup::setup().await? {
                println!("{line}");
            }
        }
        Command::Org(OrgCommand::Create { name, config }) => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                anyhow::bail!("an organisation name must be 1 to 200 characters");
            }
            let store = open_for_command(&config).await?;
            let org = store.create_organisation(name).await?;
            let key = store
                .create_api_key(&org.id, "first Super Admin key", SUPER_ADMIN)
                .await?;
            eprintln!(
                "created organisation {:?} ({}); its Super Admin API key follows — store it now, it is not shown again:",
                org.name, org.id
            );
            println!("{}", key.secret);
        }
        Command::Members(MembersCommand::Import {
            file,
            org,
            batch_size,
            config,
        }) => {
            let store = open_for_command(&config).await?;
            let org = find_organisation(&store, &org).await?;
            let started = std::time::Instant::now();
            let counts = import::import_members(&store, &org.id, &file, batch_size).await?;
            println!(
                "imported {} into {:?} in {:.1} s: {} created, {} updated, {} unchanged; \
                 {} device(s) added or moved; {} team membership(s) added",
                file.display(),
                org.name,
                started.elapsed().as_secs_f64(),
                counts.created,
                counts.updated,
                counts.unchanged,
                counts.devices,
                counts.memberships
            );
        }
        Command::Campaign(CampaignCommand::Status {
            id,
            org,
            follow,
            config,
        }) => {
            let store = open_for_command(&config).await?;
            let org = find_organisation(&store, &org).await?;
            let stdout = std::io::stdout();
            let terminal = std::io::IsTerminal::is_terminal(&stdout);
            let mut display = campaign_status::Display::new(stdout.lock(), terminal);
            campaign_status::show(&store, &org.id, id.trim(), follow, &mut display).await?;
        }
        Command::Key(KeyCommand::Create {
            org,
            role,
            name,
            config,
        }) => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                anyhow::bail!("a key name must be 1 to 200 characters");
            }
            let store = open_for_command(&config).await?;
            let org = find_organisation(&store, &org).await?;
            let key = store
                .create_api_key(&org.id, name, role.trim())
                .await
                .with_context(|| format!("creating a key in {:?}", org.name))?;
            eprintln!(
                "created API key {} with the role {:?} in {:?} ({}); its secret follows — store \
                 it now, it is not shown again:",
                key.key.id, key.key.role, org.name, org.id
            );
            println!("{}", key.secret);
        }
        Command::Secrets(SecretsCommand::RotateKey { batch_size, config }) => {
            let store = open_for_command(&config).await?;
            let report = store.rotate_secret_key(batch_size).await.context(
                "re-sealing stopped (what was re-sealed before stays so; run again once fixed)",
            )?;
            for table in &report.tables {
                println!(
                    "{}.{}: {} re-sealed, {} already current{}",
                    table.table,
                    table.column,
                    table.resealed,
                    table.already_current,
                    match table.changed_meanwhile {
                        0 => String::new(),
                        n => format!(", {n} changed meanwhile (looked at again)"),
                    }
                );
            }
            let plain = &report.plain_headers;
            println!(
                "CALL_WEBHOOK header values stored in clear: {} sealed ({} definition versions, \
                 {} draft campaigns)",
                plain.values, plain.definition_versions, plain.campaigns
            );
            println!(
                "every stored secret is sealed with the current key ({} passes, the last of which \
                 found nothing to change)",
                report.passes
            );
        }
        Command::DevKey { key_file, config } => {
            let store = config.open_store(MissingDatabase::Create).await?;
            migrate_or_refuse(&config, &store).await?;
            // The key kept from an earlier run, while it still opens the Development
            // organisation (not revoked, not from a database since wiped).
            if let Some(file) = &key_file
                && let Ok(kept) = std::fs::read_to_string(file)
                && let Some(found) = store.authenticate(kept.trim()).await?
                && store
                    .find_organisation_by_name("Development")
                    .await?
                    .is_some_and(|org| org.id == found.key.org_id)
            {
                println!("{}", kept.trim());
                return Ok(ExitCode::SUCCESS);
            }
            let org = match store.find_organisation_by_name("Development").await? {
                Some(org) => org,
                None => store.create_organisation("Development").await?,
            };
            let key = store
                .create_api_key(&org.id, "make dev", SUPER_ADMIN)
                .await?;
            if let Some(file) = &key_file {
                write_private(file, &key.secret)
                    .with_context(|| format!("keeping the key in {}", file.display()))?;
            }
            println!("{}", key.secret);
        }
        Command::Serve(config) => run_services(config, true, true).await?,
        Command::Api(config) => run_services(config, true, false).await?,
        Command::Worker(config) => run_services(config, false, true).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The database of an operator's command: it must exist (see [`MissingDatabase::Refuse`]), and
/// its migrations are applied as a booting process would (development) or must be current.
async fn open_for_command(config: &Config) -> anyhow::Result<pidgr_store::Store> {
    let store = config.open_store(MissingDatabase::Refuse).await?;
    migrate_or_refuse(config, &store).await?;
    Ok(store)
}

/// Applies pending migrations where processes migrate at boot; elsewhere refuses while any is
/// pending, naming the fix.
async fn migrate_or_refuse(config: &Config, store: &pidgr_store::Store) -> anyhow::Result<()> {
    if config.migrates_at_boot() {
        store.migrate().await?;
        return Ok(());
    }
    match check::migrations_item(&store.migration_status().await?).outcome {
        check::Outcome::Failed(fix) => anyhow::bail!("migrations: {fix}"),
        _ => Ok(()),
    }
}

/// Writes `secret` to `path`, readable by its owner only.
fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, format!("{secret}\n").as_bytes())
}

/// The organisation with this id or, failing that, this exact name.
async fn find_organisation(
    store: &pidgr_store::Store,
    id_or_name: &str,
) -> anyhow::Result<pidgr_store::Organisation> {
    match store.get_organisation(id_or_name).await {
        Ok(found) => Ok(found),
        Err(pidgr_store::StoreError::NotFound) => store
            .find_organisation_by_name(id_or_name)
            .await?
            .with_context(|| format!("no organisation has the id or name {id_or_name:?}")),
        Err(error) => Err(error.into()),
    }
}

/// Runs the API and/or the worker until Ctrl-C or SIGTERM, then shuts both down gracefully.
/// Either one failing stops the other, and the process exits with the error.
async fn run_services(config: Config, api: bool, worker: bool) -> anyhow::Result<()> {
    // Everything `pidgr check` checks, checked before anything starts: a process that could
    // not do its work refuses to start, saying what to fix. `serve` is what `make dev` runs
    // and may create the embedded database; `api` and `worker` need the one that exists.
    let missing = if api && worker {
        MissingDatabase::Create
    } else {
        MissingDatabase::Refuse
    };
    let checked = check::run(&config, missing, config.migrates_at_boot()).await;
    if !checked.report.passed() {
        for item in checked.report.failures() {
            eprintln!("{item}");
        }
        anyhow::bail!(
            "refusing to start: {} check(s) failed (`pidgr check` lists every check)",
            checked.report.failures().count()
        );
    }
    let temporal = checked.client(&config)?;
    let store = config.with_secret_keys(checked.store.context("the database")?)?;
    // An API serves the process's metrics itself (see `serve_api`); a worker alone does here.
    let _metrics = if api {
        None
    } else {
        pidgr::telemetry::start_metrics_server(&config, &store).await?
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = std::sync::Arc::new(stop_tx);
    let stop_on_signal = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_on_signal.send(true);
    });
    let api_task = if api {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        tracing::info!(address = %listener.local_addr()?, "API listening");
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let stop_all = stop_tx.clone();
        let (store, temporal, api_config) = (store.clone(), temporal.clone(), config.clone());
        Some(tokio::spawn(async move {
            let result = serve_api(listener, store, temporal, &api_config, shutdown).await;
            let _ = stop_all.send(true);
            result
        }))
    } else {
        None
    };
    // The worker runs on this task: its future is not Send.
    let worker_result = if worker {
        run_worker(&config, store, temporal, stop_rx).await
    } else {
        let mut stop = stop_rx;
        let _ = stop.wait_for(|s| *s).await;
        Ok(())
    };
    let _ = stop_tx.send(true);
    let api_result = match api_task {
        Some(task) => task.await?,
        None => Ok(()),
    };
    worker_result.and(api_result)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
