//! The LLM servers on this machine: the usual ports (LM Studio 1234, Ollama
//! 11434, llama.cpp 8080, vLLM 8000, or `--scan-port`s) on loopback unless
//! `--no-scan`, and
//! those named with `--server`. Each heartbeat asks every one what it has
//! (the same discovery the hub's own probe makes) and reports it; a usual
//! port with nothing on it is left out, a named server that does not
//! answer is reported with why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_backends::{Backend, Endpoint, HttpClient, adapter_for, detect};
use drover_proto::nodes::NodeServer;

/// Where LM Studio, Ollama, llama.cpp and vLLM listen by default.
pub const USUAL_PORTS: [u16; 4] = [1234, 11434, 8080, 8000];
/// A server on this machine answers in far less; one that does not must
/// not hold up the heartbeat.
const TIMEOUT: Duration = Duration::from_secs(3);

pub struct Finder {
    client: HttpClient,
    /// `(url, named)`: a named server is reported even when it is away.
    candidates: Vec<(String, bool)>,
    /// Adapters of the servers found, by URL: the kind is detected once,
    /// and again after the server stops answering.
    found: HashMap<String, Arc<dyn Backend>>,
}

impl Finder {
    /// `named`: `--server` URLs; `scan`: the ports to look on, on
    /// loopback; `hub`: the hub's own URL, never taken for a server of
    /// this machine.
    pub fn new(named: &[String], scan: &[u16], hub: &str) -> anyhow::Result<Self> {
        let mut candidates: Vec<(String, bool)> = Vec::new();
        for url in named {
            Endpoint::parse(url).map_err(|e| anyhow::anyhow!("--server {url}: {e}"))?;
            candidates.push((url.trim_end_matches('/').to_string(), true));
        }
        let hub = Endpoint::parse(hub).ok();
        for &port in scan {
            let url = format!("http://127.0.0.1:{port}");
            let is_hub = hub
                .as_ref()
                .is_some_and(|h| Endpoint::parse(&url).is_ok_and(|e| e.same_server(h)));
            if !is_hub && !candidates.iter().any(|(c, _)| *c == url) {
                candidates.push((url, false));
            }
        }
        Ok(Finder {
            client: HttpClient::new(TIMEOUT),
            candidates,
            found: HashMap::new(),
        })
    }

    /// Asks every candidate what it has, all at once.
    pub async fn look(&mut self) -> Vec<NodeServer> {
        let asks = self.candidates.iter().map(|(url, named)| {
            let known = self.found.get(url).cloned();
            let client = self.client.clone();
            async move {
                let started = Instant::now();
                let result = ask(url, known, &client).await;
                (url.clone(), *named, started, result)
            }
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut servers = Vec::new();
        for (url, named, started, result) in answers {
            let age_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match result {
                Ok((adapter, discovery)) => {
                    servers.push(NodeServer {
                        url: url.clone(),
                        kind: adapter.kind().as_str().to_string(),
                        discovery: Some(discovery),
                        error: None,
                        age_ms,
                    });
                    self.found.insert(url, adapter);
                }
                Err(error) => {
                    let known = self.found.remove(&url);
                    if named {
                        servers.push(NodeServer {
                            kind: known.map_or("auto", |a| a.kind().as_str()).to_string(),
                            url,
                            discovery: None,
                            error: Some(error),
                            age_ms,
                        });
                    }
                }
            }
        }
        servers
    }
}

/// Detects the server's kind (unless known) and asks what it has.
async fn ask(
    url: &str,
    known: Option<Arc<dyn Backend>>,
    client: &HttpClient,
) -> Result<(Arc<dyn Backend>, drover_backends::Discovery), String> {
    let endpoint = Endpoint::parse(url).map_err(|e| e.to_string())?;
    let adapter = match known {
        Some(adapter) => adapter,
        None => {
            let detected = detect(&endpoint, client, None, TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            adapter_for(detected.kind, endpoint, client.clone(), None, TIMEOUT)
        }
    };
    let discovery = adapter.discover().await.map_err(|e| e.to_string())?;
    Ok((adapter, discovery))
}
