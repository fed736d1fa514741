//! Store tests: every body runs on SQLite and, when `PIDGR_TEST_POSTGRES_URL` is set, on
//! PostgreSQL — each on a database of its own. One module per aggregate.

use pidgr_store::{Store, testing};
use std::future::Future;

/// Runs one test body against each configured backend.
macro_rules! store_test {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn on_sqlite() {
                super::$name(pidgr_store::testing::sqlite().await.unwrap()).await;
            }

            #[tokio::test]
            async fn on_postgres() {
                crate::on_postgres(super::$name).await;
            }
        }
    };
}

async fn on_postgres<F, Fut>(body: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    match testing::postgres().await.unwrap() {
        Some(store) => body(store).await,
        None => eprintln!(
            "skipped: set {} to run this test on PostgreSQL",
            testing::POSTGRES_URL_VAR
        ),
    }
}

mod attestation;
mod campaigns;
mod channels;
mod console_sessions;
mod content;
mod directory;
mod escalations;
mod idempotency;
mod import;
mod managers;
mod organisations;
mod scale;
mod secrets;
