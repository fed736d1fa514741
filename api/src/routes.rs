//! The route table: every route of the API, the permission it needs, and whether it accepts
//! `Idempotency-Key`. The router, the OpenAPI coverage test and the end-to-end permission
//! matrix are all built from this one list, so a route cannot exist without a declared access.

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use axum::{Extension, Router};
use pidgr_store::Permission::{self, *};
use pidgr_store::SetKind;

use crate::auth::{Access, authorize};
use crate::input::MAX_BODY_BYTES;
use crate::{
    AppState, api_keys, app_links, audit, campaigns, deliveries, directory, escalations,
    idempotency, integrations, managers, member_sets, roles, simulate, templates, webhook_channel,
    workflow_definitions,
};

/// The OpenAPI document, kept in the repository beside this crate and served as is.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// One route as the outside world sees it.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    pub method: Method,
    /// The axum path, e.g. `/v1/members/{member_id}` (the same syntax OpenAPI uses).
    pub path: &'static str,
    pub access: Access,
    /// A creating route: a retried request with the same `Idempotency-Key` creates nothing new.
    pub idempotent: bool,
}

struct Entry {
    spec: RouteSpec,
    handler: MethodRouter<AppState>,
}

fn entry(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
) -> Entry {
    Entry {
        spec: RouteSpec {
            idempotent: false,
            method,
            path,
            access,
        },
        handler,
    }
}

fn public(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Entry {
    entry(method, path, Access::Public, handler)
}

fn needs(
    permission: Permission,
    method: Method,
    path: &'static str,
    handler: MethodRouter<AppState>,
) -> Entry {
    entry(method, path, Access::Requires(permission), handler)
}

/// A creating route (POST), which takes an `Idempotency-Key`.
fn creates(permission: Permission, path: &'static str, handler: MethodRouter<AppState>) -> Entry {
    let mut entry = needs(permission, Method::POST, path, handler);
    entry.spec.idempotent = true;
    entry
}

fn table() -> Vec<Entry> {
    use Method as M;
    let mut routes = vec![
        public(M::GET, "/healthz", get(crate::health)),
        public(M::GET, "/readyz", get(crate::ready)),
        public(M::GET, "/v1/openapi.json", get(crate::openapi)),
        // What lets the mobile apps open recipients' `/c/…` links (404 until configured).
        public(
            M::GET,
            "/.well-known/apple-app-site-association",
            get(app_links::apple_app_site_association),
        ),
        public(
            M::GET,
            "/.well-known/assetlinks.json",
            get(app_links::asset_links),
        ),
        entry(
            M::GET,
            "/v1/organisation",
            Access::Authenticated,
            get(roles::organisation),
        ),
        // The public keys that check the organisation's signed audit exports.
        entry(
            M::GET,
            "/v1/organisation/signing-keys",
            Access::Authenticated,
            get(audit::signing_keys),
        ),
        // Roles and API keys.
        needs(RolesRead, M::GET, "/v1/roles", get(roles::list)),
        creates(RolesWrite, "/v1/roles", post(roles::create)),
        needs(RolesRead, M::GET, "/v1/roles/{role_id}", get(roles::read)),
        needs(
            RolesWrite,
            M::PATCH,
            "/v1/roles/{role_id}",
            patch(roles::update),
        ),
        needs(
            RolesWrite,
            M::DELETE,
            "/v1/roles/{role_id}",
            delete(roles::remove),
        ),
        needs(ApiKeysManage, M::GET, "/v1/api-keys", get(api_keys::list)),
        // Not idempotent on purpose: a replay would have to keep the one-time secret.
        needs(
            ApiKeysManage,
            M::POST,
            "/v1/api-keys",
            post(api_keys::create),
        ),
        needs(
            ApiKeysManage,
            M::GET,
            "/v1/api-keys/{key_id}",
            get(api_keys::read),
        ),
        needs(
            ApiKeysManage,
            M::DELETE,
            "/v1/api-keys/{key_id}",
            delete(api_keys::revoke),
        ),
        // Members and their devices.
        needs(MembersRead, M::GET, "/v1/members", get(directory::list)),
        creates(MembersWrite, "/v1/members", post(directory::create)),
        // Writes by the organisation's own ids, for directory syncs: replaying one converges,
        // so neither takes an Idempotency-Key.
        needs(
            MembersWrite,
            M::PUT,
            "/v1/members/by-external-id/{external_id}",
            put(directory::upsert),
        ),
        needs(
            MembersWrite,
            M::POST,
            "/v1/members/bulk",
            post(directory::bulk)
                .route_layer(DefaultBodyLimit::max(directory::MAX_BULK_BODY_BYTES)),
        ),
        needs(
            MembersRead,
            M::GET,
            "/v1/members/{member_id}",
            get(directory::read),
        ),
        needs(
            MembersWrite,
            M::PATCH,
            "/v1/members/{member_id}",
            patch(directory::update),
        ),
        needs(
            MembersWrite,
            M::DELETE,
            "/v1/members/{member_id}",
            delete(directory::remove),
        ),
        needs(
            MembersRead,
            M::GET,
            "/v1/members/{member_id}/devices",
            get(directory::list_devices),
        ),
        needs(
            MembersRead,
            M::GET,
            "/v1/members/{member_id}/reports",
            get(managers::reports),
        ),
        creates(
            DeliveriesWrite,
            "/v1/members/{member_id}/devices",
            post(directory::register_device),
        ),
        needs(
            DeliveriesWrite,
            M::DELETE,
            "/v1/members/{member_id}/devices/{device_id}",
            delete(directory::remove_device),
        ),
        // The mobile backend: a member's inbox, READ/ACK, deeplinks.
        needs(
            DeliveriesWrite,
            M::GET,
            "/v1/members/{member_id}/inbox",
            get(deliveries::inbox),
        ),
        needs(
            CampaignsRead,
            M::GET,
            "/v1/deliveries/{delivery_id}",
            get(deliveries::read),
        ),
        needs(
            DeliveriesWrite,
            M::POST,
            "/v1/deliveries/{delivery_id}/read",
            post(deliveries::mark_read),
        ),
        needs(
            DeliveriesWrite,
            M::POST,
            "/v1/deliveries/{delivery_id}/ack",
            post(deliveries::acknowledge),
        ),
        // The mobile backend's keyed JSON; a recipient's browser (no key) gets the landing page.
        entry(
            M::GET,
            "/c/{code}",
            Access::KeyOrPublicPage(DeliveriesWrite),
            get(app_links::deeplink),
        ),
        // A manager's escalation link, resolved by the mobile backend like a deeplink.
        needs(
            DeliveriesWrite,
            M::GET,
            "/v1/escalations/{code}",
            get(escalations::read),
        ),
        // Templates.
        needs(TemplatesRead, M::GET, "/v1/templates", get(templates::list)),
        creates(TemplatesWrite, "/v1/templates", post(templates::create)),
        needs(
            TemplatesRead,
            M::GET,
            "/v1/templates/{template_id}",
            get(templates::read),
        ),
        needs(
            TemplatesRead,
            M::GET,
            "/v1/templates/{template_id}/versions",
            get(templates::list_versions),
        ),
        creates(
            TemplatesWrite,
            "/v1/templates/{template_id}/versions",
            post(templates::append_version),
        ),
        needs(
            TemplatesRead,
            M::GET,
            "/v1/templates/{template_id}/versions/{version}",
            get(templates::read_version),
        ),
        needs(
            TemplatesRead,
            M::POST,
            "/v1/templates/{template_id}/versions/{version}/preview",
            post(templates::preview),
        ),
        // Stored workflow definitions.
        needs(
            CampaignsRead,
            M::GET,
            "/v1/workflow-definitions",
            get(workflow_definitions::list),
        ),
        creates(
            CampaignsWrite,
            "/v1/workflow-definitions",
            post(workflow_definitions::create),
        ),
        needs(
            CampaignsRead,
            M::POST,
            "/v1/workflow-definitions/validate",
            post(workflow_definitions::validate),
        ),
        needs(
            CampaignsRead,
            M::POST,
            "/v1/workflow-definitions/simulate",
            post(simulate::run),
        ),
        needs(
            CampaignsRead,
            M::GET,
            "/v1/workflow-definitions/{definition_id}",
            get(workflow_definitions::read),
        ),
        needs(
            CampaignsRead,
            M::GET,
            "/v1/workflow-definitions/{definition_id}/versions",
            get(workflow_definitions::list_versions),
        ),
        creates(
            CampaignsWrite,
            "/v1/workflow-definitions/{definition_id}/versions",
            post(workflow_definitions::append_version),
        ),
        needs(
            CampaignsRead,
            M::GET,
            "/v1/workflow-definitions/{definition_id}/versions/{version}",
            get(workflow_definitions::read_version),
        ),
        // Campaigns.
        needs(CampaignsRead, M::GET, "/v1/campaigns", get(campaigns::list)),
        creates(CampaignsWrite, "/v1/campaigns", post(campaigns::create)),
        needs(
            CampaignsRead,
            M::GET,
            "/v1/campaigns/{campaign_id}",
            get(campaigns::read),
        ),
        needs(
            CampaignsRead,
            M::GET,
            "/v1/campaigns/{campaign_id}/preview",
            get(campaigns::preview),
        ),
        needs(
            CampaignsRun,
            M::POST,
            "/v1/campaigns/{campaign_id}/start",
            post(campaigns::start),
        ),
        needs(
            CampaignsRun,
            M::POST,
            "/v1/campaigns/{campaign_id}/cancel",
            post(campaigns::cancel),
        ),
        needs(
            CampaignsRead,
            M::GET,
            "/v1/campaigns/{campaign_id}/deliveries",
            get(campaigns::deliveries),
        ),
        needs(
            CampaignsRead,
            M::GET,
            "/v1/campaigns/{campaign_id}/activity",
            get(campaigns::activity),
        ),
        needs(
            CampaignsRead,
            M::GET,
            "/v1/campaigns/{campaign_id}/audit",
            get(audit::export),
        ),
        // The organisation's webhook channel (sending is the delivery channels' business).
        needs(
            IntegrationsManage,
            M::GET,
            "/v1/webhook-channel",
            get(webhook_channel::read),
        ),
        needs(
            IntegrationsManage,
            M::PUT,
            "/v1/webhook-channel",
            put(webhook_channel::configure),
        ),
        needs(
            IntegrationsManage,
            M::DELETE,
            "/v1/webhook-channel",
            delete(webhook_channel::remove),
        ),
        needs(
            IntegrationsManage,
            M::POST,
            "/v1/webhook-channel/rotate-secret",
            post(webhook_channel::rotate_secret),
        ),
        needs(
            IntegrationsManage,
            M::POST,
            "/v1/webhook-channel/test-event",
            post(webhook_channel::send_test_event),
        ),
        // Push provider credentials.
        needs(
            IntegrationsManage,
            M::GET,
            "/v1/integrations/push",
            get(integrations::list),
        ),
        needs(
            IntegrationsManage,
            M::PUT,
            "/v1/integrations/push/fcm",
            put(integrations::configure_fcm),
        ),
        needs(
            IntegrationsManage,
            M::PUT,
            "/v1/integrations/push/apns",
            put(integrations::configure_apns),
        ),
        needs(
            IntegrationsManage,
            M::DELETE,
            "/v1/integrations/push/fcm",
            delete(integrations::remove_fcm),
        ),
        needs(
            IntegrationsManage,
            M::DELETE,
            "/v1/integrations/push/apns",
            delete(integrations::remove_apns),
        ),
    ];
    for (kind, base, one, members, member, read, write) in [
        (
            SetKind::Team,
            "/v1/teams",
            "/v1/teams/{set_id}",
            "/v1/teams/{set_id}/members",
            "/v1/teams/{set_id}/members/{member_id}",
            TeamsRead,
            TeamsWrite,
        ),
        (
            SetKind::Group,
            "/v1/groups",
            "/v1/groups/{set_id}",
            "/v1/groups/{set_id}/members",
            "/v1/groups/{set_id}/members/{member_id}",
            GroupsRead,
            GroupsWrite,
        ),
    ] {
        routes.extend([
            needs(
                read,
                M::GET,
                base,
                get(member_sets::list).layer(Extension(kind)),
            ),
            creates(
                write,
                base,
                post(member_sets::create).layer(Extension(kind)),
            ),
            needs(
                read,
                M::GET,
                one,
                get(member_sets::read).layer(Extension(kind)),
            ),
            needs(
                write,
                M::PATCH,
                one,
                patch(member_sets::rename).layer(Extension(kind)),
            ),
            needs(
                write,
                M::DELETE,
                one,
                delete(member_sets::remove).layer(Extension(kind)),
            ),
            needs(
                read,
                M::GET,
                members,
                get(member_sets::list_members).layer(Extension(kind)),
            ),
            needs(
                write,
                M::PUT,
                member,
                put(member_sets::add_member).layer(Extension(kind)),
            ),
            needs(
                write,
                M::DELETE,
                member,
                delete(member_sets::remove_member).layer(Extension(kind)),
            ),
        ]);
    }
    routes
}

/// Every route, for documentation and tests.
pub fn specs() -> Vec<RouteSpec> {
    let table = table().into_iter().map(|entry| entry.spec);
    table.chain(crate::codec::specs()).collect()
}

/// The whole API: each route behind its access check (and idempotency, for creating routes),
/// with a request body limit.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for Entry { spec, handler } in table() {
        let mut handler = handler;
        if spec.idempotent {
            handler =
                handler.route_layer(from_fn_with_state(state.clone(), idempotency::idempotent));
        }
        // Inside authentication: sees who called, for the request log.
        handler = handler.route_layer(axum::middleware::from_fn(crate::observe::note_caller));
        let access = spec.access;
        handler = handler.route_layer(from_fn_with_state(
            state.clone(),
            move |state, request, next| authorize(state, access, request, next),
        ));
        router = router.route(spec.path, handler);
    }
    router
        .merge(crate::codec::router(state.clone()))
        .fallback(|| async { crate::ApiError::NotFound("route") })
        .layer(axum::middleware::map_response(
            crate::error::plain_errors_as_problems,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn declared(access: Access) -> String {
        match access {
            Access::Public => "public".into(),
            Access::Authenticated => "authenticated".into(),
            Access::Requires(permission) => permission.as_str().into(),
            Access::KeyOrPublicPage(permission) => {
                format!("{} or public page", permission.as_str())
            }
            Access::Operator => "operator".into(),
        }
    }

    #[test]
    fn the_openapi_document_describes_every_route_and_its_permission() {
        let document: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
        let paths = document["paths"].as_object().expect("paths");
        let mut missing = Vec::new();
        for spec in specs() {
            let method = spec.method.as_str().to_lowercase();
            let operation = &paths.get(spec.path).unwrap_or(&Value::Null)[&method];
            if operation.is_null() {
                missing.push(format!("{} {}", spec.method, spec.path));
                continue;
            }
            assert_eq!(
                operation["x-pidgr-permission"].as_str(),
                Some(declared(spec.access).as_str()),
                "{} {}",
                spec.method,
                spec.path
            );
            let documents_idempotency = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| {
                    p["name"].as_str().map(str::to_lowercase).as_deref() == Some("idempotency-key")
                        || p["$ref"]
                            .as_str()
                            .is_some_and(|r| r.ends_with("IdempotencyKey"))
                });
            assert_eq!(
                documents_idempotency, spec.idempotent,
                "Idempotency-Key of {} {}",
                spec.method, spec.path
            );
        }
        assert!(
            missing.is_empty(),
            "routes missing from openapi.json: {missing:?}"
        );
        let documented: usize = paths
            .values()
            .map(|item| {
                item.as_object()
                    .map_or(0, |ops| ops.keys().filter(|k| *k != "parameters").count())
            })
            .sum();
        assert_eq!(
            documented,
            specs().len(),
            "openapi.json documents routes that do not exist"
        );
    }

    #[test]
    fn every_route_path_is_unique_per_method() {
        let mut seen = std::collections::BTreeSet::new();
        for spec in specs() {
            assert!(
                seen.insert((spec.method.to_string(), spec.path)),
                "{} {}",
                spec.method,
                spec.path
            );
        }
    }
}
