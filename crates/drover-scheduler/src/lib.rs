//! drover's scheduler: given the fleet's state, the waiting requests and the
//! time, decide what runs where. Pure and deterministic: it does no I/O,
//! reads no clock and spawns nothing, so the hub and the virtual-time
//! policy lab (`drover-lab`) drive exactly the same code.
//!
//! - [`scheduler`]: [`Scheduler`], the one entry point.
//! - [`event`]: its interface: every change is an [`Event`] given to
//!   [`Scheduler::apply`] with its time, answered with the [`Decision`]s
//!   to carry out; reads are named queries that change nothing.
//! - [`fleet`]: backends, their models and slots (the hub holds the slots, so
//!   occupancy is exact, never scraped).
//! - [`queue`]: waiting requests per model: priority classes with aging,
//!   round robin between clients inside a class and between a client's
//!   users, oldest first per user, deadlines, a bytes budget; a request
//!   leaves every index at once.
//! - [`manager`]: the model manager (`ModelManager`), whose decisions are
//!   loads where a request starts soonest, single-flight, evictions, time to
//!   live, aging between models that cannot all be held; [`residency`]: a
//!   model's state on a backend and what a backend's memory can hold.
//! - [`breaker`]: a per-backend circuit breaker, driven by outcomes, probes
//!   and time; a probe never closes what failed requests opened.
//! - [`affinity`]: a bounded index from conversation-prefix hashes to the
//!   backend whose KV cache holds that prefix.
//! - `placement`: which backend takes a request: the backends with its
//!   model loaded, else those that list it; the policy's pick; a long
//!   prompt held for the busy backend that holds its prefix.
//! - [`reserve`]: slots kept free for interactive traffic while background
//!   work (a batch) would take them all.
//! - [`policy`]: how a backend is chosen: drover's (late binding, least
//!   loaded, affinity) and the baselines it is measured against.
//!
//! Time is a [`std::time::Duration`] since an epoch the caller picks.

pub mod affinity;
pub mod breaker;
pub mod event;
pub mod fleet;
pub mod manager;
mod placement;
pub mod plan;
pub mod policy;
pub mod queue;
pub mod reserve;
pub mod residency;
pub mod scheduler;

pub use affinity::{Affinity, AffinityIndex};
pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use event::{Applied, Event, Reply};
pub use fleet::{Api, BackendStatus, BackendView, Fleet, ModelSpec, ModelView};
pub use manager::Refusal;
pub use policy::Policy;
pub use queue::{QueueStats, WaitQueue};
pub use reserve::ReserveConfig;
pub use residency::{
    LoadFailure, Machine, MemoryTerms, ModelPolicy, Placed, Residency, ServerState,
};
pub use scheduler::{
    Admission, Decision, Dispatch, LoadOrder, Notice, Outcome, Reject, Request, Scheduler,
    SchedulerConfig,
};
