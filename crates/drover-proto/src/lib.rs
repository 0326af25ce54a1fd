//! drover's wire types: everything that crosses an HTTP boundary as JSON.
//! Domain types elsewhere are not `Serialize`; only this crate (and the
//! simulator, which reads the docs independently on purpose) knows JSON
//! shapes.
//!
//! - [`openai`]: the OpenAI error shape, model listing, and the few request
//!   fields the hub peeks at (it forwards bodies untouched).
//! - [`lmstudio`]: LM Studio's `/api/v0/models` and `/api/v1/models`.
//! - [`ollama`], [`llamacpp`], [`vllm`]: those servers' own endpoints.
//! - [`batch`]: OpenAI's Files and Batch API: files, batches, output lines.
//! - [`anthropic`]: the Anthropic error shape, for `/v1/messages`.
//! - [`admin`]: the hub's management API; [`cluster`], its hubs.
//! - [`queue`]: `GET /v1/queue`, the queue as clients may see it.
//! - [`dashboard`]: the live overview the dashboard draws.
//! - [`jobs`]: durable jobs (`/v1/jobs`).
//! - [`workers`]: capability workers and their tasks.

pub mod admin;
pub mod anthropic;
pub mod batch;
pub mod cluster;
pub mod dashboard;
pub mod discovery;
pub mod jobs;
pub mod llamacpp;
pub mod lmstudio;
pub mod nodes;
pub mod ollama;
pub mod openai;
pub mod queue;
pub mod releases;
pub mod vllm;
pub mod workers;
