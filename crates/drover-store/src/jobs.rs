//! The job table's operations, each written once for both databases.

use sqlx::QueryBuilder;

use crate::job::*;
use crate::{Store, StoreError, on_db};

macro_rules! job_columns {
    () => {
        "id, kind, state, key_id, batch_id, custom_id, endpoint, model, priority, attempt, \
         max_attempts, lost, run_at, attempted_at, deadline, lease_owner, lease_expires_at, \
         cancel_requested, attempts, failed_backends, idempotency_key, request_hash, \
         callback_url, metadata, created_at, started_at, ended_at"
    };
}

/// Rows per multi-row insert: far under both databases' bound on
/// parameters (SQLite 32,766, PostgreSQL 65,535) at 18 a row.
pub(crate) const INSERT_CHUNK: usize = 1000;

/// Finishes per statement: 8 parameters a row.
const FINISH_CHUNK: usize = 500;

/// A multi-row insert of jobs (one row for `insert_job`, a batch's lines,
/// follow-up jobs).
macro_rules! insert_many {
    ($chunk:expr) => {{
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO jobs (id, kind, state, key_id, batch_id, custom_id, endpoint, model, \
             body, priority, max_attempts, run_at, deadline, idempotency_key, request_hash, \
             callback_url, metadata, created_at) ",
        );
        insert.push_values($chunk, |mut row, new: &NewJob| {
            row.push_bind(&new.id)
                .push_bind(new.kind.as_str())
                .push_bind("queued")
                .push_bind(&new.key_id)
                .push_bind(&new.batch_id)
                .push_bind(&new.custom_id)
                .push_bind(&new.endpoint)
                .push_bind(&new.model)
                .push_bind(&new.body)
                .push_bind(i64::from(new.priority))
                .push_bind(i64::from(new.max_attempts))
                .push_bind(new.run_at)
                .push_bind(new.deadline)
                .push_bind(&new.idempotency_key)
                .push_bind(&new.request_hash)
                .push_bind(&new.callback_url)
                .push_bind(&new.metadata)
                .push_bind(new.created_at);
        });
        insert
    }};
}
pub(crate) use insert_many;

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    kind: String,
    state: String,
    key_id: String,
    batch_id: Option<String>,
    custom_id: Option<String>,
    endpoint: String,
    model: String,
    priority: i64,
    attempt: i64,
    max_attempts: i64,
    lost: i64,
    run_at: i64,
    attempted_at: Option<i64>,
    deadline: Option<i64>,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
    cancel_requested: i64,
    attempts: String,
    failed_backends: String,
    idempotency_key: Option<String>,
    request_hash: Option<String>,
    callback_url: Option<String>,
    metadata: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    ended_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    job: JobRow,
    body: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct AnswerRow {
    status: i64,
    headers: String,
    body: Vec<u8>,
}

fn data(what: &'static str, reason: impl ToString) -> StoreError {
    StoreError::Data {
        what,
        reason: reason.to_string(),
    }
}

impl JobRow {
    fn into_job(self) -> Result<Job, StoreError> {
        let count = |v: i64| u32::try_from(v).map_err(|e| data("job counter", e));
        Ok(Job {
            kind: JobKind::parse(&self.kind).ok_or_else(|| data("job kind", &self.kind))?,
            state: JobState::parse(&self.state).ok_or_else(|| data("job state", &self.state))?,
            attempts: serde_json::from_str(&self.attempts).map_err(|e| data("job history", e))?,
            failed_backends: serde_json::from_str(&self.failed_backends)
                .map_err(|e| data("job's failed backends", e))?,
            priority: u8::try_from(self.priority).map_err(|e| data("job priority", e))?,
            attempt: count(self.attempt)?,
            max_attempts: count(self.max_attempts)?,
            lost: count(self.lost)?,
            id: self.id,
            key_id: self.key_id,
            batch_id: self.batch_id,
            custom_id: self.custom_id,
            endpoint: self.endpoint,
            model: self.model,
            run_at: self.run_at,
            attempted_at: self.attempted_at,
            deadline: self.deadline,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at,
            cancel_requested: self.cancel_requested != 0,
            idempotency_key: self.idempotency_key,
            callback_url: self.callback_url,
            metadata: self.metadata,
            created_at: self.created_at,
            started_at: self.started_at,
            ended_at: self.ended_at,
        })
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| data("JSON value", e))
}

impl Store {
    /// Stores a job, unless its idempotency key was used before: then the
    /// job that key made (the same request) or a conflict (another one).
    pub async fn insert_job(&self, new: &NewJob) -> Result<Inserted, StoreError> {
        let inserted: u64 = on_db!(self, write, |pool, pg| {
            let mut insert = insert_many!(std::iter::once(new));
            insert.push(
                " ON CONFLICT (key_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
                 DO NOTHING",
            );
            insert.build().execute(pool).await?.rows_affected()
        });
        if inserted == 1 {
            self.hint(new.kind).await;
            let job = self.job(&new.id).await?.ok_or_else(|| {
                StoreError::Other(format!("job {} vanished as it was stored", new.id))
            })?;
            return Ok(Inserted::Created(job));
        }
        let Some(key) = &new.idempotency_key else {
            return Err(StoreError::Other(format!(
                "job {} was not stored and has no idempotency key",
                new.id
            )));
        };
        let row: Option<JobRow> = on_db!(self, write, |pool, pg| {
            sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE key_id = $1 AND idempotency_key = $2"
            ))
            .bind(&new.key_id)
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        let row = row.ok_or_else(|| {
            StoreError::Other(format!("idempotency key {key:?} conflicts with no job"))
        })?;
        let same = row.request_hash == new.request_hash;
        let job = row.into_job()?;
        Ok(if same {
            Inserted::Existing(job)
        } else {
            Inserted::Conflict(job)
        })
    }

    /// Stores many jobs in one transaction (a batch's lines): all or none.
    /// They carry no idempotency keys; a batch has its own id.
    pub async fn insert_jobs(&self, jobs: &[NewJob]) -> Result<(), StoreError> {
        on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            for chunk in jobs.chunks(INSERT_CHUNK) {
                let mut insert = insert_many!(chunk);
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        for kind in JobKind::ALL {
            if jobs.iter().any(|j| j.kind == kind) {
                self.hint(kind).await;
            }
        }
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let row: Option<JobRow> = on_db!(self, read, |pool, pg| {
            sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(JobRow::into_job).transpose()
    }

    /// The request a job sends.
    pub async fn job_body(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_scalar("SELECT body FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The answer a job ended with, once stored.
    pub async fn job_answer(&self, id: &str) -> Result<Option<Answer>, StoreError> {
        let row: Option<AnswerRow> = on_db!(self, read, |pool, pg| {
            sqlx::query_as("SELECT status, headers, body FROM job_answers WHERE job_id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|row| {
            Ok(Answer {
                status: u16::try_from(row.status).map_err(|e| data("answer status", e))?,
                headers: serde_json::from_str(&row.headers)
                    .map_err(|e| data("answer headers", e))?,
                body: row.body,
            })
        })
        .transpose()
    }

    /// Jobs newest first, a page at a time.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        let limit = filter.limit.clamp(1, 1000);
        let rows: Vec<JobRow> = on_db!(self, read, |pool, pg| {
            let mut query =
                QueryBuilder::new(concat!("SELECT ", job_columns!(), " FROM jobs WHERE 1 = 1"));
            if let Some(key) = &filter.key_id {
                query.push(" AND key_id = ").push_bind(key);
            }
            if let Some(kind) = filter.kind {
                query.push(" AND kind = ").push_bind(kind.as_str());
            }
            if let Some(state) = filter.state {
                query.push(" AND state = ").push_bind(state.as_str());
            }
            if let Some(batch) = &filter.batch_id {
                query.push(" AND batch_id = ").push_bind(batch);
            }
            if let Some(after) = &filter.after {
                query.push(" AND id < ").push_bind(after);
            }
            query
                .push(" ORDER BY id DESC LIMIT ")
                .push_bind(i64::from(limit) + 1);
            query.build_query_as().fetch_all(pool).await?
        });
        let has_more = rows.len() > limit as usize;
        let jobs = rows
            .into_iter()
            .take(limit as usize)
            .map(JobRow::into_job)
            .collect::<Result<_, _>>()?;
        Ok(JobPage { jobs, has_more })
    }

    /// How many jobs are in each state, optionally of one batch.
    pub async fn job_counts(
        &self,
        batch_id: Option<&str>,
    ) -> Result<Vec<(JobState, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = on_db!(self, read, |pool, pg| {
            match batch_id {
                Some(batch) => {
                    sqlx::query_as(
                        "SELECT state, count(*) FROM jobs WHERE batch_id = $1 GROUP BY state",
                    )
                    .bind(batch)
                    .fetch_all(pool)
                    .await?
                }
                None => {
                    sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
                        .fetch_all(pool)
                        .await?
                }
            }
        });
        rows.into_iter()
            .map(|(state, n)| {
                let state = JobState::parse(&state).ok_or_else(|| data("job state", &state))?;
                Ok((state, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    /// Every job in each kind and state, in one pass over the jobs.
    pub async fn job_counts_by_kind(&self) -> Result<Vec<(JobKind, JobState, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = on_db!(self, read, |pool, pg| {
            sqlx::query_as("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(kind, state, n)| {
                let kind = JobKind::parse(&kind).ok_or_else(|| data("job kind", &kind))?;
                let state = JobState::parse(&state).ok_or_else(|| data("job state", &state))?;
                Ok((kind, state, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    /// The state of each of these jobs that exists, by id.
    pub async fn job_states(&self, ids: &[String]) -> Result<Vec<(String, JobState)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String)> = on_db!(self, read, |pool, pg| {
            let mut query = sqlx::QueryBuilder::new("SELECT id, state FROM jobs WHERE id IN (");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(id);
            }
            query.push(")");
            query.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(id, state)| {
                let state = JobState::parse(&state).ok_or_else(|| data("job state", &state))?;
                Ok((id, state))
            })
            .collect()
    }

    /// Claims up to `claim.limit` jobs that may run now, highest priority
    /// first and oldest first within one, each under a lease to `owner`.
    pub async fn claim(&self, claim: &Claim<'_>) -> Result<Vec<Claimed>, StoreError> {
        let skip_batches = to_json(&claim.skip_batches)?;
        let skip_keys = to_json(&claim.skip_keys)?;
        let rows: Vec<ClaimedRow> = on_db!(self, write, |pool, pg| {
            let pick = if pg {
                concat!(
                    "WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND kind = $4 ",
                    "AND run_at <= $3 AND (deadline IS NULL OR deadline > $3) ",
                    "AND COALESCE(batch_id, '') NOT IN ",
                    "(SELECT jsonb_array_elements_text($5::jsonb)) ",
                    "AND key_id NOT IN (SELECT jsonb_array_elements_text($6::jsonb)) ",
                    "ORDER BY priority DESC, run_at, id LIMIT $7 FOR UPDATE SKIP LOCKED)"
                )
            } else {
                concat!(
                    "WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND kind = $4 ",
                    "AND run_at <= $3 AND (deadline IS NULL OR deadline > $3) ",
                    "AND COALESCE(batch_id, '') NOT IN (SELECT value FROM json_each($5)) ",
                    "AND key_id NOT IN (SELECT value FROM json_each($6)) ",
                    "ORDER BY priority DESC, run_at, id LIMIT $7)"
                )
            };
            // The fence is read in the same statement as the claim: no
            // lease can run out between the two.
            let fence = match claim.fence {
                Some(_) => format!(
                    " AND EXISTS (SELECT 1 FROM cluster_leases WHERE cluster = $8 \
                     AND epoch = $9 AND expires_ms > {})",
                    crate::cluster::now_ms(pg)
                ),
                None => String::new(),
            };
            let sql = format!(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, \
                 lease_owner = $1, lease_expires_at = $2, attempted_at = $3, \
                 started_at = COALESCE(started_at, $3) {pick}{fence} RETURNING {}, body",
                job_columns!()
            );
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(claim.owner)
                .bind(claim.now.saturating_add(claim.lease_ms))
                .bind(claim.now)
                .bind(claim.kind.as_str())
                .bind(&skip_batches)
                .bind(&skip_keys)
                .bind(i64::from(claim.limit));
            if let Some(fence) = claim.fence {
                query = query.bind(fence.cluster).bind(fence.epoch);
            }
            query.fetch_all(pool).await?
        });
        let mut claimed = rows
            .into_iter()
            .map(|row| {
                let job = row.job.into_job()?;
                let lease = Lease {
                    job_id: job.id.clone(),
                    attempt: job.attempt,
                    owner: claim.owner.to_string(),
                };
                Ok(Claimed {
                    job,
                    body: row.body,
                    lease,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING promises no order.
        claimed.sort_by(|a, b| {
            (b.job.priority, a.job.run_at, &a.job.id).cmp(&(
                a.job.priority,
                b.job.run_at,
                &b.job.id,
            ))
        });
        Ok(claimed)
    }

    /// Extends every lease `owner` holds to `until`; how many it holds.
    pub async fn renew_leases(&self, owner: &str, until: i64) -> Result<u64, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE jobs SET lease_expires_at = $1 WHERE lease_owner = $2 AND state = 'running'",
            )
            .bind(until)
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// Gives a claimed job back as it was before the claim (its runner is
    /// stopping, or it may not run yet: its key or batch is at its cap, its
    /// key over a rate): the attempt does not count. It may run again from
    /// `run_at` if given. Whether the lease still held.
    pub async fn release(&self, lease: &Lease, run_at: Option<i64>) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE jobs SET state = 'queued', attempt = attempt - 1, lease_owner = NULL, \
                 lease_expires_at = NULL, run_at = COALESCE($4, run_at) \
                 WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'running'",
            )
            .bind(&lease.job_id)
            .bind(i64::from(lease.attempt))
            .bind(&lease.owner)
            .bind(run_at)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    /// Stores how attempts ended, in one transaction, each fenced on its
    /// lease: an attempt rescued from under its runner changes nothing.
    /// Whether each was taken, in order.
    pub async fn finish(&self, finishes: &[Finish]) -> Result<Vec<bool>, StoreError> {
        // Encoded before the transaction: a value that cannot be stored
        // fails the call before anything is written.
        let rows = finishes
            .iter()
            .map(|f| Ok((to_json(&f.attempts)?, to_json(&f.failed_backends)?)))
            .collect::<Result<Vec<(String, String)>, StoreError>>()?;
        let answers = finishes
            .iter()
            .map(|f| f.answer.as_ref().map(|a| to_json(&a.headers)).transpose())
            .collect::<Result<Vec<Option<String>>, StoreError>>()?;
        let mut taken_ids: std::collections::HashSet<String> = std::collections::HashSet::new();
        on_db!(self, write, |pool, pg| {
            let mut tx = pool
                .begin_with(if pg { "BEGIN" } else { "BEGIN IMMEDIATE" })
                .await?;
            // One statement per group, not per job: each fenced row by row
            // on (id, attempt, owner) against the VALUES list.
            for (chunk, encoded) in finishes.chunks(FINISH_CHUNK).zip(rows.chunks(FINISH_CHUNK)) {
                let mut update = QueryBuilder::new(
                    "UPDATE jobs SET state = v.column2, run_at = COALESCE(v.column3, jobs.run_at), \
                     attempts = v.column4, failed_backends = v.column5, ended_at = v.column6, \
                     lease_owner = NULL, lease_expires_at = NULL FROM (",
                );
                update.push_values(
                    chunk.iter().zip(encoded),
                    |mut row, (f, (attempts, failed))| {
                        row.push_bind(&f.lease.job_id)
                            .push_bind(f.state.as_str())
                            .push_bind(f.run_at)
                            .push_bind(attempts)
                            .push_bind(failed)
                            .push_bind(f.state.is_final().then_some(f.at))
                            .push_bind(i64::from(f.lease.attempt))
                            .push_bind(&f.lease.owner);
                    },
                );
                update.push(
                    ") AS v WHERE jobs.id = v.column1 AND jobs.attempt = v.column7 \
                     AND jobs.lease_owner = v.column8 AND jobs.state = 'running' RETURNING jobs.id",
                );
                let ids: Vec<String> = update.build_query_scalar().fetch_all(&mut *tx).await?;
                taken_ids.extend(ids);
            }
            let stored: Vec<(&Finish, &Answer, &String)> = finishes
                .iter()
                .zip(&answers)
                .filter(|(f, _)| taken_ids.contains(&f.lease.job_id))
                .filter_map(|(f, h)| Some((f, f.answer.as_ref()?, h.as_ref()?)))
                .collect();
            for chunk in stored.chunks(FINISH_CHUNK) {
                let mut insert =
                    QueryBuilder::new("INSERT INTO job_answers (job_id, status, headers, body) ");
                insert.push_values(chunk, |mut row, (f, answer, headers)| {
                    row.push_bind(&f.lease.job_id)
                        .push_bind(i64::from(answer.status))
                        .push_bind(*headers)
                        .push_bind(&answer.body);
                });
                insert.push(
                    " ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, \
                     headers = excluded.headers, body = excluded.body",
                );
                insert.build().execute(&mut *tx).await?;
            }
            let then: Vec<&NewJob> = finishes
                .iter()
                .filter(|f| taken_ids.contains(&f.lease.job_id))
                .filter_map(|f| f.then.as_ref())
                .collect();
            for chunk in then.chunks(INSERT_CHUNK) {
                let mut insert = insert_many!(chunk.iter().copied());
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(finishes
            .iter()
            .map(|f| taken_ids.contains(&f.lease.job_id))
            .collect())
    }

    /// Gives back to the queue the running jobs whose runner is gone (or
    /// marks them dead after [`MAX_LOST`] such losses, or cancelled if they
    /// were asked to stop), recording the lost attempt in each one's
    /// history; what `then` makes of each job that ends (its callback) is
    /// stored in the same transaction.
    pub async fn rescue(
        &self,
        orphans: Orphans<'_>,
        now: i64,
        then: Then<'_>,
    ) -> Result<Vec<Rescued>, StoreError> {
        let mut rescued = Vec::new();
        on_db!(self, write, |pool, pg| {
            let mut tx = pool
                .begin_with(if pg { "BEGIN" } else { "BEGIN IMMEDIATE" })
                .await?;
            let rows: Vec<JobRow> = match orphans {
                Orphans::LeaseExpired => {
                    let sql = if pg {
                        concat!(
                            "SELECT ",
                            job_columns!(),
                            " FROM jobs WHERE state = 'running' AND lease_expires_at < $1 ",
                            "FOR UPDATE SKIP LOCKED"
                        )
                    } else {
                        concat!(
                            "SELECT ",
                            job_columns!(),
                            " FROM jobs WHERE state = 'running' AND lease_expires_at < $1"
                        )
                    };
                    sqlx::query_as(sql).bind(now).fetch_all(&mut *tx).await?
                }
                Orphans::NotOwnedBy(owner) => {
                    sqlx::query_as(concat!(
                        "SELECT ",
                        job_columns!(),
                        " FROM jobs WHERE state = 'running' AND lease_owner <> $1"
                    ))
                    .bind(owner)
                    .fetch_all(&mut *tx)
                    .await?
                }
            };
            for row in rows {
                let job = row.into_job()?;
                let mut attempts = job.attempts.clone();
                attempts.push(Attempt {
                    number: job.attempt,
                    started_at: job.attempted_at.unwrap_or(now),
                    ended_at: now,
                    backends: Vec::new(),
                    status: None,
                    error: Some(
                        "its runner was lost (the hub stopped or lost the store): tried again"
                            .into(),
                    ),
                });
                let state = if job.cancel_requested {
                    JobState::Cancelled
                } else if job.lost + 1 >= MAX_LOST {
                    JobState::Dead
                } else {
                    JobState::Queued
                };
                let ended_at = state.is_final().then_some(now);
                // It keeps its place (its run_at): a rescued job goes
                // before those that came after it.
                let updated = sqlx::query(
                    "UPDATE jobs SET state = $1, lost = lost + 1, attempts = $2, \
                     ended_at = $3, lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = $4 AND attempt = $5 AND state = 'running'",
                )
                .bind(state.as_str())
                .bind(to_json(&attempts)?)
                .bind(ended_at)
                .bind(&job.id)
                .bind(i64::from(job.attempt))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated != 1 {
                    continue;
                }
                if state.is_final() {
                    let ended = Job {
                        state,
                        lost: job.lost + 1,
                        attempts,
                        ended_at,
                        lease_owner: None,
                        lease_expires_at: None,
                        ..job.clone()
                    };
                    if let Some(new) = then(&ended) {
                        insert_many!(std::iter::once(&new))
                            .build()
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                rescued.push(Rescued { id: job.id, state });
            }
            tx.commit().await?;
        });
        Ok(rescued)
    }

    /// Ends the waiting jobs whose deadline has passed, storing what
    /// `then` makes of each (its callback) in the same transaction.
    pub async fn expire_overdue(&self, now: i64, then: Then<'_>) -> Result<Vec<Job>, StoreError> {
        on_db!(self, write, |pool, pg| {
            let mut tx = pool
                .begin_with(if pg { "BEGIN" } else { "BEGIN IMMEDIATE" })
                .await?;
            let rows: Vec<JobRow> = sqlx::query_as(concat!(
                "UPDATE jobs SET state = 'expired', ended_at = $1 ",
                "WHERE state = 'queued' AND deadline IS NOT NULL AND deadline <= $1 ",
                "RETURNING ",
                job_columns!()
            ))
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            let jobs = rows
                .into_iter()
                .map(JobRow::into_job)
                .collect::<Result<Vec<_>, _>>()?;
            for job in &jobs {
                if let Some(new) = then(job) {
                    insert_many!(std::iter::once(&new))
                        .build()
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(jobs)
        })
    }

    /// Cancels a waiting job at once, storing what `then` makes of it (its
    /// callback) in the same transaction, or asks a running one's runner to
    /// stop.
    pub async fn cancel_job(
        &self,
        id: &str,
        now: i64,
        then: Then<'_>,
    ) -> Result<Option<Cancelled>, StoreError> {
        let (cancelled, running): (Option<Job>, u64) = on_db!(self, write, |pool, pg| {
            let mut tx = pool
                .begin_with(if pg { "BEGIN" } else { "BEGIN IMMEDIATE" })
                .await?;
            let row: Option<JobRow> = sqlx::query_as(concat!(
                "UPDATE jobs SET state = 'cancelled', ended_at = $2 ",
                "WHERE id = $1 AND state = 'queued' RETURNING ",
                job_columns!()
            ))
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let cancelled = row.map(JobRow::into_job).transpose()?;
            let running = match &cancelled {
                Some(job) => {
                    if let Some(new) = then(job) {
                        insert_many!(std::iter::once(&new))
                            .build()
                            .execute(&mut *tx)
                            .await?;
                    }
                    0
                }
                None => sqlx::query(
                    "UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            };
            tx.commit().await?;
            (cancelled, running)
        });
        if let Some(job) = cancelled {
            return Ok(Some(Cancelled::Now(job)));
        }
        let Some(job) = self.job(id).await? else {
            return Ok(None);
        };
        Ok(Some(if running == 1 {
            Cancelled::Requested(job)
        } else {
            Cancelled::AlreadyOver(job)
        }))
    }

    /// Queues again a job that ended without success, with `attempts` more
    /// attempts; its history stays, its old answer goes.
    pub async fn retry_job(
        &self,
        id: &str,
        attempts: u32,
        now: i64,
    ) -> Result<Option<Retried>, StoreError> {
        let requeued: u64 = on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            let requeued = sqlx::query(
                "UPDATE jobs SET state = 'queued', run_at = $2, \
                 max_attempts = attempt - lost + $3, ended_at = NULL, cancel_requested = 0 \
                 WHERE id = $1 AND state IN ('dead', 'failed', 'expired', 'cancelled')",
            )
            .bind(id)
            .bind(now)
            .bind(i64::from(attempts))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if requeued == 1 {
                sqlx::query("DELETE FROM job_answers WHERE job_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            requeued
        });
        let Some(job) = self.job(id).await? else {
            return Ok(None);
        };
        if requeued == 1 {
            self.hint(job.kind).await;
        }
        Ok(Some(match job.state {
            _ if requeued == 1 => Retried::Queued(job),
            JobState::Completed => Retried::Completed(job),
            _ => Retried::NotOver(job),
        }))
    }
}
