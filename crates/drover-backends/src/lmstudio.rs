//! LM Studio: from 0.4 on, `/api/v1/models` lists every downloaded model
//! with its loaded instances (each with `config.parallel` slots and its
//! context length), and models load and unload by instance; older servers
//! (0.3.6 on) have only `/api/v0/models` (load state, no slots), and load
//! only on demand (JIT). Which of the coding agents' paths it serves is
//! probed (its API reports no version).
use drover_proto::lmstudio::{V0ModelList, V1Loaded, V1ModelList};

use crate::adapter::Adapter;
use crate::backend::{BackendError, DiscoveredModel, Discovery, Loaded, ModelState, ModelType};
use crate::http::Http;
use crate::kind::BackendKind;
use crate::paths::PathProbe;

/// A load can take minutes (a large model from a slow disk).
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

pub struct LmStudio {
    http: Http,
    paths: PathProbe,
}

impl LmStudio {
    pub(crate) fn new(http: Http) -> Self {
        LmStudio {
            http,
            paths: PathProbe::default(),
        }
    }

    async fn discover_v0(&self) -> Result<Discovery, BackendError> {
        let v0: V0ModelList =
            self.http
                .get_json("/api/v0/models")
                .await?
                .ok_or_else(|| BackendError::Malformed {
                    url: format!("{}/api/v0/models", self.http.endpoint),
                    reason: "404: not an LM Studio server, or older than 0.3.6 (use kind openai)"
                        .into(),
                })?;
        let models = v0
            .data
            .into_iter()
            .map(|m| DiscoveredModel {
                state: if m.is_loaded() {
                    ModelState::Loaded
                } else {
                    ModelState::Unloaded
                },
                kind: model_type(m.kind.as_deref()),
                context_length: m.max_context_length.and_then(|n| u32::try_from(n).ok()),
                id: m.id,
                ..DiscoveredModel::default()
            })
            .collect();
        Ok(Discovery {
            models,
            ..Discovery::default()
        })
    }

    /// The instance ids of `model` now loaded.
    async fn instances(&self, model: &str) -> Result<Vec<String>, BackendError> {
        let v1: V1ModelList = self
            .http
            .get_json("/api/v1/models")
            .await?
            .ok_or_else(|| self.needs_v1("unload models"))?;
        Ok(v1
            .models
            .into_iter()
            .filter(|m| m.key == model)
            .flat_map(|m| m.loaded_instances.into_iter().map(|i| i.id))
            .filter(|id| !id.is_empty())
            .collect())
    }

    fn needs_v1(&self, what: &str) -> BackendError {
        BackendError::Unsupported {
            kind: BackendKind::LmStudio,
            what: format!("{what} before 0.4 (no /api/v1)"),
        }
    }
}

fn from_v1(v1: V1ModelList) -> Discovery {
    let models = v1
        .models
        .into_iter()
        .map(|m| {
            let loaded = !m.loaded_instances.is_empty();
            DiscoveredModel {
                state: if loaded {
                    ModelState::Loaded
                } else {
                    ModelState::Unloaded
                },
                kind: model_type(m.kind.as_deref()),
                slots: m.parallel(),
                size_bytes: m.size_bytes,
                context_length: m
                    .loaded_instances
                    .iter()
                    .find_map(|i| i.config.context_length)
                    .or(m.max_context_length),
                instances: m.loaded_instances.iter().map(|i| i.id.clone()).collect(),
                id: m.key,
                ..DiscoveredModel::default()
            }
        })
        .collect::<Vec<_>>();
    Discovery {
        memory_used: Some(
            models
                .iter()
                .filter(|m| m.loaded())
                .filter_map(|m| m.size_bytes)
                .sum(),
        ),
        models,
        can_load: true,
        can_unload: true,
        ..Discovery::default()
    }
}

/// `llm`/`vlm` generate; `embedding` (v1) and `embeddings` (v0) do not.
fn model_type(kind: Option<&str>) -> ModelType {
    match kind {
        Some("llm" | "vlm") => ModelType::Llm,
        Some(k) if k.starts_with("embedding") => ModelType::Embedding,
        _ => ModelType::Unknown,
    }
}

impl Adapter for LmStudio {
    const KIND: BackendKind = BackendKind::LmStudio;

    fn http(&self) -> &Http {
        &self.http
    }

    async fn discover(&self) -> Result<Discovery, BackendError> {
        let mut discovery = match self.http.get_json::<V1ModelList>("/api/v1/models").await? {
            Some(v1) => from_v1(v1),
            None => self.discover_v0().await?,
        };
        discovery.apis = self.paths.apis(&self.http).await;
        Ok(discovery)
    }

    async fn load(&self, model: String) -> Result<Loaded, BackendError> {
        let started = std::time::Instant::now();
        let answer = self
            .http
            .post_json(
                "/api/v1/models/load",
                &serde_json::json!({ "model": model }),
                LOAD_TIMEOUT,
            )
            .await?;
        if answer.status == http::StatusCode::NOT_FOUND
            && self
                .http
                .get_json::<V1ModelList>("/api/v1/models")
                .await?
                .is_none()
        {
            return Err(self.needs_v1("load models"));
        }
        let loaded: V1Loaded = answer.success()?.json()?;
        Ok(Loaded {
            seconds: loaded
                .load_time_seconds
                .unwrap_or_else(|| started.elapsed().as_secs_f64()),
            instance: loaded.instance_id,
        })
    }

    async fn unload(&self, model: String) -> Result<(), BackendError> {
        // Every instance: a key names only the first, and JIT loads have
        // been seen to leave duplicates.
        for instance in self.instances(&model).await? {
            self.http
                .post_json(
                    "/api/v1/models/unload",
                    &serde_json::json!({ "instance_id": instance }),
                    self.http.timeout,
                )
                .await?
                .success()?;
        }
        Ok(())
    }
}
