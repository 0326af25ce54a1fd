//! The management API's door, in one place. Every `/admin/*` route sits
//! behind [`admin_only`], a layer on the whole admin sub-router
//! ([`super::router`]), so an admin route cannot be written without it; a
//! JSON body comes through the [`AdminJson`] extractor, which refuses what
//! does not say it is JSON (a simple cross-site request cannot send JSON).
//!
//! It is not a door for web pages. A page the user visits can send
//! requests to a hub on the user's loopback (a "simple" cross-site POST needs
//! no preflight), and with DNS rebinding it can even read the answers. So:
//! requests that a browser marks as coming from another site (`Origin`,
//! `Sec-Fetch-Site`) are refused, bodies must be JSON, and without an admin
//! key the `Host` must name the hub by address or as `localhost`, never by
//! some other name. Nor is it a door for the hub's own job callbacks, which
//! a client may aim at it: a request with a webhook signature is refused.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use drover_proto::admin::{BackendSpec, KeyCreate, KeyKind, ModelTarget};
use http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use crate::caller::bearer;
use crate::error::ApiError;
use crate::hub::HubState;

/// The layer in front of every admin route: only an admin may pass.
pub(super) async fn admin_only(
    State(hub): State<Arc<HubState>>,
    req: Request,
    next: Next,
) -> Response {
    match authorize(&hub, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// An admin route's JSON body, read and checked.
pub(crate) struct AdminJson<T>(pub T);

/// A body the management API takes.
pub(crate) trait AdminBody: DeserializeOwned {
    /// What it is, for the message when a body is not one.
    const WHAT: &'static str = "body";
    const CODE: &'static str = "invalid_body";
    /// What an empty body stands for, where it may be left out.
    fn when_empty() -> Option<Self> {
        None
    }
}

impl AdminBody for BackendSpec {
    const WHAT: &'static str = "backend";
    const CODE: &'static str = "invalid_backend";
}

impl AdminBody for KeyCreate {}

impl AdminBody for ModelTarget {
    fn when_empty() -> Option<Self> {
        Some(ModelTarget::default())
    }
}

impl<T: AdminBody> FromRequest<Arc<HubState>> for AdminJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<HubState>) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::bad_request(format!("could not read the body: {e}"), None, T::CODE)
        })?;
        if body.iter().all(u8::is_ascii_whitespace)
            && let Some(empty) = T::when_empty()
        {
            return Ok(AdminJson(empty));
        }
        serde_json::from_slice(&body)
            .map(AdminJson)
            .map_err(|e| ApiError::bad_request(format!("invalid {}: {e}", T::WHAT), None, T::CODE))
    }
}

pub(super) fn authorize(hub: &HubState, headers: &HeaderMap) -> Result<(), ApiError> {
    refuse_other_sites(headers)?;
    refuse_callbacks(headers)?;
    let token = bearer(headers);
    // Keys that cannot be read yet may include admin keys: only the
    // configured admin_key opens the management API until they can.
    if let Some(unknown) = hub.keys.unknown()
        && (hub.config.admin_key.is_none() || token != hub.config.admin_key.as_deref())
    {
        return Err(unknown.into());
    }
    match token.and_then(|t| hub.keys.find(t)) {
        Some(h) if h.kind == KeyKind::Admin => return Ok(()),
        Some(h) => {
            return Err(ApiError::Forbidden(format!(
                "{:?} is {} key: the management API needs an admin key",
                h.name,
                crate::keys::article(h.kind)
            )));
        }
        None => {}
    }
    match &hub.config.admin_key {
        Some(key) if token == Some(key.as_str()) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized(
            "the management API needs the admin key as a bearer token".into(),
        )),
        None if hub.keys.any(KeyKind::Admin) => Err(ApiError::Unauthorized(
            "the management API needs an admin key as a bearer token".into(),
        )),
        None if hub.admin_open_without_key() => require_own_host(headers),
        None => Err(ApiError::Forbidden(
            "the management API is disabled: the hub listens beyond loopback and no admin_key is set"
                .into(),
        )),
    }
}

/// Refuses what a browser says came from a page of another site.
fn refuse_other_sites(headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(ApiError::Forbidden(format!(
            "the management API does not take requests from web pages (Sec-Fetch-Site: {site})"
        )));
    }
    if let Some(origin) = text("origin") {
        let own = text("host").is_some_and(|host| {
            origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host)
        });
        if !own {
            return Err(ApiError::Forbidden(format!(
                "the management API does not take requests from web pages (Origin: {})",
                crate::error::echo(origin)
            )));
        }
    }
    Ok(())
}

/// Refuses a job's callback: a client may point its `callback_url` at the
/// hub's own management API, which, on loopback without a key, would take
/// the hub's POST for an operator's (a drain, an unload, a new secret).
/// The hub signs every callback it sends, and no operator's request is
/// signed.
fn refuse_callbacks(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(crate::webhook::WEBHOOK_SIGNATURE) {
        return Err(ApiError::Forbidden(
            "the management API takes no job callbacks: a callback_url may not point at it".into(),
        ));
    }
    Ok(())
}

/// Without a key, the `Host` must be an address or `localhost`: a request
/// for some other name reached the hub by DNS rebinding.
fn require_own_host(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(host) = headers.get(header::HOST) else {
        return Ok(());
    };
    let host = host.to_str().unwrap_or("?");
    if is_address_or_localhost(host) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "the management API answers only to its address or localhost without an admin key (Host: {})",
        crate::error::echo(host)
    )))
}

fn is_address_or_localhost(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// A body the management API reads must say it is JSON.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "the management API takes JSON bodies: send Content-Type: application/json".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_by_address_or_localhost_only() {
        for (host, ok) in [
            ("127.0.0.1:8700", true),
            ("localhost:8700", true),
            ("LOCALHOST", true),
            ("[::1]:8700", true),
            ("10.0.0.5", true),
            ("evil.example:8700", false),
            ("localhost.evil.example", false),
            ("[nonsense]:1", false),
        ] {
            assert_eq!(is_address_or_localhost(host), ok, "{host}");
        }
    }
}
