//! Organisations and API keys.

use pidgr_store::{Store, StoreError};

store_test!(api_keys_authenticate_until_revoked);
async fn api_keys_authenticate_until_revoked(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let generated = store
        .create_api_key(&org.id, "dev", "super_admin")
        .await
        .unwrap();
    assert!(generated.secret.starts_with(&generated.key.prefix));
    let key = store
        .authenticate(&generated.secret)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (key.org_id.as_str(), key.role.as_str()),
        (org.id.as_str(), "super_admin")
    );
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
}
