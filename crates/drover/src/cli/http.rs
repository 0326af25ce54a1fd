//! A small JSON-over-HTTP client for the CLI's commands that talk to a
//! running hub: the management commands with an admin key, `drover jobs`
//! with a client key.

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Where `drover serve` listens unless told otherwise.
const DEFAULT_HUB: &str = "http://127.0.0.1:8700";

/// Which hub a management command talks to, and with what key.
#[derive(clap::Args)]
pub struct Hub {
    /// The hub's URL.
    #[arg(long, env = "DROVER_HUB", default_value = DEFAULT_HUB, global = true)]
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

/// Which hub a command that hands it inference work talks to, and with a
/// client key: the hub refuses inference, jobs included, to an admin key.
#[derive(clap::Args)]
pub struct ClientHub {
    /// The hub's URL.
    #[arg(long, env = "DROVER_HUB", default_value = DEFAULT_HUB, global = true)]
    pub hub: String,
    /// A client key (`drover keys create NAME`), if the hub has any.
    #[arg(long, env = "DROVER_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
}

impl ClientHub {
    pub fn api(&self) -> Api {
        Api::new(&self.hub, self.api_key.clone())
    }
}

/// A hub's answer: its status, headers and JSON body (a body that is not
/// JSON as a string).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub json: serde_json::Value,
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
        let body = body
            .map(|v| serde_json::to_vec(&v).map(Bytes::from))
            .transpose()?;
        let answer = self.send(method, path, Vec::new(), body).await?;
        Ok((answer.status, answer.json))
    }

    /// Sends `body` (JSON, its bytes as they are) with `headers` besides
    /// the key; returns the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Option<Bytes>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{}", self.base, path);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::ACCEPT, "application/json");
        if let Some(key) = &self.key {
            // Checked here, so that a key pasted with a line break is not
            // blamed on the URL; the key itself is never shown.
            let value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| anyhow::anyhow!("the key has characters a header cannot carry"))?;
            req = req.header(header::AUTHORIZATION, value);
        }
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let payload = match body {
            Some(bytes) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                bytes
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).with_context(|| {
            format!("cannot make a request of {url:?}: is the hub's URL right?")
        })?;
        let (status, headers, bytes) = self.exchange(req).await?;
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            })
        };
        Ok(Answer {
            status,
            headers,
            json,
        })
    }

    /// `GET path`, its body as bytes (a build, not JSON).
    pub async fn fetch(&self, path: &str) -> anyhow::Result<(u16, http::HeaderMap, Bytes)> {
        let url = format!("{}{}", self.base, path);
        let mut req = Request::builder().method(Method::GET).uri(&url);
        if let Some(key) = &self.key {
            let value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| anyhow::anyhow!("the key has characters a header cannot carry"))?;
            req = req.header(header::AUTHORIZATION, value);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .with_context(|| format!("cannot make a request of {url:?}"))?;
        self.exchange(req).await
    }

    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<(u16, http::HeaderMap, Bytes)> {
        let resp = self
            .client
            .request(req)
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.base))?;
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok((status, parts.headers, bytes))
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

/// An id or a name as one path segment or query value: letters, digits and
/// `-_:` as they are, anything else percent-encoded so it cannot change the
/// path or the query.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
