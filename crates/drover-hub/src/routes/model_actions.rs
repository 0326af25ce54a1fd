//! `POST /admin/models/load|unload|pin|unpin` with the model in the body
//! (or `POST /admin/models/{model}/load|...`): the operator's model
//! actions. A load or unload is first put to the scheduler's model manager
//! (which refuses what it would not do itself: a server that cannot load, a
//! model in use, one that does not fit, and makes room as for a request),
//! then carried out by the backend's adapter (LM Studio, Ollama, llama.cpp's
//! router can; a generic server or vLLM cannot). The model is named by its
//! public name; each backend gets its own id for it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use drover_core::ModelName;
use drover_proto::admin::{ModelAction, ModelTarget};
use drover_scheduler::{Event, Refusal, Reply, Residency};

use super::admin::find;
use super::guard::AdminJson;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::model_work;
use crate::registry::BackendEntry;

/// `POST /admin/models/{action}` (the model in the body) and
/// `/admin/models/{model}/{action}`. Model names hold `/`
/// (`Qwen/Qwen2.5-7B`), so the path is split at its last segment.
pub async fn dispatch(
    State(hub): State<Arc<HubState>>,
    Path(rest): Path<String>,
    AdminJson(target): AdminJson<ModelTarget>,
) -> Result<Json<ModelAction>, ApiError> {
    let (model, action) = match rest.rsplit_once('/') {
        Some((model, action)) if !model.is_empty() => (Some(model), action),
        Some(_) => (None, ""),
        None => (None, rest.as_str()),
    };
    match action {
        "load" => load(hub, model, target).await,
        "unload" => unload(hub, model, target).await,
        "pin" => pin(hub, model, target, true).await,
        "unpin" => pin(hub, model, target, false).await,
        _ => Err(ApiError::NotFound {
            message: "expected POST /admin/models/load, .../unload, .../pin or .../unpin (the model in the body), or /admin/models/{model}/load and so on"
                .into(),
        }),
    }
}

/// The document's entry for one of the paths `dispatch` serves.
macro_rules! action_doc {
    ($name:ident, $path:literal, $what:literal) => {
        #[doc = $what]
        #[utoipa::path(post, path = $path, tag = "models",
            params(("model" = String, Path, description = "The model's public name")),
            request_body = drover_proto::admin::ModelTarget,
            responses(
                (status = 200, description = "Done (or nothing to do)", body = drover_proto::admin::ModelAction),
                (status = 400, description = "The body is not a target", body = drover_proto::openai::ErrorBody),
                (status = 415, description = "Not JSON", body = drover_proto::openai::ErrorBody),
                (status = 404, description = "No backend lists it", body = drover_proto::openai::ErrorBody),
                (status = 409, description = "It cannot be done now: why", body = drover_proto::openai::ErrorBody),
                (status = 502, description = "The backend failed it", body = drover_proto::openai::ErrorBody),
                (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody),
                (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)),
            security((), ("bearer" = [])))]
        #[expect(dead_code, reason = "the document's entry: `dispatch` serves this path")]
        pub(crate) fn $name() {}
    };
}

action_doc!(
    load_doc,
    "/admin/models/{model}/load",
    "Load a model: on the backend named, else where it would be ready soonest; makes room as for a request."
);
action_doc!(
    unload_doc,
    "/admin/models/{model}/unload",
    "Unload a model from the backend named, or from every one."
);
action_doc!(
    pin_doc,
    "/admin/models/{model}/pin",
    "Pin a model: never evicted, never unloaded for idleness."
);
action_doc!(unpin_doc, "/admin/models/{model}/unpin", "Undo a pin.");

/// The document's entry for the body form, which names the model in the
/// body (any name, dot segments included).
#[utoipa::path(post, path = "/admin/models/{action}", tag = "models",
    params(("action" = String, Path, description = "load, unload, pin or unpin")),
    request_body = drover_proto::admin::ModelTarget,
    responses(
        (status = 200, description = "Done (or nothing to do)", body = drover_proto::admin::ModelAction),
        (status = 400, description = "The body names no model, or is not a target", body = drover_proto::openai::ErrorBody),
        (status = 415, description = "Not JSON", body = drover_proto::openai::ErrorBody),
        (status = 404, description = "No such action, or no backend lists the model", body = drover_proto::openai::ErrorBody),
        (status = 409, description = "It cannot be done now: why", body = drover_proto::openai::ErrorBody),
        (status = 502, description = "The backend failed it", body = drover_proto::openai::ErrorBody),
        (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody),
        (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)),
    security((), ("bearer" = [])))]
#[expect(
    dead_code,
    reason = "the document's entry: `dispatch` serves this path"
)]
pub(crate) fn action_doc() {}

async fn load(
    hub: Arc<HubState>,
    model: Option<&str>,
    target: ModelTarget,
) -> Result<Json<ModelAction>, ApiError> {
    let (model, target) = read(&hub, model, target)?;
    let listing = listing(&hub, &model, target.backend.as_deref())?;
    // Loaded where asked (anywhere, when no backend is named): done.
    if let Some((entry, _)) = listing.iter().find(|(_, r)| *r == Residency::Loaded) {
        return Ok(Json(action(
            &model,
            vec![entry.name.clone()],
            "load",
            None,
            true,
        )));
    }
    let only = target.backend.is_some().then(|| listing[0].0.id);
    let name = ModelName::new(&model);
    let order = hub
        .dispatcher
        .ask_load(only, &name)
        .map_err(|r| refused(&hub, &model, &listing, r))?;
    let backend = hub.registry.name_of(order.backend);
    let took = model_work::load(&hub, order)
        .await
        .map_err(|e| ApiError::Upstream {
            message: format!("{backend}: {e}"),
        })?;
    Ok(Json(action(
        &model,
        vec![backend],
        "load",
        Some(took.as_secs_f64()),
        false,
    )))
}

async fn unload(
    hub: Arc<HubState>,
    model: Option<&str>,
    target: ModelTarget,
) -> Result<Json<ModelAction>, ApiError> {
    let (model, target) = read(&hub, model, target)?;
    let listing = listing(&hub, &model, target.backend.as_deref())?;
    let name = ModelName::new(&model);
    let mut done = Vec::new();
    for (entry, residency) in &listing {
        if *residency != Residency::Loaded {
            continue;
        }
        hub.dispatcher
            .ask_unload(entry.id, &name)
            .map_err(|r| refused(&hub, &model, &listing, r))?;
        model_work::unload(&hub, entry.id, &name, "an operator asked")
            .await
            .map_err(|e| ApiError::Upstream {
                message: format!("{}: {e}", entry.name),
            })?;
        done.push(entry.name.clone());
    }
    let already = done.is_empty();
    let mut answer = action(&model, done, "unload", None, already);
    if already {
        answer.note = evicted_note(&listing, &model);
    }
    Ok(Json(answer))
}

/// "studio unloaded it on its own 12 s ago", for a model some server
/// evicted by itself lately (llama.cpp's router beyond --models-max).
fn evicted_note(listing: &[(Arc<BackendEntry>, Residency)], model: &str) -> Option<String> {
    let now = crate::traffic::unix_ms();
    let said: Vec<String> = listing
        .iter()
        .filter_map(|(entry, _)| {
            let at = *drover_core::sync::lock(&entry.observed)
                .evicted
                .get(model)?;
            Some(format!(
                "{} unloaded it on its own {} s ago",
                entry.name,
                now.saturating_sub(at) / 1000
            ))
        })
        .collect();
    (!said.is_empty()).then(|| said.join("; "))
}

/// `pin`: never evicted, never unloaded for idleness, loaded where it fits
/// whenever no backend holds it. `unpin` undoes it. Kept in the store,
/// where the hub has one, for its next start.
async fn pin(
    hub: Arc<HubState>,
    model: Option<&str>,
    target: ModelTarget,
    on: bool,
) -> Result<Json<ModelAction>, ApiError> {
    let (model, _) = read(&hub, model, target)?;
    let listing = listing(&hub, &model, None)?;
    let name = ModelName::new(&model);
    let changed = hub.dispatcher.apply(Event::Pinned {
        model: name.clone(),
        pinned: on,
    }) == Reply::Changed(true);
    let holding = listing
        .iter()
        .filter(|(_, r)| *r == Residency::Loaded)
        .map(|(e, _)| e.name.clone())
        .collect();
    tracing::info!(target: "drover::action", %model, pinned = on, "model pin changed");
    crate::kept::save_pin(&hub, &model, on).await;
    let verb = if on { "pin" } else { "unpin" };
    Ok(Json(action(&model, holding, verb, None, !changed)))
}

/// Why the model manager would not do it, as the operator should hear it.
fn refused(
    hub: &HubState,
    model: &str,
    listing: &[(Arc<BackendEntry>, Residency)],
    refusal: Refusal,
) -> ApiError {
    let first = || {
        listing
            .first()
            .map_or_else(String::new, |(e, _)| e.name.clone())
    };
    let message = match refusal {
        Refusal::NotListed => {
            return ApiError::from(crate::forward::ForwardError::ModelNotFound {
                model: model.to_string(),
                closest: Vec::new(),
            });
        }
        Refusal::CannotLoad => format!(
            "no backend with '{model}' can load models: {}",
            describe(listing)
        ),
        Refusal::CannotUnload => format!(
            "no backend with '{model}' can unload models: {}",
            describe(listing)
        ),
        Refusal::AlreadyLoaded | Refusal::NotLoaded | Refusal::Busy => {
            format!(
                "'{model}' is being loaded or unloaded on {}; try again when that ends",
                first()
            )
        }
        Refusal::Running(n) => format!(
            "{n} request{} running on '{model}'; unload it when {} ended, or drain the backend",
            if n == 1 { " is" } else { "s are" },
            if n == 1 { "it has" } else { "they have" }
        ),
        Refusal::Unhealthy => {
            // Each backend's own reason: a drain is undone by undrain, a
            // breaker by the server coming back.
            let why: Vec<String> = listing
                .iter()
                .map(|(e, _)| {
                    let view = hub.dispatcher.view(e.id);
                    match view {
                        Some(v) if v.draining => {
                            format!(
                                "{} is draining (drover backends undrain {})",
                                e.name, e.name
                            )
                        }
                        Some(v) if v.breaker == drover_scheduler::BreakerState::Open => {
                            format!("{} is down (its last requests or probes failed)", e.name)
                        }
                        _ => format!("{} takes no new work now", e.name),
                    }
                })
                .collect();
            format!("'{model}' cannot be loaded now: {}", why.join("; "))
        }
        Refusal::NoRoom { in_use } => format!(
            "'{model}' fits only if models in use were unloaded ({}): wait until they are idle, \
             unload or unpin one",
            in_use
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Refusal::NeverFits { needs, total } => format!(
            "'{model}' needs {} of memory with its slots, more than the {} of {}",
            drover_core::size::gigabytes(needs),
            drover_core::size::gigabytes(total),
            first()
        ),
    };
    ApiError::Conflict(message)
}

/// The caller, the body and the model's public name.
/// The model (from the path, else the body) and the target.
fn read(
    hub: &HubState,
    in_path: Option<&str>,
    target: ModelTarget,
) -> Result<(String, ModelTarget), ApiError> {
    let model = match (in_path, target.model.as_deref()) {
        (Some(path), Some(body)) if path != body => {
            return Err(ApiError::bad_request(
                format!(
                    "the path names the model '{}' and the body '{}': name it once",
                    crate::error::echo(path),
                    crate::error::echo(body)
                ),
                Some("model"),
                "invalid_body",
            ));
        }
        (Some(model), _) | (None, Some(model)) => model,
        (None, None) => {
            return Err(ApiError::bad_request(
                "name the model: {\"model\": \"...\"} in the body",
                Some("model"),
                "missing_model",
            ));
        }
    };
    Ok((hub.models.public_name(model).to_string(), target))
}

/// The backends that list `model` (only `backend`, when named), each with
/// the model's residency there.
fn listing(
    hub: &HubState,
    model: &str,
    backend: Option<&str>,
) -> Result<Vec<(Arc<BackendEntry>, Residency)>, ApiError> {
    let only = backend.map(|name| find(hub, name)).transpose()?;
    let views = crate::views::Snapshot::take(&hub.dispatcher).backends;
    let listing: Vec<(Arc<BackendEntry>, Residency)> = views
        .values()
        .filter(|v| only.as_ref().is_none_or(|e| e.id == v.id))
        .filter_map(|v| {
            let m = v.models.iter().find(|m| m.name.as_str() == model)?;
            Some((hub.registry.get(v.id)?, m.residency))
        })
        .collect();
    if listing.is_empty() {
        return Err(match backend {
            Some(name) => ApiError::NotFound {
                message: format!("backend {name:?} does not list the model '{model}'"),
            },
            None => hub.model_not_found(model.to_string()),
        });
    }
    Ok(listing)
}

fn describe(listing: &[(Arc<BackendEntry>, Residency)]) -> String {
    listing
        .iter()
        .map(|(e, _)| {
            let kind = e.kind().map_or("unknown", |k| k.as_str());
            format!("{} ({kind})", e.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn action(
    model: &str,
    backends: Vec<String>,
    action: &str,
    seconds: Option<f64>,
    already: bool,
) -> ModelAction {
    ModelAction {
        model: model.to_string(),
        backends,
        action: action.to_string(),
        seconds,
        already,
        note: None,
    }
}
