//! A minimal HTTP client for tests: what a real client sends, nothing hidden.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Clone)]
pub struct Client {
    base: String,
    inner: Hyper<HttpConnector, Full<Bytes>>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The backend that served it, from drover's response header.
    pub fn backend(&self) -> &str {
        self.header("x-drover-backend").unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an OpenAI-shaped error and returns its `code`.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].is_string(), "no error.message in {v}");
        assert!(e["type"].is_string(), "no error.type in {v}");
        assert!(e.get("param").is_some(), "no error.param in {v}");
        e["code"].as_str().unwrap_or_default().to_string()
    }
}

impl Client {
    pub fn new(base: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            inner: Hyper::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Response {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        self.inner
            .request(req.body(Full::new(body)).unwrap())
            .await
            .expect("the hub should answer")
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let resp = self.send(method, path, headers, body).await;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, json: &serde_json::Value) -> Reply {
        self.call(Method::POST, path, &[], Bytes::from(json.to_string()))
            .await
    }

    pub async fn post_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        json: &serde_json::Value,
    ) -> Reply {
        self.call(Method::POST, path, headers, Bytes::from(json.to_string()))
            .await
    }

    /// The status of `GET path`, or `None` when nothing answers (yet).
    pub async fn try_get(&self, path: &str) -> Option<u16> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.url(path))
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = self.inner.request(req).await.ok()?;
        Some(resp.status().as_u16())
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, &[], Bytes::new()).await
    }

    /// Sends a request and returns the response with its body unread, to
    /// read a stream frame by frame.
    pub async fn open(&self, path: &str, json: &serde_json::Value) -> Response {
        self.send(Method::POST, path, &[], Bytes::from(json.to_string()))
            .await
    }
}

pub type Response = http::Response<Incoming>;
