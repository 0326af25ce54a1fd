//! One module per subcommand, plus what they share.

/// This build's version (see [`drover_hub::VERSION`]).
pub const VERSION: &str = drover_hub::VERSION;

pub mod agent;
pub mod backend_arg;
pub mod backends;
pub mod demo;
pub mod files;
pub mod http;
pub mod hubs;
pub mod install;
pub mod jobs;
pub mod keys;
pub mod lab;
pub mod models;
pub mod node_services;
pub mod nodes;
pub mod plan;
pub mod release;
pub mod rollout;
pub mod serve;
pub mod table;
pub mod tasks;
pub mod top;
pub mod worker;

use tokio_util::sync::CancellationToken;

/// Logs to stderr; `DROVER_LOG` (or `RUST_LOG`) overrides the filter, for
/// example `DROVER_LOG=warn,drover::request=info` (one line per request
/// only) or `DROVER_LOG=debug`. Colours only on a terminal.
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = std::env::var("DROVER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The `DROVER_*` variables, each checked to be text: a value that is not
/// UTF-8 is named, not a panic.
pub fn drover_env() -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if !key.starts_with("DROVER_") {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("{key}: the value is not valid UTF-8"))?;
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        t.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
