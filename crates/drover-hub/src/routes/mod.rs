//! HTTP routes. Handlers translate between HTTP and the hub's state; the
//! mapping from errors to responses lives in [`crate::error`].

mod admin;
mod inference;
mod models;
mod ops;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use http::HeaderName;

use crate::forward::REQUEST_ID_HEADER;
use crate::hub::HubState;

pub fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(inference::handle))
        .route("/v1/completions", post(inference::handle))
        .route("/v1/embeddings", post(inference::handle))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*model}", get(models::get))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/admin/backends", get(admin::list).post(admin::add))
        .route(
            "/admin/backends/{name}",
            get(admin::get).delete(admin::remove),
        )
        .route("/admin/backends/{name}/drain", post(admin::drain))
        .route("/admin/backends/{name}/undrain", post(admin::undrain))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

/// Every response carries `x-request-id`; inference sets its own (the
/// caller's, if it sent a sane one), the rest get a fresh one here.
async fn request_id(State(hub): State<Arc<HubState>>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let name = HeaderName::from_static(REQUEST_ID_HEADER);
    if !response.headers().contains_key(&name) {
        let id = hub.next_request_id();
        response
            .headers_mut()
            .insert(name, hub.new_request_header(id));
    }
    response
}
