//! Secrets at rest: webhook header values sealed when a definition is stored (in the same
//! transaction, bound to their owner), the `v3` format bound to organisation, table, column and
//! row, older formats still opening, and key rotation (which also seals plain header values and
//! repeats until nothing changes).

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
    assert!(sealed.starts_with("v3:") && !sealed.contains("tok-3b1f9e"));
    let owners = [stored.id.as_str()];
    assert_eq!(
        store
            .resolve_webhook_headers(&org, &owners, &headers)
            .await
            .unwrap()["Authorization"],
        SECRET
    );
    // Another organisation's campaign naming the same reference gets nothing.
    assert!(matches!(
        store
            .resolve_webhook_headers(&other, &owners, &headers)
            .await,
        Err(StoreError::Corrupt(_))
    ));
    // Nor does a campaign of this organisation that neither is nor comes from its owner.
    assert!(matches!(
        store
            .resolve_webhook_headers(&org, &["another-campaign"], &headers)
            .await,
        Err(StoreError::Corrupt(_))
    ));
    // A plain value (a campaign stored before sealing existed) is sent as it is.
    let plain = BTreeMap::from([("X-Plain".to_owned(), "as-is".to_owned())]);
    assert_eq!(
        store
            .resolve_webhook_headers(&org, &[], &plain)
            .await
            .unwrap(),
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
            .resolve_webhook_headers(&org, &owners, &next_headers)
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
            .resolve_webhook_headers(&org, &[inline.id.as_str()], &inline_headers)
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
    // Rotated once: the replaced secret is kept, sealed in a column of its own.
    let previous_secret = channel_secret.unwrap();
    let (_, channel_secret) = before.rotate_webhook_secret(&org).await.unwrap();
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
    let (stored, version) = before
        .create_definition(&org, "Hook", &definition_with_header(SECRET))
        .await
        .unwrap();
    let headers = headers_of(&version.definition);
    let owners = [stored.id.as_str()];
    // The audit signing key, made on first use.
    let signing_key = before.organisation_signer(&org).await.unwrap().key;

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
        .tables
        .iter()
        .map(|t| (t.table, t.resealed, t.already_current))
        .collect();
    assert_eq!(
        counts,
        [
            ("webhook_channels", 1, 0),
            ("webhook_channels", 1, 0),
            ("push_credentials", 2, 0),
            ("webhook_header_secrets", 1, 0),
            ("signing_keys", 1, 0)
        ]
    );
    // The first pass changed rows, so a second one looked again and found nothing.
    assert_eq!(report.passes, 2);
    // Idempotent: a second run (say, after a crash) finds everything current.
    let again = both.rotate_secret_key(100).await.unwrap();
    assert!(again.tables.iter().all(|t| t.resealed == 0), "{again:?}");
    assert_eq!(
        again.tables.iter().map(|t| t.already_current).sum::<u64>(),
        6
    );
    assert_eq!(again.passes, 1);

    // The old key dropped: everything still opens with the new one alone.
    let after = store.clone().with_secret_key(new.clone());
    assert_eq!(
        after
            .webhook_signing_secrets(&org, chrono::DateTime::UNIX_EPOCH)
            .await
            .unwrap()
            .unwrap()
            .1,
        [channel_secret.clone(), previous_secret]
    );
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
        after
            .resolve_webhook_headers(&org, &owners, &headers)
            .await
            .unwrap()["Authorization"],
        SECRET
    );
    // The same signing key, its private half opened with the new key alone.
    assert_eq!(
        after.organisation_signer(&org).await.unwrap().key,
        signing_key
    );
    // And the old key alone no longer opens anything: a configuration error naming the key.
    let stale = store.clone().with_secret_key(old);
    assert!(matches!(
        stale.resolve_webhook_headers(&org, &owners, &headers).await,
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

/// Makes every insert into `table` fail, as a constraint or a lost connection would.
async fn refuse_inserts(store: &Store, table: &str) {
    let statements = match store.backend() {
        pidgr_store::Backend::Sqlite => vec![format!(
            "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )],
        pidgr_store::Backend::Postgres => vec![
            "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                .to_owned(),
            format!(
                "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}
                 FOR EACH ROW EXECUTE FUNCTION refuse_insert()"
            ),
        ],
    };
    for statement in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(testing::pool(store))
            .await
            .unwrap();
    }
}

store_test!(a_refused_definition_or_campaign_leaves_no_secret_behind);
async fn a_refused_definition_or_campaign_leaves_no_secret_behind(store: Store) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap().id;
    store
        .create_definition(&org, "Hook", &definition_with_header(SECRET))
        .await
        .unwrap();
    let before = testing::row_counts(&store).await.unwrap();
    // A duplicate name is refused after the header values were sealed.
    assert!(matches!(
        store
            .create_definition(&org, "Hook", &definition_with_header(SECRET))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A version of a definition the organisation does not have.
    assert!(matches!(
        store
            .append_definition_version(
                &org,
                &uuid::Uuid::now_v7().to_string(),
                &definition_with_header(SECRET)
            )
            .await,
        Err(StoreError::NotFound)
    ));
    // A campaign whose insert fails.
    refuse_inserts(&store, "campaigns").await;
    assert!(
        store
            .create_campaign(new_campaign(&org, definition_with_header(SECRET), None))
            .await
            .is_err()
    );
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);
}

store_test!(a_sealed_value_copied_to_another_row_of_the_same_table_does_not_open);
async fn a_sealed_value_copied_to_another_row_of_the_same_table_does_not_open(store: Store) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap().id;
    for (platform, secret) in [(Platform::Fcm, "fcm-key"), (Platform::Apns, "apns-key")] {
        store
            .set_push_credentials(&org, platform, &serde_json::json!({}), secret)
            .await
            .unwrap();
    }
    // One provider's credentials pasted over another's.
    let fcm = raw(
        &store,
        "SELECT sealed FROM push_credentials WHERE org_id = $1 AND provider = 'fcm'",
        &org,
    )
    .await;
    overwrite(
        &store,
        "UPDATE push_credentials SET sealed = $1 WHERE org_id = $2 AND provider = 'apns'",
        &fcm,
        &org,
    )
    .await;
    assert!(matches!(
        store.push_credentials_secret(&org, Platform::Apns).await,
        Err(StoreError::Corrupt(_))
    ));

    // One header secret pasted over another's row of the same organisation.
    let (first, first_version) = store
        .create_definition(&org, "First", &definition_with_header(SECRET))
        .await
        .unwrap();
    let (second, second_version) = store
        .create_definition(&org, "Second", &definition_with_header("Bearer other"))
        .await
        .unwrap();
    let first_headers = headers_of(&first_version.definition);
    let second_headers = headers_of(&second_version.definition);
    let first_id = pidgr_store::header_secret_id(&first_headers["Authorization"]).unwrap();
    let second_id = pidgr_store::header_secret_id(&second_headers["Authorization"]).unwrap();
    let first_sealed = raw(
        &store,
        "SELECT sealed FROM webhook_header_secrets WHERE id = $1",
        first_id,
    )
    .await;
    overwrite(
        &store,
        "UPDATE webhook_header_secrets SET sealed = $1 WHERE id = $2",
        &first_sealed,
        second_id,
    )
    .await;
    assert!(matches!(
        store
            .resolve_webhook_headers(&org, &[second.id.as_str()], &second_headers)
            .await,
        Err(StoreError::Corrupt(_))
    ));
    // A secret handed to another owner by changing its row's owner does not open either.
    overwrite(
        &store,
        "UPDATE webhook_header_secrets SET owner_id = $1 WHERE id = $2",
        &second.id,
        first_id,
    )
    .await;
    assert!(matches!(
        store
            .resolve_webhook_headers(&org, &[second.id.as_str()], &first_headers)
            .await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store
            .resolve_webhook_headers(&org, &[first.id.as_str()], &first_headers)
            .await,
        Err(StoreError::Corrupt(_))
    ));
}

store_test!(a_campaigns_webhook_target_is_read_from_its_stored_definition_and_opened_for_its_owner);
async fn a_campaigns_webhook_target_is_read_from_its_stored_definition_and_opened_for_its_owner(
    store: Store,
) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap().id;
    let inline = store
        .create_campaign(new_campaign(&org, definition_with_header(SECRET), None))
        .await
        .unwrap();
    let target = store
        .campaign_webhook_target(&org, &inline.id, "hook")
        .await
        .unwrap();
    assert_eq!(target.url, "https://hooks.example.com/p");
    assert_eq!(target.headers["Authorization"], SECRET);
    // The secret never shows in the target's Debug output.
    assert!(!format!("{target:?}").contains("tok-3b1f9e"));

    // A campaign created from a stored definition opens the definition's secrets.
    let (stored, version) = store
        .create_definition(
            &org,
            "Hook",
            &definition_with_header("Bearer from-definition"),
        )
        .await
        .unwrap();
    let copied = store
        .create_campaign(new_campaign(
            &org,
            version.definition.to_string(),
            Some((stored.id.clone(), 1)),
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .campaign_webhook_target(&org, &copied.id, "hook")
            .await
            .unwrap()
            .headers["Authorization"],
        "Bearer from-definition"
    );

    // A step the stored definition does not have, or not as a CALL_WEBHOOK: refused for good.
    assert!(matches!(
        store
            .campaign_webhook_target(&org, &inline.id, "other")
            .await,
        Err(StoreError::Corrupt(_))
    ));
    let waiting = store
        .create_campaign(new_campaign(
            &org,
            r#"{"version":1,"start":"hook","steps":[{"id":"hook","type":"MARK_MISSED"}]}"#
                .to_owned(),
            None,
        ))
        .await
        .unwrap();
    assert!(matches!(
        store
            .campaign_webhook_target(&org, &waiting.id, "hook")
            .await,
        Err(StoreError::Corrupt(_))
    ));
    // A campaign of another organisation is not found.
    let other = store.create_organisation("Other").await.unwrap().id;
    assert!(matches!(
        store
            .campaign_webhook_target(&other, &inline.id, "hook")
            .await,
        Err(StoreError::NotFound)
    ));

    // Another campaign's definition made to point at the inline campaign's secret (as a
    // tampered definition would): the secret belongs to the inline campaign and does not open.
    let reference =
        headers_of(&serde_json::from_str(&inline.definition).unwrap())["Authorization"].clone();
    let thief = store
        .create_campaign(new_campaign(&org, definition_with_header("x"), None))
        .await
        .unwrap();
    overwrite(
        &store,
        "UPDATE campaigns SET definition = $1 WHERE id = $2",
        &definition_with_header(&reference),
        &thief.id,
    )
    .await;
    assert!(matches!(
        store.campaign_webhook_target(&org, &thief.id, "hook").await,
        Err(StoreError::Corrupt(_))
    ));
}

store_test!(rotation_seals_header_values_stored_in_clear_before_sealing_existed);
async fn rotation_seals_header_values_stored_in_clear_before_sealing_existed(store: Store) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap().id;
    let without_headers =
        definition_with_header("x").replace(r#""headers":{"Authorization":"x"},"#, "");
    assert!(!without_headers.contains("headers"), "{without_headers}");
    // Rows as a server before sealing wrote them: the header values in clear.
    let (stored, _) = store
        .create_definition(&org, "Hook", &without_headers)
        .await
        .unwrap();
    overwrite(
        &store,
        "UPDATE workflow_definition_versions SET definition = $1 WHERE definition_id = $2",
        &definition_with_header(SECRET),
        &stored.id,
    )
    .await;
    let mut campaigns = Vec::new();
    for _ in 0..2 {
        let campaign = store
            .create_campaign(new_campaign(&org, without_headers.clone(), None))
            .await
            .unwrap();
        overwrite(
            &store,
            "UPDATE campaigns SET definition = $1 WHERE id = $2",
            &definition_with_header(SECRET),
            &campaign.id,
        )
        .await;
        campaigns.push(campaign.id);
    }
    // A started campaign keeps what it runs with.
    overwrite(
        &store,
        "UPDATE campaigns SET status = $1 WHERE id = $2",
        "COMPLETED",
        &campaigns[1],
    )
    .await;

    let report = store.rotate_secret_key(1).await.unwrap();
    let plain = &report.plain_headers;
    assert_eq!(
        (plain.definition_versions, plain.campaigns, plain.values),
        (1, 1, 2),
        "{report:?}"
    );
    let version = store
        .get_definition_version(&org, &stored.id, 1)
        .await
        .unwrap();
    assert!(
        !version.definition.to_string().contains("tok-3b1f9e"),
        "{}",
        version.definition
    );
    assert_eq!(
        store
            .resolve_webhook_headers(
                &org,
                &[stored.id.as_str()],
                &headers_of(&version.definition)
            )
            .await
            .unwrap()["Authorization"],
        SECRET
    );
    let draft = store.get_campaign(&org, &campaigns[0]).await.unwrap();
    assert!(
        !draft.definition.contains("tok-3b1f9e"),
        "{}",
        draft.definition
    );
    assert_eq!(
        store
            .campaign_webhook_target(&org, &campaigns[0], "hook")
            .await
            .unwrap()
            .headers["Authorization"],
        SECRET
    );
    let completed = store.get_campaign(&org, &campaigns[1]).await.unwrap();
    assert!(completed.definition.contains("tok-3b1f9e"));
    // Nothing left in clear: a second run seals nothing.
    let again = store.rotate_secret_key(10).await.unwrap();
    assert_eq!(again.plain_headers.values, 0, "{again:?}");
    assert_eq!(again.passes, 1);
}

store_test!(rotation_repeats_until_a_pass_changes_nothing_and_fails_when_rows_keep_changing);
async fn rotation_repeats_until_a_pass_changes_nothing_and_fails_when_rows_keep_changing(
    store: Store,
) {
    let (old, new) = (SecretKey::generate(), SecretKey::generate());
    // A process still running with the old key as its current one.
    let stale = store.clone().with_secret_key(old.clone());
    let org = stale.create_organisation("Acme").await.unwrap().id;
    stale
        .set_push_credentials(&org, Platform::Fcm, &serde_json::json!({}), "fcm-1")
        .await
        .unwrap();
    let rotating = store
        .clone()
        .with_keyring(Keyring::new(new.clone(), vec![old.clone()]));

    // It writes once more after the first pass: a later pass re-seals that too.
    let writer = stale.clone();
    let org_id = org.clone();
    let report = rotating
        .rotate_secret_key_observed(10, 5, move |pass| {
            let (writer, org_id) = (writer.clone(), org_id.clone());
            async move {
                if pass == 1 {
                    writer
                        .set_push_credentials(
                            &org_id,
                            Platform::Apns,
                            &serde_json::json!({}),
                            "apns-1",
                        )
                        .await
                        .unwrap();
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(report.passes, 3, "{report:?}");
    let push = report
        .tables
        .iter()
        .find(|t| t.table == "push_credentials")
        .unwrap();
    assert_eq!(push.resealed, 2);
    let current_only = store.clone().with_secret_key(new);
    assert_eq!(
        current_only
            .push_credentials_secret(&org, Platform::Apns)
            .await
            .unwrap()
            .as_deref(),
        Some("apns-1")
    );

    // It writes after every pass: the rotation gives up and says why.
    stale
        .set_push_credentials(&org, Platform::Fcm, &serde_json::json!({}), "fcm-0")
        .await
        .unwrap();
    let writer = stale.clone();
    let org_id = org.clone();
    let endless = rotating
        .rotate_secret_key_observed(10, 3, move |pass| {
            let (writer, org_id) = (writer.clone(), org_id.clone());
            async move {
                writer
                    .set_push_credentials(
                        &org_id,
                        Platform::Fcm,
                        &serde_json::json!({}),
                        &format!("fcm-{pass}"),
                    )
                    .await
                    .unwrap();
            }
        })
        .await;
    match endless {
        Err(StoreError::Conflict(message)) => {
            assert!(message.contains("after 3 passes"), "{message}");
            assert!(message.contains("previous key"), "{message}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}
