//! A test harness: start simulated servers and a real hub on loopback, talk
//! to the hub over real HTTP, and wait on conditions (never on sleeps).
//!
//! - [`Cluster`] / [`ClusterBuilder`]: the hub and its simulated backends.
//! - [`Client`]: a plain hyper client with JSON and streaming helpers.
//! - [`Raw`]: a raw TCP client, for clients that misbehave.
//! - [`LlamaServer`]: the real llama.cpp server, for checks against a
//!   server nobody here wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod cluster;
pub mod jobs;
mod llama;
mod raw;
pub mod relay;

pub use client::{Client, Reply};
pub use cluster::{Cluster, ClusterBuilder, wait_until, wait_until_within};
pub use llama::LlamaServer;
pub use raw::{Raw, post_head};

pub use drover_hub::HubConfig;
pub use drover_sim::{Dialect, Faults, SimConfig, SimHandle};

/// A command for `program` (a drover binary) without the `DROVER_*`
/// variables of the test's own environment (scripts/test sets some), its
/// standard input closed.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DROVER_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// Runs `cmd` off the async runtime: its standard output when it
/// succeeds, else its standard error.
pub async fn output(mut cmd: std::process::Command) -> Result<String, String> {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A chat request body with one user message.
/// A loopback port that was free a moment ago: nothing listens there now
/// (a server that is down, or one a test starts later).
pub async fn free_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn chat_body(model: &str, content: &str) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
    })
}

/// An LM Studio simulator with every model loaded.
pub fn lmstudio(models: &[&str], slots: usize, ttft_ms: u64) -> SimConfig {
    let models: Vec<String> = models.iter().map(|m| m.to_string()).collect();
    SimConfig {
        dialect: Dialect::LmStudio,
        loaded: models.clone(),
        models,
        slots,
        ttft: std::time::Duration::from_millis(ttft_ms),
        output_tokens: 8,
        ..SimConfig::default()
    }
}

/// A generic OpenAI-compatible simulator.
pub fn openai(models: &[&str], slots: usize, ttft_ms: u64) -> SimConfig {
    SimConfig {
        dialect: Dialect::OpenAi,
        ..lmstudio(models, slots, ttft_ms)
    }
}
