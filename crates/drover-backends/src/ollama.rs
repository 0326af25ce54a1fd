//! Ollama: models on disk from `/api/tags`, in memory from `/api/ps` (size,
//! GPU share, context length, when its keep-alive ends), its version from
//! `/api/version`. It does not report `OLLAMA_NUM_PARALLEL`, so slots come
//! from config. A model loads with an empty generation and unloads with
//! `keep_alive: 0`. From 0.14 on it serves `/v1/responses` and
//! `/v1/messages`.
use std::time::{Duration, Instant};

use drover_proto::ollama::{GenerateDone, ModelList, Version};

use crate::adapter::Adapter;
use crate::backend::{
    Apis, BackendError, DiscoveredModel, Discovery, Loaded, ModelState, ModelType,
};
use crate::http::Http;
use crate::kind::BackendKind;
use crate::version;

/// A load can take minutes on a slow disk.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Ollama {
    http: Http,
}

impl Ollama {
    pub(crate) fn new(http: Http) -> Self {
        Ollama { http }
    }

    fn missing(&self, path: &str) -> BackendError {
        BackendError::Malformed {
            url: format!("{}{path}", self.http.endpoint),
            reason: "404: not an Ollama server".into(),
        }
    }
}

fn kind(m: &drover_proto::ollama::Model) -> ModelType {
    if m.is_embedding() {
        ModelType::Embedding
    } else {
        ModelType::Llm
    }
}

impl Adapter for Ollama {
    const KIND: BackendKind = BackendKind::Ollama;

    fn http(&self) -> &Http {
        &self.http
    }

    async fn discover(&self) -> Result<Discovery, BackendError> {
        let version: Version = self
            .http
            .get_json("/api/version")
            .await?
            .ok_or_else(|| self.missing("/api/version"))?;
        let tags: ModelList = self
            .http
            .get_json("/api/tags")
            .await?
            .ok_or_else(|| self.missing("/api/tags"))?;
        let ps: ModelList = self.http.get_json("/api/ps").await?.unwrap_or_default();
        let mut models: Vec<DiscoveredModel> = tags
            .models
            .iter()
            .map(|m| DiscoveredModel {
                id: m.id().to_string(),
                kind: kind(m),
                size_bytes: m.size,
                ..DiscoveredModel::default()
            })
            .collect();
        for loaded in &ps.models {
            let at = match models.iter().position(|m| m.id == loaded.id()) {
                Some(at) => at,
                None => {
                    models.push(DiscoveredModel {
                        id: loaded.id().to_string(),
                        kind: kind(loaded),
                        ..DiscoveredModel::default()
                    });
                    models.len() - 1
                }
            };
            let m = &mut models[at];
            m.state = ModelState::Loaded;
            m.size_bytes = loaded.size.or(m.size_bytes);
            m.vram_bytes = loaded.size_vram;
            m.context_length = loaded.context_length;
            m.expires_at = loaded.expires_at.clone();
        }
        models.retain(|m| !m.id.is_empty());
        let agents = version
            .version
            .as_deref()
            .map(|v| version::at_least(v, [0, 14, 0]));
        Ok(Discovery {
            models,
            memory_used: Some(ps.models.iter().filter_map(|m| m.size).sum()),
            version: version.version,
            can_load: true,
            can_unload: true,
            apis: Apis {
                responses: agents,
                messages: agents,
            },
            ..Discovery::default()
        })
    }

    async fn load(&self, model: String) -> Result<Loaded, BackendError> {
        let started = Instant::now();
        let body = serde_json::json!({ "model": model, "stream": false });
        let done: GenerateDone = self
            .http
            .post_json("/api/generate", &body, LOAD_TIMEOUT)
            .await?
            .success()?
            .json()?;
        let seconds = done
            .load_duration
            .map(|ns| ns as f64 / 1e9)
            .unwrap_or_else(|| started.elapsed().as_secs_f64());
        Ok(Loaded {
            seconds,
            instance: None,
        })
    }

    async fn unload(&self, model: String) -> Result<(), BackendError> {
        let body = serde_json::json!({ "model": model, "keep_alive": 0, "stream": false });
        self.http
            .post_json("/api/generate", &body, self.http.timeout)
            .await?
            .success()
            .map(drop)
    }
}
