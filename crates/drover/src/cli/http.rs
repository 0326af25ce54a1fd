//! A small JSON-over-HTTP client for the CLI's management commands.

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Which hub a management command talks to, and with what key.
#[derive(clap::Args)]
pub struct Hub {
    /// The hub's URL.
    #[arg(
        long,
        env = "DROVER_HUB",
        default_value = "http://127.0.0.1:8700",
        global = true
    )]
    pub hub: String,
    /// An admin key (or the config's admin_key), if the hub needs one.
    #[arg(long, env = "DROVER_ADMIN_KEY", global = true, hide_env_values = true)]
    pub admin_key: Option<String>,
}

impl Hub {
    pub fn api(&self) -> Api {
        Api::new(&self.hub, self.admin_key.clone())
    }
}

pub struct Api {
    base: String,
    key: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    pub fn new(base: &str, key: Option<String>) -> Self {
        Api {
            base: base.trim_end_matches('/').to_string(),
            key,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request; returns the status and the parsed JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let url = format!("{}{}", self.base, path);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::ACCEPT, "application/json");
        if let Some(key) = &self.key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let payload = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&v)?)
            }
            None => Bytes::new(),
        };
        let resp = self
            .client
            .request(req.body(Full::new(payload)).context("bad request")?)
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            })
        };
        Ok((status, json))
    }
}

/// Turns an error answer into a message that says what the hub said.
pub fn check(status: u16, body: &serde_json::Value) -> anyhow::Result<()> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let msg = body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    anyhow::bail!("the hub answered {status}: {msg}")
}
