//! Who may act as a worker: a worker key, and nothing else. A client or an
//! admin key is refused (403), and a worker key can do nothing but this
//! (inference, the management API and `/metrics` refuse it). While no
//! worker key was ever made, a hub listening on loopback takes workers
//! without one (a local operator's own machine); beyond loopback the
//! worker API needs a key.

use drover_proto::admin::KeyKind;
use http::HeaderMap;

use crate::caller::bearer;
use crate::error::ApiError;
use crate::hub::HubState;

/// The id of the worker key presenting itself ("" where none is needed).
pub fn worker_key(hub: &HubState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(unknown) = hub.keys.unknown() {
        return Err(unknown.into());
    }
    let token = bearer(headers);
    match token.and_then(|t| hub.keys.find(t)) {
        Some(h) if h.kind == KeyKind::Worker => Ok(h.id),
        Some(h) => Err(ApiError::Forbidden(format!(
            "{:?} is {} key: the worker API needs a worker key (drover keys create NAME --kind worker)",
            h.name,
            crate::keys::article(h.kind)
        ))),
        None if token.is_some() || hub.keys.ever(KeyKind::Worker) => {
            Err(ApiError::Unauthorized(match token {
                Some(_) => "the API key is not valid (unknown or revoked)".into(),
                None => "the worker API needs a worker key: send Authorization: Bearer <key>"
                    .into(),
            }))
        }
        None if hub.admin_open_without_key() => Ok(String::new()),
        None => Err(ApiError::Unauthorized(
            "this hub listens beyond loopback: the worker API needs a worker key (drover keys create NAME --kind worker)"
                .into(),
        )),
    }
}
