//! drover's hub: one OpenAI-compatible endpoint in front of a fleet of LLM
//! servers.
//!
//! - [`hub`]: [`start`] and [`HubHandle`]: shared state, lifecycle, shutdown.
//! - [`config`]: [`HubConfig`], the TOML file with environment overrides.
//! - `routes`: HTTP handlers (inference, models, admin, health, metrics).
//! - `forward`: the forwarding service: wait for a slot, attempt, fail over
//!   before the first byte, pass the answer through.
//! - `caller`: who is calling: credentials, identity, priority ceiling.
//! - `keys`: API keys with powers (client, admin), kept hashed in the data
//!   directory; `limits`: a client key's limits, checked at the door.
//! - `name`: the rule for backends' and keys' names.
//! - `dispatcher`: the pure scheduler behind a lock, waiters, slot guards.
//! - `affinity`: conversation prefix hashes.
//! - `aliases`: `[[models]]`, one public name for a model's ids.
//! - `continuations`: which backend stored each Responses API response.
//! - `registry`: backends by name and id, with their adapters.
//! - `prober`: per-backend discovery, which is also the health probe.
//! - `model_work`: carries out the loads and unloads the scheduler decides
//!   (and the operator's), reporting each end back.
//! - `server`: the accept loop; every connection task is owned and bounded
//!   (`stall_io`: a client may not stall an answer for ever).
//! - `observe`: the one observer of requests, loads and keys, feeding the
//!   metrics and the dashboard's traffic.
//! - `views`: the read model: every document showing the fleet and its
//!   queue, from one snapshot of the scheduler.
//! - `metrics`: Prometheus metrics.
//! - `openapi`: the OpenAPI document, from the handlers' annotations.
//! - `usage`: the output tokens an answer reports, read as it passes.
//! - `error`: the one mapping from errors to HTTP and the OpenAI shape.
//! - [`jobs`]: durable jobs on the store (`drover-store`): submitted,
//!   claimed a window at a time, run through the forwarder, stored.
//! - `kept`: backends added and models pinned at run time, kept in the
//!   store and brought back at the next start.
//! - [`webhook`]: Standard Webhooks signatures for the callbacks that say a
//!   job has ended.

mod affinity;
mod aliases;
pub mod batches;
mod caller;
mod closest;
pub mod cluster;
pub mod config;
mod continuations;
mod dashboard;
mod dispatcher;
mod error;
pub mod forward;
pub mod hub;
pub mod jobs;
mod kept;
pub mod keys;
mod limits;
mod machines;
mod metrics;
mod model_work;
mod name;
pub mod nodes;
mod observe;
mod openapi;
mod prober;
mod registry;
mod releases;
mod rollouts;
mod routes;
mod server;
mod stall_io;
mod tls;
mod traffic;
mod usage;
mod views;
pub mod webhook;
pub mod workers;

/// This build's version: Cargo's, unless the build was given another with
/// `DROVER_BUILD_VERSION` (the roll-out tests build drover twice so). The
/// hubs of a cluster and the nodes say it.
pub const VERSION: &str = match option_env!("DROVER_BUILD_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

pub use aliases::ModelAlias;
pub use config::{ClientConfig, HubConfig};
pub use dispatcher::Journaled;
pub use drover_proto::admin::BackendSpec;
pub use error::ErrorFormat;
pub use hub::{HubHandle, StartError, start};
