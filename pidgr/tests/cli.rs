//! The binary's operator commands and its refusal to run without an explicit environment.

use std::process::{Command, Output};

fn pidgr(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pidgr"));
    command
        .args(args)
        .env_remove("PIDGR_ENVIRONMENT")
        .env_remove("DATABASE_URL")
        .env_remove("PIDGR_ALLOW_INSECURE_WEBHOOKS")
        .env_remove("PIDGR_PUSH_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn database_url(test: &str) -> String {
    let dir = std::env::temp_dir().join(format!("pidgr-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("pidgr.db").display())
}

#[test]
fn every_command_refuses_to_run_without_an_explicit_environment() {
    let url = database_url("no-environment");
    for args in [
        &["serve"][..],
        &["api"],
        &["worker"],
        &["migrate"],
        &["org", "create", "Acme"],
    ] {
        let output = pidgr(args, &[("DATABASE_URL", &url)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains("PIDGR_ENVIRONMENT is not set")
                && stderr.contains("PIDGR_ENVIRONMENT=development")
                && stderr.contains("PIDGR_ENVIRONMENT=production"),
            "{args:?}: {stderr}"
        );
    }
    // Nothing ran: not even the migration created the database.
    let file = url.trim_start_matches("sqlite://");
    assert!(!std::path::Path::new(file).exists());
}

#[test]
fn an_unknown_environment_is_refused() {
    let url = database_url("unknown-environment");
    let output = pidgr(
        &["migrate"],
        &[("DATABASE_URL", &url), ("PIDGR_ENVIRONMENT", "staging")],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("[possible values: development, production]"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn key_create_prints_a_working_key_of_the_given_role_once() {
    let url = database_url("key-create");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PIDGR_ENVIRONMENT", "development"),
    ];
    let migrated = pidgr(&["migrate"], &env);
    assert!(migrated.status.success(), "{migrated:?}");
    let created = pidgr(&["org", "create", "Acme Corp"], &env);
    assert!(created.status.success(), "{created:?}");

    let output = pidgr(
        &[
            "key",
            "create",
            "--org",
            "Acme Corp",
            "--role",
            "manager",
            "--name",
            "dashboard",
        ],
        &env,
    );
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let secret = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "only the secret on stdout");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not shown again"),
        "{output:?}"
    );

    let store = pidgr_store::Store::connect(&url).await.unwrap();
    let found = store
        .authenticate(secret)
        .await
        .unwrap()
        .expect("the key works");
    assert_eq!(found.key.role, "manager");
    assert_eq!(found.key.name, "dashboard");
    let org = store
        .find_organisation_by_name("Acme Corp")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key.org_id, org.id);
    // The organisation may also be named by its id.
    let by_id = pidgr(
        &["key", "create", "--org", &org.id, "--role", "super_admin"],
        &env,
    );
    assert!(by_id.status.success(), "{by_id:?}");

    // An unknown role or organisation creates nothing and says why.
    for (args, why) in [
        (
            &[
                "key",
                "create",
                "--org",
                "Acme Corp",
                "--role",
                "no-such-role",
            ][..],
            "no-such-role",
        ),
        (
            &["key", "create", "--org", "Nobody", "--role", "manager"],
            "no organisation has the id or name \"Nobody\"",
        ),
    ] {
        let refused = pidgr(args, &env);
        assert!(!refused.status.success(), "{args:?}");
        assert!(refused.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    assert_eq!(
        store.list_api_keys(&org.id, "", 100).await.unwrap().len(),
        3
    );
}

/// A valid secret key (production requires one).
const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_command_refuses_a_sqlite_database_that_does_not_exist_instead_of_creating_an_empty_one() {
    let url = database_url("missing-database");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PIDGR_ENVIRONMENT", "development"),
    ];
    let file = url.trim_start_matches("sqlite://");
    for args in [
        &["org", "create", "Acme"][..],
        &["key", "create", "--org", "Acme", "--role", "admin"],
        &["api"],
        &["worker"],
    ] {
        let refused = pidgr(args, &env);
        assert!(!refused.status.success(), "{args:?}");
        let why = stderr(&refused);
        assert!(
            why.contains("does not exist") && why.contains("DATABASE_URL"),
            "{args:?}: {why}"
        );
        assert!(!std::path::Path::new(file).exists(), "{args:?} created it");
    }
}

#[test]
fn migrate_names_what_it_applied_then_says_the_database_is_current() {
    let url = database_url("migrate-output");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PIDGR_ENVIRONMENT", "production"),
    ];
    let first = pidgr(&["migrate"], &env);
    assert!(first.status.success(), "{first:?}");
    let applied = stdout(&first);
    assert!(
        applied.starts_with("applied 0001_") && applied.contains(", 0002_"),
        "{applied}"
    );
    let again = pidgr(&["migrate"], &env);
    assert!(again.status.success(), "{again:?}");
    let count = applied.matches(", ").count() + 1;
    assert_eq!(
        stdout(&again).trim(),
        format!("already current: {count} migrations")
    );
}

#[test]
fn production_commands_refuse_pending_migrations_and_name_pidgr_migrate() {
    let url = database_url("production-pending");
    // An empty database file: every migration pending.
    std::fs::File::create(url.trim_start_matches("sqlite://")).unwrap();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PIDGR_ENVIRONMENT", "production"),
        ("PIDGR_SECRET_KEY", KEY),
    ];
    let refused = pidgr(&["org", "create", "Acme"], &env);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("`pidgr migrate`"), "{refused:?}");
    // With PIDGR_MIGRATE_AT_BOOT the command migrates first, as development does.
    let migrating = [
        ("DATABASE_URL", url.as_str()),
        ("PIDGR_ENVIRONMENT", "production"),
        ("PIDGR_SECRET_KEY", KEY),
        ("PIDGR_MIGRATE_AT_BOOT", "true"),
    ];
    let created = pidgr(&["org", "create", "Acme"], &migrating);
    assert!(created.status.success(), "{created:?}");
}

#[test]
fn dev_key_prints_the_same_key_on_every_run_while_it_works() {
    let url = database_url("dev-key");
    let dir = std::path::PathBuf::from(url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .to_owned();
    let key_file = dir.join("dev.key");
    let key_file = key_file.to_str().unwrap();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PIDGR_ENVIRONMENT", "development"),
    ];
    let first = pidgr(&["dev-key", "--key-file", key_file], &env);
    assert!(first.status.success(), "{first:?}");
    let second = pidgr(&["dev-key", "--key-file", key_file], &env);
    assert!(second.status.success(), "{second:?}");
    assert_eq!(stdout(&first), stdout(&second));
    assert_eq!(
        std::fs::read_to_string(key_file).unwrap().trim(),
        stdout(&first).trim()
    );
    // A kept key that no longer works (a wiped database, say) is replaced.
    std::fs::write(key_file, "pidgr_not-a-key").unwrap();
    let third = pidgr(&["dev-key", "--key-file", key_file], &env);
    assert!(third.status.success(), "{third:?}");
    assert_ne!(stdout(&third), stdout(&first));
    assert_eq!(
        std::fs::read_to_string(key_file).unwrap().trim(),
        stdout(&third).trim()
    );
}

#[test]
fn check_names_every_failure_and_exits_non_zero() {
    let url = database_url("check-failures");
    let output = pidgr(
        &["check"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("PIDGR_ENVIRONMENT", "production"),
            // Nothing listens there.
            ("TEMPORAL_ADDRESS", "127.0.0.1:1"),
        ],
    );
    assert!(!output.status.success());
    let report = stdout(&output);
    for expected in [
        "FAILED  secret key: PIDGR_SECRET_KEY is not set",
        "FAILED  public URL: PIDGR_PUBLIC_URL is required in production",
        "FAILED  database: the SQLite database",
        "skipped migrations",
        "FAILED  Temporal: cannot reach Temporal at http://127.0.0.1:1",
        "skipped namespace",
        "skipped search attributes",
    ] {
        assert!(report.contains(expected), "{expected:?} in:\n{report}");
    }
}

#[tokio::test]
async fn campaign_status_prints_a_finished_campaign_as_one_plain_line_when_not_a_terminal() {
    let url = database_url("campaign-status");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PIDGR_ENVIRONMENT", "development"),
    ];
    assert!(pidgr(&["migrate"], &env).status.success());
    assert!(
        pidgr(&["org", "create", "Acme Corp"], &env)
            .status
            .success()
    );

    // A campaign that ran to its end: one recipient acknowledged, one missed.
    let store = pidgr_store::Store::connect(&url).await.unwrap();
    let org = store
        .find_organisation_by_name("Acme Corp")
        .await
        .unwrap()
        .unwrap();
    let (template, version) = store
        .create_template(&org.id, "notice", "Notice", "Please read.", &[])
        .await
        .unwrap();
    let definition = r#"{"version":1,"start":"notify","steps":[{"id":"notify","type":"SEND_NOTIFICATION","config":{"channels":["push"]},"transitions":{}}]}"#;
    let campaign = store
        .create_campaign(pidgr_store::NewCampaign {
            org_id: org.id.clone(),
            name: "Q1 update".into(),
            title: "Q1".into(),
            template_id: template.id,
            template_version: version.version,
            message_title: version.title,
            body: version.body,
            audience: serde_json::json!({}),
            definition: definition.into(),
            definition_ref: None,
        })
        .await
        .unwrap();
    store
        .activate_campaign(&org.id, &campaign.id, "campaign-test", 2)
        .await
        .unwrap();
    let recipient = |user: &str| pidgr_store::Recipient {
        member_id: None,
        user_id: user.into(),
        email: None,
        display_name: None,
        variables: Default::default(),
    };
    store
        .insert_deliveries(
            &org.id,
            &campaign.id,
            1,
            &[recipient("ada"), recipient("alan")],
        )
        .await
        .unwrap();
    let ada = store
        .list_deliveries(&org.id, &campaign.id, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, delivery)| delivery)
        .find(|d| d.user_id == "ada")
        .unwrap();
    store
        .record_action(&org.id, &ada.id, pidgr_store::ActionKind::Ack, "test")
        .await
        .unwrap();
    store
        .complete_campaign(&org.id, &campaign.id)
        .await
        .unwrap();

    let expected = "Q1 update: COMPLETED; 2 recipients: 1 acknowledged, 0 read, 0 sent, \
                    0 pending, 1 missed, 0 failed\n";
    for follow in [false, true] {
        let mut args = vec!["campaign", "status", &campaign.id, "--org", "Acme Corp"];
        if follow {
            // A finished campaign: following ends at once, after the same one line.
            args.push("--follow");
        }
        let output = pidgr(&args, &env);
        assert!(output.status.success(), "{output:?}");
        assert_eq!(stdout(&output), expected, "follow: {follow}");
    }

    // Scoped by organisation: another organisation does not see it.
    assert!(
        pidgr(&["org", "create", "Other Org"], &env)
            .status
            .success()
    );
    let output = pidgr(
        &["campaign", "status", &campaign.id, "--org", "Other Org"],
        &env,
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no campaign"), "{output:?}");
}
