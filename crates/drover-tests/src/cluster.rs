//! A hub with simulated backends, all in this process, on loopback ports.

use std::time::Duration;

use drover_hub::{BackendSpec, HubConfig, HubHandle};
use drover_sim::{Dialect, SimConfig, SimHandle, SimServer};
use tokio::net::TcpListener;

use crate::client::Client;

pub struct ClusterBuilder {
    /// Each simulator with the hub's config for it (its URL filled in at
    /// start).
    sims: Vec<(String, SimConfig, BackendSpec)>,
    /// Backends at addresses where nothing listens.
    unreachable: Vec<String>,
    /// Real servers the test started itself.
    external: Vec<BackendSpec>,
    config: HubConfig,
}

pub struct Cluster {
    pub hub: HubHandle,
    /// In the order they were added.
    pub sims: Vec<SimHandle>,
    pub names: Vec<String>,
    pub client: Client,
    /// What the hub was started with, to start it again.
    config: HubConfig,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterBuilder {
    pub fn new() -> Self {
        let mut config = HubConfig::default();
        // Quick probes and short cooldowns keep recovery tests short.
        config.health.probe_interval = Duration::from_millis(100);
        config.health.cooldown = Duration::from_millis(200);
        config.health.max_cooldown = Duration::from_millis(400);
        ClusterBuilder {
            sims: Vec::new(),
            unreachable: Vec::new(),
            external: Vec::new(),
            config,
        }
    }

    /// The hub's config as built so far (the tests' quick probes), for a
    /// hub a test starts itself.
    pub fn hub_config(&self) -> HubConfig {
        self.config.clone()
    }

    /// Adds a simulated backend named `name`.
    pub fn sim(self, name: &str, config: SimConfig) -> Self {
        self.sim_with(name, config, |_| {})
    }

    /// Adds a simulated backend whose slots per model the hub's config sets.
    pub fn sim_with_slots(self, name: &str, config: SimConfig, slots: u32) -> Self {
        self.sim_with(name, config, |b| b.slots = Some(slots))
    }

    /// Adds a simulated backend with the hub's config for it adjusted by
    /// `f` (kind and URL are set from the simulator).
    pub fn sim_with(
        mut self,
        name: &str,
        config: SimConfig,
        f: impl FnOnce(&mut BackendSpec),
    ) -> Self {
        let mut spec = BackendSpec {
            name: Some(name.to_string()),
            ..BackendSpec::default()
        };
        f(&mut spec);
        self.sims.push((name.to_string(), config, spec));
        self
    }

    /// Adds a server the test runs itself (a real llama-server), which must
    /// list a model before the cluster counts as started.
    pub fn external(mut self, spec: BackendSpec) -> Self {
        self.external.push(spec);
        self
    }

    /// Adds a backend named `name` at a loopback port where nothing listens.
    pub fn unreachable(mut self, name: &str) -> Self {
        self.unreachable.push(name.to_string());
        self
    }

    pub fn hub(mut self, f: impl FnOnce(&mut HubConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Starts everything and waits until the hub has discovered every
    /// backend's models.
    pub async fn start(self) -> Cluster {
        let mut sims = Vec::new();
        let mut names = Vec::new();
        let mut config = self.config;
        for (name, sim_config, mut spec) in self.sims {
            // "auto" in a test's spec asks the hub to detect the kind.
            let kind = match sim_config.dialect {
                Dialect::LlamaCppRouter => "llamacpp",
                dialect => dialect.name(),
            };
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let sim = SimServer::start(listener, sim_config).unwrap();
            if spec.kind.is_empty() {
                spec.kind = kind.into();
            }
            spec.url = sim.url();
            config.backends.push(spec);
            names.push(name);
            sims.push(sim);
        }
        for name in self.unreachable {
            let port = crate::free_port().await;
            config.backends.push(BackendSpec {
                name: Some(name),
                kind: "lmstudio".into(),
                url: format!("http://127.0.0.1:{port}"),
                slots: None,
                model_slots: Default::default(),
                api_key: None,
                ..BackendSpec::default()
            });
        }
        let externals = self.external.len();
        config.backends.extend(self.external);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.listen = listener.local_addr().unwrap().to_string();
        let hub = drover_hub::start(config.clone(), listener).await.unwrap();
        let client = Client::new(&hub.url());
        let cluster = Cluster {
            hub,
            sims,
            names,
            client,
            config,
        };
        let want = cluster.sims.len() + externals;
        cluster.discovered(want).await;
        cluster
    }
}

impl Cluster {
    /// What the hub was started with.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Stops the hub (giving running requests `grace`) and starts a new one
    /// with the same config and data on another port, the backends left
    /// running; waits until it has discovered them.
    pub async fn restart_hub(self, grace: Duration) -> Cluster {
        let Cluster {
            hub,
            sims,
            names,
            mut config,
            ..
        } = self;
        hub.shutdown(grace).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.listen = listener.local_addr().unwrap().to_string();
        let hub = drover_hub::start(config.clone(), listener).await.unwrap();
        let client = Client::new(&hub.url());
        let want = config.backends.len();
        let cluster = Cluster {
            hub,
            sims,
            names,
            client,
            config,
        };
        cluster.discovered(want).await;
        cluster
    }

    async fn discovered(&self, want: usize) {
        let cluster = self;
        wait_until("every backend is discovered", || {
            cluster.hub.inspect(|s| {
                s.fleet()
                    .views()
                    .iter()
                    .filter(|v| !v.models.is_empty())
                    .count()
            }) >= want
        })
        .await;
    }
    pub fn sim(&self, name: &str) -> &SimHandle {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no sim named {name}"));
        &self.sims[i]
    }

    /// Requests waiting in the hub's queue.
    pub fn waiting(&self) -> usize {
        self.hub.inspect(|s| s.queue().len())
    }

    /// Requests the hub has running on a backend.
    pub fn busy(&self, backend: &str) -> u32 {
        let id = self.hub.backend_id(backend).unwrap();
        self.hub
            .inspect(|s| s.fleet().view(id).map_or(0, |v| v.busy))
    }

    /// A backend's breaker state as the admin API reports it.
    pub async fn breaker(&self, backend: &str) -> String {
        let r = self.client.get(&format!("/admin/backends/{backend}")).await;
        r.json()["breaker"].as_str().unwrap().to_string()
    }

    pub async fn shutdown(self) {
        self.hub.shutdown(Duration::from_secs(5)).await;
        for sim in self.sims {
            sim.shutdown().await;
        }
    }
}

/// Polls `condition` until it holds; panics naming `what` after 10 s. This
/// waits on state, not on time: the bound only turns a hang into a failure.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until an async condition holds, for at most `timeout`: for servers
/// that must be asked over the network.
pub async fn wait_until_within<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
