//! llama.cpp `llama-server`'s own endpoints, read leniently: its builds add
//! and rename fields often.

use serde::Deserialize;

/// `GET /props`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Props {
    /// `--parallel`: requests it runs at once.
    #[serde(default)]
    pub total_slots: Option<u32>,
    #[serde(default)]
    pub model_path: Option<String>,
    #[serde(default)]
    pub build_info: Option<String>,
    /// Newer builds, with `--sleep-idle-seconds`.
    #[serde(default)]
    pub is_sleeping: Option<bool>,
    #[serde(default)]
    pub default_generation_settings: Option<GenerationSettings>,
}

/// Router mode's own `/props` (no model named): its `--models-max`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RouterProps {
    #[serde(default)]
    pub role: Option<String>,
    /// `--models-max`: models it keeps loaded at once, evicting the least
    /// recently used beyond; 0 for no limit.
    #[serde(default)]
    pub max_instances: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct GenerationSettings {
    #[serde(default)]
    pub n_ctx: Option<u32>,
}

/// One entry of `GET /slots`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Slot {
    #[serde(default)]
    pub id: Option<u32>,
    #[serde(default)]
    pub n_ctx: Option<u32>,
    #[serde(default)]
    pub is_processing: bool,
}

/// `GET /v1/models` in single-model mode, and `GET /models` in router mode
/// (this build answers both with the same body: OpenAI's `data`, plus
/// `models` in single-model mode).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ModelList {
    #[serde(default)]
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Model {
    pub id: String,
    /// Router mode only.
    #[serde(default)]
    pub status: Option<Status>,
    /// Single-model mode: sizes and context.
    #[serde(default)]
    pub meta: Option<Meta>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Status {
    /// `unloaded`, `loading`, `loaded`, `sleeping` or `downloading`.
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub progress: Option<f32>,
    #[serde(default)]
    pub failed: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Meta {
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub n_ctx_train: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_single_model_and_router_shapes() {
        let props: Props = serde_json::from_str(
            r#"{"default_generation_settings":{"n_ctx":4096,"params":{}},"total_slots":2,
                "model_path":"/m/tiny.gguf","build_info":"b1-abc","is_sleeping":false,
                "chat_template":"...","modalities":{"vision":false}}"#,
        )
        .unwrap();
        assert_eq!(props.total_slots, Some(2));
        assert_eq!(props.default_generation_settings.unwrap().n_ctx, Some(4096));
        let slots: Vec<Slot> = serde_json::from_str(
            r#"[{"id":0,"id_task":-1,"n_ctx":2048,"is_processing":false,"params":{}},
                {"id":1,"n_ctx":2048,"is_processing":true,"next_token":{"n_decoded":3}}]"#,
        )
        .unwrap();
        assert_eq!(slots.iter().filter(|s| s.is_processing).count(), 1);
        let single: ModelList = serde_json::from_str(
            r#"{"models":[{"name":"/m/tiny.gguf"}],"object":"list","data":[{"id":"/m/tiny.gguf",
                "object":"model","owned_by":"llamacpp","meta":{"n_ctx_train":512,"size":473760}}]}"#,
        )
        .unwrap();
        assert_eq!(single.data[0].meta.as_ref().unwrap().size, Some(473_760));
        let router: ModelList = serde_json::from_str(
            r#"{"data":[{"id":"a","object":"model","in_cache":false,"path":"/m/a.gguf",
                "status":{"value":"loading","progress":0.5}},
                {"id":"b","status":{"value":"unloaded","failed":true,"exit_code":1}},
                {"id":"c","status":{"value":"loaded","args":["--port","1"]}}]}"#,
        )
        .unwrap();
        assert_eq!(router.data[0].status.as_ref().unwrap().value, "loading");
        assert_eq!(router.data[0].status.as_ref().unwrap().progress, Some(0.5));
    }
}
