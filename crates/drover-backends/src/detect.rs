//! Which kind of server is at a URL, from the probes each kind answers in
//! its own way: LM Studio `GET /lmstudio-greeting` (`{"lmstudio":true}`),
//! Ollama `GET /api/version`, llama.cpp `GET /props` (`total_slots`; in
//! router mode its model list carries each model's status), vLLM
//! `GET /version`. Judged by the JSON each returns, so a server that answers
//! every path with the same page is none of them; anything that lists
//! models at `/v1/models` is at least a generic OpenAI server.

use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::backend::BackendError;
use crate::client::HttpClient;
use crate::endpoint::Endpoint;
use crate::http::Http;
use crate::kind::BackendKind;

/// What detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub kind: BackendKind,
    /// The version, where the probe that told the kind also tells it.
    pub version: Option<String>,
}

pub async fn detect(
    endpoint: &Endpoint,
    client: &HttpClient,
    api_key: Option<&str>,
    timeout: Duration,
) -> Result<Detected, BackendError> {
    let http = Http {
        authorization: endpoint.authorization(api_key),
        endpoint: endpoint.clone(),
        client: client.clone(),
        timeout,
    };
    let (greeting, ollama, props, vllm, models) = tokio::join!(
        json(&http, "/lmstudio-greeting"),
        json(&http, "/api/version"),
        json(&http, "/props"),
        json(&http, "/version"),
        json(&http, "/v1/models"),
    );
    // Nothing answered at all: say why, rather than guess.
    if let (Err(e), Err(_), Err(_), Err(_), Err(_)) = (&greeting, &ollama, &props, &vllm, &models) {
        return Err(e.clone());
    }
    let ok = |r: &Result<Option<Value>, BackendError>| r.as_ref().ok().cloned().flatten();
    let (greeting, ollama, props, vllm, models) = (
        ok(&greeting),
        ok(&ollama),
        ok(&props),
        ok(&vllm),
        ok(&models),
    );
    let version_of = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|v| v.get("version"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if greeting
        .as_ref()
        .and_then(|g| g.get("lmstudio"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Ok(found(BackendKind::LmStudio, None));
    }
    if is_llamacpp(props.as_ref(), models.as_ref()) {
        let build = props
            .as_ref()
            .and_then(|p| p.get("build_info"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Ok(found(BackendKind::LlamaCpp, build));
    }
    match (version_of(&ollama), version_of(&vllm)) {
        (Some(v), None) => return Ok(found(BackendKind::Ollama, Some(v))),
        (None, Some(v)) => return Ok(found(BackendKind::Vllm, Some(v))),
        (Some(v), Some(_)) => {
            // Both answered: only Ollama has its model store at /api/tags.
            let tags = json(&http, "/api/tags").await.ok().flatten();
            let kind = if tags.as_ref().and_then(|t| t.get("models")).is_some() {
                BackendKind::Ollama
            } else {
                BackendKind::Vllm
            };
            return Ok(found(kind, Some(v)));
        }
        (None, None) => {}
    }
    if models
        .as_ref()
        .and_then(|m| m.get("data"))
        .is_some_and(Value::is_array)
    {
        return Ok(found(BackendKind::OpenAi, None));
    }
    Err(BackendError::Malformed {
        url: endpoint.to_string(),
        reason: format!(
            "it answers none of the probes of {} as those servers do, and lists no models at \
             /v1/models; name its kind",
            BackendKind::NAMES
        ),
    })
}

fn found(kind: BackendKind, version: Option<String>) -> Detected {
    Detected { kind, version }
}

/// `/props` with a slot count or generation settings, or a model list whose
/// entries carry a router status or llama.cpp as owner.
fn is_llamacpp(props: Option<&Value>, models: Option<&Value>) -> bool {
    let props_say = props.is_some_and(|p| {
        p.get("total_slots").is_some_and(Value::is_number)
            || p.get("default_generation_settings")
                .is_some_and(Value::is_object)
    });
    let models_say = models
        .and_then(|m| m.get("data"))
        .and_then(Value::as_array)
        .is_some_and(|data| {
            data.iter().any(|m| {
                m.get("status").and_then(|s| s.get("value")).is_some()
                    || m.get("owned_by").and_then(Value::as_str) == Some("llamacpp")
            })
        });
    props_say || models_say
}

/// The JSON a path answers with 2xx; `None` for anything else that is an
/// answer (an error status, a body that is not JSON).
async fn json(http: &Http, path: &str) -> Result<Option<Value>, BackendError> {
    let answer = http.call(Method::GET, path, None, http.timeout).await?;
    if !answer.status.is_success() {
        return Ok(None);
    }
    Ok(serde_json::from_slice(&answer.body).ok())
}
