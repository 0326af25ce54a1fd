//! Ollama's native API, read leniently. Sizes are bytes, durations
//! nanoseconds.

use serde::Deserialize;

/// `GET /api/version`, and vLLM's `GET /version`: the same shape.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Version {
    #[serde(default)]
    pub version: Option<String>,
}

/// `GET /api/tags` (on disk) and `GET /api/ps` (in memory).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ModelList {
    #[serde(default)]
    pub models: Vec<Model>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Model {
    /// `name:tag`; `model` carries the same in newer versions.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    /// `/api/ps` only: bytes in GPU memory.
    #[serde(default)]
    pub size_vram: Option<u64>,
    /// `/api/ps` only: when the keep-alive ends.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// `/api/ps` in newer versions.
    #[serde(default)]
    pub context_length: Option<u32>,
    #[serde(default)]
    pub details: Option<Details>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Details {
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub families: Option<Vec<String>>,
}

impl Model {
    /// The id requests use: `name`, else `model`.
    pub fn id(&self) -> &str {
        if self.name.is_empty() {
            self.model.as_deref().unwrap_or("")
        } else {
            &self.name
        }
    }

    /// Embedding models, by family (`bert`, `nomic-bert`): the generation
    /// probe must not pick them.
    pub fn is_embedding(&self) -> bool {
        let families = self.details.iter().flat_map(|d| {
            d.family
                .iter()
                .chain(d.families.iter().flatten())
                .map(String::as_str)
        });
        families
            .into_iter()
            .any(|f| f.contains("bert") || f.contains("embed"))
    }
}

/// The final object of `POST /api/generate`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct GenerateDone {
    #[serde(default)]
    pub done_reason: Option<String>,
    /// Nanoseconds spent loading the model.
    #[serde(default)]
    pub load_duration: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tags_and_ps() {
        let tags: ModelList = serde_json::from_str(
            r#"{"models":[{"name":"llama3:latest","model":"llama3:latest","modified_at":"2023-12-07T09:32:18-08:00",
                "size":3825819519,"digest":"fe93","details":{"format":"gguf","family":"llama","families":null,
                "parameter_size":"7B","quantization_level":"Q4_0"}},
                {"name":"nomic-embed-text:latest","size":274302450,"details":{"family":"nomic-bert"}}]}"#,
        )
        .unwrap();
        assert_eq!(tags.models[0].id(), "llama3:latest");
        assert!(!tags.models[0].is_embedding());
        assert!(tags.models[1].is_embedding());
        let ps: ModelList = serde_json::from_str(
            r#"{"models":[{"name":"mistral:latest","model":"mistral:latest","size":5137025024,
                "digest":"2ae6","details":{"family":"llama","families":["llama"]},
                "expires_at":"2024-06-04T14:38:31.83753-07:00","size_vram":5137025024,"context_length":4096}]}"#,
        )
        .unwrap();
        assert_eq!(ps.models[0].size_vram, Some(5_137_025_024));
        assert_eq!(ps.models[0].context_length, Some(4096));
        let v: Version = serde_json::from_str(r#"{"version":"0.14.2"}"#).unwrap();
        assert_eq!(v.version.as_deref(), Some("0.14.2"));
    }
}
