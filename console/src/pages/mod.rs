//! The console's pages: one module per area, each with its own `routes()`. Handlers take the
//! [`Session`] and read and write through [`Session::api`] only.

use askama::Template;
use axum::Router;
use axum::http::Method;
use axum::response::Html;
use axum::routing::post;

use crate::session::Session;
use crate::{Console, ConsoleError};

mod campaign;
mod campaigns;
mod directory;
mod integrations;
mod new_campaign;
mod settings;
mod templates;
mod workflows;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/sign-out", post(crate::session::sign_out))
        .merge(campaigns::routes())
        .merge(campaign::routes())
        .merge(new_campaign::routes())
        .merge(workflows::routes())
        .merge(templates::routes())
        .merge(directory::routes())
        .merge(integrations::routes())
        .merge(settings::routes())
}

/// What every page's frame shows: the organisation, the sections this role may open, and the
/// CSRF token htmx sends with every request.
pub struct Layout {
    pub org_name: String,
    pub csrf: String,
    pub nav: Vec<NavItem>,
}

pub struct NavItem {
    pub label: &'static str,
    pub href: &'static str,
    pub active: bool,
}

/// The sections, each shown to a role that may read what it lists.
const SECTIONS: &[(&str, &str, &str)] = &[
    ("Campaigns", "/console/campaigns", "/v1/campaigns"),
    (
        "Workflows",
        "/console/workflows",
        "/v1/workflow-definitions",
    ),
    ("Templates", "/console/templates", "/v1/templates"),
    ("Directory", "/console/directory", "/v1/members"),
    (
        "Integrations",
        "/console/integrations",
        "/v1/webhook-channel",
    ),
    ("Settings", "/console/settings", "/v1/api-keys"),
];

impl Layout {
    /// The frame for a page of `section` (its label in [`SECTIONS`]).
    pub fn new(session: &Session, section: &str) -> Self {
        let nav = SECTIONS
            .iter()
            .filter(|(label, _, api)| {
                session.can(Method::GET, api)
                    || (*label == "Settings" && session.can(Method::GET, "/v1/roles"))
            })
            .map(|(label, href, _)| NavItem {
                label,
                href,
                active: *label == section,
            })
            .collect();
        Layout {
            org_name: session.org_name.clone(),
            csrf: session.csrf_token.clone(),
            nav,
        }
    }
}

/// A rendered page.
pub fn render(page: impl Template) -> Result<Html<String>, ConsoleError> {
    Ok(Html(page.render()?))
}
