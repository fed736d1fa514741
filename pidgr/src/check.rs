//! What a process needs before it can do its work, checked one item at a time: `pidgr check`
//! prints the whole list, and `serve`, `api` and `worker` run the same list at boot and refuse
//! to start with the same messages. Every item answers `ok` or the exact fix; each costs at
//! most one round trip (the database, Temporal's system info, the namespace, its search
//! attributes), so the boot stays fast.
//!
//! The decisions (is this migration state current? is this search attribute list complete?
//! is this setting acceptable in this environment?) are pure functions, tested on their own;
//! [`run`] only gathers the facts they decide on.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use pidgr_store::{MigrationStatus, SecretKey, Store};
use temporalio_client::envconfig::LoadClientConfigProfileOptions;
use temporalio_client::tonic::{Code, Request, Status};
use temporalio_client::{Client, ClientOptions, Connection};
use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
use temporalio_common::protos::temporal::api::operatorservice::v1::ListSearchAttributesRequest;
use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeNamespaceRequest;

use crate::Config;

/// One line of the report: what was checked, and `ok` (with what was found) or the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub name: &'static str,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Fine; what was found (`15 migrations`, the address…).
    Ok(String),
    /// Not fine; the message says what is wrong and what to do.
    Failed(String),
    /// Not checked because something it needs failed first.
    Skipped(String),
}

impl Item {
    fn ok(name: &'static str, found: impl Into<String>) -> Item {
        Item {
            name,
            outcome: Outcome::Ok(found.into()),
        }
    }

    fn failed(name: &'static str, fix: impl Into<String>) -> Item {
        Item {
            name,
            outcome: Outcome::Failed(fix.into()),
        }
    }

    fn skipped(name: &'static str, why: impl Into<String>) -> Item {
        Item {
            name,
            outcome: Outcome::Skipped(why.into()),
        }
    }

    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Ok(found) => write!(f, "ok      {}: {found}", self.name),
            Outcome::Failed(fix) => write!(f, "FAILED  {}: {fix}", self.name),
            Outcome::Skipped(why) => write!(f, "skipped {}: {why}", self.name),
        }
    }
}

/// Every item, in the order checked.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub items: Vec<Item>,
}

impl Report {
    /// Whether everything passed (a skipped item counts as not passed: it was not checked
    /// because something before it failed).
    pub fn passed(&self) -> bool {
        self.items.iter().all(Item::passed)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .filter(|item| matches!(item.outcome, Outcome::Failed(_)))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            writeln!(f, "{item}")?;
        }
        Ok(())
    }
}

/// What the checks opened along the way, for a booting process to keep using.
pub struct Checked {
    pub report: Report,
    pub store: Option<Store>,
    /// The Temporal connection and the client options (namespace…) it was configured with.
    pub temporal: Option<(Connection, ClientOptions)>,
}

impl Checked {
    /// The Temporal client every part of the process uses: the checked connection, with payloads
    /// encrypted by the server's key.
    pub fn client(&self, config: &Config) -> anyhow::Result<Client> {
        let (connection, options) = self
            .temporal
            .clone()
            .ok_or_else(|| anyhow::anyhow!("Temporal is not connected"))?;
        let mut options = options;
        options.data_converter = crate::data_converter(config)?;
        Ok(Client::new(connection, options)?)
    }
}

/// When the database file of an embedded SQLite URL must already exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingDatabase {
    /// `migrate`, `serve` and `dev-key` create it (what `make dev` runs first).
    Create,
    /// Everything else refuses: a command run from another directory, or before `make dev`,
    /// would otherwise work on a new empty database instead of the one meant.
    Refuse,
}

/// Runs every check. `migrate_first`: apply pending migrations before checking that none are
/// pending (a booting process that migrates at boot).
pub async fn run(config: &Config, missing: MissingDatabase, migrate_first: bool) -> Checked {
    let mut items = settings_items(config);

    let store = match config.open_store(missing).await {
        Ok(store) => {
            items.push(Item::ok("database", crate::redact(&config.database_url)));
            Some(store)
        }
        Err(error) => {
            items.push(Item::failed("database", format!("{error:#}")));
            None
        }
    };
    items.push(match &store {
        None => Item::skipped("migrations", "the database could not be opened"),
        Some(store) => {
            let migrated = if migrate_first {
                store.migrate().await.map_err(|error| {
                    format!("applying the migrations at boot failed: {error} (run `pidgr migrate` to see it alone)")
                })
            } else {
                Ok(())
            };
            match migrated {
                Err(fix) => Item::failed("migrations", fix),
                Ok(()) => match store.migration_status().await {
                    Ok(status) => migrations_item(&status),
                    Err(error) => Item::failed(
                        "migrations",
                        format!("could not read which migrations are applied: {error}"),
                    ),
                },
            }
        }
    });

    let temporal = match connect_temporal().await {
        Ok((connection, options, target)) => {
            items.push(Item::ok(
                "Temporal",
                format!("{target} (namespace {:?})", options.namespace),
            ));
            Some((connection, options))
        }
        Err(fix) => {
            items.push(Item::failed("Temporal", fix));
            None
        }
    };
    match &temporal {
        None => {
            items.push(Item::skipped("namespace", "Temporal is unreachable"));
            items.push(Item::skipped(
                "search attributes",
                "Temporal is unreachable",
            ));
        }
        Some((connection, options)) => {
            let namespace = options.namespace.clone();
            let found = namespace_item(connection, &namespace).await;
            let namespace_ok = found.passed();
            items.push(found);
            items.push(if namespace_ok {
                match list_search_attributes(connection, &namespace).await {
                    Ok(registered) => search_attributes_item(&registered, &namespace),
                    Err(status) => {
                        Item::failed("search attributes", rpc_fix(&status, &namespace, "list"))
                    }
                }
            } else {
                Item::skipped("search attributes", "the namespace could not be used")
            });
        }
    }
    Checked {
        report: Report { items },
        store,
        temporal,
    }
}

/// The settings alone, decided without a connection.
pub fn settings_items(config: &Config) -> Vec<Item> {
    let mut items = vec![secret_key_item(
        config.secret_key.as_deref(),
        &config.previous_secret_keys,
    )];
    items.push(public_url_item(
        &config.environment,
        config.public_url.as_deref(),
    ));
    // Every other setting, as the processes themselves read them.
    let others = config
        .api_settings()
        .and_then(|_| config.outbound().map(|_| ()))
        .and_then(|()| config.push_log_allowed());
    items.push(match others {
        Ok(()) => Item::ok(
            "settings",
            format!("PIDGR_ENVIRONMENT={}", config.environment),
        ),
        Err(error) => Item::failed("settings", format!("{error:#}")),
    });
    items
}

/// PIDGR_SECRET_KEY is required in every environment: Temporal payloads are encrypted with a
/// key derived from it, and stored secrets are sealed with it.
pub fn secret_key_item(current: Option<&str>, previous: &[String]) -> Item {
    const NAME: &str = "secret key";
    let Some(current) = current.map(str::trim).filter(|k| !k.is_empty()) else {
        return Item::failed(
            NAME,
            "PIDGR_SECRET_KEY is not set: set it to 64 hex characters (`openssl rand -hex 32`), \
             the same in every process, and keep it with the database's backups (`make dev` keeps \
             one in .data/secret.key)",
        );
    };
    let key = match SecretKey::from_hex(current) {
        Ok(key) => key,
        Err(_) => {
            return Item::failed(
                NAME,
                "PIDGR_SECRET_KEY is not 64 hex characters (32 bytes): set the key the data was \
                 sealed with (a new one is made with `openssl rand -hex 32`)",
            );
        }
    };
    for (i, hex) in previous
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .enumerate()
    {
        if SecretKey::from_hex(hex).is_err() {
            return Item::failed(
                NAME,
                format!(
                    "PIDGR_PREVIOUS_SECRET_KEYS: key number {} is not 64 hex characters; list the \
                     earlier keys comma-separated",
                    i + 1
                ),
            );
        }
    }
    let previous = previous.iter().filter(|k| !k.trim().is_empty()).count();
    Item::ok(
        NAME,
        match previous {
            0 => format!("key id {}", key.key_id()),
            n => format!(
                "key id {} and {n} previous key(s) (remove them once `pidgr secrets rotate-key` has run)",
                key.key_id()
            ),
        },
    )
}

/// Workers build recipients' deeplinks from PIDGR_PUBLIC_URL: in production without it they
/// would point at the API's listening address, which recipients cannot reach.
pub fn public_url_item(environment: &str, public_url: Option<&str>) -> Item {
    const NAME: &str = "public URL";
    let url = public_url.map(str::trim).filter(|u| !u.is_empty());
    match url {
        None if environment == "production" => Item::failed(
            NAME,
            "PIDGR_PUBLIC_URL is required in production: set it to the address recipients and the \
             console reach the API at (e.g. https://pidgr.example.com); deeplinks are built from it",
        ),
        None => Item::ok(
            NAME,
            "not set (development: deeplinks use the listening address)",
        ),
        Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => Item::failed(
            NAME,
            format!("PIDGR_PUBLIC_URL must be an http:// or https:// address, not {url:?}"),
        ),
        Some(url) if environment == "production" && url.starts_with("http://") => Item::failed(
            NAME,
            format!(
                "PIDGR_PUBLIC_URL must be https:// in production (recipients' deeplinks and the \
                 console's cookies need it), not {url:?}"
            ),
        ),
        Some(url) => Item::ok(NAME, url.to_owned()),
    }
}

/// Current when every migration this build knows is applied. A database migrated by a newer
/// release is fine: that is the middle of a rolling upgrade.
pub fn migrations_item(status: &MigrationStatus) -> Item {
    const NAME: &str = "migrations";
    let pending = status.pending();
    if !pending.is_empty() {
        let names: Vec<&str> = pending.iter().map(|m| m.name.as_str()).collect();
        return Item::failed(
            NAME,
            format!(
                "{} of {} not applied ({}): run `pidgr migrate` (with this release's binary and \
                 settings), then start the processes again",
                pending.len(),
                status.known.len(),
                names.join(", ")
            ),
        );
    }
    let newer = status.unknown_applied();
    Item::ok(
        NAME,
        match newer.len() {
            0 => format!("current: {} migrations", status.known.len()),
            n => format!(
                "current: {} migrations, and {n} from a newer release (fine during a rolling upgrade)",
                status.known.len()
            ),
        },
    )
}

/// The search attributes Pidgr sets, with their types (see `pidgr_workflows::search_attributes`).
pub fn wanted_search_attributes() -> Vec<(&'static str, IndexedValueType)> {
    pidgr_workflows::search_attributes::ALL
        .iter()
        .map(|(name, kind)| (*name, indexed_value_type(kind)))
        .collect()
}

/// The type named as `temporal ... --search-attribute Name=Type` takes it.
pub fn indexed_value_type(name: &str) -> IndexedValueType {
    match name {
        "Text" => IndexedValueType::Text,
        "Keyword" => IndexedValueType::Keyword,
        "Int" => IndexedValueType::Int,
        "Double" => IndexedValueType::Double,
        "Bool" => IndexedValueType::Bool,
        "Datetime" => IndexedValueType::Datetime,
        "KeywordList" => IndexedValueType::KeywordList,
        _ => IndexedValueType::Unspecified,
    }
}

/// `Keyword` rather than `INDEXED_VALUE_TYPE_KEYWORD`.
pub fn type_name(kind: i32) -> String {
    let Ok(kind) = IndexedValueType::try_from(kind) else {
        return format!("type {kind}");
    };
    pidgr_workflows::search_attributes::ALL
        .iter()
        .map(|(_, name)| *name)
        .chain(["Text", "Int", "Double", "Bool", "Datetime", "KeywordList"])
        .find(|name| indexed_value_type(name) == kind)
        .map_or_else(|| kind.as_str_name().to_owned(), str::to_owned)
}

/// What is wrong with the namespace's custom search attributes: the missing ones and those of
/// another type. Empty when all are there.
pub fn search_attribute_problems(registered: &HashMap<String, i32>) -> (Vec<String>, Vec<String>) {
    let mut missing = Vec::new();
    let mut mistyped = Vec::new();
    for (name, kind) in wanted_search_attributes() {
        match registered.get(name) {
            None => missing.push(format!("{name} ({})", type_name(kind as i32))),
            Some(found) if *found != kind as i32 => mistyped.push(format!(
                "{name} is {} (Pidgr sets a {})",
                type_name(*found),
                type_name(kind as i32)
            )),
            Some(_) => {}
        }
    }
    (missing, mistyped)
}

pub fn search_attributes_item(registered: &HashMap<String, i32>, namespace: &str) -> Item {
    const NAME: &str = "search attributes";
    let (missing, mistyped) = search_attribute_problems(registered);
    if !mistyped.is_empty() {
        return Item::failed(
            NAME,
            format!(
                "on namespace {namespace:?}, {}: a search attribute's type cannot be changed; \
                 remove it (`temporal operator search-attribute remove --name …`) and run `pidgr \
                 temporal setup`",
                mistyped.join(", ")
            ),
        );
    }
    if !missing.is_empty() {
        return Item::failed(
            NAME,
            format!(
                "{} not registered on namespace {namespace:?}: run `pidgr temporal setup` (the API \
                 cannot start campaign workflows without them)",
                missing.join(", ")
            ),
        );
    }
    let names: Vec<&str> = wanted_search_attributes()
        .iter()
        .map(|(name, _)| *name)
        .collect();
    Item::ok(NAME, names.join(", "))
}

/// Connects as the standard Temporal client configuration says (`TEMPORAL_ADDRESS`,
/// `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS_*`, or a profile of the
/// `TEMPORAL_CONFIG_FILE`/`TEMPORAL_PROFILE` file): one round trip (the server's system info).
/// Answers the connection, the client options and the address; or the fix.
pub async fn connect_temporal() -> Result<(Connection, ClientOptions, String), String> {
    let (connection_options, client_options) =
        ClientOptions::load_from_config(LoadClientConfigProfileOptions::default()).map_err(
            |error| {
                format!(
                    "the Temporal client configuration is unreadable: {error} (see TEMPORAL_ADDRESS, \
                     TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_CONFIG_FILE and \
                     TEMPORAL_PROFILE)"
                )
            },
        )?;
    let target = connection_options.target.to_string();
    let connection = Connection::connect(connection_options)
        .await
        .map_err(|error| {
            format!(
                "cannot reach Temporal at {target}: {error}. Set TEMPORAL_ADDRESS (host:port) to \
                 the frontend's address, and for TLS or Temporal Cloud TEMPORAL_TLS=true with \
                 TEMPORAL_API_KEY or TEMPORAL_TLS_CLIENT_CERT_PATH/TEMPORAL_TLS_CLIENT_KEY_PATH \
                 (in development: is the dev server running? `make dev` starts one)"
            )
        })?;
    Ok((connection, client_options, target))
}

async fn namespace_item(connection: &Connection, namespace: &str) -> Item {
    const NAME: &str = "namespace";
    let described = connection
        .workflow_service()
        .describe_namespace(Request::new(DescribeNamespaceRequest {
            namespace: namespace.to_owned(),
            ..Default::default()
        }))
        .await;
    match described {
        Ok(_) => Item::ok(NAME, namespace.to_owned()),
        Err(status) => Item::failed(NAME, rpc_fix(&status, namespace, "describe")),
    }
}

/// The namespace's custom search attributes: name → type.
pub async fn list_search_attributes(
    connection: &Connection,
    namespace: &str,
) -> Result<HashMap<String, i32>, Status> {
    let listed = connection
        .operator_service()
        .list_search_attributes(Request::new(ListSearchAttributesRequest {
            namespace: namespace.to_owned(),
        }))
        .await?;
    Ok(listed.into_inner().custom_attributes)
}

/// What to do about a refused call on the namespace.
pub fn rpc_fix(status: &Status, namespace: &str, what: &str) -> String {
    match status.code() {
        Code::NotFound => format!(
            "the namespace {namespace:?} does not exist: create it (self-hosted: `temporal \
             operator namespace create --namespace {namespace}`; Temporal Cloud: in the Cloud UI \
             or with `tcld`), or set TEMPORAL_NAMESPACE to the one Pidgr should use"
        ),
        Code::PermissionDenied | Code::Unauthenticated => format!(
            "Temporal refused to {what} the namespace {namespace:?} ({}): the credentials \
             (TEMPORAL_API_KEY, or the mTLS client certificate) must be allowed on it{}",
            status.message(),
            if what == "add search attributes to" {
                " as a namespace admin"
            } else {
                ""
            }
        ),
        Code::Unimplemented => format!(
            "this Temporal server does not offer the operator service ({}): register the search \
             attributes its own way (Temporal Cloud: the Cloud UI or `tcld namespace \
             search-attributes add`)",
            status.message()
        ),
        _ => format!(
            "Temporal answered {:?} on namespace {namespace:?}: {}",
            status.code(),
            status.message()
        ),
    }
}

/// Whether `path` (of a `sqlite://` URL) names an existing file; `None` for other databases and
/// for in-memory SQLite.
pub fn missing_sqlite_file(database_url: &str) -> Option<String> {
    let path = database_url.strip_prefix("sqlite://")?;
    let file = path.split('?').next().unwrap_or(path);
    if file.is_empty() || file == ":memory:" || database_url.contains("mode=memory") {
        return None;
    }
    (!Path::new(file).exists()).then(|| file.to_owned())
}

#[cfg(test)]
mod tests {
    use pidgr_store::KnownMigration;

    use super::*;

    fn status(known: i64, applied: &[i64]) -> MigrationStatus {
        MigrationStatus {
            known: (1..=known)
                .map(|version| KnownMigration {
                    version,
                    name: format!("{version:04}_step"),
                })
                .collect(),
            applied: applied.to_vec(),
        }
    }

    fn failure(item: &Item) -> &str {
        match &item.outcome {
            Outcome::Failed(fix) => fix,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_database_with_every_known_migration_applied_is_current() {
        let item = migrations_item(&status(3, &[1, 2, 3]));
        assert_eq!(item.outcome, Outcome::Ok("current: 3 migrations".into()));
    }

    #[test]
    fn pending_migrations_are_named_and_the_fix_is_pidgr_migrate() {
        let item = migrations_item(&status(3, &[1]));
        let fix = failure(&item);
        assert!(fix.contains("2 of 3 not applied"), "{fix}");
        assert!(fix.contains("0002_step, 0003_step"), "{fix}");
        assert!(fix.contains("`pidgr migrate`"), "{fix}");
        assert!(!migrations_item(&status(2, &[])).passed());
    }

    #[test]
    fn a_database_migrated_by_a_newer_release_is_accepted_during_a_rolling_upgrade() {
        let item = migrations_item(&status(2, &[1, 2, 3]));
        assert!(item.passed(), "{item}");
        assert!(item.to_string().contains("newer release"), "{item}");
    }

    #[test]
    fn the_secret_key_is_required_and_must_be_64_hex_characters() {
        assert!(failure(&secret_key_item(None, &[])).contains("PIDGR_SECRET_KEY is not set"));
        assert!(failure(&secret_key_item(Some("  "), &[])).contains("not set"));
        assert!(failure(&secret_key_item(Some("abc"), &[])).contains("not 64 hex"));
        let key = SecretKey::generate().to_hex();
        assert!(secret_key_item(Some(&key), &[]).passed());
        let fix = failure(&secret_key_item(Some(&key), &[key.clone(), "nope".into()])).to_owned();
        assert!(fix.contains("key number 2"), "{fix}");
        assert!(secret_key_item(Some(&key), std::slice::from_ref(&key)).passed());
    }

    #[test]
    fn production_requires_an_https_public_url_and_development_does_not() {
        assert!(
            failure(&public_url_item("production", None)).contains("PIDGR_PUBLIC_URL is required")
        );
        assert!(
            failure(&public_url_item("production", Some("http://x.example"))).contains("https")
        );
        assert!(public_url_item("production", Some("https://x.example")).passed());
        assert!(public_url_item("development", None).passed());
        assert!(public_url_item("development", Some("http://127.0.0.1:8080")).passed());
        assert!(!public_url_item("development", Some("x.example")).passed());
    }

    #[test]
    fn every_search_attribute_pidgr_sets_must_be_registered_with_its_type() {
        let all: HashMap<String, i32> = wanted_search_attributes()
            .into_iter()
            .map(|(name, kind)| (name.to_owned(), kind as i32))
            .collect();
        assert!(search_attributes_item(&all, "default").passed());

        let mut missing_one = all.clone();
        missing_one.remove("PidgrCampaignId");
        let fix = failure(&search_attributes_item(&missing_one, "default")).to_owned();
        assert!(fix.contains("PidgrCampaignId (Keyword)"), "{fix}");
        assert!(fix.contains("`pidgr temporal setup`"), "{fix}");

        let mut mistyped = all.clone();
        mistyped.insert("PidgrCampaignStatus".into(), IndexedValueType::Text as i32);
        let fix = failure(&search_attributes_item(&mistyped, "default")).to_owned();
        assert!(fix.contains("PidgrCampaignStatus is Text"), "{fix}");
    }

    #[test]
    fn a_missing_sqlite_file_is_noticed_and_other_databases_are_not_looked_for() {
        assert_eq!(
            missing_sqlite_file("sqlite://no/such/dir/pidgr.db?mode=rwc").as_deref(),
            Some("no/such/dir/pidgr.db")
        );
        assert_eq!(missing_sqlite_file("sqlite://:memory:"), None);
        assert_eq!(missing_sqlite_file("postgres://u:p@h/db"), None);
        let here = std::env::current_exe().unwrap();
        assert_eq!(
            missing_sqlite_file(&format!("sqlite://{}", here.display())),
            None
        );
    }

    fn config(args: &[&str]) -> Config {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        <Cli as clap::Parser>::try_parse_from(["pidgr"].iter().chain(args))
            .unwrap()
            .config
    }

    #[test]
    fn production_migrates_at_boot_only_when_told_and_development_always_does() {
        assert!(!config(&["--environment=production"]).migrates_at_boot());
        assert!(config(&["--environment=production", "--migrate-at-boot"]).migrates_at_boot());
        assert!(config(&["--environment=development"]).migrates_at_boot());
    }

    #[test]
    fn development_allowances_fail_the_settings_item_in_production() {
        let key = SecretKey::generate().to_hex();
        let secret = format!("--secret-key={key}");
        let production = config(&[
            "--environment=production",
            &secret,
            "--public-url=https://pidgr.example.com",
        ]);
        assert!(settings_items(&production).iter().all(Item::passed));
        let with_push_log = config(&[
            "--environment=production",
            &secret,
            "--public-url=https://pidgr.example.com",
            "--push-log",
        ]);
        let items = settings_items(&with_push_log);
        let settings = items.iter().find(|i| i.name == "settings").unwrap();
        assert!(failure(settings).contains("PIDGR_PUSH_LOG"), "{settings}");
        assert!(
            settings_items(&config(&["--environment=development", &secret]))
                .iter()
                .all(Item::passed)
        );
    }

    #[test]
    fn a_report_passes_only_when_every_item_is_ok() {
        let mut report = Report {
            items: vec![Item::ok("a", "fine")],
        };
        assert!(report.passed());
        report.items.push(Item::skipped("b", "a failed"));
        assert!(!report.passed());
        report.items.push(Item::failed("c", "do this"));
        assert_eq!(report.failures().count(), 1);
        assert!(report.to_string().contains("FAILED  c: do this"));
    }
}
