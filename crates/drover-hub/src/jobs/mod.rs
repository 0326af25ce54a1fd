//! Durable jobs: requests handed over to the hub to run later, kept in the
//! store until someone comes back for their answers.
//!
//! - [`submit`]: a `POST /v1/jobs` body checked into a stored job.
//! - [`runner`]: claims a window of jobs under a lease, renews the leases,
//!   gives back the jobs of runners that vanished, ends overdue ones.
//! - [`attempt`]: one attempt of one job, through the same [`Forwarder`]
//!   as any request: it waits for its slot in the same scheduler, at its
//!   own priority, and is counted by the same observer.
//! - [`writer`]: how attempts ended, stored many to a transaction.
//! - [`view`]: a stored job as the API shows it.
//! - [`callback`]: the job, stored with an end, that tells of it at the
//!   job's `callback_url`; [`delivery`] sends it, signed with the hub's
//!   [`secret`] (Standard Webhooks), and tries again until the receiver
//!   says it has it.
//!
//! At least once, never completed twice: a job's answer is stored under
//! the lease it was claimed with, and a late answer from an attempt whose
//! lease ran out (its hub stalled or died, the job ran elsewhere) changes
//! nothing.
//!
//! [`Forwarder`]: crate::forward::Forwarder

pub(crate) mod attempt;
pub mod callback;
mod delivery;
mod listen;
pub mod runner;
pub mod secret;
pub mod submit;
pub mod view;
mod writer;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use drover_store::{Location, SQLITE_FILE, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{HubConfig, JobsConfig};

/// The job service of one hub.
pub struct Jobs {
    pub store: Store,
    pub config: JobsConfig,
    /// This hub's runner, as leases name it: unique across restarts, so a
    /// restarted hub never takes its former self's leases for its own.
    pub owner: String,
    /// Rings when there may be work: a job submitted, a slot of the window
    /// freed. The store is still polled; this only saves the wait.
    wake: Notify,
    /// Rings when a batch may have ended: a line ended, a batch was
    /// cancelled.
    batch_wake: Notify,
    /// Jobs claimed and not yet stored as ended.
    in_flight: AtomicUsize,
    /// The same two for tasks, claimed by a loop of their own: tasks that
    /// wait for a busy worker never hold inference jobs' room.
    task_wake: Notify,
    task_in_flight: AtomicUsize,
    /// Running jobs (callbacks too) by id, to stop one cancelled.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// What this hub holds, by key and by batch, against their caps.
    held: Mutex<Held>,
    /// Whether the store has answered and its schema is up to date (a
    /// PostgreSQL that was away at the hub's start is not, until it
    /// answers).
    ready: AtomicBool,
    /// What callbacks are signed with.
    pub secret: secret::Secret,
    /// Rings when there may be callbacks to send: a job ended with one, a
    /// slot of the callbacks' window freed.
    callbacks: Notify,
    /// Callbacks claimed and not yet stored as sent (or not).
    callbacks_in_flight: AtomicUsize,
}

/// Jobs this hub holds by key and by batch, and the batches' caps as
/// read from the store (once per batch).
#[derive(Default)]
pub(crate) struct Held {
    pub by_key: HashMap<String, usize>,
    pub by_batch: HashMap<String, usize>,
    pub batch_caps: HashMap<String, Option<usize>>,
}

/// Where the hub's store is: `database_url`, else `drover.db` in
/// `data_dir`; none without either.
pub fn location(config: &HubConfig) -> Result<Option<Location>, StoreError> {
    match (&config.database_url, &config.data_dir) {
        (Some(url), _) => Location::parse(url).map(Some),
        (None, Some(dir)) => Ok(Some(Location::Sqlite(dir.join(SQLITE_FILE)))),
        (None, None) => Ok(None),
    }
}

impl Jobs {
    pub fn new(store: Store, config: JobsConfig, ready: bool, secret: secret::Secret) -> Jobs {
        Jobs {
            store,
            config,
            owner: format!("hub_{}", uuid::Uuid::now_v7().simple()),
            wake: Notify::new(),
            batch_wake: Notify::new(),
            in_flight: AtomicUsize::new(0),
            task_wake: Notify::new(),
            task_in_flight: AtomicUsize::new(0),
            running: Mutex::new(HashMap::new()),
            held: Mutex::new(Held::default()),
            ready: AtomicBool::new(ready),
            secret,
            callbacks: Notify::new(),
            callbacks_in_flight: AtomicUsize::new(0),
        }
    }

    /// Whether the store can be used: it answered and its schema is
    /// current.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Tells the runner there may be work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Tells the batch finisher a batch may have ended.
    pub fn wake_batches(&self) {
        self.batch_wake.notify_one();
    }

    /// Resolves when [`Jobs::wake_batches`] was called.
    pub async fn batches_woken(&self) {
        self.batch_wake.notified().await;
    }

    /// Jobs this hub holds now (claimed, not yet stored as ended), tasks
    /// included.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed) + self.task_in_flight.load(Ordering::Relaxed)
    }

    /// Tells the task runner there may be tasks.
    pub fn wake_tasks(&self) {
        self.task_wake.notify_one();
    }

    /// The claim loop's bell and count for jobs of `kind`.
    pub(crate) fn lane(&self, kind: drover_store::JobKind) -> (&Notify, &AtomicUsize) {
        match kind {
            drover_store::JobKind::Task => (&self.task_wake, &self.task_in_flight),
            _ => (&self.wake, &self.in_flight),
        }
    }

    /// Tells the callback runner there may be callbacks to send.
    pub fn wake_callbacks(&self) {
        self.callbacks.notify_one();
    }

    /// Stops a running job of this hub's, if it runs here.
    pub fn stop(&self, id: &str) -> bool {
        match drover_core::sync::lock(&self.running).get(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// Now, in milliseconds since the Unix epoch: the store's time.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
