//! LM Studio's native model endpoints (backend-apis.md §1.2 and §1.3): the
//! v0 and v1 model listings, and v1 load and unload. Inference goes through
//! the shared `/v1/*` endpoints.

use std::borrow::Cow;
use std::sync::Arc;

use http::{Method, Response};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::body::SimBody;
use crate::error::ApiError;
use crate::model::{ModelKind, ModelState};
use crate::request::parse_json;
use crate::router::{ok_json, read_body};
use crate::shared::Shared;

/// Every model claims the same made-up file facts; what a client needs from
/// these listings is the identity, the type, the state and the slot count.
const MAX_CONTEXT_LENGTH: u64 = 32_768;
const LOADED_CONTEXT_LENGTH: u64 = 4_096;
const QUANTIZATION: &str = "Q4_K_M";

pub(crate) async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    body: Incoming,
) -> Option<Response<SimBody>> {
    let response = match (method, path) {
        // What tells an LM Studio server from any other.
        (&Method::GET, "/lmstudio-greeting") => ok_json(&serde_json::json!({"lmstudio": true})),
        (&Method::GET, "/api/v0/models") => ok_json(&V0List {
            object: "list",
            data: shared.models().iter().map(|m| V0Model::of(m)).collect(),
        }),
        (&Method::GET, "/api/v1/models") => ok_json(&V1List {
            models: shared
                .models()
                .iter()
                .map(|m| V1Model::of(m, m.slot_count))
                .collect(),
        }),
        (&Method::POST, "/api/v1/models/load") => load(shared, body).await,
        (&Method::POST, "/api/v1/models/unload") => unload(shared, body).await,
        (&Method::GET, _) => {
            let id = percent_decode(path.strip_prefix("/api/v0/models/")?);
            match shared.model(&id) {
                Some(model) => ok_json(&V0Model::of(model)),
                None => ApiError::model_not_found(&id).into_response(),
            }
        }
        _ => return None,
    };
    Some(response)
}

async fn load(shared: &Shared, body: Incoming) -> Response<SimBody> {
    let result = async {
        let bytes = read_body(body).await?;
        let request: LoadRequest = parse_json(&bytes)?;
        let model = shared
            .model(&request.model)
            .ok_or_else(|| ApiError::model_not_found(&request.model))?;
        let started = Instant::now();
        // Loading a loaded model makes another instance, `key:2` and on,
        // as LM Studio does.
        let instance_id = if model.is_loaded() {
            format!("{}:{}", model.name, model.add_instance())
        } else {
            shared.load(model).await?;
            model.name.to_string()
        };
        Ok(ok_json(&LoadResponse {
            kind: v1_type(model.kind),
            instance_id: &instance_id,
            load_time_seconds: started.elapsed().as_secs_f64(),
            status: "loaded",
            load_config: request
                .echo_load_config
                .unwrap_or(false)
                .then(|| InstanceConfig::of(model.slot_count)),
        }))
    };
    result.await.unwrap_or_else(ApiError::into_response)
}

async fn unload(shared: &Shared, body: Incoming) -> Response<SimBody> {
    let result = async {
        let bytes = read_body(body).await?;
        let request: UnloadRequest = parse_json(&bytes)?;
        let id = request.instance_id.as_str();
        // `key` or `key:N`; the last instance to go unloads the model.
        let (key, n) = match id.rsplit_once(':') {
            Some((key, n)) if shared.model(key).is_some() => (key, n.parse::<u64>().ok()),
            _ => (id, Some(1)),
        };
        match (shared.model(key), n) {
            (Some(model), Some(n)) if model.remove_instance(n) => {
                Ok(ok_json(&UnloadResponse { instance_id: id }))
            }
            _ => Err(ApiError::instance_not_found(id)),
        }
    };
    result.await.unwrap_or_else(ApiError::into_response)
}

fn v1_type(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Llm => "llm",
        ModelKind::Embedding => "embedding",
    }
}

/// Decodes `%XX` escapes, so a client that escapes the `/` in a
/// `publisher/model` key still finds it. Malformed escapes stay as written.
pub(crate) fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[derive(Debug, Serialize)]
struct V0List<'a> {
    object: &'static str,
    data: Vec<V0Model<'a>>,
}

#[derive(Debug, Serialize)]
struct V0Model<'a> {
    id: &'a str,
    object: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    publisher: &'static str,
    arch: &'static str,
    compatibility_type: &'static str,
    quantization: &'static str,
    state: &'static str,
    max_context_length: u64,
}

impl<'a> V0Model<'a> {
    fn of(model: &'a ModelState) -> Self {
        V0Model {
            id: &model.name,
            object: "model",
            kind: match model.kind {
                ModelKind::Llm => "llm",
                // v0 spells it in the plural, unlike v1.
                ModelKind::Embedding => "embeddings",
            },
            publisher: "drover-sim",
            arch: architecture(model.kind),
            compatibility_type: "gguf",
            quantization: QUANTIZATION,
            state: if model.is_loaded() {
                "loaded"
            } else {
                "not-loaded"
            },
            max_context_length: MAX_CONTEXT_LENGTH,
        }
    }
}

fn architecture(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Llm => "llama",
        ModelKind::Embedding => "nomic-bert",
    }
}

#[derive(Debug, Serialize)]
struct V1List<'a> {
    models: Vec<V1Model<'a>>,
}

#[derive(Debug, Serialize)]
struct V1Model<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    publisher: &'static str,
    key: &'a str,
    display_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    architecture: Option<&'static str>,
    format: Option<&'static str>,
    params_string: Option<&'static str>,
    size_bytes: u64,
    max_context_length: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<Capabilities>,
    quantization: Option<Quantization>,
    loaded_instances: Vec<Instance>,
}

impl<'a> V1Model<'a> {
    fn of(model: &'a ModelState, slots: usize) -> Self {
        let llm = model.kind == ModelKind::Llm;
        V1Model {
            kind: v1_type(model.kind),
            publisher: "drover-sim",
            key: &model.name,
            display_name: &model.name,
            architecture: llm.then(|| architecture(model.kind)),
            format: Some("gguf"),
            params_string: Some(if llm { "7B" } else { "137M" }),
            size_bytes: model.size_bytes(),
            max_context_length: MAX_CONTEXT_LENGTH,
            capabilities: llm.then_some(Capabilities {
                vision: false,
                trained_for_tool_use: false,
            }),
            quantization: Some(Quantization {
                name: Some(QUANTIZATION),
                bits_per_weight: Some(4.0),
            }),
            loaded_instances: model
                .instance_numbers()
                .into_iter()
                .map(|n| Instance {
                    id: if n == 1 {
                        model.name.to_string()
                    } else {
                        format!("{}:{n}", model.name)
                    },
                    config: InstanceConfig::of(slots),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Capabilities {
    vision: bool,
    trained_for_tool_use: bool,
}

#[derive(Debug, Serialize)]
struct Quantization {
    name: Option<&'static str>,
    bits_per_weight: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Instance {
    id: String,
    config: InstanceConfig,
}

#[derive(Debug, Serialize)]
struct InstanceConfig {
    context_length: u64,
    /// The slot count: how many requests the instance runs at once.
    parallel: usize,
}

impl InstanceConfig {
    fn of(slots: usize) -> Self {
        InstanceConfig {
            context_length: LOADED_CONTEXT_LENGTH,
            parallel: slots,
        }
    }
}

#[derive(Debug, Deserialize)]
struct LoadRequest {
    model: String,
    echo_load_config: Option<bool>,
}

#[derive(Debug, Serialize)]
struct LoadResponse<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    instance_id: &'a str,
    load_time_seconds: f64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_config: Option<InstanceConfig>,
}

#[derive(Debug, Deserialize)]
struct UnloadRequest {
    #[serde(alias = "model_instance_id")]
    instance_id: String,
}

#[derive(Debug, Serialize)]
struct UnloadResponse<'a> {
    instance_id: &'a str,
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("plain-model"), "plain-model");
        assert_eq!(percent_decode("pub%2Fmodel"), "pub/model");
        assert_eq!(percent_decode("a%2fb%20c"), "a/b c");
        assert_eq!(percent_decode("bad%zz%2"), "bad%zz%2");
        assert_eq!(percent_decode("%"), "%");
    }
}
