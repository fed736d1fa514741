//! The bulk import behind `pidgr members import`: members, devices and team memberships in
//! batches, idempotent on external id.

use pidgr_store::{ImportCounts, ImportedMember, ManagerRef, Platform, SetKind, Store, testing};
use std::collections::{BTreeMap, HashMap};

/// Member `i` of a generated directory: an FCM token for every member, an APNs one for every
/// third, and one of three teams.
fn person(i: usize) -> ImportedMember {
    let mut devices = vec![(Platform::Fcm, format!("fcm-{i}"))];
    if i.is_multiple_of(3) {
        devices.push((Platform::Apns, format!("apns{i}")));
    }
    ImportedMember {
        external_id: format!("E{i}"),
        email: format!("p{i}@example.com"),
        display_name: format!("Person {i}"),
        attributes: BTreeMap::from([("site".to_owned(), format!("site-{}", i % 7))]),
        devices,
        teams: vec![format!("team-{}", i % 3)],
        manager: ManagerRef::Keep,
    }
}

async fn import(store: &Store, org: &str, people: &[ImportedMember]) -> ImportCounts {
    let mut names: Vec<&str> = people
        .iter()
        .flat_map(|p| p.teams.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let teams = store.ensure_teams(org, &names).await.unwrap();
    let mut counts = ImportCounts::default();
    // Batches smaller than the import, so that several transactions and statements are used.
    for batch in people.chunks(700) {
        counts += store.import_members(org, &teams, batch).await.unwrap();
    }
    counts
}

async fn team_sizes(store: &Store, org: &str) -> HashMap<String, i64> {
    store
        .list_sets(org, SetKind::Team, "", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.member_count))
        .collect()
}

store_test!(an_import_writes_members_devices_and_teams_and_a_second_one_changes_nothing);
async fn an_import_writes_members_devices_and_teams_and_a_second_one_changes_nothing(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    // A team that exists already is reused, not duplicated.
    let existing = store
        .create_set(&org, SetKind::Team, "team-0")
        .await
        .unwrap();
    let people: Vec<ImportedMember> = (0..1_500).map(person).collect();

    let first = import(&store, &org, &people).await;
    assert_eq!(
        first,
        ImportCounts {
            created: 1_500,
            updated: 0,
            unchanged: 0,
            devices: 2_000,
            memberships: 1_500,
        }
    );
    let ada = store
        .find_member_by_external_id(&org, "E3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            ada.email.as_str(),
            ada.display_name.as_str(),
            ada.role_id.as_str()
        ),
        ("p3@example.com", "Person 3", "member")
    );
    assert_eq!(ada.attributes["site"], "site-3");
    let devices = store.member_devices(&org, &ada.id).await.unwrap();
    assert_eq!(
        devices
            .iter()
            .map(|d| (d.platform, d.token.as_str()))
            .collect::<Vec<_>>(),
        [(Platform::Fcm, "fcm-3"), (Platform::Apns, "apns3")]
    );
    let sizes = team_sizes(&store, &org).await;
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.values().all(|n| *n == 500), "{sizes:?}");
    let team0 = store
        .list_set_members(&org, SetKind::Team, &existing.id, "", 500)
        .await
        .unwrap();
    assert!(team0.iter().any(|m| m.id == ada.id));

    let before = testing::row_counts(&store).await.unwrap();
    let again = import(&store, &org, &people).await;
    assert_eq!(
        again,
        ImportCounts {
            unchanged: 1_500,
            ..ImportCounts::default()
        }
    );
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);
}

store_test!(a_reimport_updates_changed_profiles_moves_tokens_and_adds_memberships);
async fn a_reimport_updates_changed_profiles_moves_tokens_and_adds_memberships(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let people: Vec<ImportedMember> = (0..10).map(person).collect();
    import(&store, &org, &people).await;
    let before = store
        .find_member_by_external_id(&org, "E1")
        .await
        .unwrap()
        .unwrap();

    let mut changed = people.clone();
    changed[1].display_name = "Person One".into();
    changed[2].attributes.insert("floor".into(), "3".into());
    // E4's phone now belongs to E5, who keeps their own as well.
    changed[4].devices.clear();
    changed[5].devices.push((Platform::Fcm, "fcm-4".into()));
    // E6 joins a second team (and stays in the first).
    changed[6].teams.push("night-shift".into());
    // And a newcomer.
    changed.push(person(10));
    let counts = import(&store, &org, &changed).await;
    assert_eq!(
        counts,
        ImportCounts {
            created: 1,
            updated: 2,
            unchanged: 8,
            devices: 2,
            memberships: 2,
        }
    );

    let after = store
        .find_member_by_external_id(&org, "E1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.id, before.id, "updated in place, not duplicated");
    assert_eq!(after.display_name, "Person One");
    assert_eq!(
        store
            .find_member_by_external_id(&org, "E2")
            .await
            .unwrap()
            .unwrap()
            .attributes["floor"],
        "3"
    );
    let e4 = store
        .find_member_by_external_id(&org, "E4")
        .await
        .unwrap()
        .unwrap();
    let e5 = store
        .find_member_by_external_id(&org, "E5")
        .await
        .unwrap()
        .unwrap();
    // An import adds and moves devices; it does not remove the ones a line leaves out.
    assert!(store.member_devices(&org, &e4.id).await.unwrap().is_empty());
    let tokens: Vec<String> = store
        .member_devices(&org, &e5.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.token)
        .collect();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert!(tokens.contains(&"fcm-4".to_owned()), "{tokens:?}");
    let sizes = team_sizes(&store, &org).await;
    assert_eq!(sizes["night-shift"], 1, "{sizes:?}");
    assert_eq!(
        store.list_members(&org, "", 500).await.unwrap().len(),
        11,
        "nobody duplicated"
    );
}

store_test!(an_import_reaches_only_its_own_organisation);
async fn an_import_reaches_only_its_own_organisation(store: Store) {
    let acme = store.create_organisation("Acme").await.unwrap().id;
    let other = store.create_organisation("Other").await.unwrap().id;
    let people: Vec<ImportedMember> = (0..5).map(person).collect();
    import(&store, &other, &people).await;
    // The same external ids and tokens in another organisation are other people and phones.
    let counts = import(&store, &acme, &people).await;
    assert_eq!((counts.created, counts.devices), (5, 7));
    let theirs = store
        .find_member_by_external_id(&other, "E0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .member_devices(&other, &theirs.id)
            .await
            .unwrap()
            .len(),
        2
    );
}
