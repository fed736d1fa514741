//! Serving the router over HTTP/1.1, with what `axum::serve` does not offer: a header-read
//! timeout (a client that opens connections and trickles or never finishes its request head
//! cannot hold them open), the client's address on every request for the per-address rate
//! limit ([`ConnectInfo`]), and a bounded graceful shutdown: connections still open
//! [`SHUTDOWN_GRACE`] after the shutdown began (a client reading its answer slowly, or not at
//! all) are dropped, so a stopping server does not wait on its slowest reader.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;

/// How long a shutdown waits for the requests in progress and the answers being written.
/// Longer than a request may run by default (30 s), so only a stuck reader is cut off.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets the
/// requests in progress finish and returns once every connection has closed, or after
/// [`SHUTDOWN_GRACE`], dropping the connections still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_grace(listener, app, header_read_timeout, shutdown, SHUTDOWN_GRACE).await
}

async fn serve_with_grace(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            // Finished connections are reaped as they end, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: the backlog waits, so pause
                    // rather than spin.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            // A Router is always ready: no poll_ready needed.
            app.clone().call(request.map(axum::body::Body::new))
        });
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopped => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the shutdown grace period are dropped"
        );
        connections.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_shutdown_drops_a_connection_whose_client_never_reads_its_answer() {
        // Far more than the socket buffers hold, so writing it waits on the client.
        let app = Router::new().route("/big", get(|| async { vec![b'x'; 64 << 20] }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, mut stopped) = watch::channel(false);
        let server = tokio::spawn(serve_with_grace(
            listener,
            app,
            Duration::from_secs(10),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
            Duration::from_millis(100),
        ));
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: pidgr\r\n\r\n")
            .await
            .unwrap();
        // The answer has begun; the client reads no further.
        let mut head = [0u8; 12];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        stop.send(true).unwrap();
        // The test's own bound on its await: without the grace period this never returns.
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("the server waited on a client that never reads")
            .unwrap()
            .unwrap();
        drop(client);
    }
}
