//! The management API: `/admin/backends` and friends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A backend as both the config file's `[[backends]]` table and the body of
/// `POST /admin/backends` describe it: one shape, one set of docs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Defaults to the URL's host and port.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,64}$")]
    pub name: Option<String>,
    /// `lmstudio`, `ollama`, `llamacpp`, `vllm` or `openai`; empty or
    /// `auto` to detect it from the server.
    #[serde(default)]
    #[schema(
        pattern = r"^(|auto|lmstudio|lm-studio|ollama|llamacpp|llama\.cpp|llama-server|llama_cpp|vllm|openai)$"
    )]
    pub kind: String,
    #[schema(
        pattern = r"^https?://[a-z0-9]+(\.[a-z0-9]+)*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]+)*/?$"
    )]
    pub url: String,
    /// Slots per model where the server does not report them.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub slots: Option<u32>,
    /// Per-model slot overrides.
    #[serde(default)]
    pub model_slots: BTreeMap<String, u32>,
    /// Sent upstream as `Authorization: Bearer`.
    #[serde(default)]
    #[schema(pattern = r"^[!-~]*$")]
    pub api_key: Option<String>,
    /// Requests it may run at once over all its models, for a server that
    /// shares one GPU between several loaded models.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_concurrent: Option<u32>,
    /// The active health probe: `list` (ask what the server has; the
    /// default) or `generate` (also generate one token from a loaded
    /// model, so a server that lists models but cannot run them is
    /// unhealthy).
    #[serde(default)]
    #[schema(pattern = r"^(list|generate)$")]
    pub probe: Option<String>,
    /// Whether it serves `POST /v1/responses`, where the server cannot
    /// tell; overrides what drover learns.
    #[serde(default)]
    pub responses: Option<bool>,
    /// Whether it serves `POST /v1/messages`, likewise.
    #[serde(default)]
    pub messages: Option<bool>,
    /// Its memory budget, in seed 002's form: `sum(model sizes) + slots x
    /// slot_buffer + system + margin <= memory`. Sizes as bytes or text
    /// (`"128G"`, `"3GiB"`, `"512MB"`). `memory` where the server does not
    /// tell its total.
    #[serde(default, deserialize_with = "size")]
    pub memory: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    pub slot_buffer: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    pub system: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    pub margin: Option<u64>,
    /// Models it may hold loaded at once; the hub unloads the least
    /// recently used idle one to load another.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_loaded: Option<u32>,
    /// The machine it runs on, where other servers share its memory
    /// (`[machines.NAME]` gives the machine's budget, which all of them
    /// fill together). A node's servers are on the node's machine.
    #[serde(default)]
    pub machine: Option<String>,
    /// For an `https://` backend: a PEM file of the certificate authority
    /// that vouches for it, trusted besides the system's roots.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// A size in bytes, given as a number or as text `drover_core::size` reads.
pub fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Number(n)) => Ok(Some(n)),
        Some(Size::Text(t)) => drover_core::size::parse(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// One backend as `GET /admin/backends` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BackendInfo {
    pub name: String,
    pub kind: String,
    pub url: String,
    /// `unreachable` (never answered a probe), `closed`, `open` or
    /// `half_open`.
    pub breaker: String,
    pub draining: bool,
    /// Requests running there now.
    pub in_flight: u32,
    pub models: Vec<BackendModelInfo>,
    /// The last probe's error, if it failed: why the backend is unhealthy.
    pub last_error: Option<String>,
    /// Models its listing had beyond the hub's `max_models_per_backend`,
    /// which the hub does not serve from it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_models: u64,
    /// When its last probe ended, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub last_probe_unix_ms: Option<u64>,
    /// The server's own version, where it tells.
    #[serde(default)]
    pub version: Option<String>,
    /// How the server runs, when it matters (llama.cpp `router`).
    #[serde(default)]
    pub mode: Option<String>,
    /// `list` or `generate`.
    #[serde(default)]
    pub probe: String,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// The inference APIs it takes beyond OpenAI's: `responses`, `messages`.
    #[serde(default)]
    pub apis: Vec<String>,
    /// The server reports requests waiting in its own queue, so the hub
    /// sends it no more for now.
    #[serde(default)]
    pub saturated: bool,
    /// Whether drover can load and unload models there.
    #[serde(default)]
    pub can_load: bool,
    #[serde(default)]
    pub can_unload: bool,
    /// Bytes its loaded models use, and in all, where the server tells.
    #[serde(default)]
    pub memory_used: Option<u64>,
    #[serde(default)]
    pub memory_total: Option<u64>,
    /// Bytes the budget leaves for models: `memory_total` less `system`,
    /// `margin` and `slot_buffer` for each slot of the models in memory
    /// (loaded, loading or unloading), as the hub's model manager counts
    /// it; `memory_used` is measured against it.
    #[serde(default)]
    pub memory_for_models: Option<u64>,
    /// The budget's other terms, from config (0 when not set).
    #[serde(default)]
    pub slot_buffer: u64,
    #[serde(default)]
    pub system: u64,
    #[serde(default)]
    pub margin: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BackendModelInfo {
    pub id: String,
    pub loaded: bool,
    pub slots: u32,
    pub busy: u32,
    /// Slots the server reports busy with work the hub did not send.
    #[serde(default)]
    pub external: u32,
    /// Bytes it takes in memory, where the server tells.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// `unloaded`, `loading`, `loaded` or `sleeping`, as the server says.
    #[serde(default)]
    pub state: Option<String>,
    /// `unloaded`, `loading`, `loaded` or `unloading`, as the hub's model
    /// manager holds it (a load it decided is `loading` before the server
    /// says so).
    #[serde(default)]
    pub residency: Option<String>,
    /// Load progress from 0 to 1 while loading, where the server tells.
    #[serde(default)]
    pub progress: Option<f32>,
    /// How long its loads have taken here (smoothed), in seconds.
    #[serde(default)]
    pub load_seconds: Option<f64>,
    /// While it loads: for how long so far, in seconds.
    #[serde(default)]
    pub loading_seconds: Option<f64>,
    /// Seconds since a request last started or ended on it here.
    #[serde(default)]
    pub idle_seconds: Option<f64>,
    /// Pinned: never evicted, never unloaded for idleness.
    #[serde(default)]
    pub pinned: bool,
    /// Requests it takes at once for now, below its slots: the server ran
    /// out of room with more running (a context its slots share filled
    /// up). Raised again one by one as they succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Why its last load here failed, while the hub waits to try again.
    #[serde(default)]
    pub load_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BackendList {
    pub backends: Vec<BackendInfo>,
}

/// The body of `POST /admin/models/{action}` and
/// `/admin/models/{model}/{action}`: the model (in the body when the path
/// does not name it), and which backend, or `null` to let the hub choose
/// (load) or mean every backend (unload).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelTarget {
    /// The model's public name. In the body it travels as it is: a name
    /// with `.` or `..` segments (`../models/l1`) cannot travel in a URL,
    /// which browsers and proxies fold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub backend: Option<String>,
}

/// What a model action did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ModelAction {
    pub model: String,
    /// The backends it was done on.
    pub backends: Vec<String>,
    /// `load`, `unload`, `pin` or `unpin`.
    pub action: String,
    /// How long the load took, as the server reports it or as measured.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Nothing needed doing: it was loaded (or unloaded) already.
    #[serde(default)]
    pub already: bool,
    /// What else the operator should know: a server that unloaded the
    /// model on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a key may do: run inference, use the management API, read
/// `/metrics` (what a Prometheus scraper needs, and nothing more), or act
/// as a worker (register, take tasks and answer them, and nothing more).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Client,
    Admin,
    Metrics,
    Worker,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Client => "client",
            KeyKind::Admin => "admin",
            KeyKind::Metrics => "metrics",
            KeyKind::Worker => "worker",
        }
    }

    /// The kind [`KeyKind::as_str`] names.
    pub fn parse(name: &str) -> Option<KeyKind> {
        [
            KeyKind::Client,
            KeyKind::Admin,
            KeyKind::Metrics,
            KeyKind::Worker,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// What a client key may do beyond running inference at all.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// The models it may use (public names); unset: every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub models: Option<Vec<String>>,
    /// Requests it may start a minute (a bucket that refills evenly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub requests_per_minute: Option<u32>,
    /// Tokens it may use a minute: its prompts (estimated at the door) and
    /// the output tokens its answers report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub tokens_per_minute: Option<u32>,
    /// Requests it may have waiting or running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_concurrent: Option<u32>,
    /// Priority of its requests that name none (0-100; default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 100)]
    pub priority: Option<u8>,
    /// The highest priority its requests may ask for (default: `priority`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 100)]
    pub max_priority: Option<u8>,
}

/// One key as `GET /admin/keys` shows it: never the key itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub kind: KeyKind,
    /// The key's first characters.
    pub prefix: String,
    pub created_unix: u64,
    #[serde(default)]
    pub revoked_unix: Option<u64>,
    #[serde(default)]
    pub limits: KeyLimits,
    /// Whether its jobs' callbacks are signed with a webhook secret of its
    /// own rather than the hub's.
    #[serde(default)]
    pub own_webhook_secret: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// The body of `POST /admin/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCreate {
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,64}$")]
    pub name: String,
    #[serde(default = "client")]
    pub kind: KeyKind,
    #[serde(default)]
    pub limits: KeyLimits,
}

fn client() -> KeyKind {
    KeyKind::Client
}

/// The answer to `POST /admin/keys`: the key, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct KeyCreated {
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
    /// What creating it changed for the hub's callers (the first client
    /// key closes inference to requests without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The answer to `DELETE /admin/keys/{id}`: the key as it now is, and what
/// revoking it changed (the last client key keeps inference closed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct KeyRevoked {
    #[serde(flatten)]
    pub info: KeyInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The answer to `POST /admin/keys/purge`: how many revoked keys were
/// forgotten, and what that changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct KeysPurged {
    pub purged: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The answer to `POST /admin/webhook-secret`: the new secret job
/// callbacks are signed with, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NewWebhookSecret {
    /// `whsec_` and the key in base64, as the Standard Webhooks libraries
    /// take it.
    pub secret: String,
}

/// The answer to `POST|DELETE /admin/keys/{id}/webhook-secret`: the key,
/// and the webhook secret of its own just made (shown in this answer
/// only), or none: its callbacks are signed with the hub's again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct KeyWebhookSecret {
    #[serde(flatten)]
    pub info: KeyInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Whose a job or a batch is, as `/admin/jobs` and `/admin/batches` show
/// it beside the job or batch itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Owner {
    /// As the store keeps it: a stored key's id, `client:NAME` for a
    /// `[[clients]]` key, empty for the anonymous client.
    pub key_id: String,
    /// The key's name (`anonymous` for the anonymous client); `null` for a
    /// key the hub no longer keeps (purged).
    pub key: Option<String>,
}

/// A job of any key, as the management API shows it: the job as its key
/// sees it at `/v1/jobs`, and whose it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AdminJob {
    #[serde(flatten)]
    pub job: crate::jobs::Job,
    #[serde(flatten)]
    pub owner: Owner,
}

/// A batch of any key, as the management API shows it: the batch as its
/// key sees it at `/v1/batches`, and whose it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AdminBatch {
    #[serde(flatten)]
    pub batch: crate::batch::Batch,
    #[serde(flatten)]
    pub owner: Owner,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
