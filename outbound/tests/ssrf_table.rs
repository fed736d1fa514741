//! The shared table of forbidden URL forms, at send time: the client refuses every one before
//! any name lookup or connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pidgr_outbound::{NameResolver, OutboundClient, OutboundConfig, OutboundError, ResolveFuture};
use pidgr_workflows::definition::UrlPolicy;

/// The table's URLs.
pub fn rejected_urls() -> Vec<&'static str> {
    include_str!("ssrf-rejected-urls.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// Counts lookups and answers none.
struct CountingResolver(Arc<AtomicUsize>);

impl NameResolver for CountingResolver {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

#[tokio::test]
async fn every_form_in_the_table_is_refused_at_send_time_before_any_lookup() {
    let lookups = Arc::new(AtomicUsize::new(0));
    let client = OutboundClient::with_resolver(
        OutboundConfig {
            policy: UrlPolicy::STRICT,
            ..Default::default()
        },
        Arc::new(CountingResolver(lookups.clone())),
    )
    .unwrap();
    let urls = rejected_urls();
    assert!(urls.len() >= 40, "the table has {} forms", urls.len());
    for url in &urls {
        let error = client
            .post_json(
                url,
                &BTreeMap::new(),
                b"{}".to_vec(),
                Duration::from_secs(5),
            )
            .await
            .expect_err(url);
        assert!(
            matches!(error, OutboundError::BlockedUrl(_)),
            "{url}: {error:?}"
        );
        assert!(!error.is_retryable(), "{url}");
        // The reason reads as a sentence and never repeats the URL's path or query.
        let text = error.to_string();
        assert!(text.starts_with("the "), "{url}: {text}");
        assert!(!text.contains("meta-data"), "{url}: {text}");
    }
    assert_eq!(lookups.load(Ordering::SeqCst), 0);
}
