//! Settings: named values every hub on the store shares, so that hubs on
//! one PostgreSQL database agree on them (the secret their job callbacks
//! are signed with).

use crate::{Store, StoreError, on_db};

impl Store {
    /// The value stored under `name`, if any.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The value stored under `name`, storing `value` first if there is
    /// none. Of hubs that start together, each gets the value stored first.
    pub async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, StoreError> {
        on_db!(self, write, |pool, pg| {
            sqlx::query(
                "INSERT INTO settings (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(value)
            .execute(pool)
            .await?;
            let stored: Option<String> =
                sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?;
            stored.ok_or_else(|| {
                StoreError::Other(format!("setting {name} vanished as it was stored"))
            })
        })
    }

    /// Stores `value` under `name`, over what was there.
    pub async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        on_db!(self, write, |pool, pg| {
            sqlx::query(
                "INSERT INTO settings (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .bind(name)
            .bind(value)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
