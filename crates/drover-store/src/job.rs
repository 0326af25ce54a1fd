//! What the store keeps of a job, in the store's own terms: ids and times
//! are plain values (milliseconds since the Unix epoch, on the caller's
//! clock, which tests set), JSON is the wire's business.

use serde::{Deserialize, Serialize};

/// The key id of the anonymous client: jobs submitted without a key.
pub const ANONYMOUS: &str = "";

/// How many times a job's runner may vanish (its lease running out, as when
/// a hub is killed) before the job is dead: a job that kills its hub each
/// time must not loop for ever, and a hub's restarts must not use up a
/// job's own attempts. High, because a job is lost with its hub even while
/// it only waited in the hub's window for a slot, which says nothing of it.
pub const MAX_LOST: u32 = 25;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// A request to the fleet.
    Inference,
    /// The delivery of a finished job's callback.
    Callback,
    /// A task for a worker's capability (its `model`), its input the body.
    Task,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [JobKind::Inference, JobKind::Callback, JobKind::Task];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Inference => "inference",
            JobKind::Callback => "callback",
            JobKind::Task => "task",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "inference" => Some(JobKind::Inference),
            "callback" => Some(JobKind::Callback),
            "task" => Some(JobKind::Task),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Waiting to be claimed, now or at its `run_at`.
    Queued,
    /// Claimed by a runner that holds its lease.
    Running,
    /// Ended with a successful answer, stored.
    Completed,
    /// Ended with an answer that says no for good (a 4xx), stored.
    Failed,
    /// Every attempt failed before an answer; each attempt's error is kept.
    Dead,
    Cancelled,
    /// Its deadline passed before it could run.
    Expired,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
        JobState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether the job is over: nothing will run it again unless retried.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// A job to store.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: String,
    pub kind: JobKind,
    /// [`ANONYMOUS`] when no key submitted it.
    pub key_id: String,
    pub batch_id: Option<String>,
    pub custom_id: Option<String>,
    /// The path it goes to (`/v1/chat/completions`), or a callback's URL.
    pub endpoint: String,
    pub model: String,
    pub body: Vec<u8>,
    pub priority: u8,
    pub max_attempts: u32,
    pub run_at: i64,
    pub deadline: Option<i64>,
    pub idempotency_key: Option<String>,
    /// What the idempotency key promises: the same key with another hash
    /// is a conflict.
    pub request_hash: Option<String>,
    pub callback_url: Option<String>,
    /// A JSON object.
    pub metadata: Option<String>,
    pub created_at: i64,
}

impl NewJob {
    /// An anonymous `/v1/chat/completions` job with the defaults a hub
    /// gives one (priority 10, 3 attempts), runnable at once: what a tool
    /// or a test stores as another hub would; set the rest on it.
    pub fn chat(id: &str, model: &str, body: Vec<u8>) -> NewJob {
        NewJob {
            id: id.into(),
            kind: JobKind::Inference,
            key_id: ANONYMOUS.into(),
            batch_id: None,
            custom_id: None,
            endpoint: "/v1/chat/completions".into(),
            model: model.into(),
            body,
            priority: 10,
            max_attempts: 3,
            run_at: 0,
            deadline: None,
            idempotency_key: None,
            request_hash: None,
            callback_url: None,
            metadata: None,
            created_at: 0,
        }
    }
}

/// What an insert came to.
#[derive(Debug)]
pub enum Inserted {
    Created(Job),
    /// The idempotency key was used before with the same request.
    Existing(Job),
    /// The idempotency key was used before with another request.
    Conflict(Job),
}

/// One attempt of a job, as kept in its history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub started_at: i64,
    pub ended_at: i64,
    /// The backends it went to, in order (one attempt may fail over).
    #[serde(default)]
    pub backends: Vec<String>,
    /// The status of the answer it ended with, if one came.
    #[serde(default)]
    pub status: Option<u16>,
    /// Why it did not succeed.
    #[serde(default)]
    pub error: Option<String>,
}

/// A stored job, without its body and answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    pub key_id: String,
    pub batch_id: Option<String>,
    pub custom_id: Option<String>,
    pub endpoint: String,
    pub model: String,
    pub priority: u8,
    /// Attempts started, the lost ones included.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Attempts whose runner vanished.
    pub lost: u32,
    pub run_at: i64,
    /// When the attempt under way (or the last one) began.
    pub attempted_at: Option<i64>,
    pub deadline: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested: bool,
    pub attempts: Vec<Attempt>,
    /// Backends that failed it: a retry goes elsewhere while another can
    /// serve it.
    pub failed_backends: Vec<String>,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    pub metadata: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
}

impl Job {
    /// Attempts that failed against the fleet, which `max_attempts` bounds.
    pub fn failures(&self) -> u32 {
        self.attempt.saturating_sub(self.lost)
    }
}

/// A stored answer: what the backend (or the hub, refusing) said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The right to finish one attempt of a job: every finish is fenced on it,
/// so a late answer from an attempt that was rescued changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    pub job_id: String,
    pub attempt: u32,
    pub owner: String,
}

/// A job a runner claimed.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub job: Job,
    pub body: Vec<u8>,
    pub lease: Lease,
}

/// What to claim.
#[derive(Clone, Debug)]
pub struct Claim<'a> {
    pub kind: JobKind,
    pub owner: &'a str,
    pub limit: u32,
    pub now: i64,
    /// How long the lease lasts unless renewed, in milliseconds.
    pub lease_ms: i64,
    /// Batches and keys at their concurrency cap: none of their jobs now.
    pub skip_batches: &'a [String],
    pub skip_keys: &'a [String],
    /// The cluster lease the claimer leads under: the claim takes nothing
    /// unless that lease still holds on the database's clock, so a leader
    /// that lost its lease without noticing yet claims nothing. `None` for
    /// a hub alone.
    pub fence: Option<Fence<'a>>,
}

/// A cluster's lease in one epoch, which a leader's writes are fenced by.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub cluster: &'a str,
    pub epoch: i64,
}

/// How an attempt ended, to store under its lease.
#[derive(Clone, Debug)]
pub struct Finish {
    pub lease: Lease,
    /// `Queued` (with `run_at`) to try again; else a final state.
    pub state: JobState,
    pub run_at: Option<i64>,
    /// The whole history, this attempt included.
    pub attempts: Vec<Attempt>,
    pub failed_backends: Vec<String>,
    pub answer: Option<Answer>,
    /// A job to store with it, in the same transaction (the callback that
    /// tells of this end).
    pub then: Option<NewJob>,
    pub at: i64,
}

/// What to store beside a job that ends outside a runner's [`Finish`]
/// (cancelled while it waited, expired, dead or cancelled once its runner
/// was lost): given the job as it ended, a job to insert in the same
/// transaction (its callback), or none.
pub type Then<'a> = &'a (dyn Fn(&Job) -> Option<NewJob> + Send + Sync);

/// Which running jobs have lost their runner.
#[derive(Clone, Copy, Debug)]
pub enum Orphans<'a> {
    /// Their lease ran out before `now`.
    LeaseExpired,
    /// Any runner but this one holds them: on a store only one hub uses,
    /// at that hub's start.
    NotOwnedBy(&'a str),
}

/// A job given back to the queue (or found dead) after its runner vanished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rescued {
    pub id: String,
    pub state: JobState,
}

/// Which jobs to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Only this key's jobs (`Some(ANONYMOUS)` for the anonymous client's).
    pub key_id: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<JobKind>,
    pub state: Option<JobState>,
    pub batch_id: Option<String>,
    /// The cursor: jobs older than this one.
    pub after: Option<String>,
    pub limit: u32,
}

/// A page of jobs.
#[derive(Clone, Debug)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub has_more: bool,
}

/// What a cancel came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// It was waiting: it is cancelled.
    Now(Job),
    /// It is running: its runner is asked to stop.
    Requested(Job),
    /// It had ended already.
    AlreadyOver(Job),
}

/// What a retry came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retried {
    Queued(Job),
    /// Only a job that ended without success can be retried.
    NotOver(Job),
    Completed(Job),
}
