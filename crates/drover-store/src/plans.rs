//! Plans: a plain-language request a model turned into tasks. The request,
//! the model's raw answer, the plan it parsed into and the tasks it made
//! are stored in one transaction, so none is ever seen without the others;
//! a refused plan is kept with why, and made no tasks.

use crate::jobs::{INSERT_CHUNK, insert_many};
use crate::{JobKind, NewJob, Store, StoreError, on_db};

/// A plan to keep, with the tasks it makes.
#[derive(Debug, Clone)]
pub struct NewPlan {
    pub id: String,
    pub key_id: String,
    pub request: String,
    pub model: String,
    /// The model's answer as it came.
    pub answer: String,
    /// The plan as JSON, once the answer parsed into one.
    pub plan: Option<String>,
    /// Why it was refused; `None` when its tasks go with it.
    pub error: Option<String>,
    pub created_at: i64,
}

/// A plan as kept.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Plan {
    pub id: String,
    pub key_id: String,
    pub request: String,
    pub model: String,
    pub answer: String,
    pub plan: Option<String>,
    pub error: Option<String>,
    /// The tasks it made, a JSON list of ids.
    pub task_ids: String,
    pub created_at: i64,
}

impl Plan {
    /// The ids of the tasks it made, in the plan's order.
    pub fn tasks(&self) -> Result<Vec<String>, StoreError> {
        serde_json::from_str(&self.task_ids)
            .map_err(|e| StoreError::Other(format!("plan {}: its task list: {e}", self.id)))
    }
}

const COLUMNS: &str = "id, key_id, request, model, answer, plan, error, task_ids, created_at";

impl Store {
    /// Keeps `plan` and stores `tasks` (jobs of kind task) in one
    /// transaction: all or nothing.
    pub async fn insert_plan(&self, plan: &NewPlan, tasks: &[NewJob]) -> Result<(), StoreError> {
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        let task_ids = serde_json::to_string(&ids)
            .map_err(|e| StoreError::Other(format!("plan {}: its task list: {e}", plan.id)))?;
        let sql =
            format!("INSERT INTO plans ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&plan.id)
                .bind(&plan.key_id)
                .bind(&plan.request)
                .bind(&plan.model)
                .bind(&plan.answer)
                .bind(&plan.plan)
                .bind(&plan.error)
                .bind(&task_ids)
                .bind(plan.created_at)
                .execute(&mut *tx)
                .await?;
            for chunk in tasks.chunks(INSERT_CHUNK) {
                let mut insert = insert_many!(chunk);
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        if !tasks.is_empty() {
            self.hint(JobKind::Task).await;
        }
        Ok(())
    }

    pub async fn plan(&self, id: &str) -> Result<Option<Plan>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM plans WHERE id = $1");
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The newest `limit` plans, of one key's or (`None`) of every key.
    pub async fn plans(&self, key_id: Option<&str>, limit: u32) -> Result<Vec<Plan>, StoreError> {
        let sql = match key_id {
            Some(_) => format!(
                "SELECT {COLUMNS} FROM plans WHERE key_id = $2 ORDER BY created_at DESC, id DESC LIMIT $1"
            ),
            None => {
                format!("SELECT {COLUMNS} FROM plans ORDER BY created_at DESC, id DESC LIMIT $1")
            }
        };
        Ok(on_db!(self, read, |pool, pg| {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(i64::from(limit));
            if let Some(key) = key_id {
                query = query.bind(key);
            }
            query.fetch_all(pool).await?
        }))
    }
}
