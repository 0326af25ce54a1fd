//! Whether a server serves the coding agents' paths, for the kinds whose
//! API does not say (LM Studio, which reports no version; a generic
//! OpenAI-compatible server): a `POST` with an empty JSON body answers 404
//! (or 405) where the path is unknown and something else (400, 422) where
//! it exists. A 404 that is the server's own JSON error about the model
//! (no model was named) comes from a path that exists: the server read the
//! request and looked the model up.
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
        if let Some(apis) = *drover_core::sync::lock(&self.learned) {
            return apis;
        }
        let responses = served(http, "/v1/responses").await;
        let messages = served(http, "/v1/messages").await;
        let apis = Apis {
            responses: responses.as_ref().ok().copied(),
            messages: messages.as_ref().ok().copied(),
        };
        if responses.is_ok() && messages.is_ok() {
            *drover_core::sync::lock(&self.learned) = Some(apis);
        }
        apis
    }
}

async fn served(http: &Http, path: &str) -> Result<bool, BackendError> {
    let answer = http
        .post_json(path, &serde_json::json!({}), http.timeout)
        .await?;
    Ok(path_served(answer.status, &answer.body))
}

/// Whether an empty `POST`'s answer says the path exists.
fn path_served(status: StatusCode, body: &[u8]) -> bool {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => false,
        StatusCode::NOT_FOUND => about_a_model(body),
        _ => true,
    }
}

/// A JSON error whose message or code is about a model: OpenAI's
/// `{"error":{"message","code":"model_not_found"}}`, vLLM's flat
/// `{"message":"The model `` does not exist."}`, Anthropic's
/// `{"type":"error","error":{"type":"not_found_error","message"}}`, Ollama's
/// `{"error":"model '' not found"}`. A router's own 404 (`{"detail":"Not
/// Found"}`, LM Studio's "Unexpected endpoint", a text page) is not.
fn about_a_model(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = v.get("error").unwrap_or(&serde_json::Value::Null);
    let texts = [
        error.get("message"),
        error.get("code"),
        Some(error),
        v.get("message"),
        v.get("code"),
    ];
    texts
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .any(|t| {
            let t = t.to_ascii_lowercase();
            t.contains("model") && !t.contains("unexpected endpoint")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_about_the_model_comes_from_a_path_that_exists() {
        let cases: &[(u16, &str, bool)] = &[
            (400, r#"{"error":{"message":"model is required"}}"#, true),
            (
                422,
                r#"{"detail":[{"loc":["body","model"],"msg":"Field required"}]}"#,
                true,
            ),
            (200, "{}", true),
            (
                404,
                r#"{"error":{"message":"The model '' does not exist","type":"invalid_request_error","code":"model_not_found"}}"#,
                true,
            ),
            (
                404,
                r#"{"object":"error","message":"The model `` does not exist.","type":"NotFoundError","param":null,"code":404}"#,
                true,
            ),
            (
                404,
                r#"{"type":"error","error":{"type":"not_found_error","message":"model: not found"}}"#,
                true,
            ),
            (404, r#"{"error":"model '' not found"}"#, true),
            (404, r#"{"detail":"Not Found"}"#, false),
            (
                404,
                r#"{"error":"Unexpected endpoint or method. (POST /v1/responses)"}"#,
                false,
            ),
            (404, "404 page not found", false),
            (404, "File Not Found", false),
            (404, "", false),
            (405, r#"{"error":{"message":"model"}}"#, false),
        ];
        for (status, body, want) in cases {
            let status = StatusCode::from_u16(*status).unwrap();
            assert_eq!(
                path_served(status, body.as_bytes()),
                *want,
                "{status} {body}"
            );
        }
    }
}
