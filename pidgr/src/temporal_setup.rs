//! `pidgr temporal setup`: registers the search attributes Pidgr sets on the configured namespace
//! (a dev server, a self-hosted cluster or Temporal Cloud), through Temporal's operator service.
//! Idempotent: attributes already registered with the right type are left alone, so it is run
//! on every deploy without thinking.

use std::collections::HashMap;

use anyhow::bail;
use temporalio_client::tonic::{Code, Request};
use temporalio_common::protos::temporal::api::operatorservice::v1::AddSearchAttributesRequest;

use crate::check::{self, search_attribute_problems, type_name, wanted_search_attributes};

/// One line per search attribute: what was there and what was done.
pub async fn setup() -> anyhow::Result<Vec<String>> {
    let (connection, options, target) = check::connect_temporal()
        .await
        .map_err(anyhow::Error::msg)?;
    let namespace = options.namespace.clone();
    let registered = check::list_search_attributes(&connection, &namespace)
        .await
        .map_err(|status| anyhow::anyhow!(check::rpc_fix(&status, &namespace, "list")))?;
    let (_, mistyped) = search_attribute_problems(&registered);
    if !mistyped.is_empty() {
        bail!(
            "on namespace {namespace:?} at {target}, {}: a search attribute's type cannot be \
             changed; remove it (`temporal operator search-attribute remove --name …`) and run \
             this again",
            mistyped.join(", ")
        );
    }
    let missing: HashMap<String, i32> = wanted_search_attributes()
        .into_iter()
        .filter(|(name, _)| !registered.contains_key(*name))
        .map(|(name, kind)| (name.to_owned(), kind as i32))
        .collect();
    if !missing.is_empty() {
        let added = connection
            .operator_service()
            .add_search_attributes(Request::new(AddSearchAttributesRequest {
                search_attributes: missing.clone(),
                namespace: namespace.clone(),
            }))
            .await;
        match added {
            Ok(_) => {}
            // Another `setup` (or an operator) got there first: the check below says whether
            // what is there now is right.
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => bail!(check::rpc_fix(
                &status,
                &namespace,
                "add search attributes to"
            )),
        }
    }
    Ok(wanted_search_attributes()
        .into_iter()
        .map(|(name, kind)| {
            let done = if missing.contains_key(name) {
                "registered"
            } else {
                "already registered"
            };
            format!(
                "{name} ({}): {done} on namespace {namespace:?} at {target}",
                type_name(kind as i32)
            )
        })
        .collect())
}
