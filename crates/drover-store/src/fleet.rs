//! What an operator changed in the fleet at run time: backends added
//! through the management API and pinned models, kept so that they outlive
//! the hub (today's in-memory changes vanished at a restart without
//! notice).

use crate::{Store, StoreError, on_db};

impl Store {
    /// Keeps a backend added at run time (its spec as JSON), replacing one
    /// of the same name.
    pub async fn save_backend(&self, name: &str, spec: &str, now: i64) -> Result<(), StoreError> {
        on_db!(self, write, |pool, pg| {
            sqlx::query(
                "INSERT INTO saved_backends (name, spec, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, added_at = excluded.added_at",
            )
            .bind(name)
            .bind(spec)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Forgets a backend removed at run time; whether it was kept.
    pub async fn forget_backend(&self, name: &str) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query("DELETE FROM saved_backends WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
                == 1
        }))
    }

    /// The backends added at run time, oldest first: (name, spec JSON).
    pub async fn saved_backends(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as("SELECT name, spec FROM saved_backends ORDER BY added_at, name")
                .fetch_all(pool)
                .await?
        }))
    }

    /// Pins a model, or unpins it.
    pub async fn set_pin(&self, model: &str, pinned: bool, now: i64) -> Result<(), StoreError> {
        on_db!(self, write, |pool, pg| {
            if pinned {
                sqlx::query(
                    "INSERT INTO pins (model, pinned_at) VALUES ($1, $2) ON CONFLICT (model) DO NOTHING",
                )
                .bind(model)
                .bind(now)
                .execute(pool)
                .await?;
            } else {
                sqlx::query("DELETE FROM pins WHERE model = $1")
                    .bind(model)
                    .execute(pool)
                    .await?;
            }
        });
        Ok(())
    }

    /// The models pinned at run time.
    pub async fn pins(&self) -> Result<Vec<String>, StoreError> {
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_scalar("SELECT model FROM pins ORDER BY model")
                .fetch_all(pool)
                .await?
        }))
    }
}
