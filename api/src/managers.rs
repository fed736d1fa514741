//! Members' managers at the HTTP edge: the `manager_id` / `manager_external_id` fields that
//! every member write takes, their refusals as 422s pointing at the field, and a manager's
//! reports (`GET /v1/members/{member_id}/reports`).
//!
//! On every write a manager is named by id (`manager_id`) or by external id
//! (`manager_external_id`), never both; `null` removes the manager, and a field left out keeps
//! the one there is (a new member has none).

use axum::Json;
use axum::extract::{Path, Query, State};
use pidgr_store::{ManagerProblem, ManagerRef, StoreError, manager_loop_message};
use pidgr_workflows::definition::Problem;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::OrNotFound;
use crate::input::{Name, Page};
use crate::{ApiError, AppState, Caller};

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>`: a field
/// left out stays `None`, `null` is `Some(None)`, a value is `Some(Some(value))`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub(crate) const BY_ID: &str = "manager_id";
pub(crate) const BY_EXTERNAL_ID: &str = "manager_external_id";

/// The manager a body names, from its two fields; `Err` (the field to point at, the problem)
/// when both are given.
pub(crate) fn manager_ref(
    by_id: &Option<Option<Name>>,
    by_external_id: &Option<Option<Name>>,
) -> Result<ManagerRef, (&'static str, String)> {
    Ok(match (by_id, by_external_id) {
        (Some(_), Some(_)) => {
            return Err((
                BY_EXTERNAL_ID,
                format!("name the manager by {BY_ID} or by {BY_EXTERNAL_ID}, not both"),
            ));
        }
        (None, None) => ManagerRef::Keep,
        (Some(None), None) | (None, Some(None)) => ManagerRef::Clear,
        (Some(Some(id)), None) => ManagerRef::Id(id.0.clone()),
        (None, Some(Some(external_id))) => ManagerRef::ExternalId(external_id.0.clone()),
    })
}

/// The field a refusal about this reference points at.
pub(crate) fn field_of(manager: &ManagerRef) -> &'static str {
    match manager {
        ManagerRef::ExternalId(_) => BY_EXTERNAL_ID,
        ManagerRef::Keep | ManagerRef::Clear | ManagerRef::Id(_) => BY_ID,
    }
}

/// What to tell the client about one refused manager.
pub(crate) fn detail(problem: &ManagerProblem) -> String {
    match problem {
        ManagerProblem::Unknown(reference) => {
            format!("no member of this organisation is {reference:?}")
        }
        ManagerProblem::OwnManager => "a member cannot be their own manager".to_owned(),
        ManagerProblem::Cycle(chain) => manager_loop_message(chain),
    }
}

/// The store's refusal of a manager as a 422 at `pointer` (one member written); anything else
/// as it would be.
pub(crate) fn refused_at(error: StoreError, pointer: &str) -> ApiError {
    match error {
        StoreError::Manager(errors) => ApiError::Invalid(
            errors
                .iter()
                .map(|error| Problem {
                    pointer: pointer.to_owned(),
                    message: detail(&error.problem),
                })
                .collect(),
        ),
        StoreError::NotFound => ApiError::NotFound("member"),
        other => other.into(),
    }
}

/// The id of the manager a create or update names (resolving an external id), `None` for no
/// manager; a member the organisation does not have is a 422 at the field.
pub(crate) async fn resolve(
    state: &AppState,
    caller: &Caller,
    manager: &ManagerRef,
) -> Result<Option<String>, ApiError> {
    match manager {
        ManagerRef::Keep | ManagerRef::Clear => Ok(None),
        ManagerRef::Id(id) => Ok(Some(id.clone())),
        ManagerRef::ExternalId(external_id) => state
            .store
            .find_member_by_external_id(&caller.org_id, external_id)
            .await?
            .map(|member| Some(member.id))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("/{BY_EXTERNAL_ID}"),
                    detail(&ManagerProblem::Unknown(external_id.clone())),
                )
            }),
    }
}

/// GET /v1/members/{member_id}/reports: a page of the members whose manager this one is.
pub async fn reports(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let members = state
        .store
        .list_reports(&caller.org_id, &member_id, page.after(), page.limit())
        .await
        .or_not_found("member")?;
    Ok(page.respond(members, |m| m.id.clone()))
}
