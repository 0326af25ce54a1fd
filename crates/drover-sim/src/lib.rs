//! drover-sim: fake LLM servers that speak the real APIs, as
//! `shared/docs/backend-apis.md` documents them, so drover can be tested,
//! demonstrated and benchmarked without GPUs. Its wire types are its own,
//! never the hub's, so it checks the hub against an independent reading of
//! the same document.
//!
//! - [`config`]: [`SimConfig`] and [`Faults`], what a simulator does;
//!   [`dialect`]: [`Dialect`], which server it imitates.
//! - [`server`]: [`SimServer::start`] and the accept loop; [`handle`]:
//!   [`SimHandle`], to watch and steer a running simulator; [`stats`]:
//!   [`SimStats`], what it has seen.
//! - `connection` serves one TCP connection with hyper, stops reading it
//!   while a stream is written (so a departed client is noticed at the next
//!   write, as by a real server) and can kill it;
//!   `router` maps paths to handlers; `lmstudio`, `ollama`, `llamacpp`,
//!   `llamacpp_router` and `vllm` hold each server's native endpoints.
//! - `inference` is one request's life: fault, JIT load, slot queue, TTFT
//!   (with prefill for what `prefix_cache`, each slot's KV cache, lacks),
//!   answer; `stream` is the SSE body; `guard` keeps the per-model gauges
//!   right however a request ends.
//! - `agents` reads the coding agents' requests (Responses, Messages) and
//!   keeps the ids of stored responses; `agents_wire` writes their answers
//!   and stream events.
//! - `request` and `wire` are the bodies read and written; `text` makes
//!   deterministic words and vectors; `fault` picks faults.
//! - [`cli`]: [`SimArgs`] and [`run`], for the `drover sim` command.

pub mod cli;
pub mod config;
pub mod dialect;
pub mod handle;
pub mod server;
pub mod stats;

mod agents;
mod agents_wire;
mod body;
mod connection;
mod error;
mod fault;
mod guard;
mod inference;
mod llamacpp;
mod llamacpp_router;
mod lmstudio;
mod model;
mod ollama;
mod prefix_cache;
mod request;
mod router;
mod schema;
mod shared;
mod stream;
mod text;
mod vllm;
mod wire;

pub use cli::{SimArgs, run};
pub use config::{Faults, SimConfig};
pub use dialect::Dialect;
pub use error::SimError;
pub use handle::SimHandle;
pub use server::SimServer;
pub use stats::{ModelStats, SimStats};
