//! The hub's shared state and lifecycle: [`start`] binds nothing itself (the
//! caller passes a listener, so tests can use port 0), spawns the probers
//! and the dispatcher's timer under one [`TaskTracker`], and serves until
//! [`HubHandle::shutdown`], which stops intake, answers waiting requests,
//! lets running ones finish (bounded), then awaits every task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drover_backends::HttpClient;
use drover_core::{BackendId, ModelName, Priority};
use drover_scheduler::{
    BreakerConfig, Event, ModelPolicy, ReserveConfig, Scheduler, SchedulerConfig,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aliases::Aliases;
use crate::caller::{Clients, KnownClient};
use crate::config::HubConfig;
use crate::continuations::{self, ResponseOwners};
use crate::dispatcher::Dispatcher;
use crate::forward::{Forwarder, RequestIds};
use crate::keys::{KeyError, Keys};
use crate::limits::Limiter;
use crate::observe::Observer;
use crate::registry::{BackendEntry, Backends, RegistryError};
use crate::{model_work, prober, routes, server, tls};
use drover_proto::admin::BackendSpec;
use drover_proto::admin::KeyKind;

pub struct HubState {
    pub(crate) config: HubConfig,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) registry: Arc<Backends>,
    /// Where every request's, load's and key's events are counted.
    pub(crate) observer: Arc<Observer>,
    /// The forwarding service.
    pub(crate) forwarder: Forwarder,
    pub(crate) clients: Arc<Clients>,
    /// `[[models]]`: public names for the servers' own model ids.
    pub(crate) models: Arc<Aliases>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: running SSE streams end
    /// with an error event before their connections are cut.
    pub(crate) streams_stop: CancellationToken,
    /// API keys with powers, kept in the data directory.
    pub(crate) keys: Keys,
    /// Durable jobs, where the hub has a store (a data directory or a
    /// database).
    pub(crate) jobs: Option<Arc<crate::jobs::Jobs>>,
    /// Capability workers and the tasks leased to them.
    pub(crate) workers: crate::workers::Workers,
    /// Machines whose servers share one memory.
    pub(crate) machines: crate::machines::Machines,
    /// Nodes whose agents report servers, and those servers' backends.
    pub(crate) node_servers: crate::nodes::servers::Reported,
    /// Nodes' heartbeats, written to the store together.
    pub(crate) node_beats: crate::nodes::beats::Beats,
    /// Woken when a command for a node is stored: its agent's poll looks.
    pub(crate) node_commands: tokio::sync::Notify,
    /// The live overview, published to the dashboards watching.
    pub(crate) overview: crate::dashboard::Publisher,
    /// This hub's place among the hubs on its store: alone, leading or
    /// following.
    pub(crate) cluster: Arc<crate::cluster::Cluster>,
    /// This hub's link to its leader, while it follows.
    pub(crate) link: Arc<crate::cluster::link::Link>,
    /// The address actually bound (port 0 resolved).
    pub(crate) local_addr: SocketAddr,
    /// Unix time the hub started, for `created` in model listings.
    pub(crate) started_unix: u64,
}

impl HubState {
    /// Adds a backend and starts probing it.
    pub fn add_backend(
        self: &Arc<Self>,
        config: &BackendSpec,
    ) -> Result<Arc<BackendEntry>, RegistryError> {
        let entry = self.add_reported_backend(config)?;
        self.tasks.spawn(prober::run(self.clone(), entry.clone()));
        Ok(entry)
    }

    /// Adds a backend a node agent reports: the agent's heartbeats say what
    /// it has, so it has no prober of its own.
    pub(crate) fn add_reported_backend(
        self: &Arc<Self>,
        config: &BackendSpec,
    ) -> Result<Arc<BackendEntry>, RegistryError> {
        let entry = self.registry.add(config, &self.shutdown)?;
        self.dispatcher.name(entry.id, &entry.name);
        // Requests for a model nobody lists wait for its first answer.
        self.dispatcher.apply(Event::Awaited(entry.id));
        Ok(entry)
    }

    /// Removes a backend: no new work goes there; running requests finish.
    pub fn remove_backend(&self, name: &str) -> bool {
        let Some(entry) = self.registry.remove(name) else {
            return false;
        };
        self.dispatcher.apply(Event::Removed(entry.id));
        true
    }

    /// Backends that have never answered a probe, by name.
    pub fn unreachable_backends(&self) -> Vec<String> {
        self.forwarder.unreachable_backends()
    }

    /// "No backend serves `model`", naming the fleet's models closest to it.
    pub fn model_not_found(&self, model: String) -> crate::error::ApiError {
        self.forwarder.model_not_found_among(model, None).into()
    }

    /// "No backend serves `model`", naming the closest of the fleet's
    /// models that are `allowed` (all, for `None`).
    pub fn model_not_found_among(
        &self,
        model: String,
        allowed: Option<&[String]>,
    ) -> crate::error::ApiError {
        self.forwarder.model_not_found_among(model, allowed).into()
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
    #[error("{0}")]
    Store(drover_store::StoreError),
    #[error("{0}")]
    WebhookSecret(crate::jobs::secret::LoadError),
}

/// How often the hub reads its keys again from the store.
const KEYS_WATCH: std::time::Duration = std::time::Duration::from_secs(2);

/// Picks up keys created or revoked beside this hub (by another hub on the
/// same database, or `drover keys --data-dir`), until shutdown.
async fn watch_keys(state: Arc<HubState>) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(KEYS_WATCH) => {}
        }
        match state.keys.reload().await {
            Ok(()) => {
                if failing {
                    tracing::info!("the API keys can be read again");
                }
                failing = false;
            }
            // Said once, not every two seconds; the keys read before stay
            // in force.
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the API keys; the keys read before stay in force");
                }
                failing = true;
            }
        }
    }
}

/// Starts the hub on `listener` with `config`'s backends.
pub async fn start(config: HubConfig, listener: TcpListener) -> Result<HubHandle, StartError> {
    let local_addr = listener.local_addr()?;
    let tls = config
        .tls
        .as_ref()
        .map(tls::acceptor)
        .transpose()
        .map_err(StartError::Tls)?;
    let (store, ready) = match crate::jobs::location(&config).map_err(StartError::Store)? {
        Some(location) => {
            let holder = format!("drover hub pid {} at {}", std::process::id(), local_addr);
            let store = drover_store::Store::connect(location, &holder)
                .await
                .map_err(StartError::Store)?;
            // A database that is away does not keep the hub from serving
            // inference: the job API says it is away until it answers.
            let ready = match store.migrate().await {
                Ok(()) => true,
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(store = %store.describe(), error = %e, "the store is unreachable: inference is served, the job and batch API answers 503 until it answers");
                    false
                }
                Err(e) => return Err(StartError::Store(e)),
            };
            (Some(store), ready)
        }
        None => (None, false),
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let cluster = crate::cluster::Cluster::new(
        config.cluster.clone(),
        store.as_ref(),
        config.data_dir.as_deref(),
        crate::cluster::default_address(scheme, local_addr),
    )?;
    let keys = Keys::open(store.clone(), config.data_dir.as_deref())
        .await
        .map_err(StartError::Keys)?;
    // With client keys, inference beyond loopback needs one; keys that
    // cannot be read yet cannot say whether there are any.
    if !local_addr.ip().is_loopback() && !config.insecure {
        if let Some(unknown) = keys.unknown() {
            return Err(StartError::Store(unknown));
        }
        if !keys.ever(KeyKind::Client) {
            return Err(StartError::Insecure(local_addr));
        }
    }
    let jobs = match store {
        Some(store) => {
            let configured = config.jobs.webhook_secret.as_ref();
            let secret = if ready {
                crate::jobs::secret::Secret::load(&store, configured).await
            } else {
                crate::jobs::secret::Secret::new(configured)
            }
            .map_err(StartError::WebhookSecret)?;
            Some(Arc::new(crate::jobs::Jobs::new(
                store,
                config.jobs.clone(),
                ready,
                secret,
            )))
        }
        None => None,
    };
    let observer = Arc::new(Observer::default());
    let sched = Scheduler::new(SchedulerConfig {
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
        reserve: (!config.queue.foreground_window.is_zero()).then(|| ReserveConfig {
            background_below: Priority::new(config.queue.background_below).unwrap_or(Priority::MAX),
            window: config.queue.foreground_window,
        }),
        ..SchedulerConfig::default()
    });
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
    let aliases = Arc::new(Aliases::new(&config.models).map_err(StartError::Models)?);
    let (dispatcher, model_work) = Dispatcher::new(
        sched,
        config.upstream.cancel_grace,
        observer.clone(),
        config.journal,
    );
    for m in &config.models {
        let model = ModelName::new(&m.name);
        let policy = ModelPolicy {
            ttl: m.ttl,
            warm: m.warm,
        };
        dispatcher.apply(Event::Policy {
            model: model.clone(),
            policy,
        });
        if m.pinned {
            dispatcher.apply(Event::Pinned {
                model,
                pinned: true,
            });
        }
    }
    let registry = Arc::new(Backends::new(
        client,
        config.upstream.connect_timeout,
        config.health.probe_timeout,
    ));
    let clients = Arc::new(clients);
    let limiter = Arc::new(Limiter::default());
    let streams_stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let link = crate::cluster::link::Link::new(tasks.clone(), config.upstream.cancel_grace);
    let forwarder = Forwarder::new(crate::forward::Shared {
        upstream: config.upstream.clone(),
        queue_timeout: config.queue.timeout,
        probe_interval: config.health.probe_interval,
        dispatcher: dispatcher.clone(),
        registry: registry.clone(),
        observer: observer.clone(),
        aliases: aliases.clone(),
        owners: Arc::new(ResponseOwners::new(continuations::CAPACITY)),
        limiter: limiter.clone(),
        clients: clients.clone(),
        streams_stop: streams_stop.clone(),
        ids: RequestIds::default(),
        cluster: cluster.clone(),
        link: link.clone(),
    });
    let state = Arc::new(HubState {
        registry,
        dispatcher,
        observer,
        forwarder,
        clients,
        models: aliases,
        keys,
        jobs,
        workers: crate::workers::Workers::new(config.workers.clone()),
        machines: crate::machines::Machines::new(config.machines.clone()),
        node_servers: crate::nodes::servers::Reported::default(),
        node_commands: tokio::sync::Notify::new(),
        node_beats: crate::nodes::beats::Beats::default(),
        overview: crate::dashboard::Publisher::default(),
        cluster,
        link,
        tasks,
        shutdown: CancellationToken::new(),
        streams_stop,
        local_addr,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
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
    state
        .tasks
        .spawn(model_work::run(state.clone(), model_work));
    state.tasks.spawn(crate::dashboard::run(state.clone()));
    state.tasks.spawn(watch_keys(state.clone()));
    state.tasks.spawn(crate::cluster::run(state.clone()));
    state
        .tasks
        .spawn(crate::cluster::follow_fleet(state.clone()));
    state.tasks.spawn(crate::cluster::link::run(
        state.link.clone(),
        state.cluster.clone(),
        state.cluster.secret.clone(),
        state.dispatcher.clone(),
        state.registry.clone(),
        state.shutdown.clone(),
    ));
    state
        .tasks
        .spawn(crate::workers::run_sweeper(state.clone()));
    state
        .tasks
        .spawn(crate::nodes::servers::run_sweeper(state.clone()));
    state
        .tasks
        .spawn(crate::nodes::beats::run_flusher(state.clone()));
    crate::jobs::runner::start(&state);

    let hard_stop = CancellationToken::new();
    let server = tokio::spawn(server::serve(
        listener,
        tls,
        routes::router(state.clone()),
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

    /// Every scheduler event applied since the hub started, with what each
    /// came to, when `journal` is set (else nothing).
    pub fn journal(&self) -> Vec<crate::Journaled> {
        self.state.dispatcher.journal()
    }

    /// Requests running on backends and waiting in the queue, now.
    pub fn load(&self) -> (u32, usize) {
        let fleet = crate::views::Snapshot::take(&self.state.dispatcher);
        let running = fleet.backends.values().map(|v| v.busy).sum();
        (running, fleet.queue.waiting)
    }

    /// Backends that have answered a probe, so the scheduler knows them.
    pub fn answered_backends(&self) -> usize {
        self.state.dispatcher.known_backends().len()
    }

    /// The scheduler's configuration: with [`HubHandle::journal`], what a
    /// replay starts from.
    pub fn scheduler_config(&self) -> SchedulerConfig {
        self.inspect(|s| s.config().clone())
    }

    /// The forwarding service, for callers beside the HTTP edge.
    pub fn forwarder(&self) -> Forwarder {
        self.state.forwarder.clone()
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
        if let Some(jobs) = &self.state.jobs {
            jobs.store.close().await;
        }
    }
}
