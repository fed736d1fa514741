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
