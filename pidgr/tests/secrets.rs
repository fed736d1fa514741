//! `pidgr secrets rotate-key`: with the new key current and the old one among the previous
//! keys, every sealed value is re-sealed, a second run finds nothing to do, and the old key can
//! then be dropped.

use std::process::{Command, Output};

use pidgr_store::{Platform, SecretKey, Store};

fn rotate(database_url: &str, current: &SecretKey, previous: &[&SecretKey]) -> Output {
    let previous: Vec<String> = previous.iter().map(|k| k.to_hex()).collect();
    Command::new(env!("CARGO_BIN_EXE_pidgr"))
        .args(["secrets", "rotate-key", "--batch-size", "1"])
        .env("PIDGR_ENVIRONMENT", "development")
        .env("DATABASE_URL", database_url)
        .env("PIDGR_SECRET_KEY", current.to_hex())
        .env("PIDGR_PREVIOUS_SECRET_KEYS", previous.join(","))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const DEFINITION: &str = r#"{"version":1,"start":"hook","steps":[{"id":"hook","type":"CALL_WEBHOOK",
  "config":{"name":"n","url":"https://hooks.example.com/p","headers":{"Authorization":"Bearer b-1","X-Two":"t-2"}},
  "transitions":{}}]}"#;

#[tokio::test]
async fn rotate_key_reseals_every_secret_so_the_previous_key_can_be_dropped() {
    let path = std::env::temp_dir().join(format!("pidgr-rotate-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let url = format!("sqlite://{}", path.display());
    let (old, new) = (SecretKey::generate(), SecretKey::generate());

    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let store = store.with_secret_key(old.clone());
    let org = store.create_organisation("Acme").await.unwrap().id;
    let channel_secret = store
        .configure_webhook_channel(&org, "https://hooks.example.com/c", 5000)
        .await
        .unwrap()
        .1
        .unwrap();
    store
        .set_push_credentials(&org, Platform::Fcm, &serde_json::json!({}), "fcm-key")
        .await
        .unwrap();
    let (stored, version) = store
        .create_definition(&org, "Hook", DEFINITION)
        .await
        .unwrap();
    let headers =
        serde_json::from_value(version.definition["steps"][0]["config"]["headers"].clone())
            .unwrap();

    // Without the old key among the previous ones nothing opens: the run stops and says why.
    let refused = rotate(&url, &new, &[]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("neither the current key nor one of the previous keys"),
        "{}",
        text(&refused.stderr)
    );

    let first = rotate(&url, &new, &[&old]);
    let out = text(&first.stdout);
    assert!(first.status.success(), "{out}{}", text(&first.stderr));
    for line in [
        "webhook_channels.secret_ciphertext: 1 re-sealed, 0 already current",
        "push_credentials.sealed: 1 re-sealed, 0 already current",
        "webhook_header_secrets.sealed: 2 re-sealed, 0 already current",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    for line in [
        "CALL_WEBHOOK header values stored in clear: 0 sealed",
        "every stored secret is sealed with the current key (2 passes",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    let second = rotate(&url, &new, &[&old]);
    let out = text(&second.stdout);
    assert!(second.status.success(), "{out}");
    assert!(
        out.contains("webhook_header_secrets.sealed: 0 re-sealed, 2 already current"),
        "{out}"
    );

    // The new key alone opens everything; the old key alone, nothing.
    store.close().await;
    let after = Store::connect(&url).await.unwrap().with_secret_key(new);
    assert_eq!(
        after.webhook_signing_secret(&org).await.unwrap().unwrap().1,
        channel_secret
    );
    assert_eq!(
        after
            .push_credentials_secret(&org, Platform::Fcm)
            .await
            .unwrap()
            .as_deref(),
        Some("fcm-key")
    );
    let opened = after
        .resolve_webhook_headers(&org, &[stored.id.as_str()], &headers)
        .await
        .unwrap();
    assert_eq!(opened["Authorization"], "Bearer b-1");
    assert_eq!(opened["X-Two"], "t-2");
    let stale = after.clone().with_secret_key(old);
    assert!(stale.webhook_signing_secret(&org).await.is_err());
    after.close().await;
    let _ = std::fs::remove_file(&path);
}
