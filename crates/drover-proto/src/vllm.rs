//! vLLM's model list, read leniently.

use serde::Deserialize;

/// `GET /v1/models`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ModelList {
    #[serde(default)]
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Model {
    pub id: String,
    #[serde(default)]
    pub max_model_len: Option<u32>,
    /// Set for LoRA adapters: the base model.
    #[serde(default)]
    pub parent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_model_list() {
        let list: ModelList = serde_json::from_str(
            r#"{"object":"list","data":[{"id":"Qwen/Qwen2.5-7B","object":"model","created":1,
                "owned_by":"vllm","root":"Qwen/Qwen2.5-7B","parent":null,"max_model_len":32768,
                "permission":[{}]},{"id":"sql","parent":"Qwen/Qwen2.5-7B"}]}"#,
        )
        .unwrap();
        assert_eq!(list.data[0].max_model_len, Some(32768));
        assert_eq!(list.data[1].parent.as_deref(), Some("Qwen/Qwen2.5-7B"));
    }
}
