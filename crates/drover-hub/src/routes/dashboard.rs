//! The dashboard's page and files, and the live overview it draws: once as
//! JSON (`/admin/overview`, for scripts) and as a stream of server-sent
//! events (`/admin/events`). Both are the management API's, behind its
//! admin key; the page itself holds no data and is served to anyone.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use drover_proto::dashboard::Overview;
use http::{HeaderValue, StatusCode, header};

use crate::dashboard::{self, asset};
use crate::error::ApiError;
use crate::hub::HubState;

pub async fn page() -> Response {
    asset("index.html").unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

pub async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    asset(&name).ok_or_else(|| ApiError::NotFound {
        message: format!("the dashboard has no file {:?}", crate::error::echo(&name)),
    })
}

#[utoipa::path(get, path = "/admin/overview", tag = "dashboard", responses((status = 200, description = "The fleet, the queue, refusals, the last hour of traffic, usage per key and the job store, as the dashboard draws them", body = drover_proto::dashboard::Overview), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn overview(State(hub): State<Arc<HubState>>) -> Result<axum::Json<Overview>, ApiError> {
    Ok(axum::Json(
        dashboard::overview(&hub, dashboard::Series::Hour).await,
    ))
}

#[utoipa::path(get, path = "/admin/events", tag = "dashboard", responses((status = 200, description = "Server-sent events, one `overview` event a second: the first with the last hour of traffic, later ones with only its newest points (merge them by `start_ms`). Ends when the hub shuts down; reconnect.", content_type = "text/event-stream", body = String), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn events(State(hub): State<Arc<HubState>>) -> Result<Response, ApiError> {
    let updates = hub.overview.subscribe();
    // `retry` tells an EventSource how soon to come back after a restart.
    let first = event(
        &dashboard::overview_json(&hub, dashboard::Series::Hour).await,
        Some(2000),
    );
    let stop = hub.shutdown.clone();
    let rest = futures_util::stream::unfold((updates, stop), |(mut updates, stop)| async move {
        tokio::select! {
            _ = stop.cancelled() => None,
            changed = updates.changed() => {
                changed.ok()?;
                let json = updates.borrow_and_update().clone();
                Some((Ok::<_, Infallible>(event(&json, None)), (updates, stop)))
            }
        }
    });
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, Infallible>(first) }),
        rest,
    );
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn event(json: &str, retry_ms: Option<u64>) -> Bytes {
    let retry = retry_ms.map_or_else(String::new, |ms| format!("retry: {ms}\n"));
    Bytes::from(format!("{retry}event: overview\ndata: {json}\n\n"))
}
