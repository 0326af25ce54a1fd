//! drover's hub: one OpenAI-compatible endpoint in front of a fleet of LLM
//! servers.
//!
//! - [`hub`]: [`start`] and [`HubHandle`]: shared state, lifecycle, shutdown.
//! - [`config`]: [`HubConfig`], the TOML file with environment overrides.
//! - [`routes`]: HTTP handlers (inference, models, admin, health, metrics).
//! - [`dispatcher`]: the pure scheduler behind a lock, waiters, slot guards.
//! - [`proxy`]: one attempt against one backend; streaming pass-through.
//! - [`affinity`]: conversation prefix hashes.
//! - [`registry`]: backends by name and id, with their adapters.
//! - [`prober`]: per-backend discovery, which is also the health probe.
//! - `server`: the accept loop; every connection task is owned.
//! - [`metrics`]: Prometheus metrics.
//! - [`error`]: the one mapping from errors to HTTP and the OpenAI shape.

pub mod affinity;
pub mod config;
pub mod dispatcher;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod prober;
pub mod proxy;
pub mod registry;
mod routes;
mod server;

pub use config::{ClientConfig, HubConfig};
pub use drover_proto::admin::BackendSpec;
pub use hub::{HubHandle, HubState, StartError, start};
