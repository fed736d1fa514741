use chrono::TimeDelta;
use pidgr_store::{SUPER_ADMIN, Store};

store_test!(a_session_resolves_until_it_expires_or_ends);
async fn a_session_resolves_until_it_expires_or_ends(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let key = store
        .create_api_key(&org.id, "console", SUPER_ADMIN)
        .await
        .unwrap();
    let open = store
        .create_console_session(&org.id, &key.key.id, TimeDelta::hours(1))
        .await
        .unwrap();
    let found = store.console_session(&open.id).await.unwrap().unwrap();
    assert_eq!(found.key_id, key.key.id);
    assert_eq!(found.org_id, org.id);
    assert_eq!(found.csrf_token, open.session.csrf_token);
    assert!(
        store
            .console_session(&open.session.csrf_token)
            .await
            .unwrap()
            .is_none()
    );

    let expired = store
        .create_console_session(&org.id, &key.key.id, TimeDelta::milliseconds(-1))
        .await
        .unwrap();
    assert!(store.console_session(&expired.id).await.unwrap().is_none());

    store.end_console_session(&open.id).await.unwrap();
    assert!(store.console_session(&open.id).await.unwrap().is_none());
}

store_test!(a_key_authenticates_by_id_only_in_its_organisation_and_until_revoked);
async fn a_key_authenticates_by_id_only_in_its_organisation_and_until_revoked(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let key = store
        .create_api_key(&org.id, "console", SUPER_ADMIN)
        .await
        .unwrap();
    let other = store.create_organisation("Other").await.unwrap();
    let found = store
        .authenticate_key_id(&org.id, &key.key.id)
        .await
        .unwrap()
        .expect("a live key");
    assert!(!found.permissions.is_empty());
    assert!(
        store
            .authenticate_key_id(&other.id, &key.key.id)
            .await
            .unwrap()
            .is_none()
    );
    store.revoke_api_key(&org.id, &key.key.id).await.unwrap();
    assert!(
        store
            .authenticate_key_id(&org.id, &key.key.id)
            .await
            .unwrap()
            .is_none()
    );
}
