//! The scheduler's requests and refusals as the link carries them:
//! backends by name (each hub numbers its own), times relative to now
//! (each hub's scheduler keeps its own clock).

use std::time::Duration;

use drover_core::{BackendId, ClientKey, ModelName, Priority};
use drover_proto::admin::{KeyKind, KeyLimits};
use drover_proto::cluster::link::{Acquire, KeyUse, Refusal};
use drover_scheduler::{Affinity, Api, Reject, Request};

use crate::dispatcher::{AcquireError, WaitError};
use crate::keys::Holder;
use crate::limits::Limit;
use crate::registry::Backends;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A follower's request as the leader is asked for it; `now` is the
/// follower's scheduler time.
pub fn acquire(id: u64, r: &Request, retry: bool, now: Duration, names: &Backends) -> Acquire {
    Acquire {
        id,
        model: r.model.as_str().to_string(),
        api: r.api.as_str().to_string(),
        priority: r.priority.get(),
        client: r.client.0,
        user: r.user,
        waited_ms: ms(now.saturating_sub(r.arrival)),
        deadline_ms: r.deadline.map(|d| ms(d.saturating_sub(now))),
        lookup: r.affinity.lookup.clone(),
        record: r.affinity.record.clone(),
        bytes: r.size as u64,
        exclude: r.exclude.iter().map(|b| names.name_of(*b)).collect(),
        pin: r.pin.map(|b| names.name_of(b)),
        prompt_tokens: r.prompt_tokens,
        max_tokens: r.max_tokens,
        retry,
        key: None,
        admitted: false,
    }
}

/// A client key's counted limits, for the leader.
pub fn key_use(h: &Holder) -> KeyUse {
    KeyUse {
        id: h.id.clone(),
        name: h.name.clone(),
        requests_per_minute: h.limits.requests_per_minute,
        tokens_per_minute: h.limits.tokens_per_minute,
        max_concurrent: h.limits.max_concurrent,
    }
}

/// The key a follower's request came with, as the leader's limiter takes
/// it (its model list was checked where it came in).
pub fn holder(k: &KeyUse) -> Holder {
    Holder {
        id: k.id.clone(),
        name: k.name.clone(),
        kind: KeyKind::Client,
        limits: KeyLimits {
            requests_per_minute: k.requests_per_minute,
            tokens_per_minute: k.tokens_per_minute,
            max_concurrent: k.max_concurrent,
            ..KeyLimits::default()
        },
    }
}

fn api(name: &str) -> Api {
    match name {
        "responses" => Api::Responses,
        "messages" => Api::Messages,
        "task" => Api::Task,
        _ => Api::OpenAi,
    }
}

/// The leader's request for what a follower asked; `now` is the leader's
/// scheduler time. Backends it does not know are left out of `exclude`
/// and `pin`.
pub fn request(
    a: &Acquire,
    id: drover_core::RequestId,
    now: Duration,
    names: &Backends,
) -> Request {
    let known = |name: &String| names.by_name(name).map(|e| e.id);
    Request {
        id,
        model: ModelName::new(&a.model),
        priority: Priority::new(a.priority).unwrap_or(Priority::MAX),
        client: ClientKey(a.client),
        user: a.user,
        arrival: now.saturating_sub(Duration::from_millis(a.waited_ms)),
        deadline: a.deadline_ms.map(|d| now + Duration::from_millis(d)),
        affinity: Affinity {
            lookup: a.lookup.clone(),
            record: a.record.clone(),
        },
        exclude: a.exclude.iter().filter_map(known).collect(),
        size: usize::try_from(a.bytes).unwrap_or(usize::MAX),
        api: api(&a.api),
        pin: a.pin.as_ref().and_then(known),
        prompt_tokens: a.prompt_tokens,
        max_tokens: a.max_tokens,
    }
}

/// Why the leader gave no slot, for the link.
pub fn refusal(e: &AcquireError, names: &Backends) -> Refusal {
    let name = |b: &BackendId| names.name_of(*b);
    match e {
        AcquireError::Rejected(r) => match r {
            Reject::ModelNotFound => Refusal::ModelNotFound,
            Reject::NoHealthyBackend => Refusal::NoHealthyBackend,
            Reject::QueueFull { retry_after } => Refusal::QueueFull {
                retry_after_ms: ms(*retry_after),
            },
            Reject::Exhausted => Refusal::Exhausted,
            Reject::ApiNotServed => Refusal::ApiNotServed,
            Reject::NeverFits {
                size,
                needs,
                largest,
            } => Refusal::NeverFits {
                size: *size,
                needs: *needs,
                largest: *largest,
            },
            Reject::LoadFailed {
                backend,
                message,
                retry_after,
            } => Refusal::LoadFailed {
                backend: name(backend),
                message: message.clone(),
                retry_after_ms: Some(ms(*retry_after)),
            },
        },
        AcquireError::Wait(w) => match w {
            WaitError::Expired => Refusal::Expired,
            WaitError::StillLoading {
                backend,
                retry_after,
            } => Refusal::StillLoading {
                backend: name(backend),
                retry_after_ms: ms(*retry_after),
            },
            WaitError::LoadFailed { backend, message } => Refusal::LoadFailed {
                backend: name(backend),
                message: message.clone(),
                retry_after_ms: None,
            },
            WaitError::Unroutable => Refusal::Unroutable,
            // A leader that stops, or stops leading, answers the follower
            // by ending the link: its requests go to the next leader.
            WaitError::ShuttingDown | WaitError::NoLeader(_) | WaitError::LeaderChanged => {
                Refusal::ShuttingDown
            }
        },
        AcquireError::KeyLimited {
            limit,
            message,
            retry_after,
        } => Refusal::KeyLimited {
            limit: limit.as_str().to_string(),
            message: message.clone(),
            retry_after_ms: ms(*retry_after),
        },
    }
}

/// The leader's refusal as this hub's own error; backends it does not
/// know are named by the leader's word alone (id 0).
pub fn acquire_error(r: Refusal, names: &Backends) -> AcquireError {
    let id = |name: &str| names.by_name(name).map_or(BackendId(0), |e| e.id);
    let after = Duration::from_millis;
    match r {
        Refusal::ModelNotFound => AcquireError::Rejected(Reject::ModelNotFound),
        Refusal::NoHealthyBackend => AcquireError::Rejected(Reject::NoHealthyBackend),
        Refusal::QueueFull { retry_after_ms } => AcquireError::Rejected(Reject::QueueFull {
            retry_after: after(retry_after_ms),
        }),
        Refusal::Exhausted => AcquireError::Rejected(Reject::Exhausted),
        Refusal::ApiNotServed => AcquireError::Rejected(Reject::ApiNotServed),
        Refusal::NeverFits {
            size,
            needs,
            largest,
        } => AcquireError::Rejected(Reject::NeverFits {
            size,
            needs,
            largest,
        }),
        Refusal::LoadFailed {
            backend,
            message,
            retry_after_ms: Some(ms),
        } => AcquireError::Rejected(Reject::LoadFailed {
            backend: id(&backend),
            message,
            retry_after: after(ms),
        }),
        Refusal::LoadFailed {
            backend, message, ..
        } => AcquireError::Wait(WaitError::LoadFailed {
            backend: id(&backend),
            message,
        }),
        Refusal::Expired => AcquireError::Wait(WaitError::Expired),
        Refusal::StillLoading {
            backend,
            retry_after_ms,
        } => AcquireError::Wait(WaitError::StillLoading {
            backend: id(&backend),
            retry_after: after(retry_after_ms),
        }),
        Refusal::Unroutable => AcquireError::Wait(WaitError::Unroutable),
        Refusal::ShuttingDown => AcquireError::Wait(WaitError::LeaderChanged),
        Refusal::KeyLimited {
            limit,
            message,
            retry_after_ms,
        } => AcquireError::KeyLimited {
            limit: Limit::named(&limit),
            message,
            retry_after: after(retry_after_ms),
        },
    }
}
