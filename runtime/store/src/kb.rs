//! Knowledge-base documents: a tenant's texts, whole. The runtime chunks and indexes them.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Millis, Result, Store, StoreError, now, valid_name};

/// A document as listed (its text is read with [`Store::kb_texts`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KbDocument {
    pub name: String,
    /// Characters of text.
    pub size: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Store {
    /// Adds `name`, or replaces its text (`created` says which).
    pub async fn put_kb_document(
        &self,
        tenant_id: &str,
        name: &str,
        content: &str,
    ) -> Result<(KbDocument, bool)> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!(
                "document name {name:?}: 1-64 of a-z 0-9 - _ ., starting with a letter or digit"
            )));
        }
        let at = now();
        let mut tx = self.pool.begin().await?;
        let existing: Option<Millis> =
            sqlx::query("SELECT created_at FROM kb_documents WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        let created_at = existing.unwrap_or(at);
        sqlx::query("DELETE FROM kb_documents WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO kb_documents (tenant_id, name, content, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(content)
        .bind(created_at)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let doc = KbDocument {
            name: name.to_owned(),
            size: content.chars().count() as i64,
            created_at,
            updated_at: at,
        };
        Ok((doc, existing.is_none()))
    }

    pub async fn kb_documents(&self, tenant_id: &str) -> Result<Vec<KbDocument>> {
        sqlx::query(
            "SELECT name, content, created_at, updated_at FROM kb_documents \
             WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let content: String = r.try_get(1)?;
            Ok(KbDocument {
                name: r.try_get(0)?,
                size: content.chars().count() as i64,
                created_at: r.try_get(2)?,
                updated_at: r.try_get(3)?,
            })
        })
        .collect()
    }

    /// Every document's name and text, for building the tenant's index.
    pub async fn kb_texts(&self, tenant_id: &str) -> Result<Vec<(String, String)>> {
        sqlx::query("SELECT name, content FROM kb_documents WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub async fn delete_kb_document(&self, tenant_id: &str, name: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM kb_documents WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound(format!("document {name}")));
        }
        Ok(())
    }
}
