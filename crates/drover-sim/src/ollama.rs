//! Ollama's native API (backend-apis.md §2): `/api/version`, `/api/tags`
//! (on disk), `/api/ps` (in memory: size, GPU share, context, when the
//! keep-alive ends), `/api/show`; `/api/generate` and `/api/chat` load a
//! model when asked with no prompt (`done_reason: "load"`) and unload it
//! with `keep_alive: 0` (`"unload"`), and otherwise answer, as one object
//! with `stream: false` or NDJSON lines. Native errors are a flat
//! `{"error": "..."}`.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::body::{SimBody, json_response, with_content_type};
use crate::model::{ModelKind, ModelState};
use crate::router::{ok_json, read_body};
use crate::shared::{Shared, unix_now};
use crate::text::{Fnv, Words};

pub(crate) const VERSION: &str = "0.14.3";
/// How long a model stays after its last use, by default (`OLLAMA_KEEP_ALIVE`).
const KEEP_ALIVE_SECS: u64 = 300;
const CONTEXT_LENGTH: u32 = 4096;

pub(crate) async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    body: Incoming,
) -> Option<Response<SimBody>> {
    let response = match (method, path) {
        (&Method::GET, "/") => with_content_type(
            StatusCode::OK,
            SimBody::full(b"Ollama is running".to_vec()),
            "text/plain; charset=utf-8",
        ),
        (&Method::GET, "/api/version") => ok_json(&json!({"version": VERSION})),
        (&Method::GET, "/api/tags") => tags(shared, false),
        (&Method::GET, "/api/ps") => tags(shared, true),
        (&Method::POST, "/api/show") => show(shared, body).await,
        (&Method::POST, "/api/generate" | "/api/chat") => generate(shared, path, body).await,
        _ => return None,
    };
    Some(response)
}

/// Ollama's flat error shape.
pub(crate) fn error(status: StatusCode, message: String) -> Response<SimBody> {
    json_response(status, &json!({"error": message}))
}

fn details(model: &ModelState) -> Value {
    let family = match model.kind {
        ModelKind::Llm => "llama",
        ModelKind::Embedding => "nomic-bert",
    };
    json!({"parent_model": "", "format": "gguf", "family": family, "families": [family],
           "parameter_size": "7.6B", "quantization_level": "Q4_K_M"})
}

fn tags(shared: &Shared, loaded_only: bool) -> Response<SimBody> {
    let models: Vec<Value> = shared
        .models()
        .iter()
        .filter(|m| !loaded_only || m.is_loaded())
        .map(|m| {
            let mut entry = json!({
                "name": &*m.name, "model": &*m.name, "size": m.size_bytes(),
                "digest": format!("{:016x}", Fnv::new().str(&m.name).finish()),
                "details": details(m),
            });
            if loaded_only {
                entry["size_vram"] = json!(m.size_bytes());
                entry["context_length"] = json!(CONTEXT_LENGTH);
                entry["expires_at"] = json!(rfc3339(unix_now() + KEEP_ALIVE_SECS));
            } else {
                entry["modified_at"] = json!(rfc3339(unix_now()));
            }
            entry
        })
        .collect();
    ok_json(&json!({"models": models}))
}

#[derive(Deserialize)]
struct Named {
    #[serde(alias = "name")]
    model: Option<String>,
    prompt: Option<String>,
    messages: Option<Vec<Value>>,
    keep_alive: Option<Value>,
    stream: Option<bool>,
}

/// A native error before it becomes a response.
struct Refusal(StatusCode, String);

impl Refusal {
    fn into_response(self) -> Response<SimBody> {
        error(self.0, self.1)
    }
}

/// The request and its model.
async fn read(shared: &Shared, body: Incoming) -> Result<(Named, &Arc<ModelState>), Refusal> {
    let bytes = read_body(body)
        .await
        .map_err(|_| Refusal(StatusCode::BAD_REQUEST, "could not read the body".into()))?;
    let request: Named = serde_json::from_slice(&bytes)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;
    let name = request.model.as_deref().unwrap_or("");
    let model = shared
        .model(name)
        .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("model '{name}' not found")))?;
    Ok((request, model))
}

async fn show(shared: &Shared, body: Incoming) -> Response<SimBody> {
    let model = match read(shared, body).await {
        Ok((_, m)) => m,
        Err(e) => return e.into_response(),
    };
    let capabilities = match model.kind {
        ModelKind::Llm => json!(["completion", "tools"]),
        ModelKind::Embedding => json!(["embedding"]),
    };
    ok_json(&json!({
        "modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
        "details": details(model),
        "model_info": {"general.architecture": "llama", "llama.context_length": 32768},
        "capabilities": capabilities,
    }))
}

/// Whether `keep_alive` says to unload now: `0`, `"0"`, `"0s"`.
fn unloads(keep_alive: Option<&Value>) -> bool {
    match keep_alive {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.trim_end_matches(['s', 'm', 'h']) == "0",
        _ => false,
    }
}

async fn generate(shared: &Shared, path: &str, body: Incoming) -> Response<SimBody> {
    let (request, model) = match read(shared, body).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let chat = path == "/api/chat";
    let empty = match (&request.prompt, &request.messages) {
        (Some(p), _) => p.is_empty(),
        (None, Some(m)) => m.is_empty(),
        (None, None) => true,
    };
    let base = |done_reason: &str| {
        let mut v = json!({"model": &*model.name, "created_at": rfc3339(unix_now()),
                           "done": true, "done_reason": done_reason});
        if chat {
            v["message"] = json!({"role": "assistant", "content": ""});
        } else {
            v["response"] = json!("");
        }
        v
    };
    if unloads(request.keep_alive.as_ref()) && empty {
        model.set_loaded(false);
        return ok_json(&base("unload"));
    }
    let started = Instant::now();
    if let Err(e) = shared.load(model).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string());
    }
    if empty {
        let mut done = base("load");
        done["load_duration"] = json!(started.elapsed().as_nanos() as u64);
        return ok_json(&done);
    }
    if shared.faults.get().cannot_generate {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "llama runner process has terminated: exit status 2".into(),
        );
    }
    // A short answer from the same generator as /v1; no slot is simulated
    // on the native path, which the hub does not use for inference.
    let key = Fnv::new()
        .u64(shared.settings.seed)
        .str(&model.name)
        .str(request.prompt.as_deref().unwrap_or(""))
        .finish();
    let mut words = Words::new(key);
    let tokens = shared.settings.output_tokens;
    let piece = |text: String, done: bool| {
        let mut v = base("stop");
        v["done"] = json!(done);
        if chat {
            v["message"]["content"] = json!(text);
        } else {
            v["response"] = json!(text);
        }
        if done {
            v["eval_count"] = json!(tokens);
            v["total_duration"] = json!(started.elapsed().as_nanos() as u64);
        } else if let Some(o) = v.as_object_mut() {
            o.remove("done_reason");
        }
        v
    };
    if request.stream == Some(false) {
        return ok_json(&piece(words.text(tokens), true));
    }
    let mut lines = Vec::new();
    for _ in 0..tokens {
        let token = words.next_token().to_string();
        lines.extend(serde_json::to_vec(&piece(token, false)).unwrap_or_default());
        lines.push(b'\n');
    }
    lines.extend(serde_json::to_vec(&piece(String::new(), true)).unwrap_or_default());
    lines.push(b'\n');
    with_content_type(StatusCode::OK, SimBody::full(lines), "application/x-ndjson")
}

/// Unix seconds as RFC 3339 in UTC (Howard Hinnant's civil-from-days).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
