//! llama.cpp's `llama-server`, in either of its modes:
//! - one model (`-m`): `/health` (503 while the model loads), `/props`
//!   (`total_slots`, `is_sleeping`, `build_info`), `/slots` (which slots
//!   are busy: a live cross-check of the hub's count), `/metrics` when
//!   enabled (its own queue), `/v1/models` (id and size);
//! - router mode (no `-m`): `/v1/models` lists every model with its status,
//!   `/slots?model=` each loaded one's slots, and `/models/load` and
//!   `/models/unload` load and unload.
//!
//! Both serve `/v1/responses` and `/v1/messages` natively.
use std::time::{Duration, Instant};

use drover_proto::llamacpp::{ModelList, Props, RouterProps, Slot};
use http::{Method, StatusCode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::adapter::Adapter;
use crate::backend::{
    Apis, BackendError, DiscoveredModel, Discovery, Loaded, ModelState, ModelType,
};
use crate::http::Http;
use crate::kind::BackendKind;
use crate::prometheus::Samples;

/// How long a router load may take before `load` gives up waiting.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
const LOAD_POLL: Duration = Duration::from_millis(100);

pub struct LlamaCpp {
    http: Http,
}

impl LlamaCpp {
    pub(crate) fn new(http: Http) -> Self {
        LlamaCpp { http }
    }

    async fn single(&self, list: ModelList, loading: bool) -> Result<Discovery, BackendError> {
        let props: Option<Props> = if loading {
            None
        } else {
            self.http.get_json("/props").await?
        };
        let props = props.unwrap_or_default();
        let slots: Option<Vec<Slot>> = if loading {
            None
        } else {
            self.http.get_json("/slots").await.unwrap_or(None)
        };
        let metrics = if loading {
            None
        } else {
            self.http.get_text("/metrics").await.unwrap_or(None)
        };
        let samples = metrics.as_deref().map(Samples::parse);
        let state = if loading {
            ModelState::Loading
        } else if props.is_sleeping == Some(true) {
            ModelState::Sleeping
        } else {
            ModelState::Loaded
        };
        let models = list
            .data
            .into_iter()
            .map(|m| DiscoveredModel {
                state,
                kind: ModelType::Llm,
                slots: props.total_slots,
                busy: slots
                    .as_ref()
                    .map(|s| s.iter().filter(|s| s.is_processing).count() as u32),
                size_bytes: m.meta.as_ref().and_then(|meta| meta.size),
                context_length: props
                    .default_generation_settings
                    .as_ref()
                    .and_then(|g| g.n_ctx)
                    .or_else(|| m.meta.as_ref().and_then(|meta| meta.n_ctx_train)),
                id: m.id,
                ..DiscoveredModel::default()
            })
            .collect();
        Ok(Discovery {
            models,
            version: props.build_info,
            apis: Apis {
                responses: Some(true),
                messages: Some(true),
            },
            waiting: samples
                .as_ref()
                .and_then(|s| s.count(&["llamacpp:requests_deferred"])),
            running: samples
                .as_ref()
                .and_then(|s| s.count(&["llamacpp:requests_processing"])),
            kv_cache_usage: samples
                .as_ref()
                .and_then(|s| s.first(&["llamacpp:kv_cache_usage_ratio"])),
            ..Discovery::default()
        })
    }

    async fn router(&self, list: ModelList) -> Result<Discovery, BackendError> {
        let mut models = Vec::with_capacity(list.data.len());
        for m in list.data {
            let status = m.status.unwrap_or_default();
            let state = match status.value.as_str() {
                "loaded" => ModelState::Loaded,
                "loading" | "downloading" => ModelState::Loading,
                "sleeping" => ModelState::Sleeping,
                _ => ModelState::Unloaded,
            };
            // Each loaded model runs as its own server with its own slots.
            // `autoload=false`: a GET naming a model loads it by default,
            // so a probe racing an unload would load the model right back.
            let slots: Option<Vec<Slot>> = if state == ModelState::Loaded {
                let path = format!(
                    "/slots?model={}&autoload=false",
                    utf8_percent_encode(&m.id, NON_ALPHANUMERIC)
                );
                self.http.get_json(&path).await.unwrap_or(None)
            } else {
                None
            };
            models.push(DiscoveredModel {
                state,
                kind: ModelType::Llm,
                slots: slots.as_ref().map(|s| s.len() as u32).filter(|n| *n > 0),
                busy: slots
                    .as_ref()
                    .map(|s| s.iter().filter(|s| s.is_processing).count() as u32),
                progress: status.progress,
                id: m.id,
                ..DiscoveredModel::default()
            });
        }
        // Its --models-max: beyond it the router evicts on its own, so the
        // hub must count loads against it to know what stays.
        let props: Option<RouterProps> = self.http.get_json("/props").await.unwrap_or(None);
        let max_loaded = props.and_then(|p| p.max_instances).filter(|n| *n > 0);
        Ok(Discovery {
            models,
            can_load: true,
            can_unload: true,
            apis: Apis {
                responses: Some(true),
                messages: Some(true),
            },
            mode: Some("router".into()),
            max_loaded,
            ..Discovery::default()
        })
    }

    /// Router mode's load: asked, then awaited until the router lists it
    /// loaded.
    async fn load_in_router(&self, model: &str) -> Result<Loaded, BackendError> {
        let started = Instant::now();
        self.http
            .post_json(
                "/models/load",
                &serde_json::json!({ "model": model }),
                self.http.timeout,
            )
            .await?
            .success()?;
        // The answer comes at once; the model is ready when its status says.
        self.await_status(model, "/models/load", |value, failed| match value {
            "loaded" => Some(Ok(())),
            "unloaded" => Some(Err(format!("{model} did not load (status {value:?})"))),
            _ if failed => Some(Err(format!("{model} did not load (status {value:?})"))),
            _ => None,
        })
        .await?;
        Ok(Loaded {
            seconds: started.elapsed().as_secs_f64(),
            instance: None,
        })
    }

    /// Polls the router's model list until `done` judges the model's status
    /// (`Some`): the router answers a load or an unload at once and carries
    /// it out after, so its status, not its answer, says when it is over.
    async fn await_status(
        &self,
        model: &str,
        asked: &str,
        done: impl Fn(&str, bool) -> Option<Result<(), String>>,
    ) -> Result<(), BackendError> {
        let started = Instant::now();
        loop {
            let list: ModelList = self.http.get_json("/v1/models").await?.unwrap_or_default();
            let status = list
                .data
                .iter()
                .find(|m| m.id == model)
                .and_then(|m| m.status.clone())
                .unwrap_or_default();
            match done(&status.value, status.failed == Some(true)) {
                Some(Ok(())) => return Ok(()),
                Some(Err(reason)) => {
                    return Err(BackendError::Malformed {
                        url: format!("{}{asked}", self.http.endpoint),
                        reason,
                    });
                }
                None => {}
            }
            if started.elapsed() > LOAD_TIMEOUT {
                return Err(BackendError::Timeout {
                    url: format!("{}{asked}", self.http.endpoint),
                    timeout: LOAD_TIMEOUT,
                });
            }
            tokio::time::sleep(LOAD_POLL).await;
        }
    }

    fn router_only(&self, what: &str) -> BackendError {
        BackendError::Unsupported {
            kind: BackendKind::LlamaCpp,
            what: format!(
                "{what} outside router mode (it serves the one model it was started with)"
            ),
        }
    }
}

impl Adapter for LlamaCpp {
    const KIND: BackendKind = BackendKind::LlamaCpp;

    fn http(&self) -> &Http {
        &self.http
    }

    async fn discover(&self) -> Result<Discovery, BackendError> {
        let health = self
            .http
            .call(Method::GET, "/health", None, self.http.timeout)
            .await?;
        // 503 while the model loads: the server is up, its model not ready.
        let loading = health.status == StatusCode::SERVICE_UNAVAILABLE;
        if !loading {
            health.success()?;
        }
        let list: Option<ModelList> = if loading {
            self.http.get_json("/v1/models").await.unwrap_or(None)
        } else {
            self.http.get_json("/v1/models").await?
        };
        let list = list.unwrap_or_default();
        if list.data.iter().any(|m| m.status.is_some()) {
            return self.router(list).await;
        }
        self.single(list, loading).await
    }

    async fn load(&self, model: String) -> Result<Loaded, BackendError> {
        if self.discover().await?.mode.is_none() {
            return Err(self.router_only("load models"));
        }
        self.load_in_router(&model).await
    }

    async fn unload(&self, model: String) -> Result<(), BackendError> {
        if self.discover().await?.mode.is_none() {
            return Err(self.router_only("unload models"));
        }
        let answer = self
            .http
            .post_json(
                "/models/unload",
                &serde_json::json!({ "model": model }),
                self.http.timeout,
            )
            .await?;
        // Unloading what is not running is done already.
        let gone = answer.status == http::StatusCode::BAD_REQUEST
            && crate::http::server_message(&answer.body).contains("not running");
        if !gone {
            answer.success()?;
        }
        // The answer comes before the model stops: its status may still say
        // "loaded" a moment later, and a load sent meanwhile would make the
        // router evict another model to keep under --models-max.
        self.await_status(&model, "/models/unload", |value, _| {
            (value != "loaded" && value != "loading").then_some(Ok(()))
        })
        .await
    }
}
