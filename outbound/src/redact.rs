//! URLs as logs and the activity log may show them. A webhook URL's path and query are often
//! the credential itself (a Slack-style `https://hooks.example.com/services/T0/B0/secret`), and
//! a user name or password may hide before the host: only the scheme, host and port are kept.

/// `scheme://host[:port]`, followed by `/…` when a path or query was left out. Text that is not
/// an absolute URL with a host is not repeated at all.
pub fn redacted_url(url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url.trim()) else {
        return "(not a valid address)".to_owned();
    };
    let Some(host) = parsed.host_str() else {
        return format!("{}:(no host)", parsed.scheme());
    };
    let mut shown = format!("{}://{host}", parsed.scheme());
    if let Some(port) = parsed.port() {
        shown.push_str(&format!(":{port}"));
    }
    if parsed.path() != "/" || parsed.query().is_some() {
        shown.push_str("/…");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn only_scheme_host_and_port_are_shown() {
        for (given, shown) in [
            (
                "https://hooks.slack.com/services/T000/B000/XXXXsecret",
                "https://hooks.slack.com/…",
            ),
            ("https://example.com/?token=abc", "https://example.com/…"),
            ("https://example.com", "https://example.com"),
            ("https://example.com/", "https://example.com"),
            (
                "http://127.0.0.1:9000/hook/s3cret",
                "http://127.0.0.1:9000/…",
            ),
            ("https://[::1]:8443/p", "https://[::1]:8443/…"),
            ("https://user:pass@example.com/p", "https://example.com/…"),
            ("https://EXAMPLE.com:443/p", "https://example.com/…"),
        ] {
            assert_eq!(redacted_url(given), shown, "{given}");
        }
    }

    #[test]
    fn text_that_is_not_a_url_is_not_repeated() {
        for given in ["not a url s3cret", "", "/relative/s3cret"] {
            assert!(!redacted_url(given).contains("s3cret"), "{given}");
        }
        assert!(!redacted_url("mailto:s3cret@example.com").contains("s3cret"));
    }
}
