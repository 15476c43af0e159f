//! Functions deployed by tenants: versioned circuits, addressed by name and version or by
//! content id. Versions count up from 1 per tenant and name; deploying a circuit that a
//! version already holds returns that version.

use sqlx::Connection;

use crate::{now_ms, Rows, Store, StoreError, VersionOf, Versioned};

/// A deployed function version.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Function {
    pub tenant_id: String,
    pub name: String,
    pub version: i64,
    pub circuit_id: String,
    /// The canonical circuit JSON (validated before it was stored).
    pub circuit_json: String,
    pub cost_cu: i64,
    pub created_at: i64,
}

/// What a deployed version costs and looks like, computed once at deploy from the circuit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionFacts {
    pub cost_cu: i64,
    pub ops: i64,
    /// `tfhe` or `bfv`.
    pub scheme: String,
    /// The signature line (`xs: u8[3] -> s: u16`).
    pub signature: String,
}

/// A deployed version as listings show it: no circuit JSON. The facts are `None` for
/// versions deployed before they were stored (read those with [`Store::function`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FunctionListing {
    pub name: String,
    pub version: i64,
    pub circuit_id: String,
    pub cost_cu: i64,
    pub created_at: i64,
    pub ops: Option<i64>,
    pub scheme: Option<String>,
    pub signature: Option<String>,
}

/// What deploying did (`Existing`: the same circuit was already deployed under this name).
pub type Deployed = Versioned<Function>;

/// The columns a `Function` is read from.
macro_rules! function_columns {
    () => {
        "tenant_id, name, version, circuit_id, circuit_json, cost_cu, created_at"
    };
}

macro_rules! select_functions {
    () => {
        concat!("SELECT ", function_columns!(), " FROM functions ")
    };
}

macro_rules! fetch_function {
    ($store:expr, $rows:expr, $query:expr, $($arg:expr),*) => {
        fetch_optional!($store, $rows, Function, $query, $($arg),*)
    };
}

impl Store {
    /// Deploys a circuit as the next version of `name` (or returns the version that holds
    /// the same circuit).
    pub async fn deploy_function(
        &self,
        tenant: &str,
        name: &str,
        circuit_id: &str,
        circuit_json: &str,
        facts: &FunctionFacts,
    ) -> Result<Deployed, StoreError> {
        let q = concat!(
            "INSERT INTO functions (",
            function_columns!(),
            ", stored_bytes, ops, scheme, signature) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
            function_columns!()
        );
        let stored_bytes = i64::try_from(circuit_json.len()).unwrap_or(i64::MAX);
        self.insert_next_version(
            &format!("deployments of `{name}`"),
            (VersionOf::Function, tenant, name),
            stored_bytes,
            || self.function_by_circuit(tenant, name, circuit_id),
            move |version| async move {
                on_rows!(self, Rows::Tenant(tenant), p => {
                    let mut tx = p.begin().await?;
                    let f = sqlx::query_as::<_, Function>(q)
                        .bind(tenant)
                        .bind(name)
                        .bind(version)
                        .bind(circuit_id)
                        .bind(circuit_json)
                        .bind(facts.cost_cu)
                        .bind(now_ms())
                        .bind(stored_bytes)
                        .bind(facts.ops)
                        .bind(&facts.scheme)
                        .bind(&facts.signature)
                        .fetch_one(&mut *tx)
                        .await?;
                    commit_change!(self, tx, None);
                    Ok::<_, sqlx::Error>(f)
                })
            },
        )
        .await
    }

    /// The version of the tenant's `name` that holds circuit `circuit_id`.
    pub async fn function_by_circuit(
        &self,
        tenant: &str,
        name: &str,
        circuit_id: &str,
    ) -> Result<Option<Function>, StoreError> {
        let q = concat!(
            select_functions!(),
            "WHERE tenant_id = $1 AND name = $2 AND circuit_id = $3"
        );
        fetch_function!(self, Rows::Tenant(tenant), q, tenant, name, circuit_id)
    }

    /// A version of the tenant's `name`, the latest when `version` is `None`.
    pub async fn function(
        &self,
        tenant: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Function, StoreError> {
        let f = match version {
            Some(v) => fetch_function!(
                self,
                Rows::Tenant(tenant),
                concat!(
                    select_functions!(),
                    "WHERE tenant_id = $1 AND name = $2 AND version = $3"
                ),
                tenant,
                name,
                v
            )?,
            None => fetch_function!(
                self,
                Rows::Tenant(tenant),
                concat!(
                    select_functions!(),
                    "WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1"
                ),
                tenant,
                name
            )?,
        };
        f.ok_or(StoreError::NotFound)
    }

    /// Every version of every function the tenant deployed, by name then version.
    pub async fn list_functions(&self, tenant: &str) -> Result<Vec<FunctionListing>, StoreError> {
        let q = "SELECT name, version, circuit_id, cost_cu, created_at, ops, scheme, signature \
                 FROM functions WHERE tenant_id = $1 ORDER BY name, version";
        Ok(
            on_rows!(self, Rows::Tenant(tenant), p => sqlx::query_as::<_, FunctionListing>(q)
            .bind(tenant)
            .fetch_all(p)
            .await?),
        )
    }

    /// Deletes one version of the tenant's `name`, or all of them; returns how many went.
    pub async fn delete_function(
        &self,
        tenant: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<u64, StoreError> {
        let q = "DELETE FROM functions WHERE tenant_id = $1 AND name = $2 \
                 AND ($3 = 0 OR version = $3)";
        change_some!(
            self,
            Rows::Tenant(tenant),
            None,
            q,
            tenant,
            name,
            version.unwrap_or(0)
        )
    }
}
