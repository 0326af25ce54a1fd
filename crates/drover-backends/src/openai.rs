//! A generic OpenAI-compatible server: `/v1/models` lists what it serves,
//! and everything it serves is taken as loaded. It reports no slot count,
//! so config decides; whether it serves the coding agents' paths is probed.

use drover_proto::openai::UpstreamModelList;

use crate::backend::{
    Backend, BackendError, BoxFuture, DiscoveredModel, Discovery, Loaded, ModelState,
};
use crate::endpoint::Endpoint;
use crate::http::Http;
use crate::kind::BackendKind;
use crate::paths::PathProbe;

pub struct OpenAi {
    http: Http,
    paths: PathProbe,
}

impl OpenAi {
    pub(crate) fn new(http: Http) -> Self {
        OpenAi {
            http,
            paths: PathProbe::default(),
        }
    }

    async fn discover_inner(&self) -> Result<Discovery, BackendError> {
        let list: UpstreamModelList =
            self.http
                .get_json("/v1/models")
                .await?
                .ok_or_else(|| BackendError::Malformed {
                    url: format!("{}/v1/models", self.http.endpoint),
                    reason: "404: no OpenAI-compatible /v1/models here".into(),
                })?;
        Ok(Discovery {
            models: list
                .data
                .into_iter()
                .map(|m| DiscoveredModel {
                    id: m.id,
                    state: ModelState::Loaded,
                    ..DiscoveredModel::default()
                })
                .collect(),
            apis: self.paths.apis(&self.http).await,
            ..Discovery::default()
        })
    }
}

impl Backend for OpenAi {
    fn kind(&self) -> BackendKind {
        BackendKind::OpenAi
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
