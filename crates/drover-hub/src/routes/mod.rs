//! HTTP routes. Handlers translate between HTTP and the hub's state; the
//! mapping from errors to responses lives in [`crate::error`].

pub(crate) mod admin;
pub(crate) mod admin_jobs;
pub(crate) mod batches;
pub(crate) mod dashboard;
pub(crate) mod files;
mod guard;
pub(crate) mod hubs;
mod inference;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod model_actions;
pub(crate) mod models;
pub(crate) mod nodes;
pub(crate) mod ops;
pub(crate) mod queue;
pub(crate) mod releases;
pub(crate) mod tasks;
pub(crate) mod webhook_secret;
pub(crate) mod workers;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::hub::HubState;

/// The management API: every route behind the admin layer.
fn admin(state: Arc<HubState>) -> Router<Arc<HubState>> {
    Router::new()
        .route("/admin/backends", get(admin::list).post(admin::add))
        .route(
            "/admin/backends/{name}",
            get(admin::get).delete(admin::remove),
        )
        .route("/admin/backends/{name}/drain", post(admin::drain))
        .route("/admin/backends/{name}/undrain", post(admin::undrain))
        .route("/admin/models/{*model}", post(model_actions::dispatch))
        .route("/admin/keys", get(keys::list).post(keys::create))
        .route("/admin/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/admin/keys/purge", post(keys::purge))
        .route(
            "/admin/keys/{id}/webhook-secret",
            post(keys::own_webhook_secret).delete(keys::drop_webhook_secret),
        )
        .route("/admin/jobs", get(admin_jobs::list))
        .route("/admin/jobs/{id}", get(admin_jobs::get))
        .route("/admin/jobs/{id}/cancel", post(admin_jobs::cancel))
        .route("/admin/jobs/{id}/retry", post(admin_jobs::retry))
        .route("/admin/batches", get(admin_jobs::batches))
        .route("/admin/batches/{id}/cancel", post(admin_jobs::cancel_batch))
        .route("/admin/overview", get(dashboard::overview))
        .route("/admin/events", get(dashboard::events))
        .route("/admin/webhook-secret", post(webhook_secret::rotate))
        .route("/admin/workers", get(workers::admin_list))
        .route("/admin/plans", get(tasks::admin_plans))
        .route("/admin/nodes", get(nodes::list))
        .route("/admin/hubs", get(hubs::list))
        .route(
            "/admin/nodes/tokens",
            get(nodes::tokens).post(nodes::create_token),
        )
        .route(
            "/admin/nodes/tokens/{id}",
            axum::routing::delete(nodes::revoke_token),
        )
        .route("/admin/nodes/services", post(nodes::all_services))
        .route("/admin/releases", get(releases::list))
        .route(
            "/admin/releases/{version}",
            axum::routing::put(releases::publish).layer(axum::extract::DefaultBodyLimit::max(
                crate::releases::MAX_BYTES,
            )),
        )
        .route(
            "/admin/rollouts",
            get(releases::rollouts).post(releases::start_rollout),
        )
        .route("/admin/rollouts/{id}", get(releases::rollout))
        .route("/admin/nodes/commands/{id}", get(nodes::command))
        .route("/admin/nodes/{node}/services", post(nodes::node_services))
        .route("/admin/nodes/{node}/drain", post(nodes::drain))
        .route("/admin/nodes/{node}/undrain", post(nodes::undrain))
        .route("/admin/workers/{id}/drain", post(workers::drain))
        .route("/admin/workers/{id}/undrain", post(workers::undrain))
        // Inside the door: an admin route is relayed to the leader only
        // once this hub's own door let it through.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cluster::relay::admin,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            guard::admin_only,
        ))
}

pub fn router(state: Arc<HubState>) -> Router {
    // An upload may be as large as a batch's input may be, with room for
    // the multipart framing around it.
    let upload_limit = state.config.batches.max_bytes.saturating_add(1024 * 1024);
    Router::new()
        .route("/v1/chat/completions", post(inference::openai))
        .route("/v1/completions", post(inference::openai))
        .route("/v1/embeddings", post(inference::openai))
        .route("/v1/responses", post(inference::responses))
        .route("/v1/messages", post(inference::messages))
        .route("/v1/messages/count_tokens", post(inference::messages))
        .route(
            drover_proto::cluster::link::PATH,
            post(crate::cluster::grants::link),
        )
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*model}", get(models::get))
        .route("/v1/queue", get(queue::list))
        .route("/v1/jobs", get(jobs::list).post(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/v1/tasks", get(tasks::list).post(tasks::create))
        .route("/v1/tasks/plan", post(tasks::plan))
        .route("/v1/tasks/plans", get(tasks::plans))
        .route("/v1/tasks/plans/{id}", get(tasks::plan_get))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v1/tasks/{id}/heartbeat", post(tasks::heartbeat))
        .route("/v1/tasks/{id}/complete", post(tasks::complete))
        .route("/v1/tasks/{id}/fail", post(tasks::fail))
        .route("/v1/workers", get(workers::list).post(workers::register))
        .route(
            "/v1/workers/{id}",
            axum::routing::delete(workers::deregister),
        )
        .route("/v1/workers/{id}/heartbeat", post(workers::heartbeat))
        .route("/v1/workers/{id}/poll", post(workers::poll))
        .route("/v1/nodes/join", post(nodes::join))
        .route("/v1/nodes/{id}/heartbeat", post(nodes::heartbeat))
        .route("/v1/nodes/{id}/commands", post(nodes::poll_commands))
        .route(
            "/v1/nodes/{id}/commands/{command}",
            post(nodes::answer_command),
        )
        .route("/v1/nodes/{id}/releases/{version}", get(releases::download))
        .route(
            "/v1/files",
            get(files::list)
                .post(files::create)
                .layer(axum::extract::DefaultBodyLimit::max(upload_limit)),
        )
        .route("/v1/files/{id}", get(files::get).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/batches", get(batches::list).post(batches::create))
        .route("/v1/batches/{id}", get(batches::get))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    crate::openapi::json(),
                )
            }),
        )
        .route("/", get(dashboard::page))
        .route("/dashboard/{file}", get(dashboard::file))
        .merge(admin(state.clone()))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        // A follower passes the leader's routes to it (`cluster/relay.rs`).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cluster::relay::api,
        ))
        .with_state(state)
}

/// The hub's store, for what keeps its state there (jobs, tasks, plans,
/// nodes), or why there is none to use now.
pub(crate) fn store_of(hub: &HubState) -> Result<&Arc<crate::jobs::Jobs>, crate::error::ApiError> {
    jobs::jobs_of(hub)
}
