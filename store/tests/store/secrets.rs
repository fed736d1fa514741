//! Secrets at rest: webhook header values sealed when a definition is stored, the `v2` format
//! bound to organisation, table and column, the `v1` format still opening, and key rotation.

use pidgr_store::{Keyring, NewCampaign, Platform, SecretKey, Store, StoreError, testing};
use sqlx::Row;
use std::collections::BTreeMap;

const SECRET: &str = "Bearer tok-3b1f9e";

fn definition_with_header(value: &str) -> String {
    serde_json::json!({
        "version": 1, "start": "hook",
        "steps": [{"id": "hook", "type": "CALL_WEBHOOK",
                   "config": {"name": "n", "url": "https://hooks.example.com/p",
                              "headers": {"Authorization": value}},
                   "transitions": {}}]
    })
    .to_string()
}

fn headers_of(definition: &serde_json::Value) -> BTreeMap<String, String> {
    serde_json::from_value(definition["steps"][0]["config"]["headers"].clone()).unwrap()
}

async fn raw(store: &Store, sql: &str, bind: &str) -> String {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(bind)
        .fetch_one(testing::pool(store))
        .await
        .unwrap()
        .get(0)
}

async fn overwrite(store: &Store, sql: &str, value: &str, key: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(value)
        .bind(key)
        .execute(testing::pool(store))
        .await
        .unwrap();
}

fn new_campaign(
    org: &str,
    definition: String,
    definition_ref: Option<(String, i64)>,
) -> NewCampaign {
    NewCampaign {
        org_id: org.into(),
        name: "Hook".into(),
        title: "Hook".into(),
        template_id: "template-1".into(),
        template_version: 1,
        message_title: "Read".into(),
        body: "Body".into(),
        audience: serde_json::json!({}),
        definition,
        definition_ref,
    }
}

store_test!(webhook_header_values_are_stored_only_as_references_and_resolve_in_their_organisation);
async fn webhook_header_values_are_stored_only_as_references_and_resolve_in_their_organisation(
    store: Store,
) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap().id;
    let other = store.create_organisation("Other").await.unwrap().id;
    let (stored, version) = store
        .create_definition(&org, "Hook", &definition_with_header(SECRET))
        .await
        .unwrap();
    let headers = headers_of(&version.definition);
    let reference = &headers["Authorization"];
    assert!(
        pidgr_store::header_secret_id(reference).is_some(),
        "{reference}"
    );
    let text = raw(
        &store,
        "SELECT definition FROM workflow_definition_versions WHERE definition_id = $1",
        &stored.id,
    )
    .await;
    assert!(!text.contains("tok-3b1f9e"), "{text}");
    let sealed = raw(
        &store,
        "SELECT sealed FROM webhook_header_secrets WHERE org_id = $1",
        &org,
    )
    .await;
    assert!(sealed.starts_with("v2:") && !sealed.contains("tok-3b1f9e"));
    assert_eq!(
        store.resolve_webhook_headers(&org, &headers).await.unwrap()["Authorization"],
        SECRET
    );
    // Another organisation's campaign naming the same reference gets nothing.
    assert!(matches!(
        store.resolve_webhook_headers(&other, &headers).await,
        Err(StoreError::Corrupt(_))
    ));
    // A plain value (a campaign stored before sealing existed) is sent as it is.
    let plain = BTreeMap::from([("X-Plain".to_owned(), "as-is".to_owned())]);
    assert_eq!(
        store.resolve_webhook_headers(&org, &plain).await.unwrap(),
        plain
    );

    // A new version is sealed too; a value shaped like a reference is sealed like any other,
    // so nobody can point a definition at a secret they were not given.
    let next = store
        .append_definition_version(&org, &stored.id, &definition_with_header(reference))
        .await
        .unwrap();
    let next_headers = headers_of(&next.definition);
    assert_ne!(&next_headers["Authorization"], reference);
    assert_eq!(
        &store
            .resolve_webhook_headers(&org, &next_headers)
            .await
            .unwrap()["Authorization"],
        reference
    );

    // An inline campaign definition is sealed; one copied from a stored version is kept as is.
    let inline = store
        .create_campaign(new_campaign(&org, definition_with_header(SECRET), None))
        .await
        .unwrap();
    assert!(
        !inline.definition.contains("tok-3b1f9e"),
        "{}",
        inline.definition
    );
    let inline_headers = headers_of(&serde_json::from_str(&inline.definition).unwrap());
    assert_eq!(
        store
            .resolve_webhook_headers(&org, &inline_headers)
            .await
            .unwrap()["Authorization"],
        SECRET
    );
    let copied_text = version.definition.to_string();
    let copied = store
        .create_campaign(new_campaign(
            &org,
            copied_text.clone(),
            Some((stored.id.clone(), 1)),
        ))
        .await
        .unwrap();
    assert_eq!(copied.definition, copied_text);
}

store_test!(a_definition_without_headers_needs_no_secret_key);
async fn a_definition_without_headers_needs_no_secret_key(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let text = r#"{"version":1,"start":"a","steps":[{"id":"a","type":"MARK_MISSED"}]}"#;
    let (_, version) = store.create_definition(&org, "Plain", text).await.unwrap();
    assert_eq!(
        version.definition,
        serde_json::from_str::<serde_json::Value>(text).unwrap()
    );
    let before = testing::row_counts(&store).await.unwrap();
    assert!(matches!(
        store
            .create_definition(&org, "Hook", &definition_with_header(SECRET))
            .await,
        Err(StoreError::Config(_))
    ));
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);
}

store_test!(a_sealed_value_moved_to_another_table_or_organisation_does_not_open);
async fn a_sealed_value_moved_to_another_table_or_organisation_does_not_open(store: Store) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap().id;
    let other = store.create_organisation("Other").await.unwrap().id;
    for id in [&org, &other] {
        store
            .configure_webhook_channel(id, "https://hooks.example.com", 5000)
            .await
            .unwrap();
    }
    // A header secret of this very organisation, pasted as its webhook channel secret: the
    // associated data names the table and column, so it does not open there.
    store
        .create_definition(&org, "Hook", &definition_with_header(SECRET))
        .await
        .unwrap();
    let header_sealed = raw(
        &store,
        "SELECT sealed FROM webhook_header_secrets WHERE org_id = $1",
        &org,
    )
    .await;
    overwrite(
        &store,
        "UPDATE webhook_channels SET secret_ciphertext = $1 WHERE org_id = $2",
        &header_sealed,
        &org,
    )
    .await;
    assert!(matches!(
        store.webhook_signing_secret(&org).await,
        Err(StoreError::Corrupt(_))
    ));
    // The same column of another organisation: refused too.
    let others = raw(
        &store,
        "SELECT secret_ciphertext FROM webhook_channels WHERE org_id = $1",
        &other,
    )
    .await;
    overwrite(
        &store,
        "UPDATE webhook_channels SET secret_ciphertext = $1 WHERE org_id = $2",
        &others,
        &org,
    )
    .await;
    assert!(matches!(
        store.webhook_signing_secret(&org).await,
        Err(StoreError::Corrupt(_))
    ));
}

store_test!(rotation_reseals_everything_so_the_previous_key_can_be_dropped);
async fn rotation_reseals_everything_so_the_previous_key_can_be_dropped(store: Store) {
    let old = SecretKey::generate();
    let new = SecretKey::generate();
    let before = store.clone().with_secret_key(old.clone());
    let org = before.create_organisation("Acme").await.unwrap().id;
    let (_, channel_secret) = before
        .configure_webhook_channel(&org, "https://hooks.example.com", 5000)
        .await
        .unwrap();
    let channel_secret = channel_secret.unwrap();
    before
        .set_push_credentials(&org, Platform::Fcm, &serde_json::json!({}), "fcm-key")
        .await
        .unwrap();
    before
        .set_push_credentials(&org, Platform::Apns, &serde_json::json!({}), "apns-key")
        .await
        .unwrap();
    // One row as a server before key ids wrote it.
    overwrite(
        &before,
        "UPDATE push_credentials SET sealed = $1 WHERE org_id = $2 AND provider = 'apns'",
        &testing::seal_v1(&old, &org, "apns-key"),
        &org,
    )
    .await;
    let (_, version) = before
        .create_definition(&org, "Hook", &definition_with_header(SECRET))
        .await
        .unwrap();
    let headers = headers_of(&version.definition);

    // Both keys configured: everything opens, new values are sealed with the new key.
    let both = store
        .clone()
        .with_keyring(Keyring::new(new.clone(), vec![old.clone()]));
    assert_eq!(
        both.push_credentials_secret(&org, Platform::Apns)
            .await
            .unwrap()
            .as_deref(),
        Some("apns-key")
    );
    let report = both.rotate_secret_key(1).await.unwrap();
    let counts: Vec<(&str, u64, u64)> = report
        .iter()
        .map(|t| (t.table, t.resealed, t.already_current))
        .collect();
    assert_eq!(
        counts,
        [
            ("webhook_channels", 1, 0),
            ("push_credentials", 2, 0),
            ("webhook_header_secrets", 1, 0)
        ]
    );
    // Idempotent: a second run (say, after a crash) finds everything current.
    let again = both.rotate_secret_key(100).await.unwrap();
    assert!(again.iter().all(|t| t.resealed == 0), "{again:?}");
    assert_eq!(again.iter().map(|t| t.already_current).sum::<u64>(), 4);

    // The old key dropped: everything still opens with the new one alone.
    let after = store.clone().with_secret_key(new.clone());
    assert_eq!(
        after.webhook_signing_secret(&org).await.unwrap().unwrap().1,
        channel_secret
    );
    for (platform, want) in [(Platform::Fcm, "fcm-key"), (Platform::Apns, "apns-key")] {
        assert_eq!(
            after
                .push_credentials_secret(&org, platform)
                .await
                .unwrap()
                .as_deref(),
            Some(want)
        );
    }
    assert_eq!(
        after.resolve_webhook_headers(&org, &headers).await.unwrap()["Authorization"],
        SECRET
    );
    // And the old key alone no longer opens anything: a configuration error naming the key.
    let stale = store.clone().with_secret_key(old);
    assert!(matches!(
        stale.resolve_webhook_headers(&org, &headers).await,
        Err(StoreError::Config(_))
    ));
    assert!(matches!(
        stale.webhook_signing_secret(&org).await,
        Err(StoreError::Config(_))
    ));
}

store_test!(rotation_stops_at_a_value_no_configured_key_opens);
async fn rotation_stops_at_a_value_no_configured_key_opens(store: Store) {
    let sealing = store.clone().with_secret_key(SecretKey::generate());
    let org = sealing.create_organisation("Acme").await.unwrap().id;
    sealing
        .configure_webhook_channel(&org, "https://hooks.example.com", 5000)
        .await
        .unwrap();
    let unrelated = store.with_secret_key(SecretKey::generate());
    assert!(matches!(
        unrelated.rotate_secret_key(10).await,
        Err(StoreError::Config(_))
    ));
}
