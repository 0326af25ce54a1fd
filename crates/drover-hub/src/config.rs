//! The hub's configuration: one TOML file, every field optional, overridable
//! by `DROVER_*` environment variables, with errors that name the field.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_proto::admin::BackendSpec;

use crate::aliases::ModelAlias;
use crate::webhook::WebhookSecret;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Where the gateway listens, `HOST:PORT`; the host may be a name
    /// (`localhost:8700`). Loopback by default.
    pub listen: String,
    /// Listen beyond loopback although nothing there checks who calls:
    /// until client keys exist, anyone who can reach the port can use every
    /// model. Off by default; the hub refuses such an address without it.
    pub insecure: bool,
    /// Bearer key for `/admin/*`. Without one the management API answers
    /// only when the hub listens on loopback (or to an admin key).
    pub admin_key: Option<String>,
    /// `/metrics` answers anyone. Off by default: once the hub has keys it
    /// needs an admin or a metrics key (`drover keys create NAME --kind
    /// metrics`), since it names every backend, model and key.
    pub public_metrics: bool,
    /// Where the hub keeps what must outlive it (its API keys). Unset: it
    /// keeps nothing on disk and creates no keys (`drover serve` sets
    /// `~/.local/share/drover` by default).
    pub data_dir: Option<std::path::PathBuf>,
    /// Where jobs, batches and files are kept: `postgres://…` for
    /// PostgreSQL (several hubs may share it), `sqlite:PATH` for a file.
    /// Unset: `drover.db` in `data_dir` (no store without either: the job
    /// API says so).
    pub database_url: Option<String>,
    /// Serve HTTPS (rustls) with this certificate and key; plain HTTP
    /// without.
    pub tls: Option<TlsConfig>,
    pub queue: QueueConfig,
    pub upstream: UpstreamConfig,
    pub health: HealthConfig,
    pub limits: LimitsConfig,
    pub manager: ManagerConfig,
    pub jobs: JobsConfig,
    pub batches: BatchesConfig,
    pub workers: WorkersConfig,
    pub nodes: NodesConfig,
    pub cluster: ClusterConfig,
    /// Machines whose servers share one memory, by name (`[machines.NAME]`;
    /// a backend says `machine = "NAME"`, a node's servers are on the
    /// node's machine).
    pub machines: BTreeMap<String, MachineSpec>,
    pub backends: Vec<BackendSpec>,
    pub clients: Vec<ClientConfig>,
    /// One public name for a model across servers that call it differently.
    pub models: Vec<ModelAlias>,
    /// Keep every scheduler event with what it came to
    /// (`HubHandle::journal`), to replay them. Not read from a file: it
    /// grows without bound, and is for tests and embedders.
    #[serde(skip)]
    pub journal: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Requests that may wait in the hub at once; beyond it, 429.
    pub max_waiting: usize,
    /// How long a request may wait for a slot before a 503.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Bytes of request bodies that may wait at once (a number of bytes or
    /// a size like `"512MiB"`); beyond it, 429 as for a full queue.
    #[serde(deserialize_with = "bytes")]
    pub max_waiting_bytes: usize,
    /// Waiting this long raises a request's standing by one priority point.
    #[serde(deserialize_with = "duration")]
    pub aging: Duration,
    /// Requests below this priority are background (jobs and batch lines,
    /// at 10 unless they say otherwise): while foreground requests arrive
    /// for a model, background ones leave free as many of its slots as
    /// that traffic keeps busy (at most half), so a large batch does not
    /// make interactive requests wait for a slot.
    pub background_below: u8,
    /// How far back a model's foreground arrivals count for the slots kept
    /// for them: a window after the last one, the batch has every slot
    /// again. `"0s"` keeps no slots: every free slot goes to whatever
    /// waits, by priority.
    #[serde(deserialize_with = "duration")]
    pub foreground_window: Duration,
}

/// The listener's certificate chain and private key, PEM files. Both are
/// needed (`validate` says so); each may come from its own variable.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub cert: std::path::PathBuf,
    #[serde(default)]
    pub key: std::path::PathBuf,
}

/// Durable jobs: how the hub runs what was handed over to it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Jobs waiting in the scheduler's memory at once; the rest wait in the
    /// store and come in as these leave.
    pub window: u32,
    /// How long a claimed job is its runner's without a renewal; a job
    /// whose runner vanished runs again after it.
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
    /// Attempts before a job is dead, unless it says otherwise.
    pub max_attempts: u32,
    /// A job's priority unless it says otherwise: below interactive
    /// requests' default (50), so a large batch never starves them; aging
    /// sees that it is never starved either.
    pub priority: u8,
    /// The first retry's back-off; each next one doubles it (with jitter),
    /// up to `max_backoff`.
    #[serde(deserialize_with = "duration")]
    pub backoff: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// How often the store is looked at for work when nothing said there
    /// is some (the truth; wake-ups are hints).
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// The largest answer a job keeps (bytes or a size like `"64MiB"`).
    #[serde(deserialize_with = "bytes")]
    pub max_answer_bytes: usize,
    /// What job callbacks are signed with (`whsec_...`), over the secret
    /// the hub keeps in its store (made at its first start, shared by every
    /// hub on that store). Hubs sharing a database sign alike only if each
    /// is given the same one, or none.
    #[serde(deserialize_with = "webhook_secret")]
    pub webhook_secret: Option<WebhookSecret>,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            window: 512,
            lease: Duration::from_secs(60),
            max_attempts: 3,
            priority: 10,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            max_answer_bytes: 64 * 1024 * 1024,
            webhook_secret: None,
        }
    }
}

/// The Batch API's bounds on an input file (OpenAI's by default).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchesConfig {
    /// Requests in one batch.
    pub max_lines: usize,
    /// Bytes of one input file (a number or a size like `"200MiB"`).
    #[serde(deserialize_with = "bytes")]
    pub max_bytes: usize,
    /// Lines of one batch that may run at once, unless the batch says
    /// (`max_concurrency` at create); unset: no cap but the fleet's.
    pub max_concurrency: Option<u32>,
}

impl Default for BatchesConfig {
    fn default() -> Self {
        BatchesConfig {
            max_lines: 50_000,
            max_bytes: 200 * 1024 * 1024,
            max_concurrency: None,
        }
    }
}

/// Capability workers: the rhythm the hub expects of them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// How often a worker heartbeats (a poll counts); three missed and it
    /// is gone, its tasks given to others.
    #[serde(deserialize_with = "duration")]
    pub heartbeat: Duration,
    /// A task's lease: the worker heartbeats the task at least this often
    /// while it runs, or it runs elsewhere.
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
    /// The longest a poll waits for a task (under common proxies' 60 s
    /// read timeouts).
    #[serde(deserialize_with = "duration")]
    pub poll_wait_max: Duration,
    /// The model `POST /v1/tasks/plan` asks, unless the request names one.
    pub planner_model: Option<String>,
    /// The most tokens the planner model may answer with.
    pub planner_max_tokens: u32,
    /// The most tasks one plan may make.
    pub planner_max_tasks: u32,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            heartbeat: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            poll_wait_max: Duration::from_secs(25),
            planner_model: None,
            planner_max_tokens: 1024,
            planner_max_tasks: 8,
        }
    }
}

/// Nodes: the machines whose agents join the hub.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodesConfig {
    /// How often an agent heartbeats; three missed and its node is down.
    #[serde(deserialize_with = "duration")]
    pub heartbeat: Duration,
    /// How long a node's new build has to heartbeat the hub after an
    /// update before its agent rolls back to the old one by itself.
    #[serde(deserialize_with = "duration")]
    pub update_deadline: Duration,
}

impl Default for NodesConfig {
    fn default() -> Self {
        NodesConfig {
            heartbeat: Duration::from_secs(10),
            update_deadline: Duration::from_secs(60),
        }
    }
}

/// Several hubs on one PostgreSQL database: one leads (it decides where
/// every request goes), the others ask it for each request's slot.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Hubs with the same name on one database are one cluster.
    pub name: String,
    /// Where the other hubs reach this one (`http://HOST:PORT`): by
    /// default the listener's address, or the machine's name where it
    /// listens on every address.
    pub advertise: Option<String>,
    /// How long a leader's lease lasts without a renewal, on the
    /// database's clock.
    #[serde(deserialize_with = "duration")]
    pub lease_ttl: Duration,
    /// How often the lease is renewed (and every hub says it is alive).
    #[serde(deserialize_with = "duration")]
    pub renew_every: Duration,
    /// How long a follower goes on asking while no leader answers (the
    /// request's own wait still holds) before it answers 503: longer than
    /// a change of leader takes (a lease, and a lease of settling).
    #[serde(deserialize_with = "duration")]
    pub grant_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "default".into(),
            advertise: None,
            lease_ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(3),
            grant_timeout: Duration::from_secs(30),
        }
    }
}

/// One machine's memory, which every server on it fills together: the same
/// terms as a backend's own budget (`models + slots x slot_buffer + system +
/// margin <= memory`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    #[serde(deserialize_with = "required_size")]
    pub memory: u64,
    #[serde(default, deserialize_with = "drover_proto::admin::size")]
    pub slot_buffer: Option<u64>,
    #[serde(default, deserialize_with = "drover_proto::admin::size")]
    pub system: Option<u64>,
    #[serde(default, deserialize_with = "drover_proto::admin::size")]
    pub margin: Option<u64>,
}

impl MachineSpec {
    pub fn terms(&self) -> drover_scheduler::MemoryTerms {
        drover_scheduler::MemoryTerms {
            total: self.memory,
            slot_buffer: self.slot_buffer.unwrap_or(0),
            system: self.system.unwrap_or(0),
            margin: self.margin.unwrap_or(0),
        }
    }
}

fn required_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    drover_proto::admin::size(d)?
        .ok_or_else(|| serde::de::Error::custom("memory: a size such as \"24GiB\""))
}

/// The model manager: when models are loaded and unloaded.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerConfig {
    /// An idle model is unloaded after this long, where its server can
    /// unload. Unset (the default): never; the servers' own expiry (Ollama's
    /// keep-alive) still applies.
    #[serde(deserialize_with = "opt_duration")]
    pub ttl: Option<Duration>,
    /// How long requests for a model that only unloading a busy one would
    /// place are passed over before that backend is cleared for it.
    #[serde(deserialize_with = "duration")]
    pub swap_after: Duration,
    /// A model is not idle for eviction until this long after its last
    /// request: clients that send one request after another leave it
    /// unused only for milliseconds between them.
    #[serde(deserialize_with = "duration")]
    pub idle_after: Duration,
    /// Longest a load may take before it counts as failed.
    #[serde(deserialize_with = "duration")]
    pub load_timeout: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            ttl: None,
            swap_after: Duration::from_secs(30),
            idle_after: Duration::from_millis(500),
            load_timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Extra attempts on other backends for a request that fails before its
    /// first byte reaches the client.
    pub max_retries: u32,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Until the backend's first byte. Generous: a server may load the model
    /// first (LM Studio JIT).
    #[serde(deserialize_with = "duration")]
    pub response_timeout: Duration,
    /// Longest silence inside a response before it counts as broken.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// After a client leaves mid-request, how long its slot stays taken: the
    /// server notices the closed connection only at its next write, and a
    /// slot handed on sooner would overload it.
    #[serde(deserialize_with = "duration")]
    pub cancel_grace: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often each backend is asked for its models (the active probe).
    #[serde(deserialize_with = "duration")]
    pub probe_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub probe_timeout: Duration,
    /// Consecutive failures that open a backend's breaker.
    pub failure_threshold: u32,
    #[serde(deserialize_with = "duration")]
    pub cooldown: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_cooldown: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body (bytes, or a size like `"16MiB"`): 413 beyond.
    #[serde(deserialize_with = "bytes")]
    pub max_body_bytes: usize,
    /// Longest a client may take to send its request body: 408 after.
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    /// Longest a client may take no byte of an answer being sent to it; then
    /// the answer is ended and its slot freed.
    #[serde(deserialize_with = "duration")]
    pub client_stall_timeout: Duration,
    /// Client connections open at once; more wait to be accepted. Unset: as
    /// many as the process's file-descriptor limit safely allows (each
    /// running request holds a client and a backend connection).
    pub max_connections: Option<usize>,
    /// Models taken from one backend's listing; the rest are dropped (the
    /// backend's listing says how many). No server holds this many, and
    /// what the hub does per probe and per listing grows with them.
    pub max_models_per_backend: usize,
}

/// A known client: its key identifies it for fairness and sets its default
/// priority.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub priority: Option<u8>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listen: "127.0.0.1:8700".into(),
            insecure: false,
            admin_key: None,
            public_metrics: false,
            data_dir: None,
            database_url: None,
            tls: None,
            queue: QueueConfig::default(),
            upstream: UpstreamConfig::default(),
            health: HealthConfig::default(),
            limits: LimitsConfig::default(),
            manager: ManagerConfig::default(),
            jobs: JobsConfig::default(),
            batches: BatchesConfig::default(),
            workers: WorkersConfig::default(),
            nodes: NodesConfig::default(),
            cluster: ClusterConfig::default(),
            machines: BTreeMap::new(),
            backends: Vec::new(),
            clients: Vec::new(),
            models: Vec::new(),
            journal: false,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_waiting: 10_000,
            timeout: Duration::from_secs(60),
            max_waiting_bytes: 512 * 1024 * 1024,
            aging: Duration::from_secs(2),
            background_below: 25,
            foreground_window: Duration::from_secs(10),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            max_retries: 3,
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
            cancel_grace: Duration::from_millis(500),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(5),
            failure_threshold: 3,
            cooldown: Duration::from_secs(2),
            max_cooldown: Duration::from_secs(30),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 16 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            client_stall_timeout: Duration::from_secs(60),
            max_connections: None,
            max_models_per_backend: 2048,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl HubConfig {
    /// Parses TOML, then applies `DROVER_*` overrides from `env`: the rest of
    /// the variable's name is the field's path, lower case, sections joined
    /// by a double underscore (`DROVER_QUEUE__TIMEOUT=30s`). A bad override
    /// is reported under the variable's name, not as a field of the file.
    pub fn from_toml(text: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        for (key, value) in env {
            let Some(rest) = key.strip_prefix("DROVER_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            // Only fields the file could hold; other DROVER_ variables belong
            // to the command line (DROVER_HUB, DROVER_CONFIG, DROVER_LOG, ...).
            if !KNOWN_ROOTS.contains(&path[0].as_str()) {
                continue;
            }
            let value = env_value(&path, value).map_err(|e| ConfigError(format!("{key}: {e}")))?;
            set_path(&mut doc, &path, value).map_err(|e| ConfigError(format!("{key}: {e}")))?;
        }
        let config: HubConfig = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        listen_host_port(&self.listen).map_err(|e| ConfigError(format!("listen: {e}")))?;
        if self.queue.timeout.is_zero() {
            return Err(ConfigError("queue.timeout must be more than zero".into()));
        }
        let w = &self.workers;
        if w.heartbeat.is_zero() || w.lease < Duration::from_secs(1) || w.poll_wait_max.is_zero() {
            return Err(ConfigError(
                "workers.heartbeat and workers.poll_wait_max must be more than zero, workers.lease at least 1 s".into(),
            ));
        }
        let c = &self.cluster;
        if c.name.is_empty()
            || c.name.len() > 64
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError(
                "cluster.name takes 1 to 64 letters, digits, '-' and '_'".into(),
            ));
        }
        if c.renew_every.is_zero() || c.lease_ttl < c.renew_every * 2 || c.grant_timeout.is_zero() {
            return Err(ConfigError(
                "cluster.lease_ttl must be at least twice cluster.renew_every, and both and cluster.grant_timeout more than zero".into(),
            ));
        }
        if let Some(a) = &c.advertise
            && !(a.starts_with("http://") || a.starts_with("https://"))
        {
            return Err(ConfigError(format!(
                "cluster.advertise is where other hubs reach this one: http://HOST:PORT or https://HOST:PORT, not {}",
                crate::error::echo(a)
            )));
        }
        if self.nodes.heartbeat < Duration::from_millis(10) {
            return Err(ConfigError("nodes.heartbeat must be at least 10 ms".into()));
        }
        if !(1..=64).contains(&w.planner_max_tasks) || w.planner_max_tokens == 0 {
            return Err(ConfigError(
                "workers.planner_max_tasks must be from 1 to 64, workers.planner_max_tokens more than zero".into(),
            ));
        }
        if w.planner_model
            .as_deref()
            .is_some_and(|m| m.trim().is_empty())
        {
            return Err(ConfigError(
                "workers.planner_model is empty: name a model, or leave it out".into(),
            ));
        }
        if self.queue.background_below > 100 {
            return Err(ConfigError(
                "queue.background_below is a priority: from 0 to 100".into(),
            ));
        }
        if self.health.probe_interval.is_zero() {
            return Err(ConfigError(
                "health.probe_interval must be more than zero".into(),
            ));
        }
        if self.health.failure_threshold == 0 {
            return Err(ConfigError(
                "health.failure_threshold must be at least 1".into(),
            ));
        }
        if let Some(tls) = &self.tls
            && (tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty())
        {
            return Err(ConfigError(
                "tls needs both cert and key (PEM files)".into(),
            ));
        }
        let jobs = &self.jobs;
        if jobs.window == 0 || jobs.max_attempts == 0 {
            return Err(ConfigError(
                "jobs.window and jobs.max_attempts must be at least 1".into(),
            ));
        }
        if jobs.lease < Duration::from_secs(1) {
            return Err(ConfigError(
                "jobs.lease must be at least 1 s: its runner renews it every third of it".into(),
            ));
        }
        if jobs.priority > 100 {
            return Err(ConfigError("jobs.priority must be from 0 to 100".into()));
        }
        if jobs.poll_interval.is_zero() || jobs.backoff.is_zero() {
            return Err(ConfigError(
                "jobs.poll_interval and jobs.backoff must be more than zero".into(),
            ));
        }
        if let Some(url) = &self.database_url {
            drover_store::Location::parse(url)
                .map_err(|e| ConfigError(format!("database_url: {e}")))?;
        }
        if self.manager.load_timeout.is_zero() {
            return Err(ConfigError(
                "manager.load_timeout must be more than zero".into(),
            ));
        }
        if self.manager.ttl.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError(
                "manager.ttl must be more than zero; leave it out for never".into(),
            ));
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.ttl.is_some_and(|t| t.is_zero()) {
                return Err(ConfigError(format!(
                    "models[{i}].ttl must be more than zero"
                )));
            }
        }
        if self.limits.max_connections == Some(0) {
            return Err(ConfigError(
                "limits.max_connections must be at least 1".into(),
            ));
        }
        for (i, c) in self.clients.iter().enumerate() {
            if c.priority.is_some_and(|p| p > 100) {
                return Err(ConfigError(format!(
                    "clients[{i}].priority must be from 0 to 100"
                )));
            }
        }
        for (i, b) in self.backends.iter().enumerate() {
            crate::registry::check_spec(b)
                .map_err(|e| ConfigError(format!("backends[{i}]: {e}")))?;
        }
        crate::aliases::Aliases::new(&self.models).map_err(ConfigError)?;
        Ok(())
    }
}

/// Splits `HOST:PORT` (`[::1]:8700` for IPv6), checking the port.
pub fn listen_host_port(listen: &str) -> Result<(&str, u16), String> {
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| format!("{listen:?} should be HOST:PORT, like 127.0.0.1:8700"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{listen:?}: the port must be a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{listen:?}: the host is missing"));
    }
    Ok((host, port))
}

/// Every field of [`HubConfig`] an environment variable may set (the
/// tables of arrays are for files). `every_root_can_be_set_from_the_environment`
/// keeps it whole.
const KNOWN_ROOTS: [&str; 17] = [
    "listen",
    "insecure",
    "admin_key",
    "public_metrics",
    "data_dir",
    "database_url",
    "tls",
    "queue",
    "upstream",
    "health",
    "limits",
    "manager",
    "jobs",
    "batches",
    "workers",
    "nodes",
    "cluster",
];

/// The TOML value an environment variable stands for. Its text is tried as
/// a string first, then as an integer, a float and a boolean, and the first
/// that the field accepts on its own wins: `DROVER_ADMIN_KEY=123456` stays a
/// string, `DROVER_UPSTREAM__MAX_RETRIES=1` becomes a number. If none fits,
/// the field's own complaint (an unknown name, a bad duration) is the error.
fn env_value(path: &[String], text: &str) -> Result<toml::Value, String> {
    let mut candidates = vec![toml::Value::String(text.to_string())];
    if let Ok(i) = text.parse::<i64>() {
        candidates.push(toml::Value::Integer(i));
    }
    if let Ok(f) = text.parse::<f64>() {
        candidates.push(toml::Value::Float(f));
    }
    if let Ok(b) = text.parse::<bool>() {
        candidates.push(toml::Value::Boolean(b));
    }
    let mut first_error = None;
    for value in candidates {
        let mut alone = toml::Table::new();
        set_path(&mut alone, path, value.clone())?;
        match toml::Value::Table(alone).try_into::<HubConfig>() {
            Ok(_) => return Ok(value),
            Err(e) => {
                first_error.get_or_insert_with(|| e.message().to_string());
            }
        }
    }
    Err(first_error.unwrap_or_else(|| "not a valid value".into()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty name".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("{head} is not a section")),
            }
        }
    }
}

/// Durations as people write them: `60s`, `500ms`, `2m`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_duration(&s))
        .transpose()
        .map_err(serde::de::Error::custom)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 30s or 500ms: {e}"))
}

/// A Standard Webhooks secret, `whsec_` and base64; what is wrong with it
/// is said without showing it.
fn webhook_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<WebhookSecret>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| s.parse())
        .transpose()
        .map_err(|e| serde::de::Error::custom(format!("webhook_secret: {e}")))
}

/// Sizes as people write them: `16777216`, `"16MiB"`, `"512 MB"`, `"1GiB"`.
fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => usize::try_from(n).map_err(serde::de::Error::custom),
        Size::Text(s) => drover_core::size::parse(&s)
            .and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_root_can_be_set_from_the_environment() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = HubConfig::from_toml(
            "",
            &env(&[
                ("DROVER_LISTEN", "127.0.0.1:9"),
                ("DROVER_INSECURE", "true"),
                ("DROVER_ADMIN_KEY", "k"),
                ("DROVER_PUBLIC_METRICS", "true"),
                ("DROVER_DATA_DIR", "/srv/drover"),
                ("DROVER_QUEUE__MAX_WAITING", "7"),
                ("DROVER_UPSTREAM__MAX_RETRIES", "1"),
                ("DROVER_HEALTH__FAILURE_THRESHOLD", "9"),
                ("DROVER_LIMITS__BODY_TIMEOUT", "3s"),
                ("DROVER_MANAGER__TTL", "5m"),
                ("DROVER_TLS__CERT", "/etc/drover/cert.pem"),
                ("DROVER_TLS__KEY", "/etc/drover/key.pem"),
                ("DROVER_DATABASE_URL", "postgres://u@h/db"),
                ("DROVER_JOBS__WINDOW", "64"),
                ("DROVER_BATCHES__MAX_LINES", "10"),
                ("DROVER_WORKERS__HEARTBEAT", "200ms"),
                ("DROVER_NODES__HEARTBEAT", "300ms"),
                ("DROVER_CLUSTER__LEASE_TTL", "7s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9");
        assert!(c.insecure);
        assert_eq!(c.admin_key.as_deref(), Some("k"));
        assert!(c.public_metrics);
        assert_eq!(c.data_dir, Some(std::path::PathBuf::from("/srv/drover")));
        assert_eq!(c.queue.max_waiting, 7);
        assert_eq!(c.upstream.max_retries, 1);
        assert_eq!(c.health.failure_threshold, 9);
        assert_eq!(c.limits.body_timeout, Duration::from_secs(3));
        assert_eq!(c.manager.ttl, Some(Duration::from_secs(300)));
        assert_eq!(
            c.tls.map(|t| t.key),
            Some(std::path::PathBuf::from("/etc/drover/key.pem"))
        );
        assert_eq!(c.database_url.as_deref(), Some("postgres://u@h/db"));
        assert_eq!(c.jobs.window, 64);
        assert_eq!(c.batches.max_lines, 10);
        assert_eq!(c.workers.heartbeat, Duration::from_millis(200));
        assert_eq!(c.nodes.heartbeat, Duration::from_millis(300));
        assert_eq!(c.cluster.lease_ttl, Duration::from_secs(7));
        assert_eq!(KNOWN_ROOTS.len(), 17, "a new root needs a line above");
    }

    #[test]
    fn the_webhook_secret_comes_from_the_file_or_the_environment() {
        const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let from_file =
            HubConfig::from_toml(&format!("[jobs]\nwebhook_secret = \"{SECRET}\""), &[]).unwrap();
        let env = vec![(
            "DROVER_JOBS__WEBHOOK_SECRET".to_string(),
            SECRET.to_string(),
        )];
        let from_env = HubConfig::from_toml("", &env).unwrap();
        for c in [from_file, from_env] {
            let secret = c.jobs.webhook_secret.expect("a secret");
            assert_eq!(secret.to_string(), SECRET);
        }
        assert_eq!(HubConfig::default().jobs.webhook_secret, None);
        let env = vec![(
            "DROVER_JOBS__WEBHOOK_SECRET".to_string(),
            "whsec_c2hvcnQ=".to_string(),
        )];
        let err = HubConfig::from_toml("", &env).unwrap_err().to_string();
        assert!(
            err.starts_with("DROVER_JOBS__WEBHOOK_SECRET: ") && err.contains("24 to 64 bytes"),
            "{err}"
        );
        assert!(!err.contains("c2hvcnQ"), "the secret is not echoed: {err}");
    }

    #[test]
    fn tls_needs_both_files() {
        let e = HubConfig::from_toml("[tls]\ncert = \"/c.pem\"", &[]).unwrap_err();
        assert!(e.0.contains("both cert and key"), "{e:?}");
    }

    /// The README's example config is what a first-time user copies: it
    /// must parse, with every field it shows.
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("its end");
        let c = HubConfig::from_toml(&readme[start..end], &[]).unwrap();
        assert_eq!(c.manager.swap_after, Duration::from_secs(30));
        assert_eq!(c.backends[0].max_loaded, Some(2));
        assert!(c.models[0].warm);
        assert_eq!(c.models[0].size, Some(47 * (1u64 << 30) / 10));
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(HubConfig::from_toml("", &[]).unwrap(), HubConfig::default());
    }

    #[test]
    fn reads_a_full_file() {
        let c = HubConfig::from_toml(
            r#"
            listen = "0.0.0.0:9000"
            admin_key = "secret"
            [queue]
            timeout = "30s"
            [[backends]]
            name = "studio1"
            kind = "lmstudio"
            url = "http://10.0.0.102:1234"
            model_slots = { qwen = 2 }
            [[clients]]
            name = "bots"
            key = "sk-bots"
            priority = 20
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.queue.timeout, Duration::from_secs(30));
        assert_eq!(c.backends[0].model_slots["qwen"], 2);
        assert_eq!(c.clients[0].priority, Some(20));
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = vec![
            ("DROVER_QUEUE__TIMEOUT".to_string(), "5s".to_string()),
            ("DROVER_UPSTREAM__MAX_RETRIES".to_string(), "1".to_string()),
            ("DROVER_HUB".to_string(), "http://x".to_string()),
        ];
        let c = HubConfig::from_toml("[queue]\ntimeout = \"60s\"", &env).unwrap();
        assert_eq!(c.queue.timeout, Duration::from_secs(5));
        assert_eq!(c.upstream.max_retries, 1);
    }

    #[test]
    fn an_environment_value_takes_the_type_its_field_wants() {
        let env = vec![
            ("DROVER_ADMIN_KEY".to_string(), "123456".to_string()),
            ("DROVER_INSECURE".to_string(), "true".to_string()),
            (
                "DROVER_QUEUE__MAX_WAITING_BYTES".to_string(),
                "64MiB".to_string(),
            ),
            (
                "DROVER_LIMITS__MAX_BODY_BYTES".to_string(),
                "1024".to_string(),
            ),
        ];
        let c = HubConfig::from_toml("", &env).unwrap();
        assert_eq!(c.admin_key.as_deref(), Some("123456"));
        assert!(c.insecure);
        assert_eq!(c.queue.max_waiting_bytes, 64 << 20);
        assert_eq!(c.limits.max_body_bytes, 1024);
    }

    #[test]
    fn a_bad_environment_value_is_named_by_its_variable() {
        for (key, value, want) in [
            ("DROVER_QUEUE__TIMOUT", "5s", "timout"),
            ("DROVER_QUEUE__TIMEOUT", "soon", "soon"),
            ("DROVER_UPSTREAM__MAX_RETRIES", "many", "\"many\""),
        ] {
            let env = vec![(key.to_string(), value.to_string())];
            let err = HubConfig::from_toml("", &env).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{key}: ")), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn listen_takes_host_names_and_checks_the_port() {
        assert_eq!(listen_host_port("localhost:8700"), Ok(("localhost", 8700)));
        assert_eq!(listen_host_port("[::1]:80"), Ok(("::1", 80)));
        assert!(listen_host_port("localhost").is_err());
        assert!(listen_host_port("localhost:http").is_err());
        let err = HubConfig::from_toml("listen = \"nowhere\"", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("listen: "), "{err}");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        let size = |text: &str| {
            HubConfig::from_toml(&format!("[limits]\nmax_body_bytes = {text}"), &[])
                .map(|c| c.limits.max_body_bytes)
        };
        assert_eq!(size("\"16MiB\"").unwrap(), 16 << 20);
        assert_eq!(size("\"512 MB\"").unwrap(), 512_000_000);
        assert_eq!(size("7").unwrap(), 7);
        assert!(size("\"7 parsecs\"").is_err());
        assert!(size("\"99999999999999999999GiB\"").is_err());
    }

    #[test]
    fn errors_name_the_bad_field() {
        let cases = [
            ("[queue]\ntimeout = \"soon\"", "soon"),
            ("[queue]\nmax_wait = 3", "max_wait"),
            ("listen = \"nowhere\"", "listen"),
            ("[[backends]]\nkind = \"lmstudio\"", "url"),
            (
                "[[clients]]\nname = \"a\"\nkey = \"k\"\npriority = 200",
                "clients[0].priority",
            ),
        ];
        for (text, want) in cases {
            let err = HubConfig::from_toml(text, &[]).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}

#[cfg(test)]
mod example {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../drover.example.toml");

    /// The fields serde knows for the table `bogus` lands in, from its
    /// complaint about an unknown one.
    fn fields(bogus: &str) -> Vec<String> {
        let e = HubConfig::from_toml(bogus, &[]).unwrap_err().to_string();
        let list = e
            .split("expected one of ")
            .nth(1)
            .or_else(|| e.split("expected ").nth(1))
            .unwrap_or_else(|| panic!("no field list in {e}"));
        list.split(',')
            .filter_map(|f| f.split('`').nth(1).map(str::to_string))
            .collect()
    }

    #[test]
    fn the_example_configuration_parses_and_names_every_option() {
        let c = HubConfig::from_toml(EXAMPLE, &[]).unwrap();
        assert_eq!(c.backends.len(), 1);
        assert_eq!(c.models.len(), 1);
        assert_eq!(c.clients.len(), 1);
        let tables = [
            "nope = 1",
            "[queue]\nnope = 1",
            "[upstream]\nnope = 1",
            "[health]\nnope = 1",
            "[limits]\nnope = 1",
            "[manager]\nnope = 1",
            "[jobs]\nnope = 1",
            "[cluster]\nnope = 1",
            "[tls]\nnope = 1",
            "[machines.m]\nmemory = 1\nnope = 1",
            "[[backends]]\nurl = \"http://h:1\"\nnope = 1",
            "[[models]]\nname = \"m\"\nnope = 1",
            "[[clients]]\nname = \"c\"\nkey = \"k\"\nnope = 1",
        ];
        for bogus in tables {
            for field in fields(bogus) {
                // Set, or shown commented out with its meaning.
                let named = EXAMPLE.lines().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{field} ="))
                        || l.starts_with(&format!("[{field}]"))
                        || l.starts_with(&format!("[{field}."))
                        || l.starts_with(&format!("[[{field}]]"))
                });
                assert!(
                    named,
                    "drover.example.toml does not name `{field}` ({bogus})"
                );
            }
        }
    }
}
