//! The job runner: claims a window of jobs from the store under this hub's
//! lease, runs each on a task of its own ([`attempt`]), stores how each
//! ended ([`writer`]), with its callback where it asked for one
//! ([`callback`]); beside it, the callback runner ([`delivery`]) sends
//! those, and one loop renews the leases this hub holds (every third of a
//! lease, the callbacks' too), gives back jobs whose runner vanished and
//! ends overdue ones (their callbacks stored with those ends).
//!
//! Only a window of the waiting jobs is in the hub's memory (and the
//! scheduler's queue) at once: a million stored jobs cost the hub what the
//! window costs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use drover_store::{Attempt, Claim, Claimed, Finish, Job, JobKind, JobState, Orphans, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::attempt::{self, Ended};
use super::writer::{self, Pending};
use super::{Jobs, callback, delivery, now_ms};
use crate::hub::HubState;

/// Starts the runner's tasks on the hub's tracker, once the store answers.
pub fn start(hub: &Arc<HubState>) {
    let Some(jobs) = hub.jobs.clone() else {
        return;
    };
    if jobs.is_ready() {
        spawn(hub, jobs);
    } else {
        hub.tasks.spawn(when_ready(hub.clone(), jobs));
    }
}

/// Tries the store until it answers (its schema brought up to date), then
/// starts the runner.
async fn when_ready(hub: Arc<HubState>, jobs: Arc<Jobs>) {
    let mut wait = Duration::from_millis(500);
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let ready = async {
            jobs.store.migrate().await?;
            jobs.secret.ensure(&jobs.store).await.map_err(|e| match e {
                super::secret::LoadError::Store(e) => e,
                other => drover_store::StoreError::Other(other.to_string()),
            })
        };
        match ready.await {
            Ok(()) => break,
            Err(error) if error.is_unavailable() => {
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(error) => {
                tracing::error!(%error, "the job store answered, but cannot be used: the job API stays unavailable");
                return;
            }
        }
    }
    tracing::info!(store = %jobs.store.describe(), "the job store answers: jobs run");
    jobs.set_ready();
    spawn(&hub, jobs);
}

fn spawn(hub: &Arc<HubState>, jobs: Arc<Jobs>) {
    hub.tasks.spawn(crate::kept::restore(hub.clone()));
    let (tx, rx) = mpsc::channel(4 * jobs.config.window as usize);
    hub.tasks
        .spawn(writer::run(jobs.store.clone(), rx, hub.shutdown.clone()));
    hub.tasks
        .spawn(delivery::claim(hub.clone(), jobs.clone(), tx.clone()));
    hub.tasks.spawn(claim(
        hub.clone(),
        jobs.clone(),
        tx.clone(),
        JobKind::Inference,
    ));
    hub.tasks
        .spawn(claim(hub.clone(), jobs.clone(), tx, JobKind::Task));
    hub.tasks
        .spawn(crate::batches::finish::run(hub.clone(), jobs.clone()));
    if !jobs.store.is_single_hub() {
        hub.tasks
            .spawn(super::listen::run(hub.clone(), jobs.clone()));
    }
    hub.tasks.spawn(maintain(hub.clone(), jobs));
}

/// Claims jobs of `kind` (inference, or tasks for workers) while its
/// window has room, until the hub stops.
async fn claim(hub: Arc<HubState>, jobs: Arc<Jobs>, tx: mpsc::Sender<Pending>, kind: JobKind) {
    let (wake, in_flight) = jobs.lane(kind);
    // One hub alone uses a SQLite file: a job another runner holds there
    // was its former self's, dead now; it need not wait out the lease.
    // (Every kind's, once: by the inference loop.)
    if kind == JobKind::Inference && jobs.store.is_single_hub() {
        match jobs
            .store
            .rescue(
                Orphans::NotOwnedBy(&jobs.owner),
                now_ms(),
                &callback::without_answer,
            )
            .await
        {
            Ok(rescued) if !rescued.is_empty() => {
                tracing::info!(
                    jobs = rescued.len(),
                    "jobs that were running when the hub last stopped run again"
                );
                jobs.wake_callbacks();
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot give back the jobs the hub ran when it last stopped; they run again once their leases run out")
            }
        }
    }
    let window = jobs.config.window as usize;
    let lease_ms = millis(jobs.config.lease);
    let mut failing = false;
    loop {
        if hub.shutdown.is_cancelled() {
            break;
        }
        // Only the cluster's leader claims: the jobs run where the
        // scheduler that places them is.
        // Read once: the claim below is fenced by the lease it says.
        let role = hub.cluster.role();
        if !role.leads() {
            if hub.cluster.until_leading(&hub.shutdown).await {
                continue;
            }
            break;
        }
        let room = window.saturating_sub(in_flight.load(Ordering::Relaxed));
        let mut more = false;
        if room > 0 {
            let (skip_keys, skip_batches) = at_cap(&hub, &jobs);
            let claim = Claim {
                kind,
                owner: &jobs.owner,
                limit: room as u32,
                now: now_ms(),
                lease_ms,
                skip_batches: &skip_batches,
                skip_keys: &skip_keys,
                fence: hub.cluster.fence(&role),
            };
            match jobs.store.claim(&claim).await {
                Ok(claimed) => {
                    if failing {
                        tracing::info!("the job store answers again");
                    }
                    failing = false;
                    more = claimed.len() == room;
                    for job in claimed {
                        if !take(&hub, &jobs, &job.job).await {
                            // Over its key's or batch's cap: this claim took
                            // more than the cap had room for. Back, uncounted.
                            if let Err(error) = jobs.store.release(&job.lease, None).await {
                                tracing::warn!(job = %job.job.id, %error, "cannot give back a job over its cap; it runs again once its lease runs out");
                            }
                            continue;
                        }
                        in_flight.fetch_add(1, Ordering::Relaxed);
                        hub.tasks
                            .spawn(run_one(hub.clone(), jobs.clone(), job, tx.clone()));
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "cannot claim jobs; trying again");
                    }
                    failing = true;
                }
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            () = hub.shutdown.cancelled() => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(jobs.config.poll_interval) => {}
        }
    }
}

/// The keys and batches at their caps (a key's `max_concurrent`, a
/// batch's `max_concurrency`) with what this hub holds: the claim skips
/// their jobs.
fn at_cap(hub: &HubState, jobs: &Jobs) -> (Vec<String>, Vec<String>) {
    let held = drover_core::sync::lock(&jobs.held);
    let keys = held
        .by_key
        .iter()
        .filter(|(key, n)| key_cap(hub, key).is_some_and(|cap| **n >= cap))
        .map(|(key, _)| key.clone())
        .collect();
    let batches = held
        .by_batch
        .iter()
        .filter(|(batch, n)| {
            held.batch_caps
                .get(*batch)
                .copied()
                .flatten()
                .is_some_and(|cap| **n >= cap)
        })
        .map(|(batch, _)| batch.clone())
        .collect();
    (keys, batches)
}

/// A stored key's `max_concurrent`.
fn key_cap(hub: &HubState, key_id: &str) -> Option<usize> {
    hub.keys
        .holder(key_id)
        .and_then(|h| h.limits.max_concurrent)
        .map(|n| n as usize)
}

/// Counts a claimed job against its key's and batch's caps, if they have
/// room; whether they had.
async fn take(hub: &HubState, jobs: &Jobs, job: &drover_store::Job) -> bool {
    let batch_cap = match &job.batch_id {
        Some(batch) => {
            let known = drover_core::sync::lock(&jobs.held)
                .batch_caps
                .get(batch)
                .copied();
            match known {
                Some(cap) => cap,
                None => {
                    let cap = match jobs.store.batch(batch).await {
                        Ok(b) => b
                            .and_then(|b| b.max_concurrency)
                            .and_then(|n| usize::try_from(n).ok()),
                        Err(_) => None,
                    };
                    drover_core::sync::lock(&jobs.held)
                        .batch_caps
                        .insert(batch.clone(), cap);
                    cap
                }
            }
        }
        None => None,
    };
    let key_cap = key_cap(hub, &job.key_id);
    let mut held = drover_core::sync::lock(&jobs.held);
    let by_key = held.by_key.get(&job.key_id).copied().unwrap_or(0);
    let by_batch = job
        .batch_id
        .as_ref()
        .and_then(|b| held.by_batch.get(b).copied())
        .unwrap_or(0);
    if key_cap.is_some_and(|cap| by_key >= cap) || batch_cap.is_some_and(|cap| by_batch >= cap) {
        return false;
    }
    *held.by_key.entry(job.key_id.clone()).or_default() += 1;
    if let Some(batch) = &job.batch_id {
        *held.by_batch.entry(batch.clone()).or_default() += 1;
    }
    true
}

/// Counts an ended job off its key's and batch's caps.
fn put_back(jobs: &Jobs, job: &drover_store::Job) {
    let mut held = drover_core::sync::lock(&jobs.held);
    if let Some(n) = held.by_key.get_mut(&job.key_id) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            held.by_key.remove(&job.key_id);
        }
    }
    if let Some(batch) = &job.batch_id
        && let Some(n) = held.by_batch.get_mut(batch)
    {
        *n = n.saturating_sub(1);
        if *n == 0 {
            held.by_batch.remove(batch);
        }
    }
}

/// Runs one claimed job and hands how it ended to the writer.
async fn run_one(hub: Arc<HubState>, jobs: Arc<Jobs>, claimed: Claimed, tx: mpsc::Sender<Pending>) {
    let id = claimed.job.id.clone();
    let cancel = CancellationToken::new();
    if claimed.job.cancel_requested {
        cancel.cancel();
    }
    drover_core::sync::lock(&jobs.running).insert(id.clone(), cancel.clone());
    let started = now_ms();
    let ended = match claimed.job.kind {
        JobKind::Task => crate::workers::attempt::run(&hub, &claimed, &cancel, started).await,
        _ => attempt::run(&hub, &claimed, &cancel, started).await,
    };
    drover_core::sync::lock(&jobs.running).remove(&id);
    match ended {
        Ended::Released => {
            if let Err(error) = jobs.store.release(&claimed.lease, None).await {
                tracing::warn!(job = %id, %error, "cannot give the job back to the queue; it runs again once its lease runs out");
            }
        }
        Ended::Wait { after } => {
            let run_at = now_ms() + millis(after);
            if let Err(error) = jobs.store.release(&claimed.lease, Some(run_at)).await {
                tracing::warn!(job = %id, %error, "cannot put the job back to wait; it runs again once its lease runs out");
            }
        }
        ended => {
            let finish = conclude(&claimed, ended, started, now_ms(), &jobs.config);
            let state = finish.state;
            hub.observer.job_ended(match state {
                JobState::Queued => "retried",
                state => state.as_str(),
            });
            let calls_back = finish.then.is_some();
            let (done, taken) = oneshot::channel();
            if tx.send((finish, done)).await.is_ok() {
                match taken.await {
                    Ok(true) => {
                        tracing::debug!(job = %id, state = state.as_str(), "job attempt stored");
                        if calls_back {
                            jobs.wake_callbacks();
                        }
                    }
                    Ok(false) => {
                        tracing::warn!(job = %id, "the job's lease ran out while it ran (it was given to another runner): this attempt's end is dropped")
                    }
                    Err(_) => {}
                }
            }
        }
    }
    put_back(&jobs, &claimed.job);
    let (wake, in_flight) = jobs.lane(claimed.job.kind);
    in_flight.fetch_sub(1, Ordering::Relaxed);
    wake.notify_one();
    if claimed.job.batch_id.is_some() {
        jobs.wake_batches();
    }
}

/// How an attempt's end is stored: completed, failed for good, dead after
/// its last attempt, or queued again after a back-off, kept off the
/// backends that failed it; a final end with its callback.
fn conclude(
    claimed: &Claimed,
    ended: Ended,
    started: i64,
    now: i64,
    config: &crate::config::JobsConfig,
) -> Finish {
    let job = &claimed.job;
    let mut attempts = job.attempts.clone();
    let mut failed_backends = job.failed_backends.clone();
    let mut record = Attempt {
        number: claimed.lease.attempt,
        started_at: started,
        ended_at: now,
        backends: Vec::new(),
        status: None,
        error: None,
    };
    let (state, run_at, answer) = match ended {
        Ended::Answered {
            answer,
            backends,
            retry_after,
        } => {
            let status = answer.status;
            let retryable = status == 408 || status == 429 || status >= 500;
            let success = (200..300).contains(&status);
            // Those it failed over from failed it; the last one answered,
            // and failed it too if its answer is worth a retry.
            let failed = if retryable {
                backends.len()
            } else {
                backends.len().saturating_sub(1)
            };
            for name in &backends[..failed] {
                if !failed_backends.contains(name) {
                    failed_backends.push(name.clone());
                }
            }
            record.backends = backends;
            record.status = Some(status);
            if !success {
                record.error = Some(error_message(&answer.body, status));
            }
            if success {
                (JobState::Completed, None, Some(answer))
            } else if !retryable {
                (JobState::Failed, None, Some(answer))
            } else if job.deadline.is_some_and(|d| now >= d) {
                // Its time is up (it waited out its deadline for a slot):
                // expired, as a job that never left the store would be.
                (JobState::Expired, None, None)
            } else if job.failures() >= job.max_attempts {
                (JobState::Dead, None, Some(answer))
            } else {
                let wait =
                    backoff(config, &job.id, job.failures()).max(retry_after.unwrap_or_default());
                (JobState::Queued, Some(now + millis(wait)), None)
            }
        }
        Ended::Cancelled { backends } => {
            record.backends = backends;
            record.error = Some("cancelled while it ran".into());
            (JobState::Cancelled, None, None)
        }
        Ended::Released | Ended::Wait { .. } => (JobState::Queued, Some(now), None),
    };
    attempts.push(record);
    let then = if state.is_final() {
        let ended = Job {
            state,
            attempts: attempts.clone(),
            failed_backends: failed_backends.clone(),
            ended_at: Some(now),
            lease_owner: None,
            lease_expires_at: None,
            ..job.clone()
        };
        callback::for_ended(&ended, answer.as_ref())
    } else {
        None
    };
    Finish {
        lease: claimed.lease.clone(),
        state,
        run_at,
        attempts,
        failed_backends,
        answer,
        then,
        at: now,
    }
}

/// The error message of an answer in the OpenAI or Anthropic error shape,
/// else its status.
fn error_message(body: &[u8], status: u16) -> String {
    #[derive(serde::Deserialize)]
    struct Shape {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        message: String,
    }
    match serde_json::from_slice::<Shape>(body) {
        Ok(shape) => format!("{status}: {}", shape.error.message),
        Err(_) => format!("the server answered {status}"),
    }
}

/// The wait before the next attempt: doubling from `jobs.backoff` per
/// failure, at most `jobs.max_backoff`, less up to half at random, so jobs
/// that failed together do not come back together.
pub(super) fn backoff(config: &crate::config::JobsConfig, id: &str, failures: u32) -> Duration {
    let base = config
        .backoff
        .saturating_mul(1 << failures.saturating_sub(1).min(20));
    let capped = base.min(config.max_backoff);
    let jitter = drover_core::mix::stable_hash("job backoff", &format!("{id}/{failures}"));
    let fraction = 0.5 + (jitter % 1000) as f64 / 2000.0;
    capped.mul_f64(fraction)
}

pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Every third of a lease: renews this hub's leases (its callbacks' too),
/// gives back the jobs of runners whose leases ran out, ends jobs past
/// their deadline; the jobs it ends get their callbacks in the same
/// transaction.
async fn maintain(hub: Arc<HubState>, jobs: Arc<Jobs>) {
    let every = jobs.config.lease / 3;
    let mut failing = false;
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = now_ms();
        let result: Result<bool, StoreError> = async {
            jobs.store
                .renew_leases(&jobs.owner, now + millis(jobs.config.lease))
                .await?;
            // This hub's own leases are renewed whatever its role (its
            // jobs run to their end); giving back others' and ending
            // overdue ones is the leader's.
            if !hub.cluster.leads() {
                return Ok(false);
            }
            let rescued = jobs
                .store
                .rescue(Orphans::LeaseExpired, now, &callback::without_answer)
                .await?;
            for job in &rescued {
                tracing::warn!(job = %job.id, state = job.state.as_str(), "a job's runner vanished (its lease ran out)");
                hub.observer.job_ended("lost");
            }
            let expired = jobs
                .store
                .expire_overdue(now, &callback::without_answer)
                .await?;
            for job in &expired {
                tracing::info!(job = %job.id, "a job's deadline passed before it could run");
                hub.observer.job_ended("expired");
            }
            if expired.iter().any(|j| j.batch_id.is_some()) {
                jobs.wake_batches();
            }
            if rescued.iter().any(|r| r.state.is_final()) || !expired.is_empty() {
                jobs.wake_callbacks();
            }
            Ok(!rescued.is_empty())
        }
        .await;
        match result {
            Ok(rescued) => {
                if failing {
                    tracing::info!("the job store answers again");
                }
                failing = false;
                if rescued {
                    jobs.wake();
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot renew this hub's job leases; trying again");
                }
                failing = true;
            }
        }
    }
}
