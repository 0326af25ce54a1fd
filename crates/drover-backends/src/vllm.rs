//! vLLM: it serves the models it was started with, all loaded; `/health`
//! says whether its engine lives, `/version` its version, `/metrics` how
//! many requests run and wait in its own queue (vLLM batches continuously,
//! so its capacity is large and soft: slots come from config, and while it
//! reports requests waiting the hub sends it no more). It serves
//! `/v1/responses`, and `/v1/messages` from 0.11.1. It cannot load or
//! unload.
use drover_proto::ollama::Version;
use drover_proto::vllm::ModelList;
use http::Method;

use crate::adapter::Adapter;
use crate::backend::{Apis, BackendError, DiscoveredModel, Discovery, ModelState};
use crate::http::Http;
use crate::kind::BackendKind;
use crate::prometheus::Samples;
use crate::version;

pub struct Vllm {
    http: Http,
}

impl Vllm {
    pub(crate) fn new(http: Http) -> Self {
        Vllm { http }
    }
}

impl Adapter for Vllm {
    const KIND: BackendKind = BackendKind::Vllm;

    fn http(&self) -> &Http {
        &self.http
    }

    async fn discover(&self) -> Result<Discovery, BackendError> {
        // 200 with an empty body; 503 (500 before Sept. 2025) once the
        // engine has died, which the model list would not show.
        self.http
            .call(Method::GET, "/health", None, self.http.timeout)
            .await?
            .success()?;
        let list: ModelList =
            self.http
                .get_json("/v1/models")
                .await?
                .ok_or_else(|| BackendError::Malformed {
                    url: format!("{}/v1/models", self.http.endpoint),
                    reason: "404: no /v1/models here".into(),
                })?;
        let version: Option<Version> = self.http.get_json("/version").await.unwrap_or(None);
        let version = version.and_then(|v| v.version);
        let metrics = self.http.get_text("/metrics").await.unwrap_or(None);
        let samples = metrics.as_deref().map(Samples::parse);
        let models = list
            .data
            .into_iter()
            .map(|m| DiscoveredModel {
                id: m.id,
                state: ModelState::Loaded,
                context_length: m.max_model_len,
                ..DiscoveredModel::default()
            })
            .collect();
        Ok(Discovery {
            models,
            apis: Apis {
                responses: Some(true),
                messages: version.as_deref().map(|v| version::at_least(v, [0, 11, 1])),
            },
            version,
            waiting: samples
                .as_ref()
                .and_then(|s| s.count(&["vllm:num_requests_waiting"])),
            running: samples
                .as_ref()
                .and_then(|s| s.count(&["vllm:num_requests_running"])),
            kv_cache_usage: samples
                .as_ref()
                .and_then(|s| s.first(&["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"])),
            ..Discovery::default()
        })
    }
}
