//! The model repository: models stored per owner (a tenant), versioned per name, shared by
//! grants. Every query is scoped by the owner, or by a grant naming the caller.

use sqlx::Connection;

use crate::{now_ms, Rows, Store, StoreError, VersionOf, Versioned};

/// A stored model version.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ModelRow {
    pub owner_id: String,
    pub name: String,
    pub version: i64,
    pub model_sha256: String,
    /// The model JSON as uploaded (checked before it was stored).
    pub model_json: String,
    /// The model's page (JSON): shapes, splits and precision; never the weights.
    pub page_json: String,
    pub created_at: i64,
}

/// A stored model version as listings show it: its page, not its JSON (the weights, up to
/// megabytes each, are read only where they are used).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ModelListing {
    pub owner_id: String,
    pub name: String,
    pub version: i64,
    pub model_sha256: String,
    pub page_json: String,
    pub created_at: i64,
}

/// A grant of a model's use to another tenant.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ModelGrant {
    pub owner_id: String,
    pub name: String,
    pub grantee_id: String,
    pub share_layers: bool,
    pub created_at: i64,
    /// When the grantee accepted; until then the grant is an offer and gives nothing.
    pub accepted_at: Option<i64>,
}

/// What uploading did (`Existing`: the same model JSON was already stored under this name).
pub type Uploaded = Versioned<ModelRow>;

/// The columns a `ModelGrant` is read from.
macro_rules! grant_columns {
    () => {
        "owner_id, name, grantee_id, share_layers, created_at, accepted_at"
    };
}

macro_rules! model_columns {
    () => {
        "owner_id, name, version, model_sha256, model_json, page_json, created_at"
    };
}

impl Store {
    /// Stores a model as the next version of `name` (or returns the version holding the
    /// same JSON).
    pub async fn upload_model(
        &self,
        owner: &str,
        name: &str,
        sha256: &str,
        json: &str,
        page: &str,
    ) -> Result<Uploaded, StoreError> {
        let insert = concat!(
            "INSERT INTO models (",
            model_columns!(),
            ", stored_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            model_columns!()
        );
        let stored_bytes = i64::try_from(json.len() + page.len()).unwrap_or(i64::MAX);
        self.insert_next_version(
            &format!("uploads of model `{name}`"),
            (VersionOf::Model, owner, name),
            stored_bytes,
            move || self.model_by_sha(owner, name, sha256),
            move |version| async move {
                on_rows!(self, Rows::Tenant(owner), p => {
                    let mut tx = p.begin().await?;
                    let m = sqlx::query_as::<_, ModelRow>(insert)
                        .bind(owner)
                        .bind(name)
                        .bind(version)
                        .bind(sha256)
                        .bind(json)
                        .bind(page)
                        .bind(now_ms())
                        .bind(stored_bytes)
                        .fetch_one(&mut *tx)
                        .await?;
                    let target = format!("{}/{}/{}", m.owner_id, m.name, m.version);
                    commit_change!(self, tx, Some(target.as_str()));
                    Ok::<_, sqlx::Error>(m)
                })
            },
        )
        .await
    }

    /// The owner's version of `name` holding the model JSON whose SHA-256 is `sha256`.
    pub async fn model_by_sha(
        &self,
        owner: &str,
        name: &str,
        sha256: &str,
    ) -> Result<Option<ModelRow>, StoreError> {
        let q = concat!(
            "SELECT ",
            model_columns!(),
            " FROM models WHERE owner_id = $1 AND name = $2 AND model_sha256 = $3"
        );
        fetch_optional!(self, Rows::Tenant(owner), ModelRow, q, owner, name, sha256)
    }

    /// The owner's `name` at `version` (the latest when `None`).
    pub async fn model(
        &self,
        owner: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<ModelRow, StoreError> {
        let m = match version {
            Some(v) => {
                let q = concat!(
                    "SELECT ",
                    model_columns!(),
                    " FROM models WHERE owner_id = $1 AND name = $2 AND version = $3"
                );
                fetch_optional!(self, Rows::Tenant(owner), ModelRow, q, owner, name, v)?
            }
            None => {
                let q = concat!(
                    "SELECT ",
                    model_columns!(),
                    " FROM models WHERE owner_id = $1 AND name = $2 \
                     ORDER BY version DESC LIMIT 1"
                );
                fetch_optional!(self, Rows::Tenant(owner), ModelRow, q, owner, name)?
            }
        };
        m.ok_or(StoreError::NotFound)
    }

    /// The model versions `tenant` owns or was granted, by owner, name and version.
    pub async fn list_models(&self, tenant: &str) -> Result<Vec<ModelListing>, StoreError> {
        let q = "SELECT m.owner_id, m.name, m.version, m.model_sha256, \
                 m.page_json, m.created_at FROM models m WHERE m.owner_id = $1 OR EXISTS \
                 (SELECT 1 FROM model_grants g WHERE g.owner_id = m.owner_id \
                 AND g.name = m.name AND g.grantee_id = $1 AND g.accepted_at IS NOT NULL) \
                 ORDER BY m.owner_id, m.name, m.version";
        Ok(
            on_rows!(self, Rows::Tenant(tenant), p => sqlx::query_as::<_, ModelListing>(q).bind(tenant).fetch_all(p).await?),
        )
    }

    /// Grants (or updates the grant of) the owner's model `name` to `grantee`.
    pub async fn grant_model(
        &self,
        owner: &str,
        name: &str,
        grantee: &str,
        share_layers: bool,
    ) -> Result<ModelGrant, StoreError> {
        self.model(owner, name, None).await?;
        let q = concat!(
            "INSERT INTO model_grants (owner_id, name, grantee_id, share_layers, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (owner_id, name, grantee_id) \
             DO UPDATE SET share_layers = excluded.share_layers RETURNING ",
            grant_columns!()
        );
        let r: Result<ModelGrant, sqlx::Error> = on_rows!(self, Rows::Tenant(owner), p => {
            let mut tx = p.begin().await?;
            match sqlx::query_as::<_, ModelGrant>(q)
                .bind(owner)
                .bind(name)
                .bind(grantee)
                .bind(share_layers)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await
            {
                Ok(g) => {
                    commit_change!(self, tx, None);
                    Ok(g)
                }
                Err(e) => Err(e),
            }
        });
        match r {
            Ok(g) => Ok(g),
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                Err(StoreError::NotFound)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Revokes a grant.
    pub async fn revoke_model(
        &self,
        owner: &str,
        name: &str,
        grantee: &str,
    ) -> Result<(), StoreError> {
        let q = "DELETE FROM model_grants WHERE owner_id = $1 AND name = $2 AND grantee_id = $3";
        change_some!(self, Rows::Tenant(owner), None, q, owner, name, grantee).map(|_| ())
    }

    /// The grant of the owner's `name` to `grantee`, if any (accepted or not).
    pub async fn model_grant(
        &self,
        owner: &str,
        name: &str,
        grantee: &str,
    ) -> Result<Option<ModelGrant>, StoreError> {
        let q = concat!(
            "SELECT ",
            grant_columns!(),
            " FROM model_grants WHERE owner_id = $1 AND name = $2 AND grantee_id = $3"
        );
        fetch_optional!(
            self,
            Rows::Tenant(owner),
            ModelGrant,
            q,
            owner,
            name,
            grantee
        )
    }

    /// The grantee accepts an offered grant (again: nothing changes).
    pub async fn accept_model_grant(
        &self,
        owner: &str,
        name: &str,
        grantee: &str,
    ) -> Result<ModelGrant, StoreError> {
        let q = concat!(
            "UPDATE model_grants SET accepted_at = COALESCE(accepted_at, $4) \
             WHERE owner_id = $1 AND name = $2 AND grantee_id = $3 RETURNING ",
            grant_columns!()
        );
        change_row!(
            self,
            Rows::Tenant(grantee),
            ModelGrant,
            None,
            q,
            owner,
            name,
            grantee,
            now_ms()
        )?
        .ok_or(StoreError::NotFound)
    }

    /// Grants offered to `grantee` that it has not accepted.
    pub async fn model_offers(&self, grantee: &str) -> Result<Vec<ModelGrant>, StoreError> {
        let q = concat!(
            "SELECT ",
            grant_columns!(),
            " FROM model_grants WHERE grantee_id = $1 AND accepted_at IS NULL \
             ORDER BY owner_id, name"
        );
        Ok(
            on_rows!(self, Rows::Tenant(grantee), p => sqlx::query_as::<_, ModelGrant>(q)
            .bind(grantee)
            .fetch_all(p)
            .await?),
        )
    }

    /// The grants of the owner's `name`.
    pub async fn model_grants(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Vec<ModelGrant>, StoreError> {
        let q = concat!(
            "SELECT ",
            grant_columns!(),
            " FROM model_grants WHERE owner_id = $1 AND name = $2 ORDER BY grantee_id"
        );
        Ok(
            on_rows!(self, Rows::Tenant(owner), p => sqlx::query_as::<_, ModelGrant>(q)
            .bind(owner)
            .bind(name)
            .fetch_all(p)
            .await?),
        )
    }
}
