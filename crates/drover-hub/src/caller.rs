//! Who is calling: the one place that reads credentials from a request and
//! decides a request's identity for fairness and its priority ceiling.
//!
//! Identity is what the caller cannot choose freely. A configured API key is
//! a client; everything else (no key, or a key the hub does not know) is one
//! shared "anonymous" client. The OpenAI `user` field, or an unknown bearer
//! token, only tells users apart *within* a client, so rotating either buys
//! no extra share against other clients. A key's configured priority is the
//! ceiling for its `x-drover-priority` header.
//!
//! Keys from the hub's key store ([`crate::keys`]) have powers: once a
//! client key has been created, inference needs a valid one (or a
//! `[[clients]]` key), even after every one is revoked; an admin key runs
//! no inference.

use std::collections::HashMap;

use drover_core::mix::stable_hash;
use drover_core::{ClientKey, Priority};
use drover_proto::admin::KeyKind;
use http::{HeaderMap, header};

use crate::error::ApiError;
use crate::keys::{Holder, Keys};

/// A configured client, found by its API key.
#[derive(Debug, Clone)]
pub struct KnownClient {
    pub name: String,
    pub priority: Option<Priority>,
}

/// The configured clients by key.
pub type Clients = HashMap<String, KnownClient>;

/// The identity every request without a known key shares.
pub const ANONYMOUS: ClientKey = ClientKey(0);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub client: ClientKey,
    /// Tells users apart within the client; 0 when nothing does.
    pub user: u64,
    /// The client's name for logs: its configured name or "anonymous".
    pub name: String,
    /// Priority when the request names none.
    pub priority: Priority,
    /// The highest priority the request may ask for.
    pub ceiling: Priority,
}

/// The caller's key: the bearer token of `Authorization: Bearer <token>`
/// or, as Anthropic clients send it, `x-api-key`. The scheme is
/// case-insensitive (RFC 7235); surrounding spaces are not part of either.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let from_authorization = || {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    };
    let from_x_api_key = || {
        let token = headers.get(X_API_KEY)?.to_str().ok()?.trim();
        (!token.is_empty()).then_some(token)
    };
    from_authorization().or_else(from_x_api_key)
}

/// Anthropic's API key header.
pub const X_API_KEY: &str = "x-api-key";

/// The client key an inference request carries, checked: `None` for a
/// caller without one where none is needed (no client keys exist, or a
/// `[[clients]]` key).
pub fn authenticate(
    keys: &Keys,
    clients: &Clients,
    headers: &HeaderMap,
) -> Result<Option<Holder>, ApiError> {
    let token = bearer(headers);
    if let Some(unknown) = keys.unknown() {
        return Err(unknown.into());
    }
    match token.and_then(|t| keys.find(t)) {
        Some(h) if h.kind == KeyKind::Client => Ok(Some(h)),
        Some(h) => Err(ApiError::Forbidden(format!(
            "{:?} is {} key: inference needs a client key",
            h.name,
            crate::keys::article(h.kind)
        ))),
        None if token.is_some_and(|t| clients.contains_key(t)) => Ok(None),
        None if keys.ever(KeyKind::Client) => Err(ApiError::Unauthorized(match token {
            Some(_) => "the API key is not valid (unknown or revoked)".into(),
            None => "this hub needs an API key: send Authorization: Bearer <key>".into(),
        })),
        None => Ok(None),
    }
}

/// The identity of a stored key's holder, by the key's id: stable across
/// processes and builds (`stable_hash`), so a stored job keeps its client.
fn key_identity(id: &str) -> ClientKey {
    ClientKey(stable_hash("key", id).max(1))
}

/// The client a stored job's key id stands for: a stored key's identity,
/// a `[[clients]]` entry's by name, or the anonymous client.
pub fn key_identity_of(key_id: &str) -> ClientKey {
    if key_id.is_empty() {
        return ANONYMOUS;
    }
    match key_id.strip_prefix(crate::jobs::view::CLIENT_PREFIX) {
        Some(name) => client_identity(name),
        None => key_identity(key_id),
    }
}

/// The identity of a `[[clients]]` entry, by its name.
fn client_identity(name: &str) -> ClientKey {
    ClientKey(stable_hash("client", name).max(1))
}

/// Every identity's name, for showing who waits: the stored keys (revoked
/// ones too: their requests may still wait), the configured clients and
/// the anonymous one.
pub fn names(keys: &Keys, clients: &Clients) -> HashMap<ClientKey, String> {
    let mut names: HashMap<ClientKey, String> = keys
        .list()
        .into_iter()
        .map(|k| (key_identity(&k.id), k.name))
        .collect();
    for known in clients.values() {
        names.insert(client_identity(&known.name), known.name.clone());
    }
    names.insert(ANONYMOUS, "anonymous".into());
    names
}

/// The identity of a sender: its stored key (`holder`), else the bearer
/// `token` it came with, and the request's `user` field.
pub fn identify(
    clients: &Clients,
    holder: Option<&Holder>,
    token: Option<&str>,
    user: Option<&str>,
) -> Caller {
    let user_key = |salt: &str, text: &str| stable_hash(salt, text).max(1);
    let user_field = user.filter(|u| !u.is_empty());
    if let Some(holder) = holder {
        let limits = &holder.limits;
        let priority = limits
            .priority
            .and_then(|p| Priority::new(p).ok())
            .unwrap_or(Priority::DEFAULT);
        let ceiling = limits
            .max_priority
            .and_then(|p| Priority::new(p).ok())
            .unwrap_or(priority);
        return Caller {
            client: key_identity(&holder.id),
            user: user_field.map_or(0, |u| user_key("user", u)),
            name: holder.name.clone(),
            priority,
            ceiling,
        };
    }
    if let Some(known) = token.and_then(|t| clients.get(t)) {
        let ceiling = known.priority.unwrap_or(Priority::DEFAULT);
        return Caller {
            client: client_identity(&known.name),
            user: user_field.map_or(0, |u| user_key("user", u)),
            name: known.name.clone(),
            priority: ceiling,
            ceiling,
        };
    }
    let user = match (user_field, token) {
        (Some(u), _) => user_key("user", u),
        (None, Some(t)) => user_key("key", t),
        (None, None) => 0,
    };
    Caller {
        client: ANONYMOUS,
        user,
        name: "anonymous".into(),
        priority: Priority::DEFAULT,
        // With no clients configured there is nobody to protect: the header
        // is the operator's own tool. With clients, an unknown caller may
        // not outrank them.
        ceiling: if clients.is_empty() {
            Priority::MAX
        } else {
            Priority::DEFAULT
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    fn clients() -> Clients {
        let mut c = Clients::new();
        c.insert(
            "sk-batch".into(),
            KnownClient {
                name: "batch".into(),
                priority: Some(Priority::new(20).unwrap()),
            },
        );
        c
    }

    #[test]
    fn identities_are_the_same_in_every_process() {
        // A stored job names its client by this value; another hub, or the
        // same after a restart or an upgrade, must find the same one.
        assert_eq!(key_identity("k_0123"), ClientKey(0x80dd_6ddc_8d36_f113));
        assert_eq!(client_identity("batch"), ClientKey(0x9659_33f3_9a90_71de));
    }

    #[test]
    fn bearer_is_read_one_way() {
        for (value, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ] {
            assert_eq!(bearer(&headers(Some(value))), want, "{value:?}");
        }
        assert_eq!(bearer(&headers(None)), None);
        let mut anthropic = HeaderMap::new();
        anthropic.insert(X_API_KEY, " sk-ant ".parse().unwrap());
        assert_eq!(bearer(&anthropic), Some("sk-ant"));
    }

    #[test]
    fn rotating_the_user_field_keeps_the_identity() {
        let c = clients();
        let a = identify(&c, None, Some("sk-batch"), Some("u1"));
        let b = identify(&c, None, Some("sk-batch"), Some("u2"));
        assert_eq!(a.client, b.client);
        assert_ne!(a.user, b.user);
        let x = identify(&c, None, None, Some("u1"));
        let y = identify(&c, None, Some("made-up"), Some("u9"));
        assert_eq!((x.client, y.client), (ANONYMOUS, ANONYMOUS));
        assert_ne!(x.client, a.client);
    }

    #[test]
    fn a_keys_priority_is_its_ceiling() {
        let c = clients();
        let known = identify(&c, None, Some("sk-batch"), None);
        assert_eq!((known.priority.get(), known.ceiling.get()), (20, 20));
        let stranger = identify(&c, None, Some("other"), None);
        assert_eq!(stranger.ceiling, Priority::DEFAULT);
        let alone = identify(&Clients::new(), None, None, None);
        assert_eq!(alone.ceiling, Priority::MAX);
    }
}
