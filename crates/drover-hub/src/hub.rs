//! The hub's shared state and lifecycle: [`start`] binds nothing itself (the
//! caller passes a listener, so tests can use port 0), spawns the probers
//! and the dispatcher's timer under one [`TaskTracker`], and serves until
//! [`HubHandle::shutdown`], which stops intake, answers waiting requests,
//! lets running ones finish (bounded), then awaits every task.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use drover_backends::HttpClient;
use drover_core::{BackendId, ModelName, Priority, RequestId};
use drover_scheduler::{BreakerConfig, ModelPolicy, Scheduler, SchedulerConfig};
use http::HeaderValue;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aliases::Aliases;
use crate::caller::{Clients, KnownClient};
use crate::config::HubConfig;
use crate::continuations::{self, ResponseOwners};
use crate::dispatcher::Dispatcher;
use crate::keys::{KeyError, Keys};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::registry::{BackendEntry, Registry, RegistryError};
use crate::{manager, prober, routes, server, tls};
use drover_proto::admin::BackendSpec;
use drover_proto::admin::KeyKind;

pub struct HubState {
    pub(crate) config: HubConfig,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) registry: Registry,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clients: Clients,
    /// `[[models]]`: public names for the servers' own model ids.
    pub(crate) models: Aliases,
    /// Which backend stored each Responses API response.
    pub(crate) response_owners: ResponseOwners,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: running SSE streams end
    /// with an error event before their connections are cut.
    pub(crate) streams_stop: CancellationToken,
    /// API keys with powers, kept in the data directory.
    pub(crate) keys: Keys,
    pub(crate) limiter: Arc<Limiter>,
    /// The last hour of traffic, for the dashboard.
    pub(crate) traffic: crate::traffic::Traffic,
    /// The live overview, published to the dashboards watching.
    pub(crate) overview: crate::dashboard::Publisher,
    /// The address actually bound (port 0 resolved).
    pub(crate) local_addr: SocketAddr,
    /// Unix time the hub started, for `created` in model listings.
    pub(crate) started_unix: u64,
    next_request: AtomicU64,
    id_salt: u64,
}

impl HubState {
    /// Adds a backend and starts probing it.
    pub fn add_backend(
        self: &Arc<Self>,
        config: &BackendSpec,
    ) -> Result<Arc<BackendEntry>, RegistryError> {
        let entry = self.registry.add(config, &self.shutdown)?;
        self.dispatcher.name(entry.id, &entry.name);
        // Requests for a model nobody lists wait for its first answer.
        self.dispatcher
            .with_scheduler(|s, _| s.await_backend(entry.id));
        self.tasks.spawn(prober::run(self.clone(), entry.clone()));
        Ok(entry)
    }

    /// Removes a backend: no new work goes there; running requests finish.
    pub fn remove_backend(&self, name: &str) -> bool {
        let Some(entry) = self.registry.remove(name) else {
            return false;
        };
        self.dispatcher
            .with_scheduler(|s, _| s.remove_backend(entry.id));
        true
    }

    /// Backends that have never answered a probe, by name: what they serve
    /// is unknown. (The scheduler learns of a backend at its first answer.)
    pub fn unreachable_backends(&self) -> Vec<String> {
        let entries = self.registry.all();
        self.dispatcher.inspect(|s| {
            entries
                .iter()
                .filter(|e| !s.fleet().contains(e.id))
                .map(|e| e.name.clone())
                .collect()
        })
    }

    /// "No backend serves `model`", naming the fleet's models closest to it.
    pub fn model_not_found(&self, model: String) -> crate::error::ApiError {
        self.model_not_found_among(model, None)
    }

    /// "No backend serves `model`", naming the closest of the fleet's
    /// models that are `allowed` (all, for `None`): a key limited to some
    /// models does not learn of the others.
    pub fn model_not_found_among(
        &self,
        model: String,
        allowed: Option<&[String]>,
    ) -> crate::error::ApiError {
        let names = self.dispatcher.inspect(|s| s.fleet().model_names());
        let names = names
            .iter()
            .map(|n| n.as_str())
            .filter(|n| allowed.is_none_or(|a| a.iter().any(|m| m == n)));
        let closest = crate::closest::closest(&model, names);
        crate::error::ApiError::ModelNotFound { model, closest }
    }

    /// "No answering backend serves `model`; `backends` never answered":
    /// their next probe may tell.
    pub fn unreachable(&self, model: String, backends: Vec<String>) -> crate::error::ApiError {
        crate::error::ApiError::Unreachable {
            model,
            backends,
            retry_after: self.config.health.probe_interval,
        }
    }

    /// "Every backend with `model` is down": and when one may take work.
    pub fn no_healthy_backend(&self, model: String) -> crate::error::ApiError {
        let now = self.dispatcher.now();
        let retry_after = self
            .dispatcher
            .inspect(|s| s.reopens_in(&model, now))
            .unwrap_or(self.config.health.probe_interval)
            .max(std::time::Duration::from_secs(1));
        crate::error::ApiError::NoHealthyBackend { model, retry_after }
    }

    /// Backends that list a model (under its public name), by name.
    pub fn backends_listing(&self, model: &str) -> Vec<String> {
        let ids = self.dispatcher.inspect(|s| {
            s.fleet()
                .views()
                .into_iter()
                .filter(|v| v.models.iter().any(|m| m.name.as_str() == model))
                .map(|v| v.id)
                .collect::<Vec<_>>()
        });
        ids.into_iter()
            .map(|id| self.registry.name_of(id))
            .collect()
    }

    /// How far a model's load on a backend got, where the server tells.
    pub fn load_progress(&self, backend: BackendId, model: &str) -> Option<f32> {
        let entry = self.registry.get(backend)?;
        let probe = drover_core::sync::lock(&entry.probe);
        probe.progress.get(model).copied()
    }

    pub fn next_request_id(&self) -> RequestId {
        RequestId(self.next_request.fetch_add(1, Ordering::Relaxed))
    }

    /// A fresh id for the `x-request-id` header: unique per process run and
    /// unguessable enough to not collide across hubs.
    pub fn new_request_header(&self, id: RequestId) -> HeaderValue {
        let mixed = drover_core::mix::mix64(id.0 ^ self.id_salt);
        let text = format!("req_{:016x}{:08x}", mixed, id.0 as u32);
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("req_unknown"))
    }

    /// Whether management calls need no key: only on a loopback listener.
    pub fn admin_open_without_key(&self) -> bool {
        self.local_addr.ip().is_loopback()
    }
}

/// After the shutdown grace, how long ended streams get to deliver their
/// error event before connections are cut.
const STREAM_END_GRACE: Duration = Duration::from_secs(1);

pub struct HubHandle {
    state: Arc<HubState>,
    server: JoinHandle<()>,
    /// Cuts off connections still open after the shutdown grace period.
    hard_stop: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    // The registry's message is the whole story: not a `source`, so that
    // error reports which print causes do not say it twice.
    #[error("backends[{index}] ({url}): {reason}")]
    Backend {
        index: usize,
        url: String,
        reason: RegistryError,
    },
    #[error("cannot read the listener's address: {0}")]
    Io(#[from] std::io::Error),
    #[error("clients[{0}]: two clients share one key")]
    DuplicateClientKey(usize),
    #[error("{0}")]
    Models(String),
    #[error(
        "refusing to listen on {0}: that is beyond loopback, and this hub has no client keys, \
         so anyone who can reach it could use every model. Create one first (drover keys create \
         NAME --data-dir DIR, with this hub's data_dir), listen on 127.0.0.1, or pass --insecure \
         (insecure = true) if the network itself is trusted"
    )]
    Insecure(SocketAddr),
    #[error("{0}")]
    Keys(KeyError),
    #[error("TLS: {0}")]
    Tls(String),
}

/// How often the hub looks whether someone else changed its keys file.
const KEYS_WATCH: std::time::Duration = std::time::Duration::from_secs(2);

/// Picks up changes to the keys file made beside the running hub (`drover
/// keys --data-dir`), until shutdown.
async fn watch_keys(state: Arc<HubState>) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(KEYS_WATCH) => {}
        }
        match state.keys.reload_if_changed() {
            Ok(changed) => {
                if changed {
                    tracing::info!("the keys file changed: its keys are in force now");
                }
                failing = false;
            }
            // Said once, not every two seconds; the keys read before stay
            // in force.
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the changed keys file; the keys read before stay in force");
                }
                failing = true;
            }
        }
    }
}

/// Starts the hub on `listener` with `config`'s backends.
pub async fn start(config: HubConfig, listener: TcpListener) -> Result<HubHandle, StartError> {
    let local_addr = listener.local_addr()?;
    let keys = Keys::open(config.data_dir.as_deref()).map_err(StartError::Keys)?;
    let tls = config
        .tls
        .as_ref()
        .map(tls::acceptor)
        .transpose()
        .map_err(StartError::Tls)?;
    // With client keys, inference beyond loopback needs one.
    if !local_addr.ip().is_loopback() && !config.insecure && !keys.ever(KeyKind::Client) {
        return Err(StartError::Insecure(local_addr));
    }
    let metrics = Arc::new(Metrics::new());
    let mut sched = Scheduler::new(SchedulerConfig {
        max_queue: config.queue.max_waiting,
        max_queue_bytes: config.queue.max_waiting_bytes,
        aging: config.queue.aging,
        breaker: BreakerConfig {
            failure_threshold: config.health.failure_threshold,
            cooldown: config.health.cooldown,
            max_cooldown: config.health.max_cooldown,
        },
        ttl: config.manager.ttl,
        swap_after: config.manager.swap_after,
        idle_after: config.manager.idle_after,
        ..SchedulerConfig::default()
    });
    for m in &config.models {
        let name = ModelName::new(&m.name);
        sched.set_model_policy(
            name.clone(),
            ModelPolicy {
                ttl: m.ttl,
                warm: m.warm,
            },
        );
        if m.pinned {
            sched.pin(&name);
        }
    }
    let mut clients: Clients = HashMap::new();
    for (i, c) in config.clients.iter().enumerate() {
        let known = KnownClient {
            name: c.name.clone(),
            priority: c.priority.and_then(|p| Priority::new(p).ok()),
        };
        if clients.insert(c.key.clone(), known).is_some() {
            return Err(StartError::DuplicateClientKey(i));
        }
    }
    let client = HttpClient::new(config.upstream.connect_timeout);
    let models = Aliases::new(&config.models).map_err(StartError::Models)?;
    let (dispatcher, model_work) =
        Dispatcher::new(sched, config.upstream.cancel_grace, metrics.clone());
    let state = Arc::new(HubState {
        registry: Registry::new(
            client,
            config.upstream.connect_timeout,
            config.health.probe_timeout,
        ),
        dispatcher,
        metrics,
        clients,
        models,
        response_owners: ResponseOwners::new(continuations::CAPACITY),
        keys,
        limiter: Arc::new(Limiter::default()),
        traffic: crate::traffic::Traffic::default(),
        overview: crate::dashboard::Publisher::default(),
        tasks: TaskTracker::new(),
        shutdown: CancellationToken::new(),
        streams_stop: CancellationToken::new(),
        local_addr,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        next_request: AtomicU64::new(1),
        id_salt: RandomState::new().build_hasher().finish(),
        config,
    });
    for (index, b) in state.config.backends.iter().enumerate() {
        state.add_backend(b).map_err(|reason| StartError::Backend {
            index,
            url: drover_backends::redact(&b.url),
            reason,
        })?;
    }
    state
        .tasks
        .spawn(state.dispatcher.clone().run_timer(state.shutdown.clone()));
    state.tasks.spawn(manager::run(state.clone(), model_work));
    state.tasks.spawn(crate::dashboard::run(state.clone()));
    state.tasks.spawn(watch_keys(state.clone()));

    let hard_stop = CancellationToken::new();
    let server = tokio::spawn(server::serve(
        listener,
        tls,
        routes::router(state.clone()),
        state.clone(),
        server::Limits::from_config(&state.config.limits),
        state.shutdown.clone(),
        hard_stop.clone(),
        state.tasks.clone(),
    ));
    tracing::info!(listen = %local_addr, backends = state.config.backends.len(), "hub started");
    Ok(HubHandle {
        state,
        server,
        hard_stop,
    })
}

impl HubHandle {
    pub fn addr(&self) -> SocketAddr {
        self.state.local_addr
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.state.local_addr)
    }

    /// `https` when the hub serves TLS.
    pub fn scheme(&self) -> &'static str {
        if self.state.config.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Resolves when something asked the hub to stop.
    pub async fn stopped(&self) {
        self.state.shutdown.cancelled().await;
    }

    /// Reads the scheduler's state (fleet, slots, queue), for tests and
    /// for callers embedding the hub.
    pub fn inspect<R>(&self, f: impl FnOnce(&Scheduler) -> R) -> R {
        self.state.dispatcher.inspect(f)
    }

    /// The id the scheduler knows a backend by.
    pub fn backend_id(&self, name: &str) -> Option<BackendId> {
        self.state.registry.by_name(name).map(|e| e.id)
    }

    /// Stops intake, answers waiting requests with 503, gives running ones
    /// up to `grace` to finish, ends the streams still running with an
    /// error event, then awaits every task.
    pub async fn shutdown(self, grace: Duration) {
        self.state.shutdown.cancel();
        self.state.dispatcher.close();
        let mut server = self.server;
        if tokio::time::timeout(grace, &mut server).await.is_err() {
            tracing::warn!(
                ?grace,
                "requests still running after the grace period; ending them"
            );
            self.state.streams_stop.cancel();
            // Long enough for the error events to be written; a client that
            // does not read them is cut off all the same.
            if tokio::time::timeout(STREAM_END_GRACE, &mut server)
                .await
                .is_err()
            {
                self.hard_stop.cancel();
                let _ = server.await;
            }
        }
        self.state.tasks.close();
        self.state.tasks.wait().await;
    }
}
