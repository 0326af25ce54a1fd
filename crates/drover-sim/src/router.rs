use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use crate::body::{SimBody, json_response};
use crate::connection::ConnectionHandle;
use crate::error::ApiError;
use crate::inference::{self, Endpoint};
use crate::shared::Shared;
use crate::wire::{ModelEntry, ModelList};
use crate::{Dialect, llamacpp, llamacpp_router, lmstudio, ollama, vllm};

/// Large enough for any realistic prompt, small enough that a runaway
/// client can't make the simulator buffer without bound.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The hyper service: one call per request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    connection: ConnectionHandle,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let (parts, body) = request.into_parts();
    if connection.is_stale() {
        return Ok(close_stale(&shared, &connection, body).await);
    }
    let mut response = route(&shared, &connection, &parts, body).await;
    if shared.faults.get().close_after_stream {
        // What llama-server (cpp-httplib) promises on every answer.
        response
            .headers_mut()
            .insert("keep-alive", HeaderValue::from_static("timeout=5, max=100"));
    }
    Ok(response)
}

async fn route(
    shared: &Arc<Shared>,
    connection: &ConnectionHandle,
    parts: &http::request::Parts,
    body: Incoming,
) -> Response<SimBody> {
    let path = parts.uri.path();
    let agents = shared.settings.dialect.serves_agent_apis();
    let endpoint = match (&parts.method, path) {
        (&Method::POST, "/v1/chat/completions") => Some(Endpoint::Chat),
        (&Method::POST, "/v1/completions") => Some(Endpoint::Completion),
        (&Method::POST, "/v1/embeddings") => Some(Endpoint::Embeddings),
        (&Method::POST, "/v1/responses") if agents => Some(Endpoint::Responses),
        (&Method::POST, "/v1/messages") if agents => Some(Endpoint::Messages),
        (&Method::POST, "/v1/messages/count_tokens") if agents => Some(Endpoint::CountTokens),
        _ => None,
    };
    if let Some(endpoint) = endpoint {
        return match read_body(body).await {
            Ok(bytes) => inference::serve(shared, connection, endpoint, &bytes).await,
            Err(error) => error.into_response(),
        };
    }
    let native_listing = match shared.settings.dialect {
        Dialect::LlamaCpp => llamacpp::route(shared, &parts.method, path),
        Dialect::Vllm => vllm::route(shared, &parts.method, path),
        _ => None,
    };
    if let Some(response) = native_listing {
        return response;
    }
    if shared.settings.dialect == Dialect::LlamaCppRouter {
        let query = parts.uri.query();
        return match llamacpp_router::route(shared, &parts.method, path, query, body).await {
            Some(response) => response,
            None => ApiError::no_route(&parts.method, path).into_response(),
        };
    }
    match (&parts.method, path) {
        (&Method::GET, "/v1/models") => model_list(shared),
        (&Method::GET, "/_sim/stats") => json_response(StatusCode::OK, &shared.stats()),
        (&Method::POST, "/_sim/reset") => {
            shared.reset();
            json_response(StatusCode::OK, &shared.stats())
        }
        _ => {
            let native = match shared.settings.dialect {
                Dialect::LmStudio => lmstudio::route(shared, &parts.method, path, body).await,
                Dialect::Ollama => ollama::route(shared, &parts.method, path, body).await,
                Dialect::LlamaCpp | Dialect::LlamaCppRouter | Dialect::Vllm | Dialect::OpenAi => {
                    None
                }
            };
            native.unwrap_or_else(|| ApiError::no_route(&parts.method, path).into_response())
        }
    }
}

/// A request on a connection that carried a streamed answer under
/// `close_after_stream`: the connection closes without an answer. The body
/// is read first, as the real server's socket had taken it: closing with
/// unread bytes would send a reset rather than the plain close a client
/// racing the real server meets.
async fn close_stale(
    shared: &Shared,
    connection: &ConnectionHandle,
    body: Incoming,
) -> Response<SimBody> {
    let _ = read_body(body).await;
    tracing::debug!("closing a connection that carried a stream");
    shared.counters.stale_closes.fetch_add(1, Ordering::Relaxed);
    shared.watch.changed();
    connection.kill();
    // The connection task drops this future with the connection.
    std::future::pending().await
}

pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::payload_too_large(MAX_BODY_BYTES))
        }
        Err(error) => Err(ApiError::invalid_request(
            format!("Could not read the request body: {error}"),
            None,
        )),
    }
}

/// `GET /v1/models`. Every dialect here lists every model it can serve:
/// LM Studio does so with JIT loading on, which is the only mode simulated.
fn model_list(shared: &Shared) -> Response<SimBody> {
    let owned_by = shared.settings.dialect.owned_by();
    let list = ModelList {
        object: "list",
        data: shared
            .models()
            .iter()
            .map(|model| ModelEntry {
                id: &model.name,
                object: "model",
                created: shared.started,
                owned_by,
            })
            .collect(),
    };
    json_response(StatusCode::OK, &list)
}

pub(crate) fn ok_json(value: &impl Serialize) -> Response<SimBody> {
    json_response(StatusCode::OK, value)
}
