//! The JSON each provider receives, cut to fit its 4 KiB payload limit.
//!
//! A provider refuses an oversized payload outright (FCM `INVALID_ARGUMENT`, APNs
//! `PayloadTooLarge`), so a long body is shortened here instead: a notification banner shows a
//! few lines anyway, and the full text is one tap away behind the deeplink.

use serde_json::json;

use crate::error::PushError;
use crate::{MAX_COLLAPSE_ID_BYTES, MAX_PAYLOAD_BYTES, Notification};

/// The `messages:send` request body. The whole body (token included) is kept within
/// [`MAX_PAYLOAD_BYTES`]: FCM counts a little less than that, so this errs on the safe side.
/// The collapse id, when there is one, goes into `android.collapse_key` and, for iOS devices
/// FCM reaches through APNs, into `apns.headers.apns-collapse-id`.
pub(crate) fn fcm_body(token: &str, n: &Notification<'_>) -> Result<Vec<u8>, PushError> {
    check_collapse_id(n)?;
    fit(n.title, n.body, MAX_PAYLOAD_BYTES, |title, body| {
        let mut message = json!({
            "message": {
                "token": token,
                "notification": { "title": title, "body": body },
                "data": {
                    "deeplink": n.deeplink,
                    "campaign_id": n.campaign_id,
                    "delivery_id": n.delivery_id,
                },
                "android": { "priority": "high" },
                "apns": { "payload": { "aps": { "sound": "default" } } },
            }
        });
        if let Some(id) = n.collapse_id {
            message["message"]["android"]["collapse_key"] = json!(id);
            message["message"]["apns"]["headers"] = json!({ "apns-collapse-id": id });
        }
        message.to_string().into_bytes()
    })
}

/// A collapse id APNs would refuse (`BadCollapseId`) is refused here, before anything is sent:
/// every retry would be refused the same way.
pub(crate) fn check_collapse_id(n: &Notification<'_>) -> Result<(), PushError> {
    match n.collapse_id {
        // Visible ASCII only: it also travels as an HTTP header value.
        Some(id)
            if id.is_empty()
                || id.len() > MAX_COLLAPSE_ID_BYTES
                || !id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Err(PushError::Rejected {
                reason: format!(
                    "the collapse id must be 1 to {MAX_COLLAPSE_ID_BYTES} visible ASCII \
                     characters ({} bytes given)",
                    id.len()
                ),
            })
        }
        _ => Ok(()),
    }
}

/// The APNs payload (the device token and the collapse id travel in the path and headers, not
/// here).
pub(crate) fn apns_body(n: &Notification<'_>) -> Result<Vec<u8>, PushError> {
    check_collapse_id(n)?;
    fit(n.title, n.body, MAX_PAYLOAD_BYTES, |title, body| {
        json!({
            "aps": { "alert": { "title": title, "body": body }, "sound": "default" },
            "deeplink": n.deeplink,
            "campaign_id": n.campaign_id,
            "delivery_id": n.delivery_id,
        })
        .to_string()
        .into_bytes()
    })
}

/// Serialises with `build(title, body)`, cutting the body (and, if the title alone is too
/// long, the title with an empty body) at a character boundary, ending in "…", so the result
/// is at most `limit` bytes. The length of the serialised JSON grows with the kept prefix, so
/// the longest prefix that fits is found by bisection over real serialisations: escaping rules
/// never have to be modelled by hand.
fn fit(
    title: &str,
    body: &str,
    limit: usize,
    build: impl Fn(&str, &str) -> Vec<u8>,
) -> Result<Vec<u8>, PushError> {
    let full = build(title, body);
    if full.len() <= limit {
        return Ok(full);
    }
    if let Some(payload) = longest_fitting(body, limit, |cut| build(title, cut)) {
        return Ok(payload);
    }
    let untitled = build(title, "");
    if untitled.len() <= limit {
        return Ok(untitled);
    }
    longest_fitting(title, limit, |cut| build(cut, "")).ok_or_else(|| PushError::Rejected {
        reason: format!(
            "the notification does not fit in {limit} bytes even without its title and body \
             (the deeplink or ids are too long)"
        ),
    })
}

/// The payload for the longest prefix of `text` (plus "…") that fits, or `None` if not even
/// "…" alone fits.
fn longest_fitting(text: &str, limit: usize, build: impl Fn(&str) -> Vec<u8>) -> Option<Vec<u8>> {
    // Every character takes at least one byte, so no more than `limit` of them can fit.
    let count = text.chars().take(limit + 1).count();
    let attempt = |kept: usize| build(&shortened(text, kept));
    let mut best = attempt(0);
    if best.len() > limit {
        return None;
    }
    // Invariant: a prefix of `low` characters fits, one of `high` does not (or is the whole,
    // already refused text).
    let (mut low, mut high) = (0, count);
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        let payload = attempt(middle);
        if payload.len() <= limit {
            low = middle;
            best = payload;
        } else {
            high = middle;
        }
    }
    Some(best)
}

fn shortened(text: &str, kept: usize) -> String {
    let mut cut: String = text.chars().take(kept).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification<'a>(title: &'a str, body: &'a str) -> Notification<'a> {
        Notification {
            title,
            body,
            deeplink: "https://app.example/d/abc",
            campaign_id: "c-1",
            delivery_id: "d-1",
            collapse_id: None,
        }
    }

    fn body_of(payload: &[u8]) -> String {
        let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
        value["aps"]["alert"]["body"].as_str().unwrap().to_owned()
    }

    #[test]
    fn a_short_notification_is_left_alone() {
        let payload = apns_body(&notification("Hi", "Short body")).unwrap();
        assert_eq!(body_of(&payload), "Short body");
    }

    #[test]
    fn a_long_body_is_cut_to_exactly_fill_the_limit_with_an_ellipsis() {
        let long = "word ".repeat(2000);
        let payload = apns_body(&notification("Hi", &long)).unwrap();
        assert!(payload.len() <= MAX_PAYLOAD_BYTES);
        // One more character would not have fitted (the ellipsis is 3 bytes in UTF-8).
        assert!(payload.len() > MAX_PAYLOAD_BYTES - 8);
        let body = body_of(&payload);
        assert!(body.ends_with('…'));
        assert!(long.starts_with(body.trim_end_matches('…')));
    }

    #[test]
    fn multi_byte_and_escaped_characters_are_cut_at_a_boundary() {
        // 'é' is two bytes, '"' and '\n' are escaped into two, a control character into six.
        let long = "é\"\n\u{1}😀".repeat(1000);
        for payload in [
            apns_body(&notification("Hi", &long)).unwrap(),
            fcm_body("token", &notification("Hi", &long)).unwrap(),
        ] {
            assert!(payload.len() <= MAX_PAYLOAD_BYTES, "{}", payload.len());
            let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert!(value.to_string().contains('…'));
        }
    }

    #[test]
    fn a_title_that_alone_is_too_long_is_cut_too() {
        let title = "T".repeat(10_000);
        let payload = apns_body(&notification(&title, "body")).unwrap();
        assert!(payload.len() <= MAX_PAYLOAD_BYTES);
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert!(
            value["aps"]["alert"]["title"]
                .as_str()
                .unwrap()
                .ends_with("T…")
        );
        assert_eq!(value["aps"]["alert"]["body"], "");
    }

    #[test]
    fn ids_that_cannot_fit_are_refused_not_cut() {
        let deeplink = "x".repeat(5000);
        let n = Notification {
            deeplink: &deeplink,
            ..notification("Hi", "body")
        };
        assert!(matches!(apns_body(&n), Err(PushError::Rejected { .. })));
    }

    #[test]
    fn the_fcm_body_has_the_documented_shape() {
        let payload = fcm_body("tok", &notification("Title", "Body")).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            value,
            json!({"message": {
                "token": "tok",
                "notification": {"title": "Title", "body": "Body"},
                "data": {"deeplink": "https://app.example/d/abc", "campaign_id": "c-1", "delivery_id": "d-1"},
                "android": {"priority": "high"},
                "apns": {"payload": {"aps": {"sound": "default"}}},
            }})
        );
    }

    #[test]
    fn the_collapse_id_goes_to_android_and_to_apns_through_fcm() {
        let n = Notification {
            collapse_id: Some("0123abcd"),
            ..notification("Title", "Body")
        };
        let value: serde_json::Value =
            serde_json::from_slice(&fcm_body("tok", &n).unwrap()).unwrap();
        assert_eq!(value["message"]["android"]["collapse_key"], "0123abcd");
        assert_eq!(value["message"]["android"]["priority"], "high");
        assert_eq!(
            value["message"]["apns"]["headers"]["apns-collapse-id"],
            "0123abcd"
        );
        assert_eq!(
            value["message"]["apns"]["payload"]["aps"]["sound"],
            "default"
        );
    }

    #[test]
    fn a_collapse_id_apns_would_refuse_is_refused_before_sending() {
        let long = "x".repeat(MAX_COLLAPSE_ID_BYTES + 1);
        for id in [long.as_str(), "", "line\nbreak"] {
            let n = Notification {
                collapse_id: Some(id),
                ..notification("Hi", "body")
            };
            assert!(matches!(apns_body(&n), Err(PushError::Rejected { .. })));
            assert!(matches!(fcm_body("t", &n), Err(PushError::Rejected { .. })));
        }
        let fits = "x".repeat(MAX_COLLAPSE_ID_BYTES);
        let n = Notification {
            collapse_id: Some(&fits),
            ..notification("Hi", "body")
        };
        assert!(apns_body(&n).is_ok());
    }
}
