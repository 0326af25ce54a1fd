//! [`Http`]: what every adapter needs to talk JSON (and Prometheus text) to
//! its server, bounded in size and time, with the server's own error
//! message kept for the operator.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use std::time::Duration;

use crate::backend::{BackendError, error_chain};
use crate::client::HttpClient;
use crate::endpoint::Endpoint;

/// The most discovery reads of any one answer. A model list of a thousand
/// models is well under a megabyte; a server answering gigabytes (broken or
/// hostile) must not take the hub's memory with it.
pub const MAX_DISCOVERY_BYTES: usize = 8 * 1024 * 1024;

/// How much of a server's error body an error message keeps.
const MAX_ERROR_MESSAGE: usize = 300;

pub(crate) struct Http {
    pub endpoint: Endpoint,
    pub client: HttpClient,
    pub authorization: Option<HeaderValue>,
    /// Discovery's time limit.
    pub timeout: Duration,
}

/// A status and a whole (bounded) body.
pub(crate) struct Answer {
    pub url: String,
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, or `Malformed`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, BackendError> {
        serde_json::from_slice(&self.body).map_err(|e| BackendError::Malformed {
            url: self.url.clone(),
            reason: e.to_string(),
        })
    }

    /// `Ok(self)` for a 2xx, else the error naming the status and what the
    /// server said.
    pub fn success(self) -> Result<Answer, BackendError> {
        if self.status.is_success() {
            return Ok(self);
        }
        let message = server_message(&self.body);
        Err(if message.is_empty() {
            BackendError::Status {
                url: self.url,
                status: self.status,
            }
        } else {
            BackendError::Refused {
                url: self.url,
                status: self.status,
                message,
            }
        })
    }
}

impl Http {
    /// Sends one request and reads the whole answer within `timeout`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<Answer, BackendError> {
        let uri = self
            .endpoint
            .uri(path)
            .map_err(|e| BackendError::Malformed {
                url: format!("{}{}", self.endpoint, path),
                reason: e.to_string(),
            })?;
        let url = uri.to_string();
        let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let build = || {
            let mut req = Request::new(Full::new(payload.clone()));
            *req.method_mut() = method.clone();
            *req.uri_mut() = uri.clone();
            let headers = req.headers_mut();
            headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            if body.is_some() {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
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
        let (status, body) =
            tokio::time::timeout(timeout, fetch)
                .await
                .map_err(|_| BackendError::Timeout {
                    url: url.clone(),
                    timeout,
                })??;
        Ok(Answer { url, status, body })
    }

    /// GETs `path` and parses the JSON answer. `Ok(None)` for 404, which
    /// adapters use to tell an older server from a broken one.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, BackendError> {
        let answer = self.call(Method::GET, path, None, self.timeout).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        answer.success()?.json().map(Some)
    }

    /// GETs `path` as text (Prometheus metrics). `Ok(None)` where the
    /// server does not serve it: 404, or llama.cpp's 501 for a disabled
    /// endpoint.
    pub async fn get_text(&self, path: &str) -> Result<Option<String>, BackendError> {
        let answer = self.call(Method::GET, path, None, self.timeout).await?;
        if matches!(answer.status.as_u16(), 404 | 501) {
            return Ok(None);
        }
        let answer = answer.success()?;
        Ok(Some(String::from_utf8_lossy(&answer.body).into_owned()))
    }

    /// POSTs a JSON body and returns the answer, 2xx or not.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Answer, BackendError> {
        self.call(Method::POST, path, Some(body), timeout).await
    }

    /// One token from `model` over the OpenAI chat path that every kind
    /// serves: the generation probe.
    pub async fn generate_one_token(&self, model: &str) -> Result<(), BackendError> {
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say OK."}],
            "max_tokens": 1,
            "stream": false,
        });
        self.post_json("/v1/chat/completions", &body, self.timeout)
            .await?
            .success()
            .map(drop)
    }
}

/// The message in a server's error body, whichever shape it uses (OpenAI's
/// `{"error":{"message"}}`, Ollama's `{"error":"..."}`, vLLM's flat
/// `{"message"}`), or the start of the body as text.
pub(crate) fn server_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let found = parsed.as_ref().and_then(|v| {
        let error = v.get("error");
        error
            .and_then(|e| e.get("message"))
            .or(error)
            .or_else(|| v.get("message"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    });
    let text = found.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    truncate(&text, MAX_ERROR_MESSAGE)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_in_every_shape() {
        assert_eq!(
            server_message(br#"{"error":{"message":"no such model","type":"x"}}"#),
            "no such model"
        );
        assert_eq!(
            server_message(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            server_message(br#"{"object":"error","message":"The model `X` does not exist."}"#),
            "The model `X` does not exist."
        );
        assert_eq!(server_message(b"  plain text\n"), "plain text");
        let long = "\u{e9}".repeat(400);
        assert!(server_message(long.as_bytes()).len() <= MAX_ERROR_MESSAGE + 3);
    }
}
