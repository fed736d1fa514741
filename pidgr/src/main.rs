//! `pidgr`: serve | api | worker | migrate | validate | org create | key create | members import
//! | dev-key.

mod import;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pidgr::{Config, run_worker, serve_api, temporal_client};
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
    /// Applies database migrations.
    Migrate(#[command(flatten)] Config),
    /// Validates a workflow definition file; exits 1 and lists every problem if it is invalid.
    Validate {
        file: PathBuf,
        #[command(flatten)]
        config: Config,
    },
    /// Organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// An organisation's directory.
    #[command(subcommand)]
    Members(MembersCommand),
    /// API keys, for operators (a way back in when an organisation has lost its keys).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Secrets sealed at rest with PIDGR_SECRET_KEY.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Creates a Super Admin API key for the "Development" organisation (created if missing)
    /// and prints it.
    DevKey(#[command(flatten)] Config),
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
enum MembersCommand {
    /// Imports members, their push devices and team memberships from a CSV or JSON-lines file,
    /// in batches. Every line is checked first: a file with any bad line is refused whole.
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
    pidgr::telemetry::init_logging(cli.command.config().log_format, rust_log.as_deref());
    match run(cli.command).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    fn config(&self) -> &Config {
        match self {
            Command::Serve(config)
            | Command::Api(config)
            | Command::Worker(config)
            | Command::Migrate(config)
            | Command::DevKey(config)
            | Command::Validate { config, .. }
            | Command::Org(OrgCommand::Create { config, .. })
            | Command::Members(MembersCommand::Import { config, .. })
            | Command::Key(KeyCommand::Create { config, .. })
            | Command::Secrets(SecretsCommand::RotateKey { config, .. }) => config,
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
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
        Command::Migrate(config) => {
            let store = config.store().await?;
            store.migrate().await?;
            println!("database migrated");
        }
        Command::Org(OrgCommand::Create { name, config }) => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                anyhow::bail!("an organisation name must be 1 to 200 characters");
            }
            let store = config.store().await?;
            store.migrate().await?;
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
            let store = config.store().await?;
            store.migrate().await?;
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
            let store = config.store().await?;
            store.migrate().await?;
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
            let store = config.store().await?;
            store.migrate().await?;
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
        Command::DevKey(config) => {
            let store = config.store().await?;
            store.migrate().await?;
            let org = match store.find_organisation_by_name("Development").await? {
                Some(org) => org,
                None => store.create_organisation("Development").await?,
            };
            let key = store
                .create_api_key(&org.id, "make dev", SUPER_ADMIN)
                .await?;
            println!("{}", key.secret);
        }
        Command::Serve(config) => run_services(config, true, true).await?,
        Command::Api(config) => run_services(config, true, false).await?,
        Command::Worker(config) => run_services(config, false, true).await?,
    }
    Ok(ExitCode::SUCCESS)
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
    // Settings are checked before anything starts, so a bad one fails at once.
    config.api_settings()?;
    config.outbound()?;
    let store = config.store().await?;
    store.migrate().await?;
    let temporal = temporal_client(&config).await?;
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
