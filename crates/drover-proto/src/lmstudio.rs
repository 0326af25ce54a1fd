//! LM Studio's native REST API, read leniently: these servers add fields
//! often, so everything but the model id is optional.

use serde::Deserialize;

/// `GET /api/v0/models` (LM Studio 0.3.6 and later).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct V0ModelList {
    #[serde(default)]
    pub data: Vec<V0Model>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct V0Model {
    pub id: String,
    /// `llm`, `vlm` or `embeddings`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `loaded` or `not-loaded`.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub max_context_length: Option<u64>,
}

impl V0Model {
    pub fn is_loaded(&self) -> bool {
        self.state.as_deref() == Some("loaded")
    }
}

/// `GET /api/v1/models` (LM Studio 0.4.0 and later): every downloaded model
/// with its loaded instances, each with its `config.parallel` slots.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct V1ModelList {
    #[serde(default)]
    pub models: Vec<V1Model>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct V1Model {
    pub key: String,
    /// `llm` or `embedding`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub size_bytes: Option<u64>,
    #[serde(default)]
    pub max_context_length: Option<u32>,
    #[serde(default)]
    pub loaded_instances: Vec<V1Instance>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct V1Instance {
    /// What unloading names; a second instance of a key is `key:2`.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub config: V1InstanceConfig,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct V1InstanceConfig {
    #[serde(default)]
    pub parallel: Option<u32>,
    #[serde(default)]
    pub context_length: Option<u32>,
}

/// `POST /api/v1/models/load`'s answer. The docs name the id `instance_id`
/// on one page and `model_instance_id` on another: both are read.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct V1Loaded {
    #[serde(default, alias = "model_instance_id")]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub load_time_seconds: Option<f64>,
}

impl V1Model {
    /// Slots across the model's loaded instances, when the server says.
    pub fn parallel(&self) -> Option<u32> {
        let per: Vec<u32> = self
            .loaded_instances
            .iter()
            .filter_map(|i| i.config.parallel)
            .collect();
        (!per.is_empty()).then(|| per.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_shapes_and_ignores_extra_fields() {
        let v0: V0ModelList = serde_json::from_str(
            r#"{"object":"list","data":[
                {"id":"qwen","object":"model","type":"llm","publisher":"x","arch":"qwen2",
                 "compatibility_type":"gguf","quantization":"Q4_K_M","state":"loaded",
                 "max_context_length":32768,"something_new":true},
                {"id":"nomic-embed","type":"embeddings","state":"not-loaded"}]}"#,
        )
        .unwrap();
        assert!(v0.data[0].is_loaded());
        assert!(!v0.data[1].is_loaded());
        let v1: V1ModelList = serde_json::from_str(
            r#"{"models":[{"type":"llm","key":"qwen","quantization":{"name":"Q4","bits_per_weight":4},
                "loaded_instances":[{"id":"qwen","config":{"context_length":4096,"parallel":4}},
                                    {"id":"qwen:2","config":{"context_length":4096,"parallel":2}}]},
                {"key":"other","loaded_instances":[]}]}"#,
        )
        .unwrap();
        assert_eq!(v1.models[0].parallel(), Some(6));
        assert_eq!(v1.models[0].loaded_instances[1].id, "qwen:2");
        assert_eq!(v1.models[1].parallel(), None);
        for body in [
            r#"{"type":"llm","instance_id":"qwen","load_time_seconds":9.1,"status":"loaded"}"#,
            r#"{"type":"llm","model_instance_id":"qwen","load_time_seconds":9.1,"status":"loaded"}"#,
        ] {
            let loaded: V1Loaded = serde_json::from_str(body).unwrap();
            assert_eq!(loaded.instance_id.as_deref(), Some("qwen"), "{body}");
            assert_eq!(loaded.load_time_seconds, Some(9.1));
        }
    }
}
