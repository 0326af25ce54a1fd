//! The discrete-event run: one trace, one policy, the real [`Scheduler`]
//! driven exactly as the hub drives it, and model servers that behave like
//! LM Studio.
//!
//! The hub's side: `submit` on arrival; `finish` when an attempt ends;
//! `poll` after every event and at `next_wakeup`; `probe` every 2 s; a
//! failure before any output is sent again with `resubmit`, excluding the
//! backend that failed, up to [`MAX_RETRIES`] times (drover only: the
//! seeds' bots logged the error and moved on).
//!
//! The servers' side: a (backend, model) lane runs up to `slots` requests
//! at once; more wait in the lane's own FIFO (only early binding sends
//! more). A server that is down refuses connections after 1 ms and drops
//! everything it was running or holding when it goes down. Clients give up
//! on a request that has not started by its deadline. A server that holds
//! only some of its models at once loads them (`loading`): as drover's
//! model manager decides, or on its own when a request names a model it
//! does not hold (the baselines), evicting its least recently used idle
//! model as Ollama does.

mod loading;

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use drover_core::{BackendId, ClientKey, Priority, RequestId};

use super::events::{Event, EventQueue};
use super::fleet_spec::is_down;
use super::scenario::Scenario;
use super::tally::{Fate, Tally};
use super::trace::Job;
use drover_core::mix::mix64 as mix;
use drover_scheduler::{
    Admission, Affinity, Decision, Dispatch, Outcome, Policy, Reject, Request, Scheduler,
    SchedulerConfig,
};

/// The hub's `max_retries`.
pub(crate) const MAX_RETRIES: u32 = 3;
/// How long a connection to a server that is down takes to be refused.
const REFUSED_AFTER: Duration = Duration::from_millis(1);
/// The hub's active health-probe period.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A run that has not resolved every request this long after the last
/// arrival (plus its deadline) is stopped; what is left counts as lost.
const GRACE: Duration = Duration::from_secs(3600);

/// Retries the hub makes for a policy: drover's own, none for the
/// baselines, which stand for the seeds' bots.
pub(crate) fn max_retries(policy: Policy) -> u32 {
    match policy {
        Policy::Drover => MAX_RETRIES,
        Policy::LeastConnections | Policy::RoundRobin => 0,
    }
}

/// Runs `jobs` on the scenario's fleet under `policy`.
pub(crate) fn play(scenario: &Scenario, jobs: &[Job], policy: Policy) -> Tally {
    Engine::new(scenario, jobs, policy).run()
}

/// One (backend, model) on a model server.
#[derive(Debug)]
struct Lane {
    server: usize,
    model: usize,
    slots: u32,
    base: Duration,
    /// Attempts holding a slot.
    running: Vec<usize>,
    /// Attempts the server accepted beyond its slots, oldest first.
    queue: VecDeque<usize>,
    /// Conversations whose prefix the KV cache holds, as (session, last
    /// turn answered here), least recently used first.
    cache: VecDeque<(u64, u32)>,
    /// In memory, ready to run requests.
    loaded: bool,
    /// A load is under way.
    loading: bool,
    /// How long loading it takes.
    load: Duration,
    /// When a request last started or ended here: the server's own
    /// evictions take the least recently used.
    last_used: Duration,
}

#[derive(Debug)]
struct Server {
    id: BackendId,
    up: bool,
    lanes: Vec<usize>,
    /// Models it can hold at once; `None`: all, always.
    max_loaded: Option<u32>,
    /// Lanes a request is waiting on that the server will load once a
    /// model it holds is idle (it loads on its own, under the baselines).
    waiting_loads: VecDeque<usize>,
}

/// One sending of a request to a backend.
#[derive(Debug)]
struct Attempt {
    job: usize,
    lane: usize,
    sent: Duration,
    started: Option<Duration>,
    /// False once it has ended one way or another, so a stale event for it
    /// (a completion after a crash) changes nothing.
    live: bool,
    /// Ran where its conversation's prefix was cached.
    hit: bool,
}

#[derive(Debug, Default)]
struct JobState {
    retries: u32,
    exclude: Vec<BackendId>,
}

struct Engine<'a> {
    scenario: &'a Scenario,
    jobs: &'a [Job],
    policy: Policy,
    scheduler: Scheduler,
    events: EventQueue,
    servers: Vec<Server>,
    lanes: Vec<Lane>,
    /// `lane_of[server][model]`.
    lane_of: Vec<Vec<Option<usize>>>,
    attempts: Vec<Attempt>,
    state: Vec<JobState>,
    tally: Tally,
    unresolved: usize,
    /// Wakeups already in the event heap, so each instant is queued once.
    wakeups: BTreeSet<Duration>,
    /// The hub's model manager decides loads (drover); else the servers
    /// load on their own when asked for a model.
    manages: bool,
}

impl<'a> Engine<'a> {
    fn new(scenario: &'a Scenario, jobs: &'a [Job], policy: Policy) -> Self {
        let fleet = &scenario.fleet;
        let mut scheduler = Scheduler::new(SchedulerConfig {
            policy,
            ..SchedulerConfig::default()
        });
        let manages = policy == Policy::Drover;
        let mut servers = Vec::new();
        let mut lanes = Vec::new();
        let mut lane_of = Vec::new();
        for (s, spec) in fleet.backends.iter().enumerate() {
            scheduler.upsert_backend(spec.id, fleet.model_specs(spec, manages));
            scheduler.set_backend_status(spec.id, spec.status(manages));
            let mut by_model = vec![None; fleet.models.len()];
            let mut mine = Vec::new();
            for l in &spec.lanes {
                by_model[l.model] = Some(lanes.len());
                mine.push(lanes.len());
                lanes.push(Lane {
                    server: s,
                    model: l.model,
                    slots: l.slots,
                    base: l.base,
                    running: Vec::new(),
                    queue: VecDeque::new(),
                    cache: VecDeque::new(),
                    loaded: l.resident || spec.max_loaded.is_none(),
                    loading: false,
                    load: l.load,
                    last_used: Duration::ZERO,
                });
            }
            servers.push(Server {
                id: spec.id,
                up: !is_down(spec, Duration::ZERO),
                lanes: mine,
                max_loaded: spec.max_loaded,
                waiting_loads: VecDeque::new(),
            });
            lane_of.push(by_model);
        }
        Engine {
            scenario,
            jobs,
            policy,
            scheduler,
            events: EventQueue::default(),
            servers,
            lanes,
            lane_of,
            attempts: Vec::new(),
            state: jobs.iter().map(|_| JobState::default()).collect(),
            tally: Tally::new(jobs).counting_loads(fleet.loads()),
            unresolved: jobs.len(),
            wakeups: BTreeSet::new(),
            manages,
        }
    }

    fn run(mut self) -> Tally {
        for (i, job) in self.jobs.iter().enumerate() {
            self.events.push(job.arrival, Event::Arrive(i));
        }
        for (s, spec) in self.scenario.fleet.backends.iter().enumerate() {
            for &(from, to) in &spec.down {
                self.events.push(from, Event::Down(s));
                self.events.push(to, Event::Up(s));
            }
        }
        self.events.push(Duration::ZERO, Event::Probe);
        let last_arrival = self.jobs.last().map_or(Duration::ZERO, |j| j.arrival);
        let horizon = last_arrival + self.scenario.deadline.unwrap_or_default() + GRACE;

        while self.unresolved > 0 {
            let Some((now, event)) = self.events.pop() else {
                break;
            };
            if now > horizon {
                break;
            }
            self.handle(event, now);
            for decision in self.scheduler.poll(now) {
                self.decide(decision, now);
            }
            self.arm_wakeup(now);
        }
        self.tally
    }

    fn handle(&mut self, event: Event, now: Duration) {
        match event {
            Event::Arrive(job) => {
                let request = self.request(job);
                let admission = self.scheduler.submit(request, now);
                self.admitted(job, admission, now);
            }
            Event::Finish(a) => self.complete(a, now),
            Event::Refused(a) => {
                if self.end_attempt(a) {
                    let (job, backend) = self.finish_failed(a, now);
                    self.failed(job, backend, now);
                }
            }
            Event::Abandon(a) => self.abandon(a, now),
            Event::Down(s) => self.crash(s, now),
            Event::Up(s) => self.servers[s].up = true,
            Event::Probe => {
                for s in &self.servers {
                    self.scheduler.probe(s.id, s.up, now);
                }
                self.events.push(now + PROBE_EVERY, Event::Probe);
            }
            Event::Wakeup => {
                self.wakeups.remove(&now);
            }
            Event::Loaded(lane) => self.loaded(lane, now),
        }
    }

    fn decide(&mut self, decision: Decision, now: Duration) {
        match decision {
            Decision::Dispatch(d) => self.send(d, now),
            Decision::Expired(id) => {
                self.resolve(job_index(id), Fate::Expired);
            }
            Decision::Unroutable(id) | Decision::LoadFailed { request: id, .. } => {
                self.resolve(job_index(id), Fate::Failed);
            }
            Decision::ExpiredLoading { request, .. } => {
                self.resolve(job_index(request), Fate::Expired);
            }
            Decision::Load(order) => self.load_ordered(&order, now),
            Decision::Unload { backend, model } => self.unload_ordered(backend, &model, now),
        }
    }

    fn admitted(&mut self, job: usize, admission: Result<Admission, Reject>, now: Duration) {
        match admission {
            Ok(Admission::Dispatched(d)) => self.send(d, now),
            Ok(Admission::Queued) => {}
            // A retry with no backend left to try has failed.
            Err(Reject::Exhausted) => {
                self.resolve(job, Fate::Failed);
            }
            Err(_) => {
                self.resolve(job, Fate::Rejected);
            }
        }
    }

    /// Asks to be polled at the scheduler's next wakeup.
    fn arm_wakeup(&mut self, now: Duration) {
        if let Some(at) = self.scheduler.next_wakeup() {
            // `poll(now)` just ran, so a wakeup at or before now would only
            // spin; a millisecond later still polls promptly.
            let at = if at > now { at } else { now + REFUSED_AFTER };
            if self.wakeups.insert(at) {
                self.events.push(at, Event::Wakeup);
            }
        }
    }

    /// The request as the hub would submit it, with what it has learned
    /// from earlier attempts.
    fn request(&self, job: usize) -> Request {
        let j = &self.jobs[job];
        Request {
            id: j.id,
            model: self.scenario.fleet.models[j.model].clone(),
            priority: Priority::DEFAULT,
            client: ClientKey(0),
            arrival: j.arrival,
            deadline: self.deadline(job),
            affinity: affinity(j),
            exclude: self.state[job].exclude.clone(),
            user: 0,
            size: 0,
            api: Default::default(),
            pin: None,
            prompt_tokens: 0,
            max_tokens: None,
        }
    }

    fn deadline(&self, job: usize) -> Option<Duration> {
        Some(self.jobs[job].arrival + self.scenario.deadline?)
    }

    /// Carries out a dispatch: the request goes to the backend's server.
    fn send(&mut self, d: Dispatch, now: Duration) {
        let job = job_index(d.request);
        let server = self.servers.iter().position(|s| s.id == d.backend);
        let lane =
            server.and_then(|s| self.lane_of[s].get(self.jobs[job].model).copied().flatten());
        let (Some(server), Some(lane)) = (server, lane) else {
            // The scheduler only picks backends that list the model.
            debug_assert!(false, "dispatch to a backend without the model: {d:?}");
            self.scheduler
                .finish(d.backend, &d.model, Outcome::Failure, now);
            self.resolve(job, Fate::Failed);
            return;
        };
        let a = self.attempts.len();
        self.attempts.push(Attempt {
            job,
            lane,
            sent: now,
            started: None,
            live: true,
            hit: false,
        });
        if !self.servers[server].up {
            self.events.push(now + REFUSED_AFTER, Event::Refused(a));
        } else if !self.lanes[lane].loaded {
            // Only a hub that leaves loading to the servers sends here.
            debug_assert!(!self.manages, "drover dispatched to an unloaded lane");
            self.lanes[lane].queue.push_back(a);
            if let Some(deadline) = self.deadline(job) {
                self.events.push(deadline.max(now), Event::Abandon(a));
            }
            self.demand_load(lane, now);
        } else if (self.lanes[lane].running.len() as u32) < self.lanes[lane].slots {
            self.start(a, now);
        } else {
            if self.policy.binds_late() {
                self.tally.overbooked += 1;
            }
            self.lanes[lane].queue.push_back(a);
            if let Some(deadline) = self.deadline(job) {
                self.events.push(deadline.max(now), Event::Abandon(a));
            }
        }
    }

    /// The attempt takes a slot and runs.
    fn start(&mut self, a: usize, now: Duration) {
        let attempt = &mut self.attempts[a];
        let job = &self.jobs[attempt.job];
        let lane = &mut self.lanes[attempt.lane];
        // A hit needs the whole prefix: the turn just before this one was
        // answered here. An older turn cached here saves little and is
        // counted as a miss.
        let hit = job
            .turn
            .is_some_and(|t| t.index > 0 && lane.cache.contains(&(t.session, t.index - 1)));
        attempt.started = Some(now);
        attempt.hit = hit;
        lane.running.push(a);
        lane.last_used = now;
        let service = self.scenario.service(lane.base, job.work, hit);
        self.events.push(now + service, Event::Finish(a));
    }

    /// A running attempt's response is complete.
    fn complete(&mut self, a: usize, now: Duration) {
        if !self.end_attempt(a) {
            return;
        }
        let attempt = &self.attempts[a];
        let (job, lane_ix, sent, hit) = (attempt.job, attempt.lane, attempt.sent, attempt.hit);
        let started = attempt.started.unwrap_or(now);
        let lane = &mut self.lanes[lane_ix];
        lane.running.retain(|&x| x != a);
        lane.last_used = now;
        self.tally.busy += now.saturating_sub(started);
        let backend = self.servers[lane.server].id;
        let model = self.scenario.fleet.models[lane.model].clone();
        // The hub times the whole call: it cannot see a server's own queue.
        let service = now.saturating_sub(sent);
        self.scheduler
            .finish(backend, &model, Outcome::Success { service }, now);
        let turn = self.jobs[job].turn;
        if let Some(t) = turn {
            let cap = self.scenario.cache.sessions;
            lane.cache.retain(|&(s, _)| s != t.session);
            lane.cache.push_back((t.session, t.index));
            while lane.cache.len() > cap {
                lane.cache.pop_front();
            }
        }
        if self.resolve(job, Fate::Done)
            && let Some(record) = self.tally.records.get_mut(job)
        {
            record.started = Some(started);
            record.done = Some(now);
            record.affinity_hit = turn.filter(|t| t.index > 0).map(|_| hit);
        }
        self.start_queued(lane_ix, now);
        self.retry_waiting_loads(self.lanes[lane_ix].server, now);
    }

    /// A freed slot takes the oldest request queued inside the server.
    fn start_queued(&mut self, lane: usize, now: Duration) {
        if !self.lanes[lane].loaded {
            return;
        }
        while (self.lanes[lane].running.len() as u32) < self.lanes[lane].slots {
            let Some(a) = self.lanes[lane].queue.pop_front() else {
                return;
            };
            if self.attempts[a].live {
                self.start(a, now);
            }
        }
    }

    /// The client of an attempt still queued inside a server gives up.
    fn abandon(&mut self, a: usize, now: Duration) {
        if self.attempts[a].started.is_some() || !self.end_attempt(a) {
            return;
        }
        let (job, lane) = (self.attempts[a].job, self.attempts[a].lane);
        self.lanes[lane].queue.retain(|&x| x != a);
        let (backend, model) = self.lane_names(lane);
        // The client left; that says nothing about the backend's health.
        self.scheduler
            .finish(backend, &model, Outcome::Neutral, now);
        self.resolve(job, Fate::Expired);
        self.retry_waiting_loads(self.lanes[lane].server, now);
    }

    /// A server goes down: everything it runs or holds fails now.
    fn crash(&mut self, s: usize, now: Duration) {
        self.servers[s].up = false;
        let mut dropped = Vec::new();
        for &l in &self.servers[s].lanes {
            let lane = &mut self.lanes[l];
            lane.cache.clear();
            for a in lane.running.drain(..) {
                let started = self.attempts[a].started.unwrap_or(now);
                self.tally.busy += now.saturating_sub(started);
                dropped.push(a);
            }
            dropped.extend(lane.queue.drain(..));
        }
        // Release every slot first, as the hub sees every connection drop
        // at once, then send the requests round again.
        let mut failed = Vec::new();
        for a in dropped {
            if self.end_attempt(a) {
                failed.push(self.finish_failed(a, now));
            }
        }
        for (job, backend) in failed {
            self.failed(job, backend, now);
        }
    }

    /// Marks an attempt ended; false if it already was.
    fn end_attempt(&mut self, a: usize) -> bool {
        std::mem::replace(&mut self.attempts[a].live, false)
    }

    /// Tells the scheduler an attempt failed on its backend.
    fn finish_failed(&mut self, a: usize, now: Duration) -> (usize, BackendId) {
        let (job, lane) = (self.attempts[a].job, self.attempts[a].lane);
        let (backend, model) = self.lane_names(lane);
        self.scheduler
            .finish(backend, &model, Outcome::Failure, now);
        (job, backend)
    }

    /// A request failed before any output reached its client: retry it
    /// elsewhere if the hub may, else it has failed.
    fn failed(&mut self, job: usize, backend: BackendId, now: Duration) {
        if self.tally.resolved(job) {
            return;
        }
        let state = &mut self.state[job];
        if state.retries >= max_retries(self.policy) {
            self.resolve(job, Fate::Failed);
            return;
        }
        state.retries += 1;
        if !state.exclude.contains(&backend) {
            state.exclude.push(backend);
        }
        self.tally.retries += 1;
        let request = self.request(job);
        let admission = self.scheduler.resubmit(request, now);
        self.admitted(job, admission, now);
    }

    fn resolve(&mut self, job: usize, fate: Fate) -> bool {
        let changed = self.tally.resolve(job, fate);
        if changed {
            self.unresolved -= 1;
        }
        changed
    }

    fn lane_names(&self, lane: usize) -> (BackendId, drover_core::ModelName) {
        let l = &self.lanes[lane];
        (
            self.servers[l.server].id,
            self.scenario.fleet.models[l.model].clone(),
        )
    }
}

fn job_index(id: RequestId) -> usize {
    id.0 as usize
}

/// Prefix hashes for a conversation turn: it follows the previous turn's
/// prefix and leaves its own. Single requests carry none.
fn affinity(job: &Job) -> Affinity {
    let Some(turn) = job.turn else {
        return Affinity::default();
    };
    let hash = |index: u32| mix(turn.session.wrapping_mul(1 << 20) ^ u64::from(index));
    Affinity {
        lookup: if turn.index > 0 {
            vec![hash(turn.index - 1)]
        } else {
            Vec::new()
        },
        record: vec![hash(turn.index)],
    }
}
