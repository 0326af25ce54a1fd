//! The [`Backend`] trait: how the hub learns what a server has. Node agents
//! will later report the same [`Discovery`] for servers they find.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::client::HttpClient;
use crate::endpoint::Endpoint;
use crate::kind::BackendKind;
use crate::{lmstudio, openai};

/// One model as a server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredModel {
    pub id: String,
    /// Resident and ready.
    pub loaded: bool,
    /// Concurrent requests, when the server says.
    pub slots: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    pub models: Vec<DiscoveredModel>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url} answered something unexpected: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Backend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;

    fn endpoint(&self) -> &Endpoint;

    /// Asks the server what it has. Doubles as the active health probe.
    fn discover(&self) -> BoxFuture<'_, Result<Discovery, BackendError>>;
}

pub fn adapter_for(
    kind: BackendKind,
    endpoint: Endpoint,
    client: HttpClient,
    api_key: Option<String>,
    timeout: Duration,
) -> Arc<dyn Backend> {
    let http = Http {
        authorization: endpoint.authorization(api_key.as_deref()),
        endpoint,
        client,
        timeout,
    };
    match kind {
        BackendKind::LmStudio => Arc::new(lmstudio::LmStudio::new(http)),
        BackendKind::OpenAi => Arc::new(openai::OpenAi::new(http)),
    }
}

/// What every adapter needs to GET JSON from its server.
pub(crate) struct Http {
    pub endpoint: Endpoint,
    pub client: HttpClient,
    pub authorization: Option<HeaderValue>,
    pub timeout: Duration,
}

/// The most discovery reads of any one answer. A model list of a thousand
/// models is well under a megabyte; a server answering gigabytes (broken or
/// hostile) must not take the hub's memory with it.
pub const MAX_DISCOVERY_BYTES: usize = 8 * 1024 * 1024;

impl Http {
    /// GETs `path` and parses the JSON answer. `Ok(None)` for 404, which
    /// adapters use to tell an older server from a broken one.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, BackendError> {
        let uri = self
            .endpoint
            .uri(path)
            .map_err(|e| BackendError::Malformed {
                url: format!("{}{}", self.endpoint, path),
                reason: e.to_string(),
            })?;
        let url = uri.to_string();
        let build = || {
            let mut req = Request::new(Full::new(Bytes::new()));
            *req.uri_mut() = uri.clone();
            let headers = req.headers_mut();
            headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            if let Some(auth) = &self.authorization {
                headers.insert(header::AUTHORIZATION, auth.clone());
            }
            req
        };
        let fetch = async {
            let resp = self
                .client
                .send(build)
                .await
                .map_err(|e| BackendError::Unreachable {
                    url: url.clone(),
                    reason: error_chain(&e),
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_DISCOVERY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        BackendError::Malformed {
                            url: url.clone(),
                            reason: format!(
                                "the answer is larger than {} MiB",
                                MAX_DISCOVERY_BYTES / (1024 * 1024)
                            ),
                        }
                    } else {
                        BackendError::Unreachable {
                            url: url.clone(),
                            reason: e.to_string(),
                        }
                    }
                })?
                .to_bytes();
            Ok::<_, BackendError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| BackendError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })??;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(BackendError::Status { url, status });
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| BackendError::Malformed {
                url,
                reason: e.to_string(),
            })
    }
}

/// hyper's errors hide the cause (connection refused, ...) in `source()`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
