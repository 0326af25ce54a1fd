//! The scheduler's interface for whoever drives it: every change is an
//! [`Event`] given to [`Scheduler::apply`] with the time it happened, and
//! what follows from it comes back as [`Applied`]: the event's own answer
//! and the decisions to carry out. Reads are named queries on
//! [`Scheduler`], [`Fleet`](crate::Fleet) and [`WaitQueue`](crate::WaitQueue),
//! which change nothing.
//!
//! Because every change is a value, the changes a hub makes can be listed
//! (this enum), journaled, replayed (same events at the same times, same
//! decisions: the scheduler holds no clock, no randomness and iterates
//! nothing in an unordered way where the order reaches a decision), or one
//! day sent from another process.

use std::time::Duration;

use drover_core::{BackendId, ModelName, RequestId};

use crate::fleet::{BackendStatus, ModelSpec};
use crate::manager::Refusal;
use crate::residency::ModelPolicy;
use crate::scheduler::{Admission, Decision, LoadOrder, Outcome, Reject, Request, Scheduler};

/// Something that happened, for the scheduler to take in.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A request arrived; `retry`: it goes round again after an attempt
    /// that failed before its first byte (it keeps its place, and a full
    /// queue does not refuse it).
    Arrived {
        request: Request,
        retry: bool,
    },
    /// A waiting request's sender went away.
    Cancelled(RequestId),
    /// A dispatched request let go of its slot, giving back the `tokens`
    /// of a shared context it took ([`Dispatch::tokens`](crate::Dispatch::tokens)).
    Finished {
        backend: BackendId,
        model: ModelName,
        tokens: u32,
        outcome: Outcome,
    },
    /// A slot taken before this scheduler heard of it: a request another
    /// hub runs on a grant from an earlier leader, counted as running
    /// there until it is [`Event::Finished`]. Answered `Changed(false)`
    /// (and not counted) where the backend does not list the model.
    Adopted {
        backend: BackendId,
        model: ModelName,
        tokens: u32,
    },
    /// What a probe that began at `probed` found on a backend: the models
    /// it lists and, when it said, what it says beyond them.
    Observed {
        backend: BackendId,
        models: Vec<ModelSpec>,
        status: Option<BackendStatus>,
        probed: Option<Duration>,
    },
    /// A probe's verdict on a backend the scheduler knows.
    Probed {
        backend: BackendId,
        ok: bool,
    },
    /// A backend was added: its first answer is awaited.
    Awaited(BackendId),
    /// A backend's first probe failed.
    Unanswered(BackendId),
    Removed(BackendId),
    Draining {
        backend: BackendId,
        draining: bool,
    },
    /// `tokens` prompt tokens took `took` to prefill on `backend`.
    PrefillSeen {
        backend: BackendId,
        model: ModelName,
        tokens: u32,
        took: Duration,
    },
    /// An operator asks for `model` to be loaded, on `backend` or where it
    /// would be ready soonest.
    LoadAsked {
        backend: Option<BackendId>,
        model: ModelName,
    },
    /// An operator asks for `model` to be unloaded from `backend`.
    UnloadAsked {
        backend: BackendId,
        model: ModelName,
    },
    /// A load ended: how long it took, or what went wrong.
    LoadEnded {
        backend: BackendId,
        model: ModelName,
        result: Result<Duration, String>,
    },
    UnloadEnded {
        backend: BackendId,
        model: ModelName,
        result: Result<(), String>,
    },
    Pinned {
        model: ModelName,
        pinned: bool,
    },
    /// Config's word on a model: time to live, warm.
    Policy {
        model: ModelName,
        policy: ModelPolicy,
    },
    /// Time passed: deadlines, cooldowns, times to live, backoffs.
    Tick,
}

/// An event's own answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The event asks no answer.
    Done,
    /// [`Event::Arrived`]: it runs now, waits, or is refused.
    Admitted(Result<Admission, Reject>),
    /// Whether the event changed what it names (a backend removed, a
    /// drain set, a pin that was not there).
    Changed(bool),
    /// [`Event::LoadAsked`]: the load to carry out (and report the end of).
    Load(Result<LoadOrder, Refusal>),
    /// [`Event::UnloadAsked`]: the unload may go ahead.
    Unload(Result<(), Refusal>),
}

/// What applying an event came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub reply: Reply,
    /// What became possible or due, to carry out.
    pub decisions: Vec<Decision>,
}

impl Scheduler {
    /// Takes in `event`, which happened at `now`, and decides what follows.
    /// An event that cannot make anything possible (a prefill measured, a
    /// request that ran or was refused at once) is not followed by a poll.
    pub fn apply(&mut self, event: Event, now: Duration) -> Applied {
        self.tick(now);
        let (reply, poll) = match event {
            Event::Arrived { request, retry } => {
                let admitted = if retry {
                    self.resubmit(request, now)
                } else {
                    self.submit(request, now)
                };
                // A newcomer that waits is ordered with the others at once.
                let queued = matches!(admitted, Ok(Admission::Queued));
                (Reply::Admitted(admitted), queued)
            }
            Event::Cancelled(id) => (Reply::Changed(self.cancel(id)), false),
            Event::Finished {
                backend,
                model,
                tokens,
                outcome,
            } => {
                self.finish_holding(backend, &model, tokens, outcome, now);
                (Reply::Done, true)
            }
            Event::Adopted {
                backend,
                model,
                tokens,
            } => (
                Reply::Changed(self.adopt(backend, &model, tokens, now)),
                false,
            ),
            Event::Observed {
                backend,
                models,
                status,
                probed,
            } => {
                self.observe_backend(backend, models, probed, now);
                if let Some(status) = status {
                    self.set_backend_status(backend, status);
                }
                (Reply::Done, true)
            }
            Event::Probed { backend, ok } => {
                self.probe(backend, ok, now);
                (Reply::Done, true)
            }
            Event::Awaited(backend) => {
                self.await_backend(backend);
                (Reply::Done, false)
            }
            Event::Unanswered(backend) => {
                self.unanswered(backend);
                (Reply::Done, true)
            }
            Event::Removed(backend) => (Reply::Changed(self.remove_backend(backend)), true),
            Event::Draining { backend, draining } => {
                (Reply::Changed(self.set_draining(backend, draining)), true)
            }
            Event::PrefillSeen {
                backend,
                model,
                tokens,
                took,
            } => {
                self.observe_prefill(backend, &model, tokens, took);
                (Reply::Done, false)
            }
            Event::LoadAsked { backend, model } => {
                (Reply::Load(self.begin_load(backend, &model, now)), true)
            }
            Event::UnloadAsked { backend, model } => {
                (Reply::Unload(self.begin_unload(backend, &model, now)), true)
            }
            Event::LoadEnded {
                backend,
                model,
                result,
            } => {
                self.load_finished(backend, &model, result, now);
                (Reply::Done, true)
            }
            Event::UnloadEnded {
                backend,
                model,
                result,
            } => {
                self.unload_finished(backend, &model, result, now);
                (Reply::Done, true)
            }
            Event::Pinned { model, pinned } => {
                let changed = if pinned {
                    self.pin(&model)
                } else {
                    self.unpin(&model)
                };
                (Reply::Changed(changed), true)
            }
            Event::Policy { model, policy } => {
                self.set_model_policy(model, policy);
                (Reply::Done, true)
            }
            Event::Tick => (Reply::Done, true),
        };
        let decisions = if poll { self.poll(now) } else { Vec::new() };
        Applied { reply, decisions }
    }
}
