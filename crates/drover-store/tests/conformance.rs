//! The store's conformance suite: every test runs on SQLite (a fresh file)
//! and on PostgreSQL (a fresh schema of the server at
//! `DROVER_TEST_DATABASE_URL`, by default `postgres://postgres@127.0.0.1:5432/test`;
//! `scripts/setup` starts one where none answers). Time is set by each
//! test: leases run out without anyone waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drover_store::*;
use support::{Db, Reopen, new_job};

const OWNER: &str = "hub-a";
const LEASE: i64 = 60_000;

fn claim(owner: &str, limit: u32, now: i64) -> Claim<'_> {
    Claim {
        kind: JobKind::Inference,
        owner,
        limit,
        now,
        lease_ms: LEASE,
        skip_batches: &[],
        skip_keys: &[],
        fence: None,
    }
}

fn completed(claimed: &Claimed, at: i64, body: &str) -> Finish {
    Finish {
        lease: claimed.lease.clone(),
        state: JobState::Completed,
        run_at: None,
        attempts: vec![Attempt {
            number: claimed.lease.attempt,
            started_at: at,
            ended_at: at,
            backends: vec!["b1".into()],
            status: Some(200),
            error: None,
        }],
        failed_backends: Vec::new(),
        answer: Some(Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }),
        then: None,
        at,
    }
}

async fn insert(store: &Store, job: NewJob) -> Job {
    match store.insert_job(&job).await.unwrap() {
        Inserted::Created(job) => job,
        other => panic!("not created: {other:?}"),
    }
}

fn no_callback(_: &Job) -> Option<NewJob> {
    None
}

/// The callback of a job that asked for one: `cb_` and its id, its body
/// saying how and when the job ended, as the closure saw it.
fn callback_of(job: &Job) -> Option<NewJob> {
    let url = job.callback_url.clone()?;
    let at = job.ended_at.unwrap_or(-1);
    let mut callback = new_job(&format!("cb_{}", job.id), job.priority, at);
    callback.kind = JobKind::Callback;
    callback.endpoint = url;
    callback.body = format!("{} {} at {at}", job.id, job.state.as_str()).into_bytes();
    Some(callback)
}

fn with_callback(id: &str) -> NewJob {
    let mut job = new_job(id, 50, 0);
    job.callback_url = Some("http://receiver/hook".into());
    job
}

async fn body_of(store: &Store, id: &str) -> Option<String> {
    let body = store.job_body(id).await.unwrap()?;
    Some(String::from_utf8(body).unwrap())
}

async fn claims_the_highest_priority_then_the_oldest_and_only_what_may_run_now(store: &Store) {
    insert(store, new_job("job_1", 10, 100)).await;
    insert(store, new_job("job_2", 50, 200)).await;
    insert(store, new_job("job_3", 50, 150)).await;
    insert(store, new_job("job_4", 90, 5_000)).await;
    let got = store.claim(&claim(OWNER, 10, 1_000)).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(
        ids,
        ["job_3", "job_2", "job_1"],
        "job_4 may run only at 5000"
    );
    for c in &got {
        assert_eq!(c.job.state, JobState::Running);
        assert_eq!(c.job.attempt, 1);
        assert_eq!(c.lease.attempt, 1);
        assert_eq!(c.job.lease_owner.as_deref(), Some(OWNER));
        assert_eq!(c.job.lease_expires_at, Some(1_000 + LEASE));
        assert_eq!(c.body, format!("{{\"id\":\"{}\"}}", c.job.id).into_bytes());
    }
    assert!(
        store
            .claim(&claim(OWNER, 10, 1_000))
            .await
            .unwrap()
            .is_empty()
    );
    let later = store.claim(&claim(OWNER, 10, 5_000)).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].job.id, "job_4");
}

async fn an_idempotency_key_returns_its_job_or_a_conflict(store: &Store) {
    let mut job = new_job("job_a", 50, 0);
    job.idempotency_key = Some("k1".into());
    job.request_hash = Some("hash-1".into());
    let first = insert(store, job.clone()).await;

    let mut again = job.clone();
    again.id = "job_b".into();
    match store.insert_job(&again).await.unwrap() {
        Inserted::Existing(existing) => assert_eq!(existing.id, first.id),
        other => panic!("expected the existing job, got {other:?}"),
    }
    let mut other_body = again.clone();
    other_body.id = "job_c".into();
    other_body.request_hash = Some("hash-2".into());
    match store.insert_job(&other_body).await.unwrap() {
        Inserted::Conflict(existing) => assert_eq!(existing.id, first.id),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut other_key = again.clone();
    other_key.id = "job_d".into();
    other_key.key_id = "key_other".into();
    insert(store, other_key).await;
    assert!(store.job("job_b").await.unwrap().is_none());
    assert!(store.job("job_c").await.unwrap().is_none());
}

async fn a_late_finish_from_a_rescued_attempt_changes_nothing(store: &Store) {
    insert(store, new_job("job_1", 50, 0)).await;
    let first = store.claim(&claim("hub-a", 1, 0)).await.unwrap().remove(0);
    // hub-a's lease runs out; the rescuer gives the job back, hub-b runs it.
    let rescued = store
        .rescue(Orphans::LeaseExpired, LEASE + 1, &no_callback)
        .await
        .unwrap();
    assert_eq!(
        rescued,
        [Rescued {
            id: "job_1".into(),
            state: JobState::Queued
        }]
    );
    let second = store
        .claim(&claim("hub-b", 1, LEASE + 2))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.lease.attempt, 2);

    let late = store
        .finish(&[completed(&first, LEASE + 3, "late")])
        .await
        .unwrap();
    assert_eq!(late, [false], "the rescued attempt's finish is fenced off");
    assert_eq!(store.job_answer("job_1").await.unwrap(), None);
    assert_eq!(
        store.job("job_1").await.unwrap().unwrap().state,
        JobState::Running
    );

    let taken = store
        .finish(&[completed(&second, LEASE + 4, "{\"ok\":true}")])
        .await
        .unwrap();
    assert_eq!(taken, [true]);
    let job = store.job("job_1").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.ended_at, Some(LEASE + 4));
    assert_eq!(job.lost, 1);
    assert_eq!(job.failures(), 1);
    assert_eq!(job.lease_owner, None);
    let answer = store.job_answer("job_1").await.unwrap().unwrap();
    assert_eq!(answer.body, b"{\"ok\":true}");
    assert_eq!(answer.status, 200);
    // A second finish of the same attempt is fenced too: completed once.
    let twice = store
        .finish(&[completed(&second, LEASE + 5, "again")])
        .await
        .unwrap();
    assert_eq!(twice, [false]);
    assert_eq!(
        store.job_answer("job_1").await.unwrap().unwrap().body,
        b"{\"ok\":true}"
    );
}

async fn a_group_of_finishes_takes_each_on_its_own_lease(store: &Store) {
    for i in 1..=3 {
        insert(store, new_job(&format!("job_{i}"), 50, 0)).await;
    }
    let claimed = store.claim(&claim(OWNER, 3, 0)).await.unwrap();
    let mut finishes: Vec<Finish> = claimed
        .iter()
        .map(|c| completed(c, 5, &format!("{{\"id\":\"{}\"}}", c.job.id)))
        .collect();
    finishes[1].lease.owner = "someone-else".into();
    let taken = store.finish(&finishes).await.unwrap();
    assert_eq!(taken, [true, false, true]);
    for (c, taken) in claimed.iter().zip(taken) {
        let job = store.job(&c.job.id).await.unwrap().unwrap();
        let answer = store.job_answer(&c.job.id).await.unwrap();
        if taken {
            assert_eq!(job.state, JobState::Completed);
            assert_eq!(
                answer.unwrap().body,
                format!("{{\"id\":\"{}\"}}", c.job.id).into_bytes()
            );
        } else {
            assert_eq!(job.state, JobState::Running);
            assert_eq!(answer, None);
        }
    }
}

async fn a_renewed_lease_is_not_rescued_and_a_lost_one_is_recorded(store: &Store) {
    insert(store, new_job("job_1", 50, 0)).await;
    store.claim(&claim(OWNER, 1, 0)).await.unwrap();
    assert_eq!(store.renew_leases(OWNER, 3 * LEASE).await.unwrap(), 1);
    assert_eq!(
        store.renew_leases("someone-else", 9 * LEASE).await.unwrap(),
        0
    );
    assert!(
        store
            .rescue(Orphans::LeaseExpired, 2 * LEASE, &no_callback)
            .await
            .unwrap()
            .is_empty()
    );
    let rescued = store
        .rescue(Orphans::LeaseExpired, 3 * LEASE + 1, &no_callback)
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    let job = store.job("job_1").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!((job.attempt, job.lost, job.failures()), (1, 1, 0));
    assert_eq!(job.attempts.len(), 1);
    assert!(
        job.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("runner was lost")
    );
    assert_eq!(job.lease_owner, None);
}

async fn a_job_whose_runner_keeps_vanishing_ends_dead(store: &Store) {
    insert(store, new_job("job_1", 50, 0)).await;
    let mut now = 0;
    for round in 1..=MAX_LOST {
        let claimed = store.claim(&claim(OWNER, 1, now)).await.unwrap();
        assert_eq!(claimed.len(), 1, "round {round}");
        now += LEASE + 1;
        let rescued = store
            .rescue(Orphans::LeaseExpired, now, &no_callback)
            .await
            .unwrap();
        let want = if round == MAX_LOST {
            JobState::Dead
        } else {
            JobState::Queued
        };
        assert_eq!(rescued[0].state, want, "round {round}");
    }
    let job = store.job("job_1").await.unwrap().unwrap();
    assert_eq!(job.attempts.len(), MAX_LOST as usize);
    assert_eq!(job.ended_at, Some(now));
}

async fn at_a_single_hubs_start_every_job_another_runner_held_comes_back(store: &Store) {
    insert(store, new_job("job_1", 50, 0)).await;
    insert(store, new_job("job_2", 50, 0)).await;
    store.claim(&claim("old-hub", 1, 0)).await.unwrap();
    store.claim(&claim("new-hub", 1, 0)).await.unwrap();
    let rescued = store
        .rescue(Orphans::NotOwnedBy("new-hub"), 10, &no_callback)
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    let back = store.job(&rescued[0].id).await.unwrap().unwrap();
    assert_eq!(back.state, JobState::Queued);
    let other = if back.id == "job_1" { "job_2" } else { "job_1" };
    assert_eq!(
        store.job(other).await.unwrap().unwrap().state,
        JobState::Running
    );
}

async fn capped_batches_and_keys_are_skipped(store: &Store) {
    let mut in_batch = new_job("job_1", 90, 0);
    in_batch.batch_id = Some("batch_x".into());
    insert(store, in_batch).await;
    let mut of_key = new_job("job_2", 80, 0);
    of_key.key_id = "key_busy".into();
    insert(store, of_key).await;
    insert(store, new_job("job_3", 10, 0)).await;
    let skip_batches = vec!["batch_x".to_string()];
    let skip_keys = vec!["key_busy".to_string()];
    let got = store
        .claim(&Claim {
            skip_batches: &skip_batches,
            skip_keys: &skip_keys,
            ..claim(OWNER, 10, 0)
        })
        .await
        .unwrap();
    let ids: Vec<&str> = got.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(ids, ["job_3"]);
}

async fn overdue_jobs_expire_instead_of_running(store: &Store) {
    let mut job = new_job("job_1", 50, 0);
    job.deadline = Some(1_000);
    insert(store, job).await;
    assert!(
        store
            .claim(&claim(OWNER, 1, 1_000))
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store.expire_overdue(1_500, &no_callback).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].state, JobState::Expired);
    assert_eq!(expired[0].ended_at, Some(1_500));
    assert!(
        store
            .expire_overdue(2_000, &no_callback)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_released_job_is_back_as_it_was_and_only_by_its_holder(store: &Store) {
    insert(store, new_job("job_1", 50, 0)).await;
    let claimed = store.claim(&claim(OWNER, 1, 0)).await.unwrap().remove(0);
    let mut foreign = claimed.lease.clone();
    foreign.owner = "someone-else".into();
    assert!(!store.release(&foreign, None).await.unwrap());
    assert!(store.release(&claimed.lease, Some(500)).await.unwrap());
    let job = store.job("job_1").await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempt, job.lease_owner),
        (JobState::Queued, 0, None)
    );
    assert_eq!(job.run_at, 500, "it waits until then");
    assert!(!store.release(&claimed.lease, None).await.unwrap());
    assert!(store.claim(&claim(OWNER, 1, 499)).await.unwrap().is_empty());
    let again = store.claim(&claim(OWNER, 1, 500)).await.unwrap().remove(0);
    assert_eq!(again.lease.attempt, 1);
}

async fn cancel_stops_a_waiting_job_and_asks_a_running_one(store: &Store) {
    insert(store, new_job("job_1", 50, 0)).await;
    insert(store, new_job("job_2", 10, 0)).await;
    let running = store.claim(&claim(OWNER, 1, 0)).await.unwrap().remove(0);
    assert_eq!(running.job.id, "job_1");
    assert!(matches!(
        store.cancel_job("job_2", 5, &no_callback).await.unwrap(),
        Some(Cancelled::Now(job)) if job.state == JobState::Cancelled
    ));
    assert!(matches!(
        store.cancel_job("job_1", 5, &no_callback).await.unwrap(),
        Some(Cancelled::Requested(job)) if job.cancel_requested
    ));
    // A runner that vanished leaves a job asked to stop cancelled.
    let rescued = store
        .rescue(Orphans::LeaseExpired, LEASE + 1, &no_callback)
        .await
        .unwrap();
    assert_eq!(rescued[0].state, JobState::Cancelled);
    assert!(matches!(
        store.cancel_job("job_1", 5, &no_callback).await.unwrap(),
        Some(Cancelled::AlreadyOver(_))
    ));
    assert_eq!(
        store.cancel_job("job_none", 5, &no_callback).await.unwrap(),
        None
    );
}

async fn a_dead_job_can_be_retried_and_a_completed_one_cannot(store: &Store) {
    insert(store, new_job("job_1", 50, 0)).await;
    insert(store, new_job("job_2", 50, 0)).await;
    let mut claimed = store.claim(&claim(OWNER, 2, 0)).await.unwrap();
    let second = claimed.pop().unwrap();
    let first = claimed.pop().unwrap();
    let mut dead = completed(&first, 10, "{\"error\":\"down\"}");
    dead.state = JobState::Dead;
    dead.answer.as_mut().unwrap().status = 502;
    store
        .finish(&[dead, completed(&second, 10, "{}")])
        .await
        .unwrap();

    let job = match store.retry_job(&first.job.id, 3, 20).await.unwrap() {
        Some(Retried::Queued(job)) => job,
        other => panic!("not queued again: {other:?}"),
    };
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.max_attempts, 4, "one failure kept, three more allowed");
    assert_eq!(job.ended_at, None);
    assert_eq!(job.attempts.len(), 1, "its history stays");
    assert_eq!(store.job_answer(&first.job.id).await.unwrap(), None);
    assert!(matches!(
        store.retry_job(&second.job.id, 3, 20).await.unwrap(),
        Some(Retried::Completed(_))
    ));
    assert!(matches!(
        store.retry_job(&first.job.id, 3, 20).await.unwrap(),
        Some(Retried::NotOver(_))
    ));
    let again = store.claim(&claim(OWNER, 5, 20)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].lease.attempt, 2);
}

async fn lists_page_newest_first_and_filter(store: &Store) {
    for i in 1..=5 {
        let mut job = new_job(&format!("job_{i}"), 50, 0);
        if i % 2 == 0 {
            job.key_id = "key_even".into();
            job.batch_id = Some("batch_even".into());
        }
        insert(store, job).await;
    }
    let page = store
        .jobs(&JobFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = page.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["job_5", "job_4"]);
    assert!(page.has_more);
    let next = store
        .jobs(&JobFilter {
            limit: 10,
            after: Some("job_4".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = next.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["job_3", "job_2", "job_1"]);
    assert!(!next.has_more);
    let even = store
        .jobs(&JobFilter {
            key_id: Some("key_even".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(even.jobs.len(), 2);
    let batch = store
        .jobs(&JobFilter {
            batch_id: Some("batch_even".into()),
            state: Some(JobState::Queued),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(batch.jobs.len(), 2);
    store.claim(&claim(OWNER, 1, 0)).await.unwrap();
    let counts = store.job_counts(None).await.unwrap();
    assert!(counts.contains(&(JobState::Queued, 4)), "{counts:?}");
    assert!(counts.contains(&(JobState::Running, 1)), "{counts:?}");
}

async fn a_batch_of_lines_is_stored_whole(store: &Store) {
    let lines: Vec<NewJob> = (0..2_500)
        .map(|i| {
            let mut job = new_job(&format!("job_{i:05}"), 10, 0);
            job.batch_id = Some("batch_1".into());
            job.custom_id = Some(format!("line-{i}"));
            job
        })
        .collect();
    store.insert_jobs(&lines).await.unwrap();
    assert_eq!(
        store.job_counts(Some("batch_1")).await.unwrap(),
        [(JobState::Queued, 2_500)]
    );
    // One duplicate id: nothing of the second batch is stored.
    let mut again = lines[..3].to_vec();
    for job in &mut again {
        job.batch_id = Some("batch_2".into());
    }
    assert!(store.insert_jobs(&again).await.is_err());
    assert!(store.job_counts(Some("batch_2")).await.unwrap().is_empty());
}

async fn a_finish_stores_its_callback_in_the_same_transaction(store: &Store) {
    insert(store, new_job("job_1", 50, 0)).await;
    let claimed = store.claim(&claim(OWNER, 1, 0)).await.unwrap().remove(0);
    let mut finish = completed(&claimed, 10, "{}");
    let mut callback = new_job("job_cb", 50, 10);
    callback.kind = JobKind::Callback;
    finish.then = Some(callback);
    // Fenced off (another owner): no callback either.
    let mut stale = finish.clone();
    stale.lease.owner = "someone-else".into();
    assert_eq!(store.finish(&[stale]).await.unwrap(), [false]);
    assert!(store.job("job_cb").await.unwrap().is_none());
    assert_eq!(store.finish(&[finish]).await.unwrap(), [true]);
    let cb = store.job("job_cb").await.unwrap().unwrap();
    assert_eq!(cb.kind, JobKind::Callback);
    // Inference runners do not take callbacks.
    assert!(store.claim(&claim(OWNER, 5, 10)).await.unwrap().is_empty());
    let callbacks = store
        .claim(&Claim {
            kind: JobKind::Callback,
            ..claim(OWNER, 5, 10)
        })
        .await
        .unwrap();
    assert_eq!(callbacks.len(), 1);
    // A key's list of its jobs need not show their callbacks.
    let inference = store
        .jobs(&JobFilter {
            kind: Some(JobKind::Inference),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = inference.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["job_1"]);
}

async fn expiry_stores_the_callbacks_of_the_jobs_it_ends_in_its_transaction(store: &Store) {
    let mut asked = with_callback("job_1");
    asked.deadline = Some(1_000);
    insert(store, asked).await;
    let mut silent = new_job("job_2", 50, 0);
    silent.deadline = Some(1_000);
    insert(store, silent).await;
    let mut later = with_callback("job_3");
    later.deadline = Some(5_000);
    insert(store, later).await;

    // A callback that cannot be stored (its id is taken) leaves every job
    // waiting: the ends and their callbacks are stored together or not at
    // all.
    let clashing = |job: &Job| {
        let mut callback = callback_of(job)?;
        callback.id = "job_3".into();
        Some(callback)
    };
    assert!(store.expire_overdue(1_500, &clashing).await.is_err());
    for id in ["job_1", "job_2"] {
        let job = store.job(id).await.unwrap().unwrap();
        assert_eq!((job.state, job.ended_at), (JobState::Queued, None), "{id}");
    }

    let mut expired: Vec<String> = store
        .expire_overdue(1_500, &callback_of)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    expired.sort();
    assert_eq!(expired, ["job_1", "job_2"]);
    let callback = store.job("cb_job_1").await.unwrap().unwrap();
    assert_eq!(callback.kind, JobKind::Callback);
    assert_eq!(callback.state, JobState::Queued);
    assert_eq!(callback.endpoint, "http://receiver/hook");
    assert_eq!(
        body_of(store, "cb_job_1").await.as_deref(),
        Some("job_1 expired at 1500"),
        "the callback is made from the job as it ended"
    );
    assert!(store.job("cb_job_2").await.unwrap().is_none());
    let callbacks = store
        .claim(&Claim {
            kind: JobKind::Callback,
            ..claim(OWNER, 10, 1_500)
        })
        .await
        .unwrap();
    assert_eq!(callbacks.len(), 1);
    assert_eq!(callbacks[0].job.id, "cb_job_1");
    // Expired once, called back once.
    assert!(
        store
            .expire_overdue(2_000, &callback_of)
            .await
            .unwrap()
            .is_empty()
    );
    let stored: u64 = store
        .job_counts(None)
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(stored, 4);
}

async fn a_cancel_or_a_lost_runner_that_ends_a_job_stores_its_callback(store: &Store) {
    // Cancelled while it waited.
    insert(store, with_callback("job_1")).await;
    assert!(matches!(
        store.cancel_job("job_1", 5, &callback_of).await.unwrap(),
        Some(Cancelled::Now(_))
    ));
    assert_eq!(
        body_of(store, "cb_job_1").await.as_deref(),
        Some("job_1 cancelled at 5")
    );
    // Already over: no second callback.
    assert!(matches!(
        store.cancel_job("job_1", 6, &callback_of).await.unwrap(),
        Some(Cancelled::AlreadyOver(_))
    ));

    // Asked to stop while it ran, then its runner was lost.
    insert(store, with_callback("job_2")).await;
    store.claim(&claim(OWNER, 1, 10)).await.unwrap();
    assert!(matches!(
        store.cancel_job("job_2", 20, &callback_of).await.unwrap(),
        Some(Cancelled::Requested(_))
    ));
    assert!(
        store.job("cb_job_2").await.unwrap().is_none(),
        "it still runs"
    );
    let rescued = store
        .rescue(Orphans::LeaseExpired, LEASE + 11, &callback_of)
        .await
        .unwrap();
    assert_eq!(rescued[0].state, JobState::Cancelled);
    assert_eq!(
        body_of(store, "cb_job_2").await.as_deref(),
        Some(format!("job_2 cancelled at {}", LEASE + 11).as_str())
    );

    // Its runner lost once too often: dead. Given back before that, it
    // had not ended: no callback then.
    insert(store, with_callback("job_3")).await;
    let mut now = LEASE + 20;
    for round in 1..=MAX_LOST {
        assert_eq!(store.claim(&claim(OWNER, 1, now)).await.unwrap().len(), 1);
        now += LEASE + 1;
        store
            .rescue(Orphans::LeaseExpired, now, &callback_of)
            .await
            .unwrap();
        let called = store.job("cb_job_3").await.unwrap().is_some();
        assert_eq!(called, round == MAX_LOST, "round {round}");
    }
    assert_eq!(
        body_of(store, "cb_job_3").await.as_deref(),
        Some(format!("job_3 dead at {now}").as_str())
    );

    // A job that asked for none gets none.
    insert(store, new_job("job_4", 50, 0)).await;
    store.cancel_job("job_4", now, &callback_of).await.unwrap();
    assert!(store.job("cb_job_4").await.unwrap().is_none());
}

async fn a_setting_keeps_the_first_value_stored(store: &Store) {
    assert_eq!(store.setting("webhook_secret").await.unwrap(), None);
    assert_eq!(
        store
            .setting_or_insert("webhook_secret", "first")
            .await
            .unwrap(),
        "first"
    );
    assert_eq!(
        store
            .setting_or_insert("webhook_secret", "second")
            .await
            .unwrap(),
        "first"
    );
    // Hubs that start together each get the value stored first.
    let other = store.reopen().await;
    let (a, b) = tokio::join!(
        store.setting_or_insert("shared", "from-a"),
        other.setting_or_insert("shared", "from-b")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert!(a == "from-a" || a == "from-b", "{a}");
    // A new value replaces the old one for every hub.
    store
        .set_setting("webhook_secret", "rotated")
        .await
        .unwrap();
    assert_eq!(
        other.setting("webhook_secret").await.unwrap().as_deref(),
        Some("rotated")
    );
    assert_eq!(store.setting("nothing").await.unwrap(), None);
    other.close().await;
}

async fn two_runners_claiming_at_once_never_share_a_job(store: &Store) {
    let jobs: Vec<NewJob> = (0..400)
        .map(|i| new_job(&format!("job_{i:04}"), 50, 0))
        .collect();
    store.insert_jobs(&jobs).await.unwrap();
    let other = store.reopen().await;
    let run = |store: Store, owner: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.claim(&claim(owner, 7, 0)).await.unwrap();
                if batch.is_empty() {
                    break got;
                }
                got.extend(batch.into_iter().map(|c| c.job.id));
            }
        })
    };
    let a = run(store.clone(), "hub-a");
    let b = run(other.clone(), "hub-b");
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let mut all: Vec<String> = a.iter().chain(b.iter()).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 400, "every job claimed once");
    assert_eq!(a.len() + b.len(), 400, "no job claimed twice");
    other.close().await;
}

async fn a_file_is_stored_in_chunks_and_read_back_whole(store: &Store) {
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    for (i, key) in [(1, "key_a"), (2, "key_a"), (3, "key_b")] {
        let file = NewFile {
            id: format!("file_{i}"),
            key_id: key.into(),
            purpose: "batch".into(),
            filename: format!("in-{i}.jsonl"),
            created_at: i,
            expires_at: None,
        };
        let stored = store.put_file(&file, &data).await.unwrap();
        assert_eq!(stored.bytes, data.len() as i64);
    }
    assert_eq!(store.file_content("file_2").await.unwrap().unwrap(), data);
    let (page, more) = store
        .files(&FileFilter {
            key_id: "key_a".into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page[0].id, "file_2");
    assert!(more);
    let (page, more) = store
        .files(&FileFilter {
            key_id: "key_a".into(),
            after: Some("file_2".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "file_1");
    assert!(!more);
    assert!(store.delete_file("file_2").await.unwrap());
    assert!(!store.delete_file("file_2").await.unwrap());
    assert_eq!(store.file_content("file_2").await.unwrap(), None);
    assert_eq!(store.file("file_2").await.unwrap(), None);
}

fn batch(id: &str) -> Batch {
    Batch {
        id: id.into(),
        key_id: ANONYMOUS.into(),
        endpoint: "/v1/chat/completions".into(),
        input_file_id: "file_in".into(),
        completion_window: "24h".into(),
        status: "in_progress".into(),
        output_file_id: None,
        error_file_id: None,
        errors: None,
        metadata: None,
        total: 3,
        max_concurrency: None,
        created_at: 0,
        in_progress_at: Some(0),
        expires_at: 86_400_000,
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        expired_at: None,
        cancelling_at: None,
        cancelled_at: None,
    }
}

async fn a_batch_is_stored_with_its_lines_and_ends_once(store: &Store) {
    let lines: Vec<NewJob> = (0..3)
        .map(|i| {
            let mut job = new_job(&format!("job_{i}"), 10, 0);
            job.batch_id = Some("batch_1".into());
            job.custom_id = Some(format!("line-{i}"));
            job
        })
        .collect();
    store.create_batch(&batch("batch_1"), &lines).await.unwrap();
    assert_eq!(store.open_batches().await.unwrap().len(), 1);
    let claimed = store.claim(&claim(OWNER, 1, 0)).await.unwrap().remove(0);
    store
        .finish(&[completed(&claimed, 5, "{\"ok\":1}")])
        .await
        .unwrap();
    let lines = store.batch_lines("batch_1", None, 10).await.unwrap();
    assert_eq!(lines.len(), 3);
    let answered: Vec<_> = lines.iter().filter(|(_, a)| a.is_some()).collect();
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].0.id, claimed.job.id);
    assert_eq!(answered[0].1.as_ref().unwrap().body, b"{\"ok\":1}");

    // Cancel: the waiting lines at once, the batch cancelling.
    assert!(store.cancel_batch("batch_1", 7).await.unwrap());
    assert!(!store.cancel_batch("batch_1", 8).await.unwrap());
    let counts = store.job_counts(Some("batch_1")).await.unwrap();
    assert!(counts.contains(&(JobState::Cancelled, 2)), "{counts:?}");
    let output = NewFile {
        id: "file_out".into(),
        key_id: ANONYMOUS.into(),
        purpose: "batch_output".into(),
        filename: "batch_1_output.jsonl".into(),
        created_at: 9,
        expires_at: None,
    };
    let files = BatchFiles {
        output: Some((output, b"line\n".to_vec())),
        errors: None,
    };
    assert!(
        store
            .end_batch("batch_1", "cancelling", BatchEnd::Cancelled, &files, 9)
            .await
            .unwrap()
    );
    // Ended once: a second end (another hub, a restart) stores nothing.
    assert!(
        !store
            .end_batch("batch_1", "cancelling", BatchEnd::Cancelled, &files, 10)
            .await
            .unwrap()
    );
    let ended = store.batch("batch_1").await.unwrap().unwrap();
    assert_eq!(ended.status, "cancelled");
    assert_eq!(ended.cancelled_at, Some(9));
    assert_eq!(ended.output_file_id.as_deref(), Some("file_out"));
    assert_eq!(
        store.file_content("file_out").await.unwrap().unwrap(),
        b"line\n"
    );
    assert!(store.open_batches().await.unwrap().is_empty());
    let (listed, _) = store.batches(ANONYMOUS, None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
}

async fn every_keys_batches_list_newest_first_with_their_lines_counted(store: &Store) {
    for (i, (key, status)) in [
        ("key_a", "completed"),
        ("key_b", "in_progress"),
        ("key_a", "cancelled"),
        ("key_b", "failed"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = batch(&format!("batch_{i}"));
        b.key_id = key.into();
        b.status = status.into();
        let lines: Vec<NewJob> = (0..2)
            .map(|n| {
                let mut job = new_job(&format!("job_{i}_{n}"), 10, 0);
                job.key_id = key.into();
                job.batch_id = Some(b.id.clone());
                job
            })
            .collect();
        store.create_batch(&b, &lines).await.unwrap();
    }
    let ids = |page: &[Batch]| page.iter().map(|b| b.id.clone()).collect::<Vec<_>>();
    let (first, more) = store
        .list_batches(&BatchFilter {
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&first), ["batch_3", "batch_2", "batch_1"]);
    assert!(more);
    let (rest, more) = store
        .list_batches(&BatchFilter {
            after: Some("batch_1".into()),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&rest), ["batch_0"]);
    assert!(!more);
    let (ended, _) = store
        .list_batches(&BatchFilter {
            ended: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&ended), ["batch_3", "batch_2", "batch_0"]);
    let (of_b, _) = store
        .list_batches(&BatchFilter {
            key_id: Some("key_b".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&of_b), ["batch_3", "batch_1"]);
    // The key's own listing is the same query.
    let (own, _) = store.batches("key_b", None, 10).await.unwrap();
    assert_eq!(ids(&own), ["batch_3", "batch_1"]);

    // Counted in one go: each batch's lines by state, nothing for an
    // unknown batch.
    let claimed = store.claim(&claim(OWNER, 1, 0)).await.unwrap().remove(0);
    assert_eq!(claimed.job.batch_id.as_deref(), Some("batch_0"));
    let counts = store
        .batch_counts(&[
            "batch_0".to_string(),
            "batch_2".to_string(),
            "batch_none".to_string(),
        ])
        .await
        .unwrap();
    let mut of_0 = counts["batch_0"].clone();
    of_0.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(of_0, [(JobState::Queued, 1), (JobState::Running, 1)]);
    assert_eq!(counts["batch_2"], [(JobState::Queued, 2)]);
    assert!(!counts.contains_key("batch_none"), "{counts:?}");
    assert!(store.batch_counts(&[]).await.unwrap().is_empty());
}

async fn run_time_backends_and_pins_are_kept(store: &Store) {
    store
        .save_backend("b2", "{\"url\":\"http://b2\"}", 2)
        .await
        .unwrap();
    store
        .save_backend("b1", "{\"url\":\"http://b1\"}", 1)
        .await
        .unwrap();
    store
        .save_backend("b2", "{\"url\":\"http://b2:81\"}", 3)
        .await
        .unwrap();
    let saved = store.saved_backends().await.unwrap();
    assert_eq!(
        saved,
        [
            ("b1".to_string(), "{\"url\":\"http://b1\"}".to_string()),
            ("b2".to_string(), "{\"url\":\"http://b2:81\"}".to_string())
        ]
    );
    assert!(store.forget_backend("b1").await.unwrap());
    assert!(!store.forget_backend("b1").await.unwrap());
    assert_eq!(store.saved_backends().await.unwrap().len(), 1);
    store.set_pin("m", true, 1).await.unwrap();
    store.set_pin("m", true, 2).await.unwrap();
    store.set_pin("n", true, 3).await.unwrap();
    store.set_pin("n", false, 4).await.unwrap();
    assert_eq!(store.pins().await.unwrap(), ["m"]);
}

fn key(id: &str, name: &str, created: i64) -> StoredKey {
    StoredKey {
        id: id.into(),
        name: name.into(),
        kind: "client".into(),
        sha256: format!("hash-of-{id}"),
        prefix: "drv_c_0123".into(),
        created_unix: created,
        revoked_unix: None,
        limits: "{}".into(),
        webhook_secret: None,
    }
}

async fn keys_are_kept_with_one_active_key_a_name(store: &Store) {
    assert!(store.insert_key(&key("k2", "two", 2)).await.unwrap());
    assert!(store.insert_key(&key("k1", "one", 1)).await.unwrap());
    // The same id, the same hash, or the name of an active key: refused.
    assert!(!store.insert_key(&key("k1", "other", 3)).await.unwrap());
    let mut same_hash = key("k3", "three", 3);
    same_hash.sha256 = "hash-of-k1".into();
    assert!(!store.insert_key(&same_hash).await.unwrap());
    assert!(!store.insert_key(&key("k3", "one", 3)).await.unwrap());
    let kept = store.keys().await.unwrap();
    assert_eq!(
        kept.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["k1", "k2"]
    );
    assert_eq!(kept[0], key("k1", "one", 1));

    assert!(
        store
            .set_key_webhook_secret("k1", Some("whsec_x"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_key_webhook_secret("nope", Some("whsec_x"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.keys().await.unwrap()[0].webhook_secret.as_deref(),
        Some("whsec_x")
    );
    // Revoked: once, its secret gone with it, and its name free again.
    assert!(store.revoke_key("k1", 10).await.unwrap());
    assert!(!store.revoke_key("k1", 11).await.unwrap());
    let revoked = &store.keys().await.unwrap()[0];
    assert_eq!(
        (revoked.revoked_unix, revoked.webhook_secret.as_deref()),
        (Some(10), None)
    );
    assert!(
        !store
            .set_key_webhook_secret("k1", Some("whsec_y"))
            .await
            .unwrap()
    );
    assert!(store.insert_key(&key("k3", "one", 3)).await.unwrap());
    assert_eq!(store.purge_keys().await.unwrap(), 1);
    assert_eq!(
        store
            .keys()
            .await
            .unwrap()
            .iter()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>(),
        ["k2", "k3"]
    );
}

async fn a_stored_job_wakes_the_hubs_listening_on_postgres(store: &Store) {
    let Some(mut wakeups) = store.wakeups().await.unwrap() else {
        assert!(store.is_single_hub(), "only SQLite listens to nobody");
        return;
    };
    insert(store, new_job("j1", 10, 1)).await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), wakeups.next());
    assert_eq!(
        next.await.expect("a hint within seconds").unwrap(),
        Wakeup::Stored(JobKind::Inference)
    );
    let mut callback = new_job("c1", 10, 1);
    callback.kind = JobKind::Callback;
    store.insert_jobs(&[callback]).await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), wakeups.next());
    assert_eq!(
        next.await.expect("a hint within seconds").unwrap(),
        Wakeup::Stored(JobKind::Callback)
    );
    let mut task = new_job("t1", 10, 1);
    task.kind = JobKind::Task;
    store.insert_jobs(&[task]).await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), wakeups.next());
    assert_eq!(
        next.await.expect("a hint within seconds").unwrap(),
        Wakeup::Stored(JobKind::Task)
    );
}

fn join_token(id: &str, single_use: bool, expires: i64) -> JoinToken {
    JoinToken {
        id: id.into(),
        sha256: format!("sha-{id}"),
        prefix: "drv_j_".into(),
        created_unix: 100,
        expires_unix: expires,
        single_use: i64::from(single_use),
        used_unix: None,
        revoked_unix: None,
    }
}

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        name: format!("box-{id}"),
        credential_sha256: format!("cred-{id}"),
        token_id: String::new(),
        joined_unix: 200,
        last_seen_ms: 200,
        version: "0.1.0".into(),
        facts: "{}".into(),
        draining: 0,
        removed_unix: None,
        services: "[]".into(),
    }
}

async fn a_join_token_lets_nodes_in_once_until_it_expires_or_is_revoked(store: &Store) {
    store
        .insert_join_token(&join_token("once", true, 1_000))
        .await
        .unwrap();
    store
        .insert_join_token(&join_token("many", false, 1_000))
        .await
        .unwrap();
    store
        .insert_join_token(&join_token("old", false, 150))
        .await
        .unwrap();
    store
        .insert_join_token(&join_token("gone", false, 1_000))
        .await
        .unwrap();
    assert!(store.revoke_join_token("gone", 120).await.unwrap());
    assert_eq!(
        store.join_node("sha-once", &node("n1"), 200).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        store.join_node("sha-once", &node("n2"), 201).await.unwrap(),
        Err(JoinRefused::Used)
    );
    assert_eq!(
        store.join_node("sha-many", &node("n3"), 202).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        store.join_node("sha-many", &node("n4"), 203).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        store.join_node("sha-old", &node("n5"), 200).await.unwrap(),
        Err(JoinRefused::Expired)
    );
    assert_eq!(
        store.join_node("sha-gone", &node("n6"), 200).await.unwrap(),
        Err(JoinRefused::Revoked)
    );
    assert_eq!(
        store
            .join_node("sha-forged", &node("n7"), 200)
            .await
            .unwrap(),
        Err(JoinRefused::Unknown)
    );
    let ids: Vec<String> = store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, ["n1", "n3", "n4"], "refused joins store nothing");
    let n1 = store.node_by_credential("cred-n1").await.unwrap().unwrap();
    assert_eq!(n1.token_id, "once");
    let beat = |id: &str, version: &str, at: i64| NodeBeat {
        id: id.into(),
        version: version.into(),
        facts: r#"{"cpus":2}"#.into(),
        services: r#"[{"name":"llama"}]"#.into(),
        last_seen_ms: at,
    };
    // Several nodes' heartbeats in one write; one of a node that is not
    // there changes nothing.
    store
        .node_heartbeats(&[
            beat("n1", "0.2.0", 300),
            beat("n3", "0.3.0", 301),
            beat("n9", "9", 1),
        ])
        .await
        .unwrap();
    let n3 = store.node_by_credential("cred-n3").await.unwrap().unwrap();
    assert_eq!((n3.last_seen_ms, n3.version.as_str()), (301, "0.3.0"));
    // An older heartbeat written late (a batch that waited) does not undo
    // a newer one.
    store
        .node_heartbeats(&[beat("n3", "0.2.9", 299)])
        .await
        .unwrap();
    let n3 = store.node_by_credential("cred-n3").await.unwrap().unwrap();
    assert_eq!((n3.last_seen_ms, n3.version.as_str()), (301, "0.3.0"));
    assert_eq!(store.nodes().await.unwrap().len(), 3);
    let n1 = store.node_by_credential("cred-n1").await.unwrap().unwrap();
    assert_eq!((n1.last_seen_ms, n1.version.as_str()), (300, "0.2.0"));
    assert_eq!(n1.services, r#"[{"name":"llama"}]"#);
    assert!(store.node_by_credential("cred-n2").await.unwrap().is_none());
}

fn command(id: &str, node: &str, at: i64) -> NodeCommand {
    NodeCommand {
        id: id.into(),
        node_id: node.into(),
        action: "restart".into(),
        service: "llama".into(),
        created_ms: at,
        state: "queued".into(),
        sent_ms: None,
        finished_ms: None,
        result: None,
        args: String::new(),
    }
}

async fn a_nodes_commands_go_out_once_in_order_and_take_one_answer(store: &Store) {
    let other = store.reopen().await;
    for n in ["c1", "c2"] {
        store
            .insert_join_token(&join_token(&format!("t-{n}"), true, 1_000))
            .await
            .unwrap();
        store
            .join_node(&format!("sha-t-{n}"), &node(n), 200)
            .await
            .unwrap()
            .unwrap();
    }
    for (id, at) in [("cmd-b", 20), ("cmd-a", 10), ("cmd-c", 30)] {
        store
            .insert_node_command(&command(id, "c1", at))
            .await
            .unwrap();
    }
    store
        .insert_node_command(&command("cmd-other", "c2", 5))
        .await
        .unwrap();
    // Two polls race (two hubs, or an agent that reconnected): a command
    // goes to one of them, never both; what neither took, the next poll
    // takes.
    let (mine, theirs) = tokio::join!(
        store.take_node_commands("c1", 100, 2),
        other.take_node_commands("c1", 100, 2)
    );
    let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
    for took in [&mine, &theirs] {
        let at: Vec<i64> = took.iter().map(|c| c.created_ms).collect();
        assert!(at.is_sorted(), "each poll's commands oldest first: {at:?}");
    }
    let mut taken: Vec<String> = mine
        .into_iter()
        .chain(theirs)
        .chain(store.take_node_commands("c1", 101, 10).await.unwrap())
        .map(|c| c.id)
        .collect();
    taken.sort();
    assert_eq!(taken, ["cmd-a", "cmd-b", "cmd-c"]);
    assert!(
        store
            .take_node_commands("c1", 102, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Only its node answers it, once.
    assert!(
        !store
            .finish_node_command("c2", "cmd-a", true, "x", 110)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_node_command("c1", "cmd-a", false, "no such service", 110)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_node_command("c1", "cmd-a", true, "again", 111)
            .await
            .unwrap()
    );
    let a = store.node_command("cmd-a").await.unwrap().unwrap();
    assert_eq!(
        (a.state.as_str(), a.result.as_deref(), a.finished_ms),
        ("failed", Some("no such service"), Some(110))
    );
    // Queued, a command is not answered.
    assert!(
        !store
            .finish_node_command("c2", "cmd-other", true, "x", 110)
            .await
            .unwrap()
    );
    assert!(store.set_node_draining("c2", true).await.unwrap());
    assert!(!store.set_node_draining("nobody", true).await.unwrap());
    let c2 = store.node_by_credential("cred-c2").await.unwrap().unwrap();
    assert_eq!(c2.draining, 1);
}

async fn two_agents_racing_with_one_single_use_token_let_one_node_in(store: &Store) {
    let other = store.reopen().await;
    for round in 0..40 {
        let token = format!("race{round}");
        store
            .insert_join_token(&join_token(&token, true, 1_000))
            .await
            .unwrap();
        let joins: Vec<_> = (0..4)
            .map(|i| {
                let store = if i % 2 == 0 {
                    store.clone()
                } else {
                    other.clone()
                };
                let sha = format!("sha-{token}");
                let node = node(&format!("{token}-{i}"));
                tokio::spawn(async move { store.join_node(&sha, &node, 200).await })
            })
            .collect();
        let mut joined = 0;
        for join in joins {
            match join.await.unwrap() {
                Ok(Ok(())) => joined += 1,
                Ok(Err(JoinRefused::Used)) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(joined, 1, "round {round}");
    }
    assert_eq!(store.nodes().await.unwrap().len(), 40);
    other.close().await;
}

fn plan(id: &str, key: &str, at: i64) -> NewPlan {
    NewPlan {
        id: id.into(),
        key_id: key.into(),
        request: "play weezer".into(),
        model: "planner".into(),
        answer: r#"{"tasks":[]}"#.into(),
        plan: Some(r#"{"tasks":[]}"#.into()),
        error: None,
        created_at: at,
    }
}

fn task(id: &str) -> NewJob {
    let mut task = new_job(id, 10, 1);
    task.kind = JobKind::Task;
    task.endpoint = "task".into();
    task.model = "music".into();
    task
}

async fn a_plan_is_kept_with_its_tasks_all_or_nothing(store: &Store) {
    store
        .insert_plan(&plan("p1", "k1", 1_000), &[task("t1"), task("t2")])
        .await
        .unwrap();
    let kept = store.plan("p1").await.unwrap().unwrap();
    assert_eq!(kept.tasks().unwrap(), ["t1", "t2"]);
    assert_eq!(kept.answer, r#"{"tasks":[]}"#);
    assert_eq!(store.job("t2").await.unwrap().unwrap().kind, JobKind::Task);
    // A refused plan is kept with why, and makes no task.
    let mut refused = plan("p2", "k2", 2_000);
    refused.plan = None;
    refused.error = Some("the answer is not JSON".into());
    store.insert_plan(&refused, &[]).await.unwrap();
    assert_eq!(
        store.plan("p2").await.unwrap().unwrap().tasks().unwrap(),
        Vec::<String>::new()
    );
    // A task that cannot be stored takes its plan with it.
    let err = store
        .insert_plan(&plan("p3", "k1", 3_000), &[task("t3"), task("t1")])
        .await;
    assert!(err.is_err(), "t1 is taken");
    assert!(store.plan("p3").await.unwrap().is_none());
    assert!(store.job("t3").await.unwrap().is_none());
    let ids = |plans: Vec<Plan>| plans.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(store.plans(None, 10).await.unwrap()), ["p2", "p1"]);
    assert_eq!(ids(store.plans(Some("k1"), 10).await.unwrap()), ["p1"]);
    assert_eq!(ids(store.plans(None, 1).await.unwrap()), ["p2"]);
}

fn candidate<'a>(hub: &'a str, instance: &'a str) -> Candidate<'a> {
    Candidate {
        cluster: "c",
        hub,
        instance,
        address: "http://127.0.0.1:1",
    }
}

async fn a_leader_whose_lease_is_gone_claims_nothing(store: &Store) {
    insert(store, new_job("job_1", 50, 0)).await;
    let first = store.campaign(&candidate("a", "a1"), 60_000).await.unwrap();
    // Another process of hub a takes the lease (a restart): epoch 1 is gone.
    let second = store.campaign(&candidate("a", "a2"), 60_000).await.unwrap();
    assert!(second.epoch > first.epoch);
    let fenced = |cluster: &'static str, epoch: i64| async move {
        store
            .claim(&Claim {
                fence: Some(Fence { cluster, epoch }),
                ..claim(OWNER, 10, 0)
            })
            .await
            .unwrap()
            .len()
    };
    assert_eq!(
        fenced("c", first.epoch).await,
        0,
        "the old epoch claims nothing"
    );
    assert_eq!(
        fenced("other", second.epoch).await,
        0,
        "a lease of no cluster here claims nothing"
    );
    assert_eq!(
        fenced("c", second.epoch).await,
        1,
        "the lease that holds claims"
    );
}

async fn one_hub_holds_the_lease_and_another_takes_it_once_it_runs_out(store: &Store) {
    let (a, b) = (candidate("a", "a1"), candidate("b", "b1"));
    let first = store.campaign(&a, 60_000).await.unwrap();
    assert_eq!((first.instance.as_str(), first.epoch), ("a1", 1));
    assert!(first.left_ms() > 59_000, "{first:?}");
    // Held: another hub is told who holds it, and holds nothing.
    let refused = store.campaign(&b, 60_000).await.unwrap();
    assert_eq!((refused.holder.as_str(), refused.epoch), ("a", 1));
    assert_eq!(refused.address, "http://127.0.0.1:1");
    // Renewed by its holder: the same epoch.
    assert_eq!(store.campaign(&a, 60_000).await.unwrap().epoch, 1);
    assert!(store.lease_holds("c", 1).await.unwrap());
    // A hub restarted with the same id takes it back at once, in a new
    // epoch: its earlier process's grants are not its own.
    let again = store.campaign(&candidate("a", "a2"), 60_000).await.unwrap();
    assert_eq!((again.instance.as_str(), again.epoch), ("a2", 2));
    assert!(
        !store.lease_holds("c", 1).await.unwrap(),
        "epoch 1 is fenced"
    );
    // The earlier process cannot renew in its old epoch: it is told it lost.
    let old = store.campaign(&a, 60_000).await.unwrap();
    assert_eq!(
        (old.instance.as_str(), old.epoch),
        ("a1", 3),
        "a1 is a1's id: it takes it once more, in a new epoch"
    );
    // Run out (a TTL of nothing): the other hub takes it, epoch up.
    let short = store.campaign(&a, 0).await.unwrap();
    assert_eq!(short.left_ms(), 0);
    let taken = store.campaign(&b, 60_000).await.unwrap();
    assert_eq!((taken.holder.as_str(), taken.epoch), ("b", 4));
    assert!(!store.lease_holds("c", 3).await.unwrap());
    assert!(store.lease_holds("c", 4).await.unwrap());
    // Resigning is only for its holder in its epoch; then the next takes
    // it at once.
    assert!(!store.resign("c", "a1", 4).await.unwrap());
    assert!(store.resign("c", "b1", 4).await.unwrap());
    let next = store.campaign(&a, 60_000).await.unwrap();
    assert_eq!((next.holder.as_str(), next.epoch), ("a", 5));
    // Another cluster on the same database has a lease of its own.
    let other = Candidate {
        cluster: "d",
        ..candidate("b", "b1")
    };
    assert_eq!(store.campaign(&other, 60_000).await.unwrap().epoch, 1);
    assert_eq!(store.lease("c").await.unwrap().unwrap().holder, "a");
    assert!(store.lease("e").await.unwrap().is_none());
}

async fn of_hubs_racing_for_the_lease_one_wins_each_epoch(store: &Store) {
    let ids: Vec<(String, String)> = (0..6).map(|i| (format!("h{i}"), format!("i{i}"))).collect();
    let mut races = tokio::task::JoinSet::new();
    for (hub, instance) in ids {
        let store = store.clone();
        races.spawn(async move {
            store
                .campaign(&candidate(&hub, &instance), 60_000)
                .await
                .unwrap()
        });
    }
    let seen = races.join_all().await;
    let winner = &seen[0].instance;
    assert!(
        seen.iter().all(|l| &l.instance == winner && l.epoch == 1),
        "every hub is told the same holder: {seen:?}"
    );
}

async fn hubs_say_they_are_alive_and_are_listed_while_they_are(store: &Store) {
    let row = |id: &str, role: &str| HubRow {
        id: id.into(),
        instance: format!("{id}-1"),
        address: format!("http://{id}:8700"),
        version: "0.1.0".into(),
        role: role.into(),
        epoch: 1,
        grants: 0,
        started_ms: 1,
        seen_ms: 0,
    };
    store.hub_seen("c", &row("b", "follower")).await.unwrap();
    store.hub_seen("c", &row("a", "leader")).await.unwrap();
    store.hub_seen("d", &row("z", "leader")).await.unwrap();
    let (hubs, now) = store.hubs("c", 60_000).await.unwrap();
    assert_eq!(
        hubs.iter()
            .map(|h| (h.id.as_str(), h.role.as_str()))
            .collect::<Vec<_>>(),
        [("a", "leader"), ("b", "follower")]
    );
    assert!(
        hubs.iter().all(|h| (now - h.seen_ms).abs() < 60_000),
        "seen on the database's clock"
    );
    let mut grown = row("b", "follower");
    grown.grants = 7;
    store.hub_seen("c", &grown).await.unwrap();
    let (hubs, _) = store.hubs("c", 60_000).await.unwrap();
    assert_eq!(hubs[1].grants, 7);
    // Not seen within the window: not listed, and forgotten when asked.
    assert!(store.hubs("c", -60_000).await.unwrap().0.is_empty());
    assert_eq!(store.forget_hubs("c", -60_000).await.unwrap(), 2);
    assert_eq!(store.hubs("d", 60_000).await.unwrap().0.len(), 1);
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let db = super::Db::sqlite().await;
                    super::$test(&db.store).await;
                    db.done().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let db = super::Db::postgres().await;
                    super::$test(&db.store).await;
                    db.done().await;
                }
            )*
        }
    };
}

conformance!(
    claims_the_highest_priority_then_the_oldest_and_only_what_may_run_now,
    an_idempotency_key_returns_its_job_or_a_conflict,
    a_late_finish_from_a_rescued_attempt_changes_nothing,
    a_group_of_finishes_takes_each_on_its_own_lease,
    a_renewed_lease_is_not_rescued_and_a_lost_one_is_recorded,
    a_job_whose_runner_keeps_vanishing_ends_dead,
    at_a_single_hubs_start_every_job_another_runner_held_comes_back,
    capped_batches_and_keys_are_skipped,
    overdue_jobs_expire_instead_of_running,
    a_released_job_is_back_as_it_was_and_only_by_its_holder,
    cancel_stops_a_waiting_job_and_asks_a_running_one,
    a_dead_job_can_be_retried_and_a_completed_one_cannot,
    lists_page_newest_first_and_filter,
    a_batch_of_lines_is_stored_whole,
    a_finish_stores_its_callback_in_the_same_transaction,
    expiry_stores_the_callbacks_of_the_jobs_it_ends_in_its_transaction,
    a_cancel_or_a_lost_runner_that_ends_a_job_stores_its_callback,
    a_setting_keeps_the_first_value_stored,
    two_runners_claiming_at_once_never_share_a_job,
    a_file_is_stored_in_chunks_and_read_back_whole,
    a_batch_is_stored_with_its_lines_and_ends_once,
    every_keys_batches_list_newest_first_with_their_lines_counted,
    run_time_backends_and_pins_are_kept,
    keys_are_kept_with_one_active_key_a_name,
    a_stored_job_wakes_the_hubs_listening_on_postgres,
    a_plan_is_kept_with_its_tasks_all_or_nothing,
    a_join_token_lets_nodes_in_once_until_it_expires_or_is_revoked,
    two_agents_racing_with_one_single_use_token_let_one_node_in,
    a_nodes_commands_go_out_once_in_order_and_take_one_answer,
    one_hub_holds_the_lease_and_another_takes_it_once_it_runs_out,
    a_leader_whose_lease_is_gone_claims_nothing,
    of_hubs_racing_for_the_lease_one_wins_each_epoch,
    hubs_say_they_are_alive_and_are_listed_while_they_are,
);
