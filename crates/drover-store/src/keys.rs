//! API keys: every hub on the store knows the same ones. The hub keeps
//! them in memory to check each request without a query (so inference
//! goes on while PostgreSQL is away) and reads them again every few
//! seconds; every change is written here first.

use crate::{Store, StoreError, on_db};

/// A key as kept: never the key itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct StoredKey {
    pub id: String,
    pub name: String,
    /// `client`, `admin` or `metrics`.
    pub kind: String,
    pub sha256: String,
    /// Its first characters, to tell keys apart in a listing.
    pub prefix: String,
    pub created_unix: i64,
    pub revoked_unix: Option<i64>,
    /// Its limits, JSON.
    pub limits: String,
    /// The secret its jobs' callbacks are signed with, when it has one of
    /// its own.
    pub webhook_secret: Option<String>,
}

const COLUMNS: &str =
    "id, name, kind, sha256, prefix, created_unix, revoked_unix, limits, webhook_secret";

impl Store {
    /// Every key, revoked ones too, oldest first.
    pub async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_unix, id");
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Keeps a new key; `false` (and nothing kept) when its id or hash is
    /// taken or an active key has its name.
    pub async fn insert_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT DO NOTHING"
        );
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&key.id)
                .bind(&key.name)
                .bind(&key.kind)
                .bind(&key.sha256)
                .bind(&key.prefix)
                .bind(key.created_unix)
                .bind(key.revoked_unix)
                .bind(&key.limits)
                .bind(&key.webhook_secret)
                .execute(pool)
                .await?
                .rows_affected()
                == 1
        }))
    }

    /// Revokes the key `id` at `at` (Unix seconds); whether it was active.
    pub async fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE api_keys SET revoked_unix = $2, webhook_secret = NULL \
                 WHERE id = $1 AND revoked_unix IS NULL",
            )
            .bind(id)
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    /// Forgets every revoked key; how many.
    pub async fn purge_keys(&self) -> Result<u64, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query("DELETE FROM api_keys WHERE revoked_unix IS NOT NULL")
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Gives the active key `id` a webhook secret of its own, or (with
    /// `None`) takes it away; whether there is such a key.
    pub async fn set_key_webhook_secret(
        &self,
        id: &str,
        secret: Option<&str>,
    ) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE api_keys SET webhook_secret = $2 WHERE id = $1 AND revoked_unix IS NULL",
            )
            .bind(id)
            .bind(secret)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }
}
