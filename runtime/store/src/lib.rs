//! voxide-store: the control plane's source of truth — tenants, API keys, flows and their
//! immutable versions, aliases and routes — in SQLite (the default, one file, zero setup) or
//! Postgres (`postgres://…`, several nodes), through one set of queries (sqlx `Any`) and the
//! same migrations (`migrations/sqlite`, `migrations/postgres`).
//!
//! Invariants, stated as absences:
//! - No query reads or writes another tenant's rows: every function that touches tenant data
//!   takes the tenant id and puts it in the `WHERE` clause; "not yours" and "does not exist"
//!   are the same [`StoreError::NotFound`].
//! - No API key secret is stored: only its SHA-256 (keys are 160 random bits, so a fast hash
//!   is enough) and a non-secret prefix for listings.
//! - No version changes after it is written: a version's digest, size, world and manifest are
//!   insert-only; uploading the same bytes again returns the existing version.
//! - Nothing is written half: every multi-row change runs in one transaction.

mod activity;
mod dialer;
mod kb;

pub use activity::{
    Activity, Cdr, CdrFilter, Delivery, DueDelivery, Event, NewEvent, RecordingMeta, Webhook,
};
pub use dialer::{
    Attempt, AttemptEnd, Campaign, CampaignCounts, DncEntry, Lead, LeadProgress, NewAttempt,
    NewCampaign, NewLead, NumberHistory,
};
pub use kb::KbDocument;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};

/// Unix time in milliseconds.
pub type Millis = i64;

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such object for this tenant (or another tenant's: no existence leak).
    #[error("{0} not found")]
    NotFound(String),
    /// The change conflicts with what is stored (a pattern already routed, a version in use).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (a bad pattern, an empty target list).
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What a key may do: `read` lists and shows, `deploy` also uploads flows and moves aliases
/// and routes, `admin` also manages keys and webhooks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Deploy,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Deploy => "deploy",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "deploy" => Some(Role::Deploy),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether a key with this role may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// Who is calling: the tenant and role of an authenticated key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub key_id: String,
    pub role: Role,
}

/// A key as created: the secret is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub tenant_id: String,
    pub role: Role,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

/// An immutable, content-addressed version of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowVersion {
    pub flow: String,
    pub version: i64,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    pub size: i64,
    /// The WIT world it targets, e.g. `voxide:flow/handler@0.1.0`.
    pub world: String,
    /// The manifest (TOML text) it was uploaded with.
    pub manifest: String,
    pub created_at: Millis,
}

/// What an upload brings, validated by the caller (component, world, compile).
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub digest: String,
    pub world: String,
    pub manifest: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alias {
    pub flow: String,
    pub name: String,
    pub version: i64,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowSummary {
    pub name: String,
    pub versions: i64,
    pub latest: Option<i64>,
    pub aliases: Vec<Alias>,
    pub created_at: Millis,
}

/// Where a route sends a share of its calls: a flow by alias (followed at call time) or by
/// pinned version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteTarget {
    pub flow: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Relative share of new calls (default 100).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    100
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Route {
    pub id: String,
    pub tenant_id: String,
    /// A called user: exact (`+15550100`, `sales`), a prefix (`+1555*`) or `*`.
    pub pattern: String,
    /// Among prefix routes, higher first.
    pub priority: i64,
    pub targets: Vec<RouteTarget>,
    pub vars: BTreeMap<String, String>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewRoute {
    pub pattern: String,
    #[serde(default)]
    pub priority: i64,
    pub targets: Vec<RouteTarget>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// Routes with what they point to, as of one routing generation.
#[derive(Debug, Clone, Default)]
pub struct RoutingSnapshot {
    pub generation: i64,
    pub routes: Vec<Route>,
    /// (tenant, flow, alias) → version.
    pub aliases: std::collections::HashMap<(String, String, String), i64>,
    /// (tenant, flow, version) → the version.
    pub versions: std::collections::HashMap<(String, String, i64), FlowVersion>,
}

impl RoutingSnapshot {
    /// The version a route target runs, and how it was chosen (` via live`).
    pub fn resolve(&self, tenant: &str, target: &RouteTarget) -> Result<(&FlowVersion, String)> {
        let key = |a: &str| (tenant.to_owned(), target.flow.clone(), a.to_owned());
        let (version, via) = match (&target.alias, target.version) {
            (Some(alias), _) => (
                *self.aliases.get(&key(alias)).ok_or_else(|| {
                    StoreError::NotFound(format!("alias {}@{alias}", target.flow))
                })?,
                format!(" via {alias}"),
            ),
            (None, Some(v)) => (v, String::new()),
            (None, None) => return Err(StoreError::Invalid("no alias or version".into())),
        };
        let found = self.versions.get(&(tenant.to_owned(), target.flow.clone(), version));
        let v = found
            .ok_or_else(|| StoreError::NotFound(format!("version {} v{version}", target.flow)))?;
        Ok((v, via))
    }
}

/// The control-plane store. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

fn now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `bytes` random bytes as lowercase hex, from the OS's CSPRNG.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // The OS has no entropy source: refuse to make guessable secrets.
        panic!("no OS random number generator available");
    }
    hex::encode(buf)
}

fn key_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Flow and alias names: 1–64 of `a-z 0-9 - _ .`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Route patterns: `*`, or a called user (`+`, letters, digits, `-_.`) optionally ending in `*`.
pub fn valid_pattern(pattern: &str) -> bool {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    pattern == "*"
        || (!body.is_empty()
            && body.len() <= 128
            && body.chars().all(|c| c.is_ascii_alphanumeric() || "+-_.".contains(c)))
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `url`: `sqlite://path` (created
    /// with its directory) or `postgres://user@host:port/db`.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Invalid(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://…"
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            // Readers (the API) never wait for the writer (calls' CDRs and events); the mode is
            // stored in the file. Commits stay fully synchronous: a crash loses nothing
            // committed.
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        }
        match backend {
            Backend::Sqlite => sqlx::migrate!("../../migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("../../migrations/postgres").run(&pool).await?,
        }
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- tenants and keys ----

    /// On an empty store: creates the `default` tenant and an admin key, and returns the key
    /// (its secret is shown once). `None` when tenants exist (or another node just made one).
    pub async fn bootstrap(&self) -> Result<Option<(Tenant, NewKey)>> {
        let count: i64 =
            sqlx::query("SELECT COUNT(*) FROM tenants").fetch_one(&self.pool).await?.try_get(0)?;
        if count > 0 {
            return Ok(None);
        }
        let tenant = match self.create_tenant("default").await {
            Ok(t) => t,
            Err(StoreError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let key =
            self.create_key(&tenant.id, "admin (created on first start)", Role::Admin).await?;
        Ok(Some((tenant, key)))
    }

    pub async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!("tenant name {name:?}: use a-z 0-9 - _ .")));
        }
        let tenant = Tenant {
            id: format!("tn_{}", random_hex(8)),
            name: name.to_owned(),
            created_at: now(),
        };
        let inserted =
            sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(&tenant.id)
                .bind(&tenant.name)
                .bind(tenant.created_at)
                .execute(&self.pool)
                .await;
        match inserted {
            Ok(_) => Ok(tenant),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("tenant {name:?} exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The tenant called `name`, if there is one.
    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Tenant {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .transpose()
    }

    /// A new key for `tenant_id`; the returned secret is the only copy.
    pub async fn create_key(&self, tenant_id: &str, name: &str, role: Role) -> Result<NewKey> {
        let secret = format!("vox_{}", random_hex(20));
        let key = NewKey {
            id: format!("key_{}", random_hex(8)),
            tenant_id: tenant_id.to_owned(),
            role,
            secret,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, role, prefix, hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(tenant_id)
        .bind(name)
        .bind(role.as_str())
        .bind(&key.secret[..12])
        .bind(key_hash(&key.secret))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(key)
    }

    /// The tenant and role of a key secret, if it is a live key.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>> {
        if !secret.starts_with("vox_") || secret.len() > 128 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT id, tenant_id, role FROM api_keys WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash(secret))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role")?;
        Ok(Role::parse(&role).map(|role| Principal {
            tenant_id: row.try_get("tenant_id").unwrap_or_default(),
            key_id: row.try_get("id").unwrap_or_default(),
            role,
        }))
    }

    // ---- flows and versions ----

    /// Stores a version of `flow` (creating the flow). Identical bytes return the existing
    /// version with `false`.
    pub async fn create_version(
        &self,
        tenant_id: &str,
        flow: &str,
        new: NewVersion,
    ) -> Result<(FlowVersion, bool)> {
        if !valid_name(flow) {
            return Err(StoreError::Invalid(format!(
                "flow name {flow:?}: 1-64 of a-z 0-9 - _ ., starting with a letter or digit"
            )));
        }
        let mut tx = self.pool.begin().await?;
        if let Some(existing) = version_by_digest(&mut tx, tenant_id, flow, &new.digest).await? {
            return Ok((existing, false));
        }
        // One name holds one kind of component: a route or a campaign naming it gets the kind
        // it expects whichever version an alias moves to.
        let held: Option<String> = sqlx::query(
            "SELECT world FROM flow_versions WHERE tenant_id = $1 AND flow = $2 LIMIT 1",
        )
        .bind(tenant_id)
        .bind(flow)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        if let Some(held) = held.filter(|w| *w != new.world) {
            return Err(StoreError::Conflict(format!(
                "{flow} holds {held} components; this one exports {}: upload it under another name",
                new.world
            )));
        }
        let created_at = now();
        sqlx::query(
            "INSERT INTO flows (tenant_id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(flow)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO components (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(&new.digest)
        .bind(&new.bytes)
        .execute(&mut *tx)
        .await?;
        let next: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM flow_versions WHERE tenant_id = $1 AND flow = $2",
        )
        .bind(tenant_id)
        .bind(flow)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let version = FlowVersion {
            flow: flow.to_owned(),
            version: next,
            digest: new.digest,
            size: new.bytes.len() as i64,
            world: new.world,
            manifest: new.manifest,
            created_at,
        };
        let inserted = sqlx::query(
            "INSERT INTO flow_versions (tenant_id, flow, version, digest, size, world, manifest, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(tenant_id)
        .bind(flow)
        .bind(version.version)
        .bind(&version.digest)
        .bind(version.size)
        .bind(&version.world)
        .bind(&version.manifest)
        .bind(version.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "another upload of {flow:?} was stored at the same moment: retry"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok((version, true))
    }

    pub async fn list_flows(&self, tenant_id: &str) -> Result<Vec<FlowSummary>> {
        let rows = sqlx::query(
            "SELECT f.name, f.created_at, COUNT(v.version) AS versions, MAX(v.version) AS latest \
             FROM flows f LEFT JOIN flow_versions v ON v.tenant_id = f.tenant_id AND v.flow = f.name \
             WHERE f.tenant_id = $1 GROUP BY f.name, f.created_at ORDER BY f.name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        let mut aliases = self.all_aliases(tenant_id).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get("name")?;
            let (mine, rest): (Vec<Alias>, Vec<Alias>) =
                aliases.into_iter().partition(|a| a.flow == name);
            aliases = rest;
            out.push(FlowSummary {
                versions: row.try_get("versions")?,
                latest: row.try_get("latest")?,
                created_at: row.try_get("created_at")?,
                aliases: mine,
                name,
            });
        }
        Ok(out)
    }

    /// Versions of a flow, oldest first. `NotFound` if the tenant has no such flow.
    pub async fn list_versions(&self, tenant_id: &str, flow: &str) -> Result<Vec<FlowVersion>> {
        self.flow_exists(tenant_id, flow).await?;
        let rows = sqlx::query(
            "SELECT flow, version, digest, size, world, manifest, created_at FROM flow_versions \
             WHERE tenant_id = $1 AND flow = $2 ORDER BY version",
        )
        .bind(tenant_id)
        .bind(flow)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_row).collect()
    }

    pub async fn version(&self, tenant_id: &str, flow: &str, version: i64) -> Result<FlowVersion> {
        let row = sqlx::query(
            "SELECT flow, version, digest, size, world, manifest, created_at FROM flow_versions \
             WHERE tenant_id = $1 AND flow = $2 AND version = $3",
        )
        .bind(tenant_id)
        .bind(flow)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(version_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("{flow} version {version}")))
    }

    /// The component bytes of a digest.
    pub async fn component(&self, digest: &str) -> Result<Vec<u8>> {
        let row = sqlx::query("SELECT bytes FROM components WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(row.try_get("bytes")?),
            None => Err(StoreError::NotFound(format!("component {digest}"))),
        }
    }

    /// Deletes a version nothing uses: refused while an alias points at it or a route names
    /// it (directly or through an alias).
    pub async fn delete_version(&self, tenant_id: &str, flow: &str, version: i64) -> Result<()> {
        let v = self.version(tenant_id, flow, version).await?;
        let aliases: Vec<String> = self
            .all_aliases(tenant_id)
            .await?
            .into_iter()
            .filter(|a| a.flow == flow && a.version == version)
            .map(|a| a.name)
            .collect();
        let routed: Vec<String> = self
            .routes(tenant_id)
            .await?
            .into_iter()
            .filter(|r| {
                r.targets.iter().any(|t| {
                    t.flow == flow
                        && (t.version == Some(version)
                            || t.alias.as_ref().is_some_and(|a| aliases.contains(a)))
                })
            })
            .map(|r| r.pattern)
            .collect();
        if !routed.is_empty() {
            return Err(StoreError::Conflict(format!(
                "{flow} version {version} is in use by route(s) {}",
                routed.join(", ")
            )));
        }
        if !aliases.is_empty() {
            return Err(StoreError::Conflict(format!(
                "{flow} version {version} is what alias(es) {} point to: move them first",
                aliases.join(", ")
            )));
        }
        // Campaigns pin strategies and flows as `NAME@VERSION` (the strategy, or a quoted
        // string in the settings): one not finished keeps its version.
        let pinned = format!("{flow}@{version}");
        let campaigns: Vec<String> = sqlx::query(
            "SELECT name FROM campaigns WHERE tenant_id = $1 AND state <> 'finished' \
             AND (strategy = $2 OR settings LIKE $3) ORDER BY name",
        )
        .bind(tenant_id)
        .bind(&pinned)
        .bind(format!("%\"{pinned}\"%"))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        if !campaigns.is_empty() {
            return Err(StoreError::Conflict(format!(
                "{pinned} is pinned by campaign(s) {} (not finished)",
                campaigns.join(", ")
            )));
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM flow_versions WHERE tenant_id = $1 AND flow = $2 AND version = $3",
        )
        .bind(tenant_id)
        .bind(flow)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        // The bytes go when no version (of any tenant) uses them any more.
        sqlx::query(
            "DELETE FROM components WHERE digest = $1 \
             AND NOT EXISTS (SELECT 1 FROM flow_versions WHERE digest = $1)",
        )
        .bind(&v.digest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn flow_exists(&self, tenant_id: &str, flow: &str) -> Result<()> {
        let row = sqlx::query("SELECT 1 FROM flows WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(flow)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|_| ()).ok_or_else(|| StoreError::NotFound(format!("flow {flow}")))
    }

    // ---- aliases ----

    /// Points `alias` of `flow` at `version` (creating or moving it, atomically).
    pub async fn set_alias(
        &self,
        tenant_id: &str,
        flow: &str,
        alias: &str,
        version: i64,
    ) -> Result<Alias> {
        if !valid_name(alias) {
            return Err(StoreError::Invalid(format!("alias name {alias:?}: use a-z 0-9 - _ .")));
        }
        self.version(tenant_id, flow, version).await?;
        let updated_at = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO aliases (tenant_id, flow, name, version, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, flow, name) DO UPDATE SET version = excluded.version, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(flow)
        .bind(alias)
        .bind(version)
        .bind(updated_at)
        .execute(&mut *tx)
        .await?;
        bump_routing(&mut tx).await?;
        tx.commit().await?;
        Ok(Alias { flow: flow.to_owned(), name: alias.to_owned(), version, updated_at })
    }

    pub async fn aliases(&self, tenant_id: &str, flow: &str) -> Result<Vec<Alias>> {
        self.flow_exists(tenant_id, flow).await?;
        Ok(self.all_aliases(tenant_id).await?.into_iter().filter(|a| a.flow == flow).collect())
    }

    async fn all_aliases(&self, tenant_id: &str) -> Result<Vec<Alias>> {
        let rows = sqlx::query(
            "SELECT flow, name, version, updated_at FROM aliases WHERE tenant_id = $1 ORDER BY flow, name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Alias {
                    flow: r.try_get("flow")?,
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// The version an alias points to now.
    pub async fn resolve_alias(&self, tenant_id: &str, flow: &str, alias: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT version FROM aliases WHERE tenant_id = $1 AND flow = $2 AND name = $3",
        )
        .bind(tenant_id)
        .bind(flow)
        .bind(alias)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(row.try_get("version")?),
            None => Err(StoreError::NotFound(format!("alias {flow}@{alias}"))),
        }
    }

    // ---- routes ----

    pub async fn add_route(&self, tenant_id: &str, new: NewRoute) -> Result<Route> {
        if !valid_pattern(&new.pattern) {
            return Err(StoreError::Invalid(format!(
                "route pattern {:?}: a called user (+, letters, digits, - _ .), optionally ending in *, or *",
                new.pattern
            )));
        }
        if new.targets.is_empty() || new.targets.iter().all(|t| t.weight == 0) {
            return Err(StoreError::Invalid("a route needs a target with a weight above 0".into()));
        }
        for t in &new.targets {
            match (&t.alias, t.version) {
                (Some(alias), None) => {
                    let v = self.resolve_alias(tenant_id, &t.flow, alias).await?;
                    routable(&self.version(tenant_id, &t.flow, v).await?)?;
                }
                (None, Some(v)) => {
                    routable(&self.version(tenant_id, &t.flow, v).await?)?;
                }
                _ => {
                    return Err(StoreError::Invalid(format!(
                        "target {:?}: give exactly one of alias or version",
                        t.flow
                    )));
                }
            }
        }
        let route = Route {
            id: format!("rt_{}", random_hex(8)),
            tenant_id: tenant_id.to_owned(),
            pattern: new.pattern,
            priority: new.priority,
            targets: new.targets,
            vars: new.vars,
            created_at: now(),
        };
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO routes (id, tenant_id, pattern, priority, targets, vars, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&route.id)
        .bind(tenant_id)
        .bind(&route.pattern)
        .bind(route.priority)
        .bind(json(&route.targets))
        .bind(json(&route.vars))
        .bind(route.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {
                bump_routing(&mut tx).await?;
                tx.commit().await?;
                Ok(route)
            }
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("{:?} is already routed", route.pattern)))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn routes(&self, tenant_id: &str) -> Result<Vec<Route>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, pattern, priority, targets, vars, created_at FROM routes \
             WHERE tenant_id = $1 ORDER BY priority DESC, pattern",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(route_row).collect()
    }

    pub async fn delete_route(&self, tenant_id: &str, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM routes WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("route {id}")));
        }
        bump_routing(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Everything the SIP side routes by, read in one transaction with three queries however
    /// many routes there are: every tenant's routes, aliases and versions (without bytes).
    pub async fn routing_snapshot(&self) -> Result<RoutingSnapshot> {
        let mut tx = self.pool.begin().await?;
        let generation: i64 = sqlx::query("SELECT generation FROM routing_generation WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let routes = sqlx::query(
            "SELECT id, tenant_id, pattern, priority, targets, vars, created_at FROM routes \
             ORDER BY priority DESC, pattern",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(route_row)
        .collect::<Result<Vec<_>>>()?;
        let mut aliases = std::collections::HashMap::new();
        for r in sqlx::query("SELECT tenant_id, flow, name, version FROM aliases")
            .fetch_all(&mut *tx)
            .await?
        {
            let key = (r.try_get("tenant_id")?, r.try_get("flow")?, r.try_get("name")?);
            aliases.insert(key, r.try_get("version")?);
        }
        let mut versions = std::collections::HashMap::new();
        for r in sqlx::query(
            "SELECT tenant_id, flow, version, digest, size, world, manifest, created_at FROM flow_versions",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let v = version_row(&r)?;
            versions.insert((r.try_get("tenant_id")?, v.flow.clone(), v.version), v);
        }
        tx.commit().await?;
        Ok(RoutingSnapshot { generation, routes, aliases, versions })
    }

    /// A number that changes whenever routes or aliases change (on any node): compare it
    /// instead of re-reading every route.
    pub async fn routing_generation(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT generation FROM routing_generation WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }
}

/// Creates a database named `prefix_<random>` on the Postgres server at `admin_url` and
/// returns its URL: for test harnesses and provisioning scripts.
/// The world call flows export; only its components can be routed.
pub const FLOW_WORLD: &str = "voxide:flow/handler@0.1.0";

fn routable(v: &FlowVersion) -> Result<()> {
    if v.world == FLOW_WORLD {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{} version {} is a {} component, not a call flow: it cannot be routed",
            v.flow, v.version, v.world
        )))
    }
}

pub async fn create_postgres_database(admin_url: &str, prefix: &str) -> Result<String> {
    if !prefix.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return Err(StoreError::Invalid(format!("database prefix {prefix:?}: use a-z and _")));
    }
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().max_connections(1).connect(admin_url).await?;
    let name = format!("{prefix}_{}", random_hex(6));
    // The name is ours (a checked prefix and hex), so formatting it in is safe.
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await?;
    pool.close().await;
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

async fn version_by_digest(
    tx: &mut Transaction<'static, Any>,
    tenant_id: &str,
    flow: &str,
    digest: &str,
) -> Result<Option<FlowVersion>> {
    let row = sqlx::query(
        "SELECT flow, version, digest, size, world, manifest, created_at FROM flow_versions \
         WHERE tenant_id = $1 AND flow = $2 AND digest = $3",
    )
    .bind(tenant_id)
    .bind(flow)
    .bind(digest)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(version_row).transpose()
}

/// Marks a routing change, in the transaction that makes it.
async fn bump_routing(tx: &mut Transaction<'_, Any>) -> Result<()> {
    sqlx::query("UPDATE routing_generation SET generation = generation + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn version_row(row: &sqlx::any::AnyRow) -> Result<FlowVersion> {
    Ok(FlowVersion {
        flow: row.try_get("flow")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        size: row.try_get("size")?,
        world: row.try_get("world")?,
        manifest: row.try_get("manifest")?,
        created_at: row.try_get("created_at")?,
    })
}

fn route_row(row: &sqlx::any::AnyRow) -> Result<Route> {
    let targets: String = row.try_get("targets")?;
    let vars: String = row.try_get("vars")?;
    let bad =
        |what: &str, e: serde_json::Error| StoreError::Invalid(format!("stored route {what}: {e}"));
    Ok(Route {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        pattern: row.try_get("pattern")?,
        priority: row.try_get("priority")?,
        targets: serde_json::from_str(&targets).map_err(|e| bad("targets", e))?,
        vars: serde_json::from_str(&vars).map_err(|e| bad("vars", e))?,
        created_at: row.try_get("created_at")?,
    })
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests;
