//! The real llama.cpp `llama-server`, started on a free loopback port for a
//! test: a server nobody here wrote, to check the hub and the adapters
//! against. `scripts/test` builds it (`scripts/llama-server`) and writes
//! tiny real models (`scripts/tiny-models`), and passes both by environment:
//! `DROVER_LLAMA_SERVER` (the binary) and `DROVER_TINY_GGUF_DIR` (the
//! models). A test run without them fails, saying how to set them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::client::Client;
use crate::cluster::wait_until_within;

pub struct LlamaServer {
    child: Child,
    pub url: String,
}

fn from_env(var: &str, script: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!(
            "{var} is not set: these tests run the real llama-server. \
             Run the suite with scripts/test, or set {var}=$({script})"
        ),
    }
}

impl LlamaServer {
    /// The `llama-server` binary.
    pub fn binary() -> PathBuf {
        from_env("DROVER_LLAMA_SERVER", "scripts/llama-server")
    }

    /// A tiny model by name: `tiny-a`, `tiny-b`, `tiny-c` or `tiny-64k`.
    pub fn model(name: &str) -> PathBuf {
        Self::models_dir().join(format!("{name}.gguf"))
    }

    /// The directory holding the tiny models, for router mode.
    pub fn models_dir() -> PathBuf {
        from_env("DROVER_TINY_GGUF_DIR", "scripts/tiny-models")
    }

    /// Starts `llama-server ARGS --host 127.0.0.1 --port P` and waits until
    /// it answers `ready_path` with 200 (`/health` for one model, `/models`
    /// in router mode).
    pub async fn start(args: &[&str], ready_path: &str) -> LlamaServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(Self::binary())
            .args(args)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("llama-server should start");
        let server = LlamaServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = Client::new(&server.url);
        let path = ready_path.to_string();
        wait_until_within("llama-server answers", Duration::from_secs(60), || {
            let client = client.clone();
            let path = path.clone();
            async move { client.try_get(&path).await.is_some_and(|s| s == 200) }
        })
        .await;
        server
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
