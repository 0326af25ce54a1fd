//! The backends the hub knows: name, kind, URL, adapter and the last probe's
//! result. The scheduler knows them only by [`BackendId`]; names live here.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use drover_backends::ModelState;
use drover_backends::{
    Backend, BackendKind, DiscoveredModel, Discovery, Endpoint, HttpClient, adapter_for,
};
use drover_core::{BackendId, ModelName};
use drover_scheduler::{BackendStatus, MemoryTerms, ModelSpec, ServerState};

use crate::aliases::Aliases;
use crate::name::check_name;
use tokio_util::sync::CancellationToken;

use drover_proto::admin::BackendSpec;

/// One backend: what configuration says of it, how to reach it, what it
/// said at its last probe (one record, under one lock), and its lifecycle.
/// What the scheduler holds of it (models, slots, breaker) is the
/// scheduler's.
pub struct BackendEntry {
    pub id: BackendId,
    pub name: String,
    /// Configuration's word on it.
    pub options: BackendOptions,
    pub endpoint: Endpoint,
    /// Its kind and adapter: from config, or once detection has run.
    adapter: OnceLock<Arc<dyn Backend>>,
    /// Its HTTP client (its own where it names a CA file), for discovery
    /// and forwarding alike.
    pub(crate) client: HttpClient,
    api_key: Option<String>,
    probe_timeout: Duration,
    /// Sent with every request: the configured key, or the URL's
    /// credentials.
    pub authorization: Option<http::HeaderValue>,
    /// What the server said at its last probe: written whole by the
    /// prober, so no reader sees half of one probe and half of another.
    pub observed: Mutex<Observed>,
    /// Stops this backend's prober.
    pub cancel: CancellationToken,
    /// Set before the backend leaves the scheduler, so a probe finishing
    /// late cannot bring it back.
    pub removed: AtomicBool,
    /// What it was added with, its name set: a cluster's leader tells its
    /// followers its backends with these.
    pub spec: BackendSpec,
}

/// What configuration says of a backend, beyond how to reach it.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Slots per model where the server does not say; seed 002's safe
    /// default of one.
    pub default_slots: u32,
    pub model_slots: BTreeMap<String, u32>,
    pub max_concurrent: Option<u32>,
    /// The memory budget's terms; `memory` where the server does not tell
    /// its total.
    pub memory: Option<u64>,
    pub slot_buffer: u64,
    pub system: u64,
    pub margin: u64,
    pub max_loaded: Option<u32>,
    pub probe_mode: ProbeMode,
    /// Config's word on the coding agents' APIs, over what is learned.
    pub responses: Option<bool>,
    pub messages: Option<bool>,
    /// The machine it shares with other servers.
    pub machine: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Public model name to this server's own id where they differ: a
    /// request's `model` is rewritten to it on the way out.
    pub own_ids: HashMap<String, String>,
    pub last_error: Option<String>,
    /// Models its last listing had beyond `limits.max_models_per_backend`,
    /// which the hub did not take.
    pub dropped_models: usize,
    /// When the last probe ended, in milliseconds since the Unix epoch.
    pub probed_unix_ms: Option<u64>,
    pub ever_succeeded: bool,
    /// What the server said about itself at the last successful probe.
    pub version: Option<String>,
    pub mode: Option<String>,
    pub can_load: bool,
    pub can_unload: bool,
    /// Memory its loaded models use, and in all, in bytes, where it tells.
    pub memory_used: Option<u64>,
    pub memory_total: Option<u64>,
    /// Each model's size by public name, where the server tells.
    pub sizes: HashMap<String, u64>,
    /// Each model's state as the server says (`loading`, `sleeping`...),
    /// by public name.
    pub states: HashMap<String, &'static str>,
    /// Load progress from 0 to 1 of models loading, by public name.
    pub progress: HashMap<String, f32>,
    /// Models the server unloaded on its own while the hub held them
    /// loaded (llama.cpp's router beyond --models-max), by public name,
    /// with when it was seen (Unix ms).
    pub evicted: HashMap<String, u64>,
}

/// How a backend's health is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbeMode {
    /// Ask what the server has.
    #[default]
    List,
    /// Also generate one token from a loaded model: a server that lists
    /// models but cannot run them is unhealthy.
    Generate,
}

impl ProbeMode {
    fn parse(s: Option<&str>) -> Result<ProbeMode, String> {
        match s.map(str::trim) {
            None | Some("list") => Ok(ProbeMode::List),
            Some("generate") => Ok(ProbeMode::Generate),
            Some(other) => Err(format!(
                "probe {other:?} is not known; expected \"list\" or \"generate\""
            )),
        }
    }
}

impl fmt::Display for ProbeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeMode::List => "list",
            ProbeMode::Generate => "generate",
        })
    }
}

/// The configured kind: `None` to detect it (an empty kind, or `auto`).
fn configured_kind(config: &BackendSpec) -> Result<Option<BackendKind>, String> {
    match config.kind.trim() {
        "" | "auto" => Ok(None),
        kind => kind.parse().map(Some),
    }
}

/// Checks what can be checked of a backend's config without adding it.
pub fn check_spec(config: &BackendSpec) -> Result<(), String> {
    configured_kind(config)?;
    if config.slots == Some(0) || config.model_slots.values().any(|s| *s == 0) {
        return Err("slots must be at least 1".into());
    }
    if let Some(machine) = &config.machine {
        check_name("machine", machine)?;
    }
    if config.max_concurrent == Some(0) {
        return Err("max_concurrent must be at least 1".into());
    }
    if config.max_loaded == Some(0) {
        return Err("max_loaded must be at least 1".into());
    }
    ProbeMode::parse(config.probe.as_deref())?;
    Ok(())
}

impl BackendEntry {
    /// The adapter, once the kind is known.
    pub fn adapter(&self) -> Option<&Arc<dyn Backend>> {
        self.adapter.get()
    }

    pub fn kind(&self) -> Option<BackendKind> {
        self.adapter().map(|a| a.kind())
    }

    /// Detects the server's kind and builds its adapter (once; a backend
    /// whose kind is configured has one from the start).
    pub async fn detect(&self) -> Result<&Arc<dyn Backend>, String> {
        if let Some(adapter) = self.adapter.get() {
            return Ok(adapter);
        }
        let found = drover_backends::detect(
            &self.endpoint,
            &self.client,
            self.api_key.as_deref(),
            self.probe_timeout,
        )
        .await
        .map_err(|e| format!("cannot tell what kind of server it is: {e}"))?;
        tracing::info!(
            backend = %self.name,
            kind = %found.kind,
            version = found.version.as_deref().unwrap_or("unknown"),
            "detected the server's kind"
        );
        note_stream_closer(&self.client, &self.endpoint, found.kind);
        let adapter = adapter_for(
            found.kind,
            self.endpoint.clone(),
            self.client.clone(),
            self.api_key.clone(),
            self.probe_timeout,
        );
        Ok(self.adapter.get_or_init(|| adapter))
    }

    /// What the scheduler should know about each discovered model, under
    /// its public name: config overrides first, then what the server
    /// reports, then the default; and each public name's own id where it
    /// differs, for the prober to record with the rest of what it saw.
    pub fn specs(
        &self,
        models: &[DiscoveredModel],
        aliases: &Aliases,
    ) -> (Vec<ModelSpec>, HashMap<String, String>) {
        let mut own_ids = HashMap::with_capacity(models.len());
        let specs = models
            .iter()
            .map(|m| {
                let public = aliases.public_name(&m.id);
                if public != m.id {
                    own_ids.insert(public.to_string(), m.id.clone());
                }
                ModelSpec {
                    name: ModelName::new(public),
                    state: match m.state {
                        ModelState::Loaded => ServerState::Loaded,
                        ModelState::Loading => ServerState::Loading,
                        // A sleeping model wakes by a reload.
                        ModelState::Unloaded | ModelState::Sleeping => ServerState::Unloaded,
                    },
                    size: m.size_bytes.or_else(|| aliases.size_of(public)),
                    context: m.context_length,
                    slots: self
                        .options
                        .model_slots
                        .get(public)
                        .or_else(|| self.options.model_slots.get(&m.id))
                        .copied()
                        .or(m.slots)
                        .unwrap_or(self.options.default_slots)
                        .max(1),
                }
            })
            .collect();
        (specs, own_ids)
    }

    /// What the scheduler should know beyond the models: config's limits,
    /// the APIs served (config's word, else what was learned, else not),
    /// the server's own queue and busy counts.
    pub fn status(
        &self,
        discovery: &Discovery,
        aliases: &Aliases,
        machines: &crate::machines::Machines,
    ) -> BackendStatus {
        BackendStatus {
            max_concurrent: self.options.max_concurrent,
            responses: self
                .options
                .responses
                .or(discovery.apis.responses)
                .unwrap_or(false),
            messages: self
                .options
                .messages
                .or(discovery.apis.messages)
                .unwrap_or(false),
            saturated: discovery.waiting.is_some_and(|w| w > 0),
            reported_busy: discovery
                .models
                .iter()
                .filter_map(|m| Some((ModelName::new(aliases.public_name(&m.id)), m.busy?)))
                .collect(),
            can_load: discovery.can_load,
            can_unload: discovery.can_unload,
            memory: self.memory_terms(discovery.memory_total),
            // Config first; else the server's own limit (llama.cpp
            // router's --models-max), beyond which it evicts by itself.
            max_loaded: self.options.max_loaded.or(discovery.max_loaded),
            machine: self
                .options
                .machine
                .as_deref()
                .and_then(|m| machines.get(m)),
            // An LLM server, never a worker.
            tasks: false,
        }
    }

    /// Its memory budget's terms, where config or the server (`told`) says
    /// the total. Config first: the operator knows what is free for models.
    pub fn memory_terms(&self, told: Option<u64>) -> Option<MemoryTerms> {
        self.options.memory.or(told).map(|total| MemoryTerms {
            total,
            slot_buffer: self.options.slot_buffer,
            system: self.options.system,
            margin: self.options.margin,
        })
    }

    /// This server's own id for a public model name, when it differs.
    pub fn own_id(&self, public: &str) -> Option<String> {
        drover_core::sync::lock(&self.observed)
            .own_ids
            .get(public)
            .cloned()
    }
}

/// llama.cpp's server closes a connection after every streamed answer while
/// advertising keep-alive: the client is told not to reuse those.
fn note_stream_closer(client: &HttpClient, endpoint: &Endpoint, kind: BackendKind) {
    if kind == BackendKind::LlamaCpp {
        client.closes_after_streams(endpoint.authority());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("a backend named {0:?} already exists")]
    Duplicate(String),
    #[error(
        "{url} is already the backend {existing:?}: the same server added twice would have its slots counted twice and be overloaded"
    )]
    SameServer { url: String, existing: String },
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<BackendId, Arc<BackendEntry>>,
    by_name: BTreeMap<String, BackendId>,
}

/// Every backend the hub has, by id and by name.
pub struct Backends {
    inner: RwLock<Inner>,
    next_id: AtomicU32,
    /// Goes up at every backend added or removed.
    generation: std::sync::atomic::AtomicU64,
    client: HttpClient,
    connect_timeout: Duration,
    probe_timeout: Duration,
}

impl Backends {
    /// The hub's shared HTTP client (backends without a CA of their own,
    /// and a follower's requests relayed to its leader).
    pub(crate) fn client(&self) -> &HttpClient {
        &self.client
    }

    /// Goes up at every backend added or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// A backend id no other backend or worker has.
    pub fn allocate_id(&self) -> BackendId {
        BackendId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub fn new(client: HttpClient, connect_timeout: Duration, probe_timeout: Duration) -> Self {
        Backends {
            inner: RwLock::new(Inner::default()),
            next_id: AtomicU32::new(1),
            generation: std::sync::atomic::AtomicU64::new(0),
            client,
            connect_timeout,
            probe_timeout,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        drover_core::sync::read(&self.inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        drover_core::sync::write(&self.inner)
    }

    /// Validates and adds a backend; the caller starts its prober.
    pub fn add(
        &self,
        config: &BackendSpec,
        parent: &CancellationToken,
    ) -> Result<Arc<BackendEntry>, RegistryError> {
        check_spec(config).map_err(RegistryError::Invalid)?;
        let kind = configured_kind(config).map_err(RegistryError::Invalid)?;
        let probe_mode =
            ProbeMode::parse(config.probe.as_deref()).map_err(RegistryError::Invalid)?;
        let endpoint =
            Endpoint::parse(&config.url).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let name = match &config.name {
            Some(n) => {
                check_name("backend", n).map_err(RegistryError::Invalid)?;
                n.clone()
            }
            None => endpoint.authority().to_string(),
        };
        let mut inner = self.write();
        if inner.by_name.contains_key(&name) {
            return Err(RegistryError::Duplicate(name));
        }
        if let Some(existing) = inner
            .by_id
            .values()
            .find(|e| e.endpoint.same_server(&endpoint))
        {
            return Err(RegistryError::SameServer {
                url: drover_backends::endpoint::redact(&config.url),
                existing: existing.name.clone(),
            });
        }
        // A backend with its own CA gets its own client (and pool).
        let client = match &config.ca_file {
            Some(ca) => HttpClient::with_ca(self.connect_timeout, ca)
                .map_err(|e| RegistryError::Invalid(format!("ca_file {e}")))?,
            None => self.client.clone(),
        };
        let id = self.allocate_id();
        let adapter = OnceLock::new();
        if let Some(kind) = kind {
            note_stream_closer(&client, &endpoint, kind);
            let _ = adapter.set(adapter_for(
                kind,
                endpoint.clone(),
                client.clone(),
                config.api_key.clone(),
                self.probe_timeout,
            ));
        }
        let entry = Arc::new(BackendEntry {
            authorization: endpoint.authorization(config.api_key.as_deref()),
            id,
            name: name.clone(),
            options: BackendOptions {
                default_slots: config.slots.unwrap_or(1),
                model_slots: config.model_slots.clone(),
                max_concurrent: config.max_concurrent,
                memory: config.memory,
                slot_buffer: config.slot_buffer.unwrap_or(0),
                system: config.system.unwrap_or(0),
                margin: config.margin.unwrap_or(0),
                max_loaded: config.max_loaded,
                probe_mode,
                responses: config.responses,
                messages: config.messages,
                machine: config.machine.clone(),
            },
            endpoint,
            adapter,
            client: client.clone(),
            api_key: config.api_key.clone(),
            probe_timeout: self.probe_timeout,
            observed: Mutex::new(Observed::default()),
            cancel: parent.child_token(),
            removed: AtomicBool::new(false),
            spec: BackendSpec {
                name: Some(name.clone()),
                ..config.clone()
            },
        });
        inner.by_name.insert(name, id);
        inner.by_id.insert(id, entry.clone());
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(entry)
    }

    /// Removes a backend by name and stops its prober.
    pub fn remove(&self, name: &str) -> Option<Arc<BackendEntry>> {
        let mut inner = self.write();
        let id = inner.by_name.remove(name)?;
        let entry = inner.by_id.remove(&id)?;
        self.generation.fetch_add(1, Ordering::Relaxed);
        entry.removed.store(true, Ordering::SeqCst);
        entry.cancel.cancel();
        Some(entry)
    }

    pub fn get(&self, id: BackendId) -> Option<Arc<BackendEntry>> {
        self.read().by_id.get(&id).cloned()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<BackendEntry>> {
        let inner = self.read();
        inner
            .by_name
            .get(name)
            .and_then(|id| inner.by_id.get(id))
            .cloned()
    }

    pub fn name_of(&self, id: BackendId) -> String {
        self.read()
            .by_id
            .get(&id)
            .map_or_else(|| id.to_string(), |e| e.name.clone())
    }

    /// Every backend, sorted by name.
    pub fn all(&self) -> Vec<Arc<BackendEntry>> {
        let inner = self.read();
        inner
            .by_name
            .values()
            .filter_map(|id| inner.by_id.get(id).cloned())
            .collect()
    }
}
