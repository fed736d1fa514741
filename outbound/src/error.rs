//! Why an outbound POST failed, and whether trying again could help.

use std::net::IpAddr;
use std::time::Duration;

use pidgr_workflows::definition::{BlockedReason, UrlRejection};

/// Why an outbound POST failed. The `Display` texts are plain sentences that never contain
/// header values (they are secrets) and never the URL's path or query (which may carry tokens).
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The URL failed the static SSRF checks (scheme, userinfo, literal address, `localhost`).
    #[error("{0}")]
    BlockedUrl(UrlRejection),
    /// The host name resolved to an address that may not be contacted. One forbidden address is
    /// enough: the client refuses rather than picking a permitted one, because an answer mixing
    /// public and private addresses is the signature of a DNS rebinding attempt.
    ///
    /// The text names neither the address nor the kind of range: it reaches API clients and the
    /// activity log, and naming what an internal name resolves to would map the internal network
    /// for whoever can save a URL. [`OutboundError::blocked_detail`] gives the detail for logs.
    #[error("the host {host} is not allowed: it resolves to a private or reserved address")]
    BlockedAddress {
        host: String,
        ip: IpAddr,
        reason: BlockedReason,
    },
    /// The host name could not be resolved (or resolved to nothing).
    #[error("the host {host} could not be resolved: {message}")]
    Dns { host: String, message: String },
    /// No complete answer (connection, status and body) arrived within the timeout.
    #[error("the receiver did not answer within {}", show_duration(.0))]
    TimedOut(Duration),
    /// The connection (TCP or TLS handshake) could not be established.
    #[error("could not connect to the receiver: {0}")]
    Connect(String),
    /// The receiver answered with a status other than 2xx (redirects included: they are never
    /// followed). `body_excerpt` holds at most 200 characters of the answer, for logs.
    #[error("the receiver answered with HTTP status {status}{}", excerpt_suffix(.body_excerpt))]
    Status { status: u16, body_excerpt: String },
    /// Anything else: a protocol error, a broken connection while reading, an invalid header.
    #[error("{0}")]
    Other(String),
}

impl OutboundError {
    /// For logs only (never for answers): the address a blocked host name resolved to and why
    /// that address may not be contacted.
    pub fn blocked_detail(&self) -> Option<String> {
        match self {
            OutboundError::BlockedAddress { ip, reason, .. } => Some(format!("{ip}: {reason}")),
            _ => None,
        }
    }

    /// The receiver's HTTP status, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            OutboundError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether sending the same request again later could succeed.
    ///
    /// - Blocked URLs and addresses: never. The rules will not change between attempts, and
    ///   retrying would just knock on a forbidden door again.
    /// - Status: 5xx (the receiver failed), 408 (request timeout), 425 (too early) and 429 (too
    ///   many requests) are transient; every other status, 3xx included, is an answer that a
    ///   retry would only repeat.
    /// - DNS failures, timeouts, connection failures and other transport errors: yes; networks
    ///   and receivers come back.
    pub fn is_retryable(&self) -> bool {
        match self {
            OutboundError::BlockedUrl(_) | OutboundError::BlockedAddress { .. } => false,
            OutboundError::Status { status, .. } => {
                matches!(status, 500..=599 | 408 | 425 | 429)
            }
            OutboundError::Dns { .. }
            | OutboundError::TimedOut(_)
            | OutboundError::Connect(_)
            | OutboundError::Other(_) => true,
        }
    }
}

fn show_duration(duration: &Duration) -> String {
    let millis = duration.as_millis();
    if millis >= 1000 && millis.is_multiple_of(1000) {
        format!("{} s", millis / 1000)
    } else {
        format!("{millis} ms")
    }
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_plain() {
        assert_eq!(
            OutboundError::TimedOut(Duration::from_secs(30)).to_string(),
            "the receiver did not answer within 30 s"
        );
        assert_eq!(
            OutboundError::TimedOut(Duration::from_millis(200)).to_string(),
            "the receiver did not answer within 200 ms"
        );
        assert_eq!(
            OutboundError::Status {
                status: 503,
                body_excerpt: "busy".into()
            }
            .to_string(),
            "the receiver answered with HTTP status 503: busy"
        );
        assert_eq!(
            OutboundError::Status {
                status: 404,
                body_excerpt: String::new()
            }
            .to_string(),
            "the receiver answered with HTTP status 404"
        );
        assert_eq!(
            OutboundError::BlockedAddress {
                host: "hooks.test".into(),
                ip: "10.0.0.1".parse().unwrap(),
                reason: BlockedReason::Private,
            }
            .to_string(),
            "the host hooks.test is not allowed: it resolves to a private or reserved address"
        );
        // The address is for logs only.
        let blocked = OutboundError::BlockedAddress {
            host: "hooks.test".into(),
            ip: "10.0.0.1".parse().unwrap(),
            reason: BlockedReason::Private,
        };
        assert!(!blocked.to_string().contains("10.0.0.1"));
        assert!(blocked.blocked_detail().unwrap().starts_with("10.0.0.1: "));
    }
}
