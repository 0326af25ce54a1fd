//! Capability workers: programs anywhere that register what they can do
//! (a browser, a shell, an NPU model), poll for tasks and answer them. To
//! the scheduler a worker is one more backend, whose "models" are its
//! capabilities and whose slots are each one's `max_concurrency`, serving
//! `Api::Task` and nothing else: a task gets least-loaded choice, priority,
//! fairness between clients and "a retry goes to another worker" from the
//! code that holds those for requests.
//!
//! A task is a durable job of kind `task` ([`attempt`] runs one attempt):
//! its slot taken, it waits in its worker's mailbox until the worker's
//! next poll, which gives it with a lease token; the worker heartbeats it
//! and completes or fails it with that token. A write with any other token
//! (a late answer after the task was given to another worker) is refused
//! (409) and changes nothing. A worker that stops heartbeating is gone
//! after three beats: it leaves the scheduler, and its tasks run elsewhere.
//!
//! The hub keeps workers and leases in memory: after a restart workers
//! register again, and tasks whose attempt was lost run again (at least
//! once, as every job).

pub(crate) mod attempt;
pub mod auth;
pub mod plan;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_core::BackendId;
use drover_proto::workers::{
    Capability, LeasedTask, Poll, RegisterWorker, TaskLease, WorkerRegistered,
};
use drover_scheduler::{BackendStatus, Event, ModelSpec};
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::hub::HubState;
use crate::jobs::now_ms;

/// The most tasks one poll takes.
const MAX_TASKS: u32 = 64;
/// The most capabilities one worker offers, and tasks of one at once.
const MAX_CAPABILITIES: usize = 64;
const MAX_CONCURRENCY: u32 = 1024;
/// The longest description of a capability, in characters.
const MAX_DESCRIPTION: usize = 1000;

/// How a task's attempt on a worker ended.
#[derive(Debug)]
pub enum Outcome {
    Completed(Value),
    Failed {
        error: String,
        retryable: bool,
    },
    /// The worker left, or stopped heartbeating the task.
    Gone(String),
}

/// Why a write on a task was refused.
#[derive(Debug, thiserror::Error)]
pub enum Fence {
    #[error("task {0} is not leased to anyone here (it ended, or this hub restarted)")]
    Unknown(String),
    #[error(
        "the lease token does not hold task {0} (its lease ran out and it went elsewhere, or it is another's)"
    )]
    Stale(String),
}

impl From<Fence> for ApiError {
    fn from(f: Fence) -> Self {
        ApiError::Conflict(f.to_string())
    }
}

struct Worker {
    /// Its place in the order workers registered: the newest schema for a
    /// capability is the one its tasks are checked against.
    seq: u64,
    /// Each capability's input schema, compiled, where it gave one.
    schemas: HashMap<String, Arc<jsonschema::Validator>>,
    name: String,
    labels: BTreeMap<String, String>,
    capabilities: Vec<Capability>,
    backend: BackendId,
    /// The key it registered with ("" without keys): only that key acts
    /// for it.
    key_id: String,
    last_seen: Instant,
    /// Polls it has waiting now: a worker parked in a long poll is alive.
    polling: u32,
    draining: bool,
    /// Tasks given to it and not yet polled, oldest first, each with the
    /// token of the lease it was given under: an entry whose lease has
    /// ended (or been given anew) is passed by, never handed out twice.
    mailbox: VecDeque<(String, String)>,
    wake: Arc<Notify>,
}

struct Lease {
    worker: String,
    token: String,
    capability: String,
    input: Value,
    attempt: u32,
    /// Whether the worker has polled it: until then it has not started,
    /// and ending it (a drain, a cancel, a wait too long) costs nothing.
    polled: bool,
    expires: Instant,
    /// Unix milliseconds of `expires`, as the worker is told.
    expires_unix_ms: i64,
    cancel_requested: bool,
    done: Option<oneshot::Sender<Outcome>>,
}

#[derive(Default)]
struct Inner {
    registered: u64,
    workers: HashMap<String, Worker>,
    by_backend: HashMap<BackendId, String>,
    leases: HashMap<String, Lease>,
}

/// Every worker this hub knows and the tasks leased to them.
pub struct Workers {
    inner: Mutex<Inner>,
    timing: crate::config::WorkersConfig,
}

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message, Some(param), "invalid_worker")
}

fn token() -> Result<String, ApiError> {
    crate::keys::random_hex::<24>("lt_")
}

impl Workers {
    pub fn new(timing: crate::config::WorkersConfig) -> Workers {
        Workers {
            inner: Mutex::new(Inner::default()),
            timing,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        drover_core::sync::lock(&self.inner)
    }

    /// Registers a worker and offers its capabilities to the scheduler.
    pub fn register(
        &self,
        hub: &HubState,
        key_id: &str,
        asked: RegisterWorker,
    ) -> Result<WorkerRegistered, ApiError> {
        crate::name::check_name("worker", &asked.name).map_err(|m| bad(m, "name"))?;
        if asked.capabilities.is_empty() || asked.capabilities.len() > MAX_CAPABILITIES {
            return Err(bad(
                format!("capabilities: from 1 to {MAX_CAPABILITIES}"),
                "capabilities",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &asked.capabilities {
            crate::name::check_name("capability", &c.name)
                .map_err(|m| bad(m, "capabilities.name"))?;
            if !seen.insert(c.name.as_str()) {
                return Err(bad(
                    format!("capability {:?} is named twice", c.name),
                    "capabilities.name",
                ));
            }
            if c.description
                .as_ref()
                .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
            {
                return Err(bad(
                    format!(
                        "capability {:?}: description is at most {MAX_DESCRIPTION} characters (it goes into every plan's prompt)",
                        c.name
                    ),
                    "capabilities.description",
                ));
            }
            if !(1..=MAX_CONCURRENCY).contains(&c.max_concurrency) {
                return Err(bad(
                    format!(
                        "capability {:?}: max_concurrency must be from 1 to {MAX_CONCURRENCY}",
                        c.name
                    ),
                    "capabilities.max_concurrency",
                ));
            }
        }
        let mut schemas = HashMap::new();
        for c in &asked.capabilities {
            if let Some(schema) = &c.input_schema {
                let validator = jsonschema::validator_for(schema).map_err(|e| {
                    bad(
                        format!(
                            "capability {:?}: input_schema is not a usable JSON Schema: {e}",
                            c.name
                        ),
                        "capabilities.input_schema",
                    )
                })?;
                schemas.insert(c.name.clone(), Arc::new(validator));
            }
        }
        let id = format!("wrk_{}", uuid::Uuid::now_v7().simple());
        let backend = hub.registry.allocate_id();
        hub.dispatcher.name(backend, &id);
        hub.dispatcher.apply(Event::Observed {
            backend,
            models: asked
                .capabilities
                .iter()
                .map(|c| ModelSpec::loaded(&c.name, c.max_concurrency))
                .collect(),
            status: Some(BackendStatus {
                tasks: true,
                ..BackendStatus::default()
            }),
            probed: None,
        });
        tracing::info!(target: "drover::action", worker = %id, name = %asked.name, capabilities = ?asked.capabilities.iter().map(|c| &c.name).collect::<Vec<_>>(), "worker registered");
        let mut inner = self.lock();
        inner.registered += 1;
        let seq = inner.registered;
        inner.by_backend.insert(backend, id.clone());
        inner.workers.insert(
            id.clone(),
            Worker {
                seq,
                schemas,
                name: asked.name,
                labels: asked.labels,
                capabilities: asked.capabilities,
                backend,
                key_id: key_id.to_string(),
                last_seen: Instant::now(),
                polling: 0,
                draining: false,
                mailbox: VecDeque::new(),
                wake: Arc::new(Notify::new()),
            },
        );
        Ok(WorkerRegistered {
            worker_id: id,
            heartbeat_s: self.timing.heartbeat.as_secs().max(1),
            lease_s: self.timing.lease.as_secs().max(1),
            poll_wait_max_s: self.timing.poll_wait_max.as_secs().max(1),
        })
    }

    /// The worker `id` as `key_id` may act for it.
    fn check_owner(inner: &Inner, id: &str, key_id: &str) -> Result<(), ApiError> {
        match inner.workers.get(id) {
            Some(w) if w.key_id == key_id => Ok(()),
            Some(_) => Err(ApiError::Forbidden(format!(
                "worker {id} was registered with another key"
            ))),
            None => Err(ApiError::NotFound {
                message: format!(
                    "no worker {:?} here (it left, was gone after missed heartbeats, or this hub restarted): register again",
                    crate::error::echo(id)
                ),
            }),
        }
    }

    /// Removes a worker: it leaves the scheduler, and its tasks run
    /// elsewhere.
    pub fn deregister(&self, hub: &HubState, id: &str, key_id: &str) -> Result<(), ApiError> {
        Self::check_owner(&self.lock(), id, key_id)?;
        self.remove(hub, id, "the worker left");
        Ok(())
    }

    fn remove(&self, hub: &HubState, id: &str, why: &str) {
        let (backend, ended) = {
            let mut inner = self.lock();
            let Some(worker) = inner.workers.remove(id) else {
                return;
            };
            inner.by_backend.remove(&worker.backend);
            worker.wake.notify_waiters();
            let ended: Vec<String> = inner
                .leases
                .iter()
                .filter(|(_, l)| l.worker == id)
                .map(|(t, _)| t.clone())
                .collect();
            let mut senders = Vec::new();
            for task in &ended {
                // One it never polled goes back uncounted (its sender
                // dropped); one it ran failed with it.
                if let Some(mut lease) = inner.leases.remove(task)
                    && lease.polled
                    && let Some(done) = lease.done.take()
                {
                    senders.push(done);
                }
            }
            for done in senders {
                let _ = done.send(Outcome::Gone(format!("worker {id}: {why}")));
            }
            (worker.backend, ended.len())
        };
        hub.dispatcher.apply(Event::Removed(backend));
        tracing::info!(target: "drover::action", worker = %id, tasks = ended, "worker removed: {why}");
    }

    /// A worker's heartbeat: whether it should run or drain. A worker
    /// that says it is draining (it was told to stop) is drained here too,
    /// so no new task goes its way while it finishes.
    pub fn heartbeat(
        &self,
        hub: &HubState,
        id: &str,
        key_id: &str,
        draining: bool,
    ) -> Result<&'static str, ApiError> {
        let drain_now = {
            let mut inner = self.lock();
            Self::check_owner(&inner, id, key_id)?;
            let Some(w) = inner.workers.get_mut(id) else {
                return Err(ApiError::Internal(
                    "a worker vanished under its lock".into(),
                ));
            };
            w.last_seen = Instant::now();
            draining && !w.draining
        };
        if drain_now {
            tracing::info!(target: "drover::action", worker = %id, "worker drains itself");
            self.drain(hub, id, true);
        }
        Ok(
            if drain_now || self.lock().workers.get(id).is_some_and(|w| w.draining) {
                "drain"
            } else {
                "run"
            },
        )
    }

    /// Tasks given to worker `id`, up to `max`, waiting up to `wait` for
    /// the first; none when the wait ends empty.
    pub async fn poll(
        &self,
        id: &str,
        key_id: &str,
        asked: &Poll,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Vec<LeasedTask>, ApiError> {
        let max = asked.max_tasks.unwrap_or(1).clamp(1, MAX_TASKS) as usize;
        let most = self.timing.poll_wait_max;
        let wait = asked.wait_s.map_or(most, Duration::from_secs).min(most);
        let only = asked.capabilities.as_deref();
        if let Some(only) = only {
            if only.is_empty() {
                return Err(bad(
                    "capabilities: name at least one, or leave it out for all",
                    "capabilities",
                ));
            }
            let inner = self.lock();
            Self::check_owner(&inner, id, key_id)?;
            if let Some(w) = inner.workers.get(id)
                && let Some(other) = only
                    .iter()
                    .find(|name| !w.capabilities.iter().any(|c| &c.name == *name))
            {
                return Err(bad(
                    format!(
                        "capabilities: worker {id} does not offer {:?}",
                        crate::error::echo(other)
                    ),
                    "capabilities",
                ));
            }
        }
        let deadline = Instant::now() + wait;
        let lease = self.timing.lease;
        let wake = {
            let inner = self.lock();
            Self::check_owner(&inner, id, key_id)?;
            match inner.workers.get(id) {
                Some(w) => w.wake.clone(),
                None => return Ok(Vec::new()),
            }
        };
        loop {
            // Listening before the mailbox is looked at: a task given
            // between the look and the wait still wakes it.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                Self::check_owner(&inner, id, key_id)?;
                let Inner {
                    workers, leases, ..
                } = &mut *inner;
                let Some(w) = workers.get_mut(id) else {
                    return Ok(Vec::new());
                };
                w.last_seen = Instant::now();
                let mut given = Vec::new();
                // Tasks of capabilities this poll did not ask for stay, in
                // their order, for a poll that does.
                let mut kept = VecDeque::new();
                while given.len() < max {
                    let Some((task, token)) = w.mailbox.pop_front() else {
                        break;
                    };
                    // A task whose lease ended while it waited is passed by.
                    let Some(l) = leases.get_mut(&task).filter(|l| l.token == token) else {
                        continue;
                    };
                    if only.is_some_and(|only| !only.contains(&l.capability)) {
                        kept.push_back((task, token));
                        continue;
                    }
                    l.polled = true;
                    l.expires = Instant::now() + lease;
                    l.expires_unix_ms = now_ms() + lease.as_millis() as i64;
                    given.push(LeasedTask {
                        id: task,
                        capability: l.capability.clone(),
                        input: l.input.clone(),
                        attempt: l.attempt,
                        lease_token: l.token.clone(),
                        lease_expires_at: l.expires_unix_ms,
                    });
                }
                kept.append(&mut w.mailbox);
                w.mailbox = kept;
                if !given.is_empty() {
                    return Ok(given);
                }
                w.polling += 1;
            }
            // Counted off when the wait ends or is dropped (the worker's
            // connection died): a worker killed in a poll is not alive.
            let parked = Parked { workers: self, id };
            let woken = tokio::select! {
                () = notified => true,
                () = tokio::time::sleep_until(deadline) => false,
                () = stop.cancelled() => false,
            };
            drop(parked);
            if !woken {
                return Ok(Vec::new());
            }
        }
    }

    /// Drains worker `id` (no new tasks; it finishes what it holds and is
    /// told `drain` at its heartbeats), or takes it back; whether it is
    /// known. Tasks given to it that it has not polled yet are new to it:
    /// they go back to the queue as they were, for another worker.
    pub fn drain(&self, hub: &HubState, id: &str, draining: bool) -> bool {
        let backend = {
            let mut inner = self.lock();
            let Some(w) = inner.workers.get_mut(id) else {
                return false;
            };
            // From here `assign` gives it nothing, whatever the scheduler
            // decided before it heard of the drain.
            w.draining = draining;
            w.backend
        };
        hub.dispatcher.apply(Event::Draining { backend, draining });
        if draining {
            let mut inner = self.lock();
            let Inner {
                workers, leases, ..
            } = &mut *inner;
            if let Some(w) = workers.get_mut(id) {
                for (task, token) in w.mailbox.drain(..) {
                    Self::hand_back(leases, &task, &token);
                }
            }
        }
        true
    }

    /// Ends the lease of a task its worker never polled, uncounted: the
    /// attempt hears its sender dropped, frees the slot as it was and puts
    /// the task back in the queue.
    fn hand_back(leases: &mut HashMap<String, Lease>, task: &str, token: &str) {
        if leases
            .get(task)
            .is_some_and(|l| l.token == token && !l.polled)
        {
            leases.remove(task);
        }
    }

    /// Gives a task to the worker holding `backend`'s slot: it waits in
    /// the worker's mailbox for its next poll. The receiver says how the
    /// attempt ended; `None` if that worker is gone already.
    pub fn assign(
        &self,
        backend: BackendId,
        task: &str,
        capability: &str,
        input: Value,
        attempt: u32,
    ) -> Result<Option<(String, oneshot::Receiver<Outcome>)>, ApiError> {
        let token = token()?;
        let lease = self.timing.lease;
        let mut inner = self.lock();
        let Some(worker_id) = inner.by_backend.get(&backend).cloned() else {
            return Ok(None);
        };
        if inner.workers.get(&worker_id).is_none_or(|w| w.draining) {
            return Ok(None);
        }
        let (tx, rx) = oneshot::channel();
        inner.leases.insert(
            task.to_string(),
            Lease {
                worker: worker_id.clone(),
                token: token.clone(),
                capability: capability.to_string(),
                input,
                attempt,
                polled: false,
                // Not polled by then, it goes back to the queue (sweep).
                expires: Instant::now() + lease,
                expires_unix_ms: now_ms() + lease.as_millis() as i64,
                cancel_requested: false,
                done: Some(tx),
            },
        );
        if let Some(w) = inner.workers.get_mut(&worker_id) {
            w.mailbox.push_back((task.to_string(), token));
            w.wake.notify_waiters();
        }
        Ok(Some((worker_id, rx)))
    }

    /// Asks the worker running `task` to stop it (its next heartbeat says
    /// so); the lease is kept until it answers or lapses. A task its worker
    /// has not polled yet is taken back: it never reaches the worker.
    pub fn cancel(&self, task: &str) {
        let mut inner = self.lock();
        match inner.leases.get_mut(task) {
            Some(lease) if !lease.polled => {
                inner.leases.remove(task);
            }
            Some(lease) => {
                lease.cancel_requested = true;
                lease.done = None;
            }
            None => {}
        }
    }

    /// The lease of `task` as `token` holds it.
    fn fenced<'a>(inner: &'a mut Inner, task: &str, token: &str) -> Result<&'a mut Lease, Fence> {
        match inner.leases.get_mut(task) {
            Some(l) if l.token == token => Ok(l),
            Some(_) => Err(Fence::Stale(task.to_string())),
            None => Err(Fence::Unknown(task.to_string())),
        }
    }

    /// A task's heartbeat: its lease renewed, and whether to stop.
    pub fn task_heartbeat(&self, task: &str, token: &str) -> Result<TaskLease, Fence> {
        let ttl = self.timing.lease;
        let mut inner = self.lock();
        let lease = Self::fenced(&mut inner, task, token)?;
        lease.expires = Instant::now() + ttl;
        lease.expires_unix_ms = now_ms() + ttl.as_millis() as i64;
        let answer = TaskLease {
            lease_expires_at: lease.expires_unix_ms,
            cancel_requested: lease.cancel_requested,
        };
        let worker = lease.worker.clone();
        if let Some(w) = inner.workers.get_mut(&worker) {
            w.last_seen = Instant::now();
        }
        Ok(answer)
    }

    /// A task's end, from the worker holding its lease.
    pub fn finish(&self, task: &str, token: &str, outcome: Outcome) -> Result<(), Fence> {
        let mut inner = self.lock();
        Self::fenced(&mut inner, task, token)?;
        if let Some(mut lease) = inner.leases.remove(task)
            && let Some(done) = lease.done.take()
        {
            let _ = done.send(outcome);
        }
        Ok(())
    }

    /// Forgets the lease of an attempt that ended on the hub's side (its
    /// job cancelled, the hub stopping).
    pub fn forget(&self, task: &str) {
        self.lock().leases.remove(task);
    }

    /// Checks a task's input against its capability's schema (the newest
    /// registered worker's that gave one): a 400 naming where the input
    /// fails it. Whether any worker offers the capability now.
    pub fn check_input(&self, capability: &str, input: &Value) -> Result<bool, ApiError> {
        let (offered, schema) = {
            let inner = self.lock();
            let offering = inner
                .workers
                .values()
                .filter(|w| w.capabilities.iter().any(|c| c.name == capability));
            let mut offered = false;
            let mut newest: Option<(u64, Arc<jsonschema::Validator>)> = None;
            for w in offering {
                offered = true;
                if let Some(v) = w.schemas.get(capability)
                    && newest.as_ref().is_none_or(|(seq, _)| w.seq > *seq)
                {
                    newest = Some((w.seq, v.clone()));
                }
            }
            (offered, newest.map(|(_, v)| v))
        };
        if let Some(schema) = schema
            && let Err(e) = schema.validate(input)
        {
            let at = e.instance_path().to_string();
            let field = if at.is_empty() || at == "/" {
                "input".to_string()
            } else {
                format!("input{at}")
            };
            return Err(ApiError::bad_request(
                format!("{field} does not meet capability {capability:?}'s input_schema: {e}"),
                Some("input"),
                "invalid_input",
            ));
        }
        Ok(offered)
    }

    /// The worker's id behind a scheduler backend, for a task's history.
    pub fn id_of(&self, backend: BackendId) -> Option<String> {
        self.lock().by_backend.get(&backend).cloned()
    }

    /// The scheduler backend of worker `id`.
    pub fn backend_of(&self, id: &str) -> Option<BackendId> {
        self.lock().workers.get(id).map(|w| w.backend)
    }

    /// Removes the workers that missed three heartbeats and ends the leases
    /// that lapsed; both send their tasks elsewhere.
    pub fn sweep(&self, hub: &HubState) {
        let now = Instant::now();
        let (silent, lapsed) = {
            let mut inner = self.lock();
            let silent: Vec<String> = inner
                .workers
                .iter()
                .filter(|(_, w)| {
                    w.polling == 0 && now.duration_since(w.last_seen) > self.timing.heartbeat * 3
                })
                .map(|(id, _)| id.clone())
                .collect();
            let lapsed: Vec<String> = inner
                .leases
                .iter()
                .filter(|(_, l)| l.expires <= now)
                .map(|(t, _)| t.clone())
                .collect();
            let mut ended = Vec::new();
            for task in lapsed {
                let Some(mut lease) = inner.leases.remove(&task) else {
                    continue;
                };
                // Never polled: it has not started, so it goes back to the
                // queue uncounted (its sender dropped here) for any worker.
                if !lease.polled {
                    tracing::info!(%task, worker = %lease.worker, "the worker did not poll the task within its lease: back to the queue");
                    continue;
                }
                if let Some(done) = lease.done.take() {
                    ended.push((task, lease.worker, done));
                }
            }
            (silent, ended)
        };
        for (task, worker, done) in lapsed {
            tracing::warn!(%task, %worker, "the task's lease lapsed without a heartbeat: it runs again elsewhere");
            let _ = done.send(Outcome::Gone(format!(
                "worker {worker} did not heartbeat the task within {} ms",
                self.timing.lease.as_millis()
            )));
        }
        for id in silent {
            self.remove(hub, &id, "it missed three heartbeats");
        }
    }

    /// Every worker, for listings: id, name, labels, capabilities, tasks
    /// held, seconds since it was last heard of, draining.
    pub fn list(&self) -> Vec<drover_proto::workers::WorkerInfo> {
        let inner = self.lock();
        let mut list: Vec<_> = inner
            .workers
            .iter()
            .map(|(id, w)| drover_proto::workers::WorkerInfo {
                id: id.clone(),
                name: w.name.clone(),
                labels: w.labels.clone(),
                capabilities: w.capabilities.clone(),
                in_flight: inner.leases.values().filter(|l| l.worker == *id).count() as u32,
                last_seen_s: w.last_seen.elapsed().as_secs(),
                draining: w.draining,
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }
}

/// A poll parked waiting for a task, counted on its worker until dropped.
struct Parked<'a> {
    workers: &'a Workers,
    id: &'a str,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.workers.lock().workers.get_mut(self.id) {
            w.polling = w.polling.saturating_sub(1);
            w.last_seen = Instant::now();
        }
    }
}

/// Sweeps the workers (every second, or each heartbeat where that is
/// shorter) until the hub stops.
pub async fn run_sweeper(hub: Arc<HubState>) {
    let every = hub.workers.timing.heartbeat.min(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        hub.workers.sweep(&hub);
    }
}
