//! Batches: one row each, one job per input line. A batch's progress is
//! its jobs' states, counted when asked (no counter to keep in step); its
//! end (the output and error files, its final status) is one transaction,
//! so a hub that dies while finishing it finishes it again from the start
//! and the output never holds a line twice.

use std::collections::HashMap;

use sqlx::QueryBuilder;

use crate::files::{NewFile, insert_file};
use crate::job::{Answer, Job, JobState, NewJob};
use crate::{Store, StoreError, on_db};

/// A batch as stored.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Batch {
    pub id: String,
    pub key_id: String,
    pub endpoint: String,
    pub input_file_id: String,
    pub completion_window: String,
    /// OpenAI's statuses: `validating`, `failed`, `in_progress`,
    /// `finalizing`, `completed`, `expired`, `cancelling`, `cancelled`.
    pub status: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    /// A failed batch's validation errors, a JSON list.
    pub errors: Option<String>,
    /// A JSON object.
    pub metadata: Option<String>,
    pub total: i64,
    /// Lines it may have running at once; no cap of its own if none.
    pub max_concurrency: Option<i64>,
    pub created_at: i64,
    pub in_progress_at: Option<i64>,
    pub expires_at: i64,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
}

/// Which batches to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct BatchFilter {
    /// Only this key's; every key's if none.
    pub key_id: Option<String>,
    /// Only those that ended (`failed`, `completed`, `expired`,
    /// `cancelled`).
    pub ended: bool,
    /// The cursor: batches older than this one.
    pub after: Option<String>,
    pub limit: u32,
}

/// How a batch ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchEnd {
    Completed,
    Expired,
    Cancelled,
}

/// The files a batch ends with (each, if it has lines).
#[derive(Clone, Debug, Default)]
pub struct BatchFiles {
    pub output: Option<(NewFile, Vec<u8>)>,
    pub errors: Option<(NewFile, Vec<u8>)>,
}

macro_rules! batch_columns {
    () => {
        "id, key_id, endpoint, input_file_id, completion_window, status, output_file_id, \
         error_file_id, errors, metadata, total, max_concurrency, created_at, in_progress_at, expires_at, \
         finalizing_at, completed_at, failed_at, expired_at, cancelling_at, cancelled_at"
    };
}

#[derive(sqlx::FromRow)]
struct LineRow {
    id: String,
    answer_status: Option<i64>,
    answer_headers: Option<String>,
    answer_body: Option<Vec<u8>>,
}

impl Store {
    /// Stores a batch and its lines in one transaction: all of it, or
    /// nothing. A batch that failed validation has no lines.
    pub async fn create_batch(&self, batch: &Batch, lines: &[NewJob]) -> Result<(), StoreError> {
        on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            sqlx::query(concat!(
                "INSERT INTO batches (",
                batch_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $17, $18, $19, $20, $21)"
            ))
            .bind(&batch.id)
            .bind(&batch.key_id)
            .bind(&batch.endpoint)
            .bind(&batch.input_file_id)
            .bind(&batch.completion_window)
            .bind(&batch.status)
            .bind(&batch.output_file_id)
            .bind(&batch.error_file_id)
            .bind(&batch.errors)
            .bind(&batch.metadata)
            .bind(batch.total)
            .bind(batch.max_concurrency)
            .bind(batch.created_at)
            .bind(batch.in_progress_at)
            .bind(batch.expires_at)
            .bind(batch.finalizing_at)
            .bind(batch.completed_at)
            .bind(batch.failed_at)
            .bind(batch.expired_at)
            .bind(batch.cancelling_at)
            .bind(batch.cancelled_at)
            .execute(&mut *tx)
            .await?;
            for chunk in lines.chunks(crate::jobs::INSERT_CHUNK) {
                let mut insert = crate::jobs::insert_many!(chunk);
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn batch(&self, id: &str) -> Result<Option<Batch>, StoreError> {
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(concat!(
                "SELECT ",
                batch_columns!(),
                " FROM batches WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// A page of a key's batches, newest first, and whether more follow.
    pub async fn batches(
        &self,
        key_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Batch>, bool), StoreError> {
        self.list_batches(&BatchFilter {
            key_id: Some(key_id.to_string()),
            ended: false,
            after: after.map(str::to_string),
            limit,
        })
        .await
    }

    /// A page of batches as `filter` picks them, newest first, and whether
    /// more follow.
    pub async fn list_batches(
        &self,
        filter: &BatchFilter,
    ) -> Result<(Vec<Batch>, bool), StoreError> {
        let limit = filter.limit.clamp(1, 1000);
        let mut rows: Vec<Batch> = on_db!(self, read, |pool, pg| {
            let mut query = QueryBuilder::new(concat!(
                "SELECT ",
                batch_columns!(),
                " FROM batches WHERE 1 = 1"
            ));
            if let Some(key) = &filter.key_id {
                query.push(" AND key_id = ").push_bind(key);
            }
            if filter.ended {
                query.push(" AND status IN ('failed', 'completed', 'expired', 'cancelled')");
            }
            if let Some(after) = &filter.after {
                query.push(" AND id < ").push_bind(after);
            }
            query
                .push(" ORDER BY id DESC LIMIT ")
                .push_bind(i64::from(limit) + 1);
            query.build_query_as().fetch_all(pool).await?
        });
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Ok((rows, more))
    }

    /// The lines of each of these batches by state, in one query (a batch
    /// with no lines is not in the answer).
    pub async fn batch_counts(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<(JobState, u64)>>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, String, i64)> = on_db!(self, read, |pool, pg| {
            let mut query =
                QueryBuilder::new("SELECT batch_id, state, count(*) FROM jobs WHERE batch_id IN (");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(id);
            }
            list.push_unseparated(") GROUP BY batch_id, state");
            query.build_query_as().fetch_all(pool).await?
        });
        let mut counts: HashMap<String, Vec<(JobState, u64)>> = HashMap::new();
        for (batch, state, n) in rows {
            let state = JobState::parse(&state).ok_or_else(|| StoreError::Data {
                what: "job state",
                reason: state.clone(),
            })?;
            counts
                .entry(batch)
                .or_default()
                .push((state, u64::try_from(n).unwrap_or(0)));
        }
        Ok(counts)
    }

    /// Batches still under way (running, finishing or being cancelled).
    pub async fn open_batches(&self) -> Result<Vec<Batch>, StoreError> {
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(concat!(
                "SELECT ",
                batch_columns!(),
                " FROM batches WHERE status IN ('in_progress', 'finalizing', 'cancelling') \
                 ORDER BY id"
            ))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Cancels a running batch: its waiting lines at once; those running
    /// finish, and the batch is `cancelling` until they have. Whether it
    /// was running.
    pub async fn cancel_batch(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            let cancelling = sqlx::query(
                "UPDATE batches SET status = 'cancelling', cancelling_at = $2 \
                 WHERE id = $1 AND status = 'in_progress'",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if cancelling {
                sqlx::query(
                    "UPDATE jobs SET state = 'cancelled', ended_at = $2 \
                     WHERE batch_id = $1 AND state = 'queued'",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            cancelling
        }))
    }

    /// A page of a batch's lines in id order, each with its answer if it
    /// has one.
    pub async fn batch_lines(
        &self,
        batch_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(Job, Option<Answer>)>, StoreError> {
        let page = self
            .jobs(&crate::JobFilter {
                batch_id: Some(batch_id.to_string()),
                after: after.map(str::to_string),
                limit,
                ..Default::default()
            })
            .await?;
        let ids: Vec<String> = page.jobs.iter().map(|j| j.id.clone()).collect();
        let answers: Vec<LineRow> = on_db!(self, read, |pool, pg| {
            let mut query = QueryBuilder::new(
                "SELECT job_id AS id, status AS answer_status, headers AS answer_headers, \
                 body AS answer_body FROM job_answers WHERE job_id IN (",
            );
            let mut list = query.separated(", ");
            for id in &ids {
                list.push_bind(id);
            }
            list.push_unseparated(")");
            if ids.is_empty() {
                Vec::new()
            } else {
                query.build_query_as().fetch_all(pool).await?
            }
        });
        let mut answers: std::collections::HashMap<String, Answer> = answers
            .into_iter()
            .filter_map(|row| {
                Some((
                    row.id,
                    Answer {
                        status: u16::try_from(row.answer_status?).ok()?,
                        headers: serde_json::from_str(&row.answer_headers?).ok()?,
                        body: row.answer_body?,
                    },
                ))
            })
            .collect();
        Ok(page
            .jobs
            .into_iter()
            .map(|job| {
                let answer = answers.remove(&job.id);
                (job, answer)
            })
            .collect())
    }

    /// Marks a batch `finalizing` (its lines have all ended); whether it
    /// was in `from`.
    pub async fn finalizing_batch(
        &self,
        id: &str,
        from: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE batches SET status = 'finalizing', finalizing_at = $3 \
                 WHERE id = $1 AND status = $2",
            )
            .bind(id)
            .bind(from)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    /// Ends a batch with its files, in one transaction, if it is still in
    /// `from`; whether it was (another hub may have ended it first).
    pub async fn end_batch(
        &self,
        id: &str,
        from: &str,
        end: BatchEnd,
        files: &BatchFiles,
        now: i64,
    ) -> Result<bool, StoreError> {
        let sql = match end {
            BatchEnd::Completed => {
                "UPDATE batches SET status = 'completed', completed_at = $1, output_file_id = $2, \
                 error_file_id = $3 WHERE id = $4 AND status = $5"
            }
            BatchEnd::Expired => {
                "UPDATE batches SET status = 'expired', expired_at = $1, output_file_id = $2, \
                 error_file_id = $3 WHERE id = $4 AND status = $5"
            }
            BatchEnd::Cancelled => {
                "UPDATE batches SET status = 'cancelled', cancelled_at = $1, output_file_id = $2, \
                 error_file_id = $3 WHERE id = $4 AND status = $5"
            }
        };
        Ok(on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            let ended = sqlx::query(sql)
                .bind(now)
                .bind(files.output.as_ref().map(|(f, _)| f.id.clone()))
                .bind(files.errors.as_ref().map(|(f, _)| f.id.clone()))
                .bind(id)
                .bind(from)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if ended {
                if let Some((file, data)) = &files.output {
                    insert_file!(tx, file, data);
                }
                if let Some((file, data)) = &files.errors {
                    insert_file!(tx, file, data);
                }
                tx.commit().await?;
            }
            ended
        }))
    }
}
