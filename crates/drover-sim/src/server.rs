//! Starting a simulator and its accept loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Dialect;
use crate::connection;
use crate::handle::SimHandle;
use crate::shared::Shared;
use crate::{SimConfig, SimError};

/// Starts simulators. See [`SimServer::start`].
#[derive(Debug)]
pub struct SimServer;

impl SimServer {
    /// Serves `config` on `listener` until [`SimHandle::shutdown`] (or until
    /// the handle is dropped). Must be called inside a tokio runtime.
    pub fn start(listener: TcpListener, config: SimConfig) -> Result<SimHandle, SimError> {
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared::new(config, shutdown.clone())?);
        let tracker = TaskTracker::new();
        let (commands, command_rx) = mpsc::channel(1);
        let accept = AcceptLoop {
            addr,
            shared: Arc::clone(&shared),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            commands: command_rx,
        };
        tracker.spawn(accept.run(listener));
        if shared.settings.dialect == Dialect::LlamaCpp
            && let Some(model) = shared.models().first().cloned()
        {
            // llama-server loads its model at start and answers 503 until
            // it is ready.
            let loader = Arc::clone(&shared);
            let stop = shutdown.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = model.ensure_loaded(loader.settings.load_time, &loader.counters) => {}
                }
            });
        }
        tracing::info!(%addr, dialect = %shared.settings.dialect, "simulator listening");
        Ok(SimHandle::new(addr, shared, tracker, shutdown, commands))
    }
}

/// A request to the accept loop from the handle.
#[derive(Debug)]
pub(crate) enum ListenCommand {
    /// Drop the listener (`true`) or bind it again (`false`).
    Refuse(bool, oneshot::Sender<io::Result<()>>),
}

struct AcceptLoop {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    commands: mpsc::Receiver<ListenCommand>,
}

impl AcceptLoop {
    async fn run(mut self, listener: TcpListener) {
        let mut listener = Some(listener);
        // Connections accepted while listening drain when the listener is
        // dropped, so a refusing simulator stops answering on pooled
        // connections too, not just on new ones.
        let mut epoch = self.shutdown.child_token();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                Some(command) = self.commands.recv() => match command {
                    ListenCommand::Refuse(true, done) => {
                        listener = None;
                        epoch.cancel();
                        epoch = self.shutdown.child_token();
                        tracing::info!(addr = %self.addr, "refusing connections");
                        let _ = done.send(Ok(()));
                    }
                    ListenCommand::Refuse(false, done) => {
                        let result = match listener {
                            Some(_) => Ok(()),
                            None => TcpListener::bind(self.addr).await.map(|l| {
                                tracing::info!(addr = %self.addr, "accepting connections again");
                                listener = Some(l);
                            }),
                        };
                        let _ = done.send(result);
                    }
                },
                accepted = accept(listener.as_ref()) => match accepted {
                    Ok(stream) => {
                        let shared = Arc::clone(&self.shared);
                        self.tracker.spawn(connection::serve(stream, shared, epoch.clone()));
                    }
                    Err(error) => {
                        // Usually out of file descriptors; retrying at once
                        // would spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}
