//! A stored job as the API shows it, and whose it is.

use std::collections::HashMap;

use drover_proto::admin::{KeyInfo, Owner};
use drover_store::{ANONYMOUS, Answer, Job, JobState};

use crate::caller::Clients;

/// A `[[clients]]` entry's jobs are kept under its name with this prefix
/// (its key is config, not a stored key with an id).
pub const CLIENT_PREFIX: &str = "client:";

/// What the anonymous client's jobs are called.
const ANONYMOUS_NAME: &str = "anonymous";

/// Whose jobs and batches are, by name: the store keeps a key's id, which
/// says nothing to a person.
pub struct KeyNames {
    keys: Vec<KeyInfo>,
    by_id: HashMap<String, usize>,
}

impl KeyNames {
    /// Every key the hub keeps, revoked ones too: their jobs stay.
    pub fn new(keys: Vec<KeyInfo>) -> KeyNames {
        let by_id = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.id.clone(), i))
            .collect();
        KeyNames { keys, by_id }
    }

    /// Whose something kept under `key_id` is.
    pub fn owner(&self, key_id: &str) -> Owner {
        let key = if key_id == ANONYMOUS {
            Some(ANONYMOUS_NAME.to_string())
        } else if let Some(client) = key_id.strip_prefix(CLIENT_PREFIX) {
            Some(client.to_string())
        } else {
            self.by_id.get(key_id).map(|&i| self.keys[i].name.clone())
        };
        Owner {
            key_id: key_id.to_string(),
            key,
        }
    }

    /// The key id a person means by `given`: a stored key's id; a stored
    /// key's name (the active one, else the newest revoked one); a
    /// `[[clients]]` name; `anonymous`. Anything else is taken as an id the
    /// hub no longer keeps (a purged key's jobs stay in the store).
    pub fn key_id(&self, given: &str, clients: &Clients) -> String {
        if self.by_id.contains_key(given) {
            return given.to_string();
        }
        let named = self
            .keys
            .iter()
            .filter(|k| k.name == given)
            .max_by_key(|k| (k.revoked_unix.is_none(), k.created_unix));
        if let Some(key) = named {
            return key.id.clone();
        }
        if clients.values().any(|c| c.name == given) {
            return format!("{CLIENT_PREFIX}{given}");
        }
        if given == ANONYMOUS_NAME {
            return ANONYMOUS.to_string();
        }
        given.to_string()
    }
}

/// The API's view of a job; its answer once it has ended with one.
pub fn job(job: Job, answer: Option<Answer>) -> drover_proto::jobs::Job {
    let secs = |ms: i64| ms.div_euclid(1000);
    drover_proto::jobs::Job {
        object: "job".into(),
        next_attempt_at: (job.state == JobState::Queued).then(|| secs(job.run_at)),
        state: job.state.as_str().into(),
        priority: job.priority,
        max_attempts: job.max_attempts,
        attempts: job
            .attempts
            .into_iter()
            .map(|a| drover_proto::jobs::JobAttempt {
                number: a.number,
                started_at_ms: a.started_at,
                ended_at_ms: a.ended_at,
                backends: a.backends,
                status: a.status,
                error: a.error,
            })
            .collect(),
        created_at: secs(job.created_at),
        started_at: job.started_at.map(secs),
        ended_at: job.ended_at.map(secs),
        deadline: job.deadline.map(secs),
        cancel_requested: job.cancel_requested && !job.state.is_final(),
        metadata: job
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok()),
        response: answer.map(|a| drover_proto::jobs::JobResponse {
            status_code: a.status,
            body: body_value(&a.body),
        }),
        id: job.id,
        endpoint: job.endpoint,
        model: job.model,
        batch_id: job.batch_id,
        custom_id: job.custom_id,
        callback_url: job.callback_url,
        note: None,
    }
}

/// An answer's body as JSON: itself if it is JSON, else a string.
pub fn body_value(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use drover_proto::admin::{KeyKind, KeyLimits};

    use super::*;
    use crate::caller::KnownClient;

    fn key(id: &str, name: &str, created: u64, revoked: Option<u64>) -> KeyInfo {
        KeyInfo {
            id: id.into(),
            name: name.into(),
            kind: KeyKind::Client,
            prefix: "drv_c_".into(),
            created_unix: created,
            revoked_unix: revoked,
            limits: KeyLimits::default(),
            own_webhook_secret: false,
        }
    }

    fn names() -> KeyNames {
        KeyNames::new(vec![
            key("key_old", "nightly", 1, Some(5)),
            key("key_new", "nightly", 6, None),
            key("key_gone", "gone", 2, Some(3)),
            key("key_older_gone", "gone", 1, Some(2)),
        ])
    }

    #[test]
    fn an_owner_is_named_by_its_key_its_client_or_anonymous() {
        let names = names();
        let name = |id: &str| names.owner(id).key;
        assert_eq!(name("key_old").as_deref(), Some("nightly"));
        assert_eq!(name("client:ci").as_deref(), Some("ci"));
        assert_eq!(name(ANONYMOUS).as_deref(), Some("anonymous"));
        // A purged key's jobs stay; its name went with it.
        assert_eq!(name("key_purged"), None);
        assert_eq!(names.owner("key_purged").key_id, "key_purged");
    }

    #[test]
    fn a_key_filter_takes_an_id_a_name_a_client_or_anonymous() {
        let names = names();
        let mut clients = Clients::new();
        clients.insert(
            "secret".into(),
            KnownClient {
                name: "ci".into(),
                priority: None,
            },
        );
        for (given, id) in [
            ("key_old", "key_old"),
            ("nightly", "key_new"),
            ("gone", "key_gone"),
            ("ci", "client:ci"),
            ("anonymous", ANONYMOUS),
            ("key_purged", "key_purged"),
        ] {
            assert_eq!(names.key_id(given, &clients), id, "{given}");
        }
    }
}
