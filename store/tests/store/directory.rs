//! The directory: members, devices, teams and groups, and audiences resolved from them.

use pidgr_store::{
    Audience, AudienceMember, Member, MemberUpdate, MissingRef, NewMember, Platform, SetKind,
    Store, StoreError,
};
use std::collections::BTreeMap;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn new_member(external_id: &str) -> NewMember {
    NewMember {
        external_id: external_id.into(),
        email: format!("{}@example.com", external_id.to_lowercase()),
        display_name: format!("Person {external_id}"),
        attributes: vars(&[("department", "Sales"), ("site", "Lyon")]),
        role_id: "member".into(),
        manager_id: None,
    }
}

async fn add(store: &Store, org: &str, external_id: &str) -> Member {
    store
        .create_member(org, new_member(external_id))
        .await
        .unwrap()
}

fn not_found<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "expected NotFound, got {result:?}"
    );
}

fn conflict_message<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

store_test!(members_are_created_fetched_found_by_external_id_updated_and_listed_in_pages);
async fn members_are_created_fetched_found_by_external_id_updated_and_listed_in_pages(
    store: Store,
) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = add(&store, &org, "E1").await;
    assert_eq!(
        (
            ada.external_id.as_str(),
            ada.email.as_str(),
            ada.role_id.as_str()
        ),
        ("E1", "e1@example.com", "member")
    );
    assert_eq!(
        ada.attributes,
        vars(&[("department", "Sales"), ("site", "Lyon")])
    );
    assert_eq!(store.get_member(&org, &ada.id).await.unwrap(), ada);
    assert_eq!(
        store.find_member_by_external_id(&org, "E1").await.unwrap(),
        Some(ada.clone())
    );
    assert_eq!(
        store.find_member_by_external_id(&org, "E9").await.unwrap(),
        None
    );

    let updated = store
        .update_member(
            &org,
            &ada.id,
            MemberUpdate {
                display_name: Some("Ada Lovelace".into()),
                attributes: Some(vars(&[("department", "R&D")])),
                role_id: Some("manager".into()),
                ..MemberUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.display_name, "Ada Lovelace");
    assert_eq!(updated.email, ada.email, "fields not given are kept");
    assert_eq!(
        updated.attributes,
        vars(&[("department", "R&D")]),
        "attributes are replaced as a whole"
    );
    assert_eq!(updated.role_id, "manager");
    assert_eq!(updated.created_at, ada.created_at);
    assert_eq!(store.get_member(&org, &ada.id).await.unwrap(), updated);

    let mut ids = vec![ada.id.clone()];
    for external_id in ["E2", "E3", "E4"] {
        ids.push(add(&store, &org, external_id).await.id);
    }
    let first = store.list_members(&org, "", 3).await.unwrap();
    let rest = store.list_members(&org, &first[2].id, 3).await.unwrap();
    let listed: Vec<String> = first.into_iter().chain(rest).map(|m| m.id).collect();
    assert_eq!(listed, ids);
}

store_test!(a_second_member_with_the_same_external_id_is_a_conflict);
async fn a_second_member_with_the_same_external_id_is_a_conflict(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    add(&store, &org, "E1").await;
    assert_eq!(
        conflict_message(store.create_member(&org, new_member("E1")).await),
        "a member with external id \"E1\" already exists"
    );
    assert_eq!(store.list_members(&org, "", 10).await.unwrap().len(), 1);
    // External ids are the organisation's own: another one may use the same.
    let other = store.create_organisation("Other").await.unwrap().id;
    add(&store, &other, "E1").await;
}

store_test!(a_member_needs_a_role_of_their_organisation);
async fn a_member_needs_a_role_of_their_organisation(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let mut unknown = new_member("E1");
    unknown.role_id = "owner".into();
    assert_eq!(
        conflict_message(store.create_member(&org, unknown).await),
        "no role \"owner\" exists in this organisation"
    );
    let ada = add(&store, &org, "E1").await;
    conflict_message(
        store
            .update_member(
                &org,
                &ada.id,
                MemberUpdate {
                    role_id: Some("owner".into()),
                    ..MemberUpdate::default()
                },
            )
            .await,
    );
    assert_eq!(
        store.get_member(&org, &ada.id).await.unwrap().role_id,
        "member"
    );
}

store_test!(devices_are_registered_listed_and_removed);
async fn devices_are_registered_listed_and_removed(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = add(&store, &org, "E1").await;
    let (phone, created) = store
        .register_device(&org, &ada.id, Platform::Apns, "tok-1")
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        (
            phone.member_id.as_str(),
            phone.platform,
            phone.token.as_str()
        ),
        (ada.id.as_str(), Platform::Apns, "tok-1")
    );
    // The same token string on another platform is another device.
    let (tablet, created) = store
        .register_device(&org, &ada.id, Platform::Fcm, "tok-1")
        .await
        .unwrap();
    assert!(created);
    let (third, _) = store
        .register_device(&org, &ada.id, Platform::Fcm, "tok-3")
        .await
        .unwrap();

    let first = store.list_devices(&org, &ada.id, "", 2).await.unwrap();
    let rest = store
        .list_devices(&org, &ada.id, &first[1].id, 2)
        .await
        .unwrap();
    let listed: Vec<&str> = first.iter().chain(&rest).map(|d| d.id.as_str()).collect();
    assert_eq!(
        listed,
        [phone.id.as_str(), tablet.id.as_str(), third.id.as_str()]
    );
    assert_eq!(
        store.member_devices(&org, &ada.id).await.unwrap(),
        first.iter().chain(&rest).cloned().collect::<Vec<_>>()
    );

    store
        .remove_device(&org, &ada.id, &tablet.id)
        .await
        .unwrap();
    not_found(store.remove_device(&org, &ada.id, &tablet.id).await);
    let grace = add(&store, &org, "E2").await;
    not_found(store.remove_device(&org, &grace.id, &phone.id).await);
    let left: Vec<String> = store
        .member_devices(&org, &ada.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left, [phone.id, third.id]);
    not_found(store.list_devices(&org, "no-such-member", "", 10).await);
    not_found(
        store
            .register_device(&org, "no-such-member", Platform::Fcm, "tok-9")
            .await,
    );
}

store_test!(registering_a_known_token_moves_that_device_to_the_new_member);
async fn registering_a_known_token_moves_that_device_to_the_new_member(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = add(&store, &org, "E1").await;
    let grace = add(&store, &org, "E2").await;
    let (first, _) = store
        .register_device(&org, &ada.id, Platform::Fcm, "shared-phone")
        .await
        .unwrap();
    let (again, created) = store
        .register_device(&org, &ada.id, Platform::Fcm, "shared-phone")
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    assert!(again.last_seen_at >= first.last_seen_at);

    let (moved, created) = store
        .register_device(&org, &grace.id, Platform::Fcm, "shared-phone")
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(
        (moved.id.as_str(), moved.member_id.as_str()),
        (first.id.as_str(), grace.id.as_str())
    );
    assert_eq!(moved.created_at, first.created_at);
    assert!(
        store
            .member_devices(&org, &ada.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.member_devices(&org, &grace.id).await.unwrap(),
        [moved]
    );
}

store_test!(a_dead_token_is_removed_whoever_has_it);
async fn a_dead_token_is_removed_whoever_has_it(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = add(&store, &org, "E1").await;
    store
        .register_device(&org, &ada.id, Platform::Apns, "dead")
        .await
        .unwrap();
    store
        .register_device(&org, &ada.id, Platform::Apns, "alive")
        .await
        .unwrap();
    assert!(
        !store
            .remove_device_token(&org, Platform::Fcm, "dead")
            .await
            .unwrap()
    );
    assert!(
        store
            .remove_device_token(&org, Platform::Apns, "dead")
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_device_token(&org, Platform::Apns, "dead")
            .await
            .unwrap()
    );
    let left: Vec<String> = store
        .member_devices(&org, &ada.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.token)
        .collect();
    assert_eq!(left, ["alive"]);
}

store_test!(teams_and_groups_are_kept_apart);
async fn teams_and_groups_are_kept_apart(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = add(&store, &org, "E1").await;
    let team = store
        .create_set(&org, SetKind::Team, "Sales")
        .await
        .unwrap();
    // A team and a group may share a name; two teams may not.
    let group = store
        .create_set(&org, SetKind::Group, "Sales")
        .await
        .unwrap();
    assert_eq!((team.kind, group.kind), (SetKind::Team, SetKind::Group));
    assert_eq!(
        conflict_message(store.create_set(&org, SetKind::Team, "Sales").await),
        "a team named \"Sales\" already exists"
    );
    let other_group = store
        .create_set(&org, SetKind::Group, "Early adopters")
        .await
        .unwrap();
    assert_eq!(
        conflict_message(
            store
                .rename_set(&org, SetKind::Group, &other_group.id, "Sales")
                .await
        ),
        "a group named \"Sales\" already exists"
    );

    assert_eq!(
        store.get_set(&org, SetKind::Team, &team.id).await.unwrap(),
        team
    );
    not_found(store.get_set(&org, SetKind::Group, &team.id).await);
    not_found(store.get_set(&org, SetKind::Team, &group.id).await);
    let teams = store.list_sets(&org, SetKind::Team, "", 10).await.unwrap();
    assert_eq!(teams, std::slice::from_ref(&team));
    let groups: Vec<String> = store
        .list_sets(&org, SetKind::Group, "", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(groups, [group.id.clone(), other_group.id.clone()]);

    not_found(store.rename_set(&org, SetKind::Group, &team.id, "X").await);
    not_found(
        store
            .add_set_member(&org, SetKind::Group, &team.id, &ada.id)
            .await,
    );
    not_found(
        store
            .list_set_members(&org, SetKind::Group, &team.id, "", 10)
            .await,
    );
    assert!(
        store
            .add_set_member(&org, SetKind::Team, &team.id, &ada.id)
            .await
            .unwrap()
    );
    not_found(
        store
            .remove_set_member(&org, SetKind::Group, &team.id, &ada.id)
            .await,
    );
    not_found(store.delete_set(&org, SetKind::Group, &team.id).await);
    assert_eq!(
        store
            .get_set(&org, SetKind::Team, &team.id)
            .await
            .unwrap()
            .member_count,
        1
    );
    assert_eq!(
        store
            .get_set(&org, SetKind::Group, &group.id)
            .await
            .unwrap()
            .member_count,
        0
    );

    let renamed = store
        .rename_set(&org, SetKind::Team, &team.id, "Sales EMEA")
        .await
        .unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.member_count),
        ("Sales EMEA", 1)
    );
}

store_test!(members_join_and_leave_teams_and_groups);
async fn members_join_and_leave_teams_and_groups(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let group = store
        .create_set(&org, SetKind::Group, "Pilots")
        .await
        .unwrap();
    assert_eq!(group.member_count, 0);
    let mut ids = Vec::new();
    for external_id in ["E1", "E2", "E3"] {
        let member = add(&store, &org, external_id).await;
        assert!(
            store
                .add_set_member(&org, SetKind::Group, &group.id, &member.id)
                .await
                .unwrap()
        );
        ids.push(member.id);
    }
    add(&store, &org, "outsider").await;
    assert!(
        !store
            .add_set_member(&org, SetKind::Group, &group.id, &ids[0])
            .await
            .unwrap(),
        "adding a member twice adds nothing"
    );
    assert_eq!(
        store
            .get_set(&org, SetKind::Group, &group.id)
            .await
            .unwrap()
            .member_count,
        3
    );
    not_found(
        store
            .add_set_member(&org, SetKind::Group, &group.id, "no-such-member")
            .await,
    );

    let first = store
        .list_set_members(&org, SetKind::Group, &group.id, "", 2)
        .await
        .unwrap();
    let rest = store
        .list_set_members(&org, SetKind::Group, &group.id, &first[1].id, 2)
        .await
        .unwrap();
    let listed: Vec<String> = first.into_iter().chain(rest).map(|m| m.id).collect();
    assert_eq!(listed, ids);

    store
        .remove_set_member(&org, SetKind::Group, &group.id, &ids[1])
        .await
        .unwrap();
    not_found(
        store
            .remove_set_member(&org, SetKind::Group, &group.id, &ids[1])
            .await,
    );
    let listed: Vec<String> = store
        .list_set_members(&org, SetKind::Group, &group.id, "", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, [ids[0].clone(), ids[2].clone()]);

    // Deleting a set ends its memberships, not its members.
    store
        .delete_set(&org, SetKind::Group, &group.id)
        .await
        .unwrap();
    not_found(store.get_set(&org, SetKind::Group, &group.id).await);
    not_found(store.delete_set(&org, SetKind::Group, &group.id).await);
    not_found(
        store
            .list_set_members(&org, SetKind::Group, &group.id, "", 10)
            .await,
    );
    assert_eq!(store.list_members(&org, "", 10).await.unwrap().len(), 4);
}

store_test!(deleting_a_member_removes_their_devices_and_memberships);
async fn deleting_a_member_removes_their_devices_and_memberships(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = add(&store, &org, "E1").await;
    let grace = add(&store, &org, "E2").await;
    let team = store.create_set(&org, SetKind::Team, "Ops").await.unwrap();
    let group = store
        .create_set(&org, SetKind::Group, "Pilots")
        .await
        .unwrap();
    for member in [&ada, &grace] {
        store
            .add_set_member(&org, SetKind::Team, &team.id, &member.id)
            .await
            .unwrap();
        store
            .register_device(
                &org,
                &member.id,
                Platform::Fcm,
                &format!("tok-{}", member.id),
            )
            .await
            .unwrap();
    }
    store
        .add_set_member(&org, SetKind::Group, &group.id, &ada.id)
        .await
        .unwrap();

    store.delete_member(&org, &ada.id).await.unwrap();
    not_found(store.get_member(&org, &ada.id).await);
    not_found(store.delete_member(&org, &ada.id).await);
    assert!(
        store
            .member_devices(&org, &ada.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .get_set(&org, SetKind::Team, &team.id)
            .await
            .unwrap()
            .member_count,
        1
    );
    assert_eq!(
        store
            .get_set(&org, SetKind::Group, &group.id)
            .await
            .unwrap()
            .member_count,
        0
    );
    // Their token is free again: registering it for someone else creates a device.
    let (_, created) = store
        .register_device(&org, &grace.id, Platform::Fcm, &format!("tok-{}", ada.id))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        store.member_devices(&org, &grace.id).await.unwrap().len(),
        2
    );
    // The external id may be used again.
    add(&store, &org, "E1").await;
}

store_test!(an_audience_names_each_member_once_with_their_own_variables_over_their_attributes);
async fn an_audience_names_each_member_once_with_their_own_variables_over_their_attributes(
    store: Store,
) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = add(&store, &org, "E1").await;
    let grace = add(&store, &org, "E2").await;
    let linus = add(&store, &org, "E3").await;
    add(&store, &org, "not-in-the-audience").await;
    let team = store.create_set(&org, SetKind::Team, "Ops").await.unwrap();
    let group = store
        .create_set(&org, SetKind::Group, "Pilots")
        .await
        .unwrap();
    for member in [&ada, &grace] {
        store
            .add_set_member(&org, SetKind::Team, &team.id, &member.id)
            .await
            .unwrap();
    }
    store
        .add_set_member(&org, SetKind::Group, &group.id, &ada.id)
        .await
        .unwrap();

    let audience = Audience {
        groups: vec![group.id.clone(), group.id.clone()],
        teams: vec![team.id.clone()],
        members: vec![
            AudienceMember {
                member_id: ada.id.clone(),
                variables: vars(&[("site", "Paris"), ("shift", "night")]),
            },
            AudienceMember {
                member_id: linus.id.clone(),
                variables: BTreeMap::new(),
            },
        ],
    };
    let resolved = store.resolve_audience(&org, &audience).await.unwrap();
    assert!(resolved.missing.is_empty());
    let mut expected_ids = vec![ada.id.clone(), grace.id.clone(), linus.id.clone()];
    expected_ids.sort();
    let ids: Vec<&str> = resolved
        .recipients
        .iter()
        .map(|r| r.member_id.as_deref().unwrap())
        .collect();
    assert_eq!(ids, expected_ids, "each member once, ordered by member id");

    let for_ada = resolved
        .recipients
        .iter()
        .find(|r| r.member_id.as_deref() == Some(ada.id.as_str()))
        .unwrap();
    assert_eq!(for_ada.user_id, "E1");
    assert_eq!(for_ada.email.as_deref(), Some("e1@example.com"));
    assert_eq!(for_ada.display_name.as_deref(), Some("Person E1"));
    assert_eq!(
        for_ada.variables,
        vars(&[
            ("department", "Sales"),
            ("shift", "night"),
            ("site", "Paris")
        ])
    );
    let for_grace = resolved
        .recipients
        .iter()
        .find(|r| r.member_id.as_deref() == Some(grace.id.as_str()))
        .unwrap();
    assert_eq!(for_grace.variables, grace.attributes);

    assert!(
        store
            .resolve_audience(&org, &Audience::default())
            .await
            .unwrap()
            .recipients
            .is_empty()
    );
}

store_test!(an_audience_points_at_every_reference_the_organisation_does_not_have);
async fn an_audience_points_at_every_reference_the_organisation_does_not_have(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let other = store.create_organisation("Other").await.unwrap().id;
    let ada = add(&store, &org, "E1").await;
    let outsider = add(&store, &other, "E1").await;
    let team = store.create_set(&org, SetKind::Team, "Ops").await.unwrap();
    let group = store
        .create_set(&org, SetKind::Group, "Pilots")
        .await
        .unwrap();
    let foreign_group = store
        .create_set(&other, SetKind::Group, "Pilots")
        .await
        .unwrap();
    store
        .add_set_member(&org, SetKind::Group, &group.id, &ada.id)
        .await
        .unwrap();
    store
        .add_set_member(&other, SetKind::Group, &foreign_group.id, &outsider.id)
        .await
        .unwrap();

    let audience = Audience {
        // A team id given as a group is not a group.
        groups: vec![group.id.clone(), team.id.clone(), foreign_group.id.clone()],
        teams: vec!["no-such-team".into()],
        members: vec![
            AudienceMember {
                member_id: ada.id.clone(),
                variables: BTreeMap::new(),
            },
            AudienceMember {
                member_id: outsider.id.clone(),
                variables: BTreeMap::new(),
            },
        ],
    };
    let resolved = store.resolve_audience(&org, &audience).await.unwrap();
    let missing = |pointer: &str, what: &'static str, id: &str| MissingRef {
        pointer: pointer.into(),
        what,
        id: id.into(),
    };
    assert_eq!(
        resolved.missing,
        [
            missing("/groups/1", "group", &team.id),
            missing("/groups/2", "group", &foreign_group.id),
            missing("/teams/0", "team", "no-such-team"),
            missing("/members/1/member_id", "member", &outsider.id),
        ]
    );
    let ids: Vec<&str> = resolved
        .recipients
        .iter()
        .map(|r| r.member_id.as_deref().unwrap())
        .collect();
    assert_eq!(
        ids,
        [ada.id.as_str()],
        "nobody of another organisation is reached"
    );
}

store_test!(a_large_audience_resolves_every_member_across_query_batches);
async fn a_large_audience_resolves_every_member_across_query_batches(store: Store) {
    // More members than one IN list holds (500), listed individually and through a group.
    let org = store.create_organisation("Acme").await.unwrap().id;
    let group = store.create_set(&org, SetKind::Group, "All").await.unwrap();
    let mut ids = Vec::new();
    for n in 0..520 {
        let member = add(&store, &org, &format!("E{n}")).await;
        if n % 2 == 0 {
            store
                .add_set_member(&org, SetKind::Group, &group.id, &member.id)
                .await
                .unwrap();
        }
        ids.push(member.id);
    }
    let audience = Audience {
        groups: vec![group.id.clone()],
        members: ids
            .iter()
            .map(|id| AudienceMember {
                member_id: id.clone(),
                variables: vars(&[("id", id)]),
            })
            .collect(),
        ..Audience::default()
    };
    let resolved = store.resolve_audience(&org, &audience).await.unwrap();
    assert!(resolved.missing.is_empty());
    assert_eq!(resolved.recipients.len(), 520);
    for (recipient, id) in resolved.recipients.iter().zip(&ids) {
        assert_eq!(recipient.member_id.as_ref(), Some(id));
        assert_eq!(recipient.variables["id"], *id);
    }
}

store_test!(members_devices_and_sets_of_another_organisation_are_not_found);
async fn members_devices_and_sets_of_another_organisation_are_not_found(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let other = store.create_organisation("Other").await.unwrap().id;
    let ada = add(&store, &org, "E1").await;
    let (phone, _) = store
        .register_device(&org, &ada.id, Platform::Fcm, "tok")
        .await
        .unwrap();
    let team = store.create_set(&org, SetKind::Team, "Ops").await.unwrap();
    store
        .add_set_member(&org, SetKind::Team, &team.id, &ada.id)
        .await
        .unwrap();
    let theirs = add(&store, &other, "T1").await;
    let their_team = store
        .create_set(&other, SetKind::Team, "Ops")
        .await
        .unwrap();

    // Members.
    not_found(store.get_member(&other, &ada.id).await);
    not_found(
        store
            .update_member(
                &other,
                &ada.id,
                MemberUpdate {
                    email: Some("stolen@example.com".into()),
                    ..MemberUpdate::default()
                },
            )
            .await,
    );
    not_found(store.delete_member(&other, &ada.id).await);
    assert_eq!(
        store
            .find_member_by_external_id(&other, "E1")
            .await
            .unwrap(),
        None
    );
    let listed: Vec<String> = store
        .list_members(&other, "", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&theirs.id));

    // Devices.
    not_found(
        store
            .register_device(&other, &ada.id, Platform::Fcm, "tok-2")
            .await,
    );
    not_found(store.list_devices(&other, &ada.id, "", 10).await);
    not_found(store.remove_device(&other, &ada.id, &phone.id).await);
    assert!(
        store
            .member_devices(&other, &ada.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store
            .remove_device_token(&other, Platform::Fcm, "tok")
            .await
            .unwrap()
    );
    // The same token in another organisation is that organisation's own device.
    let (their_phone, created) = store
        .register_device(&other, &theirs.id, Platform::Fcm, "tok")
        .await
        .unwrap();
    assert!(created);
    assert_ne!(their_phone.id, phone.id);

    // Teams and groups.
    not_found(store.get_set(&other, SetKind::Team, &team.id).await);
    not_found(
        store
            .rename_set(&other, SetKind::Team, &team.id, "Mine")
            .await,
    );
    not_found(store.delete_set(&other, SetKind::Team, &team.id).await);
    not_found(
        store
            .list_set_members(&other, SetKind::Team, &team.id, "", 10)
            .await,
    );
    not_found(
        store
            .add_set_member(&other, SetKind::Team, &team.id, &theirs.id)
            .await,
    );
    not_found(
        store
            .add_set_member(&other, SetKind::Team, &their_team.id, &ada.id)
            .await,
    );
    not_found(
        store
            .add_set_member(&org, SetKind::Team, &team.id, &theirs.id)
            .await,
    );
    not_found(
        store
            .remove_set_member(&other, SetKind::Team, &team.id, &ada.id)
            .await,
    );
    let their_teams: Vec<String> = store
        .list_sets(&other, SetKind::Team, "", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(their_teams, std::slice::from_ref(&their_team.id));

    // Nothing of ours changed.
    assert_eq!(store.get_member(&org, &ada.id).await.unwrap(), ada);
    assert_eq!(store.member_devices(&org, &ada.id).await.unwrap(), [phone]);
    let ours = store.get_set(&org, SetKind::Team, &team.id).await.unwrap();
    assert_eq!((ours.name.as_str(), ours.member_count), ("Ops", 1));
}

store_test!(counting_an_audience_stops_just_past_the_limit);
async fn counting_an_audience_stops_just_past_the_limit(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let group = store.create_set(&org, SetKind::Group, "All").await.unwrap();
    let mut members = Vec::new();
    for i in 0..6 {
        let member = add(&store, &org, &format!("E{i}")).await;
        if i < 5 {
            store
                .add_set_member(&org, SetKind::Group, &group.id, &member.id)
                .await
                .unwrap();
        }
        members.push(member);
    }
    let audience = Audience {
        groups: vec![group.id.clone()],
        // One listed member also in the group (counted once), one only listed.
        members: [&members[0], &members[5]]
            .into_iter()
            .map(|m| AudienceMember {
                member_id: m.id.clone(),
                variables: BTreeMap::new(),
            })
            .collect(),
        ..Audience::default()
    };
    let reader = store.audience_reader(&org, &audience).await.unwrap();
    assert_eq!(
        store.count_audience(&reader, 100).await.unwrap(),
        6,
        "exact under the limit"
    );
    assert_eq!(
        store.count_audience(&reader, 6).await.unwrap(),
        6,
        "exact at the limit"
    );
    assert_eq!(
        store.count_audience(&reader, 3).await.unwrap(),
        4,
        "past the limit: one more than it, whatever the real size"
    );
    let listed_only = Audience {
        members: audience.members.clone(),
        ..Audience::default()
    };
    let reader = store.audience_reader(&org, &listed_only).await.unwrap();
    assert_eq!(store.count_audience(&reader, 1).await.unwrap(), 2);
    assert_eq!(store.count_audience(&reader, 10).await.unwrap(), 2);
}
