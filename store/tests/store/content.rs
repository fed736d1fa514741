//! Content: versioned templates and workflow definitions, the webhook channel and its sealed
//! secret, and the row counts other crates' tests compare.

use pidgr_store::{SecretKey, Store, StoreError, testing};
use sqlx::Row;

fn vars(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn conflict_message<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "expected NotFound, got {result:?}"
    );
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::Corrupt(_))),
        "expected Corrupt, got {result:?}"
    );
}

async fn raw_sealed_secret(store: &Store, org_id: &str) -> String {
    sqlx::query("SELECT secret_ciphertext FROM webhook_channels WHERE org_id = $1")
        .bind(org_id)
        .fetch_one(testing::pool(store))
        .await
        .unwrap()
        .get("secret_ciphertext")
}

async fn overwrite_sealed_secret(store: &Store, org_id: &str, sealed: &str) {
    sqlx::query("UPDATE webhook_channels SET secret_ciphertext = $1 WHERE org_id = $2")
        .bind(sealed)
        .bind(org_id)
        .execute(testing::pool(store))
        .await
        .unwrap();
}

// ---- templates ----

store_test!(template_versions_are_numbered_one_two_three_and_never_change);
async fn template_versions_are_numbered_one_two_three_and_never_change(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let (template, v1) = store
        .create_template(
            &org.id,
            "Welcome",
            "Hi {{name}}",
            "Welcome to {{team}}, {{name}}",
            &vars(&["team", "name", "team"]),
        )
        .await
        .unwrap();
    assert_eq!(
        (template.name.as_str(), template.latest_version),
        ("Welcome", 1)
    );
    assert_eq!(
        (v1.template_id.as_str(), v1.version),
        (template.id.as_str(), 1)
    );
    // Stored sorted and once each, as the schema promises.
    assert_eq!(v1.variables, vars(&["name", "team"]));

    let v2 = store
        .append_template_version(&org.id, &template.id, "Hello", "Second body", &[])
        .await
        .unwrap();
    let v3 = store
        .append_template_version(&org.id, &template.id, "Hey {{x}}", "Third", &vars(&["x"]))
        .await
        .unwrap();
    assert_eq!((v2.version, v3.version), (2, 3));

    assert_eq!(
        store
            .get_template_version(&org.id, &template.id, 1)
            .await
            .unwrap(),
        v1
    );
    assert_eq!(
        store
            .get_template_version(&org.id, &template.id, 2)
            .await
            .unwrap(),
        v2
    );
    assert_eq!(
        store
            .get_template_version(&org.id, &template.id, 3)
            .await
            .unwrap(),
        v3
    );
    assert_not_found(store.get_template_version(&org.id, &template.id, 4).await);

    let head = store.get_template(&org.id, &template.id).await.unwrap();
    assert_eq!(head.latest_version, 3);
    assert_eq!(head.created_at, template.created_at);
    assert!(head.updated_at >= template.updated_at);

    let all = store
        .list_template_versions(&org.id, &template.id, 0, 10)
        .await
        .unwrap();
    assert_eq!(all, vec![v1, v2.clone(), v3]);
    let page = store
        .list_template_versions(&org.id, &template.id, 1, 1)
        .await
        .unwrap();
    assert_eq!(page, vec![v2]);
    assert!(
        store
            .list_template_versions(&org.id, &template.id, 3, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

store_test!(concurrent_template_appends_each_get_a_number_of_their_own);
async fn concurrent_template_appends_each_get_a_number_of_their_own(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let (template, _) = store
        .create_template(&org.id, "Race", "t", "b", &[])
        .await
        .unwrap();
    let append = |n: u32| {
        let store = store.clone();
        let (org_id, template_id) = (org.id.clone(), template.id.clone());
        async move {
            store
                .append_template_version(&org_id, &template_id, &format!("t{n}"), "b", &[])
                .await
                .unwrap()
        }
    };
    let (a, b, c, d, e) = tokio::join!(append(1), append(2), append(3), append(4), append(5));
    let mut numbers: Vec<i64> = [a, b, c, d, e].iter().map(|v| v.version).collect();
    numbers.sort();
    assert_eq!(numbers, vec![2, 3, 4, 5, 6]);
    assert_eq!(
        store
            .get_template(&org.id, &template.id)
            .await
            .unwrap()
            .latest_version,
        6
    );
    let listed = store
        .list_template_versions(&org.id, &template.id, 0, 100)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
}

store_test!(a_second_template_with_the_same_name_is_a_conflict_that_says_so);
async fn a_second_template_with_the_same_name_is_a_conflict_that_says_so(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    store
        .create_template(&org.id, "Welcome", "t", "b", &[])
        .await
        .unwrap();
    let before = testing::row_counts(&store).await.unwrap();
    let message = conflict_message(
        store
            .create_template(&org.id, "Welcome", "t2", "b2", &[])
            .await,
    );
    assert_eq!(message, "a template named \"Welcome\" already exists");
    // The refused create left no half-written version behind.
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);
    // Names are unique per organisation only.
    let other = store.create_organisation("Other").await.unwrap();
    store
        .create_template(&other.id, "Welcome", "t", "b", &[])
        .await
        .unwrap();
}

store_test!(templates_list_in_creation_order_one_page_after_another);
async fn templates_list_in_creation_order_one_page_after_another(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let mut created = Vec::new();
    for name in ["a", "b", "c"] {
        created.push(
            store
                .create_template(&org.id, name, "t", "b", &[])
                .await
                .unwrap()
                .0,
        );
    }
    let first = store.list_templates(&org.id, "", 2).await.unwrap();
    assert_eq!(first, created[..2]);
    let second = store
        .list_templates(&org.id, &first[1].id, 2)
        .await
        .unwrap();
    assert_eq!(second, created[2..]);
    assert!(
        store
            .list_templates(&org.id, &second[0].id, 2)
            .await
            .unwrap()
            .is_empty()
    );
}

store_test!(another_organisations_template_is_not_found_and_never_listed);
async fn another_organisations_template_is_not_found_and_never_listed(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let other = store.create_organisation("Other").await.unwrap();
    let (template, _) = store
        .create_template(&org.id, "Welcome", "t", "b", &[])
        .await
        .unwrap();
    assert_not_found(store.get_template(&other.id, &template.id).await);
    assert_not_found(store.get_template_version(&other.id, &template.id, 1).await);
    assert_not_found(
        store
            .list_template_versions(&other.id, &template.id, 0, 10)
            .await,
    );
    let before = testing::row_counts(&store).await.unwrap();
    assert_not_found(
        store
            .append_template_version(&other.id, &template.id, "t", "b", &[])
            .await,
    );
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);
    assert!(
        store
            .list_templates(&other.id, "", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .get_template(&org.id, &template.id)
            .await
            .unwrap()
            .latest_version,
        1
    );
}

// ---- workflow definitions ----

store_test!(definition_versions_are_numbered_in_order_and_read_back_as_json);
async fn definition_versions_are_numbered_in_order_and_read_back_as_json(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let (definition, v1) = store
        .create_definition(&org.id, "Remind twice", r#"{"steps":[{"id":"a"}]}"#)
        .await
        .unwrap();
    assert_eq!(
        (definition.name.as_str(), definition.latest_version),
        ("Remind twice", 1)
    );
    assert_eq!(v1.version, 1);
    assert_eq!(v1.definition, serde_json::json!({"steps": [{"id": "a"}]}));
    let v2 = store
        .append_definition_version(&org.id, &definition.id, r#"{"steps":[]}"#)
        .await
        .unwrap();
    assert_eq!(
        (v2.definition_id.as_str(), v2.version),
        (definition.id.as_str(), 2)
    );
    assert_eq!(
        store
            .get_definition_version(&org.id, &definition.id, 1)
            .await
            .unwrap(),
        v1
    );
    assert_eq!(
        store
            .list_definition_versions(&org.id, &definition.id, 0, 10)
            .await
            .unwrap(),
        vec![v1, v2]
    );
    assert_eq!(
        store
            .get_definition(&org.id, &definition.id)
            .await
            .unwrap()
            .latest_version,
        2
    );
    let listed = store.list_definitions(&org.id, "", 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, definition.id);
    let message = conflict_message(
        store
            .create_definition(&org.id, "Remind twice", r#"{"steps":[]}"#)
            .await,
    );
    assert_eq!(
        message,
        "a workflow definition named \"Remind twice\" already exists"
    );
}

store_test!(concurrent_definition_appends_each_get_a_number_of_their_own);
async fn concurrent_definition_appends_each_get_a_number_of_their_own(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let (definition, _) = store
        .create_definition(&org.id, "Race", "{}")
        .await
        .unwrap();
    let append = |n: u32| {
        let store = store.clone();
        let (org_id, id) = (org.id.clone(), definition.id.clone());
        async move {
            store
                .append_definition_version(&org_id, &id, &format!("{{\"n\":{n}}}"))
                .await
                .unwrap()
                .version
        }
    };
    let (a, b, c, d) = tokio::join!(append(1), append(2), append(3), append(4));
    let mut numbers = vec![a, b, c, d];
    numbers.sort();
    assert_eq!(numbers, vec![2, 3, 4, 5]);
}

store_test!(a_definition_that_is_not_json_is_refused_and_nothing_is_written);
async fn a_definition_that_is_not_json_is_refused_and_nothing_is_written(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let (definition, _) = store
        .create_definition(&org.id, "Good", "{}")
        .await
        .unwrap();
    let before = testing::row_counts(&store).await.unwrap();
    let message = conflict_message(store.create_definition(&org.id, "Bad", "{not json").await);
    assert!(
        message.starts_with("the workflow definition is not valid JSON"),
        "{message}"
    );
    conflict_message(
        store
            .append_definition_version(&org.id, &definition.id, "nope")
            .await,
    );
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);
}

store_test!(another_organisations_definition_is_not_found_and_never_listed);
async fn another_organisations_definition_is_not_found_and_never_listed(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let other = store.create_organisation("Other").await.unwrap();
    let (definition, _) = store
        .create_definition(&org.id, "Flow", "{}")
        .await
        .unwrap();
    assert_not_found(store.get_definition(&other.id, &definition.id).await);
    assert_not_found(
        store
            .get_definition_version(&other.id, &definition.id, 1)
            .await,
    );
    assert_not_found(
        store
            .list_definition_versions(&other.id, &definition.id, 0, 10)
            .await,
    );
    assert_not_found(
        store
            .append_definition_version(&other.id, &definition.id, "{}")
            .await,
    );
    assert!(
        store
            .list_definitions(&other.id, "", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .get_definition(&org.id, &definition.id)
            .await
            .unwrap()
            .latest_version,
        1
    );
}

// ---- the webhook channel and its sealed secret ----

store_test!(a_webhook_secret_is_shown_once_kept_on_reconfigure_and_read_back_for_signing);
async fn a_webhook_secret_is_shown_once_kept_on_reconfigure_and_read_back_for_signing(
    store: Store,
) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap();
    assert!(store.get_webhook_channel(&org.id).await.unwrap().is_none());
    assert!(
        store
            .webhook_signing_secret(&org.id)
            .await
            .unwrap()
            .is_none()
    );

    let (channel, secret) = store
        .configure_webhook_channel(&org.id, "https://hooks.example.com/a", 5000)
        .await
        .unwrap();
    let secret = secret.expect("a new channel comes with its secret");
    let hex_part = secret.strip_prefix("whsec_").unwrap();
    assert_eq!(hex_part.len(), 64);
    assert!(hex_part.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        (channel.url.as_str(), channel.timeout_ms),
        ("https://hooks.example.com/a", 5000)
    );

    let (signing, opened) = store
        .webhook_signing_secret(&org.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (signing, opened.as_str()),
        (channel.clone(), secret.as_str())
    );

    let (updated, none) = store
        .configure_webhook_channel(&org.id, "https://hooks.example.com/b", 2000)
        .await
        .unwrap();
    assert!(
        none.is_none(),
        "reconfiguring must not show the secret again"
    );
    assert_eq!(
        (updated.url.as_str(), updated.timeout_ms),
        ("https://hooks.example.com/b", 2000)
    );
    assert_eq!(updated.secret_rotated_at, channel.secret_rotated_at);
    assert_eq!(
        store.get_webhook_channel(&org.id).await.unwrap(),
        Some(updated)
    );
    assert_eq!(
        store
            .webhook_signing_secret(&org.id)
            .await
            .unwrap()
            .unwrap()
            .1,
        secret
    );
}

store_test!(a_rotation_keeps_the_replaced_secret_sealed_for_the_overlap_and_only_the_last_one);
async fn a_rotation_keeps_the_replaced_secret_sealed_for_the_overlap_and_only_the_last_one(
    store: Store,
) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap();
    let long_ago = chrono::DateTime::UNIX_EPOCH;
    let (_, first) = store
        .configure_webhook_channel(&org.id, "https://hooks.example.com/a", 5000)
        .await
        .unwrap();
    let first = first.unwrap();
    let signing = |after| {
        let store = store.clone();
        let org = org.id.clone();
        async move {
            store
                .webhook_signing_secrets(&org, after)
                .await
                .unwrap()
                .unwrap()
                .1
        }
    };
    // Never rotated: the current secret alone, however long the overlap.
    assert_eq!(signing(long_ago).await, vec![first.clone()]);

    let (rotated, second) = store.rotate_webhook_secret(&org.id).await.unwrap();
    assert_ne!(second, first);
    assert_eq!(signing(long_ago).await, [second.clone(), first.clone()]);
    // The overlap is over once the rotation is older than it.
    let after_rotation = rotated.secret_rotated_at + chrono::Duration::milliseconds(1);
    assert_eq!(signing(after_rotation).await, vec![second.clone()]);
    // The previous secret is sealed like the current one, never stored in clear.
    let row =
        sqlx::query("SELECT previous_secret_ciphertext FROM webhook_channels WHERE org_id = $1")
            .bind(&org.id)
            .fetch_one(testing::pool(&store))
            .await
            .unwrap();
    let sealed: String = row.try_get("previous_secret_ciphertext").unwrap();
    assert!(
        !sealed.contains(first.trim_start_matches("whsec_")),
        "{sealed}"
    );

    // A second rotation keeps only the secret it replaced.
    let (_, third) = store.rotate_webhook_secret(&org.id).await.unwrap();
    assert_eq!(signing(long_ago).await, [third, second]);
}

store_test!(a_webhook_secret_is_not_stored_in_clear);
async fn a_webhook_secret_is_not_stored_in_clear(store: Store) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap();
    let (_, secret) = store
        .configure_webhook_channel(&org.id, "https://hooks.example.com", 5000)
        .await
        .unwrap();
    let secret = secret.unwrap();
    let raw = raw_sealed_secret(&store, &org.id).await;
    assert!(raw.starts_with("v3:"), "{raw}");
    assert!(!raw.contains(&secret));
    assert!(!raw.contains(secret.strip_prefix("whsec_").unwrap()));
    // A fresh nonce per seal: the same secret sealed twice differs.
    let other = store.create_organisation("Other").await.unwrap();
    store
        .configure_webhook_channel(&other.id, "https://hooks.example.com", 5000)
        .await
        .unwrap();
    assert_ne!(raw, raw_sealed_secret(&store, &other.id).await);
}

store_test!(rotating_the_webhook_secret_replaces_it);
async fn rotating_the_webhook_secret_replaces_it(store: Store) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap();
    assert_not_found(store.rotate_webhook_secret(&org.id).await);
    let (channel, first) = store
        .configure_webhook_channel(&org.id, "https://hooks.example.com", 5000)
        .await
        .unwrap();
    let first = first.unwrap();
    let (rotated, second) = store.rotate_webhook_secret(&org.id).await.unwrap();
    assert_ne!(first, second);
    assert!(second.starts_with("whsec_"));
    assert!(rotated.secret_rotated_at >= channel.secret_rotated_at);
    assert_eq!(rotated.url, channel.url);
    assert_eq!(
        store
            .webhook_signing_secret(&org.id)
            .await
            .unwrap()
            .unwrap()
            .1,
        second
    );
}

store_test!(a_tampered_webhook_secret_is_reported_as_corrupt);
async fn a_tampered_webhook_secret_is_reported_as_corrupt(store: Store) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap();
    store
        .configure_webhook_channel(&org.id, "https://hooks.example.com", 5000)
        .await
        .unwrap();
    let raw = raw_sealed_secret(&store, &org.id).await;
    // Flip one hex digit inside the ciphertext (after "v3:", the key id, ":" and the nonce).
    let mut bytes = raw.into_bytes();
    let at = 3 + 9 + 48 + 10;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(bytes).unwrap();
    overwrite_sealed_secret(&store, &org.id, &tampered).await;
    assert_corrupt(store.webhook_signing_secret(&org.id).await);
    // Not in the sealed format at all: also corrupt, never returned as the secret.
    overwrite_sealed_secret(&store, &org.id, "whsec_plaintext").await;
    assert_corrupt(store.webhook_signing_secret(&org.id).await);
}

store_test!(a_webhook_secret_sealed_under_another_key_is_a_configuration_error);
async fn a_webhook_secret_sealed_under_another_key_is_a_configuration_error(store: Store) {
    let key = SecretKey::generate();
    let sealing = store.clone().with_secret_key(key.clone());
    let org = sealing.create_organisation("Acme").await.unwrap();
    let (_, secret) = sealing
        .configure_webhook_channel(&org.id, "https://hooks.example.com", 5000)
        .await
        .unwrap();
    // Its key id names a key this server does not hold: a setting to fix, not damaged data.
    let wrong = store.clone().with_secret_key(SecretKey::generate());
    assert!(matches!(
        wrong.webhook_signing_secret(&org.id).await,
        Err(StoreError::Config(_))
    ));
    // The same key read back from its hex form opens it.
    let same = store
        .clone()
        .with_secret_key(SecretKey::from_hex(&key.to_hex()).unwrap());
    assert_eq!(
        same.webhook_signing_secret(&org.id)
            .await
            .unwrap()
            .unwrap()
            .1,
        secret.unwrap()
    );
}

store_test!(a_webhook_secret_copied_to_another_organisation_is_reported_as_corrupt);
async fn a_webhook_secret_copied_to_another_organisation_is_reported_as_corrupt(store: Store) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap();
    let other = store.create_organisation("Other").await.unwrap();
    for id in [&org.id, &other.id] {
        store
            .configure_webhook_channel(id, "https://hooks.example.com", 5000)
            .await
            .unwrap();
    }
    let stolen = raw_sealed_secret(&store, &org.id).await;
    overwrite_sealed_secret(&store, &other.id, &stolen).await;
    assert_corrupt(store.webhook_signing_secret(&other.id).await);
    assert!(
        store
            .webhook_signing_secret(&org.id)
            .await
            .unwrap()
            .is_some()
    );
}

store_test!(without_a_secret_key_a_webhook_channel_cannot_be_created_and_nothing_is_written);
async fn without_a_secret_key_a_webhook_channel_cannot_be_created_and_nothing_is_written(
    store: Store,
) {
    let org = store.create_organisation("Acme").await.unwrap();
    let before = testing::row_counts(&store).await.unwrap();
    let result = store
        .configure_webhook_channel(&org.id, "https://hooks.example.com", 5000)
        .await;
    match result {
        Err(StoreError::Config(message)) => assert!(message.contains("no secret key"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);
}

store_test!(another_organisations_webhook_channel_is_invisible_and_untouchable);
async fn another_organisations_webhook_channel_is_invisible_and_untouchable(store: Store) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap();
    let other = store.create_organisation("Other").await.unwrap();
    let (channel, _) = store
        .configure_webhook_channel(&org.id, "https://hooks.example.com", 5000)
        .await
        .unwrap();
    assert!(
        store
            .get_webhook_channel(&other.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .webhook_signing_secret(&other.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_not_found(store.rotate_webhook_secret(&other.id).await);
    assert_not_found(store.delete_webhook_channel(&other.id).await);
    assert_eq!(
        store.get_webhook_channel(&org.id).await.unwrap(),
        Some(channel)
    );

    store.delete_webhook_channel(&org.id).await.unwrap();
    assert!(store.get_webhook_channel(&org.id).await.unwrap().is_none());
    assert_not_found(store.delete_webhook_channel(&org.id).await);
}

#[test]
fn a_secret_key_never_shows_its_bytes_and_a_bad_one_is_refused_without_echoing_it() {
    let key = SecretKey::generate();
    let hex = key.to_hex();
    assert_eq!(hex.len(), 64);
    assert_eq!(format!("{key:?}"), "SecretKey(..)");
    assert_eq!(SecretKey::from_hex(&hex).unwrap().to_hex(), hex);
    for bad in ["", "abcd", &hex[..62], &format!("{}zz", &hex[..62])] {
        match SecretKey::from_hex(bad) {
            Err(StoreError::Config(message)) => {
                assert_eq!(
                    message,
                    "the secret key must be 64 hexadecimal characters (32 bytes)"
                );
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}

store_test!(a_store_with_a_secret_key_does_not_show_it_in_debug_output);
async fn a_store_with_a_secret_key_does_not_show_it_in_debug_output(store: Store) {
    let key = SecretKey::generate();
    let hex = key.to_hex();
    let store = store.with_secret_key(key);
    let debug = format!("{store:?}");
    assert!(debug.contains("SecretKey(..)"), "{debug}");
    assert!(!debug.contains(&hex));
}

// ---- row counts ----

store_test!(row_counts_cover_every_table_of_ours_and_count_what_was_written);
async fn row_counts_cover_every_table_of_ours_and_count_what_was_written(store: Store) {
    let before = testing::row_counts(&store).await.unwrap();
    assert!(!before.contains_key("_sqlx_migrations"));
    for table in [
        "organisations",
        "api_keys",
        "campaigns",
        "deliveries",
        "roles",
        "members",
        "templates",
        "template_versions",
        "workflow_definitions",
        "workflow_definition_versions",
        "webhook_channels",
        "idempotency_keys",
    ] {
        assert_eq!(before.get(table), Some(&0), "{table} in {before:?}");
    }
    let org = store.create_organisation("Acme").await.unwrap();
    let (template, _) = store
        .create_template(&org.id, "Welcome", "t", "b", &[])
        .await
        .unwrap();
    store
        .append_template_version(&org.id, &template.id, "t", "b", &[])
        .await
        .unwrap();
    let after = testing::row_counts(&store).await.unwrap();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_eq!(after["organisations"], 1);
    assert_eq!(after["templates"], 1);
    assert_eq!(after["template_versions"], 2);
    assert_eq!(after["workflow_definitions"], 0);
}
