//! Adapters for the LLM servers drover drives. Each adapter answers one
//! question, "what does this server have and how much can it take?", over
//! the server's own API. Inference itself is the same OpenAI-compatible
//! `/v1/*` call for every kind, so the hub's proxy does that, not the
//! adapters.
//!
//! - [`kind`]: [`BackendKind`]: `lmstudio`, `ollama`, `llamacpp`, `vllm`, `openai`.
//! - [`endpoint`]: [`Endpoint`], a validated base URL.
//! - [`client`]: [`HttpClient`], the pooled HTTP client every hub component
//!   (and `drover bench`) shares; it resends a request only where the
//!   server cannot have read it.
//! - [`backend`]: the [`Backend`] trait and what discovery returns.
//! - [`lmstudio`], [`ollama`], [`llamacpp`], [`vllm`], [`openai`]: the
//!   adapters; `paths` probes which of the coding agents' paths a server
//!   serves where its API does not say, `prometheus` reads `/metrics`.
//! - `detect`: [`detect`], which kind of server is at a URL.
//! - [`overload`]: answers that say a server ran out of room (llama.cpp's
//!   shared context filling up): overload, not a broken server.

mod adapter;
pub mod backend;
pub mod client;
mod detect;
pub mod endpoint;
mod http;
pub mod kind;
pub mod llamacpp;
pub mod lmstudio;
pub mod ollama;
pub mod openai;
pub mod overload;
mod paths;
mod prometheus;
mod version;
pub mod vllm;

pub use backend::{
    Apis, Backend, BackendError, DiscoveredModel, Discovery, Loaded, ModelState, ModelType,
    adapter_for,
};
pub use client::{HttpClient, SendError, UpstreamBody};
pub use detect::{Detected, detect};
pub use endpoint::{Endpoint, EndpointError, redact};
pub use http::MAX_DISCOVERY_BYTES;
pub use kind::BackendKind;
