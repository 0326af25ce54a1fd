//! Whether a server serves the coding agents' paths, for the kinds whose
//! API does not say (LM Studio, which reports no version; a generic
//! OpenAI-compatible server): a `POST` with an empty JSON body answers 404
//! where the path is unknown and something else (400, 422) where it exists.
//! Learned once per adapter; asked again only after the server could not be
//! reached, since it may have been replaced.

use std::sync::Mutex;

use http::StatusCode;

use crate::backend::{Apis, BackendError};
use crate::http::Http;

#[derive(Default)]
pub(crate) struct PathProbe {
    learned: Mutex<Option<Apis>>,
}

impl PathProbe {
    pub(crate) async fn apis(&self, http: &Http) -> Apis {
        if let Some(apis) = *lock(&self.learned) {
            return apis;
        }
        let responses = served(http, "/v1/responses").await;
        let messages = served(http, "/v1/messages").await;
        let apis = Apis {
            responses: responses.as_ref().ok().copied(),
            messages: messages.as_ref().ok().copied(),
        };
        if responses.is_ok() && messages.is_ok() {
            *lock(&self.learned) = Some(apis);
        }
        apis
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn served(http: &Http, path: &str) -> Result<bool, BackendError> {
    let answer = http
        .post_json(path, &serde_json::json!({}), http.timeout)
        .await?;
    Ok(answer.status != StatusCode::NOT_FOUND && answer.status != StatusCode::METHOD_NOT_ALLOWED)
}
