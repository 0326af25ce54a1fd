//! LM Studio: models and their load state from `/api/v0/models` (0.3.6+),
//! slot counts from `/api/v1/models` where the server is new enough to
//! report `parallel` per loaded instance (0.4.0+).

use drover_proto::lmstudio::{V0ModelList, V1ModelList};

use crate::backend::{
    Backend, BackendError, BoxFuture, DiscoveredModel, Discovery, Loaded, ModelState,
};
use crate::endpoint::Endpoint;
use crate::http::Http;
use crate::kind::BackendKind;

pub struct LmStudio {
    http: Http,
}

impl LmStudio {
    pub(crate) fn new(http: Http) -> Self {
        LmStudio { http }
    }

    async fn discover_inner(&self) -> Result<Discovery, BackendError> {
        let v0: V0ModelList =
            self.http
                .get_json("/api/v0/models")
                .await?
                .ok_or_else(|| BackendError::Malformed {
                    url: format!("{}/api/v0/models", self.http.endpoint),
                    reason: "404: not an LM Studio server, or older than 0.3.6 (use kind openai)"
                        .into(),
                })?;
        // Older servers lack /api/v1; that only means no slot counts.
        let v1: Option<V1ModelList> = self.http.get_json("/api/v1/models").await.unwrap_or(None);
        let models = v0
            .data
            .into_iter()
            .map(|m| {
                let slots = v1.as_ref().and_then(|v1| {
                    v1.models
                        .iter()
                        .find(|x| x.key == m.id)
                        .and_then(|x| x.parallel())
                });
                DiscoveredModel {
                    state: if m.is_loaded() {
                        ModelState::Loaded
                    } else {
                        ModelState::Unloaded
                    },
                    id: m.id,
                    slots,
                    ..DiscoveredModel::default()
                }
            })
            .collect();
        Ok(Discovery {
            models,
            ..Discovery::default()
        })
    }
}

impl Backend for LmStudio {
    fn kind(&self) -> BackendKind {
        BackendKind::LmStudio
    }

    fn endpoint(&self) -> &Endpoint {
        &self.http.endpoint
    }

    fn discover(&self) -> BoxFuture<'_, Result<Discovery, BackendError>> {
        Box::pin(self.discover_inner())
    }

    fn generate(&self, model: &str) -> BoxFuture<'_, Result<(), BackendError>> {
        let model = model.to_string();
        Box::pin(async move { self.http.generate_one_token(&model).await })
    }

    fn load(&self, _model: &str) -> BoxFuture<'_, Result<Loaded, BackendError>> {
        Box::pin(async move {
            Err(BackendError::Unsupported {
                kind: self.kind(),
                what: "load models".into(),
            })
        })
    }

    fn unload(&self, _model: &str) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            Err(BackendError::Unsupported {
                kind: self.kind(),
                what: "unload models".into(),
            })
        })
    }
}
