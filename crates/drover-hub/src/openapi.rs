//! The OpenAPI document of what drover adds beside the inference API it
//! forwards (OpenAI's and Anthropic's, documented by them): the management
//! API, `/v1/queue`, drover's model listing and the operations routes.
//! Generated from the handlers' own annotations and the wire types'
//! schemas, and served at `/openapi.json`; a test checks every route the
//! router serves against it, so the two cannot drift apart.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "drover",
        description = "One OpenAI-compatible endpoint for a fleet of local LLM servers: its management API and what it adds to the inference API."
    ),
    paths(
        routes::admin::list,
        routes::admin::get,
        routes::admin::add,
        routes::admin::remove,
        routes::admin::drain,
        routes::admin::undrain,
        routes::model_actions::load_doc,
        routes::model_actions::unload_doc,
        routes::model_actions::pin_doc,
        routes::model_actions::unpin_doc,
        routes::model_actions::action_doc,
        routes::keys::list,
        routes::keys::create,
        routes::keys::revoke,
        routes::keys::purge,
        routes::tasks::create,
        routes::tasks::list,
        routes::tasks::get,
        routes::tasks::cancel,
        routes::tasks::heartbeat,
        routes::tasks::complete,
        routes::tasks::fail,
        routes::tasks::plan,
        routes::tasks::plans,
        routes::tasks::plan_get,
        routes::tasks::admin_plans,
        routes::nodes::join,
        routes::nodes::heartbeat,
        routes::nodes::list,
        routes::nodes::create_token,
        routes::nodes::tokens,
        routes::nodes::revoke_token,
        routes::nodes::poll_commands,
        routes::nodes::answer_command,
        routes::nodes::node_services,
        routes::nodes::all_services,
        routes::nodes::command,
        routes::nodes::drain,
        routes::nodes::undrain,
        routes::hubs::list,
        crate::cluster::grants::link,
        routes::releases::publish,
        routes::releases::list,
        routes::releases::download,
        routes::releases::start_rollout,
        routes::releases::rollouts,
        routes::releases::rollout,
        routes::workers::register,
        routes::workers::list,
        routes::workers::deregister,
        routes::workers::heartbeat,
        routes::workers::poll,
        routes::workers::admin_list,
        routes::workers::drain,
        routes::workers::undrain,
        routes::keys::own_webhook_secret,
        routes::keys::drop_webhook_secret,
        routes::admin_jobs::list,
        routes::admin_jobs::get,
        routes::admin_jobs::cancel,
        routes::admin_jobs::retry,
        routes::admin_jobs::batches,
        routes::admin_jobs::cancel_batch,
        routes::dashboard::overview,
        routes::dashboard::events,
        routes::queue::list,
        routes::jobs::create,
        routes::jobs::get,
        routes::jobs::list,
        routes::jobs::cancel,
        routes::jobs::retry,
        routes::files::create,
        routes::files::list,
        routes::files::get,
        routes::files::content,
        routes::files::delete,
        routes::batches::create,
        routes::batches::list,
        routes::batches::get,
        routes::batches::cancel,
        routes::webhook_secret::rotate,
        routes::models::list,
        routes::models::get,
        routes::ops::health,
        routes::ops::ready,
        routes::ops::metrics,
    ),
    modifiers(&Bearer)
)]
pub struct Document;

/// Admin and client keys are bearer tokens. Each operation lists no
/// security as well: on loopback, with no admin key configured or active,
/// the management API is open to the machine's own users.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| Document::openapi().to_pretty_json().unwrap_or_default())
}
