//! Message templates: a named template per organisation with append-only versions, so a
//! campaign can pin the exact title and body it was sent with.

use crate::versioned::{Head, Versioned};
use crate::{Result, Store, StoreError, time};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

const TEMPLATES: Versioned = Versioned {
    heads: "templates",
    versions: "template_versions",
    parent: "template_id",
    noun: "template",
    payload: &["title", "body", "variables"],
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub latest_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TemplateVersion {
    pub template_id: String,
    pub version: i64,
    pub title: String,
    pub body: String,
    /// The variable names the title and body use, sorted, each once.
    pub variables: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Head> for Template {
    fn from(head: Head) -> Self {
        Template {
            id: head.id,
            name: head.name,
            latest_version: head.latest_version,
            created_at: head.created_at,
            updated_at: head.updated_at,
        }
    }
}

fn template_version(row: &AnyRow) -> Result<TemplateVersion> {
    let variables: String = row.try_get("variables")?;
    Ok(TemplateVersion {
        template_id: row.try_get("parent_id")?,
        version: row.try_get("version")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        variables: serde_json::from_str(&variables)
            .map_err(|e| StoreError::Corrupt(format!("template variables: {e}")))?,
        created_at: time(row, "created_at")?,
    })
}

/// The version payload as stored: variables sorted and de-duplicated (the schema's promise).
fn payload(title: &str, body: &str, variables: &[String]) -> Vec<String> {
    let mut variables = variables.to_vec();
    variables.sort();
    variables.dedup();
    let variables = serde_json::to_string(&variables).expect("a list of strings serialises");
    vec![title.to_owned(), body.to_owned(), variables]
}

impl Store {
    /// Creates a template with its version 1. `Conflict` when the organisation already has a
    /// template with this name.
    pub async fn create_template(
        &self,
        org_id: &str,
        name: &str,
        title: &str,
        body: &str,
        variables: &[String],
    ) -> Result<(Template, TemplateVersion)> {
        let (head, row) = self
            .create_versioned(&TEMPLATES, org_id, name, &payload(title, body, variables))
            .await?;
        Ok((head.into(), template_version(&row)?))
    }

    /// Adds the next version (latest + 1); earlier versions never change.
    pub async fn append_template_version(
        &self,
        org_id: &str,
        template_id: &str,
        title: &str,
        body: &str,
        variables: &[String],
    ) -> Result<TemplateVersion> {
        let row = self
            .append_versioned(
                &TEMPLATES,
                org_id,
                template_id,
                &payload(title, body, variables),
            )
            .await?;
        template_version(&row)
    }

    pub async fn get_template(&self, org_id: &str, template_id: &str) -> Result<Template> {
        Ok(self.get_head(&TEMPLATES, org_id, template_id).await?.into())
    }

    /// Templates with an id after `after` ("" = from the start), oldest first.
    pub async fn list_templates(
        &self,
        org_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Template>> {
        let heads = self.list_heads(&TEMPLATES, org_id, after, limit).await?;
        Ok(heads.into_iter().map(Template::from).collect())
    }

    pub async fn get_template_version(
        &self,
        org_id: &str,
        template_id: &str,
        version: i64,
    ) -> Result<TemplateVersion> {
        let row = self
            .get_version_row(&TEMPLATES, org_id, template_id, version)
            .await?;
        template_version(&row)
    }

    /// Versions numbered above `after` (0 = from the first), in order. `NotFound` when the
    /// template is not this organisation's.
    pub async fn list_template_versions(
        &self,
        org_id: &str,
        template_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TemplateVersion>> {
        self.list_version_rows(&TEMPLATES, org_id, template_id, after, limit)
            .await?
            .iter()
            .map(template_version)
            .collect()
    }
}
