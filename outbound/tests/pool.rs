//! Connection pooling per checked destination, against keep-alive receivers on loopback: sends
//! whose checks agree share a connection; a name that now resolves elsewhere gets a connection
//! to its new, checked address and never the old one; a forbidden answer is refused even while a
//! pooled connection to the old address is open.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pidgr_outbound::{NameResolver, OutboundClient, OutboundConfig, OutboundError, ResolveFuture};
use pidgr_workflows::definition::{BlockedReason, UrlPolicy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1.1 receiver that keeps connections open and answers every request with 200; it
/// records, for each request, which of its connections carried it (numbered from 0).
struct KeepAlive {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<usize>>>,
}

impl KeepAlive {
    async fn start(ip: &str, port: u16) -> KeepAlive {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, record) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = count.fetch_add(1, Ordering::SeqCst);
                let record = record.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut header = String::new();
                            if stream.read_line(&mut header).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; length];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        record.lock().unwrap().push(connection);
                        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        KeepAlive {
            port,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The connection each request so far came on.
    fn requests(&self) -> Vec<usize> {
        self.requests.lock().unwrap().clone()
    }
}

/// Answers each lookup from a list in turn (the last one repeats) and counts the lookups.
struct Scripted {
    answers: Vec<Vec<IpAddr>>,
    calls: Arc<AtomicUsize>,
}

impl NameResolver for Scripted {
    fn resolve(&self, _host: &str, port: u16) -> ResolveFuture {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let ips = &self.answers[call.min(self.answers.len() - 1)];
        let addrs = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

fn client(answers: &[&[&str]]) -> (OutboundClient, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let resolver = Scripted {
        answers: answers
            .iter()
            .map(|ips| ips.iter().map(|ip| ip.parse().unwrap()).collect())
            .collect(),
        calls: calls.clone(),
    };
    let config = OutboundConfig {
        policy: UrlPolicy::DEVELOPMENT,
        ..OutboundConfig::default()
    };
    let client = OutboundClient::with_resolver(config, Arc::new(resolver)).unwrap();
    (client, calls)
}

async fn post(client: &OutboundClient, url: &str) -> Result<u16, OutboundError> {
    client
        .post_json(url, &BTreeMap::new(), b"{}".to_vec(), TIMEOUT)
        .await
        .map(|response| response.status)
}

#[tokio::test]
async fn sends_to_one_checked_destination_share_a_connection_and_still_resolve_each_time() {
    let receiver = KeepAlive::start("127.0.0.1", 0).await;
    let (client, lookups) = client(&[&["127.0.0.1"]]);
    let url = format!("http://receiver.localhost:{}/hook", receiver.port);

    for _ in 0..5 {
        assert_eq!(post(&client, &url).await.unwrap(), 200);
    }

    assert_eq!(receiver.requests(), [0, 0, 0, 0, 0]);
    assert_eq!(receiver.connections(), 1);
    assert_eq!(lookups.load(Ordering::SeqCst), 5, "checked at every send");
}

#[tokio::test]
async fn concurrent_sends_all_arrive_over_the_pool() {
    let receiver = KeepAlive::start("127.0.0.1", 0).await;
    let (client, _) = client(&[&["127.0.0.1"]]);
    let url = format!("http://receiver.localhost:{}/hook", receiver.port);

    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (client, url) = (client.clone(), url.clone());
        sends.spawn(async move { post(&client, &url).await });
    }
    let answers = sends.join_all().await;

    assert!(answers.iter().all(|a| matches!(a, Ok(200))), "{answers:?}");
    assert_eq!(receiver.requests().len(), 32);
    // A second round finds connections of the first idle in the pool.
    let before = receiver.connections();
    for _ in 0..4 {
        post(&client, &url).await.unwrap();
    }
    assert_eq!(receiver.connections(), before);
}

#[tokio::test]
async fn a_name_pointed_elsewhere_never_reuses_the_old_connection() {
    // Same port, two loopback addresses: which receiver gets a request shows which address
    // the connection went to.
    let first = KeepAlive::start("127.0.0.1", 0).await;
    let second = KeepAlive::start("127.0.0.2", first.port).await;
    let (client, _) = client(&[
        &["127.0.0.1"],
        &["127.0.0.1"],
        &["127.0.0.2"],
        &["10.0.0.1"],
    ]);
    let url = format!("http://receiver.localhost:{}/hook", first.port);

    post(&client, &url).await.unwrap();
    post(&client, &url).await.unwrap();
    post(&client, &url).await.unwrap();
    let refused = post(&client, &url).await.unwrap_err();

    assert_eq!(
        first.requests(),
        [0, 0],
        "the first two shared a connection"
    );
    assert_eq!(
        second.requests(),
        [0],
        "the re-pointed name went to its new address, not over the open connection"
    );
    assert!(
        matches!(
            refused,
            OutboundError::BlockedAddress {
                reason: BlockedReason::Private,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(first.requests().len() + second.requests().len(), 3);
}
