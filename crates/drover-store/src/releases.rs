//! Releases of drover (a file's bytes with a version and a SHA-256) and
//! the roll-outs that update nodes to them.

use crate::files::{NewFile, insert_file};
use crate::{Store, StoreError, on_db};

/// A release as kept; its bytes are the file `file_id`'s.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Release {
    pub version: String,
    pub file_id: String,
    pub sha256: String,
    pub bytes: i64,
    pub os: String,
    pub arch: String,
    pub created_unix: i64,
}

/// A roll-out as kept.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Rollout {
    pub id: String,
    pub version: String,
    pub batch: i64,
    /// `running`, `done` or `halted`.
    pub state: String,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// Each node's part, JSON.
    pub detail: String,
}

const RELEASE_COLUMNS: &str = "version, file_id, sha256, bytes, os, arch, created_unix";
const ROLLOUT_COLUMNS: &str = "id, version, batch, state, created_ms, finished_ms, detail";

impl Store {
    /// Stores a release with its bytes, whole or not at all. `false`: a
    /// release of this version is kept already (nothing stored).
    pub async fn put_release(
        &self,
        release: &Release,
        file: &NewFile,
        data: &[u8],
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO releases ({RELEASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (version) DO NOTHING"
        );
        Ok(on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            let added = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&release.version)
                .bind(&release.file_id)
                .bind(&release.sha256)
                .bind(release.bytes)
                .bind(&release.os)
                .bind(&release.arch)
                .bind(release.created_unix)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if added {
                insert_file!(tx, file, data);
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            added
        }))
    }

    pub async fn release_of(&self, version: &str) -> Result<Option<Release>, StoreError> {
        let sql = format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE version = $1");
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(version)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Every release, newest first.
    pub async fn releases(&self) -> Result<Vec<Release>, StoreError> {
        let sql =
            format!("SELECT {RELEASE_COLUMNS} FROM releases ORDER BY created_unix DESC, version");
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?
        }))
    }

    pub async fn insert_rollout(&self, rollout: &Rollout) -> Result<(), StoreError> {
        let sql =
            format!("INSERT INTO rollouts ({ROLLOUT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
        on_db!(self, write, |pool, pg| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&rollout.id)
                .bind(&rollout.version)
                .bind(rollout.batch)
                .bind(&rollout.state)
                .bind(rollout.created_ms)
                .bind(rollout.finished_ms)
                .bind(&rollout.detail)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A running roll-out's progress, or its end.
    pub async fn update_rollout(
        &self,
        id: &str,
        state: &str,
        detail: &str,
        finished_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        on_db!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE rollouts SET state = $2, detail = $3, finished_ms = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(state)
            .bind(detail)
            .bind(finished_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        let sql = format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1");
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The newest roll-outs, at most `limit`.
    pub async fn rollouts(&self, limit: i64) -> Result<Vec<Rollout>, StoreError> {
        let sql =
            format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY created_ms DESC, id LIMIT $1");
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(limit)
                .fetch_all(pool)
                .await?
        }))
    }
}
