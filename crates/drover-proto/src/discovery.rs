//! What a server says about itself ([`Discovery`]): the hub's prober reads
//! it from the server, and a node agent reads it on its machine and sends
//! it in a heartbeat. One wire type, so the hub applies either the same
//! way. Unknown fields are ignored: an agent newer than its hub may tell
//! more.

use serde::{Deserialize, Serialize};

/// Where a model is on its server, as the server says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// On disk (or otherwise available); the server loads it on demand or
    /// on a load call.
    #[default]
    Unloaded,
    /// Being loaded now; requests would wait for it.
    Loading,
    /// Resident and ready.
    Loaded,
    /// Unloaded on idle by the server itself (llama.cpp `--sleep-idle-seconds`,
    /// router `sleeping`); the next request wakes it, paying a reload.
    Sleeping,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Unloaded => "unloaded",
            ModelState::Loading => "loading",
            ModelState::Loaded => "loaded",
            ModelState::Sleeping => "sleeping",
        }
    }
}

/// What a model is for, where the server says: a generation probe needs a
/// model that generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    #[default]
    Unknown,
    Llm,
    Embedding,
}

/// One model as a server reports it. Everything but `id` and `state` is
/// optional: each server tells a different part.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoveredModel {
    /// The server's own id for the model (what a request's `model` names).
    pub id: String,
    pub state: ModelState,
    pub kind: ModelType,
    /// Concurrent requests, when the server says (llama.cpp `total_slots`,
    /// LM Studio `config.parallel`).
    pub slots: Option<u32>,
    /// Slots the server itself reports busy, whoever sent the work
    /// (llama.cpp `/slots`): a cross-check of the hub's own count.
    pub busy: Option<u32>,
    /// Bytes the model takes in memory when loaded (Ollama `size`, LM
    /// Studio `size_bytes`, llama.cpp `meta.size`).
    pub size_bytes: Option<u64>,
    /// Of those, bytes in GPU memory (Ollama `size_vram`).
    pub vram_bytes: Option<u64>,
    /// Context length it is loaded with (or its maximum when not loaded).
    pub context_length: Option<u32>,
    /// Load progress from 0 to 1 while `Loading`, where the server reports it.
    pub progress: Option<f32>,
    /// When the server itself will unload it (Ollama `expires_at`), as the
    /// server wrote it.
    pub expires_at: Option<String>,
    /// Server-side instance ids (LM Studio `loaded_instances[].id`), which
    /// unloading names.
    pub instances: Vec<String>,
}

impl DiscoveredModel {
    /// Resident and ready.
    pub fn loaded(&self) -> bool {
        self.state == ModelState::Loaded
    }
}

/// Whether the server serves an inference path beyond chat, completions and
/// embeddings. `None`: it did not say and no probe has shown it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Apis {
    /// `POST /v1/responses` (OpenAI Responses API).
    pub responses: Option<bool>,
    /// `POST /v1/messages` and `/v1/messages/count_tokens` (Anthropic).
    pub messages: Option<bool>,
}

/// What a server says about itself: its models, what it can do, how busy
/// it is. Discovery doubles as the active health probe.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Discovery {
    pub models: Vec<DiscoveredModel>,
    /// The server's own version, where it tells (Ollama, vLLM, llama.cpp
    /// `build_info`).
    pub version: Option<String>,
    /// Memory in use and in all, in bytes, where the server tells.
    pub memory_used: Option<u64>,
    pub memory_total: Option<u64>,
    /// Whether this adapter can load and unload models on this server.
    pub can_load: bool,
    pub can_unload: bool,
    pub apis: Apis,
    /// Requests the server holds waiting in its own queue (vLLM
    /// `num_requests_waiting`, llama.cpp `requests_deferred`): while above
    /// zero, more work sent there only queues there.
    pub waiting: Option<u32>,
    /// Requests the server reports running, all models.
    pub running: Option<u32>,
    /// KV cache fill from 0 to 1, where the server reports it.
    pub kv_cache_usage: Option<f64>,
    /// How the server runs, when it matters to an operator
    /// (llama.cpp `router` mode).
    pub mode: Option<String>,
    /// Models it keeps loaded at once, evicting on its own beyond, where it
    /// tells (llama.cpp router's `--models-max`).
    pub max_loaded: Option<u32>,
}
