//! What a recipient's phone and browser see of a deeplink without any key: the public landing
//! page of `GET /c/{code}` and the files that let iOS and Android open `/c/…` links in the app
//! (`/.well-known/apple-app-site-association`, `/.well-known/assetlinks.json`).
//!
//! The landing page never looks the code up: a link that works, one that expired and one made
//! up get the same page with the same status, so the page tells a guesser nothing and costs no
//! query. It carries no campaign content, no script and no style (its Content-Security-Policy
//! allows nothing to load), and the code goes no further than the app link it offers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// The mobile apps that open recipients' deeplinks, for the app-link files and the landing
/// page's button. Every part is optional: a file whose app is not configured answers 404.
#[derive(Clone, Debug, Default)]
pub struct AppLinks {
    /// iOS apps as `TEAMID.bundle.id`, for `apple-app-site-association`.
    pub ios_app_ids: Vec<String>,
    /// The Android app's package name, for `assetlinks.json`.
    pub android_package: Option<String>,
    /// SHA-256 fingerprints of the Android app's signing certificates (`AB:CD:…`).
    pub android_cert_fingerprints: Vec<String>,
    /// A custom URL scheme the app registers (`acme-pidgr`): the landing page's button opens
    /// `<scheme>://c/<code>`. Without one the button is the deeplink itself, which the app
    /// claims as a universal link / app link.
    pub url_scheme: Option<String>,
}

/// Everything is refused but the page itself: no script, style, image, frame or form, and no
/// other site may frame it.
const LANDING_CSP: &str =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The landing page, `{link}` filled in with the app link (already percent-encoded, so it holds
/// nothing HTML would read as markup).
const LANDING_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>Pidgr</title>
</head>
<body>
<main>
<h1>Pidgr</h1>
<p>This message is waiting for you in the app.</p>
<p><a href="{link}">Open in the app</a></p>
</main>
</body>
</html>
"#;

/// GET /c/{code} without a key: the same page for every code, looked up or not.
pub fn landing_page(state: &AppState, code: &str) -> Response {
    let code = percent_encoded(code);
    let link = match &state.settings.app_links.url_scheme {
        Some(scheme) => format!("{scheme}://c/{code}"),
        None => format!("{}{code}", state.settings.deeplink_base),
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, LANDING_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The address holds the code: no page it links to may learn it.
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        LANDING_PAGE.replace("{link}", &link),
    )
        .into_response()
}

/// Every byte but RFC 3986's unreserved characters as `%XX`: safe in a URL and in HTML.
fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// GET /.well-known/apple-app-site-association: the iOS apps that open `/c/…` links.
pub async fn apple_app_site_association(
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let app_ids = &state.settings.app_links.ios_app_ids;
    if app_ids.is_empty() {
        return Err(ApiError::NotFound("iOS app configuration"));
    }
    // `appIDs` with `components` for iOS 13 and later, `paths` for the releases before.
    Ok(Json(json!({
        "applinks": {
            "apps": [],
            "details": [{
                "appIDs": app_ids,
                "paths": ["/c/*"],
                "components": [{ "/": "/c/*" }],
            }],
        }
    })))
}

/// GET /.well-known/assetlinks.json: the Android app (and its signing certificates) that
/// opens `/c/…` links.
pub async fn asset_links(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let links = &state.settings.app_links;
    let (Some(package), false) = (
        &links.android_package,
        links.android_cert_fingerprints.is_empty(),
    ) else {
        return Err(ApiError::NotFound("Android app configuration"));
    };
    Ok(Json(json!([{
        "relation": ["delegate_permission/common.handle_all_urls"],
        "target": {
            "namespace": "android_app",
            "package_name": package,
            "sha256_cert_fingerprints": links.android_cert_fingerprints,
        },
    }])))
}

/// The deeplink's two answers: the keyed JSON (the mobile backend) or the public page.
pub async fn deeplink(
    state: State<AppState>,
    caller: Option<crate::Caller>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    match caller {
        Some(caller) => Ok(crate::deliveries::deeplink(state, caller, Path(code))
            .await?
            .into_response()),
        None => Ok(landing_page(&state, &code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_reaches_the_page_only_percent_encoded() {
        assert_eq!(percent_encoded("0a1B-_.~"), "0a1B-_.~");
        assert_eq!(
            percent_encoded("\"><script>x</script>"),
            "%22%3E%3Cscript%3Ex%3C%2Fscript%3E"
        );
        assert_eq!(percent_encoded("é"), "%C3%A9");
    }

    #[test]
    fn the_landing_page_holds_no_script_and_no_style() {
        let page = LANDING_PAGE.to_lowercase();
        for banned in ["<script", "<style", "style=", "javascript:", "<link"] {
            assert!(!page.contains(banned), "{banned}");
        }
        // No event handler attribute (`onclick=` and the like).
        let handler = page.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "{page}");
    }
}
