//! A generic OpenAI-compatible server: `/v1/models` lists what it serves,
//! and everything it serves is taken as loaded. It reports no slot count,
//! so config decides; whether it serves the coding agents' paths is probed.
use drover_proto::openai::UpstreamModelList;

use crate::adapter::Adapter;
use crate::backend::{BackendError, DiscoveredModel, Discovery, ModelState};
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
}

impl Adapter for OpenAi {
    const KIND: BackendKind = BackendKind::OpenAi;

    fn http(&self) -> &Http {
        &self.http
    }

    async fn discover(&self) -> Result<Discovery, BackendError> {
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
