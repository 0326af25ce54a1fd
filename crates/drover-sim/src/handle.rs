use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::ListenCommand;
use crate::shared::Shared;
use crate::{Dialect, Faults, SimError, SimStats};

/// Controls a running simulator. Dropping it stops the simulator without
/// waiting; [`SimHandle::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Owns the accept loop and every connection task.
    tracker: TaskTracker,
    shutdown: CancellationToken,
    commands: mpsc::Sender<ListenCommand>,
}

impl SimHandle {
    pub(crate) fn new(
        addr: SocketAddr,
        shared: Arc<Shared>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        commands: mpsc::Sender<ListenCommand>,
    ) -> Self {
        SimHandle {
            addr,
            shared,
            tracker,
            shutdown,
            commands,
        }
    }

    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to reach it, such as `http://127.0.0.1:41234`, with no
    /// trailing slash. An unspecified listen address (`0.0.0.0`, `::`)
    /// becomes the loopback address of the same family.
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    pub fn dialect(&self) -> Dialect {
        self.shared.settings.dialect
    }

    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Waits until `condition` holds for the stats, then returns them.
    /// Wakes on every change rather than polling; wrap it in
    /// `tokio::time::timeout` to bound the wait.
    pub async fn wait_for(&self, mut condition: impl FnMut(&SimStats) -> bool) -> SimStats {
        self.shared
            .watch
            .wait_for(|| {
                let stats = self.shared.stats();
                condition(&stats).then_some(stats)
            })
            .await
    }

    /// Zeroes the counters, as `POST /_sim/reset` does.
    pub fn reset_stats(&self) {
        self.shared.reset();
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.get()
    }

    /// Takes effect for requests that arrive after the call. Turning
    /// `close_after_stream` off doesn't revive a connection that already
    /// carried a stream under it: the real server had closed it.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.set(faults);
    }

    /// `true` drops the listener, so new connections get `ECONNREFUSED`, and
    /// drains the open ones: answers in progress finish, then each
    /// connection closes. `false` binds the same address again. Returns once
    /// the change is in effect; re-binding fails if another socket took the
    /// port meanwhile.
    pub async fn refuse_connections(&self, refuse: bool) -> Result<(), SimError> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(ListenCommand::Refuse(refuse, done))
            .await
            .map_err(|_| SimError::ShutDown)?;
        result
            .await
            .map_err(|_| SimError::ShutDown)?
            .map_err(|e: io::Error| SimError::Io(e))
    }

    /// Marks `model` loaded or unloaded at once, without the load time and
    /// without counting a load. Dialects without a load state keep every
    /// model loaded whatever this says.
    pub fn set_loaded(&self, model: &str, loaded: bool) -> Result<(), SimError> {
        let state = self
            .shared
            .model(model)
            .ok_or_else(|| SimError::UnknownModel(model.to_owned()))?;
        if self.shared.settings.dialect.has_load_state() {
            state.set_loaded(loaded);
        }
        Ok(())
    }

    /// Stops accepting, lets answers in progress finish, and waits for every
    /// task to end. Hung requests are cut off, since they never finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.tracker.close();
    }
}
