//! Members' managers: set and cleared on every path, held to the rules (a member of the same
//! organisation, not the member themself, no loop), and left unset when the manager goes.

use pidgr_store::{
    ImportedMember, ManagerError, ManagerProblem, ManagerRef, Member, MemberUpdate, NewMember,
    Store, StoreError, testing,
};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

fn new_member(external_id: &str, manager_id: Option<&str>) -> NewMember {
    NewMember {
        external_id: external_id.into(),
        email: format!("{}@example.com", external_id.to_lowercase()),
        display_name: format!("Person {external_id}"),
        attributes: BTreeMap::new(),
        role_id: "member".into(),
        manager_id: manager_id.map(str::to_owned),
    }
}

async fn add(store: &Store, org: &str, external_id: &str, manager_id: Option<&str>) -> Member {
    store
        .create_member(org, new_member(external_id, manager_id))
        .await
        .unwrap()
}

fn imported(external_id: &str, manager: ManagerRef) -> ImportedMember {
    ImportedMember {
        external_id: external_id.into(),
        email: format!("{}@example.com", external_id.to_lowercase()),
        display_name: format!("Person {external_id}"),
        attributes: BTreeMap::new(),
        devices: Vec::new(),
        teams: Vec::new(),
        manager,
    }
}

fn by_external(external_id: &str) -> ManagerRef {
    ManagerRef::ExternalId(external_id.into())
}

async fn set(store: &Store, org: &str, member: &Member, manager: Option<&str>) -> Member {
    store
        .update_member(
            org,
            &member.id,
            MemberUpdate {
                manager_id: Some(manager.map(str::to_owned)),
                ..MemberUpdate::default()
            },
        )
        .await
        .unwrap()
}

async fn manager_of(store: &Store, org: &str, member: &Member) -> Option<String> {
    store.get_member(org, &member.id).await.unwrap().manager_id
}

/// The refusals of a write that broke the rules.
fn refusals<T: std::fmt::Debug>(result: Result<T, StoreError>) -> Vec<ManagerError> {
    match result {
        Err(StoreError::Manager(errors)) => errors,
        other => panic!("expected a refused manager, got {other:?}"),
    }
}

fn only(errors: Vec<ManagerError>) -> (String, ManagerProblem) {
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = errors.into_iter().next().unwrap();
    (error.external_id, error.problem)
}

store_test!(a_manager_is_set_on_create_and_update_cleared_and_lists_their_reports);
async fn a_manager_is_set_on_create_and_update_cleared_and_lists_their_reports(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let boss = add(&store, &org, "BOSS", None).await;
    assert_eq!(boss.manager_id, None);
    let ada = add(&store, &org, "ADA", Some(&boss.id)).await;
    assert_eq!(ada.manager_id.as_deref(), Some(boss.id.as_str()));
    assert_eq!(manager_of(&store, &org, &ada).await, Some(boss.id.clone()));

    let bob = add(&store, &org, "BOB", None).await;
    let bob = set(&store, &org, &bob, Some(&boss.id)).await;
    assert_eq!(bob.manager_id.as_deref(), Some(boss.id.as_str()));
    // An update that names no manager keeps the one there is.
    let bob = store
        .update_member(
            &org,
            &bob.id,
            MemberUpdate {
                display_name: Some("Robert".into()),
                ..MemberUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(bob.manager_id.as_deref(), Some(boss.id.as_str()));

    // The reports, in pages by id.
    let first = store.list_reports(&org, &boss.id, "", 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let second = store
        .list_reports(&org, &boss.id, &first[0].id, 10)
        .await
        .unwrap();
    let mut reports: Vec<String> = first.iter().chain(&second).map(|m| m.id.clone()).collect();
    reports.sort();
    let mut expected = vec![ada.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(reports, expected);
    assert!(
        store
            .list_reports(&org, &ada.id, "", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.list_reports(&org, "no-such-member", "", 10).await,
        Err(StoreError::NotFound)
    ));
    let managers = store
        .managers_of(&org, &[&ada.id, &bob.id, &boss.id])
        .await
        .unwrap();
    assert_eq!(managers.len(), 2);
    assert_eq!(managers[&ada.id].external_id, "BOSS");

    // Cleared.
    let ada = set(&store, &org, &ada, None).await;
    assert_eq!(ada.manager_id, None);
    assert_eq!(manager_of(&store, &org, &ada).await, None);
    let reports = store.list_reports(&org, &boss.id, "", 10).await.unwrap();
    assert_eq!(
        reports.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [bob.id.as_str()]
    );
}

store_test!(a_manager_from_another_organisation_or_unknown_is_refused_and_nothing_written);
async fn a_manager_from_another_organisation_or_unknown_is_refused_and_nothing_written(
    store: Store,
) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let other = store.create_organisation("Globex").await.unwrap().id;
    let outsider = add(&store, &other, "OUT", None).await;
    let ada = add(&store, &org, "ADA", None).await;
    let before = testing::row_counts(&store).await.unwrap();

    let (who, problem) = only(refusals(
        store
            .create_member(&org, new_member("BOB", Some(&outsider.id)))
            .await,
    ));
    assert_eq!(who, "BOB");
    assert_eq!(problem, ManagerProblem::Unknown(outsider.id.clone()));
    let (who, problem) = only(refusals(
        store
            .update_member(
                &org,
                &ada.id,
                MemberUpdate {
                    display_name: Some("Changed".into()),
                    manager_id: Some(Some(outsider.id.clone())),
                    ..MemberUpdate::default()
                },
            )
            .await,
    ));
    assert_eq!(
        (who, problem),
        ("ADA".into(), ManagerProblem::Unknown(outsider.id.clone()))
    );
    // By external id, the other organisation's member is no one here either.
    let (who, problem) = only(refusals(
        store
            .upsert_members(&org, &[imported("BOB", by_external("OUT"))], &[None])
            .await,
    ));
    assert_eq!(
        (who, problem),
        ("BOB".into(), ManagerProblem::Unknown("OUT".into()))
    );
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);
    let ada_now = store.get_member(&org, &ada.id).await.unwrap();
    assert_eq!(ada_now, ada, "the refused update changed nothing");
}

store_test!(a_member_cannot_be_their_own_manager);
async fn a_member_cannot_be_their_own_manager(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = add(&store, &org, "ADA", None).await;
    let (who, problem) = only(refusals(
        store
            .update_member(
                &org,
                &ada.id,
                MemberUpdate {
                    manager_id: Some(Some(ada.id.clone())),
                    ..MemberUpdate::default()
                },
            )
            .await,
    ));
    assert_eq!((who, problem), ("ADA".into(), ManagerProblem::OwnManager));
    for manager in [ManagerRef::Id(ada.id.clone()), by_external("ADA")] {
        let (_, problem) = only(refusals(
            store
                .upsert_members(&org, &[imported("ADA", manager)], &[None])
                .await,
        ));
        assert_eq!(problem, ManagerProblem::OwnManager);
    }
    assert_eq!(manager_of(&store, &org, &ada).await, None);
}

store_test!(loops_of_two_and_three_managers_are_refused);
async fn loops_of_two_and_three_managers_are_refused(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let a = add(&store, &org, "A", None).await;
    let b = add(&store, &org, "B", Some(&a.id)).await;
    // A under B while B is under A.
    let (who, problem) = only(refusals(
        store
            .update_member(
                &org,
                &a.id,
                MemberUpdate {
                    manager_id: Some(Some(b.id.clone())),
                    ..MemberUpdate::default()
                },
            )
            .await,
    ));
    assert_eq!(
        (who, problem),
        (
            "A".into(),
            ManagerProblem::Cycle(vec!["A".into(), "B".into()])
        )
    );
    assert_eq!(manager_of(&store, &org, &a).await, None);

    // C under B under A; A under C loops through three.
    let c = add(&store, &org, "C", Some(&b.id)).await;
    let error = refusals(
        store
            .update_member(
                &org,
                &a.id,
                MemberUpdate {
                    manager_id: Some(Some(c.id.clone())),
                    ..MemberUpdate::default()
                },
            )
            .await,
    );
    assert_eq!(
        only(error.clone()).1,
        ManagerProblem::Cycle(vec!["A".into(), "C".into(), "B".into()])
    );
    assert_eq!(
        error[0].to_string(),
        "the chain of managers would loop (by external id: A → C → B → A)"
    );
    assert_eq!(manager_of(&store, &org, &a).await, None);

    // The same through the writes by external id.
    let (who, problem) = only(refusals(
        store
            .upsert_members(&org, &[imported("A", by_external("C"))], &[None])
            .await,
    ));
    assert_eq!(who, "A");
    assert!(matches!(problem, ManagerProblem::Cycle(ref around) if around.len() == 3));
    assert_eq!(manager_of(&store, &org, &a).await, None);
    // A chain that does not come back is fine: D under C under B under A.
    let d = add(&store, &org, "D", None).await;
    let d = set(&store, &org, &d, Some(&c.id)).await;
    assert_eq!(d.manager_id, Some(c.id.clone()));
}

store_test!(deleting_a_manager_leaves_their_reports_without_one);
async fn deleting_a_manager_leaves_their_reports_without_one(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let boss = add(&store, &org, "BOSS", None).await;
    let ada = add(&store, &org, "ADA", Some(&boss.id)).await;
    let bob = add(&store, &org, "BOB", Some(&ada.id)).await;
    store.delete_member(&org, &boss.id).await.unwrap();
    let ada_now = store.get_member(&org, &ada.id).await.unwrap();
    assert_eq!(ada_now.manager_id, None);
    assert!(ada_now.updated_at >= ada.updated_at);
    // Only the deleted member's reports lose their manager.
    assert_eq!(manager_of(&store, &org, &bob).await, Some(ada.id.clone()));
}

store_test!(a_batch_resolves_managers_by_external_id_after_every_row_is_in);
async fn a_batch_resolves_managers_by_external_id_after_every_row_is_in(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ceo = add(&store, &org, "CEO", None).await;
    // R's manager M comes after R in the batch; M's manager is already stored.
    let counts = store
        .import_members(
            &org,
            &HashMap::new(),
            &[
                imported("R", by_external("M")),
                imported("M", by_external("CEO")),
                imported("S", ManagerRef::Id(ceo.id.clone())),
            ],
        )
        .await
        .unwrap();
    assert_eq!(counts.created, 3);
    let found = store
        .find_members_by_external_ids(&org, &["R", "M", "S"])
        .await
        .unwrap();
    assert_eq!(found["R"].manager_id.as_ref(), Some(&found["M"].id));
    assert_eq!(found["M"].manager_id.as_ref(), Some(&ceo.id));
    assert_eq!(found["S"].manager_id.as_ref(), Some(&ceo.id));

    // Written again as it is: unchanged. Keep leaves the manager; a changed manager alone
    // makes a row updated; Clear removes it.
    let (counts, _) = store
        .upsert_members(
            &org,
            &[
                imported("R", by_external("M")),
                imported("M", ManagerRef::Keep),
                imported("S", by_external("M")),
            ],
            &[None, None, None],
        )
        .await
        .unwrap();
    assert_eq!((counts.unchanged, counts.updated), (2, 1));
    store
        .import_members(&org, &HashMap::new(), &[imported("R", ManagerRef::Clear)])
        .await
        .unwrap();
    let found = store
        .find_members_by_external_ids(&org, &["R", "M", "S"])
        .await
        .unwrap();
    assert_eq!(found["R"].manager_id, None);
    assert_eq!(found["M"].manager_id.as_ref(), Some(&ceo.id));
    assert_eq!(found["S"].manager_id.as_ref(), Some(&found["M"].id));
}

store_test!(a_batch_that_would_loop_or_names_no_one_is_refused_whole);
async fn a_batch_that_would_loop_or_names_no_one_is_refused_whole(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let p = add(&store, &org, "P", None).await;
    let q = add(&store, &org, "Q", Some(&p.id)).await;
    let before = testing::row_counts(&store).await.unwrap();

    // A loop within the batch: X under Y under X (both new).
    let errors = refusals(
        store
            .upsert_members(
                &org,
                &[
                    imported("X", by_external("Y")),
                    imported("Y", by_external("X")),
                ],
                &[None, None],
            )
            .await,
    );
    assert_eq!(
        errors
            .iter()
            .map(|e| e.external_id.as_str())
            .collect::<Vec<_>>(),
        ["X", "Y"]
    );
    assert!(
        errors
            .iter()
            .all(|e| matches!(e.problem, ManagerProblem::Cycle(_)))
    );
    // A loop through what is stored: Q is under P; P under Q.
    let (who, problem) = only(refusals(
        store
            .import_members(
                &org,
                &HashMap::new(),
                &[
                    imported("NEW", ManagerRef::Keep),
                    imported("P", by_external("Q")),
                ],
            )
            .await,
    ));
    assert_eq!(
        (who, problem),
        (
            "P".into(),
            ManagerProblem::Cycle(vec!["P".into(), "Q".into()])
        )
    );
    // Every unknown manager is named, in row order.
    let errors = refusals(
        store
            .upsert_members(
                &org,
                &[
                    imported("Z1", by_external("NOBODY")),
                    imported("Z2", ManagerRef::Id("no-such-id".into())),
                ],
                &[None, None],
            )
            .await,
    );
    assert_eq!(
        errors,
        [
            ManagerError {
                external_id: "Z1".into(),
                problem: ManagerProblem::Unknown("NOBODY".into()),
            },
            ManagerError {
                external_id: "Z2".into(),
                problem: ManagerProblem::Unknown("no-such-id".into()),
            },
        ]
    );
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);
    assert_eq!(manager_of(&store, &org, &p).await, None);
    assert_eq!(manager_of(&store, &org, &q).await, Some(p.id.clone()));
}

store_test!(managers_assigned_by_external_id_hold_the_same_rules);
async fn managers_assigned_by_external_id_hold_the_same_rules(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let a = add(&store, &org, "A", None).await;
    let b = add(&store, &org, "B", None).await;
    let c = add(&store, &org, "C", None).await;
    store
        .assign_managers(
            &org,
            &[
                ("B".into(), Some("A".into())),
                ("C".into(), Some("B".into())),
            ],
        )
        .await
        .unwrap();
    assert_eq!(manager_of(&store, &org, &b).await, Some(a.id.clone()));
    assert_eq!(manager_of(&store, &org, &c).await, Some(b.id.clone()));
    let (who, problem) = only(refusals(
        store
            .assign_managers(&org, &[("A".into(), Some("C".into()))])
            .await,
    ));
    assert_eq!(who, "A");
    assert!(matches!(problem, ManagerProblem::Cycle(ref around) if around.len() == 3));
    let errors = refusals(
        store
            .assign_managers(
                &org,
                &[
                    ("C".into(), None),
                    ("A".into(), Some("A".into())),
                    ("GHOST".into(), Some("A".into())),
                ],
            )
            .await,
    );
    assert_eq!(
        errors.iter().map(|e| &e.problem).collect::<Vec<_>>(),
        [
            &ManagerProblem::OwnManager,
            &ManagerProblem::Unknown("GHOST".into())
        ]
    );
    // Nothing of the refused assignment was written: C keeps B.
    assert_eq!(manager_of(&store, &org, &c).await, Some(b.id.clone()));
    store
        .assign_managers(&org, &[("C".into(), None)])
        .await
        .unwrap();
    assert_eq!(manager_of(&store, &org, &c).await, None);
}

/// PostgreSQL: a write that sets a manager waits for the managers' lock before it locks any
/// member's row. The holder of that lock (another write of managers) may then update the same
/// member: had the write locked the member first, the two would wait on each other (deadlock).
#[tokio::test]
async fn a_write_of_managers_takes_their_lock_before_any_member_row() {
    crate::on_postgres(|store: Store| async move {
        let org = store.create_organisation("Acme").await.unwrap().id;
        let a = add(&store, &org, "A", None).await;
        let b = add(&store, &org, "B", None).await;
        for path in ["update", "upsert"] {
            let holder = testing::hold_managers_lock(&store, &org).await.unwrap();
            let writer = {
                let (store, org, a, b) = (store.clone(), org.clone(), a.id.clone(), b.id.clone());
                tokio::spawn(async move {
                    match path {
                        "update" => store
                            .update_member(
                                &org,
                                &b,
                                MemberUpdate {
                                    manager_id: Some(Some(a)),
                                    ..MemberUpdate::default()
                                },
                            )
                            .await
                            .map(drop),
                        _ => store
                            .upsert_members(&org, &[imported("B", by_external("A"))], &[None])
                            .await
                            .map(drop),
                    }
                })
            };
            wait_for_managers_lock(&store).await;
            let mut holder = holder;
            sqlx::query("UPDATE members SET display_name = 'Held' WHERE org_id = $1 AND id = $2")
                .bind(&org)
                .bind(&b.id)
                .execute(&mut *holder)
                .await
                .unwrap_or_else(|e| panic!("{path}: the holder could not update B: {e}"));
            holder.commit().await.unwrap();
            writer
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{path}: the write failed: {e}"));
            assert_eq!(
                manager_of(&store, &org, &b).await,
                Some(a.id.clone()),
                "{path}"
            );
            set(&store, &org, &b, None).await;
        }
    })
    .await;
}

/// Until some transaction of this database waits for an advisory lock (the managers').
async fn wait_for_managers_lock(store: &Store) {
    for _ in 0..3000 {
        let waiting: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database
             WHERE d.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted",
        )
        .fetch_one(testing::pool(store))
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no write waited for the managers' lock");
}
