//! Organisations, roles and API keys.

use pidgr_store::{
    MemberUpdate, NewMember, Permission, Role, SUPER_ADMIN, SYSTEM_ROLES, Store, StoreError,
};
use std::collections::{BTreeMap, BTreeSet};

fn permissions(list: &[Permission]) -> BTreeSet<Permission> {
    list.iter().copied().collect()
}

fn conflict_message<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn all_roles(store: &Store, org: &str) -> Vec<Role> {
    store.list_roles(org, "", 100).await.unwrap()
}

store_test!(api_keys_authenticate_until_revoked);
async fn api_keys_authenticate_until_revoked(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let generated = store
        .create_api_key(&org.id, "dev", SUPER_ADMIN)
        .await
        .unwrap();
    assert!(generated.secret.starts_with(&generated.key.prefix));
    let authenticated = store
        .authenticate(&generated.secret)
        .await
        .unwrap()
        .unwrap();
    let key = authenticated.key;
    assert_eq!(
        (key.org_id.as_str(), key.role.as_str()),
        (org.id.as_str(), SUPER_ADMIN)
    );
    assert_eq!(authenticated.permissions, permissions(&Permission::ALL));
    assert!(key.last_used_at.is_some());
    assert!(
        store
            .authenticate("pidgr_not-a-key")
            .await
            .unwrap()
            .is_none()
    );
    let other = store.create_organisation("Other").await.unwrap();
    assert!(matches!(
        store.revoke_api_key(&other.id, &key.id).await,
        Err(StoreError::NotFound)
    ));
    store.revoke_api_key(&org.id, &key.id).await.unwrap();
    assert!(
        store
            .authenticate(&generated.secret)
            .await
            .unwrap()
            .is_none()
    );
    // Revoking is not idempotent: a key already revoked is no longer there to revoke.
    assert!(matches!(
        store.revoke_api_key(&org.id, &key.id).await,
        Err(StoreError::NotFound)
    ));
}

store_test!(a_new_organisation_has_the_four_system_roles_which_cannot_be_changed_or_deleted);
async fn a_new_organisation_has_the_four_system_roles_which_cannot_be_changed_or_deleted(
    store: Store,
) {
    let org = store.create_organisation("Acme").await.unwrap();
    let roles = all_roles(&store, &org.id).await;
    let by_id: BTreeMap<&str, &Role> = roles.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(by_id.len(), 4);
    for system in SYSTEM_ROLES {
        let role = by_id[system.id];
        assert_eq!(role.name, system.name);
        assert_eq!(role.permissions, permissions(system.permissions));
        assert!(role.system);
    }
    assert!(by_id["member"].permissions.is_empty());
    assert!(!by_id["admin"].permissions.contains(&Permission::RolesWrite));

    for id in ["super_admin", "admin", "manager", "member"] {
        let message = conflict_message(store.update_role(&org.id, id, Some("Renamed"), None).await);
        assert_eq!(message, "system roles cannot be changed");
        conflict_message(
            store
                .update_role(&org.id, id, None, Some(&permissions(&Permission::ALL)))
                .await,
        );
        let message = conflict_message(store.delete_role(&org.id, id).await);
        assert_eq!(message, "system roles cannot be deleted");
    }
    assert_eq!(all_roles(&store, &org.id).await, roles);
}

store_test!(custom_roles_are_created_renamed_given_new_permissions_and_deleted);
async fn custom_roles_are_created_renamed_given_new_permissions_and_deleted(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let readers = permissions(&[Permission::CampaignsRead, Permission::TemplatesRead]);
    let role = store
        .create_role(&org.id, "Auditor", &readers)
        .await
        .unwrap();
    assert!(!role.system);
    assert_eq!(role.permissions, readers);
    assert_eq!(store.get_role(&org.id, &role.id).await.unwrap(), role);
    // The API serialises roles directly: permissions in their string form.
    let json = serde_json::to_value(&role).unwrap();
    assert_eq!(
        json["permissions"],
        serde_json::json!(["campaigns:read", "templates:read"])
    );

    let renamed = store
        .update_role(&org.id, &role.id, Some("Reviewer"), None)
        .await
        .unwrap();
    assert_eq!(
        (renamed.name.as_str(), &renamed.permissions),
        ("Reviewer", &readers)
    );
    let writers = permissions(&[Permission::CampaignsWrite, Permission::DeliveriesWrite]);
    let regranted = store
        .update_role(&org.id, &role.id, None, Some(&writers))
        .await
        .unwrap();
    assert_eq!(
        (regranted.name.as_str(), &regranted.permissions),
        ("Reviewer", &writers)
    );
    assert_eq!(store.get_role(&org.id, &role.id).await.unwrap(), regranted);
    assert_eq!(all_roles(&store, &org.id).await.len(), 5);

    store.delete_role(&org.id, &role.id).await.unwrap();
    assert!(matches!(
        store.get_role(&org.id, &role.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_role(&org.id, &role.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.update_role(&org.id, &role.id, Some("x"), None).await,
        Err(StoreError::NotFound)
    ));
}

store_test!(role_names_are_unique_within_an_organisation_system_roles_included);
async fn role_names_are_unique_within_an_organisation_system_roles_included(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let none = BTreeSet::new();
    assert_eq!(
        conflict_message(store.create_role(&org.id, "Admin", &none).await),
        "a role named \"Admin\" already exists"
    );
    let auditor = store.create_role(&org.id, "Auditor", &none).await.unwrap();
    let reviewer = store.create_role(&org.id, "Reviewer", &none).await.unwrap();
    assert_eq!(
        conflict_message(
            store
                .update_role(&org.id, &reviewer.id, Some("Auditor"), None)
                .await
        ),
        "a role named \"Auditor\" already exists"
    );
    assert_eq!(
        store.get_role(&org.id, &reviewer.id).await.unwrap().name,
        "Reviewer"
    );
    // Another organisation has names of its own.
    let other = store.create_organisation("Other").await.unwrap();
    store
        .create_role(&other.id, "Auditor", &none)
        .await
        .unwrap();
    assert_eq!(
        store.get_role(&org.id, &auditor.id).await.unwrap().name,
        "Auditor"
    );
}

store_test!(roles_are_listed_in_pages_by_id);
async fn roles_are_listed_in_pages_by_id(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    for name in ["A", "B", "C"] {
        store
            .create_role(&org.id, name, &BTreeSet::new())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.list_roles(&org.id, &after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        seen.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
}

store_test!(a_role_cannot_be_deleted_while_a_member_or_a_live_api_key_has_it);
async fn a_role_cannot_be_deleted_while_a_member_or_a_live_api_key_has_it(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let role = store
        .create_role(
            &org.id,
            "Auditor",
            &permissions(&[Permission::CampaignsRead]),
        )
        .await
        .unwrap();
    let key = store
        .create_api_key(&org.id, "audit bot", &role.id)
        .await
        .unwrap()
        .key;
    let member = store
        .create_member(
            &org.id,
            NewMember {
                external_id: "E1".into(),
                email: "ada@example.com".into(),
                display_name: "Ada".into(),
                attributes: BTreeMap::new(),
                role_id: role.id.clone(),
                manager_id: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        conflict_message(store.delete_role(&org.id, &role.id).await),
        "the role is still given to 1 member and 1 API key; give them another role first"
    );

    store.revoke_api_key(&org.id, &key.id).await.unwrap();
    assert_eq!(
        conflict_message(store.delete_role(&org.id, &role.id).await),
        "the role is still given to 1 member; give them another role first"
    );

    store
        .update_member(
            &org.id,
            &member.id,
            MemberUpdate {
                role_id: Some("member".into()),
                ..MemberUpdate::default()
            },
        )
        .await
        .unwrap();
    // Revoked keys do not hold a role: they can never be used again.
    store.delete_role(&org.id, &role.id).await.unwrap();
    assert!(matches!(
        store.get_role(&org.id, &role.id).await,
        Err(StoreError::NotFound)
    ));
}

store_test!(authentication_reports_what_the_keys_role_allows_now);
async fn authentication_reports_what_the_keys_role_allows_now(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let read_only = permissions(&[Permission::CampaignsRead]);
    let role = store
        .create_role(&org.id, "Reader", &read_only)
        .await
        .unwrap();
    let secret = store
        .create_api_key(&org.id, "reader", &role.id)
        .await
        .unwrap()
        .secret;
    let authenticated = store.authenticate(&secret).await.unwrap().unwrap();
    assert_eq!(authenticated.key.role, role.id);
    assert_eq!(authenticated.permissions, read_only);

    let read_write = permissions(&[Permission::CampaignsRead, Permission::CampaignsWrite]);
    store
        .update_role(&org.id, &role.id, None, Some(&read_write))
        .await
        .unwrap();
    assert_eq!(
        store
            .authenticate(&secret)
            .await
            .unwrap()
            .unwrap()
            .permissions,
        read_write
    );

    let member_secret = store
        .create_api_key(&org.id, "nobody", "member")
        .await
        .unwrap()
        .secret;
    assert!(
        store
            .authenticate(&member_secret)
            .await
            .unwrap()
            .unwrap()
            .permissions
            .is_empty()
    );
}

store_test!(an_api_key_needs_a_role_of_its_own_organisation);
async fn an_api_key_needs_a_role_of_its_own_organisation(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let other = store.create_organisation("Other").await.unwrap();
    let foreign = store
        .create_role(&other.id, "Theirs", &BTreeSet::new())
        .await
        .unwrap();
    assert_eq!(
        conflict_message(store.create_api_key(&org.id, "k", "owner").await),
        "no role \"owner\" exists in this organisation"
    );
    conflict_message(store.create_api_key(&org.id, "k", &foreign.id).await);
    assert!(
        store
            .list_api_keys(&org.id, "", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

store_test!(api_keys_are_listed_with_revoked_ones_and_fetched_by_id);
async fn api_keys_are_listed_with_revoked_ones_and_fetched_by_id(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(
            store
                .create_api_key(&org.id, name, "admin")
                .await
                .unwrap()
                .key
                .id,
        );
    }
    store.revoke_api_key(&org.id, &ids[1]).await.unwrap();

    let first = store.list_api_keys(&org.id, "", 2).await.unwrap();
    let rest = store.list_api_keys(&org.id, &first[1].id, 2).await.unwrap();
    let listed: Vec<&str> = first.iter().chain(&rest).map(|k| k.id.as_str()).collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(first[1].revoked_at.is_some());
    assert!(first[0].revoked_at.is_none());

    let key = store.get_api_key(&org.id, &ids[2]).await.unwrap();
    assert_eq!((key.name.as_str(), key.role.as_str()), ("three", "admin"));
    assert!(key.revoked_at.is_none() && key.last_used_at.is_none());
    // Key lists are shown to callers: the secret's hash is never part of them, nor the org.
    let json = serde_json::to_value(&key).unwrap();
    assert!(json.get("org_id").is_none() && json.get("key_hash").is_none());
}

store_test!(roles_and_api_keys_of_another_organisation_are_not_found);
async fn roles_and_api_keys_of_another_organisation_are_not_found(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let other = store.create_organisation("Other").await.unwrap();
    let role = store
        .create_role(&org.id, "Auditor", &BTreeSet::new())
        .await
        .unwrap();
    let key = store
        .create_api_key(&org.id, "k", &role.id)
        .await
        .unwrap()
        .key;

    assert!(matches!(
        store.get_role(&other.id, &role.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .update_role(&other.id, &role.id, Some("Mine"), None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_role(&other.id, &role.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        all_roles(&store, &other.id)
            .await
            .iter()
            .all(|r| r.id != role.id)
    );
    assert_eq!(all_roles(&store, &other.id).await.len(), 4);

    assert!(matches!(
        store.get_api_key(&other.id, &key.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .list_api_keys(&other.id, "", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get_api_key(&org.id, &key.id)
            .await
            .unwrap()
            .revoked_at
            .is_none()
    );
    assert_eq!(
        store.get_role(&org.id, &role.id).await.unwrap().name,
        "Auditor"
    );
}

store_test!(a_role_deleted_while_a_member_is_given_it_never_leaves_the_member_without_a_role);
async fn a_role_deleted_while_a_member_is_given_it_never_leaves_the_member_without_a_role(
    store: Store,
) {
    let org = store.create_organisation("Acme").await.unwrap();
    // Each round races a delete against a create that gives the role: exactly one may win.
    for round in 0..20 {
        let role = store
            .create_role(&org.id, &format!("Temp {round}"), &BTreeSet::new())
            .await
            .unwrap();
        let (deleted, created) = tokio::join!(
            store.delete_role(&org.id, &role.id),
            store.create_member(
                &org.id,
                NewMember {
                    external_id: format!("E{round}"),
                    email: "x@example.com".into(),
                    display_name: "X".into(),
                    attributes: BTreeMap::new(),
                    role_id: role.id.clone(),
                    manager_id: None,
                },
            )
        );
        assert!(
            deleted.is_ok() != created.is_ok(),
            "round {round}: delete {deleted:?}, create {created:?}"
        );
        if created.is_ok() {
            store.get_role(&org.id, &role.id).await.unwrap();
        }
    }
}

/// The statements of a migration file, without its comments.
fn statements(migration: &str) -> String {
    migration
        .lines()
        .filter(|line| !line.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

store_test!(migration_0013_takes_codec_decode_out_of_every_role);
async fn migration_0013_takes_codec_decode_out_of_every_role(store: Store) {
    let migration = statements(include_str!(
        "../../../migrations/sqlite/0013_codec_operator_only.sql"
    ));
    assert_eq!(
        migration,
        statements(include_str!(
            "../../../migrations/postgres/0013_codec_operator_only.sql"
        )),
        "the two dialects' 0013 differ"
    );
    let org = store.create_organisation("Acme").await.unwrap();
    let reader = store
        .create_role(
            &org.id,
            "Reader",
            &permissions(&[Permission::CampaignsRead]),
        )
        .await
        .unwrap();
    let codec_only = store
        .create_role(&org.id, "Codec", &permissions(&[Permission::TeamsRead]))
        .await
        .unwrap();
    let last = store
        .create_role(&org.id, "Last", &permissions(&[Permission::CampaignsRead]))
        .await
        .unwrap();
    // The lists as 0009 and an administrator of that time left them: codec:decode first, in
    // the middle (Super Admin), last and alone.
    let all_then = r#"["api_keys:manage","campaigns:read","campaigns:run","campaigns:write","codec:decode","deliveries:write","groups:read","groups:write","integrations:manage","members:read","members:write","roles:read","roles:write","sso:manage","teams:read","teams:write","templates:read","templates:write"]"#;
    for (role, list) in [
        (SUPER_ADMIN, all_then),
        (reader.id.as_str(), r#"["codec:decode","campaigns:read"]"#),
        (last.id.as_str(), r#"["campaigns:read","codec:decode"]"#),
        (codec_only.id.as_str(), r#"["codec:decode"]"#),
    ] {
        sqlx::query("UPDATE roles SET permissions = $1 WHERE org_id = $2 AND id = $3")
            .bind(list)
            .bind(&org.id)
            .bind(role)
            .execute(pidgr_store::testing::pool(&store))
            .await
            .unwrap();
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(migration))
        .execute(pidgr_store::testing::pool(&store))
        .await
        .unwrap();
    let roles: BTreeMap<String, BTreeSet<Permission>> = all_roles(&store, &org.id)
        .await
        .into_iter()
        .map(|role| (role.id, role.permissions))
        .collect();
    assert_eq!(roles[SUPER_ADMIN], permissions(&Permission::ALL));
    assert_eq!(roles[&reader.id], permissions(&[Permission::CampaignsRead]));
    assert_eq!(roles[&last.id], permissions(&[Permission::CampaignsRead]));
    assert_eq!(roles[&codec_only.id], BTreeSet::new());
}
